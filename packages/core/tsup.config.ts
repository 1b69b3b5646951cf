import { defineConfig } from "tsup";

export default defineConfig({
  // `spec` is `@kilnjs/core/spec` (see src/spec-entry.ts): the ESM build shares its code with the
  // main entry through chunks, so both give the same objects. Under `require` the subpath is the
  // main entry (package.json), so the CommonJS copy of `spec` is built but not published as such.
  entry: { index: "src/index.ts", spec: "src/spec-entry.ts" },
  format: ["esm", "cjs"],
  dts: true,
  sourcemap: true,
  clean: true,
  target: "node20",
});
