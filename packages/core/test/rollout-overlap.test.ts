// Retirements overlap what follows them wherever the plan's peak allows, and never beyond it: an
// invariant checker replays the in-memory provider's calls and Kiln's events, in the order they
// happened, and checks at every moment that no more instances run than the plan allows (an
// instance runs from the start of its launch call until its terminate call returned) and that
// no fewer serve than `count - maxUnavailable` (a new instance serves once healthy, an old one
// until it starts retiring).
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { createKiln, isKilnError, type KilnEvent, type LaunchRequest, type Provider, type SpecInput } from "../src/index.js";
import { createMemoryProvider, type InstanceBehavior } from "@kilnjs/testkit";

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "kiln-overlap-"));
  await writeFile(path.join(dir, "Dockerfile"), "FROM scratch\n");
  await writeFile(path.join(dir, "app.txt"), "1\n");
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** One moment of a rollout: a provider call starting or returning, or one of Kiln's events. */
type Entry =
  | { readonly kind: "launch-start"; readonly key: string; readonly count: number }
  | { readonly kind: "launch-end"; readonly key: string; readonly count: number; readonly ids: readonly string[] }
  | { readonly kind: "launch-failed"; readonly key: string; readonly count: number }
  | { readonly kind: "terminate-start"; readonly ids: readonly string[] }
  | { readonly kind: "terminate-end"; readonly ids: readonly string[] }
  | { readonly kind: "terminate-failed"; readonly ids: readonly string[] }
  | { readonly kind: "event"; readonly event: KilnEvent };

interface Options {
  readonly behavior?: (request: LaunchRequest) => InstanceBehavior;
  /** Latency of a launch and of a terminate call (milliseconds). */
  readonly launchMs?: number;
  readonly terminateMs?: number;
}

/** The in-memory provider and Kiln, recording one timeline of calls and events. */
function setup(options: Options = {}) {
  const memory = createMemoryProvider({
    ...(options.behavior ? { behavior: options.behavior } : {}),
    faults: { operations: { launch: { latencyMs: options.launchMs ?? 10 }, terminate: { latencyMs: options.terminateMs ?? 30 } } },
  });
  const timeline: Entry[] = [];
  const provider: Provider = {
    ...memory,
    instances: {
      ...memory.instances,
      async launch(request, ctx) {
        const key = request.idempotencyKey.slice(request.idempotencyKey.indexOf(":") + 1);
        timeline.push({ kind: "launch-start", key, count: request.count });
        let started;
        try {
          started = await memory.instances.launch(request, ctx);
        } catch (error) {
          timeline.push({ kind: "launch-failed", key, count: request.count });
          throw error;
        }
        timeline.push({ kind: "launch-end", key, count: request.count, ids: started.map((instance) => instance.id) });
        return started;
      },
      async terminate(instances, terminateOptions, ctx) {
        const ids = instances.map((instance) => instance.id);
        timeline.push({ kind: "terminate-start", ids });
        try {
          await memory.instances.terminate(instances, terminateOptions, ctx);
        } catch (error) {
          timeline.push({ kind: "terminate-failed", ids });
          throw error;
        }
        timeline.push({ kind: "terminate-end", ids });
      },
    },
  };
  const kiln = createKiln({ providers: { memory: provider }, dataDir: path.join(dir, ".kiln"), onEvent: (event) => timeline.push({ kind: "event", event }) });
  return { memory, kiln, timeline };
}

/**
 * Replays a rollout's timeline from the instances serving before it; returns the most instances
 * running and the fewest serving at any moment, and the moments a bound was broken.
 */
