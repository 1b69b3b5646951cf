import path from "node:path";
import { pathToFileURL } from "node:url";
import { KilnError } from "../errors.js";
import type { Provider } from "./contract.js";
import { DEFAULT_PROVIDER_SPEC, type ProviderSpec } from "./spec.js";

/** A provider package (or module) as Kiln loads it by name; see {@link importProvider}. */
export interface ProviderModule {
  /** The provider's name, as the spec's `provider:` says it. */
  readonly name: string;
  /** What was imported: `@kilnjs/provider-<name>`, or the module given for the name. */
  readonly specifier: string;
  /** The provider's part of the spec: the module's `providerSpec` export. */
  readonly spec: ProviderSpec;
  /** The module's `createProvider(options)`: cheap, no I/O, the SDK loads on first use. */
  create(options?: object): Provider;
}

/** Options of {@link importProvider}. */
export interface ImportProviderOptions {
  /**
   * Modules to load instead of `@kilnjs/provider-<name>`, by provider name: a package name, or a
   * file path (absolute, or relative to `cwd`), for private providers and tests. The CLI fills it
   * from `KILN_PROVIDER_MODULE_<NAME>` variables.
   */
  readonly modules?: Readonly<Record<string, string>>;
  /** The folder relative module paths start from. @defaultValue process.cwd() */
  readonly cwd?: string;
  /** Added to the "not installed" message, e.g. `, or did you mean "docker"?`. */
  readonly hint?: (name: string) => string;
}

/** The npm package that holds the provider of this name: `@kilnjs/provider-<name>`. */
export function providerPackage(name: string): string {
  return `@kilnjs/provider-${name}`;
}

/**
 * Loads a provider by name: the package `@kilnjs/provider-<name>` (resolved from where Kiln is
 * installed), or the module `options.modules[name]`. The module must export
 * `createProvider(options)`; its `providerSpec` export is the provider's part of the spec (when a
 * module has none, the spec of a provider it creates is used, else {@link DEFAULT_PROVIDER_SPEC}).
 *
 * @throws KilnError PROVIDER_NOT_FOUND when the package is not installed (the message says which
 *   package to install) or the module is not a provider
 */
export async function importProvider(name: string, options: ImportProviderOptions = {}): Promise<ProviderModule> {
  const given = options.modules?.[name];
  const specifier = given === undefined ? providerPackage(name) : /^[./]/.test(given) ? pathToFileURL(path.resolve(options.cwd ?? process.cwd(), given)).href : given;
  let module: { createProvider?: (options?: object) => unknown; providerSpec?: ProviderSpec };
  try {
    module = (await import(specifier)) as typeof module;
  } catch (error) {
    const how = given !== undefined ? `the module ${given} given for it could not be loaded; check the path` : `install it with \`npm install ${providerPackage(name)}\``;
    throw new KilnError("PROVIDER_NOT_FOUND", `The provider "${name}" is not installed: ${how}${options.hint?.(name) ?? ""}.`, { cause: error, details: { provider: name } });
  }
  const create = module.createProvider;
  if (typeof create !== "function") {
    throw new KilnError("PROVIDER_NOT_FOUND", `${given ?? providerPackage(name)} does not export createProvider(); it is not a Kiln provider.`, { details: { provider: name } });
  }
  const spec = module.providerSpec ?? (create({}) as Provider).spec ?? DEFAULT_PROVIDER_SPEC;
  return { name, specifier, spec, create: (providerOptions) => create(providerOptions ?? {}) as Provider };
}

/**
 * Provider sources for `createKiln` (`{ docker: () => …, <name>: () => … }`): each is loaded by
 * {@link importProvider} and created on first use, so a provider's SDK costs nothing until a
 * command needs that provider.
 */
export function providerSources(names: readonly string[], options: ImportProviderOptions = {}): Record<string, () => Promise<Provider>> {
  return Object.fromEntries(names.map((name) => [name, async () => (await importProvider(name, options)).create({})]));
}
