/**
 * Kiln's rolling replace of 10 containers beside Docker Swarm's own `docker service update` of
 * the same image change, on the same engine, measured in one run.
 *
 * Both sides: 10 instances of examples/hello-web (on kiln-local/node:20, made by
 * scripts/base-images.sh; nothing is pulled), v1 -> v2 (version.txt changes), 2 at a time,
 * start-first (new ones healthy before old ones stop), the same health settings:
 *
 *   Kiln:  rolling, maxSurge 2, maxUnavailable 0; http GET /healthz on the published port,
 *          intervalMs / timeoutMs / unhealthyThreshold / startPeriodMs as below, healthyThreshold 1
 *          (Docker's HEALTHCHECK has no success threshold: one success is healthy), no stability
 *          window; driven through the built CLI (`node packages/cli/dist/bin.js deploy -C <dir>`).
 *   Swarm: `docker service update --image … --no-resolve-image` on a service created with
 *          `--update-parallelism 2 --update-order start-first --update-delay 0s`, `--health-cmd`
 *          (busybox wget of /healthz inside the container) with the same interval, timeout,
 *          retries and start period, and `--update-monitor 1ms` (Kiln has no post-rollout watch;
 *          Swarm's default would add 5 s).
 *
 * Both use the images Kiln built (tagged for Swarm), and the v2 image is built before the clock
 * starts, so neither side builds while measured. Each side is measured ROUNDS times, alternating
 * (v1 -> v2, v2 -> v1, …; Kiln first in odd rounds, Swarm first in even ones, so that load from
 * elsewhere on the machine spreads over both), and the medians are compared; the target
 * is a ratio of at most TARGET_RATIO. Needs a Docker engine (DOCKER_HOST); when none answers,
 * prints a notice and returns. Swarm mode is initialised (`docker swarm init --advertise-addr
 * 127.0.0.1`) when the engine is not in it, and left again afterwards only then; the service is
 * always removed.
 */
import { spawn, spawnSync } from "node:child_process";
import { copyFile, mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const bin = path.join(root, "packages/cli/dist/bin.js");
const example = path.join(root, "examples/hello-web");
const SERVICE = "kiln-bench-swarm";
const SWARM_SERVICE = "kiln-bench-swarm";
const SWARM_IMAGE = "kiln-bench-swarm/hello-web";
const BASE_IMAGE = "kiln-local/node:20";
const COUNT = 10;
const PARALLELISM = 2;
const HEALTH = { intervalMs: 500, timeoutMs: 1000, unhealthyThreshold: 3, startPeriodMs: 2000 };
const STOP_GRACE_MS = 5000;
/** Each measured command is killed after this long (the whole bench must stay within ~3 minutes). */
const STEP_TIMEOUT_MS = 90_000;
/** Measured replacements per side; the medians are compared. */
const ROUNDS = 3;
/** The ratio Kiln / Swarm the issue asks for (issue 13: at most 0.8). */
const TARGET_RATIO = 0.8;

interface Result {
  code: number;
  ms: number;
  output: string;
}

function exec(command: string, args: string[], timeoutMs = STEP_TIMEOUT_MS): Promise<Result> {
  return new Promise((resolve) => {
    const started = performance.now();
    const child = spawn(command, args, { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, NO_COLOR: "1" } });
    let output = "";
    child.stdout.on("data", (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => (output += chunk.toString()));
    const timer = setTimeout(() => {
      output += `\n(killed after ${timeoutMs} ms)`;
      child.kill("SIGKILL");
    }, timeoutMs);
    child.on("error", (error) => {
      clearTimeout(timer);
      resolve({ code: -1, ms: performance.now() - started, output: error.message });
    });
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? -1, ms: performance.now() - started, output });
    });
  });
}

function docker(args: string[]): { code: number; stdout: string; stderr: string } {
  const result = spawnSync("docker", args, { encoding: "utf8", timeout: 60_000 });
  return { code: result.status ?? -1, stdout: (result.stdout ?? "").trim(), stderr: (result.stderr ?? "").trim() };
}

const lines = (text: string) => text.split("\n").map((line) => line.trim()).filter(Boolean);

function must(result: Result, what: string): Result {
  if (result.code !== 0) throw new Error(`${what} failed (exit ${result.code}):\n${result.output.trim().slice(-3000)}`);
  return result;
}

const kiln = (dir: string, args: string[]) => exec(process.execPath, [bin, ...args, "-C", dir]);

