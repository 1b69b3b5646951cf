/**
 * Kiln's own backoff for the Compute Engine calls the SDK does not retry. With the REST transport
 * of the pinned SDK nothing is retried at all (its retry codes are gRPC codes, its errors carry
 * HTTP statuses), and Compute Engine answers a used-up rate quota with 403 `rateLimitExceeded`,
 * which no SDK version retries. So every call of the provider goes through one
 * {@link GceBackoff}: a throttled call delays every other call of the provider too (one budget),
 * with jitter, never sooner than the answer's `Retry-After`.
 * @module
 */
import { ConstantBackoff, decorrelatedJitterGenerator, handleWhen, retry, type GeneratorFn } from "cockatiel";
import { KilnError, isKilnError, sleep, throwIfAborted } from "@kilnjs/core";
import { readGceError } from "./errors.js";

/** Time, for {@link GceBackoff}: the real clock by default, a fake one in tests. */
export interface BackoffClock {
  /** Milliseconds since 1970, like `Date.now()`. */
  now(): number;
  /**
   * Resolves after `ms` milliseconds.
   * @throws KilnError ABORTED (or the signal's reason) when `signal` is aborted first
   */
  sleep(ms: number, signal: AbortSignal | undefined): Promise<void>;
}

/** The real clock: `Date.now` and core's `sleep` (the global `setTimeout`), both of which fake timers replace. */
export const REAL_CLOCK: BackoffClock = {
  now: () => Date.now(),
  sleep: (ms, signal) => sleep(ms, signal),
};

/** Options of {@link GceBackoff}. */
export interface GceBackoffOptions {
  /** How many times one call is tried in all, the first included. @defaultValue 8 */
  readonly maxAttempts?: number;
  /** The first wait after a throttled or failed call (milliseconds); later waits grow about twice each time, with jitter. @defaultValue 1000 */
  readonly initialDelayMs?: number;
  /**
   * The longest wait the backoff picks itself (milliseconds); a longer `Retry-After` is still
   * honoured. Compute Engine's rate quotas refill each minute. @defaultValue 64000
   */
  readonly maxDelayMs?: number;
  /** The clock. @defaultValue {@link REAL_CLOCK} */
  readonly clock?: BackoffClock;
}

/**
 * What {@link GceBackoff.call} retries: a call throttled (403 `rateLimitExceeded`, 429,
 * `RESOURCE_EXHAUSTED`), failed by the server (5xx), or ended for getting no answer in time (a
 * retryable `TIMEOUT` from `GceClients`).
 */
export function isRetryableGceError(error: unknown): boolean {
  if (isKilnError(error, "TIMEOUT")) return error.retryable;
  const kind = readGceError(error)?.kind;
  return kind === "rate-limited" || kind === "server-error";
}

/** What the backoff saw, for logs and tests. */
export interface BackoffEvent {
  /** `throttled`: every call waits; `failed`: this call waits (a 5xx, a time-out). */
  readonly type: "throttled" | "failed";
  /** How long the wait is (milliseconds). */
  readonly delayMs: number;
  /** The attempt that failed, from 1. */
  readonly attempt: number;
}

/**
 * One retry budget shared by every Compute Engine call of a provider.
 *
 * - A throttled call (403 `rateLimitExceeded`, 429, `RESOURCE_EXHAUSTED`) moves the shared
 *   "not before" time forward by a jittered, growing delay (cockatiel's decorrelated jitter), or
 *   by the answer's `Retry-After` when that is longer. Every call, the throttled one and all
 *   others in flight or yet to start, waits for that time before its next request: when Compute
 *   Engine says "too fast", the whole provider slows down, not only the call that heard it.
 * - A call that failed on the server (5xx: insert, delete, operation wait), or got no answer in
 *   time (`TIMEOUT`), waits its own jittered delay and is tried again; others are not slowed.
 * - A success resets the shared delay to its start.
 * - After `maxAttempts` tries, the last error is thrown as it is (classify it with `gceError`).
 *
 * Retrying a mutating call is safe only with a `requestId` ({@link requestIdFor}): the
 * repeated request returns the original operation. Waits end early when the signal is aborted
 * (`ABORTED`).
 */
