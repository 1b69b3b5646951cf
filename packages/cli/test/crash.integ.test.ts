/**
 * The crash-point test: a rolling rollout of 3 instances (maxSurge 1, maxUnavailable 0) from
 * release 1 to release 2, with the `kiln` process killed by SIGKILL at every journal step (the
 * CLI run by the test-only harness kiln-crash-at.ts, which passes `journalHooks.crashAt:
 * "<phase>:<verb>:<n>"` to createKiln), on the in-memory provider (driven through the CLI by
 * `KILN_PROVIDER_MODULE_MEMORY`) and on the real Docker engine. After each kill one more
 * `kiln deploy` (the built binary) must converge: exactly 3 running instances of the current release, which is release
 * 2; no instance, container or image that no release accounts for; and healthy capacity never below
 * count - maxUnavailable = 3, sampled throughout both runs.
 *
 * The crash points are not hard-coded: a normal v1 → v2 run is made first (at collection time, so
 * that each point becomes its own test) and its rollout's journal is read from the state file with
 * `journalCrashPoints`.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { journalCrashPoints, type RolloutRecord } from "@kilnjs/core";
import { requireDockerEngine } from "@kilnjs/testkit";
import {
  LABEL_SERVICE,
  MemoryApp,
  QUICK_HEALTH,
  Scratch,
  containersWith,
  describeResult,
  dockerClient,
  healthBlock,
  healthyContainers,
  imagesWith,
  jsonLines,
  kilnCrashingAt,
  kilnWith,
  randomSuffix,
  readTargetState,
  removeLabelled,
  replaceOnce,
  replaceTopLevelBlock,
  startSampler,
  type CommandResult,
  type SamplerReport,
  type StateDocument,
} from "./harness.js";

const COUNT = 3;
const MAX_UNAVAILABLE = 0;
/** The invariant: healthy capacity never below count - maxUnavailable. */
const FLOOR = COUNT - MAX_UNAVAILABLE;

/** What the test needs of one target, whatever the provider. */
interface CrashTarget {
  readonly dir: string;
  readonly service: string;
  /** Environment variables every `kiln` run of this target needs. */
  readonly env: NodeJS.ProcessEnv;
  /** Changes the build context so that the next deploy is release 2 with a new image. */
  toV2(): Promise<void>;
  /** Healthy capacity now. */
  capacity(): Promise<number>;
  /** Every instance of the service the provider knows (running or not). */
  instances(): Promise<Array<{ id: string; release: number | undefined; running: boolean }>>;
  /** The ids of every image the provider holds for the service. */
  imageIds(): Promise<string[]>;
  /** Removes what the target left in the provider and on disk. */
  dispose(): Promise<void>;
}

/** How the tests of one provider make targets. */
interface Provider {
  readonly name: string;
  readonly sampleEveryMs: number;
  /** A fresh target with release 1 serving 3 instances. */
  freshTarget(prefix: string): Promise<CrashTarget>;
}

function deploy(target: CrashTarget): Promise<CommandResult> {
  return kilnWith(target.dir, ["deploy", "--json"], { env: target.env, timeoutMs: 120_000 });
}

/** `kiln deploy`, killed by SIGKILL right after it writes the journal entry of `point`. */
function deployCrashingAt(target: CrashTarget, point: string): Promise<CommandResult> {
  return kilnCrashingAt(target.dir, point, ["deploy", "--json"], { env: target.env, timeoutMs: 120_000 });
}

async function deployOk(target: CrashTarget): Promise<CommandResult> {
  const result = await deploy(target);
  if (result.code !== 0) throw new Error(`kiln deploy of ${target.service} failed: ${describeResult(result)}`);
  return result;
}

async function stateOf(target: CrashTarget): Promise<StateDocument> {
  const state = await readTargetState(target.dir, target.service);
  if (!state) throw new Error(`${target.service} has no state file`);
  return state;
}

/** A normal v1 → v2 run: the crash points of its rollout to release 2, in the order they were written. */
async function crashPointsOf(provider: Provider): Promise<string[]> {
  const target = await provider.freshTarget("crash-base");
  try {
    await target.toV2();
    await deployOk(target);
    const rollout = (await stateOf(target)).rollouts.find((r) => r.toRelease === 2 && r.status === "succeeded");
    if (!rollout) throw new Error(`the baseline run of ${target.service} recorded no succeeded rollout to release 2`);
    // The state file holds the journal as core wrote it.
    return journalCrashPoints(rollout as unknown as Pick<RolloutRecord, "journal">);
  } finally {
    await target.dispose();
  }
}

/**
 * The test of one crash point: kill the deploy of v2 at `point`, deploy again, check convergence
 * and the capacity sampled throughout both runs.
 */
