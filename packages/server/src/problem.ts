import { ERROR_CODES, isKilnError, type ErrorCode } from "@kilnjs/core";
import { z } from "@hono/zod-openapi";

/**
 * Codes the server adds to core's {@link ERROR_CODES} for HTTP-only situations. Stable, like core's.
 */
export const SERVER_ERROR_CODES = ["UNAUTHENTICATED", "FORBIDDEN", "NOT_FOUND", "METHOD_NOT_ALLOWED", "CONFLICT", "PAYLOAD_TOO_LARGE", "UNSUPPORTED_MEDIA_TYPE", "IDEMPOTENCY_KEY_REUSED"] as const;

/** An error `code` in a problem document: core's or the server's. */
export type ProblemCode = ErrorCode | (typeof SERVER_ERROR_CODES)[number];

/** The HTTP status for each core error code. */
const STATUS_OF: Record<ErrorCode, number> = {
  SPEC_INVALID: 422,
  SPEC_NOT_FOUND: 404,
  INVALID_ARGUMENT: 400,
  ENVIRONMENT_NOT_FOUND: 422,
  PROVIDER_NOT_FOUND: 422,
  PROVIDER_UNAVAILABLE: 503,
  CAPABILITY_MISSING: 422,
  BUILD_FAILED: 422,
  IMAGE_IN_USE: 409,
  BUILD_CONTEXT_INVALID: 422,
  SECRET_UNAVAILABLE: 422,
  SECRET_FILES_IN_CONTEXT: 422,
  LAUNCH_FAILED: 502,
  TERMINATE_FAILED: 502,
  HEALTH_CHECK_FAILED: 422,
  ROLLOUT_FAILED: 422,
  PLAN_INVALID: 422,
  RELEASE_NOT_FOUND: 404,
  NO_ROLLBACK_TARGET: 409,
  TARGET_LOCKED: 409,
  LOCK_LOST: 409,
  ROLLOUT_INTERRUPTED: 409,
  STATE_CORRUPT: 503,
  STATE_UNAVAILABLE: 503,
  THROTTLED: 503,
  ABORTED: 409,
  TIMEOUT: 504,
  INTERNAL: 500,
};

/** An RFC 9457 problem document with Kiln's stable `code`. */
export const problemSchema = z
  .object({
    type: z.string().openapi({ example: "https://kiln.dev/problems/TARGET_LOCKED" }),
    title: z.string(),
    status: z.number().int(),
    detail: z.string(),
    code: z.string().openapi({ description: "A stable error code: core's (INVALID_ARGUMENT, SPEC_INVALID, TARGET_LOCKED, RELEASE_NOT_FOUND, …: packages/core/src/errors.ts) or the server's (UNAUTHENTICATED, FORBIDDEN, NOT_FOUND, METHOD_NOT_ALLOWED, CONFLICT, PAYLOAD_TOO_LARGE, UNSUPPORTED_MEDIA_TYPE, IDEMPOTENCY_KEY_REUSED)." }),
    details: z.record(z.string(), z.unknown()).optional().openapi({ description: "Machine-readable details (spec issues, the lock's holder); never secrets." }),
  })
  .openapi("Problem");

/** A problem document. */
export type Problem = z.infer<typeof problemSchema>;

/** A problem document for a code, with the HTTP status it maps to (unless given). */
export function problem(code: ProblemCode, detail: string, options: { status?: number; details?: Record<string, unknown> } = {}): Problem {
  const status = options.status ?? (code in STATUS_OF ? STATUS_OF[code as ErrorCode] : 400);
  return {
    type: `https://kiln.dev/problems/${code}`,
    title: code.toLowerCase().replace(/_/g, " "),
    status,
    detail,
    code,
    ...(options.details && Object.keys(options.details).length > 0 ? { details: options.details } : {}),
  };
}

/** The problem for anything thrown: a KilnError by its code, anything else as INTERNAL (500) without its internals. */
export function problemOf(error: unknown): Problem {
  if (isKilnError(error)) return problem(error.code, error.message, { details: error.details });
  return problem("INTERNAL", "The server failed; the error was logged. Please report it.");
}

/** Whether `code` is one of core's. */
export function isCoreCode(code: string): code is ErrorCode {
  return (ERROR_CODES as readonly string[]).includes(code);
}
