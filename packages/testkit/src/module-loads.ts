/**
 * Which modules a Node.js process loads: for tests that prove a command or a call leaves a heavy
 * dependency (a cloud SDK, dockerode) unloaded. A check of what is loaded, not of time, so it
 * holds on a slow or busy machine.
 * @module
 */
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

/**
 * Module hooks run on the loader's own thread (`module.register`): every module resolved by an
 * `import` or `import()` is appended to the file named in `data.out`, synchronously, so nothing is
 * lost when the process exits.
 */
const HOOKS = `import { appendFileSync } from "node:fs";
let out;
export function initialize(data) { out = data.out; }
export async function resolve(specifier, context, next) {
  const result = await next(specifier, context);
  appendFileSync(out, result.url + "\\n");
  return result;
}
`;

/**
 * Preloaded with `--import`: registers {@link HOOKS}, and at exit appends every CommonJS module in
 * `require.cache` (what ES module hooks do not see: modules a CommonJS module requires).
 */
const PRELOAD = `import { register, createRequire } from "node:module";
import { appendFileSync } from "node:fs";
import { pathToFileURL } from "node:url";
const out = process.env.KILN_TRACE_MODULES_FILE;
register(new URL("./hooks.mjs", import.meta.url), { data: { out } });
process.on("exit", () => {
  const files = Object.keys(createRequire(import.meta.url).cache);
  appendFileSync(out, files.map((file) => pathToFileURL(file).href + "\\n").join(""));
});
`;

/** What {@link runTracingModules} saw. */
export interface TracedRun {
  /** The exit code (`null` when a signal ended the process). */
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
  /** Absolute paths of every module file the process loaded (ES modules and CommonJS), sorted, without duplicates; `node:` built-ins left out. */
  readonly files: readonly string[];
  /** The npm packages those files belong to (`zod`, `@aws-sdk/client-ec2`), by their `node_modules` folder, sorted. */
  readonly packages: readonly string[];
}

/** Options of {@link runTracingModules}. */
export interface TraceOptions {
  /** The working folder. @defaultValue process.cwd() */
  readonly cwd?: string;
  /** The environment. @defaultValue process.env */
  readonly env?: NodeJS.ProcessEnv;
  /** Kills the process after this long, in milliseconds. @defaultValue 60000 */
  readonly timeoutMs?: number;
}

/** The package a module file belongs to, by its last `node_modules` folder; `undefined` for other files. */
export function packageOfFile(file: string): string | undefined {
  const parts = file.split(/[\\/]/);
  const at = parts.lastIndexOf("node_modules");
  if (at === -1 || at + 1 >= parts.length) return undefined;
  const first = parts[at + 1]!;
  return first.startsWith("@") && at + 2 < parts.length ? `${first}/${parts[at + 2]}` : first;
}

/**
 * Runs `node <args>` (the current `process.execPath`) with module tracing, asynchronously (so a
 * server in the calling process can answer it), and reports every module it loaded: ES modules
 * through module hooks (`module.register`), CommonJS ones from `require.cache` at exit.
 *
 * @example
 * ```ts
 * const run = await runTracingModules(["packages/cli/dist/bin.js", "--help"]);
 * expect(run.packages).not.toContain("dockerode");
 * ```
 */
export async function runTracingModules(args: readonly string[], options: TraceOptions = {}): Promise<TracedRun> {
  const dir = await mkdtemp(path.join(tmpdir(), "kiln-trace-modules-"));
  try {
    const out = path.join(dir, "modules.txt");
    await writeFile(path.join(dir, "hooks.mjs"), HOOKS);
    await writeFile(path.join(dir, "preload.mjs"), PRELOAD);
    await writeFile(out, "");
    const { code, stdout, stderr } = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
      execFile(
        process.execPath,
        ["--import", pathToFileURL(path.join(dir, "preload.mjs")).href, ...args],
        { cwd: options.cwd, env: { ...(options.env ?? process.env), KILN_TRACE_MODULES_FILE: out }, timeout: options.timeoutMs ?? 60_000, encoding: "utf8" },
        (error, stdoutText, stderrText) => {
          const exitCode = error && typeof (error as { code?: unknown }).code === "number" ? ((error as { code: number }).code) : error ? null : 0;
          resolve({ code: exitCode, stdout: stdoutText, stderr: stderrText });
        },
      );
    });
    const files = new Set<string>();
    for (const line of (await readFile(out, "utf8")).split("\n")) {
      if (!line.startsWith("file:")) continue;
      const file = fileURLToPath(line);
      // The tracer's own files are not the traced program's.
      if (!file.startsWith(dir)) files.add(file);
    }
    const sorted = [...files].sort();
    const packages = [...new Set(sorted.map(packageOfFile).filter((name): name is string => name !== undefined))].sort();
    return { code, stdout, stderr, files: sorted, packages };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * Whether `file`, a build output a test runs (a package's `dist/…`), exists. When it does not, a
 * loud `*** SKIPPED: … ***` notice goes to stderr and the caller skips (`npm run build` makes it;
 * `npm test` builds first); under `CI=true` it throws instead: a suite must never pass in CI by
 * being skipped.
 * @param file - the absolute path of the build output
 * @throws Error under `CI=true` when `file` is missing
 */
export function requireBuildOutput(file: string): boolean {
  if (existsSync(file)) return true;
  const notice = `${file} is missing: run npm run build (npm test builds first)`;
  if (process.env.CI === "true") throw new Error(notice);
  process.stderr.write(`\n*** SKIPPED: ${notice} ***\n\n`);
  return false;
}
