// Rollout strategies and health gates of core, through the in-memory provider.
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { createKiln, isKilnError, type Instance, type KilnEvent, type SpecInput } from "../src/index.js";
import { createMemoryProvider, type MemoryProviderOptions } from "@kilnjs/testkit";

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "kiln-strategies-"));
  await writeFile(path.join(dir, "Dockerfile"), "FROM scratch\nCOPY app.txt /\n");
  await writeFile(path.join(dir, "app.txt"), "v1\n");
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const fastHealth = { http: { port: "http" }, intervalMs: 100, timeoutMs: 100, healthyThreshold: 2, unhealthyThreshold: 2 } as const;

function spec(count: number, rollout: NonNullable<SpecInput["rollout"]>, health: NonNullable<SpecInput["health"]> = fastHealth): SpecInput {
  return { service: "web", provider: "memory", instances: { count, ports: [{ name: "http", port: 8080 }] }, health, rollout };
}

function setup(options: MemoryProviderOptions = {}) {
  const provider = createMemoryProvider(options);
  const events: KilnEvent[] = [];
  const kiln = createKiln({ providers: { memory: provider }, dataDir: path.join(dir, ".kiln"), onEvent: (event) => events.push(event) });
  return { provider, kiln, events };
}

/** Serving = old instances not yet retiring + new ones once healthy; running = launched and not retired. */
function capacity(events: readonly KilnEvent[], initial: readonly string[]) {
  const serving = new Set(initial);
  const running = new Set(initial);
  let lowestServing = serving.size;
  let peakRunning = running.size;
  for (const event of events) {
    if (event.type === "instance.launched") running.add(event.instance.id);
    if (event.type === "instance.healthy") serving.add(event.instance.id);
    if (event.type === "instance.retiring") {
      serving.delete(event.instance.id);
      lowestServing = Math.min(lowestServing, serving.size);
    }
    if (event.type === "instance.retired") running.delete(event.instance.id);
    peakRunning = Math.max(peakRunning, running.size);
  }
  return { lowestServing, peakRunning };
}

async function nextVersion(text: string) {
  await writeFile(path.join(dir, "app.txt"), `${text}\n`);
}

describe("blue-green", () => {
  it("launches the whole new set, waits until all are healthy, then retires the old set", async () => {
    const { kiln, provider, events } = setup();
    const blueGreen = spec(3, { strategy: "blue-green" });
    await kiln.deploy({ spec: blueGreen, baseDir: dir });
    const v1 = [...provider.live.keys()];
    events.length = 0;
    await nextVersion("v2");
    await kiln.deploy({ spec: blueGreen, baseDir: dir });
    const types = events.filter((e) => e.type === "instance.healthy" || e.type === "instance.retiring").map((e) => e.type);
    expect(types).toEqual(["instance.healthy", "instance.healthy", "instance.healthy", "instance.retiring", "instance.retiring", "instance.retiring"]);
    expect(capacity(events, v1)).toEqual({ lowestServing: 3, peakRunning: 6 });
    expect([...provider.live.values()].every((i) => i.release === 2)).toBe(true);
  });

  it("undoes at once when the new set fails during the bake time; the old set was never touched", async () => {
    const { kiln, provider, events } = setup({ behavior: (request) => (request.release === 2 ? { exitAfterMs: 700 } : {}) });
    const blueGreen = spec(2, { strategy: "blue-green", bakeTimeMs: 3000 });
    await kiln.deploy({ spec: blueGreen, baseDir: dir });
    const v1 = [...provider.live.keys()].sort();
    await nextVersion("v2");
    events.length = 0;
    await expect(kiln.deploy({ spec: blueGreen, baseDir: dir })).rejects.toMatchObject({ code: "HEALTH_CHECK_FAILED" });
    expect(events.some((e) => e.type === "instance.healthy")).toBe(true);
    expect(events.filter((e) => e.type === "instance.retiring").every((e) => e.type === "instance.retiring" && e.instance.release === 2)).toBe(true);
    expect([...provider.live.keys()].sort()).toEqual(v1);
  });
});

