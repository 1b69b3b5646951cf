import { KilnError, type ProviderSource } from "@kilnjs/core";

/**
 * The providers the CLI can use, each loaded on first use so that its SDK costs nothing until a
 * command needs it. A provider named `X` is the package `@kilnjs/provider-X`, which exports
 * `createProvider(options)`.
 */
export function cliProviders(names: readonly string[]): Record<string, ProviderSource> {
  return Object.fromEntries(names.map((name) => [name, () => loadProvider(name)]));
}

async function loadProvider(name: string) {
  const packageName = `@kilnjs/provider-${name}`;
  let module: { createProvider?: (options?: object) => unknown };
  try {
    module = (await import(packageName)) as typeof module;
  } catch (error) {
    throw new KilnError("PROVIDER_NOT_FOUND", `The provider "${name}" is not installed: run \`npm install ${packageName}\` next to @kilnjs/cli.`, { cause: error });
  }
  if (typeof module.createProvider !== "function") {
    throw new KilnError("PROVIDER_NOT_FOUND", `${packageName} does not export createProvider(); it is not a Kiln provider.`);
  }
  return module.createProvider({}) as ReturnType<Extract<ProviderSource, () => unknown>>;
}
