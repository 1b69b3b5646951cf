import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { isKilnError } from "@kilnjs/core";
import { LOAD_MAX_DURATION_MS, formatLoadStats, percentile, runClosedLoop, startLoad } from "./load-generator.js";

/** A local stand-in for hello-web: /version, /slow?ms=N, `x-instance`, and knobs the tests flip. */
function fakeApp(): { server: Server; port: () => number; knobs: { status: number; afterStop: boolean; instance: string }; served: () => number; listen: () => Promise<void> } {
  const knobs = { status: 200, afterStop: false, instance: "a" };
  let served = 0;
  const server = createServer((request, response) => {
    served += 1;
    const url = new URL(request.url ?? "/", "http://localhost");
    const headers: Record<string, string> = { "x-instance": knobs.instance };
    if (knobs.afterStop) headers["x-served-after-stop"] = "1";
    const answer = () => {
      response.writeHead(knobs.status, headers);
      response.end("{}\n");
    };
    if (url.pathname === "/slow") setTimeout(answer, Number(url.searchParams.get("ms")));
    else if (url.pathname === "/reset") request.socket.destroy();
    else answer();
  });
  return {
    server,
    knobs,
    served: () => served,
    port: () => (server.address() as AddressInfo).port,
    listen: () => new Promise((resolve) => server.listen(0, "127.0.0.1", resolve)),
  };
}

const open: Server[] = [];
afterEach(async () => {
  for (const server of open.splice(0)) {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  }
});

async function app() {
  const created = fakeApp();
  await created.listen();
  open.push(created.server);
  return created;
}