describe("canary", () => {
  it("grows step by step, surge-first, never below count", async () => {
    const { kiln, provider, events } = setup();
    const canary = spec(4, { strategy: "canary", steps: [{ instances: 1, holdMs: 300 }, { instances: "50%", holdMs: 300 }] });
    await kiln.deploy({ spec: canary, baseDir: dir });
    const v1 = [...provider.live.keys()];
    events.length = 0;
    await nextVersion("v2");
    await kiln.deploy({ spec: canary, baseDir: dir });
    const launches = events.filter((e) => e.type === "instance.launched").length;
    expect(launches).toBe(4);
    // 1 new, then up to 2, then the last 2: the first retirement follows exactly one healthy instance.
    const firstRetire = events.findIndex((e) => e.type === "instance.retiring");
    expect(events.slice(0, firstRetire).filter((e) => e.type === "instance.healthy")).toHaveLength(1);
    expect(capacity(events, v1).lowestServing).toBeGreaterThanOrEqual(4);
    expect([...provider.live.values()].every((i) => i.release === 2)).toBe(true);
  });

  it("aborts on a failing first step and restores the old set; only the canary was ever launched", async () => {
    const { kiln, provider, events } = setup({ behavior: (request) => (request.release === 2 ? { neverHealthy: true } : {}) });
    const canary = spec(4, { strategy: "canary", steps: [{ instances: 1, holdMs: 1000 }] });
    await kiln.deploy({ spec: canary, baseDir: dir });
    const v1 = [...provider.live.keys()].sort();
    events.length = 0;
    await nextVersion("v2");
    await expect(kiln.deploy({ spec: canary, baseDir: dir })).rejects.toMatchObject({ code: "HEALTH_CHECK_FAILED" });
    expect(events.filter((e) => e.type === "instance.launched")).toHaveLength(1);
    expect([...provider.live.keys()].sort()).toEqual(v1);
  });
});

describe("rolling with percentages", () => {
  it("keeps count - maxUnavailable serving and at most count + maxSurge running", async () => {
    const { kiln, provider, events } = setup();
    const rolling = spec(4, { strategy: "rolling", maxSurge: "50%", maxUnavailable: "25%" });
    await kiln.deploy({ spec: rolling, baseDir: dir });
    const v1 = [...provider.live.keys()];
    events.length = 0;
    await nextVersion("v2");
    await kiln.deploy({ spec: rolling, baseDir: dir });
    const seen = capacity(events, v1);
    expect(seen.lowestServing).toBeGreaterThanOrEqual(3);
    expect(seen.peakRunning).toBeLessThanOrEqual(6);
  });
});

describe("health gates", () => {
  it("accepts a slow starter inside its start period", async () => {
    const { kiln } = setup({ behavior: () => ({ healthyAfterMs: 800 }) });
    const result = await kiln.deploy({ spec: spec(1, { strategy: "rolling" }, { ...fastHealth, startPeriodMs: 1500 }), baseDir: dir });
    expect(result.outcome).toBe("deployed");
  });

  it("fails the same slow starter with no start period and a short deadline; the old release keeps serving", async () => {
    let slow = false;
    const { kiln, provider } = setup({ behavior: () => (slow ? { healthyAfterMs: 5000 } : {}) });
    await kiln.deploy({ spec: spec(1, { strategy: "rolling" }), baseDir: dir });
    const v1 = [...provider.live.keys()];
    slow = true;
    await nextVersion("v2");
    const error = await kiln.deploy({ spec: spec(1, { strategy: "rolling" }, { ...fastHealth, unhealthyThreshold: 50, deadlineMs: 600 }), baseDir: dir }).catch((e: unknown) => e);
    expect(isKilnError(error, "HEALTH_CHECK_FAILED")).toBe(true);
    expect((error as Error).message).toMatch(/within the 600 ms deadline/);
    expect([...provider.live.keys()]).toEqual(v1);
  });

  it("does not accept a flapping app that answers, then exits, within the stability window", async () => {
    const { kiln } = setup({ behavior: () => ({ exitAfterMs: 500 }) });
    const error = await kiln.deploy({ spec: spec(1, { strategy: "rolling" }, { ...fastHealth, stabilityWindowMs: 1500 }), baseDir: dir }).catch((e: unknown) => e);
    expect(isKilnError(error, "HEALTH_CHECK_FAILED")).toBe(true);
  });

  it("without a stability window the same app passes its gate (the window is what catches it)", async () => {
    const { kiln } = setup({ behavior: () => ({ exitAfterMs: 500 }) });
    await expect(kiln.deploy({ spec: spec(1, { strategy: "rolling" }), baseDir: dir })).resolves.toMatchObject({ outcome: "deployed" });
  });
});

