import type Dockerode from "dockerode";
import { KilnError, createErrorMapper, isConnectionError as isUnreachable, type ErrorCode, type ProviderErrorMapper } from "@kilnjs/core";
import { EngineReads } from "./engine-reads.js";
import type { EngineAddress } from "./options.js";

/**
 * Loads dockerode on first use and caches one client: importing the package costs almost nothing.
 * The read-only calls of a deploy with nothing to do go through {@link EngineClient.reads} and
 * never load it.
 */
export class EngineClient {
  #client: Promise<Dockerode> | undefined;
  /** Ping, list and inspect over `node:http` (see `engine-reads.ts`): no dockerode. */
  readonly reads: EngineReads;

  constructor(readonly address: EngineAddress) {
    this.reads = new EngineReads(address);
  }

  /** The dockerode client, created on the first call. */
  get(): Promise<Dockerode> {
    this.#client ??= this.#load();
    return this.#client;
  }

  /** Forgets the client; the next {@link get} creates a new one. */
  reset(): void {
    this.#client = undefined;
  }

  async #load(): Promise<Dockerode> {
    try {
      const { default: Docker } = await import("dockerode");
      const address = this.address;
      return address.kind === "unix"
        ? new Docker({ socketPath: address.socketPath })
        : new Docker({ host: address.host, port: address.port, protocol: "http" });
    } catch (error) {
      this.#client = undefined;
      throw new KilnError("INTERNAL", `Loading dockerode failed: ${messageOf(error)}`, { cause: error });
    }
  }
}

/** The HTTP status of a docker-modem error, if it has one. */
export function statusOf(error: unknown): number | undefined {
  const status = (error as { statusCode?: unknown } | null)?.statusCode;
  return typeof status === "number" ? status : undefined;
}

/** The engine's own message for a docker-modem error (`json.message`), else the error's message. */
export function messageOf(error: unknown): string {
  const json = (error as { json?: unknown } | null)?.json;
  if (json && typeof json === "object" && typeof (json as { message?: unknown }).message === "string") {
    return (json as { message: string }).message.trim();
  }
  if (typeof json === "string" && json.trim() !== "") return json.trim();
  return error instanceof Error ? error.message : String(error);
}

/** Whether `error` says the engine could not be reached at all (as opposed to an engine answer). */
export function isConnectionError(error: unknown): boolean {
  return statusOf(error) === undefined && isUnreachable(error);
}

/** `PROVIDER_UNAVAILABLE` naming the address tried and how to get an engine there. */
export function unavailableError(address: EngineAddress, cause: unknown): KilnError {
  const detail = cause instanceof Error ? cause.message : String(cause);
  return new KilnError(
    "PROVIDER_UNAVAILABLE",
    `No Docker engine answered at ${address.url} (${detail}). Start one with \`npm run engine:start\` from a Kiln checkout ` +
      `(or start your own dockerd), or point DOCKER_HOST (or the provider's \`host\` option) at an engine that runs.`,
    { cause, retryable: true, details: { host: address.url } },
  );
}

const mappers = new WeakMap<EngineAddress, ProviderErrorMapper>();

/**
 * Turns anything a dockerode call threw into a {@link KilnError} with core's error-mapping
 * skeleton: a KilnError stays as it is, an abort becomes `ABORTED`, a connection failure
 * `PROVIDER_UNAVAILABLE`, anything else `code` with the engine's own message (and its HTTP status in
 * `details.statusCode`); the original is always kept as `cause`.
 */
export function engineError(error: unknown, address: EngineAddress, code: ErrorCode, message: string): KilnError {
  let mapper = mappers.get(address);
  if (!mapper) {
    mapper = createErrorMapper({
      unavailable: (cause) => unavailableError(address, cause),
      isConnectionError,
      messageOf,
      detailsOf: (cause) => {
        const status = statusOf(cause);
        return status === undefined ? {} : { statusCode: status };
      },
    });
    mappers.set(address, mapper);
  }
  return mapper(error, code, message);
}
