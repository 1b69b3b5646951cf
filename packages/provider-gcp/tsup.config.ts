import { defineConfig } from "tsup";

export default defineConfig({
  // `spec` is the package's `/spec` subpath (src/spec-entry.ts); the ESM build shares its code
  // with the main entry. Under `require` the subpath is the main entry (package.json).
  entry: { index: "src/index.ts", spec: "src/spec-entry.ts" },
  format: ["esm", "cjs"],
  dts: true,
  sourcemap: true,
  clean: true,
  target: "node20",
});