function kilnSpec(): string {
  return [
    `service: ${SERVICE}`,
    "provider: docker",
    "image:",
    "  dockerfile:",
    "    context: .",
    "    file: Dockerfile",
    `    args: { BASE_IMAGE: ${JSON.stringify(BASE_IMAGE)} }`,
    "instances:",
    `  count: ${COUNT}`,
    "  ports:",
    "    - { name: http, port: 8080 }",
    `  stopGracePeriodMs: ${STOP_GRACE_MS}`,
    "health:",
    "  http: { port: http, path: /healthz }",
    `  intervalMs: ${HEALTH.intervalMs}`,
    `  timeoutMs: ${HEALTH.timeoutMs}`,
    "  healthyThreshold: 1",
    `  unhealthyThreshold: ${HEALTH.unhealthyThreshold}`,
    `  startPeriodMs: ${HEALTH.startPeriodMs}`,
    "  stabilityWindowMs: 0",
    "rollout:",
    "  strategy: rolling",
    `  maxSurge: ${PARALLELISM}`,
    "  maxUnavailable: 0",
    "",
  ].join("\n");
}

/** Kiln's images of the bench service, oldest first. */
function kilnImages(): string[] {
  const out = docker(["images", "--no-trunc", "--filter", `label=dev.kiln.service=${SERVICE}`, "--format", "{{.CreatedAt}}\t{{.ID}}"]).stdout;
  return [...new Set(lines(out).sort().map((line) => line.split("\t")[1]!))];
}

function swarmTasks(): { image: string; state: string }[] {
  const out = docker(["service", "ps", SWARM_SERVICE, "--filter", "desired-state=running", "--format", "{{.Image}}\t{{.CurrentState}}"]).stdout;
  return lines(out).map((line) => {
    const [image, state] = line.split("\t");
    return { image: image ?? "", state: state ?? "" };
  });
}

async function waitUntil(check: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (check()) return true;
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  return check();
}

async function cleanup(dir: string | undefined, swarmInitialised: boolean): Promise<string[]> {
  const problems: string[] = [];
  if (docker(["service", "inspect", SWARM_SERVICE]).code === 0) {
    const removed = docker(["service", "rm", SWARM_SERVICE]);
    if (removed.code !== 0) problems.push(`docker service rm: ${removed.stderr}`);
  }
  // Swarm removes a service's containers asynchronously; they hold the images until gone.
  const swarmContainers = () => lines(docker(["ps", "-aq", "--filter", `label=com.docker.swarm.service.name=${SWARM_SERVICE}`]).stdout);
  if (!(await waitUntil(() => swarmContainers().length === 0, 30_000))) {
    const left = swarmContainers();
    if (left.length > 0) docker(["rm", "-f", ...left]);
  }
  const containers = lines(docker(["ps", "-aq", "--filter", `label=dev.kiln.service=${SERVICE}`]).stdout);
  if (containers.length > 0) docker(["rm", "-f", ...containers]);
  for (const tag of ["v1", "v2"]) docker(["image", "rm", `${SWARM_IMAGE}:${tag}`]);
  const images = kilnImages();
  if (images.length > 0) {
    const removed = docker(["rmi", "-f", ...images]);
    if (removed.code !== 0) problems.push(`docker rmi: ${removed.stderr}`);
  }
  if (swarmInitialised) {
    const left = docker(["swarm", "leave", "--force"]);
    if (left.code !== 0) problems.push(`docker swarm leave: ${left.stderr}`);
  }
  if (dir) await rm(dir, { recursive: true, force: true });
  return problems;
}

const seconds = (ms: number) => `${(ms / 1000).toFixed(2)} s`;

/** The median of some numbers (the mean of the middle two for an even count). */
function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

