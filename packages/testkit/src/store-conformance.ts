import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import os from "node:os";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  ERROR_CODES,
  type ErrorCode,
  type Holder,
  type JournalEntry,
  type NewJournalEntry,
  type ReleaseRecord,
  type RolloutRecord,
  type StateStore,
  type Target,
  type TargetLock,
} from "@kilnjs/core";

/** Options of {@link runStateStoreConformance}. */
export interface StateStoreConformanceOptions {
  /** Names the suite: `state store conformance: <name>`. */
  readonly name: string;
  /**
   * Creates a store on the backend under test. Called twice, before the first check: the suite
   * checks that two store objects on the same backend (as two processes, or two replicas, would
   * have) see each other's writes and locks. It may return the same object when the backend lives
   * in it. Each store is used by one suite only, but its backend may hold other data: the suite
   * uses targets of its own (`<check>-<random>@conformance`). `close()` is called on each distinct
   * object after the last check.
   */
  createStore(): StateStore | Promise<StateStore>;
  /** Removes what the suite left on the backend (a temporary folder, a database schema); called after the stores are closed. */
  cleanup?(): Promise<void>;
  /** Timeout of each check and hook, in milliseconds. @defaultValue 30000 */
  readonly timeoutMs?: number;
  /**
   * Leaves on the backend what a process killed in the middle of appending `entry` (numbered
   * `entry.seq`) to rollout `rolloutId`'s journal would leave: a torn last line in a file, a
   * transaction that never committed in a database. Given, the suite checks that such a write is
   * never seen and that appending goes on after it; absent, that check is skipped.
   */
  interruptAppend?(target: Target, rolloutId: string, entry: JournalEntry): Promise<void>;
}

/** Whether `error` looks like a Kiln error with a code from ERROR_CODES (structural: survives duplicate copies of core). */
function kilnErrorCode(error: unknown): ErrorCode | undefined {
  if (!(error instanceof Error) || error.name !== "KilnError") return undefined;
  const { code } = error as Error & { code?: unknown };
  if (typeof code !== "string" || !(ERROR_CODES as readonly string[]).includes(code)) return undefined;
  return code as ErrorCode;
}

/** Awaits `promise`, expecting it to reject with a KilnError `code`; returns the error. */
async function expectKilnError(promise: Promise<unknown>, code: ErrorCode, what: string): Promise<Error & { code: ErrorCode; details: Record<string, unknown> }> {
  const outcome = await promise.then(
    () => ({ resolved: true as const }),
    (error: unknown) => ({ resolved: false as const, error }),
  );
  if (outcome.resolved) expect.fail(`${what}: expected a KilnError ${code}, but the call resolved`);
  const actual = kilnErrorCode(outcome.error);
  if (actual === undefined) expect.fail(`${what}: expected a KilnError ${code}, got ${String(outcome.error)}`);
  expect(actual, `${what}: error code (${(outcome.error as Error).message})`).toBe(code);
  return outcome.error as Error & { code: ErrorCode; details: Record<string, unknown> };
}

