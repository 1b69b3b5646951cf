/**
 * A bounded HTTP load generator: drives a service over plain HTTP while something happens to it (a
 * rollout, a proxy reload, an instance killed) and reports what a client saw. Kiln's zero-downtime
 * tests and its front-proxy benchmark use it; it works against any HTTP server.
 *
 * {@link startLoad} is an open loop at a target rate: every tick it sends the requests that are due,
 * whatever the ones before are doing, through one keep-alive agent with a socket cap (requests beyond the cap wait in
 * the agent's queue, and that wait counts in their latency). A share of the requests are slow
 * (`GET /slow?ms=N`, N up to 2 s: the target must answer that path after N ms, as Kiln's
 * examples/hello-web does). It counts, for the whole run and for a window
 * the caller marks (the "switch"): requests sent and completed, failed ones (connection errors,
 * resets, timeouts, non-2xx answers) by reason, the ones a server marked `x-served-after-stop`,
 * answers by `x-instance`, and the latency distribution (p50 / p99 / max, and a coarse histogram).
 *
 * Hard limits, whatever the caller asks: at most {@link LOAD_MAX_DURATION_MS} of sending, at most
 * {@link LOAD_MAX_REQUESTS} requests, each request abandoned (and counted failed) after its timeout.
 * Traffic goes only where the caller points it (the tests use 127.0.0.1).
 *
 * {@link runClosedLoop} is a closed loop for benchmarks: a fixed number of requests in flight, each
 * worker sending its next one when the last ended, reporting throughput and latency.
 */
import { Agent, request as httpRequest } from "node:http";
import { KilnError } from "@kilnjs/core";
import { seededRandom as random } from "./faults.js";

/** No load run sends for longer than this, in ms (90 s), whatever `durationMs` says. */
export const LOAD_MAX_DURATION_MS = 90_000;
/** No {@link startLoad} run sends more requests than this (30,000). */
export const LOAD_MAX_REQUESTS = 30_000;
/** Upper bounds of the buckets of {@link LoadStats.histogram}, in ms (a last bucket holds everything above). */
export const LOAD_HISTOGRAM_BOUNDS_MS = [5, 10, 25, 50, 100, 250, 500, 1000, 1500, 2000, 2500, 3000, 5000, 10_000] as const;

/** Options of {@link startLoad}. */
export interface LoadOptions {
  /** Host to send to (an IP address or name; the tests use 127.0.0.1). */
  host: string;
  /** TCP port to send to. */
  port: number;
  /** Requests per second to send (open loop), in (0, 5000]. */
  ratePerSecond: number;
  /** How long to send for, in ms (≤ {@link LOAD_MAX_DURATION_MS}); `stop()` may end it earlier. */
  durationMs: number;
  /** Stop sending after this many requests (≤ {@link LOAD_MAX_REQUESTS}; default: rate × duration, capped). */
  maxRequests?: number;
  /** Share of requests that are slow, 0..1 (default 0.2). */
  slowShare?: number;
  /** Slow requests take a uniformly random time up to this, in ms (default 2000, at most 2000). */
  maxSlowMs?: number;
  /** Path of the fast requests (default `/version`). */
  fastPath?: string;
  /** Sockets the keep-alive agent may open (default 128). */
  maxSockets?: number;
  /** A request without a complete answer after this long is abandoned and counted failed (default 10 s). */
  requestTimeoutMs?: number;
  /** A seed for the choice of slow requests and their times, for repeatable runs (default 1). */
  seed?: number;
}