export async function run(): Promise<void> {
  const info = docker(["info", "--format", "{{.ServerVersion}}\t{{.Swarm.LocalNodeState}}\t{{.Swarm.ControlAvailable}}"]);
  if (info.code !== 0) {
    process.stdout.write("skipped: no Docker engine answers (docker info failed; npm run engine:start, then export DOCKER_HOST)\n");
    return;
  }
  const [engineVersion, swarmState, controlAvailable] = info.stdout.split("\t");
  if (swarmState === "active" && controlAvailable !== "true") {
    process.stdout.write("skipped: this engine is a Swarm worker, not a manager; services cannot be created here\n");
    return;
  }
  if (!existsSync(BASE_IMAGE)) {
    process.stdout.write(`${BASE_IMAGE} is missing: making it with scripts/base-images.sh (no pull)\n`);
    must(await exec("bash", [path.join(root, "scripts/base-images.sh")], 120_000), "scripts/base-images.sh");
  }

  let dir: string | undefined;
  let swarmInitialised = false;
  // A previous run that died may have left its service, containers or images behind.
  await cleanup(undefined, false);
  try {
    const workDir = await mkdtemp(path.join(os.tmpdir(), "kiln-bench-swarm-"));
    dir = workDir;
    for (const file of ["Dockerfile", "server.js", "package.json", ".dockerignore"]) await copyFile(path.join(example, file), path.join(dir, file));
    await writeFile(path.join(dir, "version.txt"), "v1\n");
    await writeFile(path.join(dir, "kiln.yaml"), kilnSpec());

    // Kiln: v1 deployed, v2 built (neither measured).
    must(await kiln(dir, ["deploy"]), "kiln deploy (v1)");
    await writeFile(path.join(dir, "version.txt"), "v2\n");
    must(await kiln(dir, ["build"]), "kiln build (v2)");
    const images = kilnImages();
    if (images.length !== 2) throw new Error(`expected Kiln's v1 and v2 images, found ${images.length}: ${images.join(", ")}`);
    const [v1, v2] = images as [string, string];
    for (const [id, tag] of [[v1, "v1"], [v2, "v2"]] as const) {
      const tagged = docker(["tag", id, `${SWARM_IMAGE}:${tag}`]);
      if (tagged.code !== 0) throw new Error(`docker tag ${tag}: ${tagged.stderr}`);
    }

    // Swarm: v1 running (not measured).
    if (swarmState !== "active") {
      const init = docker(["swarm", "init", "--advertise-addr", "127.0.0.1"]);
      if (init.code !== 0) throw new Error(`docker swarm init failed: ${init.stderr}`);
      swarmInitialised = true;
    }
    const healthFlags = [
      "--health-cmd",
      "wget -q -O /dev/null http://127.0.0.1:8080/healthz || exit 1",
      "--health-interval",
      `${HEALTH.intervalMs}ms`,
      "--health-timeout",
      `${HEALTH.timeoutMs}ms`,
      "--health-retries",
      String(HEALTH.unhealthyThreshold),
      "--health-start-period",
      `${HEALTH.startPeriodMs}ms`,
    ];
    must(
      await exec("docker", [
        "service",
        "create",
        "--detach=false",
        "--quiet",
        "--name",
        SWARM_SERVICE,
        "--replicas",
        String(COUNT),
        "--no-resolve-image",
        ...healthFlags,
        "--update-parallelism",
        String(PARALLELISM),
        "--update-order",
        "start-first",
        "--update-delay",
        "0s",
        "--update-monitor",
        "1ms",
        "--update-failure-action",
        "pause",
        "--stop-grace-period",
        `${STOP_GRACE_MS}ms`,
        `${SWARM_IMAGE}:v1`,
      ]),
      "docker service create (v1)",
    );
    const v1Tasks = swarmTasks();
    if (v1Tasks.length !== COUNT || !v1Tasks.every((task) => task.state.startsWith("Running"))) {
      throw new Error(`Swarm's v1 did not converge: ${JSON.stringify(v1Tasks)}`);
    }

    // Measured: ROUNDS replacements per side, alternating between the two versions.
    const kilnRuns: { ms: number; phases: Phases }[] = [];
    const swarmRuns: number[] = [];
    for (let round = 1; round <= ROUNDS; round++) {
      const version = round % 2 === 1 ? "v2" : "v1";
      const measureKiln = async () => {
        // The other version's image exists: Kiln finds it by its fingerprint and builds nothing.
        await writeFile(path.join(workDir, "version.txt"), `${version}\n`);
        const startedAt = Date.now();
        const run = must(await kiln(workDir, ["deploy", "--json"]), `kiln deploy (${version}, round ${round})`);
        kilnRuns.push({ ms: run.ms, phases: kilnPhases(run.output, startedAt, startedAt + run.ms) });
        const live = lines(docker(["ps", "--filter", `label=dev.kiln.service=${SERVICE}`, "--format", '{{.Label "dev.kiln.release"}}']).stdout);
        const release = String(round + 1);
        if (live.length !== COUNT || !live.every((label) => label === release)) throw new Error(`Kiln's release ${release} did not converge: releases ${live.join(",")}`);
      };
      const measureSwarm = async () => {
        const run = must(
          await exec("docker", ["service", "update", "--detach=false", "--quiet", "--no-resolve-image", "--image", `${SWARM_IMAGE}:${version}`, SWARM_SERVICE]),
          `docker service update (${version}, round ${round})`,
        );
        swarmRuns.push(run.ms);
        const updateState = docker(["service", "inspect", SWARM_SERVICE, "--format", "{{.UpdateStatus.State}}"]).stdout;
        const tasks = swarmTasks();
        if (updateState !== "completed" || tasks.length !== COUNT || !tasks.every((task) => task.image === `${SWARM_IMAGE}:${version}`)) {
          throw new Error(`Swarm's ${version} did not converge: update ${updateState}, tasks ${JSON.stringify(tasks)}`);
        }
      };
      if (round % 2 === 1) {
        await measureKiln();
        await measureSwarm();
      } else {
        await measureSwarm();
        await measureKiln();
      }
    }

    const kilnMs = median(kilnRuns.map((run) => run.ms));
    const swarmMs = median(swarmRuns);
    const ratio = kilnMs / swarmMs;
    const phase = (name: keyof Phases) => seconds(median(kilnRuns.map((run) => run.phases[name])));
    const batches = Math.ceil(COUNT / PARALLELISM);
    process.stdout.write(
      `engine ${engineVersion}; swarm ${swarmInitialised ? "initialised for this run" : "already active"}; ${COUNT} × hello-web on ${BASE_IMAGE}, v1 <-> v2, ${PARALLELISM} at a time, start-first; ${ROUNDS} rounds per side, alternating\n`,
    );
    process.stdout.write(
      `health (both): interval ${HEALTH.intervalMs} ms, timeout ${HEALTH.timeoutMs} ms, ${HEALTH.unhealthyThreshold} failures = unhealthy, start period ${HEALTH.startPeriodMs} ms, one success = healthy; ` +
        `Kiln: GET /healthz on the published port from the host; Swarm: wget /healthz inside the container\n`,
    );
    process.stdout.write(`Kiln driven through the built CLI (node packages/cli/dist/bin.js deploy -C <dir>; includes Node start-up and the fingerprint, no build)\n\n`);
    const rows = [
      [`Kiln: kiln deploy (rolling, maxSurge 2, maxUnavailable 0), median of ${ROUNDS}`, seconds(kilnMs)],
      [`Swarm: docker service update (--update-parallelism 2, start-first), median of ${ROUNDS}`, seconds(swarmMs)],
      [`ratio Kiln / Swarm (medians; target <= ${TARGET_RATIO.toFixed(2)})`, `${ratio.toFixed(2)} ${ratio <= TARGET_RATIO ? "(met)" : "(NOT met)"}`],
      [`  rounds, Kiln`, kilnRuns.map((run) => (run.ms / 1000).toFixed(2)).join(" ")],
      [`  rounds, Swarm`, swarmRuns.map((ms) => (ms / 1000).toFixed(2)).join(" ")],
      [`health floor without start probes: ${batches} batches × one ${HEALTH.intervalMs} ms interval`, seconds(batches * HEALTH.intervalMs)],
      ["Kiln's time, from its --json events (medians):", ""],
      ["  start-up, spec, fingerprint, plan, lock (until rollout.started)", phase("before")],
      ["  launch calls (docker create + start, per batch)", phase("launch")],
      ["  health gates (launched -> healthy)", phase("health")],
      ["  retire calls (docker stop + rm; the next batch needs their room: maxSurge 2 is in use)", phase("retire")],
      ["  other events, state, exit (after rollout.succeeded)", seconds(median(kilnRuns.map((run) => run.phases.other + run.phases.after)))],
    ];
    const width = Math.max(...rows.map((row) => row[0]!.length));
    for (const [label, value] of rows) process.stdout.write(`${label!.padEnd(width)}  ${value!.padStart(8)}\n`);
  } finally {
    const problems = await cleanup(dir, swarmInitialised);
    if (problems.length > 0) process.stdout.write(`cleanup problems:\n  ${problems.join("\n  ")}\n`);
  }
}

