/**
 * What a failed Compute Engine call said, read from the error the SDK threw, and the
 * {@link KilnError} it becomes: a stable code, whether a retry may help, and a message that says
 * what to do next. Also the check every finished operation needs (a `DONE` operation may carry
 * errors). No SDK is loaded: the errors are read by shape.
 * @module
 */
import { KilnError, createErrorMapper, type ErrorCode } from "@kilnjs/core";

/**
 * The raw HTTP body google-gax 6 keeps on the errors of its REST transport. The version this
 * package pins (`@google-cloud/compute` 6.15.0, google-gax 5.0.8) throws gaxios errors instead,
 * whose message is the body; both are read.
 */
const RAW_PAYLOAD = Symbol.for("google-gax.rawHttpResponsePayload");

/** gRPC status codes google-gax puts on its errors, for the ones the classifier reads. */
const GRPC = { INVALID_ARGUMENT: 3, DEADLINE_EXCEEDED: 4, NOT_FOUND: 5, ALREADY_EXISTS: 6, PERMISSION_DENIED: 7, RESOURCE_EXHAUSTED: 8, FAILED_PRECONDITION: 9, ABORTED: 10, UNAVAILABLE: 14, UNAUTHENTICATED: 16 } as const;
/**
 * The HTTP status each of those gRPC codes comes from on the REST transport (google-gax's
 * `rpcCodeFromHttpStatusCode`: 409 becomes ABORTED, 10, not ALREADY_EXISTS).
 */
const HTTP_OF_GRPC: Readonly<Record<number, number>> = { 3: 400, 4: 504, 5: 404, 6: 409, 7: 403, 8: 429, 9: 412, 10: 409, 14: 503, 16: 401 };

/**
 * What Kiln makes of a failed call, stable across SDK versions:
 * - `rate-limited`: 403 `rateLimitExceeded`, 429, or `RESOURCE_EXHAUSTED` (retry later; Kiln backs off)
 * - `quota-exceeded`: 403 `quotaExceeded` (an allocation quota, such as CPUs in a region: ask for more)
 * - `not-found`: 404 `notFound`
 * - `already-exists`: 409 `alreadyExists` (or 400 `memberAlreadyExists` of an instance group)
 * - `in-use`: 400 `resourceInUseByAnotherResource`
 * - `precondition-failed`: 412 `conditionNotMet` (a stale fingerprint: read again, then write)
 * - `unauthenticated` / `permission-denied`: 401, and 403 with any other reason
 * - `server-error`: 5xx (and google-gax's UNAVAILABLE and DEADLINE_EXCEEDED)
 * - `invalid`: any other 4xx
 */
export type GceErrorKind =
  | "rate-limited"
  | "quota-exceeded"
  | "not-found"
  | "already-exists"
  | "in-use"
  | "precondition-failed"
  | "unauthenticated"
  | "permission-denied"
  | "server-error"
  | "invalid";

/** What a failed call said; see {@link readGceError}. */
export interface GceErrorInfo {
  readonly kind: GceErrorKind;
  /** The HTTP status, when known. */
  readonly httpStatus: number | undefined;
  /** The API's reason (`rateLimitExceeded`, `notFound`, or an ErrorInfo reason such as `RATE_LIMIT_EXCEEDED`), when it gave one. */
  readonly reason: string | undefined;
  /** The API's message. */
  readonly message: string;
  /** How long the answer's `Retry-After` header asked to wait (milliseconds), when it had one. */
  readonly retryAfterMs: number | undefined;
}

/** The parts of a Compute Engine error body Kiln reads. */
interface ErrorBody {
  readonly code?: unknown;
  readonly message?: unknown;
  readonly status?: unknown;
  readonly errors?: ReadonlyArray<{ readonly reason?: unknown; readonly message?: unknown }>;
  readonly details?: ReadonlyArray<{ readonly "@type"?: unknown; readonly reason?: unknown }>;
}

/**
 * Reads what a failed Compute Engine call said from the error the SDK threw, or undefined when
 * it is not an API answer (a connection error, a cancellation, a bug). Reads the gaxios error of
 * the pinned SDK (HTTP status, body in the message, headers), google-gax's `GoogleError` (gRPC
 * code, `reason` from an ErrorInfo), and its raw HTTP payload where google-gax 6 keeps it,
 * because the legacy `errors[].reason` (`rateLimitExceeded`, `notFound`) is only in the body.
 */
