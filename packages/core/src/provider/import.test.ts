// importProvider looks a provider up by name: @kilnjs/provider-<name>, then kiln-provider-<name>
// (the name anyone may publish under), or a module given for the name. The packages here are
// real ones, written into the repository's node_modules for the test and removed afterwards.
import { mkdir, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { isKilnError } from "../errors.js";
import { importProvider, importProviderSpec, providerPackages } from "./import.js";
import { DEFAULT_PROVIDER_SPEC } from "./spec.js";

const here = path.dirname(fileURLToPath(import.meta.url));
const nodeModules = path.resolve(here, "../../../../node_modules");
const suffix = randomUUID().slice(0, 8);
const community = `community-${suffix}`;
const broken = `broken-${suffix}`;
const specOnly = `spec-only-${suffix}`;

async function writePackage(name: string, source: string): Promise<void> {
  const dir = path.join(nodeModules, name);
  await mkdir(dir, { recursive: true });
  await writeFile(path.join(dir, "package.json"), JSON.stringify({ name, version: "1.0.0", type: "module", exports: "./index.js" }));
  await writeFile(path.join(dir, "index.js"), source);
}

beforeAll(async () => {
  await writePackage(`kiln-provider-${community}`, `export function createProvider(options) { return { name: ${JSON.stringify(community)}, options }; }\n`);
  await writePackage(`kiln-provider-${broken}`, `import "kiln-missing-dependency-${suffix}";\nexport function createProvider() { return {}; }\n`);
  // A provider with a /spec subpath whose main entry cannot load: only the subpath may be read.
  const dir = path.join(nodeModules, `kiln-provider-${specOnly}`);
  await mkdir(dir, { recursive: true });
  await writeFile(path.join(dir, "package.json"), JSON.stringify({ name: `kiln-provider-${specOnly}`, version: "1.0.0", type: "module", exports: { ".": "./index.js", "./spec": "./spec.js" } }));
  await writeFile(path.join(dir, "index.js"), `throw new Error("the main entry was loaded");\n`);
  await writeFile(path.join(dir, "spec.js"), `export const providerSpec = { imageFormat: "machine", planLines: () => ["from the spec subpath"] };\n`);
});

afterAll(async () => {
  await rm(path.join(nodeModules, `kiln-provider-${community}`), { recursive: true, force: true });
  await rm(path.join(nodeModules, `kiln-provider-${broken}`), { recursive: true, force: true });
  await rm(path.join(nodeModules, `kiln-provider-${specOnly}`), { recursive: true, force: true });
});

async function failure(promise: Promise<unknown>): Promise<Error> {
  return promise.then(
    () => {
      throw new Error("expected a rejection");
    },
    (error: unknown) => error as Error,
  );
}

describe("importProvider", () => {
  it("looks in @kilnjs/provider-<name> first, then kiln-provider-<name>", () => {
    expect(providerPackages("gcp")).toEqual(["@kilnjs/provider-gcp", "kiln-provider-gcp"]);
  });

  it("loads a community provider published as kiln-provider-<name>", async () => {
    const loaded = await importProvider(community);
    expect(loaded.specifier).toBe(`kiln-provider-${community}`);
    expect(loaded.create({ region: "here" })).toEqual({ name: community, options: { region: "here" } });
  });

  it("names both packages to install when neither is there", async () => {
    const error = await failure(importProvider(`absent-${suffix}`));
    expect(isKilnError(error, "PROVIDER_NOT_FOUND")).toBe(true);
    expect(error.message).toContain(`\`@kilnjs/provider-absent-${suffix}\` (Kiln's scope)`);
    expect(error.message).toContain(`\`kiln-provider-absent-${suffix}\` (anyone's)`);
    // With a did-you-mean (the CLI's, for a typo) it suggests no package: a typo's names nothing real.
    const hinted = await failure(importProvider(`absent-${suffix}`, { hint: () => 'Did you mean "docker"?' }));
    expect(hinted.message).toBe(`The provider "absent-${suffix}" is not installed. Did you mean "docker"? Fix the spec's provider.`);
  });

  it("reports an installed package that fails to load as it is, not as missing", async () => {
    const error = await failure(importProvider(broken));
    expect(isKilnError(error, "PROVIDER_NOT_FOUND")).toBe(true);
    expect(error.message).toContain(`kiln-provider-${broken}`);
    expect(error.message).toContain("installed but could not be loaded");
    expect(error.message).toContain(`kiln-missing-dependency-${suffix}`);
  });

  it("loads the module given for a name, and says so when that path is wrong", async () => {
    const loaded = await importProvider("anything", { modules: { anything: `kiln-provider-${community}` } });
    expect(loaded.specifier).toBe(`kiln-provider-${community}`);
    const error = await failure(importProvider("anything", { modules: { anything: "./no-such-provider.mjs" }, cwd: here }));
    expect(error.message).toMatch(/module \.\/no-such-provider\.mjs given for it could not be loaded/);
  });
});

describe("importProviderSpec", () => {
  it("reads the /spec subpath alone, never the provider's main entry", async () => {
    const spec = await importProviderSpec(specOnly);
    expect(spec.imageFormat).toBe("machine");
    expect(spec.planLines?.({} as never, {} as never)).toEqual(["from the spec subpath"]);
    // Loading the whole provider does reach the main entry (so the check above could fail).
    const whole = await failure(importProvider(specOnly));
    expect(whole.message).toContain("the main entry was loaded");
  });

  it("gives the same object as the main entry for a first-party provider", async () => {
    expect(await importProviderSpec("docker")).toBe((await importProvider("docker")).spec);
  });

  it("loads a provider without the subpath whole, and a module given for the name as it is", async () => {
    expect(await importProviderSpec(community)).toBe(DEFAULT_PROVIDER_SPEC);
    const given = await importProviderSpec("anything", { modules: { anything: `kiln-provider-${community}` } });
    expect(given).toBe(DEFAULT_PROVIDER_SPEC);
  });

  it("reports a provider that is not installed as importProvider does", async () => {
    const error = await failure(importProviderSpec(`missing-${suffix}`));
    expect(isKilnError(error, "PROVIDER_NOT_FOUND")).toBe(true);
    expect(error.message).toContain("is not installed");
  });
});
