import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { KilnError } from "../errors.js";
import { silentLogger } from "../logger.js";
import type { ImageRef, Instance, LaunchRequest, Provider, ProviderContext } from "../provider/contract.js";
import { createFileStateStore } from "../state/file-store.js";
import type { RolloutRecord, StateStore } from "../state/types.js";
import { journalCrashPoints, journaled, parseCrashPoint } from "./journaled.js";

const target = { service: "web", environment: "prod" };
const ctx: ProviderContext = { signal: new AbortController().signal, logger: silentLogger, emit() {} };
const image: ImageRef = { id: "img-1", fingerprint: `sha256:${"a".repeat(64)}`, digest: "img-1", names: [] };

let dir: string;
let store: StateStore;
let token: number;
beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "kiln-journal-"));
  store = createFileStateStore({ directory: dir });
  const lock = await store.lock(target, { user: "t", host: "elsewhere", pid: 1, command: "test", since: new Date().toISOString() }, { ttlMs: 60_000 });
  token = lock.token;
  const rollout: RolloutRecord = { id: "r1", target, kind: "deploy", fromRelease: undefined, toRelease: 1, startedAt: new Date().toISOString(), holder: lock.holder, status: "running", journal: [] };
  await store.update(target, (state) => void state.rollouts.push(rollout), { token });
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

function fakeProvider(calls: string[], failLaunch = false): Provider {
  let next = 0;
  const instance = (request: LaunchRequest): Instance => ({
    id: `i${++next}`,
    name: `i${next}`,
    target,
    release: request.release,
    rolloutId: request.rolloutId,
    imageId: request.image.id,
    state: "running",
    restartCount: 0,
    endpoints: {},
    createdAt: new Date().toISOString(),
    labels: {},
  });
  return {
    name: "fake",
    images: {
      build: async () => (calls.push("build"), image),
      find: async () => undefined,
      list: async () => [],
      remove: async () => undefined,
    },
    instances: {
      launch: async (request) => {
        calls.push(`launch ${request.count}`);
        if (failLaunch) throw new KilnError("LAUNCH_FAILED", "no capacity");
        return Array.from({ length: request.count }, () => instance(request));
      },
      list: async () => [],
      terminate: async (instances) => void calls.push(`terminate ${instances.map((i) => i.id).join(",")}`),
    },
    ping: async () => undefined,
  };
}

const launchRequest = (batch: number, count = 1): LaunchRequest => ({ target, release: 1, rolloutId: "r1", idempotencyKey: `r1:launch:${batch}`, image, config: { ports: [], env: {}, labels: {}, stopGracePeriodMs: 1000 }, count });
const journalOf = async () => (await store.read(target)).rollouts[0]!.journal;

