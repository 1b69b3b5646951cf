import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { KilnError, isKilnError } from "../errors.js";
import { sleep, waitFor } from "../wait.js";
import { createFileStateStore } from "./file-store.js";
import { acquireLease, keepLease, leaseStaleReason, processAlive } from "./lease.js";
import { emptyTargetState, type Holder } from "./types.js";

/** A pid no process has on Linux (pid_max is at most 2^22). */
const DEAD_PID = 2 ** 22 - 1;

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "kiln-lease-"));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const target = { service: "web", environment: "prod" };
const here = (overrides: Partial<Holder> = {}): Holder => ({ user: "ci", host: os.hostname(), pid: process.pid, command: "kiln deploy", since: new Date().toISOString(), ...overrides });
const elsewhere = (overrides: Partial<Holder> = {}): Holder => here({ host: "build-7.example", pid: 4242, ...overrides });

describe("leases in the file store", () => {
  it("grants a lease with token 1, then 2 after a release, and clears it on release", async () => {
    const store = createFileStateStore({ directory: dir });
    const first = await store.lock(target, here());
    expect(first.token).toBe(1);
    const status = await store.lockStatus(target);
    expect(status).toMatchObject({ token: 1, stale: false, staleReason: undefined, holder: { pid: process.pid, command: "kiln deploy" } });
    expect(Date.parse(status!.expiresAt)).toBeGreaterThan(Date.now());
    await first.release();
    await first.release();
    expect(await store.lockStatus(target)).toBeUndefined();
    const second = await store.lock(target, here());
    expect(second.token).toBe(2);
    await second.release();
  });

  it("refuses a live lease with TARGET_LOCKED naming the holder", async () => {
    const store = createFileStateStore({ directory: dir });
    const held = await store.lock(target, elsewhere());
    const error = await createFileStateStore({ directory: dir }).lock(target, here()).catch((e: unknown) => e);
    expect(error).toMatchObject({ code: "TARGET_LOCKED", details: { token: 1 } });
    expect((error as Error).message).toContain('ci@build-7.example (pid 4242, "kiln deploy"');
    await held.release();
  });

  it("renews the lease every third of its ttl while held, so it never expires", async () => {
    const store = createFileStateStore({ directory: dir });
    const lock = await store.lock(target, elsewhere(), { ttlMs: 150 });
    const firstExpiry = lock.expiresAt;
    await sleep(400);
    const status = await store.lockStatus(target);
    expect(status?.stale).toBe(false);
    expect(Date.parse(status!.expiresAt)).toBeGreaterThan(Date.parse(firstExpiry));
    expect(lock.expiresAt).toBe(status!.expiresAt);
    await expect(store.lock(target, here())).rejects.toMatchObject({ code: "TARGET_LOCKED" });
    await lock.release();
  });

  it("takes over an expired lease with token + 1 and says whose it was", async () => {
    const store = createFileStateStore({ directory: dir });
    // A holder on another host that stopped renewing: written as its process left it.
    await store.update(target, (state) => void acquireLease(state, elsewhere(), 50, Date.now() - 1_000));
    const status = await store.lockStatus(target);
    expect(status).toMatchObject({ token: 1, stale: true });
    expect(status?.staleReason).toContain("expired");
    const lock = await store.lock(target, here());
    expect(lock.token).toBe(2);
    expect(lock.tookOver).toMatchObject({ token: 1, holder: { host: "build-7.example" }, stale: true });
    await lock.release();
  });

  it("takes over at once a lease whose holder process on this host is gone", async () => {
    const store = createFileStateStore({ directory: dir });
    await store.update(target, (state) => void acquireLease(state, here({ pid: DEAD_PID }), 60_000));
    const status = await store.lockStatus(target);
    expect(status?.stale).toBe(true);
    expect(status?.staleReason).toContain(`pid ${DEAD_PID}`);
    const lock = await store.lock(target, here());
    expect(lock.token).toBe(2);
    expect(lock.tookOver?.staleReason).toContain("is gone");
    await lock.release();
  });

  it("fences writes: an old token gets LOCK_LOST once another holder took over, and the old holder's signal aborts", async () => {
    const store = createFileStateStore({ directory: dir });
    const old = await store.lock(target, elsewhere(), { ttlMs: 90 });
    await store.update(target, (state) => void (state.currentRelease = 1), { token: old.token });
    // The old holder's process freezes (no renewals) past its ttl; another one takes over.
    await store.update(target, (state) => {
      state.lease!.expiresAt = new Date(Date.now() - 1).toISOString();
    });
    const next = await createFileStateStore({ directory: dir }).lock(target, here());
    expect(next.token).toBe(old.token + 1);
    const error = await store.update(target, (state) => void (state.currentRelease = 99), { token: old.token }).catch((e: unknown) => e);
    expect(isKilnError(error, "LOCK_LOST")).toBe(true);
    expect((await store.read(target)).currentRelease).toBe(1);
    await store.update(target, (state) => void (state.currentRelease = 2), { token: next.token });
    // The old holder's next renewal (every 30 ms) finds the new lease and aborts its signal.
    await waitFor(async () => (old.signal.aborted ? { done: true, value: true } : { done: false, reason: "not aborted yet" }), { timeoutMs: 5_000, minDelayMs: 10, maxDelayMs: 50, description: "the old holder's signal to abort" });
    expect(old.signal.aborted).toBe(true);
    expect(isKilnError(old.signal.reason, "LOCK_LOST")).toBe(true);
    // Releasing the lost lock leaves the new holder's lease alone.
    await old.release();
    expect((await store.lockStatus(target))?.token).toBe(next.token);
    await next.release();
  });

  it("releases by force: the holder's next write is LOCK_LOST, the next lock gets a higher token", async () => {
    const store = createFileStateStore({ directory: dir });
    const lock = await store.lock(target, elsewhere());
    const cleared = await store.forceRelease(target);
    expect(cleared).toMatchObject({ token: 1, holder: { pid: 4242 } });
    expect(await store.forceRelease(target)).toBeUndefined();
    await expect(store.update(target, () => undefined, { token: lock.token })).rejects.toMatchObject({ code: "LOCK_LOST" });
    const next = await store.lock(target, here());
    expect(next.token).toBe(2);
    await lock.release();
    expect((await store.lockStatus(target))?.token).toBe(2);
    await next.release();
  });

  it("keeps the process free to exit: the renewal timer is unref'd", async () => {
    const store = createFileStateStore({ directory: dir });
    const before = new Set(process.getActiveResourcesInfo());
    const lock = await store.lock(target, here(), { ttlMs: 60_000 });
    // An unref'd interval is not listed among the resources that keep the event loop alive.
    expect(process.getActiveResourcesInfo().filter((name) => name === "Timeout").length).toBeLessThanOrEqual([...before].filter((name) => name === "Timeout").length);
    await lock.release();
  });
});

