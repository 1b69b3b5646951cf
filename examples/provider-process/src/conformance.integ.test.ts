// The provider conformance suite from @kilnjs/testkit against the process provider (real local
// processes), then what this provider promises beyond it: its instances serve HTTP on their
// endpoints, an exited process is listed as stopped, and core deploys a service through it.
import { randomBytes } from "node:crypto";
import { mkdtemp, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";
import { LABELS, createKiln, probeHttp, silentLogger, waitFor, type Endpoint, type ImageRecipe, type Instance, type InstanceConfig, type ProviderContext, type SpecInput, type Target } from "@kilnjs/core";
import { runProviderConformance } from "@kilnjs/testkit";
import { createProcessProvider } from "./index.js";

const HELLO_WEB = fileURLToPath(new URL("../../hello-web", import.meta.url));
const work = await mkdtemp(path.join(tmpdir(), "kiln-process-"));
const dataDir = path.join(work, "data");
const context = (): ProviderContext => ({ signal: AbortSignal.timeout(30_000), logger: silentLogger, emit() {} });

/** Kills what is left of a service's processes, bypassing the provider, from its records. */
async function killService(service: string): Promise<void> {
  const instancesDir = path.join(dataDir, "instances");
  for (const name of await readdir(instancesDir).catch(() => [])) {
    if (!name.endsWith(".json")) continue;
    const record = JSON.parse(await readFile(path.join(instancesDir, name), "utf8")) as { instance: Instance; pid: number };
    if (record.instance.labels[LABELS.service] !== service) continue;
    try {
      process.kill(-record.pid, "SIGKILL");
    } catch {
      // already gone
    }
  }
}

afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

// A tiny server for the suite; it ends itself after two minutes, should every cleanup fail.
await writeFile(
  path.join(work, "server.js"),
  'require("node:http").createServer((request, response) => response.end("conformance\\n")).listen(Number(process.env.PORT), "127.0.0.1");\n' +
    "setTimeout(() => process.exit(0), 120_000);\n",
);

runProviderConformance({
  name: "process",
  createProvider: () => createProcessProvider({ dataDir }),
  makeRecipe: async ({ service, fingerprint }) => ({
    target: { service, environment: "conformance" },
    fingerprint,
    machine: {
      kind: "machine",
      steps: [
        { kind: "file", from: path.join(work, "server.js"), to: "/srv/server.js", directory: false, files: [""] },
        { kind: "run", command: "echo provisioned > srv/provisioned.txt" },
      ],
      base: undefined,
      builder: undefined,
      timeoutMs: 30_000,
    },
  }),
  launchConfig: { command: ["node", "server.js"], providerSettings: { workingDirectory: "/srv" } },
  cleanup: killService,
  timeoutMs: 30_000,
});

/** Waits until hello-web answers GET /healthz on `endpoint` (a deadline, no fixed sleep). */
async function waitUntilServing(endpoint: Endpoint): Promise<void> {
  await waitFor(
    async () => {
      const probe = await probeHttp(endpoint, { kind: "http", portName: "http", path: "/healthz", expectStatus: [200, 299] }, 1_000);
      return probe.ok ? { done: true, value: undefined } : { done: false, reason: probe.reason };
    },
    { timeoutMs: 15_000, minDelayMs: 20, maxDelayMs: 200, description: `hello-web to answer on ${endpoint.port}` },
  );
}

const helloWebVersion = (await readFile(path.join(HELLO_WEB, "version.txt"), "utf8")).trim();
const nodeMajor = process.versions.node.split(".")[0]!;

describe("process provider", () => {
  const provider = createProcessProvider({ dataDir });
  const service = `pp-${randomBytes(4).toString("hex")}`;

  afterAll(async () => {
    for (const environment of ["test", "default"]) {
      const left = await provider.instances.list({ target: { service, environment } }, context());
      await provider.instances.terminate(left, { gracePeriodMs: 0 }, context());
    }
    for (const image of await provider.images.list(service, context())) await provider.images.remove(image, context());
    await killService(service);
  }, 30_000);

  it("builds hello-web into an image whose instances serve HTTP on their endpoints; an instance whose process exits is listed as stopped", async () => {
    const target: Target = { service, environment: "test" };
    const recipe: ImageRecipe = {
      target,
      fingerprint: `sha256:${randomBytes(32).toString("hex")}`,
      machine: {
        kind: "machine",
        steps: [{ kind: "file", from: HELLO_WEB, to: "/app", directory: true, files: ["server.js", "version.txt"] }],
        base: { node: nodeMajor },
        builder: undefined,
        timeoutMs: 30_000,
      },
    };
    const steps: string[] = [];
    const image = await provider.images.build(recipe, { ...context(), emit: (progress) => void (progress.type === "image.build.step" && steps.push(progress.description)) });
    expect(steps).toEqual([`file ${HELLO_WEB} → /app`]);

    const config: InstanceConfig = { ports: [{ name: "http", port: 8080, protocol: "tcp" }], env: {}, labels: {}, stopGracePeriodMs: 1_000, command: ["node", "server.js"], providerSettings: { workingDirectory: "/app" } };
    const launch = { target, rolloutId: "ro-1", image, count: 1 };
    const [serving] = await provider.instances.launch({ ...launch, release: 1, idempotencyKey: `${service}-1`, config }, context());
    await waitUntilServing(serving!.endpoints.http!);
    const answer = (await (await fetch(`http://127.0.0.1:${serving!.endpoints.http!.port}/version`)).json()) as { version: string };
    expect(answer.version).toBe(helloWebVersion);

    // hello-web's EXIT_AFTER_MS makes it exit with code 1: a crashing release.
    const [crashing] = await provider.instances.launch({ ...launch, release: 2, idempotencyKey: `${service}-2`, config: { ...config, env: { EXIT_AFTER_MS: "100" } } }, context());
    const stateOf = async (instance: Instance) => (await provider.instances.list({ target }, context())).find((listed) => listed.id === instance.id)?.state;
    await waitFor(async () => ((await stateOf(crashing!)) === "stopped" ? { done: true, value: undefined } : { done: false }), {
      timeoutMs: 15_000,
      minDelayMs: 20,
      maxDelayMs: 200,
      description: "the crashing instance to be listed as stopped",
    });
    expect(await stateOf(serving!)).toBe("running");
  }, 60_000);

  it("refuses to build an image for another Node.js than the one Kiln runs on", async () => {
    const other = String(Number(nodeMajor) + 1);
    const recipe: ImageRecipe = {
      target: { service, environment: "test" },
      fingerprint: `sha256:${randomBytes(32).toString("hex")}`,
      machine: { kind: "machine", steps: [{ kind: "run", command: "true" }], base: { node: other }, builder: undefined, timeoutMs: 30_000 },
    };
    await expect(provider.images.build(recipe, context())).rejects.toMatchObject({ code: "BUILD_FAILED", message: expect.stringContaining(`Node.js ${other}`) });
  });

  it("says the data folder cannot be used with PROVIDER_UNAVAILABLE", async () => {
    const file = path.join(work, "not-a-folder");
    await writeFile(file, "");
    await expect(createProcessProvider({ dataDir: path.join(file, "data") }).ping(context())).rejects.toMatchObject({
      code: "PROVIDER_UNAVAILABLE",
      message: expect.stringContaining("cannot be used"),
    });
  });

  it("is deployed by core from a spec, and a second deploy replaces every instance (a rolling rollout)", async () => {
    const kiln = createKiln({ providers: { process: provider }, dataDir: path.join(work, "kiln") });
    const spec = (level: string): SpecInput => ({
      service,
      provider: "process",
      image: { machine: { provision: [{ file: { from: ".", to: "/app" } }], base: { process: { node: nodeMajor } } } },
      instances: { count: 2, ports: [{ name: "http", port: 8080 }], env: { LOG_LEVEL: level }, command: ["node", "server.js"], process: { workingDirectory: "/app" }, stopGracePeriodMs: 2_000 },
      health: { http: { port: "http", path: "/healthz" }, intervalMs: 100, timeoutMs: 1_000, healthyThreshold: 1, stabilityWindowMs: 0 },
      rollout: { strategy: "rolling", maxSurge: 1, maxUnavailable: 0 },
    });
    const first = await kiln.deploy({ spec: spec("info"), baseDir: HELLO_WEB, signal: AbortSignal.timeout(60_000) });
    expect(first.outcome).toBe("deployed");
    const target: Target = { service, environment: "default" };
    const running = await provider.instances.list({ target }, context());
    expect(running.map((instance) => [instance.release, instance.state])).toEqual([
      [first.release.number, "running"],
      [first.release.number, "running"],
    ]);
    const answer = (await (await fetch(`http://127.0.0.1:${running[0]!.endpoints.http!.port}/version`)).json()) as { version: string };
    expect(answer.version).toBe(helloWebVersion);

    const second = await kiln.deploy({ spec: spec("debug"), baseDir: HELLO_WEB, signal: AbortSignal.timeout(60_000) });
    expect(second.outcome).toBe("deployed");
    expect(second.release.number).toBeGreaterThan(first.release.number);
    const after = await provider.instances.list({ target }, context());
    expect(after.map((instance) => instance.release)).toEqual([second.release.number, second.release.number]);
    expect(after.map((instance) => instance.id).filter((id) => running.some((old) => old.id === id)), "every old instance was replaced").toEqual([]);
  }, 120_000);
});
