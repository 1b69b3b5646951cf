import { execFile } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { fileURLToPath } from "node:url";
import { LABELS, silentLogger, type ProviderContext } from "@kilnjs/core";
import { requireBuildOutput } from "@kilnjs/testkit";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { EngineHttpError, EngineReads } from "./engine-reads.js";
import { createDockerProvider } from "./provider.js";

/** A fake engine on a unix socket: answers what `routes` says and records each request's path. */
interface FakeEngine {
  readonly socketPath: string;
  readonly requests: string[];
  routes: Record<string, (request: IncomingMessage, response: ServerResponse) => void>;
}

let dir: string;
let server: Server | undefined;

beforeEach(async () => {
  dir = await mkdtemp(path.join(tmpdir(), "kiln-engine-reads-"));
});
afterEach(async () => {
  await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
  server = undefined;
  await rm(dir, { recursive: true, force: true });
});

const json = (status: number, body: unknown) => (_request: IncomingMessage, response: ServerResponse) => {
  response.writeHead(status, { "content-type": "application/json" });
  response.end(JSON.stringify(body));
};

const IMAGE = { Id: "sha256:" + "1".repeat(64), Created: 1_700_000_000, Labels: { [LABELS.fingerprint]: "sha256:" + "f".repeat(64) }, RepoTags: ["kiln/web:ffffffffffff"], RepoDigests: [], Size: 1234 };
const CONTAINER = {
  Id: "c".repeat(64),
  Names: ["/web.default.r1.abcdef"],
  ImageID: IMAGE.Id,
  State: "running",
  Created: 1_700_000_100,
  Ports: [],
  Labels: { [LABELS.managed]: "true", [LABELS.service]: "web", [LABELS.environment]: "default", [LABELS.release]: "1" },
};

async function startFakeEngine(): Promise<FakeEngine> {
  const engine: FakeEngine = {
    socketPath: path.join(dir, "docker.sock"),
    requests: [],
    routes: {
      "/_ping": (_request, response) => response.end("OK"),
      "/images/json": json(200, [IMAGE]),
      "/containers/json": json(200, [CONTAINER, { ...CONTAINER, Id: "d".repeat(64), Names: ["/web.default.r1.stoppd"], State: "exited" }]),
      [`/containers/${"d".repeat(64)}/json`]: json(200, { Id: "d".repeat(64), RestartCount: 3 }),
    },
  };
  server = createServer((request, response) => {
    engine.requests.push(request.url ?? "");
    const route = engine.routes[new URL(request.url ?? "/", "http://engine").pathname];
    if (route) route(request, response);
    else json(404, { message: `page not found: ${request.url}` })(request, response);
  });
  await new Promise<void>((resolve) => server!.listen(engine.socketPath, resolve));
  return engine;
}

const context = (signal: AbortSignal = new AbortController().signal): ProviderContext => ({ signal, logger: silentLogger, emit() {} });

describe("EngineReads", () => {
  it("sends the Engine API's GETs with JSON filters, and parses the answers", async () => {
    const engine = await startFakeEngine();
    const reads = new EngineReads({ kind: "unix", url: `unix://${engine.socketPath}`, socketPath: engine.socketPath });
    const signal = new AbortController().signal;
    await reads.ping(signal);
    expect(await reads.listImages({ label: ["a=b"] }, signal)).toEqual([IMAGE]);
    expect((await reads.listContainers({ label: ["a=b", "c=d"] }, signal)).map((container) => container.State)).toEqual(["running", "exited"]);
    expect((await reads.inspectContainer("d".repeat(64), signal)).RestartCount).toBe(3);
    expect(engine.requests.map((url) => decodeURIComponent(url))).toEqual([
      "/_ping",
      '/images/json?filters={"label":["a=b"]}',
      '/containers/json?all=true&filters={"label":["a=b","c=d"]}',
      `/containers/${"d".repeat(64)}/json`,
    ]);
  });

  it("rejects an answer other than 2xx as docker-modem does: statusCode and the engine's message", async () => {
    const engine = await startFakeEngine();
    const reads = new EngineReads({ kind: "unix", url: `unix://${engine.socketPath}`, socketPath: engine.socketPath });
    const error = await reads.inspectContainer("missing", new AbortController().signal).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(EngineHttpError);
    expect(error).toMatchObject({ statusCode: 404, json: { message: "page not found: /containers/missing/json" } });
    expect((error as Error).message).toBe("(HTTP code 404) page not found: /containers/missing/json");
  });

  it("rejects with an AbortError when the signal fires while the engine has not answered", async () => {
    const engine = await startFakeEngine();
    engine.routes["/_ping"] = () => {}; // never answers
    const reads = new EngineReads({ kind: "unix", url: `unix://${engine.socketPath}`, socketPath: engine.socketPath });
    const controller = new AbortController();
    const pending = reads.ping(controller.signal);
    await expect.poll(() => engine.requests.length).toBe(1);
    controller.abort();
    await expect(pending).rejects.toMatchObject({ name: "AbortError" });
  });
});