describe("lease rules", () => {
  it("treats a lease as live until it expires, and a dead local pid as stale", () => {
    const state = emptyTargetState(target);
    const { lease } = acquireLease(state, here(), 1_000, 0);
    expect(leaseStaleReason(lease, 500)).toBeUndefined();
    expect(leaseStaleReason(lease, 1_000)).toContain("expired");
    const { lease: dead } = acquireLease(emptyTargetState(target), here({ pid: DEAD_PID }), 1_000, 0);
    expect(leaseStaleReason(dead, 500)).toContain("is gone");
    // On another host the pid says nothing.
    const { lease: remote } = acquireLease(emptyTargetState(target), elsewhere({ pid: DEAD_PID }), 1_000, 0);
    expect(leaseStaleReason(remote, 500)).toBeUndefined();
  });

  it("knows which processes are alive", () => {
    expect(processAlive(process.pid)).toBe(true);
    expect(processAlive(DEAD_PID)).toBe(false);
    expect(processAlive(0)).toBe(false);
  });

  it.runIf(process.platform === "linux")("counts a killed process its parent has not reaped yet (a zombie) as gone", () => {
    const child = spawn(process.execPath, ["-e", "setInterval(() => {}, 1000)"], { stdio: "ignore" });
    const pid = child.pid!;
    expect(processAlive(pid)).toBe(true);
    child.kill("SIGKILL");
    // Synchronously, so that this process's event loop cannot reap it: it stays a zombie.
    const deadline = Date.now() + 10_000;
    while (!readFileSync(`/proc/${pid}/stat`, "utf8").includes(") Z ") && Date.now() < deadline);
    expect(() => process.kill(pid, 0)).not.toThrow(); // kill(pid, 0) alone would call it alive
    expect(processAlive(pid)).toBe(false);
  });
});

