// `kiln images` and `kiln gc`, run in-process with the in-memory provider injected: the dry run is
// the default, --yes removes, --json prints one document, bad flags are exit 2.
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { JournalHooks } from "@kilnjs/core";
import { createMemoryProvider, type MemoryProvider } from "@kilnjs/testkit";
import { runCaptured, type CapturedRun } from "./run-in-process.testing.js";

let dir: string;
let provider: MemoryProvider;
beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "kiln-cli-gc-"));
  await writeFile(path.join(dir, "Dockerfile"), "FROM scratch\nCOPY app.txt /\n");
  await writeFile(
    path.join(dir, "kiln.yaml"),
    "service: web\nprovider: memory\ninstances:\n  count: 1\n  ports: [{ name: http, port: 8080 }]\nhealth: { http: { port: http }, intervalMs: 100, healthyThreshold: 1 }\n",
  );
  provider = createMemoryProvider();
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function kiln(...args: string[]): Promise<CapturedRun> {
  return kilnWith({}, ...args);
}

async function kilnWith(journalHooks: JournalHooks, ...args: string[]): Promise<CapturedRun> {
  return runCaptured([...args, "-C", dir], { kilnOptions: { providers: { memory: provider }, journalHooks } });
}

async function deployVersions(count: number): Promise<void> {
  for (let version = 1; version <= count; version++) {
    await writeFile(path.join(dir, "app.txt"), `v${version}\n`);
    expect((await kiln("deploy", "--json")).code).toBe(0);
  }
}

describe("kiln images and kiln gc", () => {
  it("lists the images with their releases and whether an instance runs them", async () => {
    await deployVersions(2);
    const table = await kiln("images");
    expect(table.code).toBe(0);
    expect(table.stdout).toMatch(/^IMAGE\s+FINGERPRINT\s+SIZE\s+CREATED\s+RELEASES\s+RUNNING$/m);
    expect(table.stdout).toMatch(/default#2\*\s+yes \(1\)/);
    expect(table.stdout).toMatch(/default#1\s+no/);
    const json = JSON.parse((await kiln("images", "--json")).stdout) as { type: string; images: Array<{ inUse: boolean }> };
    expect(json.type).toBe("images");
    expect(json.images.map((image) => image.inUse)).toEqual([true, false]);
  });

  it("is a dry run without --yes, removes with it, and says when there is nothing left", async () => {
    await deployVersions(3);
    const dry = await kiln("gc", "--keep", "2");
    expect(dry.code).toBe(0);
    expect(dry.stdout).toContain("web@default: keeping releases 3, 2 (keep 2)");
    expect(dry.stdout).toContain("1 image(s) would be removed");
    expect(dry.stdout).toContain("--yes");
    expect(provider.images.all.size).toBe(3);

    const applied = JSON.parse((await kiln("gc", "--keep", "2", "--yes", "--json")).stdout.trim().split("\n").at(-1)!) as { type: string; applied: boolean; removed: unknown[]; failed: unknown[] };
    expect(applied).toMatchObject({ type: "gc", applied: true, failed: [] });
    expect(applied.removed).toHaveLength(1);
    expect(provider.images.all.size).toBe(2);
    expect((await kiln("gc", "--keep", "2", "--yes")).stdout).toContain("Nothing to remove.");
  });

  it("refuses a bad --keep or --older-than with exit 2, before touching anything", async () => {
    expect(await kiln("gc", "--keep", "0")).toMatchObject({ code: 2, stderr: expect.stringContaining("--keep takes a whole number") as unknown });
    expect(await kiln("gc", "--older-than", "30d")).toMatchObject({ code: 2, stderr: expect.stringContaining("is not a duration") as unknown });
    expect(provider.calls.listImages).toBe(0);
  });

  it("status names an interrupted gc and what finishes it; the next gc --yes does", async () => {
    await deployVersions(2);
    const killed = await kilnWith({ crashAt: "intent:remove:1", kill: () => { throw new Error("killed at the crash point"); } }, "gc", "--keep", "1", "--yes");
    expect(killed.code).not.toBe(0);
    expect(provider.images.all.size).toBe(2);
    expect((await kiln("status")).stdout).toMatch(/gc \S+ was interrupted .*the next kiln gc --yes finishes its removals/);
    const finished = await kiln("gc", "--keep", "1", "--yes");
    expect(finished.code).toBe(0);
    expect(finished.stdout).toContain("finished the removal of");
    expect(provider.images.all.size).toBe(1);
  });
});
