// Tests of core's lifecycle (plan, build, deploy, rollback, status, history) through the
// in-memory provider. Core does not depend on testkit (testkit depends on core): its tests import
// `@kilnjs/testkit` from source through the test-only alias in the root vitest.config.ts.
import { mkdtemp, rm, utimes, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { createKiln, isKilnError, loadSpec, type KilnEvent, type SpecInput } from "../src/index.js";
import { createMemoryProvider, type MemoryProviderOptions } from "@kilnjs/testkit";

let dir: string;

beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "kiln-lifecycle-"));
  await writeFile(path.join(dir, "Dockerfile"), "FROM kiln-local/busybox\nCOPY . /app\n");
  await writeFile(path.join(dir, "app.txt"), "version 1\n");
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

function spec(overrides: Partial<SpecInput> = {}): SpecInput {
  return {
    service: "web",
    provider: "memory",
    instances: { count: 3, ports: [{ name: "http", port: 8080 }] },
    health: { http: { port: "http", path: "/healthz" }, intervalMs: 100, timeoutMs: 100, healthyThreshold: 2, unhealthyThreshold: 3 },
    rollout: { maxSurge: 1, maxUnavailable: 0 },
    ...overrides,
  };
}

function setup(options: MemoryProviderOptions = {}) {
  const provider = createMemoryProvider(options);
  const events: KilnEvent[] = [];
  const kiln = createKiln({ providers: { memory: provider }, dataDir: path.join(dir, ".kiln"), onEvent: (event) => events.push(event) });
  return { provider, kiln, events };
}

/** Tracks which instances serve (old ones, and new ones once healthy) and the fewest seen at any retirement. */
function capacityTracker(events: KilnEvent[], initial: Iterable<string>) {
  const serving = new Set(initial);
  let lowest = serving.size;
  return {
    replay() {
      for (const event of events) {
        if (event.type === "instance.healthy") serving.add(event.instance.id);
        if (event.type === "instance.retiring") {
          serving.delete(event.instance.id);
          lowest = Math.min(lowest, serving.size);
        }
      }
      return lowest;
    },
  };
}

