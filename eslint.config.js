// Flat config shared by every package: type-aware rules from typescript-eslint.
import js from "@eslint/js";
import tseslint from "typescript-eslint";

export default tseslint.config(
  { ignores: ["**/dist/**", "**/node_modules/**", "**/*.config.ts"] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: {
        projectService: { allowDefaultProject: ["scripts/*.ts", "scripts/bench/*.ts", "examples/*/*.ts", "packages/cli/bin/*.js"] },
        tsconfigRootDir: import.meta.dirname,
      },
    },
    rules: {
      "no-console": "error",
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_", varsIgnorePattern: "^_" }],
      "@typescript-eslint/consistent-type-imports": "error",
      "@typescript-eslint/no-floating-promises": "error",
      // Implementations of async interfaces (the in-memory provider) are async without awaiting.
      "@typescript-eslint/require-await": "off",
    },
  },
  {
    // A package's public surface is the list in its entry, never everything a module happens to export.
    files: ["packages/*/src/index.ts", "examples/*/src/index.ts"],
    rules: {
      "no-restricted-syntax": ["error", { selector: "ExportAllDeclaration", message: "List the exports of a package entry by name (no export *), so its public surface cannot drift silently." }],
    },
  },
  {
    // Core stays readable in one sitting: a module under 400 lines, a function under about 120
    // (issue 10: the lifecycle was a 1,100-line closure before it became one module per operation).
    files: ["packages/core/src/**/*.ts"],
    ignores: ["**/*.test.ts", "**/*.integ.test.ts"],
    rules: {
      "max-lines": ["error", { max: 400, skipBlankLines: false, skipComments: false }],
      "max-lines-per-function": ["error", { max: 120, skipBlankLines: true, skipComments: true }],
    },
  },
  {
    files: ["**/*.test.ts", "**/*.integ.test.ts"],
    rules: { "@typescript-eslint/no-non-null-assertion": "off", "@typescript-eslint/no-unsafe-assignment": "off", "@typescript-eslint/no-unsafe-member-access": "off" },
  },
);
