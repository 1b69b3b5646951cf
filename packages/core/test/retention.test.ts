// Kiln.listImages and Kiln.collectGarbage with the in-memory provider and the file store: the
// keep window, two environments of one service, in-use images, the dry run, a killed collection
// finished by the next one through its journal, and the spec's retention after a deploy.
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { createFileStateStore, createKiln, journalCrashPoints, type Kiln, type KilnEvent, type Provider, type SpecInput, type StateStore } from "../src/index.js";
import { createMemoryProvider, type MemoryProvider } from "@kilnjs/testkit";

const spec = {
  service: "web",
  provider: "memory",
  instances: { count: 1, ports: [{ name: "http", port: 8080 }] },
  health: { http: { port: "http" }, intervalMs: 100, timeoutMs: 100, healthyThreshold: 1, stabilityWindowMs: 0 },
  environments: { staging: {}, prod: {} },
};

let dir: string;
let store: StateStore;
let provider: MemoryProvider;
let kiln: Kiln;
const events: KilnEvent[] = [];

beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "kiln-retention-"));
  await writeFile(path.join(dir, "Dockerfile"), "FROM scratch\nCOPY app.txt /\n");
  store = createFileStateStore({ directory: path.join(dir, ".kiln", "state") });
  provider = createMemoryProvider();
  events.length = 0;
  kiln = open(provider);
});
afterEach(async () => {
  await kiln.close();
  await rm(dir, { recursive: true, force: true });
});

function open(memory: Provider, extra: Parameters<typeof createKiln>[0]["journalHooks"] = undefined): Kiln {
  return createKiln({ providers: { memory }, store, dataDir: path.join(dir, ".kiln"), onEvent: (event) => events.push(event), ...(extra ? { journalHooks: extra } : {}) });
}

/** Deploys version `version` of the app to `environment`; returns the image id the release runs. */
async function deploy(version: number, environment: string, given: SpecInput = spec): Promise<string> {
  await writeFile(path.join(dir, "app.txt"), `v${version}\n`);
  const result = await kiln.deploy({ spec: given, baseDir: dir, environment });
  return result.release.image.id;
}

const imageIds = () => [...provider.images.all.keys()].sort();

