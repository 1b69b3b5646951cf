#!/usr/bin/env node
// @ts-check
// The `kiln` command: runs the CLI that `tsup` builds into dist/bin.js.
//
// package.json's `bin` names this file rather than dist/bin.js because npm links a bin only when
// its file exists at install time, and in a fresh checkout dist/ is empty until the first build:
// `npm ci` would leave no `kiln` in node_modules/.bin and `npx kiln` would fail with "could not
// determine executable to run". In a checkout that is not built yet, this builds the CLI and what
// it depends on first (turbo, once; its output goes to stderr), then runs it.
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { execPath, exit, stderr } from "node:process";
import { fileURLToPath } from "node:url";

const entry = new URL("../dist/bin.js", import.meta.url);
/** The CLI's exit code for a bug in Kiln (docs/cli.md); a package without its build is one. */
const EXIT_INTERNAL = 70;

/**
 * Builds @kilnjs/cli and its dependencies in the monorepo at `root`.
 * @param {URL} root the monorepo's folder
 * @returns {boolean} whether dist/bin.js exists after
 */
function buildCheckout(root) {
  let turbo;
  try {
    turbo = createRequire(new URL("package.json", root)).resolve("turbo/bin/turbo");
  } catch {
    stderr.write(`kiln: this checkout is not built and turbo is not installed; run npm ci, then npm run build, in ${fileURLToPath(root)}\n`);
    return false;
  }
  stderr.write("kiln: this checkout is not built yet; building the CLI first (npx turbo run build --filter=@kilnjs/cli..., once)\n");
  const result = spawnSync(execPath, [turbo, "run", "build", "--filter=@kilnjs/cli...", "--output-logs=errors-only"], {
    cwd: fileURLToPath(root),
    // stdout too goes to stderr: kiln's own stdout may be piped (--json).
    stdio: ["ignore", 2, 2],
  });
  if (result.status !== 0) {
    stderr.write(`kiln: the build failed (above); fix it, or run npm run build in ${fileURLToPath(root)}\n`);
    return false;
  }
  return existsSync(entry);
}

if (!existsSync(entry)) {
  const root = new URL("../../../", import.meta.url);
  const checkout = existsSync(new URL("../src/bin.ts", import.meta.url)) && existsSync(new URL("turbo.json", root));
  if (!checkout) {
    stderr.write(`kiln: ${fileURLToPath(entry)} is missing: this copy of @kilnjs/cli is incomplete; install it again (npm install @kilnjs/cli)\n`);
    exit(EXIT_INTERNAL);
  }
  if (!buildCheckout(root)) exit(EXIT_INTERNAL);
}
await import(entry.href);
