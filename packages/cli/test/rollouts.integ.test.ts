/**
 * Rollouts you can trust, on a real Docker engine through the built `kiln` binary: health gates
 * (grace period, deadline, stability window), automatic undo and the rollback target, the lock
 * between two concurrent deploys, Ctrl-C during a health wait, and the blue-green and canary
 * strategies, each completing and each rolled back by a failing gate.
 *
 * Every test deploys a temp copy of examples/hello-web under a unique service name, with short
 * health timings; what the engine runs afterwards is checked through dockerode.
 */
import { afterAll, describe, expect, it } from "vitest";
import { waitFor } from "@kilnjs/core";
import { requireDockerEngine } from "@kilnjs/testkit";
import {
  LABEL_RELEASE,
  LABEL_SERVICE,
  QUICK_HEALTH,
  Scratch,
  completeJsonLines,
  containersWith,
  describeResult,
  dockerClient,
  healthBlock,
  httpGet,
  imagesWith,
  jsonLines,
  readTargetState,
  replaceOnce,
  replaceTopLevelBlock,
  startKiln,
  startedAtOf,
  foundOrNot,
  withEnv,
  type App,
  type CommandResult,
  type HealthSettings,
  type HistoryDocument,
  type LockDocument,
} from "./harness.js";

const engine = await requireDockerEngine();

type Event = Record<string, unknown> & { type: string };
type EventInstance = { id: string; name: string; release?: number };

const STOP_GRACE_MS = 500;

