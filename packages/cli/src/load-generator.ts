/**
 * A bounded HTTP load generator for the zero-downtime tests and the proxy benchmark (test support:
 * not exported from the package index, not bundled).
 *
 * Open loop at a target rate: every tick it sends the requests that are due, whatever the ones
 * before are doing, through one keep-alive agent with a socket cap (requests beyond the cap wait in
 * the agent's queue, and that wait counts in their latency). A share of the requests are slow
 * (`GET /slow?ms=N`, N up to 2 s, hello-web's knob). It counts, for the whole run and for a window
 * the caller marks (the "switch"): requests sent and completed, failed ones (connection errors,
 * resets, timeouts, non-2xx answers) by reason, the ones a server marked `x-served-after-stop`,
 * answers by `x-instance`, and the latency distribution (p50 / p99 / max, and a coarse histogram).
 *
 * Hard limits, whatever the caller asks: at most {@link MAX_DURATION_MS} of sending, at most
 * {@link MAX_REQUESTS} requests, each request abandoned (and counted failed) after its timeout.
 * Traffic goes only where the caller points it (the tests use 127.0.0.1).
 */
import { Agent, request as httpRequest } from "node:http";
import { seededRandom as random } from "@kilnjs/testkit";

/** No run sends for longer than this, whatever `durationMs` says. */
export const MAX_DURATION_MS = 90_000;
/** No run sends more requests than this. */
export const MAX_REQUESTS = 30_000;
/** Upper bounds of the latency histogram's buckets, in ms (the last bucket is everything above). */
export const HISTOGRAM_BOUNDS_MS = [5, 10, 25, 50, 100, 250, 500, 1000, 1500, 2000, 2500, 3000, 5000, 10_000] as const;

export interface LoadOptions {
  host: string;
  port: number;
  /** Requests per second to send (open loop). */
  ratePerSecond: number;
  /** How long to send for, in ms (≤ {@link MAX_DURATION_MS}); `stop()` may end it earlier. */
  durationMs: number;
  /** Stop sending after this many requests (≤ {@link MAX_REQUESTS}; default: rate × duration, capped). */
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
  /** Latency of completed requests, in ms (NaN when none completed). */
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  /** Latency of the fast requests only (NaN when none): what a switch costs shows here, not hidden behind the slow ones. */
  fast: Percentiles;
  /** Of the slow requests: latency beyond the time they asked for (`/slow?ms=N`: latency − N). */
  slowExcess: Percentiles;
  /** Counts of completed requests by latency bucket: `≤5ms`, …, `>10000ms`. */
  histogram: Record<string, number>;
  /** How long this set spans, in ms, and the rate of requests sent over it. */
  elapsedMs: number;
  sentPerSecond: number;
}

/** Latency percentiles of a subset of requests, in ms (NaN when the subset is empty). */
export interface Percentiles {
  count: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
}

/** One failed request, for messages. */
export interface FailureSample {
  /** ms since the run started. */
  at: number;
  path: string;
  reason: string;
  instance?: string;
}

export interface LoadReport {
  overall: LoadStats;
  /** The marked window, when `markWindowStart()` was called. */
  window?: LoadStats;
  /** The first failures (at most 20), with their time. */
  failureSamples: FailureSample[];
  /** Answers marked served-after-stop (at most 20), with their time and instance. */
  servedAfterStopSamples: FailureSample[];
  /** Why sending stopped: `duration`, `maxRequests` or `stopped`. */
  endedBy: "duration" | "maxRequests" | "stopped";
  /** Requests still unanswered when the report was made (0 unless they outlived their timeout). */
  abandoned: number;
}

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

function percentilesOf(latencies: number[]): Percentiles {
  latencies.sort((a, b) => a - b);
  return {
    count: latencies.length,
    p50Ms: percentile(latencies, 50),
    p99Ms: percentile(latencies, 99),
    maxMs: latencies.length === 0 ? Number.NaN : latencies[latencies.length - 1]!,
  };
}

/** The `p`-th percentile (0..100, nearest rank) of sorted values; NaN when there are none. */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))]!;
}

function bucketOf(latencyMs: number): string {
  for (const bound of HISTOGRAM_BOUNDS_MS) if (latencyMs <= bound) return `≤${bound}ms`;
  return `>${HISTOGRAM_BOUNDS_MS[HISTOGRAM_BOUNDS_MS.length - 1]}ms`;
}

/** Figures over `samples`, with `sent` requests started over `elapsedMs`. */
export function summarize(samples: readonly Sample[], sent: number, elapsedMs: number): LoadStats {
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
  for (const bucket of [...HISTOGRAM_BOUNDS_MS.map((bound) => `≤${bound}ms`), `>${HISTOGRAM_BOUNDS_MS[HISTOGRAM_BOUNDS_MS.length - 1]}ms`]) {
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

/** One line for logs: `1234 sent, 1234 ok, 0 failed, 0 after stop, p50 3 ms, p99 1890 ms, 201.3/s`. */
export function formatStats(stats: LoadStats): string {
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

/** Starts a run; see {@link LoadRun}. Throws at once on options outside the hard limits. */
export function startLoad(options: LoadOptions): LoadRun {
  const { host, port, ratePerSecond } = options;
  if (!(ratePerSecond > 0 && ratePerSecond <= 5_000)) throw new RangeError(`ratePerSecond must be in (0, 5000]; got ${ratePerSecond}`);
  if (!(options.durationMs > 0 && options.durationMs <= MAX_DURATION_MS)) throw new RangeError(`durationMs must be in (0, ${MAX_DURATION_MS}]; got ${options.durationMs}`);
  const maxRequests = Math.min(MAX_REQUESTS, options.maxRequests ?? Math.ceil((ratePerSecond * options.durationMs) / 1000));
  if (!(maxRequests > 0)) throw new RangeError(`maxRequests must be > 0; got ${options.maxRequests}`);
  const slowShare = options.slowShare ?? 0.2;
  if (!(slowShare >= 0 && slowShare <= 1)) throw new RangeError(`slowShare must be in [0, 1]; got ${slowShare}`);
  const maxSlowMs = Math.min(2000, Math.max(0, Math.floor(options.maxSlowMs ?? 2000)));
  const fastPath = options.fastPath ?? "/version";
  const timeoutMs = options.requestTimeoutMs ?? 10_000;
  const next = random(options.seed ?? 1);
  // Idle sockets are closed by us before a server's keep-alive timeout (hello-web: 5 s) can close them under us.
  const agent = new Agent({ keepAlive: true, maxSockets: options.maxSockets ?? 128, timeout: 4_000, scheduling: "fifo" });

  const startedAt = performance.now();
  const samples: Sample[] = [];
  const failureSamples: FailureSample[] = [];
  const afterStopSamples: FailureSample[] = [];
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
  const hardStop = setTimeout(() => endSending("duration"), Math.min(options.durationMs, MAX_DURATION_MS) + 50);

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

export interface ClosedLoopOptions {
  host: string;
  port: number;
  /** Requests in flight at all times (each worker sends its next request when the last one ended). */
  concurrency: number;
  /** How long to run, in ms (≤ {@link MAX_DURATION_MS}). */
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
 */
export async function closedLoop(options: ClosedLoopOptions): Promise<LoadStats> {
  if (!(options.durationMs > 0 && options.durationMs <= MAX_DURATION_MS)) throw new RangeError(`durationMs must be in (0, ${MAX_DURATION_MS}]; got ${options.durationMs}`);
  if (!(options.concurrency >= 1 && options.concurrency <= 1_000)) throw new RangeError(`concurrency must be in [1, 1000]; got ${options.concurrency}`);
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
