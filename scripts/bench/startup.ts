/**
 * Start-up of the `kiln` command beside a bare Node.js: `kiln validate` on examples/hello-web's
 * spec and `kiln --help` against `node -e 0`, each spawned as a user would run it, interleaved
 * (so a busy moment of the machine hits all three alike), median of several runs. Target (issue
 * 13): validate at most 3x node -e 0. Needs only the build; no engine.
 *
 * KILN_BENCH_COMPARE_BIN=<another build's packages/cli/dist/bin.js> adds that build's two commands
 * to the same interleaved rounds: a before/after figure.
 */
import { spawnSync } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const bin = path.join(root, "packages/cli/dist/bin.js");
const RUNS = 21;

interface Command {
  readonly label: string;
  readonly args: readonly string[];
}

const compareBin = process.env.KILN_BENCH_COMPARE_BIN;
const kilnCommands = (cli: string, suffix: string): Command[] => [
  { label: `kiln --help${suffix}`, args: [cli, "--help"] },
  { label: `kiln validate (examples/hello-web)${suffix}`, args: [cli, "validate", "-C", path.join(root, "examples/hello-web")] },
];

const COMMANDS: readonly Command[] = [
  { label: "node -e 0", args: ["-e", "0"] },
  ...kilnCommands(bin, ""),
  ...(compareBin ? kilnCommands(compareBin, ", KILN_BENCH_COMPARE_BIN") : []),
];

function timeOnce(args: readonly string[]): number {
  const started = performance.now();
  const result = spawnSync(process.execPath, args, { stdio: ["ignore", "ignore", "pipe"], encoding: "utf8", env: { ...process.env, NO_COLOR: "1" } });
  const elapsed = performance.now() - started;
  if (result.status !== 0) throw new Error(`node ${args.join(" ")} failed (exit ${result.status}): ${result.stderr}`);
  return elapsed;
}

const median = (values: readonly number[]): number => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;

export async function run(): Promise<void> {
  const times = COMMANDS.map(() => [] as number[]);
  // One warm-up round (file cache), then RUNS rounds, the commands interleaved.
  for (const command of COMMANDS) timeOnce(command.args);
  for (let round = 0; round < RUNS; round++) COMMANDS.forEach((command, index) => times[index]!.push(timeOnce(command.args)));
  const base = median(times[0]!);
  const rows = COMMANDS.map((command, index) => {
    const value = median(times[index]!);
    return [command.label, `${value.toFixed(0)} ms`, `${(value / base).toFixed(2)}x`, `min ${Math.min(...times[index]!).toFixed(0)} ms`];
  });
  const widths = [0, 1, 2, 3].map((column) => Math.max(...rows.map((row) => row[column]!.length)));
  process.stdout.write(`median of ${RUNS} runs each, interleaved; ratio against node -e 0 (target: kiln validate <= 3x)\n`);
  for (const row of rows) process.stdout.write(`${row[0]!.padEnd(widths[0]!)}  ${row[1]!.padStart(widths[1]!)}  ${row[2]!.padStart(widths[2]!)}  ${row[3]!.padStart(widths[3]!)}\n`);
  await Promise.resolve();
}
