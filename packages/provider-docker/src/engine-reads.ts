/**
 * The few read-only Engine API calls that a deploy with nothing to do makes (ping, list images, list
 * containers, inspect a container), over Node's own `node:http`, so that such a deploy never loads
 * dockerode.
 *
 * Why not dockerode, docker-modem or undici here: dockerode loads docker-modem, ssh2, @grpc/grpc-js
 * and protobufjs when it is imported (~100 ms of a ~0.9 s no-op deploy); docker-modem alone still
 * loads ssh2 at import (~50 ms), for the `ssh://` engines this provider does not support; undici
 * (the library behind Node's `fetch`, which cannot reach a unix socket without it) costs ~50 ms to
 * import as well. `node:http` is already part of Node, speaks to a unix socket (`socketPath`) and
 * to `tcp://` engines alike, and these calls are plain GETs answered with JSON. Everything that
 * changes the engine (build, create, start, stop, remove, exec, networks) still goes through
 * dockerode, loaded on first use by {@link EngineClient}.
 *
 * Errors look like docker-modem's (`statusCode`, and the engine's `{ message }` as `json`), so the
 * provider's error mapping (`statusOf`, `messageOf`, `engineError`) treats both alike.
 * @module
 */
import { request } from "node:http";
import type Dockerode from "dockerode";
import type { EngineAddress } from "./options.js";

/** An engine's answer other than 2xx, shaped like docker-modem's errors. */
export class EngineHttpError extends Error {
  override readonly name = "EngineHttpError";
  constructor(
    /** The HTTP status. */
    readonly statusCode: number,
    /** The engine's body: `{ message }` parsed when it is JSON, else its text. */
    readonly json: unknown,
    message: string,
  ) {
    super(message);
  }
}

/** An `AbortError` for `signal`, as `node:http` rejects with. */
function abortError(signal: AbortSignal): Error {
  return Object.assign(new Error("The operation was aborted", { cause: signal.reason }), { name: "AbortError", code: "ABORT_ERR" });
}

/** Label filters as the Engine API takes them: `{ label: ["key=value", …] }`. */
export type EngineFilters = Readonly<Record<string, readonly string[]>>;

/** The answers are small (lists of one target's images and containers); more than this is refused. */
const MAX_RESPONSE_BYTES = 64 * 1024 * 1024;

/**
 * Read-only calls to one engine's HTTP API (unversioned paths, as dockerode sends them). Every call
 * takes an `AbortSignal` and rejects with an `AbortError` when it fires, with the socket's own error
 * (`ENOENT`, `ECONNREFUSED`, …) when the engine cannot be reached, and with
 * {@link EngineHttpError} for any answer but 2xx.
 *
 * @see https://docs.docker.com/reference/api/engine/
 */
export class EngineReads {
  constructor(readonly address: EngineAddress) {}

  /** `GET /_ping`: resolves when the engine answers `OK`. */
  async ping(signal: AbortSignal): Promise<void> {
    await this.#get("/_ping", {}, signal);
  }

  /** `GET /images/json?filters=…`: the images that match every filter. */
  async listImages(filters: EngineFilters, signal: AbortSignal): Promise<Dockerode.ImageInfo[]> {
    return JSON.parse(await this.#get("/images/json", { filters: JSON.stringify(filters) }, signal)) as Dockerode.ImageInfo[];
  }

  /** `GET /containers/json?all=true&filters=…`: the containers (stopped ones too) that match every filter. */
  async listContainers(filters: EngineFilters, signal: AbortSignal): Promise<Dockerode.ContainerInfo[]> {
    return JSON.parse(await this.#get("/containers/json", { all: "true", filters: JSON.stringify(filters) }, signal)) as Dockerode.ContainerInfo[];
  }

  /** `GET /containers/{id}/json`: one container in full (its restart count, among others). */
  async inspectContainer(id: string, signal: AbortSignal): Promise<Dockerode.ContainerInspectInfo> {
    return JSON.parse(await this.#get(`/containers/${encodeURIComponent(id)}/json`, {}, signal)) as Dockerode.ContainerInspectInfo;
  }

  /** One GET; resolves with the body's text on 2xx. */
  #get(pathname: string, query: Record<string, string>, signal: AbortSignal): Promise<string> {
    const search = new URLSearchParams(query).toString();
    const target = search === "" ? pathname : `${pathname}?${search}`;
    const where =
      this.address.kind === "unix" ? { socketPath: this.address.socketPath } : { host: this.address.host, port: this.address.port };
    return new Promise((resolve, reject) => {
      const outgoing = request({ ...where, path: target, method: "GET", headers: { accept: "application/json" }, signal }, (response) => {
        const chunks: Buffer[] = [];
        let bytes = 0;
        response.on("data", (chunk: Buffer) => {
          bytes += chunk.length;
          if (bytes > MAX_RESPONSE_BYTES) {
            response.destroy(new Error(`The engine's answer to GET ${pathname} is larger than ${MAX_RESPONSE_BYTES} bytes.`));
            return;
          }
          chunks.push(chunk);
        });
        response.on("error", reject);
        // Cut off before its end (an abort, the engine going away): never a half answer.
        response.on("close", () => {
          if (!response.complete) reject(signal.aborted ? abortError(signal) : new Error(`The engine closed the connection before answering GET ${pathname} in full.`));
        });
        response.on("end", () => {
          const text = Buffer.concat(chunks).toString("utf8");
          const status = response.statusCode ?? 0;
          if (status >= 200 && status < 300) {
            resolve(text);
            return;
          }
          let json: unknown = text;
          try {
            json = JSON.parse(text);
          } catch {
            // Not JSON: keep the text.
          }
          const message = json !== null && typeof json === "object" && typeof (json as { message?: unknown }).message === "string" ? (json as { message: string }).message : text.trim();
          reject(new EngineHttpError(status, json, `(HTTP code ${status}) ${message || response.statusMessage || "no message"}`));
        });
      });
      outgoing.on("error", reject);
      outgoing.end();
    });
  }
}