/** Figures for a set of requests (the whole run, or the marked window). */
export interface LoadStats {
  /** Requests sent (started). */
  sent: number;
  /** Requests that ended (answered or failed). */
  completed: number;
  /** Answered with a 2xx status. */
  ok: number;
  /** Connection errors, resets, timeouts, non-2xx answers. */
  failed: number;
  /** Failed requests by reason (`status 502`, `ECONNRESET`, `timeout`, …). */
  failures: Record<string, number>;
  /** Answers that carried `x-served-after-stop: 1`. */
  servedAfterStop: number;
  /** Answers by their `x-instance` header (`?` when absent). */
  byInstance: Record<string, number>;
  /** Median latency of completed requests, in ms (NaN when none completed). */
  p50Ms: number;
  /** 99th percentile latency of completed requests (nearest rank), in ms (NaN when none completed). */
  p99Ms: number;
  /** Largest latency of completed requests, in ms (NaN when none completed). */
  maxMs: number;
  /** Latency of the fast requests only (NaN when none): what a switch costs shows here, not hidden behind the slow ones. */
  fast: LoadPercentiles;
  /** Of the slow requests: latency beyond the time they asked for (`/slow?ms=N`: latency − N). */
  slowExcess: LoadPercentiles;
  /** Counts of completed requests by latency bucket: `≤5ms`, …, `>10000ms`. */
  histogram: Record<string, number>;
  /** How long this set spans, in ms. */
  elapsedMs: number;
  /** Requests sent per second over {@link LoadStats.elapsedMs} (one decimal). */
  sentPerSecond: number;
}

/** Latency percentiles of a subset of requests, in ms (NaN when the subset is empty). */
export interface LoadPercentiles {
  /** Requests in the subset. */
  count: number;
  /** Median, in ms. */
  p50Ms: number;
  /** 99th percentile (nearest rank), in ms. */
  p99Ms: number;
  /** Largest, in ms. */
  maxMs: number;
}

/** One notable request (a failure, or an answer served after stop), for assertion messages. */
export interface LoadFailureSample {
  /** When it was sent, in ms since the run started. */
  at: number;
  /** The path requested (`/version`, `/slow?ms=840`). */
  path: string;
  /** Why it counts: `status 502`, `ECONNRESET`, `timeout`, `x-served-after-stop`, … */
  reason: string;
  /** The `x-instance` header of the answer, when there was one. */
  instance?: string;
}

/** What a {@link startLoad} run saw, when it ended. */
export interface LoadReport {
  /** Every request of the run. */
  overall: LoadStats;
  /** The marked window, when `markWindowStart()` was called. */
  window?: LoadStats;
  /** The first failures (at most 20), with their time. */
  failureSamples: LoadFailureSample[];
  /** Answers marked served-after-stop (at most 20), with their time and instance. */
  servedAfterStopSamples: LoadFailureSample[];
  /** Why sending stopped: `duration`, `maxRequests` or `stopped`. */
  endedBy: "duration" | "maxRequests" | "stopped";
  /** Requests still unanswered when the report was made (0 unless they outlived their timeout). */
  abandoned: number;
}

/** A running {@link startLoad}: mark a window, read figures so far, stop. */
export interface LoadRun {
  /** Starts the window whose figures are reported apart (requests *started* from now on). */
  markWindowStart(): void;
  /** Ends the window (requests started after this are outside it). */
  markWindowEnd(): void;
  /** Figures so far (requests still in flight are not in them yet). */
  snapshot(): LoadStats;
  /** Stops sending, waits for the requests in flight (each bounded by its timeout), reports. */
  stop(): Promise<LoadReport>;
  /** Resolves with the report when sending ended by itself (duration, maxRequests) or by `stop()`, and every request ended. */
  readonly done: Promise<LoadReport>;
}

interface Sample {
  startedAt: number;
  latencyMs: number;
  ok: boolean;
  reason?: string;
  instance?: string;
  afterStop: boolean;
  path: string;
  /** For `/slow?ms=N`: N. */
  slowMs?: number;
}

function percentilesOf(latencies: number[]): LoadPercentiles {
  latencies.sort((a, b) => a - b);
  return {
    count: latencies.length,
    p50Ms: percentile(latencies, 50),
    p99Ms: percentile(latencies, 99),
    maxMs: latencies.length === 0 ? Number.NaN : latencies[latencies.length - 1]!,
  };
}

/** The `p`-th percentile (0..100, nearest rank) of values sorted in ascending order; NaN when there are none. */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))]!;
}

