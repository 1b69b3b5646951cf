import path from "node:path";
import { pathToFileURL } from "node:url";
import { closest, distance } from "fastest-levenshtein";
import { KilnError, type Provider, type ProviderSource } from "@kilnjs/core";

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
 * The providers the CLI can use, each loaded on first use so that its SDK costs nothing until a
 * command needs it. A provider named `X` is the package `@kilnjs/provider-X`, or the module that
 * `KILN_PROVIDER_MODULE_X` names (a package name, or a file path relative to the current
 * directory: for private providers and tests). The module exports `createProvider(options)`.
 */
export function cliProviders(names: readonly string[], env: NodeJS.ProcessEnv = process.env): Record<string, ProviderSource> {
  return Object.fromEntries(names.map((name) => [name, () => loadProvider(name, env)]));
}

async function loadProvider(name: string, env: NodeJS.ProcessEnv): Promise<Provider> {
  const override = env[providerModuleVariable(name)];
  const specifier = override ? (/^[./]/.test(override) ? pathToFileURL(path.resolve(override)).href : override) : `@kilnjs/provider-${name}`;
  let module: { createProvider?: (options?: object) => unknown };
  try {
    module = (await import(specifier)) as typeof module;
  } catch (error) {
    const hint = override
      ? `${providerModuleVariable(name)}=${override} could not be loaded; check the path`
      : `run \`npm install @kilnjs/provider-${name}\` next to @kilnjs/cli${suggestion(name)}`;
    throw new KilnError("PROVIDER_NOT_FOUND", `The provider "${name}" is not installed: ${hint}${hint.endsWith("?") ? "" : "."}`, { cause: error });
  }
  if (typeof module.createProvider !== "function") {
    throw new KilnError("PROVIDER_NOT_FOUND", `${override ?? `@kilnjs/provider-${name}`} does not export createProvider(); it is not a Kiln provider.`);
  }
  return module.createProvider({}) as Provider;
}

/** `, or did you mean "docker"?` for a name close to a known provider. */
export function suggestion(name: string): string {
  const close = closest(name, [...KNOWN_PROVIDERS]);
  return close !== name && distance(close, name) <= 2 ? `, or did you mean "${close}"?` : "";
}

/**
 * Problems with a provider name that `kiln validate` reports: not installed (and not pointed at
 * another module by `KILN_PROVIDER_MODULE_<NAME>`), with a did-you-mean. Checks that the package
 * resolves; does not load it.
 */
export function providerIssues(name: string, env: NodeJS.ProcessEnv = process.env): string[] {
  if (env[providerModuleVariable(name)]) return [];
  try {
    import.meta.resolve(`@kilnjs/provider-${name}`);
    return [];
  } catch {
    return [`the provider "${name}" is not installed (npm install @kilnjs/provider-${name})${suggestion(name)}`];
  }
}
