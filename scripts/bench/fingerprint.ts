/**
 * Benchmark of build fingerprints on a large build context: ~200 MB in 20,000 files (mixed sizes,
 * nested folders, deterministic pseudo-random content), of which a few folders and `*.log` are
 * excluded by `.dockerignore`.
 *
 * Prints: a cold fingerprint (no cache), a first run that writes the stat cache, a warm run served
 * by the cache, and, when a Docker engine answers (`docker info`, DOCKER_HOST from the environment),
 * the time of a fully cached `docker build` of the same context for comparison.
 *
 * The context is generated once into `$TMPDIR/kiln-bench-context` and reused while its marker file
 * matches this generator's version.
 */
import { spawn } from "node:child_process";
import { mkdir, readFile, rm, utimes, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fingerprintBuild, shortFingerprint, type FingerprintResult } from "../../packages/core/src/fingerprint/fingerprint.js";
import { seededRandom } from "../../packages/testkit/src/faults.js";

export const CONTEXT_DIR = path.join(os.tmpdir(), "kiln-bench-context");
const MARKER_FILE = path.join(CONTEXT_DIR, ".kiln-bench-marker.json");
const CACHE_FILE = path.join(os.tmpdir(), "kiln-bench-cache", "fingerprint-bench.stat-cache");
const GENERATOR_VERSION = 2;
const FILE_COUNT = 20_000;
const SEED = 0x6b696c6e; // "kiln"
/** All generated files get this mtime, as after a checkout long ago (keeps the racy window out of the warm run). */
const FIXED_MTIME = new Date("2024-01-01T00:00:00Z");
const IMAGE_TAG = "kiln-bench/fingerprint:latest";
const MB = 1024 * 1024;

/** testkit's seeded PRNG (mulberry32) as 32-bit integers: the same seed gives the same context everywhere. */
function createRandom(seed: number): () => number {
  const next = seededRandom(seed);
  return () => next() * 4294967296;
}

/** A size drawn from a mix: many small files, some medium, a few large; ~10 KB on average. */
function drawSize(random: () => number): number {
  const pick = random() % 1000;
  if (pick < 700) return 200 + (random() % 4_000); // 70%: ~2 KB (sources)
  if (pick < 960) return 4_000 + (random() % 12_000); // 26%: ~10 KB
  if (pick < 998) return 20_000 + (random() % 160_000); // 3.8%: ~100 KB (assets)
  return 500_000 + (random() % 2_000_000); // 0.2%: ~1.5 MB (bundles, images)
}

function fill(buffer: Buffer, random: () => number): void {
  const words = Math.floor(buffer.length / 4);
  for (let index = 0; index < words; index++) buffer.writeUInt32LE(random(), index * 4);
  for (let index = words * 4; index < buffer.length; index++) buffer[index] = random() & 0xff;
}

/** Where file number `index` goes: included sources, or one of the excluded folders / patterns. */
function relPathOf(index: number, random: () => number): string {
  const bucket = index % 20;
  if (bucket === 0) return `node_modules/pkg${random() % 200}/lib/f${index}.js`; // excluded folder
  if (bucket === 1) return `.cache/build/${random() % 50}/f${index}.bin`; // excluded folder
  if (bucket === 2 && index % 40 === 2) return `logs/f${index}.log`; // excluded by **/*.log
  return `src/m${random() % 40}/d${random() % 25}/f${index}.${["ts", "js", "json", "css", "png"][random() % 5]}`;
}

const DOCKERIGNORE = "node_modules/\n.cache\n**/*.log\n.kiln-bench-marker.json\n";
const DOCKERFILE = "FROM kiln-local/busybox\nCOPY . /ctx\n";

