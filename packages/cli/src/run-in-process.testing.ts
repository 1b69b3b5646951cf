// For the CLI's own tests: `kiln` run in-process with its output captured (no package exports it).
import { PassThrough } from "node:stream";
import { run, type RunOptions } from "./main.js";

/** What one in-process run of the CLI gave: its exit code and everything it wrote, as text. */
export interface CapturedRun {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs `kiln <args>` in this process with NO_COLOR, capturing stdout and stderr. */
export async function runCaptured(args: readonly string[], runOptions: RunOptions = {}): Promise<CapturedRun> {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  let out = "";
  let err = "";
  stdout.setEncoding("utf8").on("data", (chunk: string) => (out += chunk));
  stderr.setEncoding("utf8").on("data", (chunk: string) => (err += chunk));
  const code = await run(args, { stdout, stderr, env: { NO_COLOR: "1" } }, runOptions);
  return { code, stdout: out, stderr: err };
}
