/**
 * Errors of the local Compute Engine, in the shapes the real API sends.
 *
 * Compute's own errors: `{"error":{"code":404,"message":"…","errors":[{"domain":"global",
 * "reason":"notFound","message":"…"}]}}`, with no `status` field, camelCase reasons
 * (k8s-config-connector `mockgcp/mockcompute/testdata/*` golden `_http.log` files, recorded
 * against real GCP). Errors from Google's front end (unknown JSON fields, quota exhausted: 429)
 * carry `status` (`INVALID_ARGUMENT`, `RESOURCE_EXHAUSTED`) and `details` (google.rpc types).
 */

/** Extra fields of the `error` object, for the front end's generic shape. */
export interface ErrorBodyExtras {
  readonly status?: string;
  readonly details?: readonly Record<string, unknown>[];
  /** `errors[].domain`. @defaultValue "global" */
  readonly domain?: string;
}

/** An HTTP error answer of the Compute API: thrown by handlers, written by the server. */
export class ComputeApiError extends Error {
  constructor(
    /** The HTTP status (400, 403, 404, 409, 412, 429, 500, 503). */
    readonly httpStatus: number,
    /** The camelCase reason of `errors[0]` (notFound, alreadyExists, …). */
    readonly reason: string,
    message: string,
    readonly extras: ErrorBodyExtras = {},
  ) {
    super(message);
    this.name = "ComputeApiError";
  }

  /** The JSON body the real API sends for this error. */
  body(): Record<string, unknown> {
    return {
      error: {
        code: this.httpStatus,
        message: this.message,
        errors: [{ message: this.message, domain: this.extras.domain ?? "global", reason: this.reason }],
        ...(this.extras.status ? { status: this.extras.status } : {}),
        ...(this.extras.details ? { details: this.extras.details } : {}),
      },
    };
  }
}

/** `The resource 'projects/p/zones/z/instances/i' was not found` (404 notFound). */
export function notFound(resourcePath: string): ComputeApiError {
  return new ComputeApiError(404, "notFound", `The resource '${resourcePath}' was not found`);
}

/** `The resource '…' already exists` (409 alreadyExists). */
export function alreadyExists(resourcePath: string): ComputeApiError {
  return new ComputeApiError(409, "alreadyExists", `The resource '${resourcePath}' already exists`);
}

/** `Invalid value for field 'resource.name': 'X'. …` (400 invalid). */
export function invalidField(field: string, value: unknown, rule: string): ComputeApiError {
  const shown = typeof value === "string" ? `'${value}'` : JSON.stringify(value);
  return new ComputeApiError(400, "invalid", `Invalid value for field '${field}': ${shown}. ${rule}`);
}

/** A required field is missing (400 required). */
export function requiredField(field: string): ComputeApiError {
  return new ComputeApiError(400, "required", `Required field '${field}' not specified`);
}

/** 400 resourceInUseByAnotherResource: `The disk resource '…' is already being used by '…'`. */
export function resourceInUse(kind: string, resourcePath: string, user: string): ComputeApiError {
  return new ComputeApiError(400, "resourceInUseByAnotherResource", `The ${kind} resource '${resourcePath}' is already being used by '${user}'`);
}

/** 412 conditionNotMet: a stale fingerprint. */
export function conditionNotMet(message: string): ComputeApiError {
  return new ComputeApiError(412, "conditionNotMet", message);
}

/** Compute's documented rate-quota answer: 403, reason `rateLimitExceeded`, domain `usageLimits`. */
export function rateLimitExceeded403(): ComputeApiError {
  return new ComputeApiError(403, "rateLimitExceeded", "Rate Limit Exceeded", { domain: "usageLimits" });
}

/**
 * The generic Google APIs answer to an exhausted quota: 429 with `status: "RESOURCE_EXHAUSTED"`
 * and a `google.rpc.ErrorInfo` detail (reason `RATE_LIMIT_EXCEEDED`), which the SDK promotes to
 * `err.reason`.
 */
export function resourceExhausted429(project: string): ComputeApiError {
  const message = `Quota exceeded for quota metric 'Queries' and limit 'Queries per minute' of service 'compute.googleapis.com' for consumer 'project_number:${project}'.`;
  return new ComputeApiError(429, "rateLimitExceeded", message, {
    status: "RESOURCE_EXHAUSTED",
    details: [
      {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        reason: "RATE_LIMIT_EXCEEDED",
        domain: "googleapis.com",
        metadata: { service: "compute.googleapis.com", consumer: `projects/${project}`, quota_metric: "compute.googleapis.com/default", quota_limit: "defaultPerMinutePerProject" },
      },
    ],
  });
}

/** A server error (500 or 503, reason `backendError`), as injected by faults. */
export function backendError(httpStatus: 500 | 503): ComputeApiError {
  const message = httpStatus === 503 ? "The service is currently unavailable." : "Internal error. Please try again or contact Google Support.";
  return new ComputeApiError(httpStatus, "backendError", message);
}
