import { createHash, randomBytes } from "node:crypto";
import { invalidField, notFound } from "./errors.js";
import type { FaultPlan } from "./faults.js";
import type { OperationRecord } from "./operations.js";
import type { ComputeSchema } from "./schema.js";
import type { VmRunner } from "./vm-runner.js";

/** Resource links start with this, as the real API writes them (recorded `selfLink`s). */
/** A JSON object as the REST API reads and writes it. */
export type Json = Record<string, unknown>;

export const COMPUTE_LINK_PREFIX = "https://www.googleapis.com/compute/v1/";

/** The full link of a resource path (`projects/p/zones/z/instances/i` → `https://www.googleapis.com/compute/v1/projects/…`). */
export function linkOf(path: string): string {
  return `${COMPUTE_LINK_PREFIX}${path}`;
}

/** The durations of the fake, in milliseconds. */
export interface LocalComputeEngineTiming {
  /** How long an operation stays PENDING. @defaultValue 10 */
  readonly operationPendingMs: number;
  /** How long an operation stays RUNNING. @defaultValue 30 */
  readonly operationRunningMs: number;
  /** How long an instance stays in each of PROVISIONING and STAGING, and in STOPPING. @defaultValue 20 */
  readonly instanceStepMs: number;
  /** The longest `operations.wait` holds a request before answering with a RUNNING operation. @defaultValue 2000 */
  readonly waitTimeoutMs: number;
  /** How long one second of the API lasts here (`drainingTimeoutSec`). @defaultValue 1000 */
  readonly secondMs: number;
}

/** A health state, as `backendServices.getHealth` reports it. */
export type HealthState = "HEALTHY" | "UNHEALTHY";

/** What a health callback learns about an instance. */
export interface InstanceHealthInput {
  readonly project: string;
  readonly zone: string;
  readonly name: string;
  readonly status: string;
  readonly networkIP: string;
  readonly labels: Readonly<Record<string, string>>;
  /** The port `getHealth` reports: the group's named port for the backend service's `portName`, else its `port`. */
  readonly port: number;
}

/** Decides an instance's health for `backendServices.getHealth`. */
export type HealthCheck = (instance: InstanceHealthInput) => HealthState | Promise<HealthState>;

/**
 * A health check that probes `http://networkIP:port{path}` like a load balancer's HTTP health
 * check: HEALTHY when the instance is RUNNING and answers 200–399 within `timeoutMs`. For VMs that
 * really run (the Docker VM runner).
 * @param options - `path` @defaultValue "/"; `timeoutMs` @defaultValue 1000
 */
export function httpHealthCheck(options: { readonly path?: string; readonly timeoutMs?: number } = {}): HealthCheck {
  return async (instance) => {
    if (instance.status !== "RUNNING" || !instance.networkIP) return "UNHEALTHY";
    try {
      const response = await fetch(`http://${instance.networkIP}:${instance.port}${options.path ?? "/"}`, { signal: AbortSignal.timeout(options.timeoutMs ?? 1000) });
      await response.body?.cancel();
      return response.status >= 200 && response.status < 400 ? "HEALTHY" : "UNHEALTHY";
    } catch {
      return "UNHEALTHY";
    }
  };
}

/** The settled options an engine runs with. */
export interface EngineOptions {
  readonly timing: LocalComputeEngineTiming;
  readonly zones: readonly string[];
  readonly user: string;
  readonly health: HealthCheck;
}

/** Serial port 1 of an instance: a ring of at most {@link SERIAL_PORT_CAPACITY} characters. */
export interface SerialPort {
  contents: string;
  /** The offset of `contents[0]` since the instance was created. */
  start: number;
}

/** The documented size of the serial port buffer (1 MB). */
export const SERIAL_PORT_CAPACITY = 1024 * 1024;