/**
 * Splits Kiln's rollout time by phase from its NDJSON events: the time since the previous event
 * is charged to the phase an event ends (launched: launch, healthy: health gate, retired: retire).
 */
/** Kiln's time by phase (milliseconds); see {@link kilnPhases}. */
interface Phases {
  before: number;
  launch: number;
  health: number;
  retire: number;
  other: number;
  after: number;
}

function kilnPhases(ndjson: string, startedAt: number, endedAt: number): Phases {
  const events = lines(ndjson)
    .filter((line) => line.startsWith("{"))
    .map((line) => JSON.parse(line) as { type: string; time: string })
    .map((event) => ({ type: event.type, at: Date.parse(event.time) }));
  const phases: Phases = { before: 0, launch: 0, health: 0, retire: 0, other: 0, after: 0 };
  const started = events.find((event) => event.type === "rollout.started");
  const succeeded = events.find((event) => event.type === "rollout.succeeded");
  if (!started || !succeeded) return phases;
  phases.before = started.at - startedAt;
  phases.after = endedAt - succeeded.at;
  let last = started.at;
  for (const event of events.filter((e) => e.at >= started.at && e.at <= succeeded.at && e !== started)) {
    const delta = event.at - last;
    last = event.at;
    if (event.type === "instance.launched") phases.launch += delta;
    else if (event.type === "instance.healthy") phases.health += delta;
    else if (event.type === "instance.retired") phases.retire += delta;
    else phases.other += delta;
  }
  return phases;
}

function existsSync(image: string): boolean {
  return docker(["image", "inspect", image]).code === 0;
}
