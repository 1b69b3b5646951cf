import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { KilnError } from "@kilnjs/core";
import { ComputeApiError, backendError, rateLimitExceeded403, resourceExhausted429 } from "./errors.js";
import { FaultPlan, type LocalComputeEngineFaults } from "./faults.js";
import { IMAGE_HANDLERS, type SeedImage, seedImage } from "./images.js";
import { INSTANCE_HANDLERS, appendSerialPort } from "./instances.js";
import { LOAD_BALANCING_HANDLERS, OPERATION_HANDLERS } from "./load-balancing.js";
import { serveMetadata } from "./metadata-server.js";
import { loadComputeSchema, schemaProblemsError, snakeToCamel } from "./schema.js";
import { type ApiHandler, type EngineContext, EngineState, type HealthState, type InstanceHealthInput, type InstanceRecord, type LocalComputeEngineTiming, replayedOperation } from "./state.js";
import { createStateOnlyVmRunner, type VmRunner } from "./vm-runner.js";

/** The Compute v1 services the fake serves (names in protos.json). */
const SERVICES = ["Instances", "Images", "Disks", "ZoneOperations", "GlobalOperations", "InstanceGroups", "BackendServices"];

const HANDLERS: Readonly<Record<string, ApiHandler>> = { ...INSTANCE_HANDLERS, ...IMAGE_HANDLERS, ...LOAD_BALANCING_HANDLERS, ...OPERATION_HANDLERS };

/** Query parameters every Google API takes besides the request message's own ("system parameters"). */
const SYSTEM_PARAMETERS = new Set(["$alt", "alt", "prettyPrint", "fields", "key", "quotaUser", "userIp", "access_token", "oauth_token", "callback", "$.xgafv", "upload_protocol", "uploadType", "$fields"]);

/** The default image a new engine holds: Debian 12 in `debian-cloud`, family `debian-12`. */
export const DEFAULT_SEED_IMAGES: readonly SeedImage[] = [{ project: "debian-cloud", name: "debian-12-bookworm-v20261201", family: "debian-12" }];

/** Options of {@link startLocalComputeEngine}. */
export interface LocalComputeEngineOptions {
  /** The port on 127.0.0.1. @defaultValue 0 (an ephemeral port) */
  readonly port?: number;
  /** The project a client is pointed at (any project name works in requests). @defaultValue "kiln-local" */
  readonly project?: string;
  /** The zones the engine serves; others answer 404. @defaultValue ["us-central1-a", "us-central1-b"] */
  readonly zones?: readonly string[];
  /** Durations in ms; see {@link LocalComputeEngineTiming} for the defaults. */
  readonly timing?: Partial<LocalComputeEngineTiming>;
  /** Every duration 0: operations are DONE in the answer that starts them. Fields of `timing` still win. @defaultValue false */
  readonly instantaneous?: boolean;
  /** Images present from the start. @defaultValue {@link DEFAULT_SEED_IMAGES} */
  readonly images?: readonly SeedImage[];
  /** Faults from the start; change them later with `setFaults` or `PUT /kiln/v1/faults`. */
  readonly faults?: LocalComputeEngineFaults;
  /** What runs the VMs. @defaultValue {@link createStateOnlyVmRunner} */
  readonly vmRunner?: VmRunner;
  /** The health `getHealth` reports for an instance. @defaultValue HEALTHY when RUNNING, else UNHEALTHY */
  readonly health?: (instance: InstanceHealthInput) => HealthState;
  /** The `user` of operations. @defaultValue "kiln-local@PROJECT.iam.gserviceaccount.com" */
  readonly user?: string;
}

/** A running local Compute Engine. */
export interface LocalComputeEngine {
  /** `http://127.0.0.1:PORT`: the Compute API (`/compute/v1/…`), the metadata server (`/computeMetadata/v1/…`) and the control API (`/kiln/v1/…`). */
  readonly endpoint: string;
  readonly port: number;
  readonly project: string;
  readonly zones: readonly string[];
  /** Options for an `@google-cloud/compute` client (add an `authClient`): `{ apiEndpoint: "127.0.0.1", port, protocol: "http", fallback: true }`. */
  readonly clientOptions: { readonly apiEndpoint: string; readonly port: number; readonly protocol: "http"; readonly fallback: true };
  /** The faults in force. */
  readonly faults: LocalComputeEngineFaults;
  /** Replaces every fault and reseeds the random generator. @throws KilnError INVALID_ARGUMENT */
  setFaults(faults: LocalComputeEngineFaults): void;
  /** Appends text to an instance's serial port 1. @throws KilnError INVALID_ARGUMENT when there is no such instance */
  appendSerialPortOutput(zone: string, instance: string, text: string, project?: string): void;
  /** Forces the health `getHealth` reports for an instance; `undefined` returns it to the health callback. @throws KilnError INVALID_ARGUMENT when there is no such instance */
  setInstanceHealth(zone: string, instance: string, state: HealthState | undefined, project?: string): void;
  /** How many calls each Compute method received (`Instances.Insert` → 3), refused ones included. */
  callCounts(): Record<string, number>;
  /** Stops the server, ends pending `wait`s and timers, closes the runner. */
  close(): Promise<void>;
}

