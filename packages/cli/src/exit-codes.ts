import type { ErrorCode } from "@kilnjs/core";

/**
 * The `kiln` exit codes. Stable: scripts depend on them. Documented in docs/cli.md.
 */
export const EXIT_CODES = {
  /** Success, including a deploy with nothing to do. */
  success: 0,
  /** A rollout, build or launch failed; what ran before keeps serving. */
  failed: 1,
  /** Bad input: spec, flags, arguments, an unknown release or environment. Nothing was changed. */
  badInput: 2,
  /** The provider's backend (Docker engine, cloud API) could not be reached, or no such provider. */
  unavailable: 3,
  /** Another rollout of the target holds the lock, or this one lost its lock to another process. */
  locked: 4,
  /** State could not be read or written. */
  state: 5,
  /** Cancelled by SIGINT/SIGTERM (128 + SIGINT). */
  aborted: 130,
  /** A bug in Kiln. */
  internal: 70,
} as const;

/** The exit code for an error code. */
export function exitCodeFor(code: ErrorCode): number {
  switch (code) {
    case "SPEC_INVALID":
    case "SPEC_NOT_FOUND":
    case "INVALID_ARGUMENT":
    case "ENVIRONMENT_NOT_FOUND":
    case "RELEASE_NOT_FOUND":
    case "NO_ROLLBACK_TARGET":
    case "PLAN_INVALID":
    case "BUILD_CONTEXT_INVALID":
    case "SECRET_UNAVAILABLE":
    case "SECRET_FILES_IN_CONTEXT":
      return EXIT_CODES.badInput;
    case "PROVIDER_NOT_FOUND":
    case "PROVIDER_UNAVAILABLE":
    case "THROTTLED":
    case "CAPABILITY_MISSING":
      return EXIT_CODES.unavailable;
    case "TARGET_LOCKED":
    case "LOCK_LOST":
      return EXIT_CODES.locked;
    case "STATE_CORRUPT":
    case "STATE_UNAVAILABLE":
      return EXIT_CODES.state;
    case "ABORTED":
      return EXIT_CODES.aborted;
    case "INTERNAL":
      return EXIT_CODES.internal;
    default:
      return EXIT_CODES.failed;
  }
}