describe("deploy", () => {
  it("deploys 3 instances, then replaces all 3 with a new release, keeping capacity", async () => {
    const { kiln, provider, events } = setup();
    const first = await kiln.deploy({ spec: spec(), baseDir: dir });
    expect(first.outcome).toBe("deployed");
    expect(first.release.number).toBe(1);
    expect([...provider.live.values()].map((i) => i.release)).toEqual([1, 1, 1]);
    const v1Ids = [...provider.live.keys()];

    await writeFile(path.join(dir, "app.txt"), "version 2\n");
    events.length = 0;
    const second = await kiln.deploy({ spec: spec(), baseDir: dir });
    expect(second.release.number).toBe(2);
    expect(second.release.fingerprint).not.toBe(first.release.fingerprint);
    const live = [...provider.live.values()];
    expect(live).toHaveLength(3);
    expect(live.every((i) => i.release === 2)).toBe(true);
    expect(live.some((i) => v1Ids.includes(i.id))).toBe(false);
    // maxUnavailable 0: never fewer than 3 serving instances at any retirement.
    expect(capacityTracker(events, v1Ids).replay()).toBeGreaterThanOrEqual(3);

    const history = await kiln.history({ target: "web@default" });
    expect(history.releases.map((r) => [r.number, r.status])).toEqual([[2, "succeeded"], [1, "succeeded"]]);
    expect(history.currentRelease).toBe(2);
    expect(history.releases[0]!.image.digest).toMatch(/^sha256:/);
  });

  it("does nothing when nothing changed: no build, no launch, no terminate", async () => {
    const { kiln, provider, events } = setup();
    // Files written in the last 2 s are re-hashed (the racy-timestamp guard): age them first.
    const past = new Date(Date.now() - 3_600_000);
    for (const file of ["Dockerfile", "app.txt"]) await utimes(path.join(dir, file), past, past);
    await kiln.deploy({ spec: spec(), baseDir: dir });
    const before = { ...provider.calls };
    events.length = 0;
    const again = await kiln.deploy({ spec: spec(), baseDir: dir });
    expect(again.outcome).toBe("unchanged");
    expect(again.plan?.noop).toBe(true);
    expect(provider.calls.build).toBe(before.build);
    expect(provider.calls.launch).toBe(before.launch);
    expect(provider.calls.terminate).toBe(before.terminate);
    expect(events.map((e) => e.type)).toContain("rollout.skipped");
    const fingerprinted = events.find((e) => e.type === "image.fingerprinted");
    expect(fingerprinted && fingerprinted.type === "image.fingerprinted" && fingerprinted.bytesHashed).toBe(0);
  });

  it("changes only instance settings without a rebuild", async () => {
    const { kiln, provider } = setup();
    await kiln.deploy({ spec: spec(), baseDir: dir });
    const builds = provider.calls.build;
    const result = await kiln.deploy({ spec: spec({ instances: { count: 3, ports: [{ name: "http", port: 8080 }], env: { LOG_LEVEL: "debug" } } }), baseDir: dir });
    expect(result.release.number).toBe(2);
    expect(provider.calls.build).toBe(builds);
  });

  it("repairs drift within the same release: a missing instance is relaunched", async () => {
    const { kiln, provider } = setup();
    await kiln.deploy({ spec: spec(), baseDir: dir });
    const victim = [...provider.live.values()][0]!;
    await provider.instances.terminate([victim], { gracePeriodMs: 0 }, { signal: new AbortController().signal, logger: console, emit() {} });
    const status = await kiln.status({ target: "web@default" });
    expect(status.drift.join("\n")).toMatch(/1 of 3 instance\(s\) of release 1 are missing/);
    const repaired = await kiln.deploy({ spec: spec(), baseDir: dir });
    expect(repaired.outcome).toBe("deployed");
    expect(repaired.release.number).toBe(1);
    expect(provider.live.size).toBe(3);
  });

  it("leaves exactly count instances when a drift repair fails, and keeps the release current", async () => {
    let failLaunches = false;
    const { kiln, provider } = setup({ behavior: () => (failLaunches ? { neverHealthy: true } : {}) });
    await kiln.deploy({ spec: spec(), baseDir: dir });
    await provider.instances.terminate([[...provider.live.values()][0]!], { gracePeriodMs: 0 }, { signal: new AbortController().signal, logger: console, emit() {} });
    failLaunches = true;
    await expect(kiln.deploy({ spec: spec(), baseDir: dir })).rejects.toMatchObject({ code: "HEALTH_CHECK_FAILED" });
    // The two kept instances serve and the restore relaunches the missing one: never more than count.
    expect(provider.live.size).toBeLessThanOrEqual(3);
    expect([...provider.live.values()].filter((i) => i.release === 1).length).toBeGreaterThanOrEqual(2);
    const status = await kiln.status({ target: "web@default" });
    expect(status.release?.number).toBe(1);
  });

  it("does not rebuild when only kiln.yaml changes (the spec file is not part of the build)", async () => {
    const { kiln, provider } = setup();
    const file = path.join(dir, "kiln.yaml");
    const yaml = (level: string) =>
      `service: web\nprovider: memory\ninstances:\n  count: 1\n  env: { LEVEL: ${level} }\n  ports: [{ name: http, port: 8080 }]\nhealth: { http: { port: http }, intervalMs: 100 }\n`;
    await writeFile(file, yaml("info"));
    const first = await kiln.deploy({ spec: await loadSpec(file) });
    await writeFile(file, yaml("debug"));
    const second = await kiln.deploy({ spec: await loadSpec(file) });
    expect(second.release.number).toBe(2);
    expect(second.release.fingerprint).toBe(first.release.fingerprint);
    expect(provider.calls.build).toBe(1);
  });

  it("undoes a release whose instances never become healthy; the old ones keep serving", async () => {
    const { kiln, provider } = setup({ behavior: (request) => (request.release === 2 ? { neverHealthy: true } : {}) });
    await kiln.deploy({ spec: spec(), baseDir: dir });
    const v1Ids = [...provider.live.keys()].sort();
    await writeFile(path.join(dir, "app.txt"), "broken\n");
    const error = await kiln.deploy({ spec: spec(), baseDir: dir }).catch((e: unknown) => e);
    expect(isKilnError(error, "HEALTH_CHECK_FAILED")).toBe(true);
    expect([...provider.live.keys()].sort()).toEqual(v1Ids);
    const history = await kiln.history({ target: "web@default" });
    expect(history.releases[0]).toMatchObject({ number: 2, status: "failed", error: { code: "HEALTH_CHECK_FAILED" } });
    expect(history.currentRelease).toBe(1);
    expect(history.rollouts[0]).toMatchObject({ status: "failed", restoredRelease: 1 });
  });

  it("fails an instance that exits during its health check", async () => {
    const { kiln } = setup({ behavior: () => ({ exitAfterMs: 0 }) });
    const error = await kiln.deploy({ spec: spec(), baseDir: dir }).catch((e: unknown) => e);
    expect(isKilnError(error, "HEALTH_CHECK_FAILED")).toBe(true);
    expect((error as Error).message).toMatch(/stopped|no longer exists/);
  });

  it("waits through the start period for a slow starter", async () => {
    const { kiln } = setup({ behavior: () => ({ healthyAfterMs: 600 }) });
    const result = await kiln.deploy({
      spec: spec({ instances: { count: 1, ports: [{ name: "http", port: 8080 }] }, health: { http: { port: "http" }, intervalMs: 100, timeoutMs: 100, unhealthyThreshold: 2, startPeriodMs: 1000 } }),
      baseDir: dir,
    });
    expect(result.outcome).toBe("deployed");
  });

  it("restores the previous release when cancelled during the health wait", async () => {
    const { kiln, provider, events } = setup({ behavior: (request) => (request.release === 2 ? { healthyAfterMs: 60_000 } : {}) });
    await kiln.deploy({ spec: spec(), baseDir: dir });
    const v1Ids = [...provider.live.keys()].sort();
    await writeFile(path.join(dir, "app.txt"), "slow\n");
    const controller = new AbortController();
    const deploying = kiln.deploy({ spec: spec({ health: { http: { port: "http" }, intervalMs: 100, startPeriodMs: 60_000 } }), baseDir: dir, signal: controller.signal });
    // Cancel once the new instance is launched (a condition, not a timer).
    await expect.poll(() => events.some((e) => e.type === "instance.launched" && e.instance.release === 2), { timeout: 5000, interval: 20 }).toBe(true);
    controller.abort();
    const error = await deploying.catch((e: unknown) => e);
    expect(isKilnError(error, "ABORTED")).toBe(true);
    expect([...provider.live.keys()].sort()).toEqual(v1Ids);
    const history = await kiln.history({ target: "web@default" });
    expect(history.rollouts[0]!.status).toBe("aborted");
    // The lock was released: another deploy can start at once.
    await writeFile(path.join(dir, "app.txt"), "version 1\n");
    expect((await kiln.deploy({ spec: spec(), baseDir: dir })).outcome).toBe("unchanged");
  });

  it("replaces a single instance surge-first", async () => {
    const { kiln, provider, events } = setup();
    const one = spec({ instances: { count: 1, ports: [{ name: "http", port: 8080 }] } });
    await kiln.deploy({ spec: one, baseDir: dir });
    const oldId = [...provider.live.keys()][0]!;
    await writeFile(path.join(dir, "app.txt"), "v2\n");
    events.length = 0;
    await kiln.deploy({ spec: one, baseDir: dir });
    const order = events.filter((e) => e.type === "instance.healthy" || e.type === "instance.retiring").map((e) => e.type);
    expect(order).toEqual(["instance.healthy", "instance.retiring"]);
    expect(capacityTracker(events, [oldId]).replay()).toBe(1);
  });

  it("refuses a second concurrent deploy of the same target, naming the holder", async () => {
    const { kiln } = setup({ behavior: () => ({ healthyAfterMs: 500 }) });
    const other = setup().kiln;
    const first = kiln.deploy({ spec: spec({ health: { http: { port: "http" }, intervalMs: 100, startPeriodMs: 2000 } }), baseDir: dir });
    await expect.poll(async () => (await kiln.history({ target: "web@default" })).rollouts.length, { timeout: 5000, interval: 20 }).toBe(1);
    const error = await other.deploy({ spec: spec(), baseDir: dir }).catch((e: unknown) => e);
    expect(isKilnError(error, "TARGET_LOCKED")).toBe(true);
    expect((error as Error).message).toMatch(/pid \d+/);
    await first;
  });
});