describe("traffic", () => {
  /** The memory provider plus a traffic capability that records every call and checks its order. */
  function withTraffic(options: MemoryProviderOptions = {}, drainMs = 0) {
    const { provider, events } = setup(options);
    const registered = new Set<string>();
    const calls: string[] = [];
    let fewestRegisteredAfterFirst = Number.POSITIVE_INFINITY;
    const healthy = new Set<string>();
    // Providers are plain objects (core's journal wraps them by spreading), so this one is too.
    const routed = Object.assign({ ...provider }, {
      traffic: {
        async register(instances: readonly Instance[]) {
          for (const instance of instances) {
            // Only instances that passed their gate may get traffic.
            expect(healthy.has(instance.id) || instance.release === 1).toBe(true);
            registered.add(instance.id);
          }
          calls.push(`register ${instances.length}`);
        },
        async deregister(instances: readonly Instance[]) {
          for (const instance of instances) registered.delete(instance.id);
          // A router's drain takes time (in-flight requests finish): the window a cancellation can land in.
          if (drainMs > 0) await new Promise((resolve) => setTimeout(resolve, drainMs));
          fewestRegisteredAfterFirst = Math.min(fewestRegisteredAfterFirst, registered.size);
          calls.push(`deregister ${instances.length}`);
        },
      },
      instances: {
        ...provider.instances,
        async terminate(instances: readonly Instance[], grace: { gracePeriodMs: number }, ctx: Parameters<typeof provider.instances.terminate>[2]) {
          // Drained before stopped: nothing is terminated while still registered.
          for (const instance of instances) expect(registered.has(instance.id)).toBe(false);
          return provider.instances.terminate(instances, grace, ctx);
        },
      },
    });
    const kiln = createKiln({
      providers: { memory: routed },
      dataDir: path.join(dir, ".kiln"),
      onEvent: (event) => {
        if (event.type === "instance.healthy") healthy.add(event.instance.id);
        events.push(event);
      },
    });
    return { kiln, calls, registered, events, fewest: () => fewestRegisteredAfterFirst, provider };
  }

  const proxied = (input: SpecInput): SpecInput => ({ ...input, traffic: { proxy: { port: 18080 } } });

  it("rolling: registers each batch once healthy and drains old instances before they stop", async () => {
    const { kiln, calls, registered, fewest } = withTraffic();
    const rolling = proxied(spec(3, { strategy: "rolling" }));
    await kiln.deploy({ spec: rolling, baseDir: dir });
    expect(registered.size).toBe(3);
    calls.length = 0;
    await nextVersion("v2");
    await kiln.deploy({ spec: rolling, baseDir: dir });
    expect(calls).toEqual(["register 1", "deregister 1", "register 1", "deregister 1", "register 1", "deregister 1"]);
    expect(fewest()).toBeGreaterThanOrEqual(3);
    expect(registered.size).toBe(3);
  });

  it("a cancellation between drain and stop gives the drained old instance its traffic back", async () => {
    const { kiln, registered, events, provider } = withTraffic({}, 300);
    const rolling = proxied(spec(3, { strategy: "rolling" }));
    await kiln.deploy({ spec: rolling, baseDir: dir });
    const v1 = [...registered].sort();
    await nextVersion("v2");
    const controller = new AbortController();
    events.length = 0;
    const deploying = kiln.deploy({ spec: rolling, baseDir: dir, signal: controller.signal });
    await expect.poll(() => events.some((e) => e.type === "instance.retiring"), { timeout: 5000, interval: 5 }).toBe(true);
    controller.abort();
    await expect(deploying).rejects.toMatchObject({ code: "ABORTED" });
    // Every v1 instance still running is routed again, including the one that was being drained.
    const running = [...provider.live.values()].filter((i) => i.release === 1).map((i) => i.id).sort();
    expect(running).toEqual(v1);
    expect([...registered].sort()).toEqual(v1);
  });

  it("blue-green: one switch of the whole set, and a failure during the bake gives the old set its traffic back", async () => {
    const { kiln, calls, registered, events } = withTraffic({ behavior: (request) => (request.release === 3 ? { exitAfterMs: 700 } : {}) });
    const blueGreen = proxied(spec(2, { strategy: "blue-green", bakeTimeMs: 3000 }));
    await kiln.deploy({ spec: blueGreen, baseDir: dir });
    await nextVersion("v2");
    calls.length = 0;
    await kiln.deploy({ spec: blueGreen, baseDir: dir });
    expect(calls.slice(0, 2)).toEqual(["register 2", "deregister 2"]);
    const v2 = [...registered];
    await nextVersion("v3");
    events.length = 0;
    await expect(kiln.deploy({ spec: blueGreen, baseDir: dir })).rejects.toMatchObject({ code: "HEALTH_CHECK_FAILED" });
    expect([...registered].sort()).toEqual(v2.sort());
  });
});
