// Core's journal, crash recovery, leased locks and cancellation, through the in-memory provider.
// A crash is simulated in-process: a provider call that never returns (the "dead" process is stuck
// right after writing its intent), then the lease is made to look like a dead process's (a pid no
// process has on this host), as a real SIGKILL would leave it. The SIGKILL-at-every-step test
// through the CLI lives with the CLI's tests.
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  createFileStateStore,
  createKiln,
  isKilnError,
  journalCrashPoints,
  silentLogger,
  waitFor,
  type KilnEvent,
  type Provider,
  type SpecInput,
  type StateStore,
} from "../src/index.js";
import { createMemoryProvider, type MemoryProvider } from "@kilnjs/testkit";

/** A pid no process has on Linux (pid_max is at most 2^22). */
const DEAD_PID = 2 ** 22 - 1;
const target = { service: "web", environment: "default" };

let dir: string;
let store: StateStore;
beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "kiln-journal-"));
  await writeFile(path.join(dir, "Dockerfile"), "FROM scratch\nCOPY app.txt /\n");
  await writeFile(path.join(dir, "app.txt"), "v1\n");
  store = createFileStateStore({ directory: path.join(dir, ".kiln", "state") });
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

function spec(overrides: Partial<SpecInput> = {}): SpecInput {
  return {
    service: "web",
    provider: "memory",
    instances: { count: 3, ports: [{ name: "http", port: 8080 }] },
    health: { http: { port: "http" }, intervalMs: 100, timeoutMs: 100, healthyThreshold: 2, unhealthyThreshold: 2 },
    rollout: { maxSurge: 1, maxUnavailable: 0 },
    ...overrides,
  };
}

function kilnWith(provider: Provider, events: KilnEvent[] = [], lockTtlMs?: number) {
  return createKiln({ providers: { memory: provider }, dataDir: path.join(dir, ".kiln"), onEvent: (event) => events.push(event), ...(lockTtlMs ? { lockTtlMs } : {}) });
}

/**
 * Wraps a provider so that its `n`-th call of `verb` (build, launch, terminate) never returns
 * until `fail()` is called: the process is "dead" right after writing that step's intent.
 */
function stuckAt(provider: MemoryProvider, point: string) {
  const [verb, nth] = point.split(":") as ["build" | "launch" | "terminate", string];
  const counts = { build: 0, launch: 0, terminate: 0 };
  let reached = false;
  let fail: (error: Error) => void = () => {};
  const hang = <T>(name: "build" | "launch" | "terminate", call: () => Promise<T>): Promise<T> => {
    counts[name] += 1;
    if (name !== verb || counts[name] !== Number(nth)) return call();
    reached = true;
    return new Promise<T>((_resolve, reject) => {
      fail = reject;
    });
  };
  const wrapped: Provider = {
    ...provider,
    images: { ...provider.images, build: (recipe, ctx) => hang("build", () => provider.images.build(recipe, ctx)) },
    instances: {
      ...provider.instances,
      launch: (request, ctx) => hang("launch", () => provider.instances.launch(request, ctx)),
      terminate: (instances, options, ctx) => hang("terminate", () => provider.instances.terminate(instances, options, ctx)),
    },
  };
  return { provider: wrapped, reached: () => reached, fail: (error: Error) => fail(error) };
}

/** Makes the target's lease look like one a killed process left: its pid is gone. */
async function killHolder(): Promise<void> {
  await store.update(target, (state) => {
    const lease = state.lease!;
    state.lease = { ...lease, holder: { ...lease.holder, pid: DEAD_PID } };
  });
}

/** Healthy serving capacity over a run, from its events: starts with `initial`, + healthy, - retiring. */
function lowestServing(events: readonly KilnEvent[], initial: Iterable<string>): number {
  const serving = new Set(initial);
  let lowest = serving.size;
  for (const event of events) {
    if (event.type === "instance.healthy") serving.add(event.instance.id);
    if (event.type === "instance.retiring") {
      serving.delete(event.instance.id);
      lowest = Math.min(lowest, serving.size);
    }
  }
  return lowest;
}

