import { defineConfig } from "tsup";

export default defineConfig([
  {
    entry: ["src/index.ts"],
    // ESM only: the conformance suite imports vitest, which refuses require().
    format: ["esm"],
    dts: true,
    sourcemap: true,
    clean: true,
    target: "node20",
  },
  {
    // The kiln-local-compute-engine command (bin/kiln-local-compute-engine.js runs it).
    entry: ["src/local-compute-engine-bin.ts"],
    format: ["esm"],
    sourcemap: true,
    target: "node20",
  },
]);
