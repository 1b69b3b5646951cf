/**
 * Orchestration cost of a rolling rollout on the in-memory provider, for 10, 100 and 1,000
 * instances (maxSurge "10%", maxUnavailable 0): what Kiln itself spends (CPU, memory, provider
 * calls) to replace every instance, with the waiting taken out.
 *
 * For each size, in a fresh temp dir with its own state and a fresh in-memory provider: deploy v1
 * (not measured), change the build context's file, then measure the v2 rollout (`kiln.deploy`
 * through the library: fingerprint, plan, build, journal, batches, health gates, state writes):
 * CPU time (process.cpuUsage, user + system), wall time, peak RSS and heap above the baseline
 * (sampled every 20 ms, and once more at the end), and the provider calls it made.
 *
 * Health: an http check answered by the memory provider's own probe (no sockets), interval 100 ms,
 * healthyThreshold 1; every instance is healthy at once, so each batch's gate passes on its first
 * probe round, taken right after the launch: no gate sleeps, and the waiting floor is 0 ms.
 *
 * A warm-up rollout of 10 instances runs first (not reported) so that JIT compilation and module
 * loading are not charged to the first row.
 */
import { mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import v8 from "node:v8";
import { runInNewContext } from "node:vm";
import { createKiln, type SpecInput } from "@kilnjs/core";
import { createMemoryProvider, type CallCounts } from "@kilnjs/testkit";

const SIZES = [10, 100, 1_000] as const;
const REPS = 5;
/** Rollouts in a row for the history section. */
const HISTORY_ROLLOUTS = 8;
/** Sizes for the fixed-surge section (kept small: its cost is quadratic). */
const FIXED_SURGE_SIZES = [50, 100, 200, 400] as const;
const INTERVAL_MS = 100;
const HEALTHY_THRESHOLD = 1;
const SAMPLE_MS = 20;
const MB = 1024 * 1024;
/** A rollout of 1,000 instances must finish well inside this, or the bench fails. */
const RUN_TIMEOUT_MS = 60_000;

/** `global.gc`, from `--expose-gc` or, failing that, by turning the flag on at run time. */
function findGc(): { gc: (() => void) | undefined; how: string } {
  const existing = (globalThis as { gc?: () => void }).gc;
  if (typeof existing === "function") return { gc: existing, how: "global.gc (--expose-gc)" };
  try {
    v8.setFlagsFromString("--expose-gc");
    const gc = runInNewContext("gc") as unknown;
    if (typeof gc === "function") return { gc: gc as () => void, how: "gc enabled at run time (v8.setFlagsFromString)" };
  } catch {
    // fall through
  }
  return { gc: undefined, how: "no gc available: baselines include garbage, peaks are rough" };
}

function spec(count: number, maxSurge: number | string = "10%"): SpecInput {
  return {
    service: "bench-orch",
    provider: "memory",
    instances: { count, ports: [{ name: "http", port: 8080 }], stopGracePeriodMs: 0 },
    health: { http: { port: "http", path: "/healthz" }, intervalMs: INTERVAL_MS, timeoutMs: 100, healthyThreshold: HEALTHY_THRESHOLD, unhealthyThreshold: 3 },
    rollout: { strategy: "rolling", maxSurge, maxUnavailable: 0 },
  };
}

interface Measured {
  instances: number;
  batches: number;
  wallMs: number;
  cpuMs: number;
  peakRssMb: number;
  peakHeapMb: number;
  calls: CallCounts;
  events: number;
  stateBytes: number;
  journalEntries: number;
}

const diffCalls = (after: CallCounts, before: CallCounts): CallCounts =>
  Object.fromEntries(Object.entries(after).map(([key, value]) => [key, value - before[key as keyof CallCounts]])) as CallCounts;

/**
 * Deploys v1 of `count` instances (not measured), then `rollouts` more versions one after the
 * other, each measured; all in one fresh temp dir with its own state and provider.
 */
async function measureSeries(count: number, gc: (() => void) | undefined, options: { maxSurge?: number | string; rollouts?: number } = {}): Promise<Measured[]> {
  const rollouts = options.rollouts ?? 1;
  const dir = await mkdtemp(path.join(os.tmpdir(), `kiln-bench-orch-${count}-`));
  try {
    await writeFile(path.join(dir, "Dockerfile"), "FROM kiln-local/busybox\nCOPY . /app\n");
    await writeFile(path.join(dir, "app.txt"), "version 1\n");
    const provider = createMemoryProvider();
    let events = 0;
    const kiln = createKiln({ providers: { memory: provider }, dataDir: path.join(dir, ".kiln"), onEvent: () => void (events += 1) });
    const specInput = spec(count, options.maxSurge);
    const stateFile = path.join(dir, ".kiln", "state", "bench-orch@default.json");
    try {
      const first = await kiln.deploy({ spec: specInput, baseDir: dir });
      if (first.release.number !== 1 || provider.live.size !== count) throw new Error(`v1 of ${count} did not deploy (${provider.live.size} live)`);

      const results: Measured[] = [];
      for (let version = 2; version <= rollouts + 1; version++) {
        await writeFile(path.join(dir, "app.txt"), `version ${version}\n`);
        const callsBefore = { ...provider.calls };
        events = 0;
        gc?.();
        gc?.();
        const baseRss = process.memoryUsage.rss();
        const baseHeap = process.memoryUsage().heapUsed;
        let peakRss = baseRss;
        let peakHeap = baseHeap;
        const sample = () => {
          const usage = process.memoryUsage();
          peakRss = Math.max(peakRss, usage.rss);
          peakHeap = Math.max(peakHeap, usage.heapUsed);
        };
        const sampler = setInterval(sample, SAMPLE_MS);
        const timeout = AbortSignal.timeout(RUN_TIMEOUT_MS);
        const cpuStart = process.cpuUsage();
        const started = performance.now();
        let result;
        try {
          result = await kiln.deploy({ spec: specInput, baseDir: dir, signal: timeout });
        } finally {
          clearInterval(sampler);
        }
        const wallMs = performance.now() - started;
        const cpu = process.cpuUsage(cpuStart);
        sample();

        const live = [...provider.live.values()];
        if (result.release.number !== version || live.length !== count || live.some((instance) => instance.release !== version)) {
          throw new Error(`rollout ${version} of ${count} did not converge: ${live.length} live, releases ${[...new Set(live.map((i) => i.release))].join(",")}`);
        }
        const plan = result.plan?.rollout;
        results.push({
          instances: count,
          batches: plan?.action === "replace" ? plan.batches.length : 0,
          wallMs,
          cpuMs: (cpu.user + cpu.system) / 1000,
          peakRssMb: (peakRss - baseRss) / MB,
          peakHeapMb: (peakHeap - baseHeap) / MB,
          calls: diffCalls(provider.calls, callsBefore),
          events,
          stateBytes: (await stat(stateFile)).size,
          journalEntries: result.rollout?.journal?.length ?? 0,
        });
      }
      return results;
    } finally {
      await kiln.close();
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Per size, the run whose CPU time is the median of `reps` fresh runs; the sizes interleaved so that JIT warm-up and noise spread evenly. */
async function medians(sizes: readonly number[], reps: number, gc: (() => void) | undefined): Promise<Measured[]> {
  const runs = new Map<number, Measured[]>(sizes.map((size) => [size, []]));
  for (let rep = 0; rep < reps; rep++) {
    for (const size of sizes) runs.get(size)!.push(...(await measureSeries(size, gc)));
  }
  return sizes.map((size) => {
    const sorted = runs.get(size)!.sort((a, b) => a.cpuMs - b.cpuMs);
    return sorted[Math.floor(sorted.length / 2)]!;
  });
}

function printTable(header: string[], rows: string[][]): void {
  const all = [header, ...rows];
  const widths = header.map((_, column) => Math.max(...all.map((row) => (row[column] ?? "").length)));
  const format = (row: string[]) => row.map((cell, column) => (column === 0 ? cell.padEnd(widths[column]!) : cell.padStart(widths[column]!))).join("  ");
  process.stdout.write(`${format(header)}\n${widths.map((width) => "-".repeat(width)).join("  ")}\n`);
  for (const row of rows) process.stdout.write(`${format(row)}\n`);
}

const total = (calls: CallCounts) => Object.values(calls).reduce((sum, value) => sum + value, 0);
const perInstanceUs = (r: Measured) => (r.cpuMs * 1000) / r.instances;

export async function run(): Promise<void> {
  const { gc, how } = findGc();
  process.stdout.write(`rolling rollout v1 -> v2 on the in-memory provider, maxSurge 10%, maxUnavailable 0; Kiln driven through the library (createKiln + deploy)\n`);
  process.stdout.write(`health: http check answered by the memory provider's probe, intervalMs ${INTERVAL_MS}, healthyThreshold ${HEALTHY_THRESHOLD}; memory: ${how}\n`);
  process.stdout.write(`each row: the run with the median CPU time of ${REPS} fresh runs (new temp dir, state and provider each), sizes interleaved, after one warm-up run of each\n\n`);

  for (const size of SIZES) await measureSeries(size, gc); // warm-up, not reported
  const results = await medians(SIZES, REPS, gc);

  printTable(
    ["instances", "batches", "wall ms", "CPU ms", "CPU µs/inst", "peak heap MB", "peak RSS MB", "list calls", "probe calls", "calls/inst", "events", "journal", "state KB"],
    results.map((r) => [
      String(r.instances),
      String(r.batches),
      r.wallMs.toFixed(0),
      r.cpuMs.toFixed(0),
      perInstanceUs(r).toFixed(0),
      r.peakHeapMb.toFixed(1),
      r.peakRssMb.toFixed(1),
      String(r.calls.list),
      String(r.calls.probe),
      (total(r.calls) / r.instances).toFixed(2),
      String(r.events),
      String(r.journalEntries),
      (r.stateBytes / 1024).toFixed(0),
    ]),
  );
  process.stdout.write(
    `waiting floor: ${results.map((r) => `${r.instances}: ${r.batches} batches × ${HEALTHY_THRESHOLD - 1} sleeps × ${INTERVAL_MS} ms = 0 ms`).join("; ")} ` +
      `(each gate passes on its first probe round, taken right after the launch; were every instance to need one more round: batches × ${INTERVAL_MS} ms = ${results.map((r) => `${r.batches * INTERVAL_MS} ms`).join(" / ")})\n`,
  );
  const [small, mid, big] = results as [Measured, Measured, Measured];
  const ratio = perInstanceUs(big) / perInstanceUs(mid);
  const marginal = (a: Measured, b: Measured) => ((b.cpuMs - a.cpuMs) * 1000) / (b.instances - a.instances);
  const verdict = ratio <= 1.5 ? "stays roughly flat or falls: linear growth (a fixed cost dominates below 1,000)" : ratio <= 3 ? "rises: faster than linear" : "rises steeply: super-linear";
  process.stdout.write(
    `CPU per instance 100 -> 1,000: ${perInstanceUs(mid).toFixed(0)} µs -> ${perInstanceUs(big).toFixed(0)} µs (× ${ratio.toFixed(2)}): ${verdict}; ` +
      `marginal CPU per added instance: ${marginal(small, mid).toFixed(0)} µs (10 -> 100), ${marginal(mid, big).toFixed(0)} µs (100 -> 1,000)\n`,
  );
  process.stdout.write(`peak heap 100 -> 1,000: ${mid.peakHeapMb.toFixed(1)} -> ${big.peakHeapMb.toFixed(1)} MB (× ${(big.peakHeapMb / mid.peakHeapMb).toFixed(1)} for × 10 instances)\n`);

  // Beyond the issue's table: the two ways the cost does grow faster than the work.
  process.stdout.write(`\nhistory: ${HISTORY_ROLLOUTS} rollouts of 1,000 instances one after the other in one project (maxSurge 10%)\n`);
  const history = await measureSeries(1_000, gc, { rollouts: HISTORY_ROLLOUTS });
  printTable(
    ["rollout", "CPU ms", "wall ms", "state KB"],
    history.map((r, index) => [`v${index + 2}`, r.cpuMs.toFixed(0), r.wallMs.toFixed(0), (r.stateBytes / 1024).toFixed(0)]),
  );
  const firstH = history[0]!;
  const lastH = history.at(-1)!;
  process.stdout.write(
    `the same rollout costs × ${(lastH.cpuMs / firstH.cpuMs).toFixed(1)} CPU at v${history.length + 1} as at v2: the state file grows by ~${((lastH.stateBytes - firstH.stateBytes) / (history.length - 1) / 1024).toFixed(0)} KB per rollout (never trimmed) and is parsed and rewritten whole for every journal entry\n`,
  );

  process.stdout.write(`\nfixed maxSurge 1 (the spec's default): one batch per instance\n`);
  const fixed: Measured[] = [];
  for (const count of FIXED_SURGE_SIZES) fixed.push(...(await measureSeries(count, gc, { maxSurge: 1 })));
  printTable(
    ["instances", "batches", "wall ms", "CPU ms", "CPU µs/inst", "journal", "state KB"],
    fixed.map((r) => [String(r.instances), String(r.batches), r.wallMs.toFixed(0), r.cpuMs.toFixed(0), perInstanceUs(r).toFixed(0), String(r.journalEntries), (r.stateBytes / 1024).toFixed(0)]),
  );
  const f0 = fixed[0]!;
  const f1 = fixed.at(-1)!;
  process.stdout.write(
    `CPU per instance ${f0.instances} -> ${f1.instances}: × ${(perInstanceUs(f1) / perInstanceUs(f0)).toFixed(1)} for × ${f1.instances / f0.instances} instances: ` +
      `${perInstanceUs(f1) / perInstanceUs(f0) > 1.5 ? "super-linear (journal entries × state size both grow with the count)" : "roughly linear"}\n`,
  );
}