async function crashAndRecover(provider: Provider, point: string): Promise<void> {
  const target = await provider.freshTarget(`crash-${point.replace(/[^a-z0-9]+/g, "-")}`);
  try {
    expect(await target.capacity(), "release 1 serves 3 healthy instances before the crash").toBe(COUNT);
    await target.toV2();
    const sampler = startSampler(() => target.capacity(), provider.sampleEveryMs);
    let report!: SamplerReport;
    const runs = await (async () => {
      try {
        return { crashed: await deployCrashingAt(target, point), recovered: await deploy(target) };
      } finally {
        report = await sampler.stop();
      }
    })();
    const { crashed, recovered } = runs;

    // The first run died by SIGKILL right after writing the entry of `point`.
    expect(crashed.signal === "SIGKILL" || crashed.code === 137, `the deploy died by SIGKILL: ${describeResult(crashed)}`).toBe(true);
    const fingerprinted = jsonLines(crashed.stdout.slice(0, crashed.stdout.lastIndexOf("\n") + 1)).find((e) => e.type === "image.fingerprinted");
    expect(fingerprinted, describeResult(crashed)).toBeDefined();
    const v2Fingerprint = fingerprinted!.fingerprint as string;

    // The second run converged.
    expect(recovered.code, describeResult(recovered)).toBe(0);
    const events = jsonLines(recovered.stdout);
    expect(events.at(-1), describeResult(recovered)).toMatchObject({ type: "result", release: 2 });
    const recoveredEvent = events.find((e) => e.type === "rollout.recovered");
    expect(recoveredEvent, `the second deploy recovered the interrupted rollout: ${describeResult(recovered)}`).toBeDefined();

    const state = await stateOf(target);
    const interrupted = state.rollouts.find((r) => r.id === recoveredEvent!.rolloutId);
    expect(interrupted, "the interrupted rollout is in state").toBeDefined();
    const journal = interrupted!.journal.filter((e) => e.op !== "rollout.recover");
    expect(`${journal.at(-1)?.phase}:${journal.at(-1)?.step}`, "the crashed run's journal ends at the crash point").toBe(point);
    expect(interrupted!.status).toBe("aborted");
    expect(state.rollouts.filter((r) => r.status === "running"), "no rollout is left running").toEqual([]);
    expect(state.releases.filter((r) => r.status === "pending"), "no release is left pending").toEqual([]);
    expect(state.lease, "the lock is free").toBeUndefined();
    expect(state.currentRelease, "release 2 serves").toBe(2);
    const current = state.releases.find((r) => r.number === state.currentRelease)!;
    expect(current).toMatchObject({ status: "succeeded", fingerprint: v2Fingerprint, count: COUNT });

    const instances = await target.instances();
    expect(instances.filter((i) => i.running), `exactly ${COUNT} running instances: ${JSON.stringify(instances)}`).toHaveLength(COUNT);
    expect(instances.filter((i) => !i.running || i.release !== current.number), `every instance is a running one of release ${current.number}`).toEqual([]);

    const releaseImages = new Set(state.releases.flatMap((r) => [r.image.id, r.image.digest]));
    const images = await target.imageIds();
    expect(images.filter((id) => !releaseImages.has(id)), "every image of the service is some release's image").toEqual([]);
    expect(images).toContain(current.image.id);

    expect(report.samples, `the sampler ran throughout (${report.errors.length} errors: ${report.errors.slice(0, 3).join("; ")})`).toBeGreaterThanOrEqual(3);
    expect(Math.max(...report.values.map((v) => v.value)), "the sampler saw the surge (count + 1 healthy at some moment)").toBeGreaterThan(COUNT);
    expect(report.min, `healthy capacity never below ${FLOOR}; samples (ms: value): ${report.values.map((v) => `${v.at}:${v.value}`).join(" ")}`).toBeGreaterThanOrEqual(FLOOR);
  } finally {
    await target.dispose();
  }
}

// ---- the in-memory provider, through the CLI ----

const memoryRoot = await mkdtemp(path.join(tmpdir(), "kiln-crash-memory-"));

const memorySpec = (service: string) =>
  [
    `service: ${service}`,
    "provider: memory",
    "image:",
    "  dockerfile: { context: ., file: Dockerfile }",
    "instances:",
    `  count: ${COUNT}`,
    "  stopGracePeriodMs: 500",
    // No check: a running instance counts as healthy (after healthyThreshold rounds).
    "health:",
    "  intervalMs: 100",
    "  timeoutMs: 100",
    "  healthyThreshold: 2",
    "  unhealthyThreshold: 2",
    `rollout: { strategy: rolling, maxSurge: 1, maxUnavailable: ${MAX_UNAVAILABLE} }`,
    "",
  ].join("\n");

