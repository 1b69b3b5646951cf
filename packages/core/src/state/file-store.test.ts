import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { createFileStateStore } from "./file-store.js";
import type { Holder } from "./types.js";

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "kiln-store-"));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const target = { service: "web", environment: "prod" };
const holder: Holder = { user: "ci", host: "build-1", pid: 4242, command: "kiln deploy", since: "2026-01-01T00:00:00.000Z" };

describe("createFileStateStore", () => {
  it("reads an empty state for a target never deployed", async () => {
    const store = createFileStateStore({ directory: dir });
    expect(await store.read(target)).toEqual({ target, releases: [], rollouts: [], currentRelease: undefined });
    expect(await store.listTargets()).toEqual([]);
  });

  it("keeps updates, serialising concurrent ones", async () => {
    const store = createFileStateStore({ directory: dir });
    await Promise.all(
      Array.from({ length: 20 }, (_, index) =>
        store.update(target, (state) => {
          state.currentRelease = (state.currentRelease ?? 0) + 1;
          return index;
        }),
      ),
    );
    expect((await createFileStateStore({ directory: dir }).read(target)).currentRelease).toBe(20);
    expect(await store.listTargets()).toEqual([target]);
  });

  it("reports a corrupt state file with STATE_CORRUPT", async () => {
    await writeFile(path.join(dir, "web@prod.json"), "{ not json");
    await expect(createFileStateStore({ directory: dir }).read(target)).rejects.toMatchObject({ code: "STATE_CORRUPT" });
  });

  it("gives the rollout lock to one holder at a time, naming the holder to the other", async () => {
    const first = createFileStateStore({ directory: dir });
    const second = createFileStateStore({ directory: dir });
    const lock = await first.lock(target, holder);
    const error = await second.lock(target, { ...holder, pid: 1 }).catch((e: unknown) => e);
    expect(error).toMatchObject({ code: "TARGET_LOCKED" });
    expect((error as Error).message).toContain("ci@build-1 (pid 4242");
    await lock.release();
    await lock.release();
    const again = await second.lock(target, holder);
    await again.release();
  });
});
