import { randomBytes } from "node:crypto";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import {
  ERROR_CODES,
  formatTarget,
  type DeploymentOutcome,
  type DeploymentQueue,
  type DeploymentRecord,
  type EnqueueInput,
  type ErrorCode,
  type IdempotentResponse,
  type KilnEvent,
  type Target,
} from "@kilnjs/core";

/** Options of {@link runDeploymentQueueConformance}. */
export interface DeploymentQueueConformanceOptions {
  /** Names the suite: `deployment queue conformance: <name>`. */
  readonly name: string;
  /**
   * Creates a queue on the backend under test. Called twice, before the first check: the suite
   * checks that two queue objects on the same backend (as two server replicas have) share
   * deployments, claims, events and answers. It may return the same object when the backend lives
   * in it (the in-memory queue). The backend must hold no other deployments while the suite runs
   * (a claim takes any waiting deployment): give it a fresh database schema, for instance.
   * `close()` is called on each distinct object after the last check.
   */
  createQueue(): DeploymentQueue | Promise<DeploymentQueue>;
  /** Removes what the suite left on the backend (a database schema); called after the queues are closed. */
  cleanup?(): Promise<void>;
  /** Timeout of each check and hook, in milliseconds. @defaultValue 30000 */
  readonly timeoutMs?: number;
}

/** Whether `error` looks like a Kiln error with a code from ERROR_CODES (structural: survives duplicate copies of core). */
function kilnErrorCode(error: unknown): ErrorCode | undefined {
  if (!(error instanceof Error) || error.name !== "KilnError") return undefined;
  const { code } = error as Error & { code?: unknown };
  if (typeof code !== "string" || !(ERROR_CODES as readonly string[]).includes(code)) return undefined;
  return code as ErrorCode;
}

/** Awaits `promise`, expecting it to reject with a KilnError `code`. */
async function expectKilnError(promise: Promise<unknown>, code: ErrorCode, what: string): Promise<void> {
  const outcome = await promise.then(
    () => ({ resolved: true as const }),
    (error: unknown) => ({ resolved: false as const, error }),
  );
  if (outcome.resolved) expect.fail(`${what}: expected a KilnError ${code}, but the call resolved`);
  const actual = kilnErrorCode(outcome.error);
  if (actual === undefined) expect.fail(`${what}: expected a KilnError ${code}, got ${String(outcome.error)}`);
  expect(actual, `${what}: error code (${(outcome.error as Error).message})`).toBe(code);
}

