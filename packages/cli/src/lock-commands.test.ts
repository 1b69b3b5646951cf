// `kiln lock status`, `kiln lock release --force`, `kiln rollout resume` and `--wait-for-lock`,
// run in-process on a state folder the test prepares. None of these needs a provider to answer.
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { acquireLease, createFileStateStore, type Holder, type StateStore } from "@kilnjs/core";
import { runCaptured, type CapturedRun } from "./run-in-process.testing.js";

const target = { service: "web", environment: "default" };
const DEAD_PID = 2 ** 22 - 1;

let dir: string;
let store: StateStore;
beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "kiln-cli-lock-"));
  await writeFile(path.join(dir, "kiln.yaml"), "service: web\nprovider: docker\ninstances:\n  count: 1\n");
  store = createFileStateStore({ directory: path.join(dir, ".kiln", "state") });
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function kiln(...args: string[]): Promise<CapturedRun & { elapsedMs: number }> {
  const startedAt = Date.now();
  const result = await runCaptured([...args, "-C", dir]);
  return { ...result, elapsedMs: Date.now() - startedAt };
}

const remote = (): Holder => ({ user: "ci", host: "build-7.example", pid: 4242, command: "kiln deploy", since: "2026-01-01T00:00:00.000Z" });

describe("kiln lock", () => {
  it("status says when nobody holds the lock", async () => {
    const result = await kiln("lock", "status");
    expect(result).toMatchObject({ code: 0, stdout: "web@default: not locked\n" });
    expect(JSON.parse((await kiln("lock", "status", "--json")).stdout)).toEqual({ type: "lock", target: "web@default", lock: null });
  });

  it("status names the holder, expiry, token and staleness", async () => {
    const held = await store.lock(target, remote(), { ttlMs: 60_000 });
    const result = await kiln("lock", "status");
    expect(result.code).toBe(0);
    expect(result.stdout).toContain('web@default: locked by ci@build-7.example (pid 4242, "kiln deploy")');
    expect(result.stdout).toContain("since    2026-01-01T00:00:00.000Z");
    expect(result.stdout).toContain("token    1");
    expect(result.stdout).toContain("stale    no");
    const json = JSON.parse((await kiln("lock", "status", "--json")).stdout) as { lock: { token: number; stale: boolean; holder: Holder } };
    expect(json.lock).toMatchObject({ token: 1, stale: false, holder: { pid: 4242 } });
    await held.release();
  });

  it("status flags a lease whose process is gone as stale", async () => {
    await store.update(target, (state) => void acquireLease(state, { ...remote(), host: os.hostname(), pid: DEAD_PID }, 60_000));
    const result = await kiln("lock", "status");
    expect(result.stdout).toContain(`stale    yes: its process (pid ${DEAD_PID} on ${os.hostname()}) is gone`);
  });

  it("release needs --force, then clears the lease; the holder's writes then fail", async () => {
    const held = await store.lock(target, remote(), { ttlMs: 60_000 });
    const refused = await kiln("lock", "release");
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain("needs --force");
    expect((await store.lockStatus(target))?.token).toBe(1);
    const released = await kiln("lock", "release", "--force");
    expect(released.code).toBe(0);
    expect(released.stdout).toContain("Released the lock of web@default held by ci@build-7.example (pid 4242");
    expect(await store.lockStatus(target)).toBeUndefined();
    await expect(store.update(target, () => undefined, { token: held.token })).rejects.toMatchObject({ code: "LOCK_LOST" });
    expect((await kiln("lock", "release", "--force")).stdout).toBe("web@default was not locked; nothing to release.\n");
    await held.release();
  });
});

describe("--wait-for-lock", () => {
  it("refuses a value that is not a duration with exit code 2", async () => {
    for (const bad of ["30", "5 min", "soon"]) {
      const result = await kiln("deploy", "--wait-for-lock", bad);
      expect(result.code).toBe(2);
      expect(result.stderr).toContain(`--wait-for-lock "${bad}" is not a duration`);
    }
  });

  it("fails at once with exit 4 naming the holder, without waiting", async () => {
    const held = await store.lock(target, remote(), { ttlMs: 60_000 });
    const result = await kiln("deploy");
    expect(result.code).toBe(4);
    expect(result.stderr).toContain("[TARGET_LOCKED]");
    expect(result.stderr).toContain('ci@build-7.example (pid 4242, "kiln deploy", since 2026-01-01T00:00:00.000Z)');
    await held.release();
  });

  it("waits, then gives up with exit 4", async () => {
    const held = await store.lock(target, remote(), { ttlMs: 60_000 });
    const result = await kiln("deploy", "--wait-for-lock", "600ms");
    expect(result.code).toBe(4);
    expect(result.elapsedMs).toBeGreaterThanOrEqual(600);
    expect(result.stdout).toContain("waiting up to 0.6s for the lock held by ci@build-7.example");
    expect(result.stderr).toContain("Waited 600 ms for the lock, in vain");
    await held.release();
  });

  it("waits for the holder to let go, then proceeds", async () => {
    const held = await store.lock(target, remote(), { ttlMs: 60_000 });
    setTimeout(() => void held.release(), 500);
    const result = await kiln("rollout", "resume", "--wait-for-lock", "10s", "--json");
    expect(result.code).toBe(0);
    expect(result.elapsedMs).toBeGreaterThanOrEqual(500);
    const lines = result.stdout.trim().split("\n").map((line) => JSON.parse(line) as { type: string });
    expect(lines.map((line) => line.type)).toEqual(["lock.waiting", "result"]);
    expect(lines[1]).toMatchObject({ outcome: "nothing-to-resume", interrupted: [] });
    expect(await store.lockStatus(target)).toBeUndefined();
  });
});

describe("kiln rollout", () => {
  it("resume with nothing interrupted says so", async () => {
    const result = await kiln("rollout", "resume");
    expect(result).toMatchObject({ code: 0, stdout: "No rollout of web@default was interrupted; nothing to resume.\n" });
  });

  it("shows resume and abort in --help", async () => {
    const help = await kiln("rollout", "--help");
    expect(help.stdout).toContain("resume");
    expect(help.stdout).toContain("abort");
    const deployHelp = await kiln("deploy", "--help");
    expect(deployHelp.stdout).toContain("--wait-for-lock <duration>");
  });
});
