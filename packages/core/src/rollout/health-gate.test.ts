// The health gate's timing, on a fake clock: start probes find an app that listens soon after its
// start, the thresholds count as they always did, and failures are not counted any sooner.
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { silentLogger } from "../logger.js";
import type { Instance, InstanceSelector, InstanceState, Provider, ProviderContext } from "../provider/contract.js";
import type { ResolvedHealth } from "../spec/resolve.js";
import type { KilnEventInput } from "../events.js";
import { START_PROBE_DELAY_MS, waitUntilHealthy } from "./health-gate.js";

const target = { service: "web", environment: "default" };

/** What the fake instance does `elapsedMs` after the gate started. */
type Behavior = (elapsedMs: number) => { ok: boolean; state?: InstanceState; restartCount?: number };

function instance(id: string): Instance {
  return {
    id,
    name: `web-${id}`,
    target,
    release: 2,
    rolloutId: "r",
    imageId: "sha256:2",
    state: "running",
    restartCount: 0,
    endpoints: {},
    createdAt: new Date().toISOString(),
    labels: {},
  };
}

/** A provider whose instances behave as `behavior` says, recording when each was probed (ms after `startedAt`). */
function fakeProvider(behavior: Behavior, startedAt: number) {
  const probes: number[] = [];
  const lists: number[] = [];
  const selectors: InstanceSelector[] = [];
  const instances = new Map<string, Instance>();
  const now = () => Date.now() - startedAt;
  const provider: Provider = {
    name: "fake",
    images: {
      build: () => Promise.reject(new Error("not used")),
      find: () => Promise.resolve(undefined),
      list: () => Promise.resolve([]),
      remove: () => Promise.resolve(),
    },
    instances: {
      launch: () => Promise.reject(new Error("not used")),
      list: (selector) => {
        lists.push(now());
        selectors.push(selector);
        const { state = "running", restartCount = 0 } = behavior(now());
        return Promise.resolve([...instances.values()].map((i) => ({ ...i, state, restartCount })));
      },
      terminate: () => Promise.resolve(),
    },
    health: {
      probe: () => {
        probes.push(now());
        const { ok } = behavior(now());
        return Promise.resolve(ok ? { ok: true } : { ok: false, reason: "connection refused" });
      },
    },
    ping: () => Promise.resolve(),
  };
  return { provider, probes, lists, selectors, add: (i: Instance) => instances.set(i.id, i) };
}

function health(overrides: Partial<ResolvedHealth> = {}): ResolvedHealth {
  return {
    intervalMs: 1000,
    timeoutMs: 500,
    healthyThreshold: 1,
    unhealthyThreshold: 3,
    startPeriodMs: 0,
    stabilityWindowMs: 0,
    deadlineMs: 60_000,
    deadlineArithmetic: "test",
    ...overrides,
  };
}

/** Starts a gate of one instance; `settledAt` is when it resolved or failed (ms after its start). */
function startGate(behavior: Behavior, settings: ResolvedHealth) {
  const startedAt = Date.now();
  const fake = fakeProvider(behavior, startedAt);
  const only = instance("a");
  fake.add(only);
  const events: KilnEventInput[] = [];
  const signal = new AbortController().signal;
  const ctx: ProviderContext = { signal, logger: silentLogger, emit() {} };
  const outcome: { settledAt?: number; error?: unknown } = {};
  const gate = waitUntilHealthy({ provider: fake.provider, target, rolloutId: "r", signal, emit: (event) => events.push(event) }, { number: 2, health: settings }, [only], ctx).then(
    () => {
      outcome.settledAt = Date.now() - startedAt;
    },
    (error: unknown) => {
      outcome.settledAt = Date.now() - startedAt;
      outcome.error = error;
    },
  );
  return { ...fake, events, outcome, gate };
}

beforeEach(() => {
  vi.useFakeTimers({ now: Date.UTC(2026, 0, 1) });
});
afterEach(() => {
  vi.useRealTimers();
});

