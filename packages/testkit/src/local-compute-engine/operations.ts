import { randomBytes } from "node:crypto";
import { ComputeApiError } from "./errors.js";
import { operationErrorStatus } from "./faults.js";
import { type ApiCall, COMPUTE_LINK_PREFIX, type EngineContext, randomId, snapshot } from "./state.js";

/** The JSON of an Operation resource (`compute#operation`). */
export type OperationJson = Record<string, unknown> & { name: string; status: "PENDING" | "RUNNING" | "DONE" };

/** What an operation does, at the moments the real API would do it. */
export interface OperationWork {
  /**
   * At RUNNING: make the change visible (a resource in PROVISIONING, a disk being attached). A
   * thrown ComputeApiError (a resource made by another request in the meantime) ends the
   * operation DONE with that error, and `finish` never runs.
   */
  begin?(): void;
  /** At DONE: finish the change; may wait for the VM runner. A thrown ComputeApiError ends the operation with its reason as the error code. */
  finish?(): void | Promise<void>;
  /** When an injected error ends the operation: undo what `begin` did. */
  rollback?(): void;
  /** Time the operation stays RUNNING beyond the configured step (ms): draining, for example. */
  extraRunningMs?: number;
  /** Extra fields of the operation (e.g. `instancesBulkInsertOperationMetadata`), set at DONE. */
  doneFields?(): Record<string, unknown>;
}

/** A long-running operation and whoever waits for it. */
export interface OperationRecord {
  readonly path: string;
  readonly json: OperationJson;
  readonly waiters: Set<() => void>;
}

function operationName(): string {
  // Like real names: operation-<ms>-<13 hex>-<8 hex>-<8 hex>.
  const hex = randomBytes(15).toString("hex");
  return `operation-${Date.now()}-${hex.slice(0, 13)}-${hex.slice(13, 21)}-${hex.slice(21, 29)}`;
}

/**
 * Starts an operation: PENDING now, RUNNING after `timing.operationPendingMs`, DONE after
 * `timing.operationRunningMs` more (plus `work.extraRunningMs` and any slow-operation fault).
 * With zero durations it is DONE before this returns (unless `finish` waits for the VM runner).
 * Fields follow recorded real operations (k8s-config-connector mockgcp
 * `testdata/backendservice/crud/_http.log`): kind, id, name, operationType, progress, selfLink,
 * insertTime, startTime, endTime, status, targetId, targetLink, user; `zone` for zonal ones;
 * `clientOperationId` = the request's `requestId`.
 */
export function startOperation(
  engine: EngineContext,
  call: { project: string; zone?: string; method: string; operationType: string; targetPath: string; targetId: string; requestId?: string },
  work: OperationWork,
): OperationRecord {
  const name = operationName();
  const scope = call.zone ? `projects/${call.project}/zones/${call.zone}` : `projects/${call.project}/global`;
  const path = `${scope}/operations/${name}`;
  const json: OperationJson = {
    kind: "compute#operation",
    id: randomId(),
    name,
    operationType: call.operationType,
    targetLink: `${COMPUTE_LINK_PREFIX}${call.targetPath}`,
    targetId: call.targetId,
    status: "PENDING",
    user: engine.options.user,
    progress: 0,
    insertTime: new Date().toISOString(),
    selfLink: `${COMPUTE_LINK_PREFIX}${path}`,
    ...(call.zone ? { zone: `${COMPUTE_LINK_PREFIX}projects/${call.project}/zones/${call.zone}` } : {}),
    ...(call.requestId ? { clientOperationId: call.requestId } : {}),
  };
  const record: OperationRecord = { path, json, waiters: new Set() };
  engine.state.operations.set(path, record);
  if (call.requestId) engine.state.requestIds.set(`${scope}|${call.requestId}`, record);
  const injected = engine.faults.operationError(call.method);
  const runningMs = engine.options.timing.operationRunningMs + (work.extraRunningMs ?? 0) + engine.faults.operationDelayMs(call.method);
  const done = (error?: OperationFailure) => {
    json.status = "DONE";
    json.progress = 100;
    json.endTime = new Date().toISOString();
    if (work.doneFields) Object.assign(json, work.doneFields());
    if (error) {
      const status = error.httpStatus ? { httpErrorStatusCode: error.httpStatus, httpErrorMessage: HTTP_STATUS_TEXT[error.httpStatus] ?? "ERROR" } : operationErrorStatus(error.code);
      Object.assign(json, status, { error: { errors: [{ code: error.code, message: error.message }] } });
    }
    for (const wake of record.waiters) wake();
    record.waiters.clear();
  };
  engine.after(engine.options.timing.operationPendingMs, () => {
    json.status = "RUNNING";
    json.startTime = new Date().toISOString();
    if (!injected) {
      try {
        work.begin?.();
      } catch (error) {
        done(failure(error));
        return;
      }
    }
    engine.after(runningMs, () => {
      if (injected) {
        work.rollback?.();
        done(injected);
        return;
      }
      let finished: void | Promise<void>;
      try {
        finished = work.finish?.();
      } catch (error) {
        done(failure(error));
        return;
      }
      if (finished instanceof Promise) finished.then(() => done(), (error: unknown) => done(failure(error)));
      else done();
    });
  });
  return record;
}

