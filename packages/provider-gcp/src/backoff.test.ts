// Kiln's backoff under a fake clock (vitest's fake timers replace setTimeout and Date): when it
// waits, how long, and that one throttled call slows every other call down.
import { KilnError } from "@kilnjs/core";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { GceBackoff, type BackoffEvent } from "./backoff.js";
import { errorBody } from "./test-support.js";

/** An error shaped like the pinned SDK's (a gaxios error: HTTP status, headers, body as the message). */
function answerError(status: number, reason: string, headers: Record<string, string> = {}): Error {
  return Object.assign(new Error(JSON.stringify(errorBody(status, reason, reason))), { status, response: { status, headers } });
}
const throttled = (retryAfterSeconds?: number) => answerError(403, "rateLimitExceeded", retryAfterSeconds === undefined ? {} : { "retry-after": String(retryAfterSeconds) });

/** A request that fails with each of `errors` in turn, then returns `value`, recording the fake time of each attempt. */
function scripted<T>(errors: Error[], value: T): { request: () => Promise<T>; attempts: number[] } {
  const attempts: number[] = [];
  const queue = [...errors];
  return {
    attempts,
    request: () => {
      attempts.push(Date.now());
      const next = queue.shift();
      return next ? Promise.reject(next) : Promise.resolve(value);
    },
  };
}

/** Runs timers until `promise` settles, at most `limitMs` of fake time; returns its outcome. */
async function settle<T>(promise: Promise<T>, limitMs = 3_600_000): Promise<{ value?: T; error?: unknown }> {
  let outcome: { value?: T; error?: unknown } | undefined;
  promise.then(
    (value) => (outcome = { value }),
    (error: unknown) => (outcome = { error }),
  );
  const deadline = Date.now() + limitMs;
  while (outcome === undefined && Date.now() < deadline) await vi.advanceTimersByTimeAsync(50);
  if (outcome === undefined) throw new Error(`still pending after ${limitMs} ms of fake time (now ${Date.now() - START})`);
  return outcome;
}

const START = Date.parse("2026-12-07T05:00:00Z");

beforeEach(() => {
  vi.useFakeTimers({ now: START });
  // The jitter's random part, fixed so delays are known: decorrelated jitter at its middle.
  vi.spyOn(Math, "random").mockReturnValue(0.5);
});
afterEach(() => {
  vi.useRealTimers();
  vi.restoreAllMocks();
});

