// Secrets through core: read from their sources at each deploy, handed to launches, recorded only
// as a reference and a keyed digest; validation rules and warnings. Through the in-memory provider.
import { mkdtemp, readFile, readdir, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { inspect } from "node:util";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { z } from "zod";
import {
  REDACTED,
  SecretValue,
  createKiln,
  isKilnError,
  loadSpec,
  looksLikeSecretName,
  parseSpec,
  validateSpec,
  type ImageRecipe,
  type KilnError,
  type SpecIssue,
  type KilnEvent,
  type LaunchRequest,
  type Provider,
  type SpecInput,
} from "../src/index.js";
import { createMemoryProvider } from "@kilnjs/testkit";

const VALUE = "s3cr3t-canary-7f1d";
let dir: string;

beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "kiln-secrets-"));
  await writeFile(path.join(dir, "Dockerfile"), "FROM kiln-local/busybox\nCOPY . /app\n");
  await writeFile(path.join(dir, "app.txt"), "version 1\n");
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

function spec(overrides: Partial<SpecInput> = {}): SpecInput {
  return {
    service: "web",
    provider: "memory",
    instances: { count: 2, ports: [{ name: "http", port: 8080 }] },
    health: { intervalMs: 100, timeoutMs: 100, healthyThreshold: 1 },
    secrets: { DB_PASSWORD: { from: { env: "TEST_DB_PASSWORD" } }, TLS_KEY: { from: { file: "tls.key" }, to: { file: "/run/secrets/tls.key" } } },
    ...overrides,
  };
}

/** A Kiln on the memory provider whose launches are recorded, with `env` as its secret variables. */
function setup(env: Record<string, string | undefined>, provider: Provider = createMemoryProvider()) {
  const launches: LaunchRequest[] = [];
  const builds: ImageRecipe[] = [];
  const recorded: Provider = {
    ...provider,
    images: {
      ...provider.images,
      build: (recipe, ctx) => {
        builds.push(recipe);
        return provider.images.build(recipe, ctx);
      },
    },
    instances: {
      ...provider.instances,
      launch: (request, ctx) => {
        launches.push(request);
        return provider.instances.launch(request, ctx);
      },
    },
  };
  const events: KilnEvent[] = [];
  const kiln = createKiln({ providers: { memory: recorded }, dataDir: path.join(dir, ".kiln"), env, onEvent: (event) => events.push(event) });
  return { kiln, launches, builds, events };
}

async function stateText(): Promise<string> {
  const stateDir = path.join(dir, ".kiln", "state");
  const files = await readdir(stateDir);
  return (await Promise.all(files.map((file) => readFile(path.join(stateDir, file), "utf8")))).join("\n");
}

