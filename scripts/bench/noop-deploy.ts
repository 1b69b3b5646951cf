/**
 * The cost of a no-op `kiln deploy` (nothing changed) on the 200 MB / 20,000-file bench context:
 * the real CLI, spawned as a user would run it, so Node start-up, spec loading, the stat-cached
 * fingerprint, the image lookup, the state read and one container list are all counted.
 *
 * Printed side by side in one run, each with Kiln's figure, the alternative's and the ratio
 * (issue 13's targets in brackets):
 *
 * - a cached `docker build` of the same context and Dockerfile (the docker CLI on PATH; the
 *   context is sent again and every step is cached) [no-op <= 0.02x];
 * - `git status` on the same tree: a git repository of it, committed once, whose folder lies
 *   outside the tree (GIT_DIR, so no `.git` enters the build context) and whose
 *   `info/exclude` holds the context's `.dockerignore` patterns, so both look at the same files
 *   [no-op <= 1.5x].
 *
 * Needs a Docker engine (DOCKER_HOST), kiln-local/busybox (scripts/base-images.sh; nothing is
 * pulled) and git.
 *
 * KILN_BENCH_COMPARE_BIN=<another build's packages/cli/dist/bin.js> (a checkout of an earlier
 * commit, built) adds its no-op deploy on the same project, the two interleaved run by run, so a
 * busy machine slows both alike: a before/after figure.
 */
import { spawnSync } from "node:child_process";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { CONTEXT_DIR, ensureContext, timeCachedDockerBuilds } from "./fingerprint.js";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const bin = path.join(root, "packages/cli/dist/bin.js");
const projectDir = path.join(os.tmpdir(), "kiln-bench-noop");
const SERVICE = "kiln-bench-noop";
const RUNS = 7;
/** Each cached docker build sends the whole context again (~20 s here): fewer of them. */
const BUILD_RUNS = 3;

const compareBin = process.env.KILN_BENCH_COMPARE_BIN;

function kiln(args: string[], cli = bin): { code: number; ms: number; output: string } {
  const started = performance.now();
  const result = spawnSync(process.execPath, [cli, ...args, "-C", projectDir], { encoding: "utf8", env: { ...process.env, NO_COLOR: "1" } });
  return { code: result.status ?? -1, ms: performance.now() - started, output: `${result.stdout}${result.stderr}` };
}

function docker(args: string[]): string {
  return spawnSync("docker", args, { encoding: "utf8" }).stdout.trim();
}

async function cleanup(): Promise<void> {
  const containers = docker(["ps", "-aq", "--filter", `label=dev.kiln.service=${SERVICE}`]).split("\n").filter(Boolean);
  if (containers.length > 0) docker(["rm", "-f", ...containers]);
  const images = docker(["images", "-q", "--filter", `label=dev.kiln.service=${SERVICE}`]).split("\n").filter(Boolean);
  if (images.length > 0) docker(["rmi", "-f", ...new Set(images)]);
  await rm(projectDir, { recursive: true, force: true });
}

const median = (values: readonly number[]): number => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;

/**
 * A git repository of the bench context, committed, kept outside it: `git status` with it, timed
 * `runs` times. The repository is made in a temporary folder and removed afterwards.
 * @returns the times in ms, or why it could not run
 */
async function timeGitStatus(runs: number): Promise<{ times: number[]; files: number } | { skipped: string }> {
  if (spawnSync("git", ["--version"], { stdio: "ignore" }).status !== 0) return { skipped: "git is not installed" };
  const gitDir = await mkdtemp(path.join(os.tmpdir(), "kiln-bench-git-"));
  const env = { ...process.env, GIT_DIR: gitDir, GIT_WORK_TREE: CONTEXT_DIR, GIT_AUTHOR_NAME: "bench", GIT_AUTHOR_EMAIL: "bench@localhost", GIT_COMMITTER_NAME: "bench", GIT_COMMITTER_EMAIL: "bench@localhost" };
  const git = (args: string[]) => {
    const result = spawnSync("git", args, { env, encoding: "utf8", maxBuffer: 64 * 1024 * 1024 });
    if (result.status !== 0) throw new Error(`git ${args.join(" ")} failed: ${result.stderr}`);
    return result.stdout;
  };
  try {
    git(["init", "-q"]);
    // The same files as the build: the context's .dockerignore patterns as git's excludes.
    await writeFile(path.join(gitDir, "info", "exclude"), await readFile(path.join(CONTEXT_DIR, ".dockerignore"), "utf8"));
    git(["add", "-A"]);
    git(["commit", "-q", "-m", "the bench context"]);
    const files = git(["ls-files"]).split("\n").filter(Boolean).length;
    git(["status", "--porcelain"]); // warm-up: the index is refreshed once
    const times: number[] = [];
    for (let index = 0; index < runs; index++) {
      const started = performance.now();
      const status = git(["status", "--porcelain"]);
      times.push(performance.now() - started);
      if (status.trim() !== "") throw new Error(`git status sees changes in a tree nothing changed:\n${status.slice(0, 2000)}`);
    }
    return { times, files };
  } finally {
    await rm(gitDir, { recursive: true, force: true });
  }
}