const DEFAULT_TIMING: LocalComputeEngineTiming = { operationPendingMs: 10, operationRunningMs: 30, instanceStepMs: 20, waitTimeoutMs: 2000, secondMs: 1000 };

function writeJson(response: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  response.writeHead(status, { "Content-Type": "application/json; charset=UTF-8", "Content-Length": Buffer.byteLength(text) });
  response.end(text);
}

function readBody(request: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    request.on("data", (chunk: Buffer) => chunks.push(chunk));
    request.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    request.on("error", reject);
  });
}

/**
 * Starts a local Compute Engine: an HTTP server on 127.0.0.1 that speaks Compute Engine v1 REST on
 * the real paths for the calls Kiln's GCP provider makes, held to the message definitions shipped
 * in `@google-cloud/compute`. See docs/local-compute-engine.md.
 *
 * @example
 * ```ts
 * const engine = await startLocalComputeEngine({ instantaneous: true });
 * const instances = new InstancesClient({ ...engine.clientOptions, authClient });
 * ```
 * @throws KilnError INVALID_ARGUMENT for bad faults or timing
 */
export async function startLocalComputeEngine(options: LocalComputeEngineOptions = {}): Promise<LocalComputeEngine> {
  const project = options.project ?? "kiln-local";
  const zones = options.zones ?? ["us-central1-a", "us-central1-b"];
  const base = options.instantaneous ? { operationPendingMs: 0, operationRunningMs: 0, instanceStepMs: 0, waitTimeoutMs: DEFAULT_TIMING.waitTimeoutMs, secondMs: 0 } : DEFAULT_TIMING;
  const timing: LocalComputeEngineTiming = { ...base, ...options.timing };
  const badTiming = Object.entries(timing).filter(([, value]) => !(Number.isFinite(value) && value >= 0));
  if (badTiming.length > 0) throw new KilnError("INVALID_ARGUMENT", `Local Compute Engine timing must be durations in ms >= 0: ${badTiming.map(([key, value]) => `${key}=${String(value)}`).join(", ")}.`);
  const timers = new Set<NodeJS.Timeout>();
  let closed = false;
  let address = "";
  const engine: EngineContext = {
    state: new EngineState(),
    options: { timing, zones, user: options.user ?? `kiln-local@${project}.iam.gserviceaccount.com`, health: options.health ?? ((instance) => (instance.status === "RUNNING" ? "HEALTHY" : "UNHEALTHY")) },
    faults: new FaultPlan(options.faults),
    schema: loadComputeSchema(SERVICES),
    runner: options.vmRunner ?? createStateOnlyVmRunner(),
    metadataUrl: () => address,
    after(ms, fn) {
      if (closed) return;
      if (ms <= 0) return fn();
      const timer = setTimeout(() => {
        timers.delete(timer);
        if (!closed) fn();
      }, ms);
      timers.add(timer);
    },
  };
  for (const seed of options.images ?? DEFAULT_SEED_IMAGES) seedImage(engine, project, seed);
  const counts = new Map<string, number>();

  const handleApi = async (request: IncomingMessage, url: URL, response: ServerResponse) => {
    const matched = engine.schema.match(request.method ?? "GET", url.pathname);
    const handler = matched && HANDLERS[matched.method.name];
    if (!matched || !handler) throw new ComputeApiError(404, "notFound", `The local Compute Engine does not serve ${request.method ?? "GET"} ${url.pathname}.`);
    const { method, parameters } = matched;
    counts.set(method.name, (counts.get(method.name) ?? 0) + 1);
    const refusal = engine.faults.refusal(method.name);
    if (refusal?.kind === "throttle") throw refusal.status === 403 ? rateLimitExceeded403() : resourceExhausted429(parameters.project ?? project);
    if (refusal?.kind === "serverError") throw backendError(refusal.status);
    const query: Record<string, string> = {};
    for (const [name, value] of url.searchParams) {
      if (SYSTEM_PARAMETERS.has(name)) continue;
      const field = snakeToCamel(name);
      if (!(field in method.requestType.fields) || method.pathParameters.includes(field) || field === method.bodyField) {
        throw schemaProblemsError([{ path: name, kind: "unknownField", message: `Invalid JSON payload received. Unknown name "${name}": Cannot bind query parameter. Field '${name}' could not be found in request message.` }]);
      }
      query[field] = value;
    }
    const raw = await readBody(request);
    let body: Record<string, unknown> = {};
    if (method.bodyField) {
      const bodyField = method.requestType.fields[method.bodyField]!;
      try {
        body = raw.trim() === "" ? {} : (JSON.parse(raw) as Record<string, unknown>);
      } catch (error) {
        throw new ComputeApiError(400, "parseError", `Invalid JSON payload received. ${error instanceof Error ? error.message : String(error)}`, { status: "INVALID_ARGUMENT" });
      }
      const problems = engine.schema.check(engine.schema.type(bodyField.type), body, "resource");
      if (problems.length > 0) throw schemaProblemsError(problems);
    }
    // The idempotency rule of `requestId`: a request that repeats one already accepted in the same
    // scope gets the original operation, before any check (a retried insert whose instance now
    // exists, a retried delete whose instance is gone), and never acts twice.
    const scope = parameters.zone ? `projects/${parameters.project}/zones/${parameters.zone}` : `projects/${parameters.project}/global`;
    const replay = replayedOperation({ engine, method: method.name, parameters, query, body }, scope);
    const answer = replay ?? (await handler({ engine, method: method.name, parameters, query, body }));
    const problems = engine.schema.check(method.responseType, answer, "");
    if (problems.length > 0) throw new ComputeApiError(500, "backendError", `The local Compute Engine built an answer that Compute v1 does not define (a bug in the fake): ${problems.map((problem) => problem.message).join("; ")}`);
    writeJson(response, 200, answer);
  };

  const controlApi = async (request: IncomingMessage, url: URL, response: ServerResponse) => {
    const method = request.method ?? "GET";
    const body = await readBody(request);
    if (url.pathname === "/kiln/v1/faults") {
      if (method === "PUT") {
        try {
          handle.setFaults(JSON.parse(body || "{}") as LocalComputeEngineFaults);
        } catch (error) {
          return writeJson(response, 400, { error: { code: 400, message: error instanceof Error ? error.message : String(error) } });
        }
      }
      return writeJson(response, 200, engine.faults.faults);
    }
    if (url.pathname === "/kiln/v1/calls" && method === "GET") return writeJson(response, 200, handle.callCounts());
    const instancePath = /^\/kiln\/v1\/projects\/([^/]+)\/zones\/([^/]+)\/instances\/([^/]+)\/(serialPort|health)$/.exec(url.pathname);
    if (instancePath) {
      const [, projectName, zone, name, what] = instancePath as unknown as [string, string, string, string, string];
      try {
        if (what === "serialPort" && method === "POST") handle.appendSerialPortOutput(zone, name, body, projectName);
        else if (what === "health" && method === "PUT") {
          const state = (JSON.parse(body || "{}") as { healthState?: HealthState }).healthState;
          if (state !== undefined && state !== "HEALTHY" && state !== "UNHEALTHY") return writeJson(response, 400, { error: { code: 400, message: "healthState is HEALTHY, UNHEALTHY or absent." } });
          handle.setInstanceHealth(zone, name, state, projectName);
        } else return writeJson(response, 405, { error: { code: 405, message: `${method} is not allowed here.` } });
      } catch (error) {
        return writeJson(response, 404, { error: { code: 404, message: error instanceof Error ? error.message : String(error) } });
      }
      return writeJson(response, 200, {});
    }
    return writeJson(response, 404, { error: { code: 404, message: `The control API has no ${method} ${url.pathname}.` } });
  };

  const server = createServer((request, response) => {
    const url = new URL(request.url ?? "/", "http://127.0.0.1");
    const work = url.pathname.startsWith("/computeMetadata/")
      ? readBody(request).then((body) => serveMetadata(engine, request.method ?? "GET", url.pathname, request.headers, body, response))
      : url.pathname.startsWith("/kiln/v1/")
        ? controlApi(request, url, response)
        : handleApi(request, url, response);
    work.catch((error: unknown) => {
      if (response.headersSent) return response.destroy();
      if (error instanceof ComputeApiError) return writeJson(response, error.httpStatus, error.body());
      const message = error instanceof Error ? error.message : String(error);
      writeJson(response, 500, new ComputeApiError(500, "backendError", `The local Compute Engine failed: ${message}`).body());
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port ?? 0, "127.0.0.1", () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  address = `http://127.0.0.1:${port}`;

  const instanceNamed = (zone: string, name: string, projectName = project): InstanceRecord => {
    const found = engine.state.instances.get(`projects/${projectName}/zones/${zone}/instances/${name}`);
    if (!found) throw new KilnError("INVALID_ARGUMENT", `The local Compute Engine has no instance projects/${projectName}/zones/${zone}/instances/${name}; list the instances to see which exist.`);
    return found;
  };
  const handle: LocalComputeEngine = {
    endpoint: address,
    port,
    project,
    zones,
    clientOptions: { apiEndpoint: "127.0.0.1", port, protocol: "http", fallback: true },
    get faults() {
      return engine.faults.faults;
    },
    setFaults: (faults) => engine.faults.set(faults),
    appendSerialPortOutput: (zone, name, text, projectName) => appendSerialPort(instanceNamed(zone, name, projectName), text),
    setInstanceHealth: (zone, name, state, projectName) => {
      const instance = instanceNamed(zone, name, projectName);
      if (state === undefined) delete instance.healthOverride;
      else instance.healthOverride = state;
    },
    callCounts: () => Object.fromEntries([...counts.entries()].sort(([a], [b]) => a.localeCompare(b))),
    async close() {
      if (closed) return;
      closed = true;
      for (const timer of timers) clearTimeout(timer);
      timers.clear();
      for (const operation of engine.state.operations.values()) for (const wake of [...operation.waiters]) wake();
      for (const instance of engine.state.instances.values()) instance.lifetime.abort();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await engine.runner.close?.();
    },
  };
  return handle;
}
