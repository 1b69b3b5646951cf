import { readFileSync } from "node:fs";
import { defineConfig } from "tsup";

const { version } = JSON.parse(readFileSync("package.json", "utf8")) as { version: string };

export default defineConfig([
  {
    entry: ["src/index.ts"],
    format: ["esm", "cjs"],
    dts: true,
    sourcemap: true,
    clean: true,
    target: "node20",
    define: { __KILN_VERSION__: JSON.stringify(version) },
  },
  {
    entry: ["src/bin.ts"],
    format: ["esm"],
    // commander is bundled into the command (licence: THIRD-PARTY-NOTICES.md): its files would
    // cost `kiln --help` and `kiln validate` one module load each on Node 20 (issue 13). It is
    // CommonJS, so the ES module build needs a `require` for its Node built-ins.
    noExternal: ["commander"],
    banner: { js: 'import { createRequire as __kilnCreateRequire } from "node:module";\nconst require = __kilnCreateRequire(import.meta.url);' },
    sourcemap: true,
    target: "node20",
    define: { __KILN_VERSION__: JSON.stringify(version) },
  },
]);