/** An instance: its API JSON and what the API does not show (guest attributes, serial port, runner queue). */
export interface InstanceRecord {
  readonly path: string;
  readonly project: string;
  readonly zone: string;
  readonly name: string;
  readonly json: Record<string, unknown> & { status: string; id: string; labels: Record<string, string> };
  readonly guestAttributes: Map<string, string>;
  readonly serialPort: SerialPort;
  healthOverride?: HealthState;
  /** Runner calls for this instance run one after another. */
  runnerQueue: Promise<unknown>;
  /** Aborted when the instance is deleted or the engine closes. */
  readonly lifetime: AbortController;
  /** The boot disk's resource path. */
  readonly bootDiskPath: string;
}

/** A disk: its API JSON (`users` lists the instances it is attached to) and the image content it holds. */
export interface DiskRecord {
  readonly path: string;
  readonly zone: string;
  readonly json: Record<string, unknown> & { users?: string[] };
  /** The runner's artifact of the image this disk was made from. */
  readonly imageArtifact?: string;
  lastAttachedInstance?: string;
}

/** An image: its API JSON and what a VM runner captured for it. */
export interface ImageRecord {
  readonly path: string;
  readonly project: string;
  readonly json: Record<string, unknown> & { name: string; status: string };
  artifact?: string;
  /** Insertion order: breaks ties between images made in the same millisecond. */
  readonly sequence: number;
}

/** An unmanaged instance group and its members. */
export interface InstanceGroupRecord {
  readonly path: string;
  readonly zone: string;
  readonly json: Record<string, unknown>;
  /** Member instance paths, in the order they joined. */
  readonly members: Map<string, { draining: boolean }>;
}

/** A global backend service; `json.fingerprint` changes with every accepted change. */
export interface BackendServiceRecord {
  readonly path: string;
  json: Record<string, unknown> & { fingerprint: string };
}

/** Every resource of an engine, keyed by resource path (`projects/p/zones/z/instances/i`). */
export class EngineState {
  readonly instances = new Map<string, InstanceRecord>();
  readonly disks = new Map<string, DiskRecord>();
  readonly images = new Map<string, ImageRecord>();
  readonly operations = new Map<string, OperationRecord>();
  /** `scope|requestId` → the operation that request started. */
  readonly requestIds = new Map<string, OperationRecord>();
  readonly instanceGroups = new Map<string, InstanceGroupRecord>();
  readonly backendServices = new Map<string, BackendServiceRecord>();
  private addressCount = 0;
  imageSequence = 0;

  /** The next internal address (10.128.0.2, 10.128.0.3, …). */
  nextNetworkIP(): string {
    const n = this.addressCount++;
    return `10.128.${Math.floor(n / 250)}.${(n % 250) + 2}`;
  }
}

/** What handlers share: state, options, faults, schema, runner and a timer that close() cancels. */
export interface EngineContext {
  readonly state: EngineState;
  readonly options: EngineOptions;
  readonly faults: FaultPlan;
  readonly schema: ComputeSchema;
  readonly runner: VmRunner;
  /** The metadata server's base URL (the engine's own address). */
  readonly metadataUrl: () => string;
  /** Runs `fn` after `ms` (synchronously when `ms` ≤ 0); cancelled when the engine closes. */
  after(ms: number, fn: () => void): void;
}

/** A uint64 id as a decimal string, like the ids the real API gives resources. */
export function randomId(): string {
  return (randomBytes(8).readBigUInt64BE() >> 1n).toString();
}

/** A fingerprint (8 bytes of a SHA-256, base64) of a value, like `labelFingerprint`. */
export function fingerprintOf(value: unknown): string {
  return createHash("sha256").update(JSON.stringify(value ?? null)).digest().subarray(0, 8).toString("base64");
}

/** The current time in RFC 3339, as `creationTimestamp` carries it. */
export function now(): string {
  return new Date().toISOString();
}

const LINK_PREFIXES = [COMPUTE_LINK_PREFIX, "https://compute.googleapis.com/compute/v1/"];

/**
 * Resolves a reference as Compute accepts it: a full URL, `projects/p/…`, or a partial path
 * relative to the project (`zones/z/disks/d`, `global/images/i`).
 */
export function resolveReference(reference: string, project: string): string {
  let path = reference;
  for (const prefix of LINK_PREFIXES) if (path.startsWith(prefix)) path = path.slice(prefix.length);
  path = path.replace(/^\/+/, "");
  return path.startsWith("projects/") ? path : `projects/${project}/${path}`;
}

