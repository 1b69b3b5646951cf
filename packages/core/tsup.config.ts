import { defineConfig } from "tsup";

/** Gives the ES module build the `require` that bundled CommonJS code (yaml) calls for Node's built-ins. */
const REQUIRE_SHIM = 'import { createRequire as __kilnCreateRequire } from "node:module";\nconst require = __kilnCreateRequire(import.meta.url);';

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
  // zod and yaml are bundled into the build (their licences: THIRD-PARTY-NOTICES.md): on Node 20,
  // loading an ES module costs per file, and the two are ~170 files that every command reading a
  // spec loads (kiln validate: 3.3x a bare `node -e 0` with them as files, ~2.7x bundled; issue 13,
  // docs/development.md "Start-up"). Providers build their sections with the `z` core exports, so
  // one copy of zod composes every schema. yaml's Node build is CommonJS: its `require`s of Node's
  // built-ins need a `require` in the ES module build.
  noExternal: ["zod", "yaml"],
  banner: (context) => (context.format === "esm" ? { js: REQUIRE_SHIM } : {}),
});