function bucketOf(latencyMs: number): string {
  for (const bound of LOAD_HISTOGRAM_BOUNDS_MS) if (latencyMs <= bound) return `≤${bound}ms`;
  return `>${LOAD_HISTOGRAM_BOUNDS_MS[LOAD_HISTOGRAM_BOUNDS_MS.length - 1]}ms`;
}

/** Figures over `samples`, with `sent` requests started over `elapsedMs`. */
function summarize(samples: readonly Sample[], sent: number, elapsedMs: number): LoadStats {
  const failures: Record<string, number> = {};
  const byInstance: Record<string, number> = {};
  const histogram: Record<string, number> = {};
  const latencies: number[] = [];
  let ok = 0;
  let servedAfterStop = 0;
  for (const sample of samples) {
    latencies.push(sample.latencyMs);
    const bucket = bucketOf(sample.latencyMs);
    histogram[bucket] = (histogram[bucket] ?? 0) + 1;
    if (sample.ok) ok += 1;
    else failures[sample.reason ?? "?"] = (failures[sample.reason ?? "?"] ?? 0) + 1;
    if (sample.afterStop) servedAfterStop += 1;
    if (sample.instance !== undefined || sample.ok) byInstance[sample.instance ?? "?"] = (byInstance[sample.instance ?? "?"] ?? 0) + 1;
  }
  latencies.sort((a, b) => a - b);
  const ordered: Record<string, number> = {};
  for (const bucket of [...LOAD_HISTOGRAM_BOUNDS_MS.map((bound) => `≤${bound}ms`), `>${LOAD_HISTOGRAM_BOUNDS_MS[LOAD_HISTOGRAM_BOUNDS_MS.length - 1]}ms`]) {
    if (histogram[bucket] !== undefined) ordered[bucket] = histogram[bucket];
  }
  return {
    sent,
    completed: samples.length,
    ok,
    failed: samples.length - ok,
    failures,
    servedAfterStop,
    byInstance,
    p50Ms: percentile(latencies, 50),
    p99Ms: percentile(latencies, 99),
    maxMs: latencies.length === 0 ? Number.NaN : latencies[latencies.length - 1]!,
    fast: percentilesOf(samples.filter((sample) => sample.slowMs === undefined).map((sample) => sample.latencyMs)),
    slowExcess: percentilesOf(samples.filter((sample) => sample.slowMs !== undefined).map((sample) => sample.latencyMs - sample.slowMs!)),
    histogram: ordered,
    elapsedMs,
    sentPerSecond: elapsedMs > 0 ? Math.round((sent * 1000 * 10) / elapsedMs) / 10 : 0,
  };
}

/**
 * Formats figures as one line for logs and assertion messages: `300 sent, 300 ok, 0 failed, 0 served
 * after stop, p50 1.2 ms, p99 250.3 ms, max 280.1 ms (fast requests: …; slow ones beyond their asked
 * time: …), 200.1/s over 1.5 s`; failures are listed by reason (`status 503×12`).
 */
export function formatLoadStats(stats: LoadStats): string {
  const failures = Object.entries(stats.failures)
    .map(([reason, count]) => `${reason}×${count}`)
    .join(", ");
  return (
    `${stats.sent} sent, ${stats.ok} ok, ${stats.failed} failed${failures ? ` (${failures})` : ""}, ${stats.servedAfterStop} served after stop, ` +
    `p50 ${stats.p50Ms.toFixed(1)} ms, p99 ${stats.p99Ms.toFixed(1)} ms, max ${stats.maxMs.toFixed(1)} ms ` +
    `(fast requests: p99 ${stats.fast.p99Ms.toFixed(1)} ms, max ${stats.fast.maxMs.toFixed(1)} ms; slow ones beyond their asked time: p99 ${stats.slowExcess.p99Ms.toFixed(1)} ms), ` +
    `${stats.sentPerSecond}/s over ${(stats.elapsedMs / 1000).toFixed(1)} s`
  );
}

/** Throws INVALID_ARGUMENT naming every problem, when there are any. */
function checkOptions(what: string, problems: string[]): void {
  if (problems.length > 0) throw new KilnError("INVALID_ARGUMENT", `Invalid ${what} options: ${problems.join("; ")}.`, { details: { issues: problems } });
}

