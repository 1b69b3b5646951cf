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
  /**
   * A did-you-mean for a misspelt name, e.g. `Did you mean "docker"?`, or empty for none. When it
   * gives one, the "not installed" message suggests no package to install: a typo's package
   * names nothing Kiln knows, and anyone could publish one under it.
   */
  readonly hint?: (name: string) => string;
}

/** The npm package that holds the first-party provider of this name: `@kilnjs/provider-<name>`. */
export function providerPackage(name: string): string {
  return `@kilnjs/provider-${name}`;
}

/**
 * The packages a provider of this name is looked for in, in order: the first-party
 * `@kilnjs/provider-<name>`, then `kiln-provider-<name>`, the name anyone may publish a provider
 * under (the convention of `eslint-plugin-<name>` and `terraform-provider-<name>`).
 */
export function providerPackages(name: string): readonly string[] {
  return [providerPackage(name), `kiln-provider-${name}`];
}

/**
 * Loads a provider by name: the first of {@link providerPackages} that is installed (resolved
 * from where Kiln is installed), or the module `options.modules[name]`. The module must export
 * `createProvider(options)`; its `providerSpec` export is the provider's part of the spec (when a
 * module has none, the spec of a provider it creates is used, else {@link DEFAULT_PROVIDER_SPEC}).
 *
 * @throws KilnError PROVIDER_NOT_FOUND when no such package is installed (the message says which
 *   package to install), the module cannot be loaded, or it is not a provider
 */
export async function importProvider(name: string, options: ImportProviderOptions = {}): Promise<ProviderModule> {
  const given = options.modules?.[name];
  const { module, specifier } = given === undefined ? await importPackage(name, options) : await importGiven(name, given, options);
  const create = module.createProvider;
  if (typeof create !== "function") {
    throw new KilnError("PROVIDER_NOT_FOUND", `${given ?? specifier} does not export createProvider(); it is not a Kiln provider.`, { details: { provider: name } });
  }
  const spec = module.providerSpec ?? (create({}) as Provider).spec ?? DEFAULT_PROVIDER_SPEC;
  return { name, specifier, spec, create: (providerOptions) => create(providerOptions ?? {}) as Provider };
}

/**
 * Loads only a provider's part of the spec, for callers that validate a spec and run nothing (the
 * CLI's `kiln validate`): the `providerSpec` export of the package's `/spec` subpath
 * (`@kilnjs/provider-docker/spec`), which loads the spec declaration and `@kilnjs/core/spec`
 * without the provider's operations, SDK or the rest of core. A package without that subpath, or a
 * module given in `options.modules`, is loaded whole as {@link importProvider} does, and its
 * `providerSpec` used.
 *
 * A provider publishes the subpath by exporting `./spec` from its package.json, pointing at a
 * module whose `providerSpec` is the same object its main module exports.
 *
 * @throws KilnError PROVIDER_NOT_FOUND as {@link importProvider} does
 */
export async function importProviderSpec(name: string, options: ImportProviderOptions = {}): Promise<ProviderSpec> {
  if (options.modules?.[name] === undefined) {
    for (const specifier of providerPackages(name)) {
      try {
        const module = (await import(`${specifier}/spec`)) as LoadedModule;
        if (module.providerSpec) return module.providerSpec;
      } catch {
        // No such package or subpath, or it fails to load: loading the whole provider below
        // finds the right package and reports what is wrong with it.
      }
    }
  }
  return (await importProvider(name, options)).spec;
}

type LoadedModule = { createProvider?: (options?: object) => unknown; providerSpec?: ProviderSpec };

async function importPackage(name: string, options: ImportProviderOptions): Promise<{ module: LoadedModule; specifier: string }> {
  let firstError: unknown;
  for (const specifier of providerPackages(name)) {
    try {
      return { module: (await import(specifier)) as LoadedModule, specifier };
    } catch (error) {
      // Only "this package is not installed" moves on; a package that is there but fails to load
      // (a missing dependency of its own, a syntax error) is reported as it is.
      if (!isPackageMissing(error, specifier)) {
        throw new KilnError("PROVIDER_NOT_FOUND", `The provider "${name}" (${specifier}) is installed but could not be loaded: ${(error as Error).message}; reinstall it.`, { cause: error, details: { provider: name } });
      }
      firstError ??= error;
    }
  }
  const [firstParty, community] = providerPackages(name);
  const hint = options.hint?.(name);
  const advice = hint
    ? `${hint} Fix the spec's provider.`
    : `A provider is installed as \`${firstParty}\` (Kiln's scope) or \`${community}\` (anyone's); install the package of the provider you mean, if it exists.`;
  throw new KilnError("PROVIDER_NOT_FOUND", `The provider "${name}" is not installed. ${advice}`, { cause: firstError, details: { provider: name } });
}

async function importGiven(name: string, given: string, options: ImportProviderOptions): Promise<{ module: LoadedModule; specifier: string }> {
  const specifier = /^[./]/.test(given) ? pathToFileURL(path.resolve(options.cwd ?? process.cwd(), given)).href : given;
  try {
    return { module: (await import(specifier)) as LoadedModule, specifier };
  } catch (error) {
    throw new KilnError("PROVIDER_NOT_FOUND", `The provider "${name}" is not installed: the module ${given} given for it could not be loaded; check the path.`, { cause: error, details: { provider: name } });
  }
}

/** Whether `error` says that the package `specifier` itself cannot be found (not something it imports). */
function isPackageMissing(error: unknown, specifier: string): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  return code === "ERR_MODULE_NOT_FOUND" && String((error as Error).message).includes(`'${specifier}'`);
}

/**
 * Provider sources for `createKiln` (`{ docker: () => …, <name>: () => … }`): each is loaded by
 * {@link importProvider} and created on first use, so a provider's SDK costs nothing until a
 * command needs that provider.
 */
export function providerSources(names: readonly string[], options: ImportProviderOptions = {}): Record<string, () => Promise<Provider>> {
  return Object.fromEntries(names.map((name) => [name, async () => (await importProvider(name, options)).create({})]));
}