/** Every live instance belongs to the current release and runs its image; exactly `count` of them. */
async function expectConverged(provider: MemoryProvider, release: number): Promise<void> {
  const state = await store.read(target);
  expect(state.currentRelease).toBe(release);
  const current = state.releases.find((r) => r.number === release)!;
  expect(current.status).toBe("succeeded");
  const live = [...provider.live.values()];
  expect(live.map((i) => [i.release, i.imageId, i.state])).toEqual(Array.from({ length: current.count }, () => [release, current.image.id, "running"]));
  expect(state.rollouts.filter((r) => r.status === "running")).toEqual([]);
  expect(state.lease).toBeUndefined();
}

describe("the journal", () => {
  it("records an intent and an outcome for every build, launch and terminate of a rolling rollout of 3", async () => {
    const provider = createMemoryProvider();
    const events: KilnEvent[] = [];
    const kiln = kilnWith(provider, events);
    await kiln.deploy({ spec: spec(), baseDir: dir });
    await writeFile(path.join(dir, "app.txt"), "v2\n");
    events.length = 0;
    const result = await kiln.deploy({ spec: spec(), baseDir: dir });
    const journal = result.rollout!.journal;
    expect(journalCrashPoints(result.rollout!)).toEqual([
      "intent:build:1",
      "outcome:build:1",
      "intent:launch:1",
      "outcome:launch:1",
      "intent:terminate:1",
      "outcome:terminate:1",
      "intent:launch:2",
      "outcome:launch:2",
      "intent:terminate:2",
      "outcome:terminate:2",
      "intent:launch:3",
      "outcome:launch:3",
      "intent:terminate:3",
      "outcome:terminate:3",
    ]);
    expect(journal.map((entry) => entry.seq)).toEqual(journal.map((_, index) => index + 1));
    // Each outcome names exactly the instances the events name.
    const launchedIds = journal.filter((e) => e.op === "instances.launch" && e.phase === "outcome").flatMap((e) => e.instanceIds);
    const retiredIds = journal.filter((e) => e.op === "instances.terminate" && e.phase === "outcome").flatMap((e) => e.instanceIds);
    expect(launchedIds).toEqual(events.filter((e) => e.type === "instance.launched").map((e) => (e as { instance: { id: string } }).instance.id));
    expect(retiredIds).toEqual(events.filter((e) => e.type === "instance.retired").map((e) => (e as { instance: { id: string } }).instance.id));
    expect(journal.filter((e) => e.op === "instances.launch" && e.phase === "intent").map((e) => e.idempotencyKey)).toEqual([1, 2, 3].map((batch) => `${result.rollout!.id}:launch:${batch}`));
    expect(journal.filter((e) => e.phase === "outcome").every((e) => e.result === "ok")).toBe(true);
    // The record on disk has the same journal, and the rollout ran under the lease's token.
    const stored = (await store.read(target)).rollouts.find((r) => r.id === result.rollout!.id)!;
    expect(stored.journal).toEqual(journal);
    expect(stored.token).toBe(2);
    await kiln.close();
  });

  it("journals a failed launch, then the undo's own calls", async () => {
    const provider = createMemoryProvider({ behavior: (request) => (request.release === 2 ? { neverHealthy: true } : {}) });
    const kiln = kilnWith(provider);
    await kiln.deploy({ spec: spec(), baseDir: dir });
    await writeFile(path.join(dir, "app.txt"), "v2\n");
    const error = await kiln.deploy({ spec: spec(), baseDir: dir }).catch((e: unknown) => e);
    expect(isKilnError(error, "HEALTH_CHECK_FAILED")).toBe(true);
    const rollout = (await store.read(target)).rollouts.at(-1)!;
    expect(rollout.status).toBe("failed");
    // build, the first launch, then the undo terminating what it launched.
    expect(journalCrashPoints(rollout)).toEqual(["intent:build:1", "outcome:build:1", "intent:launch:1", "outcome:launch:1", "intent:terminate:1", "outcome:terminate:1"]);
    await kiln.close();
  });
});