describe("the provider's read-only calls", () => {
  it("find an image, list instances (inspecting the one not running) and ping, through EngineReads", async () => {
    const engine = await startFakeEngine();
    const provider = createDockerProvider({ host: `unix://${engine.socketPath}` });
    await provider.ping(context());
    const image = await provider.images.find({ service: "web", fingerprint: "sha256:" + "f".repeat(64) }, context());
    expect(image).toMatchObject({ id: IMAGE.Id, names: ["kiln/web:ffffffffffff"], createdAt: new Date(IMAGE.Created * 1000).toISOString() });
    const instances = await provider.instances.list({ target: { service: "web", environment: "default" } }, context());
    expect(instances.map((instance) => [instance.name, instance.state, instance.restartCount])).toEqual([
      ["web.default.r1.abcdef", "running", 0],
      ["web.default.r1.stoppd", "stopped", 3],
    ]);
    await provider.close?.();
  });

  it("maps an engine error to a KilnError with its status, a missing engine to PROVIDER_UNAVAILABLE, an abort to ABORTED", async () => {
    const engine = await startFakeEngine();
    engine.routes["/containers/json"] = json(500, { message: "the daemon is sad" });
    const provider = createDockerProvider({ host: `unix://${engine.socketPath}` });
    await expect(provider.instances.list({ target: { service: "web", environment: "default" } }, context())).rejects.toMatchObject({
      code: "PROVIDER_UNAVAILABLE",
      message: expect.stringContaining("the daemon is sad") as string,
      details: { statusCode: 500 },
    });
    const nowhere = createDockerProvider({ host: `unix://${path.join(dir, "no-engine.sock")}` });
    await expect(nowhere.ping(context())).rejects.toMatchObject({ code: "PROVIDER_UNAVAILABLE", retryable: true, message: expect.stringContaining("No Docker engine answered") as string });
    engine.routes["/images/json"] = () => {};
    const controller = new AbortController();
    const finding = provider.images.find({ service: "web", fingerprint: "sha256:" + "f".repeat(64) }, context(controller.signal));
    await expect.poll(() => engine.requests.some((url) => url.startsWith("/images/json"))).toBe(true);
    controller.abort();
    await expect(finding).rejects.toMatchObject({ code: "ABORTED" });
  });
});

describe("module loading", () => {
  const dist = fileURLToPath(new URL("../dist/index.cjs", import.meta.url));
  const HEAVY = /[\\/]node_modules[\\/](dockerode|docker-modem|ssh2|@grpc|protobufjs)[\\/]/;

  it.skipIf(!requireBuildOutput(dist))("ping, find and list load neither dockerode nor its transports; a launch or terminate does", async () => {
    const engine = await startFakeEngine();
    // A separate process (so nothing is loaded already), asynchronous (so this one's fake engine answers).
    const script = `
      const heavy = () => Object.keys(require.cache).filter((file) => ${HEAVY.toString()}.test(file)).map((file) => file.replace(/.*node_modules[\\\\/]/, ""));
      const { createDockerProvider } = require(${JSON.stringify(dist)});
      const provider = createDockerProvider({ host: ${JSON.stringify(`unix://${engine.socketPath}`)} });
      const ctx = { signal: new AbortController().signal, logger: { debug() {}, info() {}, warn() {}, error() {} }, emit() {} };
      (async () => {
        await provider.ping(ctx);
        await provider.images.find({ service: "web", fingerprint: "sha256:${"f".repeat(64)}" }, ctx);
        await provider.instances.list({ target: { service: "web", environment: "default" } }, ctx);
        const afterNoop = heavy();
        await provider.instances.terminate([], { gracePeriodMs: 0 }, ctx);
        console.log(JSON.stringify({ afterNoop, afterTerminate: heavy() }));
      })().catch((error) => { console.error(error); process.exit(1); });`;
    const { stdout } = await promisify(execFile)(process.execPath, ["-e", script], { encoding: "utf8", cwd: fileURLToPath(new URL("..", import.meta.url)) });
    const loaded = JSON.parse(stdout) as { afterNoop: string[]; afterTerminate: string[] };
    expect(loaded.afterNoop).toEqual([]);
    // The same check sees them once a call that changes the engine needs dockerode.
    for (const name of ["dockerode", "docker-modem", "ssh2", "@grpc", "protobufjs"]) expect(loaded.afterTerminate.some((file) => file.startsWith(name)), name).toBe(true);
    // What a no-op deploy asks the engine (before terminate's own calls).
    expect(engine.requests.slice(0, 4).map((url) => new URL(url, "http://engine").pathname)).toEqual(["/_ping", "/images/json", "/containers/json", `/containers/${"d".repeat(64)}/json`]);
  });
});