/** Polls `condition` every 20 ms until it gives a value; fails naming `what` after `timeoutMs`. */
async function waitUntil<T>(condition: () => T | undefined | Promise<T | undefined>, what: string, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await condition();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) expect.fail(`timed out after ${timeoutMs} ms waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** How far apart this process's clock and the backend's may be in these checks (milliseconds). */
const CLOCK_SLACK_MS = 5_000;

/** Expects `iso` to be an ISO 8601 time between `from` and `to` (epoch milliseconds), give or take {@link CLOCK_SLACK_MS}. */
function expectTimeBetween(iso: string | undefined, from: number, to: number, what: string): void {
  expect(iso, what).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/);
  const time = Date.parse(iso!);
  expect(time, `${what} (${iso}) is not before ${new Date(from).toISOString()}`).toBeGreaterThanOrEqual(from - CLOCK_SLACK_MS);
  expect(time, `${what} (${iso}) is not after ${new Date(to).toISOString()}`).toBeLessThanOrEqual(to + CLOCK_SLACK_MS);
}

/** A spec as a posted one looks: nested, with non-ASCII text. */
const SPEC = {
  service: "conformance",
  provider: "memory",
  instances: { count: 2, env: { GREETING: "héllo wörld ✓", EMPTY: "" }, ports: [{ name: "http", port: 8080 }] },
  health: { intervalMs: 100, healthyThreshold: 1 },
  rollout: { strategy: "canary", steps: [{ instances: 1, holdMs: 1_000 }] },
};

/** A lease long enough never to lapse during a check (milliseconds). */
const LONG_LEASE_MS = 30_000;

/**
 * Registers vitest tests of the whole `DeploymentQueue` contract (from `@kilnjs/core`) against a
 * queue implementation:
 *
 * - `enqueue` records a `queued` deployment that reads back equal, from both queue objects;
 * - one active deployment per target: a second `enqueue` (also ten at once through two queue
 *   objects) is refused with the active one, until it ends;
 * - `list` is newest first, limited, and filters by target;
 * - `claim` takes the oldest waiting deployment and marks it `running` under a lease; claims are
 *   exclusive (twelve at once through two objects take six deployments, each exactly once);
 * - `renew` extends the lease of the claim's worker only; a lapsed lease is taken over by the next
 *   claim (`attempts` 2), and the old worker's `renew` and `finish` are refused;
 * - `finish` records each final state once, only for the claim's worker, and frees the target;
 * - `requestCancel` cancels a queued deployment at once and flags a running one (seen at the next
 *   renewal); a final one is left alone;
 * - events are numbered from 1 per deployment, in order, across batches, queue objects and
 *   concurrent appends;
 * - the first answer kept under an idempotency key stays.
 *
 * Checks wait on conditions (a lapsed lease being claimable) rather than fixed sleeps; the suite
 * takes a few seconds.
 *
 * @example
 * ```ts
 * // packages/store-foo/src/queue.integ.test.ts
 * import { runDeploymentQueueConformance } from "@kilnjs/testkit";
 * runDeploymentQueueConformance({
 *   name: "foo",
 *   createQueue: () => createFooDeploymentQueue({ url, namespace }),
 *   cleanup: () => dropNamespace(url, namespace),
 * });
 * ```
 */
export function runDeploymentQueueConformance(options: DeploymentQueueConformanceOptions): void {
  const timeoutMs = options.timeoutMs ?? 30_000;
  const suffix = randomBytes(3).toString("hex");
  let targets = 0;
  /** A target of its own for each use, so that checks never conflict with each other. */
  const targetFor = (check: string): Target => ({ service: `${check}-${suffix}-${++targets}`, environment: "conformance" });
  const deployInput = (target: Target, requestedBy = "conformance"): EnqueueInput => ({ kind: "deploy", target, request: { spec: SPEC, environment: target.environment }, requestedBy });
  const event = (target: Target, message: string) => ({ type: "image.build.log", time: new Date().toISOString(), target: formatTarget(target), message }) as KilnEvent;

  describe(`deployment queue conformance: ${options.name}`, () => {
    let queue!: DeploymentQueue;
    let other!: DeploymentQueue;

    beforeAll(async () => {
      queue = await options.createQueue();
      other = await options.createQueue();
    }, timeoutMs);

    afterAll(async () => {
      try {
        for (const created of new Set([queue, other])) await created?.close?.();
      } finally {
        await options.cleanup?.();
      }
    }, timeoutMs);

    // A check that failed half-way may leave deployments waiting, which the next check's claims
    // would take: end them, so each check starts with nothing to claim.
    afterEach(async () => {
      for (;;) {
        const left = await queue.claim("conformance-cleanup", LONG_LEASE_MS);
        if (!left) return;
        await queue.finish(left.id, "conformance-cleanup", { state: "failed", error: { code: "INTERNAL", message: "left by a failed check" } });
      }
    }, timeoutMs);

    /** Enqueues a deployment of `target`, expecting it to be queued. */
    async function enqueued(target: Target, on: DeploymentQueue = queue, input: EnqueueInput = deployInput(target)): Promise<DeploymentRecord> {
      const outcome = await on.enqueue(input);
      if (outcome.kind !== "queued") expect.fail(`enqueue of ${formatTarget(target)}: expected it queued, got a conflict with ${outcome.active.id}`);
      return outcome.record;
    }

    /** Claims, expecting to get `id`. */
    async function claimed(id: string, worker: string, leaseMs = LONG_LEASE_MS, on: DeploymentQueue = queue): Promise<DeploymentRecord> {
      const record = await on.claim(worker, leaseMs);
      expect(record?.id, `the claim by ${worker}`).toBe(id);
      return record!;
    }

    it(
      "enqueue records a queued deployment that reads back equal from both queue objects",
      async () => {
        const target = targetFor("enqueue");
        const before = Date.now();
        const outcome = await queue.enqueue(deployInput(target, "ci-staging"));
        const after = Date.now();
        expect(outcome.kind).toBe("queued");
        const record = (outcome as { record: DeploymentRecord }).record;
        expect(record.id).toMatch(/^dep_[0-9a-f]{32}$/);
        expect(record).toMatchObject({ kind: "deploy", target, state: "queued", requestedBy: "ci-staging", cancelRequested: false, attempts: 0 });
        expect(record.request).toEqual({ spec: SPEC, environment: "conformance" });
        expectTimeBetween(record.createdAt, before, after, "createdAt");
        for (const absent of ["startedAt", "finishedAt", "claimedBy", "leaseExpiresAt", "result", "error"] as const) expect(record[absent], absent).toBeUndefined();
        expect(await queue.get(record.id)).toEqual(record);
        expect(await other.get(record.id)).toEqual(record);
        expect(await queue.get(`dep_${"0".repeat(32)}`)).toBeUndefined();

        const rollbackTarget = targetFor("enqueue-rollback");
        const rollback = await enqueued(rollbackTarget, other, { kind: "rollback", target: rollbackTarget, request: { environment: "conformance", release: 3 }, requestedBy: "admin" });
        expect(rollback).toMatchObject({ kind: "rollback", target: rollbackTarget, state: "queued", request: { environment: "conformance", release: 3 } });
        expect(rollback.id).not.toBe(record.id);
        expect(await queue.get(rollback.id)).toEqual(rollback);

        for (const id of [record.id, rollback.id]) expect((await queue.requestCancel(id))?.state).toBe("cancelled");
      },
      timeoutMs,
    );

    it(
      "one active deployment per target: a second enqueue is refused with the active one, from either queue object, until it ends",
      async () => {
        const target = targetFor("one-active");
        const first = await enqueued(target);
        for (const on of [queue, other]) {
          const refused = await on.enqueue(deployInput(target, "someone else"));
          expect(refused.kind).toBe("conflict");
          expect((refused as { active: DeploymentRecord }).active).toEqual(await queue.get(first.id));
        }
        // Another environment of the same service is another target.
        const elsewhere = await enqueued({ service: target.service, environment: "conformance-b" });

        await claimed(first.id, "worker-a");
        const whileRunning = await other.enqueue(deployInput(target));
        expect(whileRunning.kind).toBe("conflict");
        expect((whileRunning as { active: DeploymentRecord }).active).toMatchObject({ id: first.id, state: "running", claimedBy: "worker-a" });

        expect(await queue.finish(first.id, "worker-a", { state: "succeeded", result: { release: 1 } })).toBe(true);
        const second = await enqueued(target, other);
        expect(second.id).not.toBe(first.id);
        // A cancelled one frees the target too.
        expect((await queue.requestCancel(second.id))?.state).toBe("cancelled");
        const third = await enqueued(target);
        for (const id of [third.id, elsewhere.id]) await queue.requestCancel(id);
      },
      timeoutMs,
    );

    it(
      "of 10 enqueues for one target at once through both queue objects, exactly one is queued and the others name it",
      async () => {
        const target = targetFor("racing");
        const outcomes = await Promise.all(Array.from({ length: 10 }, (_, index) => (index % 2 === 0 ? queue : other).enqueue(deployInput(target, `racer-${index}`))));
        const queued = outcomes.flatMap((outcome) => (outcome.kind === "queued" ? [outcome.record] : []));
        expect(queued).toHaveLength(1);
        const conflicts = outcomes.flatMap((outcome) => (outcome.kind === "conflict" ? [outcome.active] : []));
        expect(conflicts).toHaveLength(9);
        for (const active of conflicts) expect(active.id).toBe(queued[0]!.id);
        expect((await queue.list({ target, limit: 100 })).map((record) => record.id)).toEqual([queued[0]!.id]);
        await queue.requestCancel(queued[0]!.id);
      },
      timeoutMs,
    );

    it(
      "list gives deployments newest first, at most limit of them, of one target when asked",
      async () => {
        const [a, b, c] = [targetFor("list"), targetFor("list"), targetFor("list")];
        const made: DeploymentRecord[] = [];
        for (const target of [a, b, c, a]) {
          const record = await enqueued(target, made.length % 2 === 0 ? queue : other);
          made.push(record);
          await queue.requestCancel(record.id);
        }
        const ids = made.map((record) => record.id);
        const listed = (await other.list({ limit: 1000 })).map((record) => record.id).filter((id) => ids.includes(id));
        expect(listed).toEqual([...ids].reverse());
        expect((await queue.list({ limit: 2 })).map((record) => record.id)).toEqual([ids[3], ids[2]]);
        expect((await queue.list({ target: a, limit: 10 })).map((record) => record.id)).toEqual([ids[3], ids[0]]);
        expect((await queue.list({ target: a, limit: 1 })).map((record) => record.id)).toEqual([ids[3]]);
        expect(await queue.list({ target: b, limit: 10 })).toEqual([await queue.get(ids[1]!)]);
        expect(await queue.list({ target: targetFor("list-none"), limit: 10 })).toEqual([]);
      },
      timeoutMs,
    );

    it(
      "claim takes the oldest waiting deployment and marks it running under a lease; with none waiting it gives undefined",
      async () => {
        expect(await queue.claim("worker-a", LONG_LEASE_MS)).toBeUndefined();
        const older = await enqueued(targetFor("claim"));
        const newer = await enqueued(targetFor("claim"), other);
        const before = Date.now();
        const first = await claimed(older.id, "worker-a", 20_000, other);
        const after = Date.now();
        expect(first).toMatchObject({ ...older, state: "running", claimedBy: "worker-a", attempts: 1 });
        expectTimeBetween(first.startedAt, before, after, "startedAt");
        expectTimeBetween(first.leaseExpiresAt, before + 20_000, after + 20_000, "leaseExpiresAt (20 s from the claim)");
        expect(await queue.get(older.id)).toEqual(first);

        const second = await claimed(newer.id, "worker-b");
        expect(second).toMatchObject({ state: "running", claimedBy: "worker-b", attempts: 1 });
        // A running deployment under a live lease is not claimable.
        expect(await queue.claim("worker-c", LONG_LEASE_MS)).toBeUndefined();
        expect(await other.claim("worker-c", LONG_LEASE_MS)).toBeUndefined();
        expect(await queue.finish(older.id, "worker-a", { state: "succeeded" })).toBe(true);
        expect(await queue.finish(newer.id, "worker-b", { state: "succeeded" })).toBe(true);
      },
      timeoutMs,
    );

    it(
      "claims are exclusive: 12 claims at once through both queue objects take 6 waiting deployments, each exactly once",
      async () => {
        const waiting: DeploymentRecord[] = [];
        for (let index = 0; index < 6; index++) waiting.push(await enqueued(targetFor("exclusive")));
        const claims = await Promise.all(Array.from({ length: 12 }, (_, index) => (index % 2 === 0 ? queue : other).claim(`worker-${index}`, LONG_LEASE_MS)));
        const taken = claims.filter((record): record is DeploymentRecord => record !== undefined);
        expect(taken.map((record) => record.id).sort()).toEqual(waiting.map((record) => record.id).sort());
        for (const record of taken) {
          expect(record.attempts).toBe(1);
          // What the claimer was told is what the queue holds: the claim is its own.
          expect((await other.get(record.id))?.claimedBy).toBe(record.claimedBy);
          expect(await queue.finish(record.id, record.claimedBy!, { state: "unchanged" })).toBe(true);
        }
      },
      timeoutMs,
    );

    it(
      "renew extends the lease of the worker holding the claim, and is refused to any other worker",
      async () => {
        const record = await enqueued(targetFor("renew"));
        const claim = await claimed(record.id, "worker-a", 10_000);
        const before = Date.now();
        const renewed = await other.renew(record.id, "worker-a", 60_000);
        const after = Date.now();
        expect(renewed).toMatchObject({ id: record.id, state: "running", claimedBy: "worker-a", attempts: 1, cancelRequested: false });
        expectTimeBetween(renewed?.leaseExpiresAt, before + 60_000, after + 60_000, "leaseExpiresAt after the renewal (60 s)");
        expect(Date.parse(renewed!.leaseExpiresAt!)).toBeGreaterThan(Date.parse(claim.leaseExpiresAt!));
        expect(await queue.get(record.id)).toEqual(renewed);

        expect(await queue.renew(record.id, "worker-b", 60_000)).toBeUndefined();
        expect(await queue.get(record.id)).toEqual(renewed);
        expect(await queue.renew(`dep_${"0".repeat(32)}`, "worker-a", 60_000)).toBeUndefined();
        // A queued deployment has no claim to renew.
        const waiting = await enqueued(targetFor("renew-queued"));
        expect(await queue.renew(waiting.id, "worker-a", 60_000)).toBeUndefined();
        expect((await queue.get(waiting.id))?.state).toBe("queued");
        await queue.requestCancel(waiting.id);
        // Nor a finished one.
        expect(await queue.finish(record.id, "worker-a", { state: "succeeded" })).toBe(true);
        expect(await queue.renew(record.id, "worker-a", 60_000)).toBeUndefined();
      },
      timeoutMs,
    );

    it(
      "a lapsed lease is taken over by the next claim (attempts 2); the old worker's renew and finish are refused",
      async () => {
        const record = await enqueued(targetFor("takeover"));
        const first = await claimed(record.id, "worker-a");
        expect(await other.claim("worker-b", LONG_LEASE_MS)).toBeUndefined();
        // Worker A's last renewal: a short lease that it then stops renewing (its process died).
        expect(await queue.renew(record.id, "worker-a", 300)).toBeDefined();
        const taken = await waitUntil(() => other.claim("worker-b", LONG_LEASE_MS), "the lapsed claim is claimed again");
        expect(taken).toMatchObject({ id: record.id, state: "running", claimedBy: "worker-b", attempts: 2, startedAt: first.startedAt });
        expect(await queue.renew(record.id, "worker-a", LONG_LEASE_MS)).toBeUndefined();
        expect(await queue.finish(record.id, "worker-a", { state: "failed", error: { code: "LOCK_LOST", message: "too late" } })).toBe(false);
        expect(await queue.get(record.id)).toMatchObject({ state: "running", claimedBy: "worker-b", attempts: 2 });
        expect(await queue.finish(record.id, "worker-b", { state: "succeeded", result: { release: 2, rolloutId: "r-2" } })).toBe(true);
        expect(await other.get(record.id)).toMatchObject({ state: "succeeded", attempts: 2, result: { release: 2, rolloutId: "r-2" } });
      },
      timeoutMs,
    );

    it(
      "finish records each final state once, only for the worker holding the claim, and frees the target",
      async () => {
        const outcomes: DeploymentOutcome[] = [
          { state: "succeeded", result: { release: 3, rolloutId: "r-3" } },
          { state: "unchanged", result: { release: 2 } },
          { state: "failed", error: { code: "HEALTH_CHECK_FAILED", message: "instance i-1 answered 503 «Service Unavailable»" } },
          { state: "cancelled", error: { code: "ABORTED", message: "Cancelled through the API." } },
        ];
        for (const outcome of outcomes) {
          const target = targetFor(`finish-${outcome.state}`);
          const record = await enqueued(target);
          const claim = await claimed(record.id, "worker-a");
          expect(await queue.finish(record.id, "worker-b", outcome)).toBe(false);
          const before = Date.now();
          expect(await other.finish(record.id, "worker-a", outcome)).toBe(true);
          const after = Date.now();
          const final = await queue.get(record.id);
          expect(final).toMatchObject({ id: record.id, state: outcome.state, claimedBy: "worker-a", attempts: 1, startedAt: claim.startedAt, cancelRequested: false });
          expect(final?.result).toEqual(outcome.result);
          expect(final?.error).toEqual(outcome.error);
          expect(final?.leaseExpiresAt).toBeUndefined();
          expectTimeBetween(final?.finishedAt, before, after, "finishedAt");
          // Once only, and a final deployment is never claimed, renewed or cancelled again.
          expect(await queue.finish(record.id, "worker-a", { state: "failed" })).toBe(false);
          expect(await queue.renew(record.id, "worker-a", LONG_LEASE_MS)).toBeUndefined();
          expect(await queue.claim("worker-c", LONG_LEASE_MS)).toBeUndefined();
          expect(await queue.requestCancel(record.id)).toEqual(final);
          expect(await queue.get(record.id)).toEqual(final);
          // The target is free.
          await queue.requestCancel((await enqueued(target, other)).id);
        }
      },
      timeoutMs,
    );

    it(
      "finish refuses a state that is not final (INVALID_ARGUMENT), and still works for the claim's worker after its lease lapsed with nobody taking over",
      async () => {
        const record = await enqueued(targetFor("finish-late"));
        await claimed(record.id, "worker-a");
        await expectKilnError(queue.finish(record.id, "worker-a", { state: "running" } as unknown as DeploymentOutcome), "INVALID_ARGUMENT", "finish as running");
        expect(await queue.get(record.id)).toMatchObject({ state: "running", claimedBy: "worker-a" });
        const short = await queue.renew(record.id, "worker-a", 1);
        await waitUntil(() => Date.now() > Date.parse(short!.leaseExpiresAt!) + 100 || undefined, "the lease lapsed");
        expect(await queue.finish(record.id, "worker-a", { state: "succeeded", result: { release: 1 } })).toBe(true);
        expect(await queue.get(record.id)).toMatchObject({ state: "succeeded", result: { release: 1 } });
        expect(await queue.claim("worker-b", LONG_LEASE_MS)).toBeUndefined();
      },
      timeoutMs,
    );

    it(
      "requestCancel cancels a queued deployment at once, flags a running one for its worker (seen at its next renewal), and leaves a final one alone",
      async () => {
        const target = targetFor("cancel");
        const waiting = await enqueued(target);
        const before = Date.now();
        const cancelled = await other.requestCancel(waiting.id);
        const after = Date.now();
        expect(cancelled).toMatchObject({ id: waiting.id, state: "cancelled", cancelRequested: true, attempts: 0, error: { code: "ABORTED" } });
        expect(cancelled?.error?.message).toMatch(/before it started/);
        expectTimeBetween(cancelled?.finishedAt, before, after, "finishedAt");
        expect(cancelled?.claimedBy).toBeUndefined();
        expect(await queue.get(waiting.id)).toEqual(cancelled);
        expect(await queue.claim("worker-a", LONG_LEASE_MS)).toBeUndefined();

        const running = await enqueued(target, other);
        await claimed(running.id, "worker-a");
        const flagged = await other.requestCancel(running.id);
        expect(flagged).toMatchObject({ id: running.id, state: "running", cancelRequested: true, claimedBy: "worker-a" });
        expect(flagged?.finishedAt).toBeUndefined();
        expect(await queue.get(running.id)).toMatchObject({ state: "running", cancelRequested: true });
        // The worker learns of it from its renewal, and ends the deployment.
        expect(await queue.renew(running.id, "worker-a", LONG_LEASE_MS)).toMatchObject({ cancelRequested: true, state: "running" });
        expect(await queue.finish(running.id, "worker-a", { state: "cancelled", error: { code: "ABORTED", message: "Cancelled through the API." } })).toBe(true);
        const final = await queue.get(running.id);
        expect(final).toMatchObject({ state: "cancelled", cancelRequested: true });
        expect(await other.requestCancel(running.id)).toEqual(final);
        expect(await queue.get(running.id)).toEqual(final);
        expect(await queue.requestCancel(`dep_${"0".repeat(32)}`)).toBeUndefined();
      },
      timeoutMs,
    );

    it(
      "events are numbered from 1 per deployment, in order, across batches and queue objects",
      async () => {
        const target = targetFor("events");
        const record = await enqueued(target);
        expect(await queue.appendEvents(record.id, [])).toBe(0);
        const sent = Array.from({ length: 5 }, (_, index) => event(target, `step ${index + 1}: ✓ ünïcode «${index}»`));
        expect(await queue.appendEvents(record.id, sent.slice(0, 3))).toBe(3);
        expect(await other.appendEvents(record.id, sent.slice(3))).toBe(5);
        expect(await queue.appendEvents(record.id, [])).toBe(5);
        expect(await other.readEvents(record.id, 0, 100)).toEqual(sent.map((sentEvent, index) => ({ seq: index + 1, event: sentEvent })));
        expect((await queue.readEvents(record.id, 3, 100)).map((stored) => stored.seq)).toEqual([4, 5]);
        expect((await queue.readEvents(record.id, 1, 2)).map((stored) => stored.seq)).toEqual([2, 3]);
        expect(await queue.readEvents(record.id, 5, 100)).toEqual([]);

        // Another deployment's events are its own, numbered from 1.
        const otherRecord = await enqueued(targetFor("events"));
        const itsOwn = event(target, "its own");
        expect(await other.appendEvents(otherRecord.id, [itsOwn])).toBe(1);
        expect(await queue.readEvents(otherRecord.id, 0, 100)).toEqual([{ seq: 1, event: itsOwn }]);
        expect(await queue.readEvents(record.id, 0, 100)).toHaveLength(5);

        await expectKilnError(queue.appendEvents(`dep_${"0".repeat(32)}`, [event(target, "nowhere")]), "INVALID_ARGUMENT", "appending to an unknown deployment");
        expect(await queue.readEvents(`dep_${"0".repeat(32)}`, 0, 100)).toEqual([]);
        for (const id of [record.id, otherRecord.id]) await queue.requestCancel(id);
      },
      timeoutMs,
    );

    it(
      "events appended at once through both queue objects get distinct numbers, with no gaps",
      async () => {
        const target = targetFor("events-racing");
        const record = await enqueued(target);
        const sent = Array.from({ length: 20 }, (_, index) => event(target, `racer ${index}`));
        const numbers = await Promise.all(sent.map((built, index) => (index % 2 === 0 ? queue : other).appendEvents(record.id, [built])));
        expect([...numbers].sort((x, y) => x - y)).toEqual(Array.from({ length: 20 }, (_, index) => index + 1));
        const stored = await queue.readEvents(record.id, 0, 100);
        expect(stored.map((entry) => entry.seq)).toEqual(Array.from({ length: 20 }, (_, index) => index + 1));
        expect(stored.map((entry) => (entry.event as { message?: string }).message).sort()).toEqual(sent.map((built) => (built as { message?: string }).message).sort());
        // Each append's number is the one its event got.
        for (const [index, number] of numbers.entries()) expect((stored[number - 1]!.event as { message?: string }).message).toBe(`racer ${index}`);
        await queue.requestCancel(record.id);
      },
      timeoutMs,
    );

    it(
      "the first answer kept under an idempotency key stays, for every queue object",
      async () => {
        const key = `conformance-${suffix}-${randomBytes(4).toString("hex")}`;
        expect(await queue.getResponse(key)).toBeUndefined();
        const first: IdempotentResponse = {
          status: 202,
          body: { id: "dep_1", target: "web@prod", links: { self: "/v1/deployments/dep_1" }, note: "ünïcode ✓", nothing: null },
          headers: { location: "/v1/deployments/dep_1", "x-kiln-body-sha256": "ab".repeat(32) },
        };
        expect(await queue.keepResponse(key, first)).toEqual(first);
        expect(await other.getResponse(key)).toEqual(first);
        const second: IdempotentResponse = { status: 422, body: { code: "SPEC_INVALID" } };
        expect(await other.keepResponse(key, second)).toEqual(first);
        expect(await queue.getResponse(key)).toEqual(first);
        // Without headers, it reads back without headers.
        const plainKey = `${key}-plain`;
        expect(await queue.keepResponse(plainKey, second)).toEqual(second);
        expect(await other.getResponse(plainKey)).toEqual(second);

        // Ten at once under one key: every caller is told the same answer, the one kept.
        const racingKey = `${key}-racing`;
        const answers = await Promise.all(Array.from({ length: 10 }, (_, index) => (index % 2 === 0 ? queue : other).keepResponse(racingKey, { status: 202, body: { racer: index } })));
        const kept = await queue.getResponse(racingKey);
        expect(kept?.status).toBe(202);
        expect((kept?.body as { racer: number }).racer).toBeGreaterThanOrEqual(0);
        for (const answer of answers) expect(answer).toEqual(kept);
      },
      timeoutMs,
    );
  });
}
