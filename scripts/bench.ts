/**
 * Runs Kiln's benchmarks: every module in scripts/bench/ that exports `run(): Promise<void>`, one
 * after the other, in name order.
 *
 *   npm run bench                    # all of them (after building the packages)
 *   npm run bench -- fingerprint     # only those whose name contains one of the words given
 *
 * Each module prints its own figures to stdout.
 */
import { readdir } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

interface BenchModule {
  run(): Promise<void>;
}

const benchDir = path.join(path.dirname(fileURLToPath(import.meta.url)), "bench");
const filters = process.argv.slice(2).filter((arg) => !arg.startsWith("-"));

const available = (await readdir(benchDir))
  .filter((file) => /\.(ts|mts|js|mjs)$/.test(file) && !/\.(test|d)\.[mc]?[tj]s$/.test(file) && !file.startsWith("_"))
  .sort();
const names = available.map((file) => file.replace(/\.[mc]?[tj]s$/, ""));
const chosen = available.filter((_file, index) => filters.length === 0 || filters.some((filter) => names[index]?.includes(filter)));

if (chosen.length === 0) {
  process.stderr.write(`bench: nothing matches ${filters.join(" ")}; available: ${names.join(", ") || "(none)"}\n`);
  process.exit(2);
}

let failed = false;
for (const file of chosen) {
  const name = file.replace(/\.[mc]?[tj]s$/, "");
  process.stdout.write(`\n== bench: ${name} ==\n`);
  const started = performance.now();
  try {
    const module = (await import(pathToFileURL(path.join(benchDir, file)).href)) as Partial<BenchModule>;
    if (typeof module.run !== "function") throw new Error(`${file} does not export run(): Promise<void>`);
    await module.run();
    process.stdout.write(`== ${name}: done in ${((performance.now() - started) / 1000).toFixed(1)} s ==\n`);
  } catch (error) {
    failed = true;
    process.stderr.write(`bench ${name} failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  }
}
process.exitCode = failed ? 1 : 0;
