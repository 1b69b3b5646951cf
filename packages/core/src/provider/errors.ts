import { KilnError, isAbortError, isKilnError, type ErrorCode } from "../errors.js";

/**
 * Node's error codes for a backend that was never reached: refused, reset, unknown host, no route,
 * a missing or wrong unix socket. An answer from the backend (any HTTP status) is never one.
 */
export const CONNECTION_ERROR_CODES: ReadonlySet<string> = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ENOTFOUND",
  "EAI_AGAIN",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "EPIPE",
  "ENOENT",
  "EACCES",
  "ENOTSOCK",
  "UND_ERR_CONNECT_TIMEOUT",
  "UND_ERR_SOCKET",
]);

/**
 * Whether `error` (or its `cause`, one level down, as fetch and SDKs wrap them) carries a
 * {@link CONNECTION_ERROR_CODES} code.
 */
export function isConnectionError(error: unknown): boolean {
  const codeOf = (value: unknown) => (value !== null && typeof value === "object" ? (value as { code?: unknown }).code : undefined);
  const code = codeOf(error) ?? codeOf((error as { cause?: unknown } | null)?.cause);
  return typeof code === "string" && CONNECTION_ERROR_CODES.has(code);
}

/** How one provider turns its backend's errors into {@link KilnError}s; see {@link createErrorMapper}. */
export interface ProviderErrorRules {
  /**
   * The `PROVIDER_UNAVAILABLE` error for a backend that could not be reached: it says where the
   * provider looked and how to start or reach the backend. `what` says what was being done.
   */
  readonly unavailable: (error: unknown, what: string) => KilnError;
  /**
   * Whether the backend was never reached. @defaultValue {@link isConnectionError}; a provider whose
   * client reports answers differently (an HTTP status on the error) narrows it.
   */
  readonly isConnectionError?: (error: unknown) => boolean;
  /**
   * The provider's own classification of an answer from its backend, tried before the default:
   * throttling (`THROTTLED`, retryable), refused credentials (`PROVIDER_UNAVAILABLE`), … Undefined
   * to fall through.
   */
  readonly classify?: (error: unknown, code: ErrorCode, what: string) => KilnError | undefined;
  /** The backend's own message for an error. @defaultValue the error's message */
  readonly messageOf?: (error: unknown) => string;
  /** Details to keep on the error (the backend's status or error code). Never secrets. */
  readonly detailsOf?: (error: unknown) => Record<string, unknown>;
  /** Whether a call that failed this way may succeed when repeated (a 5xx). @defaultValue false */
  readonly retryable?: (error: unknown) => boolean;
}

/** Maps anything a provider's backend threw to a {@link KilnError}; see {@link createErrorMapper}. */
export type ProviderErrorMapper = (error: unknown, code: ErrorCode, what: string) => KilnError;

/**
 * The one error-mapping skeleton every provider uses, in this order: a `KilnError` passes
 * through unchanged; a cancellation becomes `ABORTED`; a backend that was never reached becomes
 * the provider's `PROVIDER_UNAVAILABLE`; the provider's own `classify` (throttling, credentials);
 * anything else becomes `code` with "`what`: the backend's message". The original error is always
 * kept as `cause`.
 *
 * @example
 * ```ts
 * const toKiln = createErrorMapper({ unavailable: (error, what) => new KilnError("PROVIDER_UNAVAILABLE", `${what}: no engine at ${url}`, { cause: error }) });
 * try { await client.run(...) } catch (error) { throw toKiln(error, "LAUNCH_FAILED", "Starting the container"); }
 * ```
 */
export function createErrorMapper(rules: ProviderErrorRules): ProviderErrorMapper {
  const unreachable = rules.isConnectionError ?? isConnectionError;
  const messageOf = rules.messageOf ?? ((error: unknown) => (error instanceof Error ? error.message : String(error)));
  return (error, code, what) => {
    if (isKilnError(error)) return error;
    if (isAbortError(error)) return new KilnError("ABORTED", `${what}: cancelled.`, { cause: error });
    if (unreachable(error)) return rules.unavailable(error, what);
    const classified = rules.classify?.(error, code, what);
    if (classified) return classified;
    return new KilnError(code, `${what}: ${messageOf(error)}`, {
      cause: error,
      retryable: rules.retryable?.(error) ?? false,
      details: rules.detailsOf?.(error) ?? {},
    });
  };
}

/**
 * Checks a launch request's count, as every provider must before it starts anything.
 * @throws KilnError INVALID_ARGUMENT when `count` is not a whole number of 1 or more
 */
export function assertLaunchCount(count: number): void {
  if (!Number.isInteger(count) || count < 1) {
    throw new KilnError("INVALID_ARGUMENT", `Launch count must be a whole number of 1 or more, not ${count}.`);
  }
}