/** The RFC 1035 rule of Compute resource names (API reference, `name` of every resource). */
export const NAME_PATTERN = /^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$/;

/** @throws ComputeApiError 400 `invalid` when `name` breaks the rule */
export function checkName(field: string, name: unknown): asserts name is string {
  if (typeof name !== "string" || !NAME_PATTERN.test(name)) {
    throw invalidField(field, name ?? "", "Must be a match of regex '(?:[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?)'");
  }
}

const LABEL_KEY = /^[\p{Ll}\p{Lo}][\p{Ll}\p{Lo}\p{N}_-]{0,62}$/u;
const LABEL_VALUE = /^[\p{Ll}\p{Lo}\p{N}_-]{0,63}$/u;

/** Label rules ("Labels: requirements"): at most 64; keys 1–63, values 0–63 characters, lowercase. @throws ComputeApiError 400 */
export function checkLabels(labels: unknown): Record<string, string> {
  const map = (labels ?? {}) as Record<string, string>;
  const entries = Object.entries(map);
  if (entries.length > 64) throw invalidField("resource.labels", `${entries.length} labels`, "A resource can have at most 64 labels");
  for (const [key, value] of entries) {
    if (!LABEL_KEY.test(key)) throw invalidField("resource.labels", key, `Label key '${key}' violates format constraints: it starts with a lowercase letter and holds at most 63 lowercase letters, digits, underscores and dashes`);
    if (!LABEL_VALUE.test(value)) throw invalidField("resource.labels", value, `Label value '${value}' violates format constraints: at most 63 lowercase letters, digits, underscores and dashes`);
  }
  return { ...map };
}

/** Checks a zone is one the engine serves. @throws ComputeApiError 404 */
export function checkZone(engine: EngineContext, project: string, zone: string): void {
  if (!engine.options.zones.includes(zone)) throw notFound(`projects/${project}/zones/${zone}`);
}

/** Looks a resource up by path. @throws ComputeApiError 404 `notFound` */
export function getOr404<T>(map: ReadonlyMap<string, T>, path: string): T {
  const found = map.get(path);
  if (!found) throw notFound(path);
  return found;
}

/** A deep copy of a resource's JSON for an answer, so later changes never leak into a sent body. */
export function snapshot<T>(value: T): T {
  return structuredClone(value);
}

/** One Compute API call, after routing and body checks. */
export interface ApiCall {
  readonly engine: EngineContext;
  /** `Service.Method`, e.g. `Instances.Insert`. */
  readonly method: string;
  /** Path parameters (`project`, `zone`, `instance`, …). */
  readonly parameters: Readonly<Record<string, string>>;
  /** Query parameters by their lowerCamel names (`requestId`, `maxResults`). */
  readonly query: Readonly<Record<string, string>>;
  /** The body (the request's body field), checked against its message; `{}` when there is none. */
  readonly body: Record<string, unknown>;
}

/** Answers one Compute API method with the JSON of its response message. */
export type ApiHandler = (call: ApiCall) => Record<string, unknown> | Promise<Record<string, unknown>>;

const UUID_PATTERN = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;

/** The operation a `requestId` already started in this scope, if any (the idempotency rule of `requestId`). */
export function replayedOperation(call: ApiCall, scope: string): Record<string, unknown> | undefined {
  const requestId = call.query.requestId;
  if (!requestId) return undefined;
  if (!UUID_PATTERN.test(requestId) || /^[0-]+$/.test(requestId)) {
    throw invalidField("requestId", requestId, "The request id must be a valid UUID with the exception that zero UUID is not supported (00000000-0000-0000-0000-000000000000)");
  }
  const found = call.engine.state.requestIds.get(`${scope}|${requestId}`);
  return found ? snapshot(found.json) : undefined;
}

/** A JSON field as text: strings as they are, numbers and booleans written out, anything else `fallback`. */
export function textOf(value: unknown, fallback: string): string {
  if (typeof value === "string") return value;
  if (typeof value === "number" || typeof value === "boolean" || typeof value === "bigint") return String(value);
  return fallback;
}