describe("rollback", () => {
  it("goes back to the last good release with its stored image, skipping failed ones", async () => {
    const { kiln, provider } = setup({ behavior: (request) => (request.release === 3 ? { neverHealthy: true } : {}) });
    await kiln.deploy({ spec: spec(), baseDir: dir });
    await writeFile(path.join(dir, "app.txt"), "version 2\n");
    await kiln.deploy({ spec: spec(), baseDir: dir });
    await writeFile(path.join(dir, "app.txt"), "version 3, broken\n");
    await expect(kiln.deploy({ spec: spec(), baseDir: dir })).rejects.toMatchObject({ code: "HEALTH_CHECK_FAILED" });
    const builds = provider.calls.build;
    const result = await kiln.rollback({ target: "web@default" });
    expect(result.release).toMatchObject({ number: 4, rollbackOf: 1, status: "succeeded" });
    expect(provider.calls.build).toBe(builds);
    expect([...provider.live.values()].every((i) => i.release === 4)).toBe(true);
    await expect(kiln.rollback({ target: "web@default", release: 3 })).rejects.toMatchObject({ code: "RELEASE_NOT_FOUND" });
    await expect(kiln.rollback({ target: "web@default", release: 9 })).rejects.toMatchObject({ code: "RELEASE_NOT_FOUND" });
  });

  it("says so when there is nothing to roll back to", async () => {
    const { kiln } = setup();
    await kiln.deploy({ spec: spec(), baseDir: dir });
    await expect(kiln.rollback({ target: "web@default" })).rejects.toMatchObject({ code: "NO_ROLLBACK_TARGET" });
  });
});