/** Polls `condition` every 20 ms until it holds; fails naming `what` after `timeoutMs`. */
async function waitUntil(condition: () => boolean | Promise<boolean>, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await condition()) return;
    if (Date.now() > deadline) expect.fail(`timed out after ${timeoutMs} ms waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** A holder in this process (so its lease is never stale for a dead process). */
function liveHolder(command: string): Holder {
  return { user: "conformance", host: os.hostname(), pid: process.pid, command, since: new Date().toISOString() };
}

/** The pid of a process of this host that has exited (a child run to completion and reaped). */
function deadPid(): number {
  const child = spawnSync(process.execPath, ["-e", ""], { stdio: "ignore" });
  if (child.pid === undefined) throw new Error("could not run a child process to get a dead pid");
  return child.pid;
}

/** A complete release record, with nested data and non-ASCII text, as core writes one. */
function releaseRecord(target: Target, number: number): ReleaseRecord {
  const fingerprint = `sha256:${"ab".repeat(32)}`;
  return {
    number,
    target: { service: target.service, environment: target.environment },
    provider: "memory",
    createdAt: new Date(Date.UTC(2024, 0, 1, 0, 0, number)).toISOString(),
    fingerprint,
    image: { id: `img-${number}`, fingerprint, digest: `sha256:${"cd".repeat(32)}`, names: [`kiln/${target.service}:${number}`], sizeBytes: 1234 },
    count: 2,
    instance: {
      ports: [{ name: "http", port: 8080, protocol: "tcp" }],
      env: { GREETING: "héllo wörld ✓", EMPTY: "" },
      labels: { team: "platform" },
      command: ["node", "server.js", "--flag=1"],
      memoryBytes: 268_435_456,
      cpus: 0.5,
      stopGracePeriodMs: 10_000,
    },
    health: {
      check: { kind: "http", port: "http", path: "/healthz", expectStatus: [200] },
      intervalMs: 1000,
      timeoutMs: 500,
      healthyThreshold: 2,
      unhealthyThreshold: 3,
      startPeriodMs: 0,
      stabilityWindowMs: 0,
      deadlineMs: 60_000,
      deadlineArithmetic: "spec",
    },
    rollout: { strategy: "rolling", maxSurge: 1, maxUnavailable: 0, pauseBetweenBatchesMs: 0, bakeTimeMs: 0, steps: [], autoRollback: true, order: "start-first" },
    configHash: `sha256:${"ef".repeat(32)}`,
    status: "succeeded",
    finishedAt: new Date(Date.UTC(2024, 0, 1, 0, 1, number)).toISOString(),
  } as unknown as ReleaseRecord;
}

/** A finished rollout with a journal, as core writes one. */
function rolloutRecord(target: Target, id: string, toRelease: number): RolloutRecord {
  const time = new Date(Date.UTC(2024, 0, 1)).toISOString();
  return {
    id,
    target: { service: target.service, environment: target.environment },
    kind: "deploy",
    fromRelease: undefined,
    toRelease,
    startedAt: time,
    holder: liveHolder("kiln deploy"),
    provider: "memory",
    token: 1,
    status: "failed",
    finishedAt: time,
    error: { code: "HEALTH_CHECK_FAILED", message: "instance i-1 answered 503 «Service Unavailable»" },
    journal: [
      { seq: 1, phase: "intent", step: "launch:1", op: "instances.launch", idempotencyKey: `${id}:launch:1`, release: toRelease, count: 2, instanceIds: [], time },
      { seq: 2, phase: "outcome", step: "launch:1", op: "instances.launch", instanceIds: ["i-1", "i-2"], result: "ok", time },
    ],
  } as unknown as RolloutRecord;
}

/** A running rollout with an empty journal, as a rollout starts. */
function runningRollout(target: Target, id: string, token: number): RolloutRecord {
  return {
    id,
    target: { service: target.service, environment: target.environment },
    kind: "deploy",
    fromRelease: undefined,
    toRelease: 1,
    startedAt: new Date().toISOString(),
    holder: liveHolder("kiln deploy"),
    provider: "memory",
    token,
    status: "running",
    journal: [],
  };
}

/** A journal entry as the journal writes one, `n` making each distinct (a launch's instance ids). */
function journalEntry(n: number, phase: "intent" | "outcome" = n % 2 === 1 ? "intent" : "outcome"): NewJournalEntry {
  const batch = Math.ceil(n / 2);
  return {
    phase,
    step: `launch:${batch}`,
    op: "instances.launch",
    ...(phase === "intent" ? { idempotencyKey: `r:launch:${batch}`, release: 1, count: 2 } : { result: "ok" as const }),
    instanceIds: phase === "intent" ? [] : [`i-${n}a`, `i-${n}b «é»`],
    time: new Date(Date.UTC(2024, 0, 1, 0, 0, n)).toISOString(),
  };
}

/** An error a change throws on purpose. */
class ChangeRefused extends Error {
  override readonly name = "ChangeRefused";
}

/**
 * Registers vitest tests of the whole {@link StateStore} contract against a store implementation:
 *
 * - `read` of a target never written gives an empty state (and does not create the target); `read`
 *   gives a copy; `update` passes the change's result through and what it wrote reads back equal;
 * - `update` is atomic and serialised: 20 concurrent updates of one target all land, from one store
 *   object and from two; a change that throws writes nothing and its own error propagates;
 * - `listTargets` lists every target with a release or a rollout, and not one whose only state is
 *   a lease, a fencing token or a secret digest key (a deploy that failed before its release);
 * - `lock` grants a lease with a fencing token, a second holder gets `TARGET_LOCKED` naming the
 *   first; a fenced `update` with a stale token fails `LOCK_LOST` and writes nothing;
 * - a lease that expired (its holder stopped renewing), or whose holder's process on this host is
 *   gone, is taken over with a higher token and `tookOver` set;
 * - renewal keeps a held lease alive past its ttl; `release` clears it (twice is harmless);
 * - `forceRelease` returns the lease, the former holder's next fenced write fails `LOCK_LOST` and its
 *   `signal` aborts with `LOCK_LOST` at its next renewal;
 * - two store objects on the same backend see each other's writes and locks;
 * - `appendJournal` numbers a rollout's entries 1, 2, 3, … (concurrent appends through both
 *   objects too), `read` and `update` show them in the rollout's record, an `update` folds them in
 *   (compaction: the rollout's end recorded, its journal whole) and later appends go on from the
 *   last `seq`; an append is fenced (`LOCK_LOST` with a stale token or no lease, writing nothing)
 *   and refused for a rollout the state does not hold (`INTERNAL`); with `interruptAppend`, an
 *   append cut short by a killed process is never seen and appending goes on after it.
 *
 * Leases in these checks last 0.45 to 1.5 s, and the checks wait on conditions (a lease reported
 * stale, a signal aborted) rather than fixed sleeps; the whole suite takes a few seconds. A check
 * that needs a holder which stopped renewing without releasing (a crashed process on another host)
 * writes that lease into `state.lease` with `update`, as the store keeps it.
 *
 * @example
 * ```ts
 * // packages/store-foo/src/conformance.integ.test.ts
 * import { runStateStoreConformance } from "@kilnjs/testkit";
 * runStateStoreConformance({
 *   name: "foo",
 *   createStore: () => createFooStateStore({ url, namespace }),
 *   cleanup: () => dropNamespace(url, namespace),
 * });
 * ```
 */
export function runStateStoreConformance(options: StateStoreConformanceOptions): void {
  const timeoutMs = options.timeoutMs ?? 30_000;
  const suffix = randomBytes(3).toString("hex");
  const targetFor = (check: string): Target => ({ service: `${check}-${suffix}`, environment: "conformance" });

  describe(`state store conformance: ${options.name}`, () => {
    let store!: StateStore;
    let other!: StateStore;

    beforeAll(async () => {
      store = await options.createStore();
      other = await options.createStore();
    }, timeoutMs);

    afterAll(async () => {
      try {
        for (const created of new Set([store, other])) await created?.close?.();
      } finally {
        await options.cleanup?.();
      }
    }, timeoutMs);

    /** Takes a lock and releases it after `run`, whatever happens. */
    async function withLock<T>(on: StateStore, target: Target, holder: Holder, ttlMs: number, run: (lock: TargetLock) => Promise<T>): Promise<T> {
      const lock = await on.lock(target, holder, { ttlMs });
      try {
        return await run(lock);
      } finally {
        await lock.release();
      }
    }

    it(
      "reads an empty state for a target never written, and does not list it",
      async () => {
        const target = targetFor("unknown");
        const state = await store.read(target);
        expect(state.target).toEqual(target);
        expect(state.releases).toEqual([]);
        expect(state.rollouts).toEqual([]);
        expect(state.currentRelease).toBeUndefined();
        expect(state.lease).toBeUndefined();
        expect(await store.lockStatus(target)).toBeUndefined();
        expect(await store.listTargets()).not.toContainEqual(target);
      },
      timeoutMs,
    );

    it(
      "update passes the change's result through, and what it wrote reads back equal (as a copy)",
      async () => {
        const target = targetFor("roundtrip");
        const release = releaseRecord(target, 1);
        const rollout = rolloutRecord(target, `r-${suffix}`, 1);
        const result = await store.update(target, (state) => {
          expect(state.target).toEqual(target);
          expect(state.releases).toEqual([]);
          state.releases.push(structuredClone(release));
          state.rollouts.push(structuredClone(rollout));
          state.currentRelease = 1;
          return { seen: state.releases.length };
        });
        expect(result).toEqual({ seen: 1 });
        const read = await store.read(target);
        expect(read.releases).toEqual([release]);
        expect(read.rollouts).toEqual([rollout]);
        expect(read.currentRelease).toBe(1);
        // Changing what read returned changes nothing stored.
        read.releases.push(releaseRecord(target, 2));
        read.currentRelease = 2;
        const again = await store.read(target);
        expect(again.releases).toHaveLength(1);
        expect(again.currentRelease).toBe(1);
      },
      timeoutMs,
    );

    it(
      "serialises updates of one target: 20 concurrent updates all land",
      async () => {
        const target = targetFor("concurrent");
        const numbers = await Promise.all(
          Array.from({ length: 20 }, () =>
            store.update(target, (state) => {
              // A lost update would give two releases the same number.
              const number = state.releases.length + 1;
              state.releases.push(releaseRecord(target, number));
              return number;
            }),
          ),
        );
        expect([...numbers].sort((a, b) => a - b)).toEqual(Array.from({ length: 20 }, (_, index) => index + 1));
        const state = await store.read(target);
        expect(state.releases.map((release) => release.number)).toEqual(Array.from({ length: 20 }, (_, index) => index + 1));
      },
      timeoutMs,
    );

    it(
      "writes nothing when the change throws, and the change's own error propagates",
      async () => {
        const target = targetFor("throwing");
        await store.update(target, (state) => void state.releases.push(releaseRecord(target, 1)));
        const refused = new ChangeRefused("the change refused");
        const thrown = await store
          .update(target, (state) => {
            state.releases.push(releaseRecord(target, 2));
            state.currentRelease = 2;
            throw refused;
          })
          .then(
            () => undefined,
            (error: unknown) => error,
          );
        expect(thrown).toBe(refused);
        const state = await store.read(target);
        expect(state.releases.map((release) => release.number)).toEqual([1]);
        expect(state.currentRelease).toBeUndefined();

        // On a target never written: it stays unwritten and unlisted.
        const fresh = targetFor("throwing-fresh");
        await expect(
          store.update(fresh, (state) => {
            state.releases.push(releaseRecord(fresh, 1));
            throw new ChangeRefused("no");
          }),
        ).rejects.toBeInstanceOf(ChangeRefused);
        expect((await store.read(fresh)).releases).toEqual([]);
        expect(await store.listTargets()).not.toContainEqual(fresh);
      },
      timeoutMs,
    );

    it(
      "lists every target written",
      async () => {
        const first = targetFor("listed");
        const second = { service: first.service, environment: "conformance-b" };
        await store.update(first, (state) => void state.releases.push(releaseRecord(first, 1)));
        await store.update(second, (state) => void state.releases.push(releaseRecord(second, 1)));
        const targets = await store.listTargets();
        expect(targets).toContainEqual(first);
        expect(targets).toContainEqual(second);
        for (const target of targets) expect(Object.keys(target).sort()).toEqual(["environment", "service"]);
      },
      timeoutMs,
    );

    it(
      "does not list a target whose deploy failed before it made a release (only a lease, a fencing token and a secret digest key), and lists it once it has a rollout",
      async () => {
        const target = targetFor("never-released");
        // As a deploy that fails on a missing Dockerfile or an unreadable secret: the lock is taken,
        // the secret digest key written under it, and the lock released, with no release made.
        await withLock(store, target, liveHolder("conformance failed deploy"), 30_000, async (lock) => {
          await store.update(target, (state) => void (state.secretDigestKey ??= "a2lsbi1jb25mb3JtYW5jZS1kaWdlc3Qta2V5LTMyYnk="), { token: lock.token });
          expect(await store.listTargets(), "while its first deploy holds the lock").not.toContainEqual(target);
        });
        const kept = await store.read(target);
        expect(kept.fencingToken, "the fencing token is kept: it must never go back").toBeGreaterThanOrEqual(1);
        expect(kept.secretDigestKey).toBeDefined();
        expect(kept.releases).toEqual([]);
        expect(await store.listTargets(), "after its first deploy failed").not.toContainEqual(target);
        expect(await other.listTargets(), "through the other store object").not.toContainEqual(target);

        // The next lock gets a higher token than the failed deploy's, as for any target.
        const next = await store.lock(target, liveHolder("conformance next deploy"), { ttlMs: 30_000 });
        try {
          expect(next.token).toBeGreaterThan(kept.fencingToken!);
          await store.update(target, (state) => void state.rollouts.push(rolloutRecord(target, `r-${suffix}-listed`, 1)), { token: next.token });
        } finally {
          await next.release();
        }
        expect(await store.listTargets(), "once it has a rollout").toContainEqual(target);
      },
      timeoutMs,
    );

    it(
      "lock grants a lease with a fencing token; a second holder gets TARGET_LOCKED naming the holder",
      async () => {
        const target = targetFor("locked");
        const first = liveHolder("conformance first");
        await withLock(store, target, first, 30_000, async (lock) => {
          expect(lock.holder).toEqual(first);
          expect(lock.token).toBeGreaterThanOrEqual(1);
          expect(lock.tookOver).toBeUndefined();
          expect(lock.signal.aborted).toBe(false);
          expect(Date.parse(lock.expiresAt)).toBeGreaterThan(Date.now());
          const status = await store.lockStatus(target);
          expect(status).toMatchObject({ holder: first, token: lock.token, ttlMs: 30_000, stale: false, staleReason: undefined });

          const error = await expectKilnError(store.lock(target, liveHolder("conformance second"), { ttlMs: 30_000 }), "TARGET_LOCKED", "a second lock");
          expect(error.message).toContain(first.command);
          expect(error.message).toContain(String(first.pid));
          expect(error.details.holder).toEqual(first);
          expect(error.details.token).toBe(lock.token);
          // The refused attempt changed nothing.
          expect((await store.lockStatus(target))?.token).toBe(lock.token);
        });
      },
      timeoutMs,
    );

    it(
      "a fenced update with the lease's token writes; with a stale token it fails LOCK_LOST and writes nothing",
      async () => {
        const target = targetFor("fenced");
        const first = await store.lock(target, liveHolder("conformance first"), { ttlMs: 30_000 });
        await store.update(target, (state) => void state.releases.push(releaseRecord(target, 1)), { token: first.token });
        await first.release();
        await expectKilnError(
          store.update(target, (state) => void state.releases.push(releaseRecord(target, 99)), { token: first.token }),
          "LOCK_LOST",
          "a fenced update after the lock was released",
        );
        await withLock(store, target, liveHolder("conformance second"), 30_000, async (second) => {
          expect(second.token).toBeGreaterThan(first.token);
          await expectKilnError(
            store.update(target, (state) => void state.releases.push(releaseRecord(target, 99)), { token: first.token }),
            "LOCK_LOST",
            "a fenced update with the older holder's token",
          );
          await store.update(target, (state) => void state.releases.push(releaseRecord(target, 2)), { token: second.token });
        });
        expect((await store.read(target)).releases.map((release) => release.number)).toEqual([1, 2]);
      },
      timeoutMs,
    );

    it(
      "release clears the lease (twice is harmless), and every new lease has a larger token",
      async () => {
        const target = targetFor("released");
        const first = await store.lock(target, liveHolder("conformance first"), { ttlMs: 30_000 });
        await first.release();
        await first.release();
        expect(await store.lockStatus(target)).toBeUndefined();
        const second = await store.lock(target, liveHolder("conformance second"), { ttlMs: 30_000 });
        try {
          expect(second.token).toBeGreaterThan(first.token);
          expect(second.tookOver).toBeUndefined();
        } finally {
          await second.release();
        }
        expect(await store.lockStatus(target)).toBeUndefined();
        const third = await store.lock(target, liveHolder("conformance third"), { ttlMs: 30_000 });
        await third.release();
        expect(third.token).toBeGreaterThan(second.token);
      },
      timeoutMs,
    );

    it(
      "takes over a lease that expired (its holder stopped renewing) with a larger token and tookOver set",
      async () => {
        const target = targetFor("expired");
        // A holder on another host that crashed: it wrote its lease, then never renewed it.
        const crashed: Holder = { user: "conformance", host: "kiln-conformance-elsewhere.invalid", pid: 1, command: "conformance crashed", since: new Date().toISOString() };
        const ttlMs = 1_500;
        const oldToken = await store.update(target, (state) => {
          const token = Math.max(state.fencingToken ?? 0, state.lease?.token ?? 0) + 1;
          state.lease = { holder: crashed, token, expiresAt: new Date(Date.now() + ttlMs).toISOString(), ttlMs };
          state.fencingToken = token;
          return token;
        });
        // Live until it expires: a holder on another host is trusted until then.
        await expectKilnError(store.lock(target, liveHolder("conformance early"), { ttlMs: 30_000 }), "TARGET_LOCKED", "a lock before the lease expired");
        await waitUntil(async () => (await store.lockStatus(target))?.stale === true, "the crashed holder's lease is reported stale", ttlMs + 10_000);
        const status = await store.lockStatus(target);
        expect(status?.staleReason).toMatch(/expired/);

        await withLock(store, target, liveHolder("conformance taker"), 30_000, async (lock) => {
          expect(lock.token).toBeGreaterThan(oldToken);
          expect(lock.tookOver).toMatchObject({ holder: crashed, token: oldToken, stale: true });
          expect(lock.tookOver?.staleReason).toMatch(/expired/);
          expect((await store.lockStatus(target))?.holder.command).toBe("conformance taker");
          await expectKilnError(store.update(target, () => undefined, { token: oldToken }), "LOCK_LOST", "the crashed holder's fenced write");
        });
      },
      timeoutMs,
    );

    it(
      "takes over at once a lease whose holder's process on this host is gone",
      async () => {
        const target = targetFor("dead");
        const dead: Holder = { user: "conformance", host: os.hostname(), pid: deadPid(), command: "conformance dead", since: new Date().toISOString() };
        const oldToken = await store.update(target, (state) => {
          const token = Math.max(state.fencingToken ?? 0, state.lease?.token ?? 0) + 1;
          state.lease = { holder: dead, token, expiresAt: new Date(Date.now() + 600_000).toISOString(), ttlMs: 600_000 };
          state.fencingToken = token;
          return token;
        });
        expect(await store.lockStatus(target)).toMatchObject({ stale: true, holder: dead });
        await withLock(store, target, liveHolder("conformance taker"), 30_000, async (lock) => {
          expect(lock.token).toBeGreaterThan(oldToken);
          expect(lock.tookOver).toMatchObject({ holder: dead, token: oldToken, stale: true });
          expect(lock.tookOver?.staleReason).toMatch(/gone/);
        });
      },
      timeoutMs,
    );

    it(
      "renewal keeps a held lease alive past its ttl",
      async () => {
        const target = targetFor("renewed");
        // Renewed every 400 ms: a busy machine may stall the event loop for most of a second.
        const ttlMs = 1_200;
        await withLock(store, target, liveHolder("conformance renewing"), ttlMs, async (lock) => {
          const firstExpiry = Date.parse(lock.expiresAt);
          // Well past the first expiry: only renewals can have kept the lease.
          await waitUntil(() => Date.now() > firstExpiry + ttlMs, "the lease's first expiry is long past", 10 * ttlMs + 10_000);
          expect(Date.parse(lock.expiresAt)).toBeGreaterThan(firstExpiry);
          expect(lock.signal.aborted).toBe(false);
          const status = await store.lockStatus(target);
          expect(status).toMatchObject({ token: lock.token, stale: false });
          await expectKilnError(store.lock(target, liveHolder("conformance second"), { ttlMs }), "TARGET_LOCKED", "a second lock while the first renews");
          await store.update(target, (state) => void state.releases.push(releaseRecord(target, 1)), { token: lock.token });
        });
        expect(await store.lockStatus(target)).toBeUndefined();
      },
      timeoutMs,
    );

    it(
      "forceRelease returns the lease; the former holder's fenced write fails LOCK_LOST and its signal aborts with LOCK_LOST",
      async () => {
        const target = targetFor("forced");
        expect(await store.forceRelease(target)).toBeUndefined();
        const holder = liveHolder("conformance forced");
        const lock = await store.lock(target, holder, { ttlMs: 450 });
        try {
          const cleared = await store.forceRelease(target);
          expect(cleared).toMatchObject({ holder, token: lock.token, ttlMs: 450 });
          expect(await store.lockStatus(target)).toBeUndefined();
          expect(await store.forceRelease(target)).toBeUndefined();
          await expectKilnError(store.update(target, () => undefined, { token: lock.token }), "LOCK_LOST", "the former holder's fenced write");
          await waitUntil(() => lock.signal.aborted, "the former holder's signal aborts at its next renewal");
          expect(kilnErrorCode(lock.signal.reason)).toBe("LOCK_LOST");

          // A new holder is not disturbed by the former one letting go.
          await withLock(store, target, liveHolder("conformance next"), 30_000, async (next) => {
            expect(next.token).toBeGreaterThan(lock.token);
            await lock.release();
            expect((await store.lockStatus(target))?.token).toBe(next.token);
          });
        } finally {
          await lock.release();
        }
      },
      timeoutMs,
    );

    it(
      "two store objects on the same backend see each other's writes and locks",
      async () => {
        const target = targetFor("shared");
        await store.update(target, (state) => void state.releases.push(releaseRecord(target, 1)));
        expect((await other.read(target)).releases.map((release) => release.number)).toEqual([1]);
        expect(await other.listTargets()).toContainEqual(target);

        // Concurrent updates through both objects are serialised too.
        await Promise.all(
          Array.from({ length: 20 }, (_, index) =>
            (index % 2 === 0 ? store : other).update(target, (state) => void state.releases.push(releaseRecord(target, state.releases.length + 1))),
          ),
        );
        expect((await store.read(target)).releases.map((release) => release.number)).toEqual(Array.from({ length: 21 }, (_, index) => index + 1));

        const holder = liveHolder("conformance shared");
        const lock = await store.lock(target, holder, { ttlMs: 30_000 });
        try {
          expect(await other.lockStatus(target)).toMatchObject({ holder, token: lock.token, stale: false });
          const error = await expectKilnError(other.lock(target, liveHolder("conformance other"), { ttlMs: 30_000 }), "TARGET_LOCKED", "a lock through the other store");
          expect(error.details.holder).toEqual(holder);
          await other.update(target, (state) => void state.releases.push(releaseRecord(target, 22)), { token: lock.token });
          expect(await other.forceRelease(target)).toMatchObject({ holder, token: lock.token });
          await expectKilnError(store.update(target, () => undefined, { token: lock.token }), "LOCK_LOST", "a fenced write after the other store forced the lock");
        } finally {
          await lock.release();
        }
        const next = await other.lock(target, liveHolder("conformance other"), { ttlMs: 30_000 });
        await next.release();
        expect(next.token).toBeGreaterThan(lock.token);
        expect((await store.read(target)).releases).toHaveLength(22);
      },
      timeoutMs,
    );

    it(
      "appendJournal numbers a rollout's entries; read and update show them; an update folds them in and appending goes on",
      async () => {
        const target = targetFor("journal");
        const rolloutId = `r-${suffix}-journal`;
        await withLock(store, target, liveHolder("conformance journal"), 30_000, async (lock) => {
          await store.update(target, (state) => void state.rollouts.push(runningRollout(target, rolloutId, lock.token)), { token: lock.token });
          const written: JournalEntry[] = [];
          for (let n = 1; n <= 3; n++) written.push(await store.appendJournal(target, rolloutId, journalEntry(n), { token: lock.token }));
          expect(written.map((entry) => entry.seq)).toEqual([1, 2, 3]);
          expect(written[1]).toEqual({ ...journalEntry(2), seq: 2 });
          for (const on of [store, other]) expect((await on.read(target)).rollouts[0]!.journal, "read shows the appended entries").toEqual(written);

          // Concurrent appends through both objects: each gets its own number.
          const concurrent = await Promise.all(Array.from({ length: 10 }, (_, index) => (index % 2 === 0 ? store : other).appendJournal(target, rolloutId, journalEntry(4 + index), { token: lock.token })));
          expect(concurrent.map((entry) => entry.seq).sort((a, b) => a - b)).toEqual(Array.from({ length: 10 }, (_, index) => 4 + index));
          const all = (await store.read(target)).rollouts[0]!.journal;
          expect(all.map((entry) => entry.seq)).toEqual(Array.from({ length: 13 }, (_, index) => index + 1));

          // An update sees the whole journal (as recovery does), and what it adds is numbered after it.
          const seen = await store.update(
            target,
            (state) => {
              const rollout = state.rollouts.find((r) => r.id === rolloutId)!;
              const seqs = rollout.journal.map((entry) => entry.seq);
              rollout.journal.push({ seq: rollout.journal.at(-1)!.seq + 1, phase: "outcome", step: "recover:1", op: "rollout.recover", instanceIds: [], result: "ok", time: new Date().toISOString() });
              rollout.status = "aborted";
              rollout.finishedAt = new Date().toISOString();
              return seqs;
            },
            { token: lock.token },
          );
          expect(seen).toEqual(Array.from({ length: 13 }, (_, index) => index + 1));
          const folded = (await other.read(target)).rollouts[0]!;
          expect(folded.status).toBe("aborted");
          expect(folded.journal.map((entry) => entry.seq)).toEqual(Array.from({ length: 14 }, (_, index) => index + 1));
          expect(folded.journal.slice(0, 13)).toEqual(all);

          // After compaction (a finished rollout, as `rollout abort` journals its clean-up on it): numbering goes on.
          const later = await other.appendJournal(target, rolloutId, journalEntry(15), { token: lock.token });
          expect(later.seq).toBe(15);
          await store.update(target, () => undefined, { token: lock.token });
          const final = (await store.read(target)).rollouts[0]!.journal;
          expect(final.map((entry) => entry.seq)).toEqual(Array.from({ length: 15 }, (_, index) => index + 1));
          expect(final.at(-1)).toEqual(later);
        });
      },
      timeoutMs,
    );

    it(
      "appendJournal is fenced: with a stale token or no lease it fails LOCK_LOST and writes nothing; an unknown rollout is INTERNAL",
      async () => {
        const target = targetFor("journal-fenced");
        const rolloutId = `r-${suffix}-fenced`;
        const first = await store.lock(target, liveHolder("conformance first"), { ttlMs: 30_000 });
        await store.update(target, (state) => void state.rollouts.push(runningRollout(target, rolloutId, first.token)), { token: first.token });
        await store.appendJournal(target, rolloutId, journalEntry(1), { token: first.token });
        await expectKilnError(store.appendJournal(target, `r-${suffix}-unknown`, journalEntry(1), { token: first.token }), "INTERNAL", "an append to a rollout the state does not hold");

        // Released by force: the former holder appends nothing more.
        await other.forceRelease(target);
        await expectKilnError(store.appendJournal(target, rolloutId, journalEntry(2), { token: first.token }), "LOCK_LOST", "an append after the lease was released by force");
        await first.release();
        // Taken by another holder: the older token appends nothing; the new holder's does.
        await withLock(other, target, liveHolder("conformance second"), 30_000, async (second) => {
          await expectKilnError(store.appendJournal(target, rolloutId, journalEntry(2), { token: first.token }), "LOCK_LOST", "an append with the older holder's token");
          const appended = await other.appendJournal(target, rolloutId, journalEntry(2), { token: second.token });
          expect(appended.seq).toBe(2);
        });
        // No lease at all.
        await expectKilnError(store.appendJournal(target, rolloutId, journalEntry(3), { token: first.token }), "LOCK_LOST", "an append with no lease held");
        await expectKilnError(store.appendJournal(targetFor("journal-never"), rolloutId, journalEntry(1), { token: 1 }), "LOCK_LOST", "an append to a target never written");
        expect((await store.read(target)).rollouts[0]!.journal.map((entry) => entry.seq)).toEqual([1, 2]);
        expect(await store.listTargets()).not.toContainEqual(targetFor("journal-never"));
      },
      timeoutMs,
    );

    it.skipIf(!options.interruptAppend)(
      "an append cut short by a killed process is never seen, and appending goes on after it",
      async () => {
        const target = targetFor("journal-torn");
        const rolloutId = `r-${suffix}-torn`;
        await withLock(store, target, liveHolder("conformance torn"), 30_000, async (lock) => {
          await store.update(target, (state) => void state.rollouts.push(runningRollout(target, rolloutId, lock.token)), { token: lock.token });
          // Cut short before any entry, then after two.
          await options.interruptAppend!(target, rolloutId, { ...journalEntry(1), seq: 1 });
          expect((await store.read(target)).rollouts[0]!.journal).toEqual([]);
          const first = await store.appendJournal(target, rolloutId, journalEntry(1), { token: lock.token });
          const second = await store.appendJournal(target, rolloutId, journalEntry(2), { token: lock.token });
          expect([first.seq, second.seq]).toEqual([1, 2]);
          await options.interruptAppend!(target, rolloutId, { ...journalEntry(3), seq: 3 });
          for (const on of [store, other]) expect((await on.read(target)).rollouts[0]!.journal, "the cut-short entry is not read").toEqual([first, second]);
          const third = await other.appendJournal(target, rolloutId, journalEntry(4), { token: lock.token });
          expect(third.seq).toBe(3);
          expect((await store.read(target)).rollouts[0]!.journal).toEqual([first, second, third]);
          // An update folds exactly these in.
          await store.update(target, (state) => void (state.rollouts[0]!.status = "succeeded"), { token: lock.token });
          expect((await other.read(target)).rollouts[0]!.journal).toEqual([first, second, third]);
        });
      },
      timeoutMs,
    );
  });
}
