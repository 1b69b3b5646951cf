// Garbage collection on a real engine, through core: two environments of one service on one
// host, each with its window; images an instance runs are kept; the dry run removes nothing; a
// killed collection is finished by the next one; the engine's "in use" is IMAGE_IN_USE.
import { randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import Docker from "dockerode";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LABELS, createKiln, journalCrashPoints, silentLogger, type JournalHooks, type Kiln, type ProviderContext, type SpecInput } from "@kilnjs/core";
import { requireDockerEngine } from "@kilnjs/testkit";
import { BASE_IMAGE } from "./test-support.js";
import { createDockerProvider } from "./index.js";

const engine = await requireDockerEngine();

describe.skipIf(!engine)("garbage collection on a real engine", () => {
  const docker = new Docker(process.env.DOCKER_HOST?.startsWith("unix://") ? { socketPath: process.env.DOCKER_HOST.slice("unix://".length) } : undefined);
  const service = `kgc-${randomBytes(3).toString("hex")}`;
  const ctx: ProviderContext = { signal: new AbortController().signal, logger: silentLogger, emit: () => {} };
  let dir: string;
  const spec: SpecInput = {
    service,
    provider: "docker",
    instances: { count: 1, ports: [{ name: "http", port: 8080 }], stopGracePeriodMs: 1_000 },
    health: { tcp: { port: "http" }, intervalMs: 200, timeoutMs: 1_000, healthyThreshold: 1 },
    environments: { staging: {}, prod: {} },
  };

  const open = (journalHooks?: JournalHooks): Kiln => createKiln({ providers: { docker: () => createDockerProvider() }, dataDir: path.join(dir, ".kiln"), ...(journalHooks ? { journalHooks } : {}) });
  const exists = (id: string) => docker.getImage(id).inspect().then(() => true, () => false);

  async function deploy(kiln: Kiln, version: number, environment: string): Promise<string> {
    await writeFile(path.join(dir, "version.txt"), `v${version}\n`);
    return (await kiln.deploy({ spec, baseDir: dir, environment })).release.image.id;
  }

  beforeAll(async () => {
    await docker.getImage(BASE_IMAGE).inspect().catch((error: unknown) => {
      throw new Error(`${BASE_IMAGE} is missing: run bash scripts/base-images.sh first`, { cause: error });
    });
    dir = await mkdtemp(path.join(tmpdir(), "kiln-docker-gc-"));
    await writeFile(path.join(dir, "Dockerfile"), [`FROM ${BASE_IMAGE}`, "COPY version.txt /www/version.txt", 'CMD ["httpd", "-f", "-p", "8080", "-h", "/www"]', ""].join("\n"));
  });

  afterAll(async () => {
    const provider = createDockerProvider();
    for (const environment of ["staging", "prod"]) {
      const instances = await provider.instances.list({ target: { service, environment } }, ctx);
      await provider.instances.terminate(instances, { gracePeriodMs: 0 }, ctx);
    }
    for (const image of await docker.listImages({ filters: { label: [`${LABELS.service}=${service}`] } })) await docker.getImage(image.Id).remove({ force: true }).catch(() => {});
    await provider.close?.();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("two environments on one host: each keeps its window, in-use images stay, a dry run removes nothing, a killed gc is finished", { timeout: 240_000 }, async () => {
    let kiln = open();
    let staging1: string, shared: string, staging3: string, prod4: string;
    try {
      staging1 = await deploy(kiln, 1, "staging");
      shared = await deploy(kiln, 2, "staging");
      staging3 = await deploy(kiln, 3, "staging");
      expect(await deploy(kiln, 2, "prod")).toBe(shared);
      prod4 = await deploy(kiln, 4, "prod");

      const listed = await kiln.listImages({ spec, baseDir: dir, environment: "staging" });
      expect(listed.map((usage) => usage.image.id).sort()).toEqual([staging1, shared, staging3, prod4].sort());
      expect(listed.every((usage) => typeof usage.image.sizeBytes === "number" && usage.image.sizeBytes > 0)).toBe(true);
      expect(listed.find((usage) => usage.image.id === staging3)).toMatchObject({ inUse: true, environments: ["staging"] });
      expect(listed.find((usage) => usage.image.id === shared)).toMatchObject({ inUse: false, environments: ["prod", "staging"] });

      const dry = await kiln.collectGarbage({ spec, baseDir: dir, environment: "staging", keep: 1 });
      expect(dry.plan.remove.map((usage) => usage.image.id)).toEqual([staging1]);
      expect(await exists(staging1)).toBe(true);
    } finally {
      await kiln.close();
    }

    // Killed right after announcing the first removal; the next collection finishes it.
    kiln = open({ crashAt: "intent:remove:1", kill: () => { throw new Error("killed"); } });
    try {
      await expect(kiln.collectGarbage({ spec, baseDir: dir, environment: "staging", keep: 1, apply: true })).rejects.toThrow("killed");
    } finally {
      await kiln.close();
    }
    expect(await exists(staging1)).toBe(true);
    kiln = open();
    try {
      const applied = await kiln.collectGarbage({ spec, baseDir: dir, environment: "staging", keep: 1, apply: true });
      expect(applied.resumed.map((image) => image.id)).toEqual([staging1]);
      expect(applied.removed.map((image) => image.id)).toEqual([staging1]);
      expect(await exists(staging1)).toBe(false);
      // prod's window (release 2, image prod4) and its instance, staging's current image and the image
      // staging's release 2 shares with prod's release 1 all stay.
      for (const id of [shared, staging3, prod4]) expect(await exists(id)).toBe(true);
      const history = await kiln.history({ spec, baseDir: dir, environment: "staging" });
      const gcs = history.rollouts.filter((rollout) => rollout.kind === "gc");
      expect(gcs.map((rollout) => rollout.status)).toEqual(["succeeded", "aborted"]);
      expect(journalCrashPoints(gcs[0]!)).toEqual(["intent:remove:1", "outcome:remove:1"]);

      const ofProd = await kiln.collectGarbage({ spec, baseDir: dir, environment: "prod", keep: 1, apply: true });
      expect(ofProd.removed).toEqual([]);
      expect(await exists(shared)).toBe(true);
    } finally {
      await kiln.close();
    }
  });

  it("images.remove refuses an image a container runs with IMAGE_IN_USE, and keeps it", { timeout: 60_000 }, async () => {
    const provider = createDockerProvider();
    try {
      const [running] = await provider.instances.list({ target: { service, environment: "prod" } }, ctx);
      expect(running).toBeDefined();
      const image = (await provider.images.list(service, ctx)).find((ref) => ref.id === running!.imageId)!;
      await expect(provider.images.remove(image, ctx)).rejects.toMatchObject({ code: "IMAGE_IN_USE", message: expect.stringContaining("Retire") as unknown });
      expect(await exists(image.id)).toBe(true);
    } finally {
      await provider.close?.();
    }
  });
});