describe("secrets in a deploy", () => {
  it("hands the values to every launch and records only references and keyed digests", async () => {
    await writeFile(path.join(dir, "tls.key"), `${VALUE}-file\n`);
    const { kiln, launches, builds, events } = setup({ TEST_DB_PASSWORD: VALUE });
    const result = await kiln.deploy({ spec: spec(), baseDir: dir });
    expect(result.outcome).toBe("deployed");
    // The secret's file lies in the build context, and is never sent to the build.
    expect(builds[0]?.dockerfile?.files).toEqual(expect.arrayContaining(["app.txt"]));
    expect(builds[0]?.dockerfile?.files).not.toContain("tls.key");
    expect(launches.length).toBeGreaterThan(0);
    for (const launch of launches) {
      expect(launch.secrets?.get("DB_PASSWORD")?.reveal()).toBe(VALUE);
      expect(launch.secrets?.get("TLS_KEY")?.reveal()).toBe(`${VALUE}-file`); // one trailing newline dropped
      expect(launch.config.secrets?.map((mount) => [mount.name, mount.to])).toEqual([
        ["DB_PASSWORD", { kind: "env", name: "DB_PASSWORD" }],
        ["TLS_KEY", { kind: "file", path: "/run/secrets/tls.key" }],
      ]);
      expect(launch.config.env).not.toHaveProperty("DB_PASSWORD");
    }
    const release = result.release;
    expect(release.instance.secrets?.[0]?.digest).toMatch(/^hmac-sha256:[0-9a-f]{64}$/);
    const everything = [await stateText(), JSON.stringify(events), JSON.stringify(result), JSON.stringify(await kiln.status({ target: "web" })), JSON.stringify(await kiln.history({ target: "web" }))].join("\n");
    for (const form of [VALUE, JSON.stringify(VALUE).slice(1, -1), Buffer.from(VALUE).toString("base64")]) expect(everything).not.toContain(form);
    expect(everything).toContain("TEST_DB_PASSWORD"); // the reference is there
    // The first line of the target's state file (beside it: the lease file).
    const key = (JSON.parse((await readFile(path.join(dir, ".kiln", "state", "web@default.json"), "utf8")).split("\n")[0]!) as { state: { secretDigestKey?: string } }).state.secretDigestKey;
    expect(key).toMatch(/^[A-Za-z0-9+/]{43}=$/);
    const shown = JSON.stringify([await kiln.status({ target: "web" }), await kiln.history({ target: "web" })]);
    expect(shown).not.toContain(key!); // the digest key is never shown
  });

  it("makes a new release when a value changes, and none when it does not", async () => {
    await writeFile(path.join(dir, "tls.key"), "key one");
    const env: Record<string, string> = { TEST_DB_PASSWORD: "first" };
    const { kiln } = setup(env);
    const first = await kiln.deploy({ spec: spec(), baseDir: dir });
    expect((await kiln.deploy({ spec: spec(), baseDir: dir })).outcome).toBe("unchanged");
    env.TEST_DB_PASSWORD = "second";
    const plan = await kiln.plan({ spec: spec(), baseDir: dir });
    expect(plan.changes.join("\n")).toContain("secrets: DB_PASSWORD (env, changed), TLS_KEY (file /run/secrets/tls.key)");
    expect(plan.changes.join("\n")).toContain(`create release ${first.release.number + 1} (secrets changed: DB_PASSWORD):`);
    expect(plan.changes.join("\n")).not.toContain("second");
    const second = await kiln.deploy({ spec: spec(), baseDir: dir });
    expect(second.outcome).toBe("deployed");
    expect(second.release.number).toBe(first.release.number + 1);
    expect(second.release.fingerprint).toBe(first.release.fingerprint); // no rebuild: a secret is not part of the image
    expect(second.release.instance.secrets?.[0]?.digest).not.toBe(first.release.instance.secrets?.[0]?.digest);
  });

  it("refuses to deploy when a source cannot be read, naming the secret and never a value", async () => {
    const { kiln, launches } = setup({});
    const error = await kiln.deploy({ spec: spec(), baseDir: dir }).catch((caught: unknown) => caught);
    expect(isKilnError(error, "SECRET_UNAVAILABLE")).toBe(true);
    expect(String((error as Error).message)).toMatch(/secrets\.DB_PASSWORD: the environment variable TEST_DB_PASSWORD is not set/);
    expect(launches).toHaveLength(0);
  });

  it("rolls back with the secrets read again from the release's sources", async () => {
    await writeFile(path.join(dir, "tls.key"), "key");
    const env: Record<string, string> = { TEST_DB_PASSWORD: "one" };
    const { kiln, launches } = setup(env);
    await kiln.deploy({ spec: spec(), baseDir: dir });
    await writeFile(path.join(dir, "app.txt"), "version 2\n");
    await kiln.deploy({ spec: spec(), baseDir: dir });
    launches.length = 0;
    await kiln.rollback({ target: "web" });
    expect(launches.length).toBeGreaterThan(0);
    expect(launches.every((launch) => launch.secrets?.get("DB_PASSWORD")?.reveal() === "one")).toBe(true);
  });

  it("reads a secret from a provider's secret store", async () => {
    const memory = createMemoryProvider();
    const store = new Map([["prod/db", VALUE]]);
    const withStore: Provider = {
      ...memory,
      spec: { imageFormat: "dockerfile", secretDelivery: ["env"], secretSource: z.strictObject({ name: z.string() }) },
      secrets: { read: async (reference) => store.get((reference as { name: string }).name) ?? "" },
    };
    const { kiln, launches } = setup({}, withStore);
    await kiln.deploy({ spec: spec({ secrets: { DB_PASSWORD: { from: { memory: { name: "prod/db" } } } } }), baseDir: dir });
    expect(launches[0]?.secrets?.get("DB_PASSWORD")?.reveal()).toBe(VALUE);
    expect(launches[0]?.config.secrets?.[0]?.source).toEqual({ kind: "store", provider: "memory", reference: { name: "prod/db" } });
  });
});