function checkInvariant(timeline: readonly Entry[], before: readonly string[], bounds: { readonly most: number; readonly fewest: number }) {
  const running = new Set(before);
  const serving = new Set(before);
  let launching = 0;
  let peak = running.size;
  let lowest = serving.size;
  const broken: string[] = [];
  timeline.forEach((entry, index) => {
    if (entry.kind === "launch-start") launching += entry.count;
    if (entry.kind === "launch-failed") launching -= entry.count;
    if (entry.kind === "launch-end") {
      launching -= entry.count;
      for (const id of entry.ids) running.add(id);
    }
    if (entry.kind === "terminate-start") for (const id of entry.ids) serving.delete(id);
    if (entry.kind === "terminate-end") for (const id of entry.ids) running.delete(id);
    if (entry.kind === "event" && entry.event.type === "instance.healthy") serving.add(entry.event.instance.id);
    if (entry.kind === "event" && entry.event.type === "instance.retiring") serving.delete(entry.event.instance.id);
    peak = Math.max(peak, running.size + launching);
    lowest = Math.min(lowest, serving.size);
    if (running.size + launching > bounds.most) broken.push(`#${index} ${entry.kind}: ${running.size + launching} running > ${bounds.most}`);
    if (serving.size < bounds.fewest) broken.push(`#${index} ${entry.kind}: ${serving.size} serving < ${bounds.fewest}`);
  });
  return { peak, lowest, broken };
}

/** Where a launch started while an earlier terminate call had not returned yet: `launch:<n>` keys. */
function overlaps(timeline: readonly Entry[]): string[] {
  const open = new Set<string>();
  const found: string[] = [];
  for (const entry of timeline) {
    if (entry.kind === "terminate-start") open.add(entry.ids.join(","));
    if (entry.kind === "terminate-end" || entry.kind === "terminate-failed") open.delete(entry.ids.join(","));
    if (entry.kind === "launch-start" && open.size > 0) found.push(entry.key);
  }
  return found;
}

/** The spec for release 1: the same, rolled out all at once (a canary's holds would only slow the test). */
function firstDeploy(input: SpecInput): SpecInput {
  const count = input.instances?.count ?? 1;
  return { ...input, rollout: { strategy: "rolling", maxSurge: count, maxUnavailable: 0 } };
}

function spec(count: number, rollout: NonNullable<SpecInput["rollout"]>): SpecInput {
  return {
    service: "web",
    provider: "memory",
    instances: { count, ports: [{ name: "http", port: 8080 }] },
    health: { http: { port: "http" }, intervalMs: 100, timeoutMs: 100, healthyThreshold: 1, unhealthyThreshold: 2 },
    rollout,
  };
}

/**
 * Deploys release 1 (all at once), then release 2 with the timeline recorded from its start;
 * returns release 1's instances and the plan's peak.
 */
async function replace(env: ReturnType<typeof setup>, input: SpecInput) {
  await env.kiln.deploy({ spec: firstDeploy(input), baseDir: dir });
  const before = [...env.memory.live.values()].filter((instance) => instance.state === "running").map((instance) => instance.id);
  await writeFile(path.join(dir, "app.txt"), "2\n");
  const plan = await env.kiln.plan({ spec: input, baseDir: dir });
  if (plan.rollout.action !== "replace") throw new Error("expected a replacement");
  env.timeline.length = 0;
  await env.kiln.deploy({ spec: input, baseDir: dir });
  return { before, peakInstances: plan.rollout.peakInstances };
}

describe("the capacity invariant, at every moment of a rolling replacement", () => {
  const combos: { count: number; maxSurge: number; maxUnavailable: number; order: "start-first" | "stop-first" }[] = [
    { count: 10, maxSurge: 2, maxUnavailable: 0, order: "start-first" },
    { count: 10, maxSurge: 0, maxUnavailable: 2, order: "stop-first" },
    { count: 7, maxSurge: 3, maxUnavailable: 0, order: "start-first" },
    { count: 6, maxSurge: 2, maxUnavailable: 2, order: "start-first" },
    { count: 5, maxSurge: 1, maxUnavailable: 1, order: "start-first" },
    { count: 4, maxSurge: 0, maxUnavailable: 1, order: "stop-first" },
    { count: 2, maxSurge: 2, maxUnavailable: 1, order: "start-first" },
    { count: 1, maxSurge: 1, maxUnavailable: 0, order: "start-first" },
  ];
  for (const combo of combos) {
    const { count, maxSurge, maxUnavailable, order } = combo;
    it(`count ${count}, maxSurge ${maxSurge}, maxUnavailable ${maxUnavailable}, ${order}`, async () => {
      const env = setup({ behavior: () => ({ healthyAfterMs: 20 }) });
      const { before, peakInstances } = await replace(env, spec(count, { strategy: "rolling", maxSurge, maxUnavailable, order }));
      // The plan's peak is what the engine keeps to (and what provider limits were checked against).
      expect(peakInstances).toBeLessThanOrEqual(count + maxSurge);
      const seen = checkInvariant(env.timeline, before, { most: peakInstances, fewest: count - maxUnavailable });
      expect(seen.broken).toEqual([]);
      // The peak is reached, so the checker had something to check.
      expect(seen.peak).toBe(peakInstances);
      expect([...env.memory.live.values()].filter((instance) => instance.release === 2)).toHaveLength(count);
      expect(env.memory.live.size).toBe(count);
    });
  }

  it("a full budget leaves no room: the next batch launches only after the old batch's terminate returned", async () => {
    const env = setup();
    await replace(env, spec(10, { strategy: "rolling", maxSurge: 2, maxUnavailable: 0 }));
    expect(overlaps(env.timeline)).toEqual([]);
  });
});

