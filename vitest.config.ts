import { defineConfig } from "vitest/config";

// Two projects: fast unit tests beside the code, and integration tests against real engines
// (`*.integ.test.ts`), which run one file at a time so they do not fight over the engine.
export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: "unit",
          include: ["packages/*/src/**/*.test.ts"],
          exclude: ["**/*.integ.test.ts", "**/node_modules/**", "**/dist/**"],
          testTimeout: 20_000,
        },
      },
      {
        test: {
          name: "integ",
          include: ["packages/*/src/**/*.integ.test.ts"],
          exclude: ["**/node_modules/**", "**/dist/**"],
          fileParallelism: false,
          testTimeout: 180_000,
          hookTimeout: 180_000,
        },
      },
    ],
  },
});