describe("capabilities", () => {
  it("refuses traffic.proxy on a provider that cannot route traffic, before building anything", async () => {
    const { kiln, provider } = setup();
    const proxied = { ...spec(), traffic: { proxy: { port: 18080 } } };
    await expect(kiln.deploy({ spec: proxied, baseDir: dir })).rejects.toMatchObject({ code: "CAPABILITY_MISSING" });
    expect(provider.calls.build).toBe(0);
  });
});

describe("spec errors", () => {
  it("reject an invalid spec object before touching the provider", async () => {
    const { kiln, provider } = setup();
    const error = await kiln.deploy({ spec: { service: "web", provider: "memory", instances: { count: "three" } } as unknown as SpecInput, baseDir: dir }).catch((e: unknown) => e);
    expect(isKilnError(error, "SPEC_INVALID")).toBe(true);
    expect(Object.values(provider.calls).every((count) => count === 0)).toBe(true);
  });
});

describe("status while a rollout runs", () => {
  /**
   * A memory provider whose first probe of a release-2 instance waits for `during()` (the rollout
   * holds its lock and has launched one new instance at that moment), so the test looks at the
   * target in the middle of the rollout without racing it.
   */
  function pausedAtFirstNewProbe(during: () => Promise<void>) {
    const provider = createMemoryProvider();
    let paused = false;
    const probe: typeof provider.health.probe = async (instance, check, timeoutMs, ctx) => {
      if (instance.release === 2 && !paused) {
        paused = true;
        await during();
      }
      return provider.health.probe(instance, check, timeoutMs, ctx);
    };
    return { ...provider, health: { ...provider.health, probe } };
  }

  it("shows the rollout's new and old instances as its progress, not as drift", async () => {
    let seen: Awaited<ReturnType<ReturnType<typeof createKiln>["status"]>> | undefined;
    const kiln: ReturnType<typeof createKiln> = createKiln({
      providers: {
        memory: pausedAtFirstNewProbe(async () => {
          seen = await kiln.status({ target: "web@default" });
        }),
      },
      dataDir: path.join(dir, ".kiln"),
    });
    await kiln.deploy({ spec: spec(), baseDir: dir });
    await writeFile(path.join(dir, "app.txt"), "version 2\n");
    await kiln.deploy({ spec: spec(), baseDir: dir });
    await kiln.close();

    expect(seen?.lock?.stale).toBe(false);
    expect(seen?.activeRollout?.toRelease).toBe(2);
    expect(seen?.drift).toEqual([]);
    expect(seen?.progress).toEqual([
      expect.stringMatching(/^rollout \S+ \(\w+\) to release 2: 1 of 3 new instance\(s\) running$/),
      "release 1: 3 instance(s) still running, retired as the rollout goes",
    ]);
  });

  it("has no progress once the rollout ended, and says nothing is wrong", async () => {
    const { kiln } = setup();
    await kiln.deploy({ spec: spec(), baseDir: dir });
    await writeFile(path.join(dir, "app.txt"), "version 2\n");
    await kiln.deploy({ spec: spec(), baseDir: dir });
    const status = await kiln.status({ target: "web@default" });
    expect(status.activeRollout).toBeUndefined();
    expect(status.progress).toEqual([]);
    expect(status.drift).toEqual([]);
    expect(status.release?.number).toBe(2);
  });
});