describe("start probes", () => {
  it("notice an app that listens 180 ms after its start at the start probe of 350 ms, not after a whole interval", async () => {
    const gate = startGate((elapsed) => ({ ok: elapsed >= 180 }), health({ intervalMs: 1000 }));
    await vi.advanceTimersByTimeAsync(349);
    expect(gate.outcome.settledAt).toBeUndefined();
    await vi.advanceTimersByTimeAsync(1);
    expect(gate.outcome).toEqual({ settledAt: 350 });
    expect(gate.probes).toEqual([0, 50, 150, 350]);
    // One list call per round, as before, of the release's instances only.
    expect(gate.lists).toEqual(gate.probes);
    expect(gate.selectors.map((selector) => selector.release)).toEqual([2, 2, 2, 2]);
    expect(gate.events).toEqual([expect.objectContaining({ type: "instance.healthy", durationMs: 350 })]);
  });

  it("double their delay from START_PROBE_DELAY_MS, then probe every intervalMs", async () => {
    // A long start period keeps a never-healthy instance in the gate, so its probes can be watched.
    const gate = startGate(() => ({ ok: false }), health({ intervalMs: 1000, startPeriodMs: 10_000 }));
    await vi.advanceTimersByTimeAsync(4000);
    expect(START_PROBE_DELAY_MS).toBe(50);
    expect(gate.probes).toEqual([0, 50, 150, 350, 750, 1000, 2000, 3000, 4000]);
    const gaps = gate.probes.slice(1).map((at, index) => at - gate.probes[index]!);
    expect(gaps.slice(0, 4)).toEqual([50, 100, 200, 400]);
    expect(gaps.slice(-3)).toEqual([1000, 1000, 1000]);
    expect(gate.outcome.settledAt).toBeUndefined();
  });

  it("stop at the first success: the successes of healthyThreshold are intervalMs apart, as without start probes", async () => {
    const gate = startGate((elapsed) => ({ ok: elapsed >= 180 }), health({ intervalMs: 1000, healthyThreshold: 3 }));
    await vi.advanceTimersByTimeAsync(5000);
    expect(gate.probes).toEqual([0, 50, 150, 350, 1350, 2350]);
    expect(gate.outcome).toEqual({ settledAt: 2350 });
  });

  it("are not made when the interval is too short for one", async () => {
    const gate = startGate((elapsed) => ({ ok: elapsed >= 30 }), health({ intervalMs: 100 }));
    await vi.advanceTimersByTimeAsync(100);
    // 50 ms fits before the first interval is over (it is the last start probe that may).
    expect(gate.probes).toEqual([0, 50]);
    expect(gate.outcome).toEqual({ settledAt: 50 });
  });
});

describe("unhealthy verdicts", () => {
  it("come on the same counted probe as without start probes: failures of start probes never count", async () => {
    // No start period, 3 failures: counted probes at 0, 1000 and 2000 ms, whatever is probed between.
    const gate = startGate(() => ({ ok: false }), health({ intervalMs: 1000, unhealthyThreshold: 3 }));
    await vi.advanceTimersByTimeAsync(1999);
    expect(gate.outcome.settledAt).toBeUndefined();
    expect(gate.probes.length).toBeGreaterThan(3);
    await vi.advanceTimersByTimeAsync(1);
    expect(gate.outcome.settledAt).toBe(2000);
    expect(gate.outcome.error).toMatchObject({ code: "HEALTH_CHECK_FAILED", message: expect.stringContaining("3 consecutive failed probes") as string });
  });

  it("count from the first probe of the interval cadence after startPeriodMs", async () => {
    // Start period 1100 ms: the counted probes are at 2000, 3000 and 4000 ms (the start probe of 750 ms and the probe at 1000 ms are inside it).
    const gate = startGate(() => ({ ok: false }), health({ intervalMs: 1000, startPeriodMs: 1100, unhealthyThreshold: 3 }));
    await vi.advanceTimersByTimeAsync(3999);
    expect(gate.outcome.settledAt).toBeUndefined();
    await vi.advanceTimersByTimeAsync(1);
    expect(gate.outcome.settledAt).toBe(4000);
    // Never sooner than startPeriodMs + (unhealthyThreshold - 1) × intervalMs.
    expect(gate.outcome.settledAt).toBeGreaterThanOrEqual(1100 + 2 * 1000);
  });

  it("come at once for an instance that stopped, when a start probe sees it", async () => {
    const gate = startGate((elapsed) => ({ ok: false, state: elapsed >= 120 ? "stopped" : "running" }), health({ intervalMs: 1000, startPeriodMs: 5000 }));
    await vi.advanceTimersByTimeAsync(1000);
    expect(gate.outcome.settledAt).toBe(150);
    expect(gate.outcome.error).toMatchObject({ code: "HEALTH_CHECK_FAILED", message: expect.stringContaining("is stopped") as string });
  });

  it("count a restart that a start probe saw after the start period at the next counted probe", async () => {
    // Fails throughout, restarts at 100 ms: counted probes at 0 (failure 1) and 1000 ms (the restart and the failure: 3).
    const gate = startGate((elapsed) => ({ ok: false, restartCount: elapsed >= 100 ? 1 : 0 }), health({ intervalMs: 1000, unhealthyThreshold: 3 }));
    await vi.advanceTimersByTimeAsync(999);
    expect(gate.outcome.settledAt).toBeUndefined();
    await vi.advanceTimersByTimeAsync(1);
    expect(gate.outcome.settledAt).toBe(1000);
  });
});