describe("build secrets", () => {
  it("reach the build as values, outside the fingerprint, and are cut out of its output", async () => {
    const memory = createMemoryProvider();
    const printing: Provider = {
      ...memory,
      images: {
        ...memory.images,
        build: (recipe, ctx) => {
          // A careless RUN step that prints the secret.
          ctx.emit({ type: "image.build.log", message: `token is ${recipe.dockerfile?.secrets?.get("npm")?.reveal() ?? "missing"}` });
          return memory.images.build(recipe, ctx);
        },
      },
    };
    const env: Record<string, string> = {};
    const { kiln, builds, events } = setup(env, printing);
    const withBuildSecret = spec({ secrets: {}, image: { dockerfile: { secrets: { npm: { from: { env: "NPM_TOKEN" } } } } } });
    // A plan that needs a build finds a build secret it could not read, as the deploy would.
    const missing = await kiln.plan({ spec: withBuildSecret, baseDir: dir }).catch((caught: unknown) => caught);
    expect(isKilnError(missing, "SECRET_UNAVAILABLE")).toBe(true);
    expect((missing as Error).message).toMatch(/^image\.dockerfile\.secrets\.npm: the environment variable NPM_TOKEN is not set/);
    env.NPM_TOKEN = VALUE;
    const planned = await kiln.plan({ spec: withBuildSecret, baseDir: dir });
    expect(planned.changes.join("\n")).toContain("build secrets: npm (read when the image is built; never in the image or its fingerprint)");
    const first = await kiln.build({ spec: withBuildSecret, baseDir: dir });
    expect(builds[0]?.dockerfile?.secrets?.get("npm")?.reveal()).toBe(VALUE);
    const logs = events.filter((event) => event.type === "image.build.log").map((event) => JSON.stringify(event));
    expect(logs.join("\n")).toContain("token is [secret]");
    expect(JSON.stringify(events)).not.toContain(VALUE);
    env.NPM_TOKEN = "another";
    const second = await kiln.build({ spec: withBuildSecret, baseDir: dir });
    expect(second.built).toBe(false); // a build secret is not part of the fingerprint
    expect(second.fingerprint.fingerprint).toBe(first.fingerprint.fingerprint);
  });
});

describe("secret values", () => {
  it("never show themselves when printed, serialised or inspected", () => {
    const value = new SecretValue(VALUE);
    // eslint-disable-next-line @typescript-eslint/restrict-template-expressions -- what a careless template does
    const shown = [String(value), `${value}`, JSON.stringify({ value }), inspect({ value }), value.toString()];
    for (const text of shown) {
      expect(text).not.toContain(VALUE);
      expect(text).toContain(REDACTED);
    }
    expect(value.reveal()).toBe(VALUE);
  });

  it("names that look like secrets", () => {
    for (const name of ["NPM_TOKEN", "DB_PASSWORD", "stripeApiKey", "AWS_SECRET_ACCESS_KEY", "PRIVATE_KEY", "GITHUB_TOKEN", "client-secret"]) expect(looksLikeSecretName(name), name).toBe(true);
    for (const name of ["CACHE_KEY", "TOKENIZER_MODEL", "PUBLIC_URL", "NODE_ENV", "LOG_LEVEL", "KEYBOARD"]) expect(looksLikeSecretName(name), name).toBe(false);
  });
});

