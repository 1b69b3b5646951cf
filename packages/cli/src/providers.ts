import { closest, distance } from "fastest-levenshtein";
import type { ImportProviderOptions } from "@kilnjs/core";

/** The providers Kiln ships or plans, for did-you-mean hints on an unknown provider name. */
export const KNOWN_PROVIDERS = ["docker", "aws", "gcp", "azure"] as const;

/**
 * The environment variable that points the CLI at another module for provider `name`:
 * `KILN_PROVIDER_MODULE_<NAME>` (upper case, `-` as `_`), e.g. `KILN_PROVIDER_MODULE_MEMORY=./my-provider.mjs`.
 */
export function providerModuleVariable(name: string): string {
  return `KILN_PROVIDER_MODULE_${name.toUpperCase().replace(/-/g, "_")}`;
}

/**
 * How the CLI loads providers with core's `importProvider`: `@kilnjs/provider-<name>`, or the
 * module a `KILN_PROVIDER_MODULE_<NAME>` variable names (a package name, or a file path relative
 * to the current folder: for private providers and tests), with a did-you-mean for a misspelt name.
 */
export function importOptions(names: readonly string[], env: NodeJS.ProcessEnv = process.env): ImportProviderOptions {
  const modules: Record<string, string> = {};
  for (const name of names) {
    const module = env[providerModuleVariable(name)];
    if (module) modules[name] = module;
  }
  return { modules, cwd: process.cwd(), hint: suggestion };
}

/** `Did you mean "docker"?` for a name close to a known provider; empty otherwise. */
export function suggestion(name: string): string {
  const close = closest(name, [...KNOWN_PROVIDERS]);
  return close !== name && distance(close, name) <= 2 ? `Did you mean "${close}"?` : "";
}