const memory: Provider = {
  name: "memory",
  sampleEveryMs: 10,
  async freshTarget(prefix) {
    const app = await MemoryApp.create(memoryRoot, `${prefix}-${randomSuffix()}`, memorySpec);
    const target: CrashTarget = {
      dir: app.dir,
      service: app.service,
      env: app.env,
      toV2: () => app.write("app.txt", "v2\n"),
      capacity: async () => (await app.cloud()).instances.filter((e) => e.instance.target.service === app.service && e.instance.state === "running").length,
      instances: async () =>
        (await app.cloud()).instances
          .filter((e) => e.instance.target.service === app.service)
          .map((e) => ({ id: e.instance.id, release: e.instance.release, running: e.instance.state === "running" })),
      imageIds: async () => (await app.cloud()).images.filter((e) => e.service === app.service).map((e) => e.ref.id),
      dispose: async () => {
        await rm(app.dir, { recursive: true, force: true });
        await rm(app.cloudFile, { force: true });
      },
    };
    await deployOk(target);
    return target;
  },
};

const memoryPoints = await crashPointsOf(memory);

// At file level, so that it runs whichever tests a filter selects.
afterAll(async () => {
  await rm(memoryRoot, { recursive: true, force: true });
});

describe("crash points on the in-memory provider (through the CLI)", () => {
  it("the baseline journal has intent and outcome of the build, of each of 3 launches and of each of 3 retirements", () => {
    expect(memoryPoints).toEqual(
      ["build:1", "launch:1", "terminate:1", "launch:2", "terminate:2", "launch:3", "terminate:3"].flatMap((step) => [`intent:${step}`, `outcome:${step}`]),
    );
  });

  it.each(memoryPoints)("SIGKILL at %s, then kiln deploy converges on release 2", (point) => crashAndRecover(memory, point));
});

// ---- the real Docker engine, with hello-web ----

const engine = await requireDockerEngine();
const docker = dockerClient();
const scratch = new Scratch();

const dockerProvider: Provider = {
  name: "docker",
  sampleEveryMs: 200,
  async freshTarget(prefix) {
    const service = scratch.service(prefix.slice(0, 40));
    const app = await scratch.helloWeb(service, (spec) =>
      replaceTopLevelBlock(replaceOnce(spec, "stopGracePeriodMs: 1000", "stopGracePeriodMs: 500"), "health", healthBlock({ ...QUICK_HEALTH, startPeriodMs: 1000 })),
    );
    const target: CrashTarget = {
      dir: app.dir,
      service,
      env: {},
      toV2: () => app.write("version.txt", "v2\n"),
      capacity: () => healthyContainers(docker, service),
      instances: async () =>
        (await containersWith(docker, `${LABEL_SERVICE}=${service}`)).map((c) => ({
          id: c.Id,
          release: c.Labels["dev.kiln.release"] === undefined ? undefined : Number(c.Labels["dev.kiln.release"]),
          running: c.State === "running",
        })),
      imageIds: async () => (await imagesWith(docker, `${LABEL_SERVICE}=${service}`)).map((i) => i.Id),
      dispose: async () => {
        const problems = await removeLabelled(docker, `${LABEL_SERVICE}=${service}`);
        await rm(app.dir, { recursive: true, force: true });
        if (problems.length > 0) throw new Error(`cleanup of ${service}: ${problems.join("; ")}`);
      },
    };
    await deployOk(target);
    return target;
  },
};

let dockerPoints: string[] = [];
if (engine) {
  try {
    dockerPoints = await crashPointsOf(dockerProvider);
  } catch (error) {
    await scratch.cleanUp(docker);
    throw error;
  }
}

describe.skipIf(!engine)("crash points on the real Docker engine (hello-web)", () => {
  afterAll(async () => {
    const problems = await scratch.cleanUp(docker);
    for (const service of scratch.services) {
      const left = [...(await containersWith(docker, `${LABEL_SERVICE}=${service}`)), ...(await imagesWith(docker, `${LABEL_SERVICE}=${service}`))];
      if (left.length > 0) problems.push(`${service}: ${left.length} container(s)/image(s) left after cleanup`);
    }
    if (problems.length > 0) throw new Error(`cleanup problems:\n${problems.join("\n")}`);
  });

  it("journals the same steps as the in-memory provider", () => {
    expect(dockerPoints).toEqual(memoryPoints);
  });

  it.each(dockerPoints)("SIGKILL at %s, then kiln deploy converges on release 2", (point) => crashAndRecover(dockerProvider, point));
});