describe("overlap where the budget allows it", () => {
  it("rolling: stopped instances are removed while the first batch launches (they do not run)", async () => {
    let launches = 0;
    // The first instance of release 1 passes its gate, then exits for good.
    const env = setup({ terminateMs: 1000, behavior: (request) => (request.release === 1 && ++launches === 1 ? { exitAfterMs: 300 } : {}) });
    const input = spec(3, { strategy: "rolling", maxSurge: 1, maxUnavailable: 0 });
    await env.kiln.deploy({ spec: input, baseDir: dir });
    const deadline = Date.now() + 10_000;
    while (![...env.memory.live.values()].some((instance) => instance.state === "stopped") && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
    const before = [...env.memory.live.values()].filter((instance) => instance.state === "running").map((instance) => instance.id);
    expect(before).toHaveLength(2);
    await writeFile(path.join(dir, "app.txt"), "2\n");
    env.timeline.length = 0;
    await env.kiln.deploy({ spec: input, baseDir: dir });
    expect(overlaps(env.timeline)).toEqual(["launch:1"]);
    // Two old ones run; 3 + 1 may run: the stopped one does not count.
    expect(checkInvariant(env.timeline, before, { most: 4, fewest: 2 }).broken).toEqual([]);
    expect([...env.memory.live.values()].every((instance) => instance.release === 2 && instance.state === "running")).toBe(true);
  });

  it("canary: a step's retirement runs through its hold and the next step's launch, within the plan's peak", async () => {
    const env = setup({ terminateMs: 1000 });
    const canary = spec(10, { strategy: "canary", steps: [{ instances: 1, holdMs: 100 }, { instances: 5, holdMs: 100 }] });
    const { before, peakInstances } = await replace(env, canary);
    // Steps add 1, 4 and 5 instances: the peak is 15; step 2's 4 fit beside step 1's retiring one (10 + 1 + 4).
    expect(peakInstances).toBe(15);
    expect(overlaps(env.timeline)).toEqual(["launch:2"]);
    const seen = checkInvariant(env.timeline, before, { most: peakInstances, fewest: 10 });
    expect(seen.broken).toEqual([]);
    expect(seen.peak).toBe(15);
    expect([...env.memory.live.values()].filter((instance) => instance.release === 2)).toHaveLength(10);
  });
});

describe("failures while a retirement and a launch are both under way", () => {
  /** Terminate calls per instance id. */
  function terminations(timeline: readonly Entry[]) {
    const count = new Map<string, number>();
    for (const entry of timeline) if (entry.kind === "terminate-start") for (const id of entry.ids) count.set(id, (count.get(id) ?? 0) + 1);
    return count;
  }

  const canary = spec(4, { strategy: "canary", steps: [{ instances: 1, holdMs: 0 }, { instances: 2, holdMs: 0 }] });

  it("a cancellation waits for the retirement, removes what was launched once, and restores the previous release", async () => {
    const env = setup({ terminateMs: 2000, launchMs: 1000 });
    await env.kiln.deploy({ spec: firstDeploy(canary), baseDir: dir });
    await writeFile(path.join(dir, "app.txt"), "2\n");
    env.timeline.length = 0;
    const controller = new AbortController();
    const deploying = env.kiln.deploy({ spec: canary, baseDir: dir, signal: controller.signal }).catch((error: unknown) => error);
    // Cancel once step 2's launch started while step 1's retirement is still terminating (2 s: wide enough on a busy machine).
    const deadline = Date.now() + 10_000;
    while (overlaps(env.timeline).length === 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 5));
    expect(overlaps(env.timeline)).toEqual(["launch:2"]);
    controller.abort();
    const error = await deploying;
    expect(isKilnError(error, "ABORTED")).toBe(true);
    for (const [id, calls] of terminations(env.timeline)) expect({ id, calls }).toEqual({ id, calls: 1 });
    const live = [...env.memory.live.values()];
    expect(live.filter((instance) => instance.release === 2)).toEqual([]);
    expect(live.filter((instance) => instance.release === 1 && instance.state === "running")).toHaveLength(4);
    // Nothing of the rollout's runs on after it returned: every provider call it started had ended.
    const started = env.timeline.filter((entry) => entry.kind === "launch-start" || entry.kind === "terminate-start").length;
    const ended = env.timeline.filter((entry) => ["launch-end", "launch-failed", "terminate-end", "terminate-failed"].includes(entry.kind)).length;
    expect(ended).toBe(started);
  });

  it("a gate that fails meanwhile is the reason: the retirement finishes, then the undo restores the previous release", async () => {
    const env = setup({ terminateMs: 1000, behavior: (request) => (request.release === 2 && request.idempotencyKey.endsWith(":launch:2") ? { neverHealthy: true } : {}) });
    await env.kiln.deploy({ spec: firstDeploy(canary), baseDir: dir });
    await writeFile(path.join(dir, "app.txt"), "2\n");
    env.timeline.length = 0;
    const error = await env.kiln.deploy({ spec: canary, baseDir: dir }).catch((caught: unknown) => caught);
    expect(isKilnError(error, "HEALTH_CHECK_FAILED")).toBe(true);
    expect(overlaps(env.timeline)).toEqual(["launch:2"]);
    // The retirement under way ended before the undo began.
    const firstRetire = env.timeline.findIndex((entry) => entry.kind === "terminate-start");
    const retired = env.timeline.findIndex((entry) => entry.kind === "terminate-end");
    const undone = env.timeline.findIndex((entry) => entry.kind === "event" && entry.event.type === "instance.unhealthy");
    expect(firstRetire).toBeGreaterThanOrEqual(0);
    expect(retired).toBeGreaterThan(firstRetire);
    const undoTerminate = env.timeline.findIndex((entry, index) => index > undone && entry.kind === "terminate-start");
    expect(undoTerminate).toBeGreaterThan(retired);
    for (const [id, calls] of terminations(env.timeline)) expect({ id, calls }).toEqual({ id, calls: 1 });
    const live = [...env.memory.live.values()];
    expect(live.filter((instance) => instance.release === 2)).toEqual([]);
    expect(live.filter((instance) => instance.release === 1 && instance.state === "running")).toHaveLength(4);
  });

  it("a retirement that fails stops the rollout at once with its own error", async () => {
    const memory = createMemoryProvider({ faults: { operations: { terminate: { latencyMs: 50, error: { when: (call) => call.callNumber === 1, code: "TERMINATE_FAILED" } } } } });
    const kiln = createKiln({ providers: { memory }, dataDir: path.join(dir, ".kiln") });
    // A long hold after the retirement: without the stop, the rollout would sit in it for a minute.
    const held = spec(4, { strategy: "canary", steps: [{ instances: 1, holdMs: 60_000 }] });
    await kiln.deploy({ spec: firstDeploy(held), baseDir: dir });
    await writeFile(path.join(dir, "app.txt"), "2\n");
    const started = Date.now();
    const error = await kiln.deploy({ spec: held, baseDir: dir }).catch((caught: unknown) => caught);
    expect(isKilnError(error, "TERMINATE_FAILED")).toBe(true);
    expect(Date.now() - started).toBeLessThan(30_000);
    expect([...memory.live.values()].filter((instance) => instance.release === 2)).toEqual([]);
  });
});
