// createKiln's test-only journalHooks reach the journal of every rollout: the crash hook a test
// harness passes in (the CLI's crash test kills a real process with it; here `kill` throws instead,
// so the run stops at the crash point and the test can look at what it left).
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { createFileStateStore, createKiln, journalCrashPoints, type StateStore } from "../src/index.js";
import { createMemoryProvider } from "@kilnjs/testkit";

const target = { service: "web", environment: "default" };
const spec = { service: "web", provider: "memory", instances: { count: 1 } };

let dir: string;
let store: StateStore;
beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "kiln-journal-hooks-"));
  await writeFile(path.join(dir, "Dockerfile"), "FROM scratch\nCOPY app.txt /\n");
  await writeFile(path.join(dir, "app.txt"), "v1\n");
  store = createFileStateStore({ directory: path.join(dir, ".kiln", "state") });
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe("createKiln's journalHooks", () => {
  it("crashAt stops a deploy right after the named journal entry, before the provider call it announces", async () => {
    const provider = createMemoryProvider();
    let killed = 0;
    const kill = () => {
      killed += 1;
      throw new Error("killed at the crash point");
    };
    const kiln = createKiln({ providers: { memory: provider }, store, dataDir: path.join(dir, ".kiln"), journalHooks: { crashAt: "intent:launch:1", kill } });
    await expect(kiln.deploy({ spec, baseDir: dir })).rejects.toThrow("killed at the crash point");
    await kiln.close();
    expect(killed).toBe(1);
    expect(provider.launchedIds).toEqual([]);
    const rollout = (await store.read(target)).rollouts[0]!;
    expect(journalCrashPoints(rollout).slice(0, 3)).toEqual(["intent:build:1", "outcome:build:1", "intent:launch:1"]);
    expect(journalCrashPoints(rollout).filter((point) => point.includes(":launch:"))).toEqual(["intent:launch:1"]);
  });

  it("without them, the same deploy runs to the end", async () => {
    const provider = createMemoryProvider();
    const kiln = createKiln({ providers: { memory: provider }, store, dataDir: path.join(dir, ".kiln") });
    const result = await kiln.deploy({ spec, baseDir: dir });
    await kiln.close();
    expect(result.outcome).toBe("deployed");
    expect(provider.launchedIds).toHaveLength(1);
    expect(journalCrashPoints((await store.read(target)).rollouts[0]!)).toContain("outcome:launch:1");
  });
});
