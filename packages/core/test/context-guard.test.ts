// The context guard through Kiln's operations (issue 11): plan, build and deploy refuse a context
// that holds files that look like secrets before any image is built; the spec's
// image.allowSecretFiles (top level or per environment) lets them through.
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { createKiln, type SpecInput } from "../src/index.js";
import { createMemoryProvider } from "@kilnjs/testkit";

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "kiln-context-guard-"));
  await writeFile(path.join(dir, "Dockerfile"), "FROM kiln-local/busybox\nCOPY . /app\n");
  await writeFile(path.join(dir, ".dockerignore"), ".kiln\nconfg/.env\n"); // misspelt: config/.env gets through
  await mkdir(path.join(dir, "config"));
  await writeFile(path.join(dir, "config", ".env"), "DB_PASSWORD=hunter2\n");
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const spec = (overrides: Partial<SpecInput> = {}): SpecInput => ({
  service: "web",
  provider: "memory",
  instances: { count: 1, ports: [{ name: "http", port: 8080 }] },
  health: { http: { port: "http", path: "/healthz" }, intervalMs: 100, timeoutMs: 100, healthyThreshold: 1 },
  ...overrides,
});

function setup() {
  const provider = createMemoryProvider();
  const kiln = createKiln({ providers: { memory: provider }, dataDir: path.join(dir, ".kiln") });
  return { provider, kiln };
}

describe("the context guard in plan, build and deploy", () => {
  it("refuses each with SECRET_FILES_IN_CONTEXT before any image is built", async () => {
    const { kiln, provider } = setup();
    for (const operation of [() => kiln.plan({ spec: spec(), baseDir: dir }), () => kiln.build({ spec: spec(), baseDir: dir }), () => kiln.deploy({ spec: spec(), baseDir: dir })]) {
      await expect(operation()).rejects.toMatchObject({ code: "SECRET_FILES_IN_CONTEXT", details: { files: [{ path: "config/.env" }] } });
    }
    expect(provider.images.all.size).toBe(0);
    expect(provider.live.size).toBe(0);
    await kiln.close();
  });

  it("deploys when image.allowSecretFiles allows the file, at the top level or in the environment", async () => {
    const { kiln, provider } = setup();
    const allowed = await kiln.deploy({ spec: spec({ image: { allowSecretFiles: ["config/.env"] } }), baseDir: dir });
    expect(allowed.outcome).toBe("deployed");
    expect(provider.images.all.size).toBe(1);
    const perEnvironment = spec({ environments: { staging: { image: { allowSecretFiles: ["config"] } } } });
    await expect(kiln.plan({ spec: perEnvironment, baseDir: dir })).rejects.toMatchObject({ code: "SECRET_FILES_IN_CONTEXT" });
    expect((await kiln.plan({ spec: perEnvironment, baseDir: dir, environment: "staging" })).image.action).toBeDefined();
    await kiln.close();
  });
});