const formatMs = (value: number): string => (value >= 10_000 ? `${(value / 1000).toFixed(1)} s` : `${value.toFixed(0)} ms`);

export async function run(): Promise<void> {
  if (spawnSync("docker", ["info"], { stdio: "ignore" }).status !== 0) {
    process.stdout.write("skipped: no Docker engine answers (npm run engine:start, then export DOCKER_HOST)\n");
    return;
  }
  if (spawnSync("docker", ["image", "inspect", "kiln-local/busybox"], { stdio: "ignore" }).status !== 0) {
    process.stdout.write("skipped: kiln-local/busybox is missing (bash scripts/base-images.sh makes it; nothing is pulled)\n");
    return;
  }
  await ensureContext();
  await cleanup();
  await mkdir(projectDir, { recursive: true });
  await writeFile(
    path.join(projectDir, "kiln.yaml"),
    [
      `service: ${SERVICE}`,
      "image:",
      `  dockerfile: { context: ${JSON.stringify(CONTEXT_DIR)}, file: Dockerfile }`,
      "instances:",
      "  count: 1",
      '  command: ["sleep", "3600"]',
      "  stopGracePeriodMs: 1000",
      "",
    ].join("\n"),
  );
  try {
    const first = kiln(["deploy"]);
    if (first.code !== 0) throw new Error(`the first deploy failed (exit ${first.code}):\n${first.output}`);
    const warmup = kiln(["deploy"]); // writes the stat cache's first full entry set
    if (!/up to date/.test(warmup.output)) throw new Error(`the second deploy was not a no-op:\n${warmup.output}`);
    const times: number[] = [];
    const compareTimes: number[] = [];
    if (compareBin) kiln(["deploy"], compareBin); // its own stat cache file, written once
    for (let index = 0; index < RUNS; index++) {
      for (const cli of compareBin ? [bin, compareBin] : [bin]) {
        const noop = kiln(["deploy"], cli);
        if (noop.code !== 0 || !/up to date/.test(noop.output)) throw new Error(`a no-op deploy (${cli}) did something or failed:\n${noop.output}`);
        (cli === bin ? times : compareTimes).push(noop.ms);
      }
    }
    const help = kiln(["--help"]);
    const noopMs = median(times);
    const docker = await timeCachedDockerBuilds(BUILD_RUNS);
    const git = await timeGitStatus(RUNS);

    const rows: string[][] = [
      ["first deploy (build the context + 1 container)", formatMs(first.ms), "", ""],
      [`no-op deploy, median of ${RUNS}`, formatMs(noopMs), "", ""],
      [`no-op deploy, fastest of ${RUNS}`, formatMs(Math.min(...times)), "", ""],
    ];
    if (compareBin) rows.push([`no-op deploy of KILN_BENCH_COMPARE_BIN, median of ${RUNS}`, formatMs(median(compareTimes)), `${(noopMs / median(compareTimes)).toFixed(2)}x`, `this build / that one; ${compareBin}`]);
    if ("skipped" in docker) rows.push(["cached docker build", "-", "-", `skipped: ${docker.skipped}`]);
    else rows.push([`cached docker build, median of ${BUILD_RUNS}`, formatMs(median(docker.times)), `${(noopMs / median(docker.times)).toFixed(3)}x`, `no-op / docker build (target <= 0.02x); engine ${docker.engine}`]);
    if ("skipped" in git) rows.push(["git status", "-", "-", `skipped: ${git.skipped}`]);
    else rows.push([`git status, median of ${RUNS}`, formatMs(median(git.times)), `${(noopMs / median(git.times)).toFixed(1)}x`, `no-op / git status (target <= 1.5x); ${git.files} files tracked, same excludes`]);
    rows.push(["kiln --help (start-up floor)", formatMs(help.ms), "", ""]);
    const widths = [0, 1, 2].map((column) => Math.max(...rows.map((row) => row[column]!.length)));
    process.stdout.write(`${"".padEnd(widths[0]!)}  ${"time".padStart(widths[1]!)}  ${"ratio".padStart(widths[2]!)}\n`);
    for (const [label, value, ratio, note] of rows) {
      process.stdout.write(`${label!.padEnd(widths[0]!)}  ${value!.padStart(widths[1]!)}  ${ratio!.padStart(widths[2]!)}  ${note}`.trimEnd() + "\n");
    }
  } finally {
    await cleanup();
  }
}