describe("Kiln.collectGarbage", () => {
  it("keeps the current release and keep-1 before it; the dry run removes nothing", async () => {
    const built: string[] = [];
    for (const version of [1, 2, 3, 4]) built.push(await deploy(version, "staging"));
    const dry = await kiln.collectGarbage({ spec, baseDir: dir, environment: "staging", keep: 2 });
    expect(dry.applied).toBe(false);
    expect(dry.plan.retainedReleases).toEqual([4, 3]);
    expect(dry.plan.remove.map((usage) => usage.image.id)).toEqual(built.slice(0, 2));
    expect(imageIds()).toEqual([...built].sort());
    expect(provider.calls.removeImage).toBe(0);

    const applied = await kiln.collectGarbage({ spec, baseDir: dir, environment: "staging", keep: 2, apply: true });
    expect(applied.removed.map((image) => image.id)).toEqual(built.slice(0, 2));
    expect(applied.failed).toEqual([]);
    expect(imageIds()).toEqual(built.slice(2).sort());
    expect(events.filter((event) => event.type === "image.removed")).toHaveLength(2);

    // The collection is journaled like a rollout: an intent and an outcome per image, on a gc record.
    const record = (await store.read({ service: "web", environment: "staging" })).rollouts.find((rollout) => rollout.id === applied.gcId)!;
    expect(record).toMatchObject({ kind: "gc", status: "succeeded" });
    expect(journalCrashPoints(record)).toEqual(["intent:remove:1", "outcome:remove:1", "intent:remove:2", "outcome:remove:2"]);
    // Nothing more to do: no second record.
    expect((await kiln.collectGarbage({ spec, baseDir: dir, environment: "staging", keep: 2, apply: true })).gcId).toBeUndefined();
  });

  it("rolling back still works inside the window after a collection", async () => {
    for (const version of [1, 2, 3]) await deploy(version, "staging");
    await kiln.collectGarbage({ spec, baseDir: dir, environment: "staging", keep: 2, apply: true });
    const rolledBack = await kiln.rollback({ spec, baseDir: dir, environment: "staging" });
    expect(rolledBack).toMatchObject({ outcome: "deployed", release: { rollbackOf: 2 } });
  });

  it("two environments on one host: each keeps its window, and collecting one never takes what the other references or runs", async () => {
    const staging1 = await deploy(1, "staging");
    const shared = await deploy(2, "staging");
    const staging3 = await deploy(3, "staging");
    // prod deploys version 2 (the same fingerprint: the staging image is reused), then 4.
    expect(await deploy(2, "prod")).toBe(shared);
    const prod4 = await deploy(4, "prod");

    const ofStaging = await kiln.collectGarbage({ spec, baseDir: dir, environment: "staging", keep: 1, apply: true });
    expect(ofStaging.removed.map((image) => image.id)).toEqual([staging1]);
    expect(imageIds()).toEqual([shared, staging3, prod4].sort());

    const ofProd = await kiln.collectGarbage({ spec, baseDir: dir, environment: "prod", keep: 1, apply: true });
    // prod's release 1 (image `shared`) is outside prod's window, but staging's release 2 references it.
    expect(ofProd.removed).toEqual([]);
    expect(ofProd.plan.kept.find((kept) => kept.image.id === shared)?.reasons.join()).toMatch(/web@staging/);
    expect(imageIds()).toEqual([shared, staging3, prod4].sort());
  });

  it("another environment's declared retention bounds what it keeps: a shared image outside both windows goes", async () => {
    const withProdWindow = { ...spec, environments: { staging: {}, prod: { retention: { keep: 1 } } } };
    const shared = await deploy(1, "staging", withProdWindow);
    const staging2 = await deploy(2, "staging", withProdWindow);
    expect(await deploy(1, "prod", withProdWindow)).toBe(shared);
    const prod3 = await deploy(3, "prod", withProdWindow);
    // prod's own clean-ups kept `shared`: staging (no retention declared) references it.
    expect(imageIds()).toEqual([shared, staging2, prod3].sort());
    const result = await kiln.collectGarbage({ spec: withProdWindow, baseDir: dir, environment: "staging", keep: 1, apply: true });
    expect(result.removed.map((image) => image.id)).toEqual([shared]);
    expect(imageIds()).toEqual([staging2, prod3].sort());
  });

  it("never removes an image an instance runs, even outside every window", async () => {
    const old = await deploy(1, "staging");
    await deploy(2, "staging");
    // A stray instance of the old image (as an interrupted rollout would leave one).
    await provider.instances.launch(
      { target: { service: "web", environment: "staging" }, release: 1, rolloutId: "r-stray", idempotencyKey: "stray", image: provider.images.all.get(old)!, config: { ports: [], env: {}, labels: {}, stopGracePeriodMs: 0 }, count: 1 },
      { signal: new AbortController().signal, logger: console, emit() {} },
    );
    const result = await kiln.collectGarbage({ spec, baseDir: dir, environment: "staging", keep: 1, apply: true });
    expect(result.removed).toEqual([]);
    expect(result.plan.kept.find((kept) => kept.image.id === old)?.reasons.join()).toMatch(/runs it/);
    expect(imageIds()).toContain(old);
  });

  it("lists a service's images with their releases, environments and the instances that run them", async () => {
    const first = await deploy(1, "staging");
    const second = await deploy(2, "staging");
    await deploy(1, "prod");
    const listed = await kiln.listImages({ spec, baseDir: dir, environment: "staging" });
    const byId = new Map(listed.map((usage) => [usage.image.id, usage]));
    expect([...byId.keys()].sort()).toEqual([first, second].sort());
    expect(byId.get(first)).toMatchObject({ environments: ["prod", "staging"], inUse: true, instances: [{ environment: "prod" }] });
    expect(byId.get(first)!.releases).toEqual([
      { environment: "prod", release: 1, status: "succeeded", current: true },
      { environment: "staging", release: 1, status: "succeeded", current: false },
    ]);
    expect(byId.get(second)).toMatchObject({ environments: ["staging"], inUse: true });
    // One instances.list per target, not per image.
    const before = provider.calls.list;
    await kiln.listImages({ spec, baseDir: dir, environment: "staging" });
    expect(provider.calls.list - before).toBe(2);
  });

  it("a collection killed during a removal is finished by the next one, even when the image is no longer listed", async () => {
    const built: string[] = [];
    for (const version of [1, 2, 3]) built.push(await deploy(version, "staging"));
    // The process dies during the first removal (the journal hook's kill stands for the death),
    // after the provider got half-way: the image is gone from the list, its removal unfinished.
    const halfRemoved: string[] = [];
    const removed: string[] = [];
    const dies: Provider = {
      ...provider,
      images: {
        ...provider.images,
        list: async (service, ctx) => (await provider.images.list(service, ctx)).filter((image) => !halfRemoved.includes(image.id)),
        find: provider.images.find.bind(provider.images),
        async remove(image, ctx) {
          removed.push(image.id);
          await provider.images.remove(image, ctx);
        },
      },
    };
    await kiln.close();
    const kill = () => {
      halfRemoved.push(built[0]!);
      throw new Error("killed half-way through the removal");
    };
    kiln = open(dies, { crashAt: "intent:remove:1", kill });
    await expect(kiln.collectGarbage({ spec, baseDir: dir, environment: "staging", keep: 1, apply: true })).rejects.toThrow("killed half-way");
    await kiln.close();
    kiln = open(dies);
    const killed = (await store.read({ service: "web", environment: "staging" })).rollouts.find((rollout) => rollout.kind === "gc")!;
    expect(killed.status).toBe("running");
    expect(journalCrashPoints(killed)).toEqual(["intent:remove:1"]);

    const resumed = await kiln.collectGarbage({ spec, baseDir: dir, environment: "staging", keep: 1, apply: true });
    expect(resumed.resumed.map((image) => image.id)).toEqual([built[0]]);
    expect(removed.sort()).toEqual([built[0], built[1]].sort());
    expect(imageIds()).toEqual([built[2]]);
    const records = (await store.read({ service: "web", environment: "staging" })).rollouts.filter((rollout) => rollout.kind === "gc");
    expect(records.map((record) => record.status)).toEqual(["aborted", "succeeded"]);
    // A third run has nothing left to finish.
    expect((await kiln.collectGarbage({ spec, baseDir: dir, environment: "staging", keep: 1, apply: true })).resumed).toEqual([]);
  });

  it("a cancelled collection is recorded aborted, and the next one finishes its removals", async () => {
    const built: string[] = [];
    for (const version of [1, 2, 3]) built.push(await deploy(version, "staging"));
    const controller = new AbortController();
    const cancels: Provider = {
      ...provider,
      images: {
        ...provider.images,
        list: provider.images.list.bind(provider.images),
        find: provider.images.find.bind(provider.images),
        async remove(image, ctx) {
          controller.abort(new Error("Ctrl-C"));
          await provider.images.remove(image, ctx);
        },
      },
    };
    await kiln.close();
    kiln = open(cancels);
    await expect(kiln.collectGarbage({ spec, baseDir: dir, environment: "staging", keep: 1, apply: true, signal: controller.signal })).rejects.toMatchObject({ code: "ABORTED" });
    const record = (await store.read({ service: "web", environment: "staging" })).rollouts.find((rollout) => rollout.kind === "gc")!;
    expect(record).toMatchObject({ status: "aborted", error: { code: "ABORTED" } });
    expect(await store.lockStatus({ service: "web", environment: "staging" })).toBeUndefined();
    await kiln.close();
    kiln = open(provider);
    const next = await kiln.collectGarbage({ spec, baseDir: dir, environment: "staging", keep: 1, apply: true });
    expect(next.resumed.map((image) => image.id)).toEqual([built[0]]);
    expect(imageIds()).toEqual([built[2]]);
  });

  it("takes the locks of every environment: a held lock of another environment refuses the collection", async () => {
    await deploy(1, "staging");
    await deploy(2, "prod");
    const held = await store.lock({ service: "web", environment: "prod" }, { user: "u", host: os.hostname(), pid: process.pid, command: "test", since: new Date().toISOString() });
    try {
      await expect(kiln.collectGarbage({ spec, baseDir: dir, environment: "staging", keep: 1, apply: true })).rejects.toMatchObject({ code: "TARGET_LOCKED" });
    } finally {
      await held.release();
    }
    expect(await store.lockStatus({ service: "web", environment: "staging" })).toBeUndefined();
  });
});

