// For the integration tests: `kiln serve` as users run it (the built CLI, in a process of its own),
// with the in-memory provider kept in a state file so that a killed server and the next one see
// the same instances. Not part of the package (only src/index.ts is built).
import { spawn, type ChildProcess } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { waitFor } from "@kilnjs/core";
import { hashToken } from "./auth.js";

const REPO_ROOT = fileURLToPath(new URL("../../../", import.meta.url));
const KILN_BIN = path.join(REPO_ROOT, "packages/cli/dist/bin.js");
const MEMORY_PROVIDER = path.join(REPO_ROOT, "packages/cli/test/fixtures/memory-provider.mjs");

/** A `kiln serve` process that listens. */
export interface KilnServeProcess {
  readonly url: string;
  readonly child: ChildProcess;
  /** Everything it wrote to stdout and stderr so far. */
  readonly output: string;
}

/**
 * Starts `kiln serve --port 0 <args>` in `cwd` with one admin token (`token`) and the in-memory
 * provider kept in `memoryStateFile`, and waits (up to 30 s) until it listens.
 * @param environment - the process's variables, `process.env` less what the caller leaves out
 */
export async function startKilnServe(options: { readonly args: readonly string[]; readonly cwd: string; readonly token: string; readonly memoryStateFile: string; readonly environment?: NodeJS.ProcessEnv }): Promise<KilnServeProcess> {
  const child = spawn(process.execPath, [KILN_BIN, "serve", "--port", "0", ...options.args], {
    cwd: options.cwd,
    env: {
      ...(options.environment ?? process.env),
      KILN_SERVER_TOKENS: JSON.stringify([{ name: "test", sha256: hashToken(options.token), scopes: ["admin"], environments: ["*"] }]),
      KILN_PROVIDER_MODULE_MEMORY: MEMORY_PROVIDER,
      KILN_MEMORY_STATE_FILE: options.memoryStateFile,
      NO_COLOR: "1",
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  child.stdout.setEncoding("utf8").on("data", (chunk: string) => (output += chunk));
  child.stderr.setEncoding("utf8").on("data", (chunk: string) => (output += chunk));
  const url = await waitFor(
    async () => {
      const match = /listening on (http:\/\/\S+)/.exec(output);
      if (match) return { done: true, value: match[1]! };
      if (child.exitCode !== null) throw new Error(`kiln serve exited ${child.exitCode}: ${output}`);
      return { done: false, reason: output.slice(-300) };
    },
    { timeoutMs: 30_000, minDelayMs: 50, maxDelayMs: 200, description: `kiln serve ${options.args.join(" ")} to listen` },
  );
  return {
    url,
    child,
    get output() {
      return output;
    },
  };
}
