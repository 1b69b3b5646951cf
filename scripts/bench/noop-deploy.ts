/**
 * The cost of a no-op `kiln deploy` (nothing changed) on the 200 MB / 20,000-file bench context:
 * the real CLI, spawned as a user would run it, so Node start-up, spec loading, the stat-cached
 * fingerprint, the image lookup, the state read and one container list are all counted.
 * Needs a Docker engine (DOCKER_HOST) and kiln-local/busybox (scripts/base-images.sh).
 */
import { spawnSync } from "node:child_process";
import { mkdir, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { CONTEXT_DIR, ensureContext } from "./fingerprint.js";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const bin = path.join(root, "packages/cli/dist/bin.js");
const projectDir = path.join(os.tmpdir(), "kiln-bench-noop");
const SERVICE = "kiln-bench-noop";
const RUNS = 5;

function kiln(args: string[]): { code: number; ms: number; output: string } {
  const started = performance.now();
  const result = spawnSync(process.execPath, [bin, ...args, "-C", projectDir], { encoding: "utf8", env: { ...process.env, NO_COLOR: "1" } });
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

export async function run(): Promise<void> {
  if (spawnSync("docker", ["info"], { stdio: "ignore" }).status !== 0) {
    process.stdout.write("skipped: no Docker engine answers (npm run engine:start, then export DOCKER_HOST)\n");
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
    for (let index = 0; index < RUNS; index++) {
      const noop = kiln(["deploy"]);
      if (noop.code !== 0 || !/up to date/.test(noop.output)) throw new Error(`a no-op deploy did something or failed:\n${noop.output}`);
      times.push(noop.ms);
    }
    const help = kiln(["--help"]);
    times.sort((a, b) => a - b);
    const rows = [
      ["first deploy (build 174 MB context + 1 container)", `${first.ms.toFixed(0)} ms`],
      [`no-op deploy, median of ${RUNS}`, `${times[Math.floor(RUNS / 2)]!.toFixed(0)} ms`],
      [`no-op deploy, fastest of ${RUNS}`, `${times[0]!.toFixed(0)} ms`],
      ["kiln --help (start-up floor)", `${help.ms.toFixed(0)} ms`],
    ];
    const width = Math.max(...rows.map((row) => row[0]!.length));
    for (const [label, value] of rows) process.stdout.write(`${label!.padEnd(width)}  ${value!.padStart(9)}\n`);
  } finally {
    await cleanup();
  }
}