describe("recovery after a crash", () => {
  // Every step of a rolling rollout of 3 where the process can die before the provider call.
  const points = ["build:1", "launch:1", "terminate:1", "launch:2", "terminate:2", "launch:3", "terminate:3"];

  it.each(points)("converges after the deploying process died at the intent of %s", async (point) => {
    const provider = createMemoryProvider();
    const first = kilnWith(provider);
    await first.deploy({ spec: spec(), baseDir: dir });
    await writeFile(path.join(dir, "app.txt"), "v2\n");

    const stuck = stuckAt(provider, point);
    const dying = kilnWith(stuck.provider);
    const dead = dying.deploy({ spec: spec(), baseDir: dir }).catch((error: unknown) => error);
    await waitFor(async () => ({ done: stuck.reached(), value: true }), { timeoutMs: 10_000, minDelayMs: 10, maxDelayMs: 20, description: `the rollout to reach ${point}` });
    const interrupted = (await store.read(target)).rollouts.at(-1)!;
    expect(interrupted.status).toBe("running");
    expect(interrupted.journal.at(-1)).toMatchObject({ phase: "intent", step: point });
    await killHolder();
    // Every instance alive now passed its health check (the run died before a call, never in a gate).
    const serving = [...provider.live.keys()];

    const events: KilnEvent[] = [];
    const next = kilnWith(provider, events);
    const result = await next.deploy({ spec: spec(), baseDir: dir });

    // The interrupted release (2) is resumed, or created with that number when the process died
    // before recording it; nothing is left that no release accounts for, and capacity never dropped.
    expect(result.release.number).toBe(2);
    await expectConverged(provider, 2);
    expect(lowestServing(events, serving)).toBeGreaterThanOrEqual(3);
    const state = await store.read(target);
    const aborted = state.rollouts.find((r) => r.id === interrupted.id)!;
    expect(aborted).toMatchObject({ status: "aborted", error: { code: "ROLLOUT_INTERRUPTED" } });
    expect(aborted.journal.at(-1)).toMatchObject({ op: "rollout.recover", step: "recover:1" });
    expect(state.releases.map((r) => [r.number, r.status])).toEqual([
      [1, "succeeded"],
      [2, "succeeded"],
    ]);
    const taken = events.find((e) => e.type === "lock.taken-over");
    expect(taken).toMatchObject({ previousToken: 2, token: 3 });
    const recovered = events.find((e) => e.type === "rollout.recovered");
    expect(recovered).toMatchObject({ rolloutId: interrupted.id, release: 2, releaseOutcome: point === "build:1" ? "not-created" : "resumed" });
    if (recovered?.type === "rollout.recovered") {
      // What the dead run launched and still runs is adopted, not replaced.
      const adopted = recovered.adopted.map((i) => i.id);
      for (const id of adopted) expect(provider.live.has(id)).toBe(true);
      const launchedByDeadRun = recovered.found.filter((i) => i.release === 2).length;
      expect(adopted.length).toBe(launchedByDeadRun);
    }

    // The dead process, should it wake up, can no longer write anything: its lease is gone.
    stuck.fail(new Error("the call finally failed"));
    const late = await dead;
    expect(isKilnError(late, "LOCK_LOST")).toBe(true);
    expect((await store.read(target)).rollouts.find((r) => r.id === interrupted.id)!.status).toBe("aborted");
    await expectConverged(provider, 2);
    await Promise.all([first.close(), dying.close(), next.close()]);
  });

  it("records the interrupted release as failed and deploys a new one when the spec changed meanwhile", async () => {
    const provider = createMemoryProvider();
    const first = kilnWith(provider);
    await first.deploy({ spec: spec(), baseDir: dir });
    await writeFile(path.join(dir, "app.txt"), "v2\n");
    const stuck = stuckAt(provider, "terminate:1");
    const dead = kilnWith(stuck.provider)
      .deploy({ spec: spec(), baseDir: dir })
      .catch((error: unknown) => error);
    await waitFor(async () => ({ done: stuck.reached(), value: true }), { timeoutMs: 10_000, minDelayMs: 10, maxDelayMs: 20, description: "the crash point" });
    await killHolder();
    const serving = [...provider.live.keys()];

    await writeFile(path.join(dir, "app.txt"), "v3\n");
    const events: KilnEvent[] = [];
    const result = await kilnWith(provider, events).deploy({ spec: spec(), baseDir: dir });
    expect(result.release.number).toBe(3);
    await expectConverged(provider, 3);
    expect(lowestServing(events, serving)).toBeGreaterThanOrEqual(3);
    const state = await store.read(target);
    expect(state.releases.map((r) => [r.number, r.status, r.error?.code])).toEqual([
      [1, "succeeded", undefined],
      [2, "failed", "ROLLOUT_INTERRUPTED"],
      [3, "succeeded", undefined],
    ]);
    const recovered = events.find((e) => e.type === "rollout.recovered");
    expect(recovered).toMatchObject({ releaseOutcome: "failed", adopted: [] });
    if (recovered?.type === "rollout.recovered") expect(recovered.retiring.map((i) => i.release)).toEqual([2]);
    stuck.fail(new Error("gone"));
    await dead;
  });

  it("recovers from state written as a killed process leaves it: rollout running, lease of a dead pid", async () => {
    const provider = createMemoryProvider();
    const kiln = kilnWith(provider);
    await kiln.deploy({ spec: spec(), baseDir: dir });
    const release = (await store.read(target)).releases[0]!;
    // What a process killed in the middle of a repair (release 1, one instance short) leaves behind.
    const victim = [...provider.live.values()][0]!;
    await provider.instances.terminate([victim], { gracePeriodMs: 0 }, { signal: new AbortController().signal, logger: silentLogger, emit() {} });
    const orphan = (
      await provider.instances.launch(
        { target, release: 1, rolloutId: "20260101000000-deadbeef", idempotencyKey: "20260101000000-deadbeef:launch:1", image: release.image, config: release.instance, count: 1 },
        { signal: new AbortController().signal, logger: silentLogger, emit() {} },
      )
    )[0]!;
    await store.update(target, (state) => {
      const token = (state.fencingToken ?? 0) + 1;
      state.fencingToken = token;
      const holder = { user: "ci", host: os.hostname(), pid: DEAD_PID, command: "kiln deploy", since: new Date().toISOString() };
      state.lease = { holder, token, expiresAt: new Date(Date.now() + 60_000).toISOString(), ttlMs: 30_000 };
      state.rollouts.push({ id: "20260101000000-deadbeef", target, kind: "deploy", fromRelease: 1, toRelease: 1, startedAt: holder.since, holder, provider: "memory", token, status: "running", journal: [] });
    });
    const status = await kiln.status({ target: "web" });
    expect(status.activeRollout?.id).toBe("20260101000000-deadbeef");
    expect(status.lock).toMatchObject({ stale: true });

    const events: KilnEvent[] = [];
    const result = await kilnWith(provider, events).deploy({ spec: spec(), baseDir: dir });
    // The repair's instance runs release 1's image, so it is adopted: nothing to do.
    expect(result.outcome).toBe("unchanged");
    await expectConverged(provider, 1);
    expect(provider.live.has(orphan.id)).toBe(true);
    expect(events.find((e) => e.type === "rollout.recovered")).toMatchObject({ releaseOutcome: "unchanged", found: [{ id: orphan.id }] });
    expect((await store.read(target)).rollouts.find((r) => r.id === "20260101000000-deadbeef")).toMatchObject({ status: "aborted", error: { code: "ROLLOUT_INTERRUPTED" } });
  });

  it("resumes the interrupted release without a spec (kiln rollout resume)", async () => {
    const provider = createMemoryProvider();
    await kilnWith(provider).deploy({ spec: spec(), baseDir: dir });
    await writeFile(path.join(dir, "app.txt"), "v2\n");
    const stuck = stuckAt(provider, "launch:2");
    const dead = kilnWith(stuck.provider)
      .deploy({ spec: spec(), baseDir: dir })
      .catch((error: unknown) => error);
    await waitFor(async () => ({ done: stuck.reached(), value: true }), { timeoutMs: 10_000, minDelayMs: 10, maxDelayMs: 20, description: "the crash point" });
    await killHolder();
    // The spec changes again, but resume runs the release's own record.
    await writeFile(path.join(dir, "app.txt"), "v3\n");
    const resumed = await kilnWith(provider).resumeRollout({ target: "web@default" });
    expect(resumed.interrupted).toHaveLength(1);
    expect(resumed.result?.release.number).toBe(2);
    await expectConverged(provider, 2);
    // Nothing left to resume afterwards.
    expect(await kilnWith(provider).resumeRollout({ target: "web" })).toEqual({ interrupted: [], result: undefined });
    stuck.fail(new Error("gone"));
    await dead;
  });

  it("aborts on purpose (kiln rollout abort): the interrupted release fails, the current one is repaired", async () => {
    const provider = createMemoryProvider();
    await kilnWith(provider).deploy({ spec: spec(), baseDir: dir });
    await writeFile(path.join(dir, "app.txt"), "v2\n");
    const stuck = stuckAt(provider, "launch:2");
    const dead = kilnWith(stuck.provider)
      .deploy({ spec: spec(), baseDir: dir })
      .catch((error: unknown) => error);
    await waitFor(async () => ({ done: stuck.reached(), value: true }), { timeoutMs: 10_000, minDelayMs: 10, maxDelayMs: 20, description: "the crash point" });
    await killHolder();
    const serving = [...provider.live.keys()];
    const events: KilnEvent[] = [];
    const aborted = await kilnWith(provider, events).abortRollout({ target: "web" });
    expect(aborted.result?.release.number).toBe(1);
    await expectConverged(provider, 1);
    // The dead run had replaced one v1 instance with a v2 one; the repair launches a v1 instance
    // and only then retires the v2 one, so capacity never drops below count - maxUnavailable.
    expect(lowestServing(events, serving)).toBeGreaterThanOrEqual(3);
    const state = await store.read(target);
    expect(state.releases.map((r) => [r.number, r.status])).toEqual([
      [1, "succeeded"],
      [2, "failed"],
    ]);
    expect(state.rollouts.at(-1)).toMatchObject({ kind: "rollback", fromRelease: 1, toRelease: 1, status: "succeeded" });
    stuck.fail(new Error("gone"));
    await dead;
  });

  it("decides an interrupted release later when the run that recovered it stopped first", async () => {
    const provider = createMemoryProvider();
    const stuck = stuckAt(provider, "launch:1");
    const dead = kilnWith(stuck.provider)
      .deploy({ spec: spec(), baseDir: dir })
      .catch((error: unknown) => error);
    await waitFor(async () => ({ done: stuck.reached(), value: true }), { timeoutMs: 10_000, minDelayMs: 10, maxDelayMs: 20, description: "the crash point" });
    await killHolder();
    // This run recovers the rollout, then fails before deciding about release 1.
    await expect(kilnWith(provider).rollback({ target: "web" })).rejects.toMatchObject({ code: "NO_ROLLBACK_TARGET" });
    let state = await store.read(target);
    expect(state.rollouts[0]).toMatchObject({ status: "aborted", error: { code: "ROLLOUT_INTERRUPTED" } });
    expect(state.releases[0]?.status).toBe("pending");
    const events: KilnEvent[] = [];
    const result = await kilnWith(provider, events).deploy({ spec: spec(), baseDir: dir });
    expect(result.release.number).toBe(1);
    expect(events.find((e) => e.type === "rollout.recovered")).toMatchObject({ releaseOutcome: "resumed" });
    await expectConverged(provider, 1);
    state = await store.read(target);
    expect(state.rollouts.map((r) => r.status)).toEqual(["aborted", "succeeded"]);
    stuck.fail(new Error("gone"));
    await dead;
  });

  it("aborts an interrupted first deploy by removing what it launched", async () => {
    const provider = createMemoryProvider();
    const stuck = stuckAt(provider, "launch:1");
    const dead = kilnWith(stuck.provider)
      .deploy({ spec: spec(), baseDir: dir })
      .catch((error: unknown) => error);
    await waitFor(async () => ({ done: stuck.reached(), value: true }), { timeoutMs: 10_000, minDelayMs: 10, maxDelayMs: 20, description: "the crash point" });
    // Pretend the call went through before the process died.
    const release = (await store.read(target)).releases[0]!;
    const rolloutId = (await store.read(target)).rollouts[0]!.id;
    await provider.instances.launch(
      { target, release: 1, rolloutId, idempotencyKey: `${rolloutId}:launch:1`, image: release.image, config: release.instance, count: 3 },
      { signal: new AbortController().signal, logger: silentLogger, emit() {} },
    );
    await killHolder();
    const result = await kilnWith(provider).abortRollout({ target: "web" });
    expect(result.result).toBeUndefined();
    expect(provider.live.size).toBe(0);
    const state = await store.read(target);
    expect(state.releases.map((r) => r.status)).toEqual(["failed"]);
    expect(journalCrashPoints(state.rollouts[0]!)).toEqual(["intent:build:1", "outcome:build:1", "intent:launch:1", "intent:terminate:1", "outcome:terminate:1"]);
    stuck.fail(new Error("gone"));
    await dead;
  });
});

