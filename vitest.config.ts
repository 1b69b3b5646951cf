import { existsSync, readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { defineConfig } from "vitest/config";

const root = path.dirname(fileURLToPath(import.meta.url));

// Tests import every workspace package (`@kilnjs/core`, `@kilnjs/testkit`, …, and the example
// provider) from its source, `<folder>/src/index.ts`, not from its build: so a test sees the code
// beside it without a rebuild, the whole run holds one copy of each package (one KilnError class),
// and core's own tests can use `@kilnjs/testkit` (the in-memory provider) although core cannot
// depend on testkit (testkit depends on core; a package.json dependency would be a cycle).
// Test-only: builds and the CLI binary that integration tests spawn still resolve packages through
// node_modules and their dist/. Other subpaths (`@kilnjs/core/schema.json`) are not aliased. Type checking
// of core's tests does the same with `paths` (packages/core/test/tsconfig.json).
const packagesFromSource = ["packages", "examples"].flatMap((parent) =>
  readdirSync(path.join(root, parent), { withFileTypes: true }).flatMap((entry) => {
    const folder = path.join(root, parent, entry.name);
    const entryFile = path.join(folder, "src", "index.ts");
    if (!entry.isDirectory() || !existsSync(path.join(folder, "package.json")) || !existsSync(entryFile)) return [];
    const { name } = JSON.parse(readFileSync(path.join(folder, "package.json"), "utf8")) as { name?: string };
    if (!name?.startsWith("@kilnjs/")) return [];
    const escaped = name.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");
    // A package's `/spec` subpath (core and the providers: the spec alone) comes from
    // src/spec-entry.ts, so that it shares the one copy of each module with the main entry.
    const specEntry = path.join(folder, "src", "spec-entry.ts");
    return [
      { find: new RegExp(`^${escaped}$`), replacement: entryFile },
      ...(existsSync(specEntry) ? [{ find: new RegExp(`^${escaped}/spec$`), replacement: specEntry }] : []),
    ];
  }),
);

// Two projects: fast unit tests beside the code, and integration tests against real engines
// (`*.integ.test.ts`, beside the code or in a package's test/ folder), which run one file at a
// time so they do not fight over the engine.
export default defineConfig({
  resolve: { alias: packagesFromSource },
  test: {
    projects: [
      {
        extends: true,
        test: {
          name: "unit",
          // Beside the code; a package's test/ folder (tests of what it ships, such as the CLI's
          // bin, and core's lifecycle tests, which need testkit); scripts/*.test.ts (the
          // repository scripts' own decisions: npm test's setup); the example packages' own tests
          // (examples/provider-process).
          include: ["packages/*/src/**/*.test.ts", "packages/*/test/**/*.test.ts", "scripts/**/*.test.ts", "examples/*/src/**/*.test.ts"],
          exclude: ["**/*.integ.test.ts", "**/node_modules/**", "**/dist/**"],
          testTimeout: 20_000,
        },
      },
      {
        extends: true,
        test: {
          name: "integ",
          // A package's black-box tests (the CLI's, which spawn its binary) live in its test/ folder.
          include: ["packages/*/src/**/*.integ.test.ts", "packages/*/test/**/*.integ.test.ts", "examples/*/src/**/*.integ.test.ts"],
          exclude: ["**/node_modules/**", "**/dist/**"],
          fileParallelism: false,
          testTimeout: 180_000,
          hookTimeout: 180_000,
        },
      },
    ],
  },
});