export class GceBackoff {
  readonly #maxAttempts: number;
  readonly #generator: { generator: GeneratorFn<unknown>; initialDelay: number; maxDelay: number; exponent: number };
  readonly #clock: BackoffClock;
  /** No call starts a request before this time (ms since 1970). */
  #notBefore = 0;
  /** The shared jitter generator's state: grows with each throttle, reset by a success. */
  #sharedState: unknown;
  readonly #listeners = new Set<(event: BackoffEvent) => void>();

  /**
   * @throws KilnError INVALID_ARGUMENT when a number option is out of range
   */
  constructor(options: GceBackoffOptions = {}) {
    const maxAttempts = options.maxAttempts ?? 8;
    const initialDelay = options.initialDelayMs ?? 1_000;
    const maxDelay = options.maxDelayMs ?? 64_000;
    if (!Number.isInteger(maxAttempts) || maxAttempts < 1) throw new KilnError("INVALID_ARGUMENT", `maxAttempts must be a whole number of at least 1, not ${maxAttempts}.`);
    if (!(initialDelay > 0) || !(maxDelay >= initialDelay)) throw new KilnError("INVALID_ARGUMENT", `The backoff needs 0 < initialDelayMs (${initialDelay}) ≤ maxDelayMs (${maxDelay}).`);
    this.#maxAttempts = maxAttempts;
    this.#generator = { generator: decorrelatedJitterGenerator as GeneratorFn<unknown>, initialDelay, maxDelay, exponent: 2 };
    this.#clock = options.clock ?? REAL_CLOCK;
  }

  /** Calls `listener` on every wait the backoff decides; returns a function that stops it. */
  onBackoff(listener: (event: BackoffEvent) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** When the next request of any call may start (ms since 1970); in the past when there is no wait. */
  get notBefore(): number {
    return this.#notBefore;
  }

  /**
   * Runs `request` (one SDK call), trying it again as described on {@link GceBackoff}.
   * @param request - makes the call; called once per attempt
   * @param signal - cancels the waits (the request itself takes it from its own options)
   * @returns what the last attempt returned
   * @throws the last attempt's error when it is not retryable or the attempts are used up;
   *   KilnError ABORTED when `signal` is aborted
   */
  async call<T>(request: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    let ownState: unknown;
    let ownNotBefore = 0;
    // cockatiel counts the attempts and filters what is retried; the waits are this class's
    // (shared between calls, abortable), so cockatiel's own delay between attempts is zero.
    const policy = retry(handleWhen(isRetryableGceError), { maxAttempts: this.#maxAttempts - 1, backoff: new ConstantBackoff(0) });
    return policy.execute(async ({ attempt }) => {
      await this.#waitTurn(ownNotBefore, signal);
      try {
        const result = await request();
        this.#sharedState = undefined;
        return result;
      } catch (error) {
        const info = readGceError(error);
        if (info?.kind === "rate-limited") {
          const [jittered, state] = this.#next(this.#sharedState);
          this.#sharedState = state;
          const delayMs = Math.max(jittered, info.retryAfterMs ?? 0);
          this.#notBefore = Math.max(this.#notBefore, this.#clock.now() + delayMs);
          this.#emit({ type: "throttled", delayMs, attempt: attempt + 1 });
        } else if (isRetryableGceError(error)) {
          // A 5xx or a time-out: this call alone waits.
          const [jittered, state] = this.#next(ownState);
          ownState = state;
          const delayMs = Math.max(jittered, info?.retryAfterMs ?? 0);
          ownNotBefore = this.#clock.now() + delayMs;
          this.#emit({ type: "failed", delayMs, attempt: attempt + 1 });
        }
        throw error;
      }
    }, signal);
  }

  /** Waits until both the shared and the call's own "not before" time have passed. */
  async #waitTurn(ownNotBefore: number, signal: AbortSignal | undefined): Promise<void> {
    for (;;) {
      throwIfAborted(signal);
      const waitMs = Math.max(this.#notBefore, ownNotBefore) - this.#clock.now();
      if (waitMs <= 0) return;
      // Another call may move the shared time further while this one sleeps: look again after.
      await this.#clock.sleep(waitMs, signal);
    }
  }

  #next(state: unknown): [number, unknown] {
    const [delay, next] = this.#generator.generator(state, this.#generator);
    return [Math.max(1, Math.round(delay)), next];
  }

  #emit(event: BackoffEvent): void {
    for (const listener of this.#listeners) listener(event);
  }
}