describe("load generator", () => {
  it("sends at the target rate for the duration, all answered, with latency percentiles and instances", async () => {
    const target = await app();
    const run = startLoad({ host: "127.0.0.1", port: target.port(), ratePerSecond: 200, durationMs: 1_500, slowShare: 0.2, maxSlowMs: 300 });
    const report = await run.done;
    expect(report.endedBy).toBe("maxRequests");
    expect(report.overall.sent).toBe(300);
    expect(report.overall.completed).toBe(300);
    expect(report.overall.ok).toBe(300);
    expect(report.overall.failed).toBe(0);
    expect(report.overall.servedAfterStop).toBe(0);
    expect(report.overall.byInstance).toEqual({ a: 300 });
    expect(target.served()).toBe(300);
    expect(report.overall.sentPerSecond).toBeGreaterThan(150);
    expect(report.overall.sentPerSecond).toBeLessThan(250);
    // 80% fast: the median is small; the slow 20% take up to 300 ms.
    expect(report.overall.p50Ms).toBeLessThan(100);
    expect(report.overall.p99Ms).toBeGreaterThan(150);
    expect(report.overall.p99Ms).toBeLessThan(1_000);
    expect(Object.values(report.overall.histogram).reduce((a, b) => a + b, 0)).toBe(300);
    expect(report.overall.fast.count + report.overall.slowExcess.count).toBe(300);
    expect(report.overall.slowExcess.count).toBeGreaterThan(30);
    expect(report.overall.fast.p99Ms).toBeLessThan(100);
    // A slow request takes what it asked for, plus little.
    expect(report.overall.slowExcess.p50Ms).toBeGreaterThanOrEqual(0);
    expect(report.overall.slowExcess.p99Ms).toBeLessThan(100);
    expect(formatLoadStats(report.overall)).toMatch(/^300 sent, 300 ok, 0 failed, 0 served after stop, p50 /);
  });

  it("counts non-2xx answers, served-after-stop headers and instances, overall and in the marked window only", async () => {
    const target = await app();
    const run = startLoad({ host: "127.0.0.1", port: target.port(), ratePerSecond: 100, durationMs: 1_800, slowShare: 0 });
    await new Promise((resolve) => setTimeout(resolve, 500));
    run.markWindowStart();
    target.knobs.status = 503;
    target.knobs.afterStop = true;
    target.knobs.instance = "b";
    await new Promise((resolve) => setTimeout(resolve, 500));
    target.knobs.status = 200;
    target.knobs.afterStop = false;
    target.knobs.instance = "a";
    run.markWindowEnd();
    const report = await run.done;
    const { overall, window } = report;
    expect(overall.sent).toBe(180);
    expect(overall.completed).toBe(180);
    expect(overall.failed).toBeGreaterThan(30);
    expect(overall.failures).toEqual({ "status 503": overall.failed });
    expect(overall.servedAfterStop).toBe(overall.byInstance.b);
    expect(window).toBeDefined();
    expect(window!.failed).toBe(overall.failed);
    expect(window!.servedAfterStop).toBe(overall.servedAfterStop);
    expect(window!.ok).toBeLessThanOrEqual(2);
    expect(window!.sent).toBeGreaterThan(35);
    expect(window!.sent).toBeLessThan(65);
    expect(window!.elapsedMs).toBeGreaterThan(400);
    expect(report.failureSamples.length).toBeGreaterThan(0);
    expect(report.failureSamples[0]).toMatchObject({ reason: "status 503", path: "/version", instance: "b" });
    expect(report.servedAfterStopSamples[0]).toMatchObject({ instance: "b" });
  });

  it("counts refused connections and resets as failures", async () => {
    const target = await app();
    const resets = await startLoad({ host: "127.0.0.1", port: target.port(), ratePerSecond: 50, durationMs: 200, slowShare: 0, fastPath: "/reset" }).done;
    expect(resets.overall.sent).toBe(10);
    expect(resets.overall.failed).toBe(10);
    expect(Object.keys(resets.overall.failures)).toEqual(["ECONNRESET"]);

    const port = target.port();
    const closed = new Promise((resolve) => target.server.close(resolve));
    target.server.closeAllConnections(); // idle keep-alive sockets would hold close() open
    await closed;
    const refused = await startLoad({ host: "127.0.0.1", port, ratePerSecond: 50, durationMs: 200, slowShare: 0 }).done;
    expect(refused.overall.failed).toBe(10);
    expect(refused.overall.failures).toEqual({ ECONNREFUSED: 10 });
  });

  it("abandons a request after its timeout and counts it failed", async () => {
    const target = await app();
    const report = await startLoad({ host: "127.0.0.1", port: target.port(), ratePerSecond: 20, durationMs: 100, slowShare: 1, maxSlowMs: 2000, requestTimeoutMs: 100, seed: 7 }).done;
    expect(report.overall.sent).toBe(2);
    expect(report.overall.completed).toBe(2);
    // Slow times are random up to 2 s; with this seed both are above 100 ms.
    expect(report.overall.failures).toEqual({ timeout: 2 });
    expect(report.overall.maxMs).toBeLessThan(1_000);
  });

  it("stops early on stop(), and keeps to its hard limits", async () => {
    const target = await app();
    const run = startLoad({ host: "127.0.0.1", port: target.port(), ratePerSecond: 100, durationMs: 60_000, slowShare: 0 });
    await new Promise((resolve) => setTimeout(resolve, 300));
    const report = await run.stop();
    expect(report.endedBy).toBe("stopped");
    expect(report.overall.sent).toBeGreaterThan(20);
    expect(report.overall.sent).toBeLessThan(60);
    expect(report.overall.completed).toBe(report.overall.sent);
    expect(await run.done).toBe(report);

    const capped = await startLoad({ host: "127.0.0.1", port: target.port(), ratePerSecond: 1_000, durationMs: 10_000, maxRequests: 25, slowShare: 0 }).done;
    expect(capped.endedBy).toBe("maxRequests");
    expect(capped.overall.sent).toBe(25);

    expect(() => startLoad({ host: "127.0.0.1", port: 1, ratePerSecond: 10, durationMs: LOAD_MAX_DURATION_MS + 1 })).toThrow(/durationMs/);
    expect(() => startLoad({ host: "127.0.0.1", port: 1, ratePerSecond: 0, durationMs: 1_000 })).toThrow(/ratePerSecond/);
    let error: unknown;
    try {
      startLoad({ host: "127.0.0.1", port: 1, ratePerSecond: 0, durationMs: 0, slowShare: 2 });
    } catch (thrown) {
      error = thrown;
    }
    expect(isKilnError(error) && error.code, "a KilnError with a stable code").toBe("INVALID_ARGUMENT");
    expect((error as Error).message, "every problem at once").toMatch(/ratePerSecond.*durationMs.*slowShare/);
  });

  it("percentile is nearest-rank", () => {
    const values = Array.from({ length: 100 }, (_, i) => i + 1);
    expect(percentile(values, 50)).toBe(50);
    expect(percentile(values, 99)).toBe(99);
    expect(percentile([7], 99)).toBe(7);
    expect(percentile([], 50)).toBeNaN();
  });
});

describe("closed loop", () => {
  it("keeps `concurrency` requests in flight for the duration and reports the rate", async () => {
    const target = await app();
    const stats = await runClosedLoop({ host: "127.0.0.1", port: target.port(), concurrency: 4, durationMs: 300 });
    expect(stats.failed).toBe(0);
    expect(stats.completed).toBe(stats.sent);
    expect(stats.sent).toBeGreaterThan(50);
    expect(stats.sentPerSecond).toBeGreaterThan(100);
    expect(stats.elapsedMs).toBeLessThan(1_500);
    expect(target.served()).toBe(stats.sent);
    const capped = await runClosedLoop({ host: "127.0.0.1", port: target.port(), concurrency: 2, durationMs: 5_000, maxRequests: 10 });
    expect(capped.sent).toBeLessThanOrEqual(11);
    await expect(runClosedLoop({ host: "127.0.0.1", port: 1, concurrency: 0, durationMs: 100 })).rejects.toThrow(/concurrency/);
  });
});