describe("GceBackoff", () => {
  it("retries a throttled call after a jittered wait, and never before the answer's Retry-After", async () => {
    const backoff = new GceBackoff({ initialDelayMs: 1_000 });
    const events: BackoffEvent[] = [];
    backoff.onBackoff((event) => events.push(event));
    const { request, attempts } = scripted([throttled(30), throttled()], "ok");
    expect(await settle(backoff.call(request))).toEqual({ value: "ok" });
    expect(attempts).toHaveLength(3);
    // Retry-After: 30 is longer than the first jittered delay, so it wins.
    expect(events[0]).toEqual({ type: "throttled", delayMs: 30_000, attempt: 1 });
    expect(attempts[1]! - attempts[0]!).toBeGreaterThanOrEqual(30_000);
    expect(attempts[1]! - attempts[0]!).toBeLessThan(30_100);
    // Without Retry-After the jittered delay decides, and it is not zero.
    expect(events[1]!.delayMs).toBeGreaterThan(0);
    expect(attempts[2]! - attempts[1]!).toBeGreaterThanOrEqual(events[1]!.delayMs);
  });

  it("slows every call down when one is throttled: one budget shared across parallel calls", async () => {
    const backoff = new GceBackoff({ initialDelayMs: 1_000 });
    const first = scripted([throttled(20)], "first");
    const others = [scripted([], "second"), scripted([], "third")];
    const firstCall = backoff.call(first.request);
    // The throttle is heard before the other calls start their requests.
    await vi.advanceTimersByTimeAsync(0);
    expect(first.attempts).toHaveLength(1);
    const otherCalls = others.map((other) => backoff.call(other.request));
    await vi.advanceTimersByTimeAsync(19_900);
    // Nobody sent a request during the 20 s the API asked for, not even calls that were never throttled.
    expect(others.map((other) => other.attempts.length)).toEqual([0, 0]);
    expect(first.attempts).toHaveLength(1);
    expect(await settle(Promise.all([firstCall, ...otherCalls]))).toEqual({ value: ["first", "second", "third"] });
    for (const call of [first, ...others]) expect(call.attempts.at(-1)! - START).toBeGreaterThanOrEqual(20_000);
  });

  it("grows the shared delay with each throttle and starts small again after a success", async () => {
    const backoff = new GceBackoff({ initialDelayMs: 1_000, maxDelayMs: 64_000 });
    const events: BackoffEvent[] = [];
    backoff.onBackoff((event) => events.push(event));
    await settle(backoff.call(scripted([throttled(), throttled(), throttled()], "ok").request));
    const grown = events.map((event) => event.delayMs);
    expect(grown[1]!).toBeGreaterThan(grown[0]!);
    expect(grown[2]!).toBeGreaterThan(grown[1]!);
    await settle(backoff.call(scripted([throttled()], "ok").request));
    expect(events.at(-1)!.delayMs).toBe(grown[0]);
    expect(Math.max(...events.map((event) => event.delayMs))).toBeLessThanOrEqual(64_000);
  });

  it("retries a server error for that call alone; others go on", async () => {
    const backoff = new GceBackoff({ initialDelayMs: 1_000 });
    const failing = scripted([answerError(503, "backendError")], "failing");
    const other = scripted([], "other");
    const failingCall = backoff.call(failing.request);
    await vi.advanceTimersByTimeAsync(0);
    const otherCall = backoff.call(other.request);
    await vi.advanceTimersByTimeAsync(1);
    expect(other.attempts).toEqual([START]);
    expect(await settle(Promise.all([failingCall, otherCall]))).toEqual({ value: ["failing", "other"] });
    expect(failing.attempts).toHaveLength(2);
    expect(failing.attempts[1]! - failing.attempts[0]!).toBeGreaterThan(0);
  });

  it("retries a call Kiln ended for getting no answer (a retryable TIMEOUT) for that call alone", async () => {
    const backoff = new GceBackoff({ initialDelayMs: 1_000 });
    const timedOut = () => new KilnError("TIMEOUT", "no answer", { retryable: true });
    const slow = scripted([timedOut()], "done");
    expect(await settle(backoff.call(slow.request))).toEqual({ value: "done" });
    expect(slow.attempts).toHaveLength(2);
    expect(backoff.notBefore).toBeLessThanOrEqual(START);
    const final = scripted([new KilnError("TIMEOUT", "gave up", { retryable: false })], "never");
    expect((await settle(backoff.call(final.request))).error).toMatchObject({ code: "TIMEOUT" });
    expect(final.attempts).toHaveLength(1);
  });

  it("throws at once what retrying cannot fix, and the last error once the attempts are used up", async () => {
    const backoff = new GceBackoff({ maxAttempts: 3 });
    const missing = scripted([answerError(404, "notFound")], "never");
    const outcome = await settle(backoff.call(missing.request));
    expect(missing.attempts).toHaveLength(1);
    expect(outcome.error).toMatchObject({ status: 404 });
    const quota = scripted([answerError(403, "quotaExceeded")], "never");
    await settle(backoff.call(quota.request));
    expect(quota.attempts).toHaveLength(1);
    const always = scripted([throttled(), throttled(), throttled(), throttled()], "never");
    const exhausted = await settle(backoff.call(always.request));
    expect(always.attempts).toHaveLength(3);
    expect(exhausted.error).toMatchObject({ status: 403 });
  });

  it("stops waiting when the signal is aborted", async () => {
    const backoff = new GceBackoff();
    const controller = new AbortController();
    const { request, attempts } = scripted([throttled(600)], "never");
    const call = backoff.call(request, controller.signal);
    await vi.advanceTimersByTimeAsync(1_000);
    controller.abort();
    const outcome = await settle(call, 1_000);
    expect(outcome.error).toMatchObject({ code: "ABORTED" });
    expect(attempts).toHaveLength(1);
    expect(Date.now() - START).toBeLessThan(10_000);
  });

  it("refuses options out of range", () => {
    expect(() => new GceBackoff({ maxAttempts: 0 })).toThrow(expect.objectContaining({ code: "INVALID_ARGUMENT" }));
    expect(() => new GceBackoff({ initialDelayMs: 10, maxDelayMs: 5 })).toThrow(expect.objectContaining({ code: "INVALID_ARGUMENT" }));
  });
});
