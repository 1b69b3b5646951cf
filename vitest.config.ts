import { defineConfig } from "vitest/config";

// Two projects: fast unit tests beside the code, and integration tests against real engines
// (`*.integ.test.ts`, beside the code or in a package's test/ folder), which run one file at a
// time so they do not fight over the engine.
export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: "unit",
          // Beside the code; a package's test/ folder (tests of what it ships, such as the CLI's
          // bin); scripts/*.test.ts (the repository scripts' own decisions: npm test's setup);
          // the example packages' own tests (examples/provider-process).
          include: ["packages/*/src/**/*.test.ts", "packages/*/test/**/*.test.ts", "scripts/**/*.test.ts", "examples/*/src/**/*.test.ts"],
          exclude: ["**/*.integ.test.ts", "**/node_modules/**", "**/dist/**"],
          testTimeout: 20_000,
        },
      },
      {
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