export function readGceError(error: unknown): GceErrorInfo | undefined {
  if (error === null || typeof error !== "object") return undefined;
  const candidate = error as { status?: unknown; code?: unknown; reason?: unknown; message?: unknown; response?: { status?: unknown; headers?: unknown; data?: unknown }; [RAW_PAYLOAD]?: unknown };
  const gaxios = typeof candidate.response?.status === "number" ? candidate.response.status : typeof candidate.status === "number" ? candidate.status : undefined;
  const grpc = gaxios === undefined && typeof candidate.code === "number" ? candidate.code : undefined;
  const body = bodyOf(candidate[RAW_PAYLOAD]) ?? bodyOf(candidate.response?.data) ?? bodyOf(candidate.message);
  const bodyStatus = typeof body?.code === "number" ? body.code : undefined;
  const httpStatus = gaxios ?? bodyStatus ?? (grpc !== undefined ? HTTP_OF_GRPC[grpc] : undefined);
  if (httpStatus === undefined && grpc === undefined) return undefined;
  const errorInfo = body?.details?.find((detail) => detail["@type"] === "type.googleapis.com/google.rpc.ErrorInfo")?.reason;
  const reason = stringOr(body?.errors?.find((entry) => typeof entry.reason === "string")?.reason) ?? stringOr(errorInfo) ?? stringOr(candidate.reason);
  const status = stringOr(body?.status) ?? (grpc === GRPC.RESOURCE_EXHAUSTED ? "RESOURCE_EXHAUSTED" : undefined);
  const message = stringOr(body?.message) ?? (typeof candidate.message === "string" ? candidate.message : "no message");
  return { kind: kindOf(httpStatus, grpc, reason, status), httpStatus, reason, message, retryAfterMs: retryAfterOf(candidate.response?.headers) };
}

function kindOf(httpStatus: number | undefined, grpc: number | undefined, reason: string | undefined, status: string | undefined): GceErrorKind {
  if (reason === "rateLimitExceeded" || reason === "userRateLimitExceeded" || reason === "RATE_LIMIT_EXCEEDED" || httpStatus === 429 || status === "RESOURCE_EXHAUSTED") return "rate-limited";
  if (reason === "quotaExceeded") return "quota-exceeded";
  if (reason === "notFound" || (reason === undefined && (httpStatus === 404 || grpc === GRPC.NOT_FOUND))) return "not-found";
  if (reason === "alreadyExists" || reason === "memberAlreadyExists" || (reason === undefined && (httpStatus === 409 || grpc === GRPC.ALREADY_EXISTS))) return "already-exists";
  if (reason === "resourceInUseByAnotherResource") return "in-use";
  if (reason === "conditionNotMet" || httpStatus === 412 || grpc === GRPC.FAILED_PRECONDITION) return "precondition-failed";
  if (httpStatus === 401 || grpc === GRPC.UNAUTHENTICATED) return "unauthenticated";
  if (httpStatus === 403 || grpc === GRPC.PERMISSION_DENIED) return "permission-denied";
  if ((httpStatus !== undefined && httpStatus >= 500) || grpc === GRPC.UNAVAILABLE || grpc === GRPC.DEADLINE_EXCEEDED) return "server-error";
  if (httpStatus === 404) return "not-found";
  if (httpStatus === 409) return "already-exists";
  return "invalid";
}

/** The `error` object of a body given as an object or as JSON text. */
function bodyOf(value: unknown): ErrorBody | undefined {
  let parsed = value;
  if (typeof value === "string" || value instanceof Uint8Array) {
    const text = typeof value === "string" ? value : new TextDecoder().decode(value);
    if (!text.trimStart().startsWith("{")) return undefined;
    try {
      parsed = JSON.parse(text);
    } catch {
      return undefined;
    }
  }
  const inner = (parsed as { error?: unknown } | null | undefined)?.error;
  return inner !== null && typeof inner === "object" ? inner : undefined;
}

/** `Retry-After` in milliseconds: seconds, or an HTTP date. */
function retryAfterOf(headers: unknown, now = Date.now()): number | undefined {
  if (headers === null || typeof headers !== "object") return undefined;
  const raw = typeof (headers as Headers).get === "function" ? (headers as Headers).get("retry-after") : (headers as Record<string, unknown>)["retry-after"];
  const text = typeof raw === "string" ? raw.trim() : undefined;
  if (!text) return undefined;
  if (/^\d+$/.test(text)) return Number(text) * 1000;
  const at = Date.parse(text);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}

function stringOr(value: unknown): string | undefined {
  return typeof value === "string" && value.length > 0 ? value : undefined;
}

/** `rateLimitExceeded: Rate Limit Exceeded` or the message alone. */
function detailOf(info: GceErrorInfo): string {
  return `${info.reason ? `${info.reason}: ` : ""}${info.message}`;
}

/**
 * Turns anything a Compute Engine call threw into a {@link KilnError}, with core's error-mapping
 * skeleton: a KilnError passes through; a cancellation becomes `ABORTED`; an endpoint that could
 * not be reached becomes `PROVIDER_UNAVAILABLE` (retryable); then, by {@link GceErrorKind}:
 * `rate-limited` → `THROTTLED` (retryable); `unauthenticated` and `permission-denied` →
 * `PROVIDER_UNAVAILABLE` naming the credentials; every other kind → `code` (what the caller was
 * doing failed: `LAUNCH_FAILED`, `BUILD_FAILED`, …), retryable for `server-error`. The kind, the
 * HTTP status and the API's reason are kept in `details` (`gceKind`, `httpStatus`, `gceReason`),
 * so callers branch on `details.gceKind` (`not-found`, `already-exists`) rather than on messages.
 * @param code - the code for a failure of the call itself
 * @param what - what was being done, starting the message (`Inserting instance web-prod-r3-…-0`)
 * @param endpoint - where the API was, for the unreachable message @defaultValue Google's
 */
