import { defineConfig } from "tsup";

export default defineConfig({
  entry: ['src/index.ts'],
  // ESM only: the conformance suite imports vitest, which refuses require().
  format: ["esm"],
  dts: true,
  sourcemap: true,
  clean: true,
  target: "node20",
});