describe.skipIf(!engine)("rollouts on a real Docker engine, through the CLI", () => {
  const docker = dockerClient();
  const scratch = new Scratch();
  const timings: Record<string, number> = {};

  afterAll(async () => {
    const problems = await scratch.cleanUp(docker);
    for (const service of scratch.services) {
      const left = [...(await containersWith(docker, `${LABEL_SERVICE}=${service}`)), ...(await imagesWith(docker, `${LABEL_SERVICE}=${service}`))];
      if (left.length > 0) problems.push(`${service}: ${left.length} container(s)/image(s) left after cleanup`);
    }
    process.stderr.write(`rollouts.integ timings (ms): ${JSON.stringify(timings)}\n`);
    if (problems.length > 0) throw new Error(`cleanup problems:\n${problems.join("\n")}`);
  });

  const timed = (name: string, body: () => Promise<void>) => async () => {
    const startedAt = Date.now();
    try {
      await body();
    } finally {
      timings[name] = Date.now() - startedAt;
    }
  };

  /** A hello-web copy with quick health timings, a 500 ms stop grace period, and `edit` applied. */
  function helloWeb(prefix: string, edit: (spec: string) => string = (spec) => spec, health: HealthSettings = QUICK_HEALTH): Promise<App> {
    return scratch.helloWeb(scratch.service(prefix), (spec) =>
      edit(replaceTopLevelBlock(replaceOnce(spec, "stopGracePeriodMs: 1000", `stopGracePeriodMs: ${STOP_GRACE_MS}`), "health", healthBlock(health))),
    );
  }

  /** `kiln deploy --json`: the result and its events. */
  async function deploy(app: App, args: string[] = []): Promise<{ result: CommandResult; events: Event[] }> {
    const result = await app.kiln(["deploy", "--json", ...args]);
    return { result, events: jsonLines(result.stdout) };
  }

  async function deployOk(app: App): Promise<Event[]> {
    const { result, events } = await deploy(app);
    expect(result.code, describeResult(result)).toBe(0);
    return events;
  }

  const ofRelease = (service: string, release: number) => containersWith(docker, `${LABEL_SERVICE}=${service}`, `${LABEL_RELEASE}=${release}`);
  const allOf = (service: string) => containersWith(docker, `${LABEL_SERVICE}=${service}`);

  /** Every container of `ids` runs, answers /healthz 200 and /version `version` on its published port. */
  async function expectServing(ids: readonly string[], version: string): Promise<void> {
    for (const id of ids) {
      const inspected = await docker.getContainer(id).inspect();
      expect(inspected.State.Running, `${inspected.Name} runs`).toBe(true);
      const binding = inspected.NetworkSettings.Ports["8080/tcp"]?.[0];
      expect(binding, `${inspected.Name} publishes 8080/tcp`).toBeDefined();
      const port = Number(binding!.HostPort);
      expect((await httpGet("127.0.0.1", port, "/healthz")).status, `${inspected.Name} /healthz`).toBe(200);
      expect(JSON.parse((await httpGet("127.0.0.1", port, "/version")).body), `${inspected.Name} /version`).toMatchObject({ version });
    }
  }

  const instanceOf = (event: Event) => event.instance as EventInstance;
  const eventsOf = (events: Event[], type: string, release?: number) => events.filter((e) => e.type === type && (release === undefined || instanceOf(e).release === release));

  /**
   * Replays the events of a rollout from `oldRelease` (count `count`, all serving) to `newRelease`:
   * at every retirement, new healthy + old not yet retiring must stay at or above `floor`.
   */
  function lowestServingAtRetirements(events: Event[], oldRelease: number, newRelease: number, count: number): number {
    let oldServing = count;
    let newHealthy = 0;
    let lowest = Number.POSITIVE_INFINITY;
    for (const event of events) {
      if (event.type === "instance.healthy" && instanceOf(event).release === newRelease) newHealthy += 1;
      if (event.type === "instance.retiring" && instanceOf(event).release === oldRelease) {
        oldServing -= 1;
        lowest = Math.min(lowest, oldServing + newHealthy);
      }
    }
    return lowest;
  }

  async function lockIsFree(app: App): Promise<void> {
    const lock = await app.json<LockDocument>(["lock", "status"], "lock");
    expect(lock.lock, `lock status: ${JSON.stringify(lock)}`).toBeNull();
  }

  it(
    "slow start inside the grace period succeeds; the same app with no grace period and a short deadline fails and the old release keeps serving",
    timed("slow-start", async () => {
      // maxSurge 3: all new instances wait out their start delay together (the gate is what is tested).
      const app = await helloWeb("roll-slow", (spec) => replaceOnce(spec, "  maxSurge: 1\n", "  maxSurge: 3\n"));
      await deployOk(app);
      expect((await ofRelease(app.service, 1)).map((c) => c.State)).toEqual(["running", "running", "running"]);

      // v2 answers 503 for 2.5 s; a 4 s start period covers it.
      await app.write("version.txt", "v2\n");
      await app.editSpec((spec) => replaceTopLevelBlock(withEnv(spec, { START_DELAY_MS: "2500" }), "health", healthBlock({ ...QUICK_HEALTH, startPeriodMs: 4000 })));
      const slow = await deployOk(app);
      expect(slow.at(-1)).toMatchObject({ type: "result", outcome: "deployed", release: 2 });
      const healthy2 = eventsOf(slow, "instance.healthy", 2);
      expect(healthy2).toHaveLength(3);
      for (const event of healthy2) expect(event.durationMs as number, "the app really was slow: healthy only after its 2.5 s delay").toBeGreaterThanOrEqual(2500);
      const v2 = (await ofRelease(app.service, 2)).map((c) => c.Id).sort();
      expect(v2).toHaveLength(3);
      await expectServing(v2, "v2");
      const v2Started = await startedAtOf(docker, v2);

      // v3: the same slow app, no grace period, and a deadline that the arithmetic allows
      // (0 + 2 × (300 + 500) + 0 = 1600 ≤ 2000) but that is shorter than its 2.5 s delay. A high
      // unhealthyThreshold leaves the deadline as what decides.
      await app.write("version.txt", "v3\n");
      await app.editSpec((spec) =>
        replaceTopLevelBlock(spec, "health", healthBlock({ ...QUICK_HEALTH, startPeriodMs: 0, unhealthyThreshold: 10, deadlineMs: 2000 })),
      );
      const plan = await app.kiln(["plan"]);
      expect(plan.code, describeResult(plan)).toBe(0);
      expect(plan.stdout, "the plan shows the deadline that was set").toMatch(/deadline 2000 ms/);
      const { result, events } = await deploy(app);
      timings["slow-start: failing deploy"] = result.elapsedMs;
      expect(result.code, describeResult(result)).toBe(1);
      expect(events.at(-1)).toMatchObject({ type: "error", code: "HEALTH_CHECK_FAILED" });
      const unhealthy = eventsOf(events, "instance.unhealthy", 3);
      expect(unhealthy.length, describeResult(result)).toBeGreaterThanOrEqual(1);
      expect(String(unhealthy[0]!.reason), "the deadline failed it").toMatch(/deadline/);
      expect(events.find((e) => e.type === "rollout.rolled-back")).toMatchObject({ release: 3, restoredRelease: 2 });

      const after = await allOf(app.service);
      expect(after.filter((c) => c.Labels[LABEL_RELEASE] !== "2"), "no container of release 3 is left").toEqual([]);
      expect(after.map((c) => c.Id).sort(), "release 2's containers are the same ones").toEqual(v2);
      expect(await startedAtOf(docker, v2), "and were never restarted").toEqual(v2Started);
      await expectServing(v2, "v2");
      const history = await app.json<HistoryDocument>(["history"], "history");
      expect(history.currentRelease).toBe(2);
      expect(history.releases.map((r) => [r.number, r.status])).toEqual([
        [3, "failed"],
        [2, "succeeded"],
        [1, "succeeded"],
      ]);
    }),
  );

  it(
    "a flapping app (healthy, then exits after 2.5 s and is restarted) is not accepted: exit 1, HEALTH_CHECK_FAILED, the old release serving",
    timed("flapping", async () => {
      const app = await helloWeb("roll-flap");
      await deployOk(app);
      const v1 = (await ofRelease(app.service, 1)).map((c) => c.Id).sort();
      expect(v1).toHaveLength(3);
      const v1Started = await startedAtOf(docker, v1);

      await app.write("version.txt", "v2\n");
      await app.editSpec((spec) => replaceTopLevelBlock(withEnv(spec, { EXIT_AFTER_MS: "2500" }), "health", healthBlock({ ...QUICK_HEALTH, stabilityWindowMs: 5000 })));
      const { result, events } = await deploy(app);
      timings["flapping: failing deploy"] = result.elapsedMs;
      expect(result.code, describeResult(result)).toBe(1);
      expect(events.at(-1)).toMatchObject({ type: "error", code: "HEALTH_CHECK_FAILED" });
      expect(eventsOf(events, "instance.healthy", 2), "a flapping instance is never healthy").toEqual([]);
      expect(eventsOf(events, "instance.unhealthy", 2).length).toBeGreaterThanOrEqual(1);
      expect(events.find((e) => e.type === "rollout.failed")).toMatchObject({ release: 2, code: "HEALTH_CHECK_FAILED" });
      expect(events.find((e) => e.type === "rollout.rolled-back")).toMatchObject({ release: 2, restoredRelease: 1 });

      const after = await allOf(app.service);
      expect(after.filter((c) => c.Labels[LABEL_RELEASE] !== "1"), "no container of release 2 is left").toEqual([]);
      expect(after.map((c) => c.Id).sort()).toEqual(v1);
      expect(await startedAtOf(docker, v1)).toEqual(v1Started);
      await expectServing(v1, "v1");
      const history = await app.json<HistoryDocument>(["history"], "history");
      expect(history.currentRelease).toBe(1);
      expect(history.releases[0]).toMatchObject({ number: 2, status: "failed", error: { code: "HEALTH_CHECK_FAILED" } });
    }),
  );

  it(
    "release 1 good, 2 failed, 3 failing: the undo of 3 restores release 1, and kiln rollback never picks a failed release",
    timed("rollback-target", async () => {
      const app = await helloWeb("roll-back");
      await deployOk(app);
      const v1 = (await ofRelease(app.service, 1)).map((c) => c.Id).sort();
      expect(v1).toHaveLength(3);
      const v1Started = await startedAtOf(docker, v1);

      for (const [release, version] of [
        [2, "v2"],
        [3, "v3"],
      ] as const) {
        await app.write("version.txt", `${version}\n`);
        await app.editSpec((spec) => withEnv(spec, { HEALTHZ_STATUS: "500" }));
        const { result, events } = await deploy(app);
        expect(result.code, describeResult(result)).toBe(1);
        expect(events.find((e) => e.type === "rollout.failed")).toMatchObject({ release, code: "HEALTH_CHECK_FAILED" });
        expect(events.find((e) => e.type === "rollout.rolled-back"), `the undo of release ${release} restores release 1`).toMatchObject({ release, restoredRelease: 1 });
        const after = await allOf(app.service);
        expect(after.map((c) => c.Id).sort(), `after release ${release}: release 1's containers, and nothing else`).toEqual(v1);
      }
      expect(await startedAtOf(docker, v1)).toEqual(v1Started);
      await expectServing(v1, "v1");

      const history = await app.json<HistoryDocument>(["history"], "history");
      expect(history.currentRelease).toBe(1);
      expect(history.releases.map((r) => [r.number, r.status])).toEqual([
        [3, "failed"],
        [2, "failed"],
        [1, "succeeded"],
      ]);

      // Nothing succeeded before release 1: there is nothing to roll back to; never a failed release.
      const rollback = await app.kiln(["rollback", "--json"]);
      const rollbackEvents = jsonLines(rollback.stdout);
      if (rollback.code === 0) {
        const created = rollbackEvents.find((e) => e.type === "release.created");
        const succeeded = history.releases.filter((r) => r.status === "succeeded").map((r) => r.number);
        expect(succeeded, `kiln rollback went to ${JSON.stringify(created)}`).toContain(created?.rollbackOf);
      } else {
        expect(rollback.code, describeResult(rollback)).toBe(2);
        expect(rollbackEvents.at(-1)).toMatchObject({ type: "error", code: "NO_ROLLBACK_TARGET" });
      }
      expect(rollbackEvents.filter((e) => e.type === "release.created" && [2, 3].includes(e.rollbackOf as number)), "a failed release is never a target").toEqual([]);

      for (const failed of [2, 3]) {
        const named = await app.kiln(["rollback", String(failed), "--json"]);
        expect(named.code, describeResult(named)).toBe(2);
        expect(jsonLines(named.stdout).at(-1)).toMatchObject({ type: "error", code: "RELEASE_NOT_FOUND" });
      }
      const final = await app.json<HistoryDocument>(["history"], "history");
      expect(final.currentRelease).toBe(1);
      expect(final.releases.map((r) => r.number), "the refused rollbacks created no release").toEqual([3, 2, 1]);
      expect((await allOf(app.service)).map((c) => c.Id).sort()).toEqual(v1);
    }),
  );

  it(
    "two concurrent kiln deploy of one target: exactly one runs, the other exits 4 naming the holder's pid; one release",
    timed("concurrent-deploys", async () => {
      // A first deploy that takes a few seconds (the app answers 503 for 2 s), so that the second
      // one certainly starts while the first holds the lock.
      const app = await helloWeb("roll-lock", (spec) => withEnv(spec, { START_DELAY_MS: "2000" }), { ...QUICK_HEALTH, startPeriodMs: 3000 });
      const first = startKiln(app.dir, ["deploy", "--json"]);
      try {
        await waitFor(async () => foundOrNot((await readTargetState(app.dir, app.service))?.lease?.holder.pid === first.pid ? true : undefined), {
          description: "the first deploy's lease in the state file",
          timeoutMs: 30_000,
          minDelayMs: 50,
          maxDelayMs: 50,
        });
        expect(first.exited(), "the first deploy still runs").toBe(false);
        const second = await app.kiln(["deploy"]);
        const firstStillRan = !first.exited();
        expect(second.code, describeResult(second)).toBe(4);
        expect(second.stderr).toContain("TARGET_LOCKED");
        expect(second.stderr, "the message names the holder's pid").toContain(`pid ${first.pid}`);
        expect(firstStillRan, "the second deploy failed at once, while the first still ran").toBe(true);
      } finally {
        const result = await first.done;
        expect(result.code, describeResult(result)).toBe(0);
        expect(jsonLines(result.stdout).at(-1)).toMatchObject({ type: "result", outcome: "deployed", release: 1 });
      }
      const history = await app.json<HistoryDocument>(["history"], "history");
      expect(history.releases.map((r) => [r.number, r.status]), "only one release").toEqual([[1, "succeeded"]]);
      expect((await allOf(app.service)).map((c) => c.State)).toEqual(["running", "running", "running"]);
      await lockIsFree(app);
    }),
  );

  it(
    "Ctrl-C during the health wait: exit 130, the lock released, release 1's containers serve, none of release 2 left",
    timed("ctrl-c", async () => {
      const app = await helloWeb("roll-int");
      await deployOk(app);
      const v1 = (await ofRelease(app.service, 1)).map((c) => c.Id).sort();
      expect(v1).toHaveLength(3);
      const v1Started = await startedAtOf(docker, v1);

      await app.write("version.txt", "v2\n");
      await app.editSpec((spec) => replaceTopLevelBlock(withEnv(spec, { START_DELAY_MS: "120000" }), "health", healthBlock({ ...QUICK_HEALTH, startPeriodMs: 120_000 })));
      const run = startKiln(app.dir, ["deploy", "--json"]);
      const launched = await waitFor(async () => foundOrNot(completeJsonLines(run.stdout()).find((e) => e.type === "instance.launched" && instanceOf(e).release === 2)), {
        description: "an instance.launched event of release 2",
        timeoutMs: 60_000,
        minDelayMs: 50,
        maxDelayMs: 50,
      }).catch(async (error: unknown) => {
        run.kill("SIGKILL");
        throw new Error(`${String(error)}\n${describeResult(await run.done)}`);
      });
      expect(run.exited()).toBe(false);
      const interruptedAt = Date.now();
      run.kill("SIGINT");
      const result = await run.done;
      timings["ctrl-c: from SIGINT to exit"] = Date.now() - interruptedAt;
      expect(result.code, describeResult(result)).toBe(130);
      const events = jsonLines(result.stdout);
      expect(events.at(-1)).toMatchObject({ type: "error", code: "ABORTED" });
      expect(eventsOf(events, "instance.healthy", 2), "the SIGINT came during the health wait").toEqual([]);
      expect(eventsOf(events, "instance.retired", 2).map((e) => instanceOf(e).id)).toContain(instanceOf(launched).id);

      await lockIsFree(app);
      const after = await allOf(app.service);
      expect(after.filter((c) => c.Labels[LABEL_RELEASE] !== "1"), "no container of release 2 is left").toEqual([]);
      expect(after.map((c) => c.Id).sort()).toEqual(v1);
      expect(await startedAtOf(docker, v1)).toEqual(v1Started);
      await expectServing(v1, "v1");
      const history = await app.json<HistoryDocument & { rollouts: Array<{ toRelease: number; status: string }> }>(["history"], "history");
      expect(history.currentRelease).toBe(1);
      expect(history.rollouts.find((r) => r.toRelease === 2)).toMatchObject({ status: "aborted" });
      expect(history.releases.find((r) => r.number === 2)?.status, "release 2 did not succeed").not.toBe("succeeded");
    }),
  );

  it(
    "blue-green completes (all 3 new healthy before any old one retires) and a failing gate leaves the old set untouched",
    timed("blue-green", async () => {
      const app = await helloWeb("roll-bg", (spec) => replaceTopLevelBlock(spec, "rollout", "rollout: { strategy: blue-green, bakeTimeMs: 1000 }"));
      await deployOk(app);
      const v1 = (await ofRelease(app.service, 1)).map((c) => c.Id).sort();
      expect(v1).toHaveLength(3);

      await app.write("version.txt", "v2\n");
      const events = await deployOk(app);
      expect(events.at(-1)).toMatchObject({ type: "result", outcome: "deployed", release: 2 });
      expect(eventsOf(events, "instance.launched", 2)).toHaveLength(3);
      const healthyAt = events.flatMap((e, index) => (e.type === "instance.healthy" && instanceOf(e).release === 2 ? [index] : []));
      const retiringAt = events.flatMap((e, index) => (e.type === "instance.retiring" && instanceOf(e).release === 1 ? [index] : []));
      expect(healthyAt).toHaveLength(3);
      expect(retiringAt).toHaveLength(3);
      expect(Math.max(...healthyAt), "every new instance is healthy before any old one retires").toBeLessThan(Math.min(...retiringAt));
      const v2 = (await ofRelease(app.service, 2)).map((c) => c.Id).sort();
      expect((await allOf(app.service)).map((c) => c.Id).sort()).toEqual(v2);
      expect(v2).toHaveLength(3);
      await expectServing(v2, "v2");
      const v2Started = await startedAtOf(docker, v2);

      await app.write("version.txt", "v3\n");
      await app.editSpec((spec) => withEnv(spec, { HEALTHZ_STATUS: "500" }));
      const failed = await deploy(app);
      expect(failed.result.code, describeResult(failed.result)).toBe(1);
      expect(failed.events.at(-1)).toMatchObject({ type: "error", code: "HEALTH_CHECK_FAILED" });
      expect(failed.events.find((e) => e.type === "rollout.rolled-back")).toMatchObject({ release: 3, restoredRelease: 2 });
      expect(eventsOf(failed.events, "instance.retiring").filter((e) => instanceOf(e).release !== 3), "no old instance was touched").toEqual([]);
      expect(eventsOf(failed.events, "instance.launched").filter((e) => instanceOf(e).release !== 3), "nothing of release 2 was relaunched").toEqual([]);
      expect((await allOf(app.service)).map((c) => c.Id).sort(), "the old set: the same containers, nothing else").toEqual(v2);
      expect(await startedAtOf(docker, v2), "never restarted").toEqual(v2Started);
      await expectServing(v2, "v2");
    }),
  );

  it(
    "canary completes through [1, 50%] of 4 and a failing gate rolls back after the first canary instance only",
    timed("canary", async () => {
      const app = await helloWeb("roll-can", (spec) =>
        replaceTopLevelBlock(
          // The example's staging environment has 1 instance, for which these steps are invalid.
          replaceTopLevelBlock(replaceOnce(spec, "  count: 3\n", "  count: 4\n"), "environments", ""),
          "rollout",
          'rollout:\n  strategy: canary\n  steps:\n    - { instances: 1, holdMs: 800 }\n    - { instances: "50%", holdMs: 800 }',
        ),
      );
      await deployOk(app);
      const v1 = (await ofRelease(app.service, 1)).map((c) => c.Id).sort();
      expect(v1).toHaveLength(4);

      await app.write("version.txt", "v2\n");
      const events = await deployOk(app);
      expect(events.at(-1)).toMatchObject({ type: "result", outcome: "deployed", release: 2 });
      // The launches of release 2 come in steps of 1, 1 (to 50%), then 2 (the implied 100%).
      const steps: number[] = [];
      let previous = "";
      for (const event of events) {
        if (event.type === "instance.launched" && instanceOf(event).release === 2) {
          if (previous === "instance.launched") steps[steps.length - 1]! += 1;
          else steps.push(1);
        }
        if (event.type.startsWith("instance.")) previous = event.type;
      }
      expect(steps, "canary steps 1, 50% of 4, then the rest").toEqual([1, 1, 2]);
      const firstRetiring = events.findIndex((e) => e.type === "instance.retiring");
      const firstHealthy = events.findIndex((e) => e.type === "instance.healthy" && instanceOf(e).release === 2);
      expect(firstHealthy, "surge-first: the first canary is healthy before any old instance retires").toBeLessThan(firstRetiring);
      expect(lowestServingAtRetirements(events, 1, 2, 4), "healthy capacity never below count - maxUnavailable = 4").toBeGreaterThanOrEqual(4);
      const v2 = (await ofRelease(app.service, 2)).map((c) => c.Id).sort();
      expect(v2).toHaveLength(4);
      expect((await allOf(app.service)).map((c) => c.Id).sort()).toEqual(v2);
      await expectServing(v2, "v2");
      const v2Started = await startedAtOf(docker, v2);

      await app.write("version.txt", "v3\n");
      await app.editSpec((spec) => withEnv(spec, { HEALTHZ_STATUS: "500" }));
      const failed = await deploy(app);
      expect(failed.result.code, describeResult(failed.result)).toBe(1);
      expect(failed.events.at(-1)).toMatchObject({ type: "error", code: "HEALTH_CHECK_FAILED" });
      expect(eventsOf(failed.events, "instance.launched"), "only the first canary instance was ever launched").toHaveLength(1);
      expect(eventsOf(failed.events, "instance.launched", 3)).toHaveLength(1);
      expect(failed.events.find((e) => e.type === "rollout.rolled-back")).toMatchObject({ release: 3, restoredRelease: 2 });
      expect(eventsOf(failed.events, "instance.retiring").filter((e) => instanceOf(e).release !== 3), "no old instance was touched").toEqual([]);
      expect((await allOf(app.service)).map((c) => c.Id).sort(), "the old 4: the same containers, nothing else").toEqual(v2);
      expect(await startedAtOf(docker, v2)).toEqual(v2Started);
      await expectServing(v2, "v2");
    }),
  );
});