export function gceError(error: unknown, code: ErrorCode, what: string, endpoint?: string): KilnError {
  const map = createErrorMapper({
    unavailable: (cause, doing) =>
      new KilnError("PROVIDER_UNAVAILABLE", `${doing}: the Compute Engine API at ${endpoint ?? "compute.googleapis.com"} could not be reached (${messageOf(cause)}); check the network, or the endpoint override when you use a local Compute Engine.`, {
        cause,
        retryable: true,
      }),
    classify(cause, fallback, doing) {
      const info = readGceError(cause);
      if (!info) return undefined;
      const details = { gceKind: info.kind, ...(info.httpStatus !== undefined ? { httpStatus: info.httpStatus } : {}), ...(info.reason !== undefined ? { gceReason: info.reason } : {}) };
      switch (info.kind) {
        case "rate-limited":
          return new KilnError("THROTTLED", `${doing}: Compute Engine kept throttling the calls (${detailOf(info)}) after Kiln's backoff; wait a minute and try again, or ask for a higher API rate quota.`, { cause, retryable: true, details });
        case "unauthenticated":
        case "permission-denied":
          return new KilnError(
            "PROVIDER_UNAVAILABLE",
            `${doing}: Compute Engine refused the credentials (${detailOf(info)}); check Application Default Credentials (gcloud auth application-default login, GOOGLE_APPLICATION_CREDENTIALS) and the roles of that account in the project.`,
            { cause, details },
          );
        case "quota-exceeded":
          return new KilnError(fallback, `${doing}: a Compute Engine quota is used up (${detailOf(info)}); free some resources or ask for a higher quota in the project's Quotas page.`, { cause, details });
        default:
          return new KilnError(fallback, `${doing}: ${detailOf(info)}`, { cause, retryable: info.kind === "server-error", details });
      }
    },
  });
  return map(error, code, what);
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** The parts of a Compute Engine `Operation` that say how it ended. */
export interface GceOperationResult {
  readonly name?: string | null;
  readonly operationType?: string | null;
  readonly targetLink?: string | null;
  readonly status?: string | number | null;
  readonly httpErrorStatusCode?: number | null;
  readonly error?: { readonly errors?: ReadonlyArray<{ readonly code?: string | null; readonly message?: string | null }> | null } | null;
}

/** Operation error codes that mean "too many operations": Kiln backs off and retries. */
const OPERATION_RATE_CODES = new Set(["RESOURCE_OPERATION_RATE_EXCEEDED", "RATE_LIMIT_EXCEEDED"]);
/** Operation error codes that may pass when tried again later or elsewhere (a zone out of capacity). */
const OPERATION_TRANSIENT_CODES = new Set(["ZONE_RESOURCE_POOL_EXHAUSTED", "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS", ...OPERATION_RATE_CODES]);

/**
 * Checks a finished (`DONE`) operation: an operation can end `DONE` and still have failed, with
 * `error.errors[]` holding UPPER_SNAKE codes (`QUOTA_EXCEEDED`, `ZONE_RESOURCE_POOL_EXHAUSTED`).
 * Returns undefined when it succeeded, else a KilnError: `THROTTLED` (retryable) when every code
 * is an operation rate limit, else `code`; its message lists each code with the API's message,
 * and `details.operationErrors` holds the codes (and `details.operation` its name).
 * `ZONE_RESOURCE_POOL_EXHAUSTED` is retryable (capacity comes back, or another zone has it).
 * @see https://cloud.google.com/compute/docs/reference/rest/v1/zoneOperations (Operation.error)
 */
export function operationError(operation: GceOperationResult, code: ErrorCode, what: string): KilnError | undefined {
  const errors = operation.error?.errors ?? [];
  if (errors.length === 0) return undefined;
  const codes = errors.map((entry) => entry.code ?? "UNKNOWN");
  const listed = errors.map((entry, index) => `${codes[index]!}: ${entry.message ?? "no message"}`).join("; ");
  const details = { operationErrors: codes, ...(operation.name ? { operation: operation.name } : {}), ...(operation.httpErrorStatusCode ? { httpStatus: operation.httpErrorStatusCode } : {}) };
  if (codes.every((entry) => OPERATION_RATE_CODES.has(entry))) {
    return new KilnError("THROTTLED", `${what}: Compute Engine refused the operation for its rate (${listed}); wait and try again.`, { retryable: true, details });
  }
  const next = codes.includes("QUOTA_EXCEEDED")
    ? " Free some resources or ask for a higher quota in the project's Quotas page."
    : codes.some((entry) => entry.startsWith("ZONE_RESOURCE_POOL_EXHAUSTED"))
      ? " The zone has no capacity for this machine type now: try again later, or another zone or machine type."
      : "";
  return new KilnError(code, `${what}: the operation failed (${listed}).${next}`, { retryable: codes.every((entry) => OPERATION_TRANSIENT_CODES.has(entry)), details });
}