/**
 * Starts sending requests at `ratePerSecond` (open loop) to `http://host:port`; see the module
 * comment for what is sent and counted, and {@link LoadRun} for what the caller can do while it runs.
 * Sending ends after `durationMs`, after `maxRequests`, or on `stop()`.
 *
 * @example
 * ```ts
 * const load = startLoad({ host: "127.0.0.1", port, ratePerSecond: 200, durationMs: 30_000 });
 * load.markWindowStart(); // … the rollout …
 * load.markWindowEnd();
 * const report = await load.stop();
 * expect(report.window?.failed, formatLoadStats(report.overall)).toBe(0);
 * ```
 * @throws KilnError INVALID_ARGUMENT when `ratePerSecond` is outside (0, 5000], `durationMs` outside
 *   (0, {@link LOAD_MAX_DURATION_MS}], `maxRequests` below 1 or `slowShare` outside [0, 1]
 */
export function startLoad(options: LoadOptions): LoadRun {
  const { host, port, ratePerSecond } = options;
  const maxRequests = Math.min(LOAD_MAX_REQUESTS, options.maxRequests ?? Math.ceil((ratePerSecond * options.durationMs) / 1000));
  const slowShare = options.slowShare ?? 0.2;
  const problems: string[] = [];
  if (!(ratePerSecond > 0 && ratePerSecond <= 5_000)) problems.push(`ratePerSecond must be in (0, 5000]; got ${ratePerSecond}`);
  if (!(options.durationMs > 0 && options.durationMs <= LOAD_MAX_DURATION_MS)) problems.push(`durationMs must be in (0, ${LOAD_MAX_DURATION_MS}]; got ${options.durationMs}`);
  if (!(maxRequests > 0)) problems.push(`maxRequests must be > 0; got ${options.maxRequests}`);
  if (!(slowShare >= 0 && slowShare <= 1)) problems.push(`slowShare must be in [0, 1]; got ${slowShare}`);
  checkOptions("load", problems);
  const maxSlowMs = Math.min(2000, Math.max(0, Math.floor(options.maxSlowMs ?? 2000)));
  const fastPath = options.fastPath ?? "/version";
  const timeoutMs = options.requestTimeoutMs ?? 10_000;
  const next = random(options.seed ?? 1);
  // Idle sockets are closed by us before a server's keep-alive timeout (hello-web: 5 s) can close them under us.
  const agent = new Agent({ keepAlive: true, maxSockets: options.maxSockets ?? 128, timeout: 4_000, scheduling: "fifo" });

  const startedAt = performance.now();
  const samples: Sample[] = [];
  const failureSamples: LoadFailureSample[] = [];
  const afterStopSamples: LoadFailureSample[] = [];
  let sent = 0;
  let inFlight = 0;
  let sending = true;
  let endedBy: LoadReport["endedBy"] = "duration";
  let windowStart: number | undefined;
  let windowEnd: number | undefined;
  let windowSent = 0;
  let sendingEndedAt = startedAt;
  const now = () => performance.now() - startedAt;

  let idle: (() => void) | undefined;
  const record = (sample: Sample) => {
    samples.push(sample);
    if (!sample.ok && failureSamples.length < 20) failureSamples.push({ at: Math.round(sample.startedAt), path: sample.path, reason: sample.reason ?? "?", ...(sample.instance ? { instance: sample.instance } : {}) });
    if (sample.afterStop && afterStopSamples.length < 20) afterStopSamples.push({ at: Math.round(sample.startedAt), path: sample.path, reason: "x-served-after-stop", ...(sample.instance ? { instance: sample.instance } : {}) });
    inFlight -= 1;
    if (inFlight === 0 && !sending) idle?.();
  };

  const fire = () => {
    const slowMs = next() < slowShare ? Math.floor(next() * (maxSlowMs + 1)) : undefined;
    const path = slowMs !== undefined ? `/slow?ms=${slowMs}` : fastPath;
    const at = now();
    sent += 1;
    if (windowStart !== undefined && windowEnd === undefined) windowSent += 1;
    inFlight += 1;
    let settled = false;
    const finish = (ok: boolean, reason: string | undefined, headers?: Record<string, string | string[] | undefined>) => {
      if (settled) return;
      settled = true;
      const instance = typeof headers?.["x-instance"] === "string" ? headers["x-instance"] : undefined;
      record({
        startedAt: at,
        latencyMs: now() - at,
        ok,
        ...(reason ? { reason } : {}),
        ...(instance ? { instance } : {}),
        afterStop: headers?.["x-served-after-stop"] === "1",
        path,
        ...(slowMs !== undefined ? { slowMs } : {}),
      });
    };
    const req = httpRequest({ host, port, path, method: "GET", agent, timeout: timeoutMs }, (response) => {
      const status = response.statusCode ?? 0;
      response.on("data", () => undefined);
      response.on("end", () => finish(status >= 200 && status < 300, status >= 200 && status < 300 ? undefined : `status ${status}`, response.headers));
      response.on("error", (error: NodeJS.ErrnoException) => finish(false, error.code ?? error.message, response.headers));
      response.on("aborted", () => finish(false, "aborted", response.headers));
    });
    // The overall deadline of one request (connect + answer), not only socket inactivity.
    const deadline = setTimeout(() => req.destroy(Object.assign(new Error("timeout"), { code: "timeout" })), timeoutMs);
    req.on("close", () => clearTimeout(deadline));
    req.on("timeout", () => req.destroy(Object.assign(new Error("timeout"), { code: "timeout" })));
    req.on("error", (error: NodeJS.ErrnoException) => finish(false, error.code ?? error.message));
    req.end();
  };

  let resolveDone!: (report: LoadReport) => void;
  const done = new Promise<LoadReport>((resolve) => (resolveDone = resolve));

  const windowStats = (): LoadStats | undefined => {
    if (windowStart === undefined) return undefined;
    const start = windowStart;
    const end = windowEnd ?? (sending ? now() : sendingEndedAt - startedAt);
    return summarize(
      samples.filter((s) => s.startedAt >= start && s.startedAt <= end),
      windowSent,
      Math.max(0, end - start),
    );
  };

  const report = (): LoadReport => {
    const window = windowStats();
    return {
      overall: summarize(samples, sent, (sending ? performance.now() : sendingEndedAt) - startedAt),
      ...(window ? { window } : {}),
      failureSamples,
      servedAfterStopSamples: afterStopSamples,
      endedBy,
      abandoned: inFlight,
    };
  };

  let finished = false;
  const endSending = (why: LoadReport["endedBy"]) => {
    if (!sending) return;
    sending = false;
    endedBy = why;
    sendingEndedAt = performance.now();
    clearInterval(ticker);
    clearTimeout(hardStop);
    // Every request has its own deadline; this one only guards against a bug in that bookkeeping.
    const wait = new Promise<void>((resolve) => {
      if (inFlight === 0) resolve();
      idle = resolve;
      setTimeout(resolve, timeoutMs + 2_000).unref();
    });
    void wait.then(() => {
      if (finished) return;
      finished = true;
      agent.destroy();
      resolveDone(report());
    });
  };

  const ticker = setInterval(() => {
    const due = Math.min(maxRequests, Math.floor((now() * ratePerSecond) / 1000) + 1);
    while (sending && sent < due) fire();
    if (sent >= maxRequests) endSending("maxRequests");
    else if (now() >= options.durationMs) endSending("duration");
  }, 5);
  const hardStop = setTimeout(() => endSending("duration"), Math.min(options.durationMs, LOAD_MAX_DURATION_MS) + 50);

  return {
    markWindowStart() {
      if (windowStart === undefined) windowStart = now();
    },
    markWindowEnd() {
      if (windowStart !== undefined && windowEnd === undefined) windowEnd = now();
    },
    snapshot() {
      return summarize(samples, sent, now());
    },
    stop() {
      endSending("stopped");
      return done;
    },
    done,
  };
}