describe("locks", () => {
  it("lets exactly one of two concurrent deploys run; the other names the holder", async () => {
    const provider = createMemoryProvider();
    const [a, b] = await Promise.allSettled([kilnWith(provider).deploy({ spec: spec(), baseDir: dir }), kilnWith(provider).deploy({ spec: spec(), baseDir: dir })]);
    const outcomes = [a, b].map((r) => r.status);
    expect(outcomes.sort()).toEqual(["fulfilled", "rejected"]);
    const rejected = [a, b].find((r) => r.status === "rejected") as PromiseRejectedResult;
    expect(rejected.reason).toMatchObject({ code: "TARGET_LOCKED" });
    expect((rejected.reason as Error).message).toContain(`pid ${process.pid}`);
  });

  it("waits for the lock with waitForLockMs, then proceeds", async () => {
    const provider = createMemoryProvider();
    const stuck = stuckAt(provider, "launch:1");
    const holder = kilnWith(stuck.provider).deploy({ spec: spec(), baseDir: dir }).catch((error: unknown) => error);
    await waitFor(async () => ({ done: stuck.reached(), value: true }), { timeoutMs: 10_000, minDelayMs: 10, maxDelayMs: 20, description: "the first deploy to hold the lock" });
    const events: KilnEvent[] = [];
    const waiting = kilnWith(provider, events).deploy({ spec: spec(), baseDir: dir, waitForLockMs: 10_000 });
    await waitFor(async () => ({ done: events.some((e) => e.type === "lock.waiting"), value: true }), { timeoutMs: 10_000, minDelayMs: 10, maxDelayMs: 20, description: "the second deploy to wait for the lock" });
    expect(events.find((e) => e.type === "lock.waiting")).toMatchObject({ holder: expect.stringContaining(`pid ${process.pid}`) as string, timeoutMs: 10_000 });
    expect(events.some((e) => e.type === "rollout.started")).toBe(false);
    // The holder fails (and undoes, releasing the lock); the waiting deploy then runs.
    stuck.fail(new Error("launch failed"));
    expect(await holder).toMatchObject({ code: "ROLLOUT_FAILED" });
    const result = await waiting;
    expect(result.outcome).toBe("deployed");
    await expectConverged(provider, 2);
  });

  it("gives up waiting with TARGET_LOCKED after waitForLockMs", async () => {
    const provider = createMemoryProvider();
    const stuck = stuckAt(provider, "launch:1");
    const dead = kilnWith(stuck.provider)
      .deploy({ spec: spec(), baseDir: dir })
      .catch((error: unknown) => error);
    await waitFor(async () => ({ done: stuck.reached(), value: true }), { timeoutMs: 10_000, minDelayMs: 10, maxDelayMs: 20, description: "the first deploy to hold the lock" });
    const startedAt = Date.now();
    const error = await kilnWith(provider).deploy({ spec: spec(), baseDir: dir, waitForLockMs: 400 }).catch((e: unknown) => e);
    expect(error).toMatchObject({ code: "TARGET_LOCKED" });
    expect((error as Error).message).toMatch(/^Waited 400 ms/);
    expect(Date.now() - startedAt).toBeGreaterThanOrEqual(400);
    stuck.fail(new Error("gone"));
    await dead;
  });

  it("releases a lock by force; the former holder can write nothing more and its rollout stops", async () => {
    const provider = createMemoryProvider();
    const stuck = stuckAt(provider, "launch:1");
    const kiln = kilnWith(stuck.provider, [], 300);
    const held = kiln.deploy({ spec: spec(), baseDir: dir }).catch((error: unknown) => error);
    await waitFor(async () => ({ done: stuck.reached(), value: true }), { timeoutMs: 10_000, minDelayMs: 10, maxDelayMs: 20, description: "the deploy to hold the lock" });
    const other = kilnWith(provider);
    expect(await other.lockStatus({ target: "web" })).toMatchObject({ token: 1, stale: false, holder: { pid: process.pid } });
    const cleared = await other.forceReleaseLock({ target: "web" });
    expect(cleared).toMatchObject({ token: 1 });
    expect(await other.lockStatus({ target: "web" })).toBeUndefined();
    // The holder's next renewal (within ttl/3) finds its lease gone and stops the rollout.
    stuck.fail(new Error("interrupted"));
    expect(await held).toMatchObject({ code: "LOCK_LOST" });
    // Its rollout stays `running` in state (it could not write more); the next deploy recovers it.
    expect((await store.read(target)).rollouts[0]!.status).toBe("running");
    const result = await other.deploy({ spec: spec(), baseDir: dir });
    expect(result.release.number).toBe(1);
    await expectConverged(provider, 1);
  });
});