/** The error an operation ends with: an UPPER_SNAKE code, a message, and the HTTP status it stands for. */
interface OperationFailure {
  readonly code: string;
  readonly message: string;
  readonly httpStatus?: number;
}

/** Operation error codes for the reasons of synchronous errors (Compute writes RESOURCE_ALREADY_EXISTS, not ALREADY_EXISTS). */
const OPERATION_CODES: Record<string, string> = {
  alreadyExists: "RESOURCE_ALREADY_EXISTS",
  notFound: "RESOURCE_NOT_FOUND",
  resourceInUseByAnotherResource: "RESOURCE_IN_USE_BY_ANOTHER_RESOURCE",
};

const HTTP_STATUS_TEXT: Record<number, string> = { 400: "BAD REQUEST", 403: "FORBIDDEN", 404: "NOT FOUND", 409: "CONFLICT", 412: "PRECONDITION FAILED", 500: "INTERNAL SERVER ERROR", 503: "SERVICE UNAVAILABLE" };

function failure(error: unknown): OperationFailure {
  if (error instanceof ComputeApiError) {
    return { code: OPERATION_CODES[error.reason] ?? error.reason.replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase(), message: error.message, httpStatus: error.httpStatus };
  }
  return { code: "INTERNAL_ERROR", message: error instanceof Error ? error.message : String(error), httpStatus: 500 };
}

/**
 * `operations.wait`: answers when the operation is DONE, or after `timing.waitTimeoutMs` with the
 * operation as it is then (the real API returns within about 2 minutes and "may return early").
 */
export function waitForOperation(engine: EngineContext, record: OperationRecord): Promise<OperationJson> {
  if (record.json.status === "DONE") return Promise.resolve(record.json);
  return new Promise((resolve) => {
    const wake = () => {
      clearTimeout(timer);
      record.waiters.delete(wake);
      resolve(record.json);
    };
    const timer = setTimeout(wake, engine.options.timing.waitTimeoutMs);
    timer.unref();
    record.waiters.add(wake);
  });
}

/**
 * Starts the operation of an API call. (A call whose `requestId` already started an operation never
 * reaches its handler: the server answers with that operation first; see `replayedOperation`.)
 * @param scope - `zone` for a zonal operation; absent for a global one
 */
export function operationForCall(
  call: ApiCall,
  scope: { project: string; zone?: string },
  operationType: string,
  target: { path: string; id: string },
  work: OperationWork,
): Record<string, unknown> {
  const started = startOperation(
    call.engine,
    { ...scope, method: call.method, operationType, targetPath: target.path, targetId: target.id, ...(call.query.requestId ? { requestId: call.query.requestId } : {}) },
    work,
  );
  return snapshot(started.json);
}
