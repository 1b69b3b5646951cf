#!/usr/bin/env node
// @ts-check
// The `kiln-local-compute-engine` command: starts a local Compute Engine and prints the variables
// that point a client at it (docs/local-compute-engine.md). The code is tsup's build of
// src/local-compute-engine-bin.ts; package.json's `bin` names this file because npm links a bin
// only when its file exists at install time, and dist/ is empty in a fresh checkout.
import { existsSync } from "node:fs";
import { exit, stderr } from "node:process";
import { fileURLToPath } from "node:url";

const entry = new URL("../dist/local-compute-engine-bin.js", import.meta.url);
if (!existsSync(entry)) {
  stderr.write(`kiln-local-compute-engine: ${fileURLToPath(entry)} is missing: build @kilnjs/testkit first (npm run build in the repository)\n`);
  exit(70);
}
await import(entry.href);