export async function ensureContext(): Promise<{ generatedMs?: number }> {
  try {
    const marker = JSON.parse(await readFile(MARKER_FILE, "utf8")) as { version?: number; files?: number };
    if (marker.version === GENERATOR_VERSION && marker.files === FILE_COUNT) return {};
  } catch {
    // No marker (or an unreadable one): generate the context.
  }
  const started = performance.now();
  process.stdout.write(`generating ${FILE_COUNT} files in ${CONTEXT_DIR} …\n`);
  await rm(CONTEXT_DIR, { recursive: true, force: true });
  await mkdir(CONTEXT_DIR, { recursive: true });
  const random = createRandom(SEED);
  const madeDirs = new Set<string>();
  const written: string[] = [];
  let bytes = 0;
  const pending: Promise<void>[] = [];
  for (let index = 0; index < FILE_COUNT; index++) {
    const relPath = relPathOf(index, random);
    const size = drawSize(random);
    const buffer = Buffer.allocUnsafe(size);
    fill(buffer, random);
    bytes += size;
    const file = path.join(CONTEXT_DIR, relPath);
    const dir = path.dirname(file);
    if (!madeDirs.has(dir)) {
      await mkdir(dir, { recursive: true });
      madeDirs.add(dir);
    }
    written.push(file);
    pending.push(writeFile(file, buffer));
    if (pending.length >= 64) await Promise.all(pending.splice(0));
  }
  await Promise.all(pending);
  await writeFile(path.join(CONTEXT_DIR, ".dockerignore"), DOCKERIGNORE);
  await writeFile(path.join(CONTEXT_DIR, "Dockerfile"), DOCKERFILE);
  written.push(path.join(CONTEXT_DIR, ".dockerignore"), path.join(CONTEXT_DIR, "Dockerfile"));
  for (let index = 0; index < written.length; index += 256) {
    await Promise.all(written.slice(index, index + 256).map((file) => utimes(file, FIXED_MTIME, FIXED_MTIME)));
  }
  await writeFile(MARKER_FILE, JSON.stringify({ version: GENERATOR_VERSION, files: FILE_COUNT, bytes }));
  return { generatedMs: performance.now() - started };
}

/**
 * Times `runs` fully cached `docker build`s of the bench context (after one warm-up build that
 * fills the cache), with the docker CLI on PATH and DOCKER_HOST; the image is removed afterwards.
 * @returns the times in ms and the engine's version, or why it could not run
 */
export async function timeCachedDockerBuilds(runs: number): Promise<{ times: number[]; engine: string } | { skipped: string }> {
  const info = await exec("docker", ["info", "--format", "{{.ServerVersion}}"]);
  if (info.code !== 0) return { skipped: "no Docker engine answers (docker info failed)" };
  if ((await exec("docker", ["image", "inspect", "kiln-local/busybox"])).code !== 0) return { skipped: "kiln-local/busybox missing (bash scripts/base-images.sh)" };
  const build = (): Promise<{ code: number; output: string }> => exec("docker", ["build", "-q", "-t", IMAGE_TAG, "-f", path.join(CONTEXT_DIR, "Dockerfile"), CONTEXT_DIR]);
  try {
    const warmup = await build();
    if (warmup.code !== 0) throw new Error(`docker build failed: ${warmup.output.trim().slice(-2000)}`);
    const times: number[] = [];
    for (let index = 0; index < runs; index++) {
      const started = performance.now();
      const result = await build();
      times.push(performance.now() - started);
      if (result.code !== 0) throw new Error(`docker build failed: ${result.output.trim().slice(-2000)}`);
    }
    return { times, engine: info.output.trim() };
  } finally {
    await exec("docker", ["image", "rm", "-f", IMAGE_TAG]);
  }
}

