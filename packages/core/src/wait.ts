import { KilnError, throwIfAborted } from "./errors.js";

/** What one attempt of {@link waitFor} decided. */
export type WaitOutcome<T> = { done: true; value: T } | { done: false; reason?: string };

/** Options of {@link waitFor}. */
export interface WaitOptions {
  /** Give up after this long (milliseconds). */
  readonly timeoutMs: number;
  /** First delay between attempts (milliseconds). @defaultValue 250 */
  readonly minDelayMs?: number;
  /** Largest delay between attempts (milliseconds); delays double up to it, with ±20% jitter. @defaultValue 5000 */
  readonly maxDelayMs?: number;
  /** Cancels the wait. */
  readonly signal?: AbortSignal;
  /** Describes what is awaited, for the timeout message ("instances to become healthy"). */
  readonly description: string;
}

/**
 * Calls `attempt` until it reports done, the deadline passes or the signal aborts: the one
 * polling loop of Kiln (providers and core use it instead of their own). An error thrown by
 * `attempt` ends the wait and propagates.
 *
 * @returns the value of the attempt that was done
 * @throws KilnError TIMEOUT (message includes the last reason) or ABORTED
 */
export async function waitFor<T>(attempt: () => Promise<WaitOutcome<T>>, options: WaitOptions): Promise<T> {
  const deadline = Date.now() + options.timeoutMs;
  let delay = options.minDelayMs ?? 250;
  const maxDelay = options.maxDelayMs ?? 5_000;
  let lastReason: string | undefined;
  for (;;) {
    throwIfAborted(options.signal);
    const outcome = await attempt();
    if (outcome.done) return outcome.value;
    lastReason = outcome.reason ?? lastReason;
    const remaining = deadline - Date.now();
    if (remaining <= 0) {
      throw new KilnError(
        "TIMEOUT",
        `Timed out after ${options.timeoutMs} ms waiting for ${options.description}${lastReason ? `: ${lastReason}` : ""}.`,
        { retryable: true },
      );
    }
    const jittered = delay * (0.8 + Math.random() * 0.4);
    await sleep(Math.min(jittered, remaining), options.signal);
    delay = Math.min(delay * 2, maxDelay);
  }
}

/**
 * Resolves after `ms` milliseconds, or rejects with ABORTED when the signal aborts first.
 * For pacing a loop, not for synchronisation.
 */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(new KilnError("ABORTED", "The operation was cancelled.", { cause: signal.reason }));
      return;
    }
    const onAbort = () => {
      clearTimeout(timer);
      reject(new KilnError("ABORTED", "The operation was cancelled.", { cause: signal?.reason }));
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