describe("journaled", () => {
  it("writes an intent before and an outcome after every build, launch and terminate, with stable step names", async () => {
    const calls: string[] = [];
    const provider = journaled(fakeProvider(calls), { store, target, rolloutId: "r1", token });
    await provider.images.build({ target, fingerprint: image.fingerprint, dockerfile: { kind: "dockerfile", contextDir: "/", dockerfilePath: "/Dockerfile", files: [], args: {} } }, ctx);
    const started = await provider.instances.launch(launchRequest(1, 2), ctx);
    await provider.instances.terminate(started.slice(0, 1), { gracePeriodMs: 0 }, ctx);
    await provider.instances.launch(launchRequest(2), ctx);
    await provider.instances.list({ target }, ctx);
    expect(calls).toEqual(["build", "launch 2", "terminate i1", "launch 1"]);
    const journal = await journalOf();
    expect(journal.map((e) => [e.seq, e.phase, e.step, e.op])).toEqual([
      [1, "intent", "build:1", "images.build"],
      [2, "outcome", "build:1", "images.build"],
      [3, "intent", "launch:1", "instances.launch"],
      [4, "outcome", "launch:1", "instances.launch"],
      [5, "intent", "terminate:1", "instances.terminate"],
      [6, "outcome", "terminate:1", "instances.terminate"],
      [7, "intent", "launch:2", "instances.launch"],
      [8, "outcome", "launch:2", "instances.launch"],
    ]);
    expect(journal[1]).toMatchObject({ result: "ok", imageId: "img-1" });
    expect(journal[2]).toMatchObject({ idempotencyKey: "r1:launch:1", release: 1, count: 2, instanceIds: [] });
    expect(journal[3]).toMatchObject({ result: "ok", instanceIds: ["i1", "i2"] });
    expect(journal[4]).toMatchObject({ instanceIds: ["i1"] });
    expect(journal.every((e) => typeof e.time === "string")).toBe(true);
    expect(journalCrashPoints({ journal })).toEqual([
      "intent:build:1",
      "outcome:build:1",
      "intent:launch:1",
      "outcome:launch:1",
      "intent:terminate:1",
      "outcome:terminate:1",
      "intent:launch:2",
      "outcome:launch:2",
    ]);
  });

  it("journals a failed call with its error code and rethrows it", async () => {
    const provider = journaled(fakeProvider([], true), { store, target, rolloutId: "r1", token });
    await expect(provider.instances.launch(launchRequest(1), ctx)).rejects.toMatchObject({ code: "LAUNCH_FAILED" });
    const journal = await journalOf();
    expect(journal.map((e) => e.phase)).toEqual(["intent", "outcome"]);
    expect(journal[1]).toMatchObject({ result: "failed", error: { code: "LAUNCH_FAILED" } });
  });

  it("makes no provider call when the intent cannot be written: a lost lease is LOCK_LOST", async () => {
    const calls: string[] = [];
    const provider = journaled(fakeProvider(calls), { store, target, rolloutId: "r1", token });
    await store.forceRelease(target);
    await expect(provider.instances.launch(launchRequest(1), ctx)).rejects.toMatchObject({ code: "LOCK_LOST" });
    expect(calls).toEqual([]);
    expect(await journalOf()).toEqual([]);
  });

  it("journals traffic changes and refuses them once the lease is lost", async () => {
    const calls: string[] = [];
    const routed: Provider = {
      ...fakeProvider(calls),
      traffic: {
        register: async (instances) => void calls.push(`register ${instances.length}`),
        deregister: async (instances) => void calls.push(`deregister ${instances.length}`),
      },
    };
    const provider = journaled(routed, { store, target, rolloutId: "r1", token });
    const [started] = await provider.instances.launch(launchRequest(1), ctx);
    const trafficOptions = { target, proxy: { host: "127.0.0.1", port: 8080, portName: "http", retries: 2 } };
    await provider.traffic!.register([started!], trafficOptions, ctx);
    expect((await journalOf()).map((entry) => `${entry.phase}:${entry.step}`)).toEqual(["intent:launch:1", "outcome:launch:1", "intent:register:1", "outcome:register:1"]);
    await store.forceRelease(target);
    await expect(provider.traffic!.deregister([started!], { ...trafficOptions, drainMs: 0 }, ctx)).rejects.toMatchObject({ code: "LOCK_LOST" });
    expect(calls).toEqual(["launch 1", "register 1"]);
  });

  it("dies right after the entry named by the crashAt hook is written", async () => {
    for (const [crashAt, expectedCalls, entries] of [
      ["intent:launch:2", ["launch 1"], 3],
      ["outcome:launch:1", ["launch 1"], 2],
    ] as const) {
      await store.update(target, (state) => void (state.rollouts[0]!.journal = []), { token });
      const calls: string[] = [];
      let killed = 0;
      const provider = journaled(fakeProvider(calls), { store, target, rolloutId: "r1", token, crashAt, kill: () => void (killed += 1) });
      const first = provider.instances.launch(launchRequest(1), ctx);
      if (crashAt.startsWith("outcome")) {
        // The call happened, its outcome was written, and then the process "died": the call never returns.
        const settled = await Promise.race([first.then(() => "returned"), new Promise((resolve) => setTimeout(() => resolve("hung"), 200))]);
        expect(settled).toBe("hung");
      } else {
        await first;
        const second = provider.instances.launch(launchRequest(2), ctx);
        expect(await Promise.race([second.then(() => "returned"), new Promise((resolve) => setTimeout(() => resolve("hung"), 200))])).toBe("hung");
      }
      expect(killed).toBe(1);
      expect(calls).toEqual(expectedCalls);
      expect((await journalOf()).length).toBe(entries);
    }
  });

  it("takes the crash point only from its options, and refuses a malformed one", async () => {
    expect(parseCrashPoint("intent:terminate:3")).toEqual({ phase: "intent", step: "terminate:3" });
    expect(parseCrashPoint("outcome:build:1")).toEqual({ phase: "outcome", step: "build:1" });
    expect(parseCrashPoint("intent:remove:2")).toEqual({ phase: "intent", step: "remove:2" });
    for (const bad of ["launch:1", "intent:launch", "intent:launch:0", "before:launch:1", "intent:deploy:1"]) {
      expect(() => parseCrashPoint(bad)).toThrow(/is not a journal step/);
    }
    const calls: string[] = [];
    const malformed = journaled(fakeProvider(calls), { store, target, rolloutId: "r1", token, crashAt: "intent:lanch:1" });
    await expect(malformed.instances.launch(launchRequest(1), ctx)).rejects.toMatchObject({ code: "INVALID_ARGUMENT" });
    expect(calls).toEqual([]);
    // The environment variable that shipped code used to read is a test seam no more.
    const previous = process.env.KILN_TEST_CRASH_AT;
    process.env.KILN_TEST_CRASH_AT = "intent:launch:1";
    try {
      let killed = 0;
      const unhooked = journaled(fakeProvider(calls), { store, target, rolloutId: "r1", token, kill: () => void (killed += 1) });
      await unhooked.instances.launch(launchRequest(1), ctx);
      expect(killed).toBe(0);
      expect(calls).toEqual(["launch 1"]);
    } finally {
      if (previous === undefined) delete process.env.KILN_TEST_CRASH_AT;
      else process.env.KILN_TEST_CRASH_AT = previous;
    }
  });
});