function exec(command: string, args: string[]): Promise<{ code: number; output: string }> {
  return new Promise((resolve) => {
    const child = spawn(command, args, { stdio: ["ignore", "pipe", "pipe"], env: process.env });
    let output = "";
    child.stdout.on("data", (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => (output += chunk.toString()));
    child.on("error", (error) => resolve({ code: -1, output: error.message }));
    child.on("close", (code) => resolve({ code: code ?? -1, output }));
  });
}

interface Row {
  step: string;
  files: string;
  size: string;
  time: string;
  rate: string;
  note: string;
}

function printTable(rows: Row[]): void {
  const header: Row = { step: "step", files: "files", size: "MB read", time: "time", rate: "rate", note: "note" };
  const all = [header, ...rows];
  const keys = Object.keys(header) as Array<keyof Row>;
  const widths = keys.map((key) => Math.max(...all.map((row) => row[key].length)));
  const rightAligned = new Set<keyof Row>(["files", "size", "time", "rate"]);
  const format = (row: Row): string =>
    keys
      .map((key, index) => (rightAligned.has(key) ? row[key].padStart(widths[index] ?? 0) : row[key].padEnd(widths[index] ?? 0)))
      .join("  ")
      .trimEnd();
  process.stdout.write(`${format(header)}\n${widths.map((width) => "-".repeat(width)).join("  ")}\n`);
  for (const row of rows) process.stdout.write(`${format(row)}\n`);
}

const ms = (value: number): string => (value >= 10_000 ? `${(value / 1000).toFixed(1)} s` : `${value.toFixed(0)} ms`);

function fingerprintRow(step: string, result: FingerprintResult, note: string): Row {
  const seconds = result.durationMs / 1000;
  const rate =
    result.bytesHashed > 0
      ? `${(result.bytesHashed / MB / seconds).toFixed(0)} MB/s`
      : `${Math.round(result.fileCount / seconds).toLocaleString("en-US")} files/s`;
  return {
    step,
    files: String(result.fileCount),
    size: (result.bytesHashed / MB).toFixed(1),
    time: ms(result.durationMs),
    rate,
    note: `${note}${note ? "; " : ""}${result.cacheHits} cache hits`,
  };
}

export async function run(): Promise<void> {
  const { generatedMs } = await ensureContext();
  if (generatedMs !== undefined) process.stdout.write(`generated in ${ms(generatedMs)}\n`);
  const options = { contextDir: CONTEXT_DIR, dockerfilePath: path.join(CONTEXT_DIR, "Dockerfile") };
  const rows: Row[] = [];

  const cold = await fingerprintBuild(options);
  rows.push(fingerprintRow("cold, no cache", cold, ""));
  await rm(CACHE_FILE, { force: true });
  const first = await fingerprintBuild({ ...options, cacheFile: CACHE_FILE });
  rows.push(fingerprintRow("first, writes cache", first, ""));
  const warm = await fingerprintBuild({ ...options, cacheFile: CACHE_FILE });
  rows.push(fingerprintRow("warm, with cache", warm, ""));
  if (first.fingerprint !== cold.fingerprint || warm.fingerprint !== cold.fingerprint) {
    throw new Error(`fingerprints differ between runs: ${cold.fingerprint} ${first.fingerprint} ${warm.fingerprint}`);
  }

  const docker = await timeCachedDockerBuilds(1);
  if ("skipped" in docker) {
    rows.push({ step: "docker build, cached", files: "-", size: "-", time: "-", rate: "-", note: `skipped: ${docker.skipped}` });
  } else {
    const elapsed = docker.times[0]!;
    rows.push({
      step: "docker build, cached",
      files: String(cold.fileCount),
      size: (cold.totalBytes / MB).toFixed(1),
      time: ms(elapsed),
      rate: `${(cold.totalBytes / MB / (elapsed / 1000)).toFixed(0)} MB/s`,
      note: `engine ${docker.engine}; context sent again, every step cached`,
    });
  }

  process.stdout.write(
    `context: ${CONTEXT_DIR}: ${cold.fileCount} files in the build (${(cold.totalBytes / MB).toFixed(1)} MB), fingerprint ${shortFingerprint(cold.fingerprint)}\n\n`,
  );
  printTable(rows);
}