describe("retention in the spec", () => {
  it("runs the collection after each successful deploy, never after a failed one", async () => {
    const withRetention = { ...spec, retention: { keep: 2 } };
    const built: string[] = [];
    for (const version of [1, 2, 3]) built.push(await deploy(version, "staging", withRetention));
    expect(imageIds()).toEqual(built.slice(1).sort());

    // A failed deploy (its build fails) removes nothing.
    await kiln.close();
    const failing = createMemoryProvider({ failBuild: () => "broken" });
    kiln = open(failing);
    await writeFile(path.join(dir, "app.txt"), "v9\n");
    await expect(kiln.deploy({ spec: withRetention, baseDir: dir, environment: "staging" })).rejects.toMatchObject({ code: "BUILD_FAILED" });
    expect(failing.calls.removeImage).toBe(0);
  });

  it("a failed clean-up is a warning event, not a failed deploy", async () => {
    const withRetention = { ...spec, retention: { keep: 1 } };
    await deploy(1, "staging", withRetention);
    await deploy(1, "prod", withRetention);
    const held = await store.lock({ service: "web", environment: "prod" }, { user: "u", host: os.hostname(), pid: process.pid, command: "test", since: new Date().toISOString() });
    try {
      const imageId = await deploy(2, "staging", withRetention);
      expect(imageIds()).toContain(imageId);
    } finally {
      await held.release();
    }
    expect(events.find((event) => event.type === "retention.failed")).toMatchObject({ code: "TARGET_LOCKED" });
  });

  it("reports an invalid retention with its path", async () => {
    await expect(kiln.deploy({ spec: { ...spec, retention: { keep: 0 } }, baseDir: dir })).rejects.toMatchObject({ code: "SPEC_INVALID", message: expect.stringContaining("retention.keep") });
  });
});