/** Options of {@link runClosedLoop}. */
export interface ClosedLoopOptions {
  /** Host to send to (an IP address or name). */
  host: string;
  /** TCP port to send to. */
  port: number;
  /** Requests in flight at all times, in [1, 1000] (each worker sends its next request when the last one ended). */
  concurrency: number;
  /** How long to run, in ms (≤ {@link LOAD_MAX_DURATION_MS}). */
  durationMs: number;
  /** Path requested (default `/version`). */
  path?: string;
  /** Stop after this many requests (default and at most 1,000,000). */
  maxRequests?: number;
  /** A request without a complete answer after this long is abandoned and counted failed (default 5 s). */
  requestTimeoutMs?: number;
}

/**
 * Closed-loop throughput: `concurrency` workers over one keep-alive agent, each sending its next
 * request when the previous one ended, for `durationMs`. For benchmarks (requests per second and
 * latency at a fixed concurrency); bounded in time and count like {@link startLoad}.
 *
 * @returns the figures of every request (`sentPerSecond` is the throughput)
 * @throws KilnError INVALID_ARGUMENT (the promise rejects) when `durationMs` is outside
 *   (0, {@link LOAD_MAX_DURATION_MS}] or `concurrency` outside [1, 1000]
 */
export async function runClosedLoop(options: ClosedLoopOptions): Promise<LoadStats> {
  const problems: string[] = [];
  if (!(options.durationMs > 0 && options.durationMs <= LOAD_MAX_DURATION_MS)) problems.push(`durationMs must be in (0, ${LOAD_MAX_DURATION_MS}]; got ${options.durationMs}`);
  if (!(options.concurrency >= 1 && options.concurrency <= 1_000)) problems.push(`concurrency must be in [1, 1000]; got ${options.concurrency}`);
  checkOptions("closed loop", problems);
  const maxRequests = Math.min(1_000_000, options.maxRequests ?? 1_000_000);
  const path = options.path ?? "/version";
  const timeoutMs = options.requestTimeoutMs ?? 5_000;
  const agent = new Agent({ keepAlive: true, maxSockets: options.concurrency, timeout: 4_000 });
  const samples: Sample[] = [];
  const startedAt = performance.now();
  const until = startedAt + options.durationMs;
  let sent = 0;
  const one = () =>
    new Promise<void>((resolve) => {
      const at = performance.now() - startedAt;
      sent += 1;
      let settled = false;
      const finish = (ok: boolean, reason?: string, headers?: Record<string, string | string[] | undefined>) => {
        if (settled) return;
        settled = true;
        const instance = typeof headers?.["x-instance"] === "string" ? headers["x-instance"] : undefined;
        samples.push({ startedAt: at, latencyMs: performance.now() - startedAt - at, ok, ...(reason ? { reason } : {}), ...(instance ? { instance } : {}), afterStop: headers?.["x-served-after-stop"] === "1", path });
        resolve();
      };
      const req = httpRequest({ host: options.host, port: options.port, path, method: "GET", agent, timeout: timeoutMs }, (response) => {
        const status = response.statusCode ?? 0;
        response.on("data", () => undefined);
        response.on("end", () => finish(status >= 200 && status < 300, status >= 200 && status < 300 ? undefined : `status ${status}`, response.headers));
        response.on("error", (error: NodeJS.ErrnoException) => finish(false, error.code ?? error.message, response.headers));
      });
      const deadline = setTimeout(() => req.destroy(Object.assign(new Error("timeout"), { code: "timeout" })), timeoutMs);
      req.on("close", () => clearTimeout(deadline));
      req.on("timeout", () => req.destroy(Object.assign(new Error("timeout"), { code: "timeout" })));
      req.on("error", (error: NodeJS.ErrnoException) => finish(false, error.code ?? error.message));
      req.end();
    });
  const worker = async () => {
    while (performance.now() < until && sent < maxRequests) await one();
  };
  try {
    await Promise.all(Array.from({ length: options.concurrency }, worker));
  } finally {
    agent.destroy();
  }
  return summarize(samples, sent, performance.now() - startedAt);
}