describe("secret rules", () => {
  const providers = { memory: createMemoryProvider().spec! };

  it("refuses a build argument that looks like a secret, and points at build secrets", () => {
    const result = parseSpec("service: web\nprovider: memory\nimage:\n  dockerfile:\n    args:\n      NPM_TOKEN: abc\n", { file: "kiln.yaml", providers });
    expect(result.ok).toBe(false);
    if (result.ok) return;
    expect(result.issues[0]).toMatchObject({ path: ["image", "dockerfile", "args", "NPM_TOKEN"], line: 6 });
    expect(result.issues[0]!.message).toMatch(/image\.dockerfile\.secrets/);
  });

  it("warns, with the position, about an env key that looks like a secret", () => {
    const result = parseSpec("service: web\nprovider: memory\ninstances:\n  env:\n    LOG_LEVEL: info\n    DB_PASSWORD: hunter2\n", { file: "kiln.yaml", providers });
    expect(result.ok).toBe(true);
    if (!result.ok) return;
    expect(result.value.warnings).toHaveLength(1);
    expect(result.value.warnings![0]).toMatchObject({ path: ["instances", "env", "DB_PASSWORD"], line: 6, column: 5, kind: "secret-in-env" });
    expect(result.value.warnings![0]!.message).not.toContain("hunter2");
  });

  it("wants one source and one delivery the provider can make", () => {
    const noDelivery = { memory: { imageFormat: "dockerfile" as const } };
    const result = validateSpec(
      { service: "web", provider: "memory", secrets: { A: { from: {} }, B: { from: { env: "X", file: "y" } }, C: { from: { env: "C" }, to: { file: "/run/c" } } } },
      { providers: noDelivery },
    );
    expect(result.ok).toBe(false);
    if (result.ok) return;
    const byPath = Object.fromEntries(result.issues.map((issue) => [issue.path.join("."), issue.message]));
    expect(byPath["secrets.A.from"]).toMatch(/say where the secret's value comes from/);
    expect(byPath["secrets.B.from"]).toMatch(/one source, not env and file/);
    expect(byPath["secrets.C.to.file"]).toMatch(/cannot hand secrets to its instances/);
  });

  it("lets an environment replace a secret's source rather than merge it", () => {
    const result = validateSpec(
      { service: "web", provider: "memory", secrets: { A: { from: { env: "A_DEV" } } }, environments: { prod: { secrets: { A: { from: { file: "/etc/a" } } } } } },
      { providers },
    );
    expect(result.ok).toBe(true);
    if (!result.ok) return;
    expect(result.value.environments.prod!.secrets.A!.from).toEqual({ file: "/etc/a" });
  });

  it("keeps a near-miss of env as an unknown key with its suggestion, not a provider name", () => {
    const result = validateSpec({ service: "web", provider: "memory", secrets: { A: { from: { evn: "A" } } } }, { providers });
    expect(result.ok).toBe(false);
    if (result.ok) return;
    expect(result.issues.some((issue) => issue.kind === "unknown-key" && issue.suggestion === "env")).toBe(true);
  });
});

describe("loading with the providers a spec names", () => {
  it("checks the provider's rules in the same pass as the schema's", async () => {
    const file = path.join(dir, "kiln.yaml");
    await writeFile(file, "service: web\nprovider: bare\ninstances:\n  count: 0\nsecrets:\n  A:\n    from: { env: A }\n    to: { file: /run/secrets/a }\n");
    const asked: string[] = [];
    const error = await loadSpec(file, { providerSpec: async (name) => (asked.push(name), { imageFormat: "dockerfile" }) }).catch((caught: unknown) => caught);
    expect(asked).toEqual(["bare"]);
    expect(isKilnError(error, "SPEC_INVALID")).toBe(true);
    const paths = ((error as KilnError).details.issues as SpecIssue[]).map((issue) => issue.path.join("."));
    expect(paths).toEqual(expect.arrayContaining(["instances.count", "secrets.A.to.file"]));
  });
});