describe("cancellation", () => {
  it("on abort, undoes the rollout, releases the lock and records the rollout aborted", async () => {
    const provider = createMemoryProvider({ behavior: (request) => (request.release === 2 ? { healthyAfterMs: 60_000 } : {}) });
    const kiln = kilnWith(provider);
    await kiln.deploy({ spec: spec(), baseDir: dir });
    const v1 = [...provider.live.keys()].sort();
    await writeFile(path.join(dir, "app.txt"), "v2\n");
    const controller = new AbortController();
    const events: KilnEvent[] = [];
    const deploying = kiln.deploy({ spec: spec(), baseDir: dir, signal: controller.signal, onEvent: (e) => events.push(e) });
    await waitFor(async () => ({ done: events.some((e) => e.type === "instance.launched"), value: true }), { timeoutMs: 10_000, minDelayMs: 10, maxDelayMs: 20, description: "a launch" });
    controller.abort(new Error("SIGINT"));
    await expect(deploying).rejects.toMatchObject({ code: "ABORTED" });
    expect([...provider.live.keys()].sort()).toEqual(v1);
    const state = await store.read(target);
    expect(state.lease).toBeUndefined();
    expect(state.rollouts.at(-1)).toMatchObject({ status: "aborted" });
    expect(journalCrashPoints(state.rollouts.at(-1)!)).toEqual(["intent:build:1", "outcome:build:1", "intent:launch:1", "outcome:launch:1", "intent:terminate:1", "outcome:terminate:1"]);
  });

  it("cancels a wait for the lock", async () => {
    const provider = createMemoryProvider();
    const stuck = stuckAt(provider, "launch:1");
    const dead = kilnWith(stuck.provider)
      .deploy({ spec: spec(), baseDir: dir })
      .catch((error: unknown) => error);
    await waitFor(async () => ({ done: stuck.reached(), value: true }), { timeoutMs: 10_000, minDelayMs: 10, maxDelayMs: 20, description: "the first deploy to hold the lock" });
    const controller = new AbortController();
    const events: KilnEvent[] = [];
    const waiting = kilnWith(provider, events).deploy({ spec: spec(), baseDir: dir, waitForLockMs: 60_000, signal: controller.signal });
    // Cancel once it is really waiting for the lock, not before it got there.
    await waitFor(async () => ({ done: events.some((e) => e.type === "lock.waiting"), value: true }), { timeoutMs: 10_000, minDelayMs: 10, maxDelayMs: 20, description: "the deploy to wait for the lock" });
    controller.abort();
    await expect(waiting).rejects.toMatchObject({ code: "ABORTED" });
    stuck.fail(new Error("gone"));
    await dead;
  });
});
