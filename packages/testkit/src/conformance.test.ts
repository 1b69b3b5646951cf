// The provider conformance suite, run by the in-memory provider: once in memory, once with a state file.
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll } from "vitest";
import type { ImageRecipe } from "@kilnjs/core";
import { runProviderConformance } from "./conformance.js";
import { createMemoryProvider, type MemoryProvider } from "./memory-provider.js";

const recipe = async ({ service, fingerprint }: { service: string; fingerprint: string }): Promise<ImageRecipe> => ({
  target: { service, environment: "conformance" },
  fingerprint,
  dockerfile: { kind: "dockerfile", contextDir: "/nonexistent", dockerfilePath: "/nonexistent/Dockerfile", files: ["Dockerfile"], args: {} },
});

// In memory the backend lives in the provider object: a "second object" is the same one.
let inMemory: MemoryProvider | undefined;
runProviderConformance({
  name: "memory",
  createProvider: () => (inMemory ??= createMemoryProvider()),
  makeRecipe: recipe,
  timeoutMs: 10_000,
});

const dir = mkdtempSync(path.join(os.tmpdir(), "kiln-conformance-memory-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
runProviderConformance({
  name: "memory with a state file",
  createProvider: () => createMemoryProvider({ stateFile: path.join(dir, "cloud.json") }),
  makeRecipe: recipe,
  timeoutMs: 10_000,
});
