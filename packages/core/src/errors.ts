/**
 * Stable error codes. A code never changes meaning once released; the CLI maps codes to exit
 * codes and the server to HTTP statuses, so add new codes rather than reuse old ones.
 */
export const ERROR_CODES = [
  /** The spec (kiln.yaml or an object) is invalid; `details.issues` lists every problem. */
  "SPEC_INVALID",
  /** No spec file was found where one was expected. */
  "SPEC_NOT_FOUND",
  /** An option or flag given to the CLI or the library is invalid. */
  "INVALID_ARGUMENT",
  /** The environment named is not defined in the spec. */
  "ENVIRONMENT_NOT_FOUND",
  /** The provider named is not installed or not known. */
  "PROVIDER_NOT_FOUND",
  /** The provider's backend (Docker engine, cloud API) could not be reached. */
  "PROVIDER_UNAVAILABLE",
  /** The provider lacks a capability the spec or the command needs. */
  "CAPABILITY_MISSING",
  /** Building the image failed (the build's own error is the cause). */
  "BUILD_FAILED",
  /** The image is used by an instance (or a launch template) and was not removed. */
  "IMAGE_IN_USE",
  /** Reading the build context failed (a file vanished, a permission was denied). */
  "BUILD_CONTEXT_INVALID",
  /**
   * A secret's value could not be read from where the spec says it comes from (an unset
   * environment variable, a missing file, a secret store that refused or does not hold it).
   */
  "SECRET_UNAVAILABLE",
  /**
   * Files that look like secrets (`.env`, private keys, cloud credentials, `.git`, …) would reach
   * the image: the build was refused before it started. `details.files` lists each `{ path, reason }`;
   * exclude them in `.dockerignore`, or allow them by path with `image.allowSecretFiles`.
   */
  "SECRET_FILES_IN_CONTEXT",
  /** Launching an instance failed. */
  "LAUNCH_FAILED",
  /** Terminating an instance failed. */
  "TERMINATE_FAILED",
  /** New instances did not pass their health check before the deadline; the rollout was undone. */
  "HEALTH_CHECK_FAILED",
  /** A rollout failed for another reason; the cause says which. */
  "ROLLOUT_FAILED",
  /** The plan cannot be carried out with the provider's limits. */
  "PLAN_INVALID",
  /** The release asked for does not exist for this target. */
  "RELEASE_NOT_FOUND",
  /** There is no earlier successful release to roll back to. */
  "NO_ROLLBACK_TARGET",
  /** Another rollout of the same target holds the lock. */
  "TARGET_LOCKED",
  /**
   * The lease this process held on the target's lock was taken over (it expired, or was released
   * with `kiln lock release --force`), so this process may no longer write the target's state; its
   * rollout stopped. The new holder recovers what it left.
   */
  "LOCK_LOST",
  /**
   * Recorded on a rollout whose process stopped before it finished (killed, crashed, the machine
   * went down); the next deploy, `kiln rollout resume` or `kiln rollout abort` found it `running`
   * under a stale lease, marked it `aborted` and recovered its instances.
   */
  "ROLLOUT_INTERRUPTED",
  /** The state file could not be read or is not what Kiln wrote. */
  "STATE_CORRUPT",
  /** Reading or writing state failed. */
  "STATE_UNAVAILABLE",
  /**
   * The provider's API refused the call for its rate limit (a cloud API's request-limit
   * error, an HTTP 429). Retryable; `details.retryAfterMs` says when, if known.
   */
  "THROTTLED",
  /** The operation was cancelled through its AbortSignal. */
  "ABORTED",
  /** A deadline passed while waiting for a condition. */
  "TIMEOUT",
  /** A bug in Kiln: please report it with the cause. */
  "INTERNAL",
] as const;

/** One of the stable {@link ERROR_CODES}. */
export type ErrorCode = (typeof ERROR_CODES)[number];

/** Options of a {@link KilnError}. */
export interface KilnErrorOptions {
  /** The error that caused this one; kept, never swallowed. */
  cause?: unknown;
  /** Whether repeating the same call may succeed (throttling, a transient network error). @defaultValue false */
  retryable?: boolean;
  /** Machine-readable details (for SPEC_INVALID: `{ issues: SpecIssue[] }`). Never holds secrets. */
  details?: Record<string, unknown>;
}

/**
 * The one error class of Kiln. Every error Kiln throws on purpose is a `KilnError` with a stable
 * {@link ErrorCode}; its message says what happened and what to do next.
 *
 * @example
 * ```ts
 * try { await kiln.deploy({ environment: "prod" }); }
 * catch (error) { if (isKilnError(error, "TARGET_LOCKED")) console.log(error.message); }
 * ```
 */
export class KilnError extends Error {
  override readonly name = "KilnError";
  /** Stable code: see {@link ERROR_CODES}. */
  readonly code: ErrorCode;
  /** Whether repeating the same call may succeed. */
  readonly retryable: boolean;
  /** Machine-readable details; never holds secrets. */
  readonly details: Record<string, unknown>;

  constructor(code: ErrorCode, message: string, options: KilnErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.retryable = options.retryable ?? false;
    this.details = options.details ?? {};
  }

  /** A plain object for JSON output (`--json`, HTTP problem documents, state records). */
  toJSON(): { code: ErrorCode; message: string; retryable: boolean; details: Record<string, unknown> } {
    return { code: this.code, message: this.message, retryable: this.retryable, details: this.details };
  }
}

/**
 * Whether `error` is a {@link KilnError}, optionally with one of the given codes.
 * @param error - anything caught
 * @param codes - codes to accept; any code when empty
 */
export function isKilnError(error: unknown, ...codes: ErrorCode[]): error is KilnError {
  return error instanceof KilnError && (codes.length === 0 || codes.includes(error.code));
}

/**
 * Wraps an unknown thrown value as a {@link KilnError}: a `KilnError` is returned as it is; an
 * `AbortError` becomes `ABORTED`; anything else gets `code` and `message`, with the original kept as
 * `cause`.
 */
export function toKilnError(error: unknown, code: ErrorCode, message: string): KilnError {
  if (error instanceof KilnError) return error;
  if (isAbortError(error)) return new KilnError("ABORTED", "The operation was cancelled.", { cause: error });
  const detail = error instanceof Error ? error.message : String(error);
  return new KilnError(code, `${message}: ${detail}`, { cause: error });
}

/** Whether `error` is the error an aborted `AbortSignal` produces. */
export function isAbortError(error: unknown): boolean {
  return (
    (error instanceof Error && (error.name === "AbortError" || (error as { code?: unknown }).code === "ABORT_ERR")) ||
    isKilnError(error, "ABORTED")
  );
}

/**
 * Throws `ABORTED` when `signal` has been aborted.
 * @throws KilnError ABORTED
 */
export function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw new KilnError("ABORTED", "The operation was cancelled.", { cause: signal.reason });
}