describe("keepLease (on fake timers)", () => {
  beforeEach(() => {
    vi.useFakeTimers({ now: Date.UTC(2026, 0, 1) });
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  /** A renewal that answers only when told to. */
  function controllable() {
    const calls: Array<{ resolve: (expiresAt: string) => void; reject: (error: unknown) => void }> = [];
    const renew = () => new Promise<string>((resolve, reject) => void calls.push({ resolve, reject }));
    return { calls, renew };
  }

  it("renews every third of its ttl, one renewal at a time, and follows the new expiry", async () => {
    const { calls, renew } = controllable();
    const kept = keepLease({ ttlMs: 3_000, expiresAt: "2026-01-01T00:00:03.000Z", renew });
    await vi.advanceTimersByTimeAsync(999);
    expect(calls).toHaveLength(0);
    await vi.advanceTimersByTimeAsync(1);
    expect(calls).toHaveLength(1);
    // Still in flight: the next ticks start no second renewal.
    await vi.advanceTimersByTimeAsync(2_000);
    expect(calls).toHaveLength(1);
    expect(kept.expiresAt).toBe("2026-01-01T00:00:03.000Z");
    calls[0]!.resolve("2026-01-01T00:00:06.000Z");
    await vi.advanceTimersByTimeAsync(0);
    expect(kept.expiresAt).toBe("2026-01-01T00:00:06.000Z");
    await vi.advanceTimersByTimeAsync(1_000);
    expect(calls).toHaveLength(2);
    calls[1]!.resolve("2026-01-01T00:00:07.000Z");
    expect(await kept.stop()).toBe(true);
    expect(kept.expiresAt).toBe("2026-01-01T00:00:07.000Z");
    expect(kept.signal.aborted).toBe(false);
  });

  it("retries a renewal that failed for another reason at the next tick, and keeps the lease", async () => {
    const { calls, renew } = controllable();
    const failures: unknown[] = [];
    const kept = keepLease({ ttlMs: 300, expiresAt: "2026-01-01T00:00:00.300Z", renew, onRenewalFailed: (error) => failures.push(error) });
    await vi.advanceTimersByTimeAsync(100);
    calls[0]!.reject(new Error("database hiccup"));
    await vi.advanceTimersByTimeAsync(0);
    expect(failures).toEqual([new Error("database hiccup")]);
    expect(kept.signal.aborted).toBe(false);
    await vi.advanceTimersByTimeAsync(100);
    expect(calls).toHaveLength(2);
    calls[1]!.resolve("2026-01-01T00:00:00.500Z");
    expect(await kept.stop()).toBe(true);
  });

  it("aborts its signal with LOCK_LOST when a renewal finds the lease lost, and renews no more", async () => {
    const { calls, renew } = controllable();
    const lost: KilnError[] = [];
    const kept = keepLease({ ttlMs: 300, expiresAt: "2026-01-01T00:00:00.300Z", renew, onLost: (error) => lost.push(error) });
    await vi.advanceTimersByTimeAsync(100);
    const error = new KilnError("LOCK_LOST", "taken over");
    calls[0]!.reject(error);
    await vi.advanceTimersByTimeAsync(0);
    expect(lost).toEqual([error]);
    expect(kept.signal.aborted).toBe(true);
    expect(kept.signal.reason).toBe(error);
    await vi.advanceTimersByTimeAsync(10_000);
    expect(calls).toHaveLength(1);
    expect(await kept.stop()).toBe(false);
  });

  it("stop waits for the renewal in flight, then renews no more; a shorter interval than minIntervalMs is not used", async () => {
    const { calls, renew } = controllable();
    const kept = keepLease({ ttlMs: 30, expiresAt: "2026-01-01T00:00:00.030Z", minIntervalMs: 50, renew });
    await vi.advanceTimersByTimeAsync(49);
    expect(calls).toHaveLength(0);
    await vi.advanceTimersByTimeAsync(1);
    expect(calls).toHaveLength(1);
    let stopped: boolean | undefined;
    const stopping = kept.stop().then((held) => (stopped = held));
    await vi.advanceTimersByTimeAsync(0);
    expect(stopped).toBeUndefined();
    calls[0]!.resolve("2026-01-01T00:00:00.100Z");
    await stopping;
    expect(stopped).toBe(true);
    await vi.advanceTimersByTimeAsync(1_000);
    expect(calls).toHaveLength(1);
    expect(await kept.stop()).toBe(true);
  });
});
