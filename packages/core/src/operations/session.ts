/**
 * The session every operation that changes a target runs in: take the target's lock (waiting for
 * it if asked), recover the rollouts whose process died, then reach the provider (ping) and list
 * what runs. The recovery's outcome is settled by the operation, once it knows what it will do.
 * @module
 */
import { KilnError, isKilnError } from "../errors.js";
import type { EventHandler, RecoveredReleaseOutcome, RolloutKind } from "../events.js";
import { journaled } from "../journal/journaled.js";
import { markInterruptedRollouts, type InterruptedRollout } from "../journal/recover.js";
import type { Instance, Provider, ProviderContext } from "../provider/contract.js";
import { describe, newRolloutId } from "../rollout/engine.js";
import { formatHolder } from "../state/lease.js";
import type { Holder, RolloutRecord, TargetLock } from "../state/types.js";
import { formatTarget, type Target } from "../target.js";
import { waitFor } from "../wait.js";
import type { LockWaitOptions } from "../kiln.js";
import type { Emit, OperationContext } from "./context.js";

/** What an operation holds while it has the target's lock. */
export interface Session {
  readonly target: Target;
  readonly lock: TargetLock;
  /** The caller's signal, also aborted when the lease is lost. */
  readonly signal: AbortSignal;
  readonly emit: Emit;
  /** The context for provider calls made in this session. */
  readonly ctx: ProviderContext;
  /** The rollouts whose process died, found and marked `aborted` when the session began. */
  readonly interrupted: readonly InterruptedRollout[];
  /**
   * The named provider, once it answers (`ping`).
   * @throws KilnError PROVIDER_NOT_FOUND, PROVIDER_UNAVAILABLE
   */
  connect(name: string): Promise<Provider>;
  /** Every instance of the target that `provider` sees (one filtered list call). */
  list(provider: Provider): Promise<Instance[]>;
  /**
   * Decides what each interrupted rollout's release becomes (the one `resumed` keeps pending; any
   * other pending one is recorded failed, because of `why`) and reports each (`rollout.recovered`,
   * with the instances `next` keeps and retires).
   */
  settle(resumed: number | undefined, next: { keep: readonly Instance[]; retire: readonly Instance[] } | undefined, why: string): Promise<void>;
  /** Writes a new rollout record (status running) under the session's lease. */
  beginRollout(args: { provider: string; kind: RolloutKind; fromRelease: number | undefined; toRelease: number }): Promise<RolloutRecord>;
  /** `provider` with every change journaled on rollout `rolloutId`'s record. */
  journal(provider: Provider, rolloutId: string): Provider;
}

/** Options of {@link inSession}. */
export interface SessionOptions extends LockWaitOptions {
  readonly signal?: AbortSignal | undefined;
  readonly onEvent?: EventHandler | undefined;
}

/**
 * Runs `run` holding the target's lock, after recovering the rollouts whose process died (their
 * instances listed through `providerName`'s provider, or each rollout's own). The lock is released
 * whatever happens.
 * @throws KilnError TARGET_LOCKED, ABORTED, and whatever `run` throws
 */
export async function inSession<T>(context: OperationContext, target: Target, providerName: string | undefined, options: SessionOptions, run: (session: Session) => Promise<T>): Promise<T> {
  const { store, logger } = context;
  const emit = context.emitterFor(target, options.onEvent);
  const lock = await acquireLock(context, target, options, emit);
  if (lock.tookOver) {
    emit({
      type: "lock.taken-over",
      previousHolder: formatHolder(lock.tookOver.holder),
      previousToken: lock.tookOver.token,
      reason: lock.tookOver.staleReason ?? "it was stale",
      token: lock.token,
    });
  }
  const signal = options.signal ? AbortSignal.any([options.signal, lock.signal]) : lock.signal;
  try {
    const ctx = context.providerContext(signal, emit);
    const interrupted = await markInterruptedRollouts({
      store,
      target,
      token: lock.token,
      listInstances: (rollout) => {
        const name = rollout.provider ?? providerName;
        if (!name) return undefined;
        return context.provider(name).then((provider) => provider.instances.list({ target, rolloutId: rollout.id }, ctx));
      },
    });
    return await run({
      target,
      lock,
      signal,
      emit,
      ctx,
      interrupted,
      async connect(name) {
        const provider = await context.provider(name);
        await provider.ping(ctx);
        return provider;
      },
      list: (provider) => provider.instances.list({ target }, ctx),
      settle: (resumed, next, why) => settleInterrupted(context, { target, lock, emit }, interrupted, resumed, next, why),
      beginRollout: (args) => beginRollout(context, target, lock, args),
      journal: (provider, rolloutId) => journaled(provider, { ...context.options.journalHooks, store, target, rolloutId, token: lock.token, logger }),
    });
  } finally {
    await lock.release().catch((error: unknown) => {
      logger.error("could not release the rollout lock; it expires by itself", { target: formatTarget(target), token: lock.token, error: String(error) });
    });
  }
}

/**
 * Takes the target's lock, waiting up to `waitForLockMs` for a live holder to let go.
 * @throws KilnError TARGET_LOCKED (at once, or after the wait), ABORTED
 */
async function acquireLock(context: OperationContext, target: Target, options: SessionOptions, emit: Emit): Promise<TargetLock> {
  const { store, logger } = context;
  const ttl = context.options.lockTtlMs;
  const attempt = () => store.lock(target, context.holder(), { ...(ttl ? { ttlMs: ttl } : {}), logger });
  const waitMs = options.waitForLockMs ?? 0;
  if (waitMs <= 0) return attempt();
  let last: KilnError | undefined;
  try {
    return await waitFor(
      async () => {
        try {
          return { done: true, value: await attempt() };
        } catch (error) {
          if (!isKilnError(error, "TARGET_LOCKED")) throw error;
          if (!last) {
            const held = error.details.holder as Holder | undefined;
            emit({ type: "lock.waiting", holder: held ? formatHolder(held) : "another process", expiresAt: typeof error.details.expiresAt === "string" ? error.details.expiresAt : "", timeoutMs: waitMs });
          }
          last = error;
          return { done: false, reason: error.message };
        }
      },
      { timeoutMs: waitMs, minDelayMs: 200, maxDelayMs: 2_000, description: `the lock of ${formatTarget(target)}`, ...(options.signal ? { signal: options.signal } : {}) },
    );
  } catch (error) {
    if (isKilnError(error, "TIMEOUT") && last) {
      throw new KilnError("TARGET_LOCKED", `Waited ${waitMs} ms for the lock, in vain: ${last.message}`, { cause: error, details: last.details });
    }
    throw error;
  }
}

async function settleInterrupted(
  context: OperationContext,
  session: { target: Target; lock: TargetLock; emit: Emit },
  interrupted: readonly InterruptedRollout[],
  resumed: number | undefined,
  next: { keep: readonly Instance[]; retire: readonly Instance[] } | undefined,
  why: string,
): Promise<void> {
  if (interrupted.length === 0) return;
  const outcomes = await context.store.update(
    session.target,
    (state) =>
      interrupted.map(({ rollout }): RecoveredReleaseOutcome => {
        const release = state.releases.find((r) => r.number === rollout.toRelease);
        if (!release) return "not-created";
        if (release.status !== "pending") return "unchanged";
        if (release.number === resumed) return "resumed";
        release.status = "failed";
        release.finishedAt = new Date().toISOString();
        release.error = { code: "ROLLOUT_INTERRUPTED", message: `Its rollout ${rollout.id} was interrupted (its process died) and ${why}.` };
        return "failed";
      }),
    { token: session.lock.token },
  );
  const keepIds = new Set(next?.keep.map((instance) => instance.id));
  const retireIds = new Set(next?.retire.map((instance) => instance.id));
  interrupted.forEach(({ rollout, instances }, index) => {
    session.emit({
      type: "rollout.recovered",
      rolloutId: rollout.id,
      release: rollout.toRelease,
      holder: formatHolder(rollout.holder),
      releaseOutcome: outcomes[index]!,
      found: instances.map(describe),
      adopted: instances.filter((instance) => keepIds.has(instance.id)).map(describe),
      retiring: instances.filter((instance) => retireIds.has(instance.id)).map(describe),
    });
  });
}

async function beginRollout(context: OperationContext, target: Target, lock: TargetLock, args: { provider: string; kind: RolloutKind; fromRelease: number | undefined; toRelease: number }): Promise<RolloutRecord> {
  const record: RolloutRecord = {
    id: newRolloutId(),
    target,
    kind: args.kind,
    fromRelease: args.fromRelease,
    toRelease: args.toRelease,
    startedAt: new Date().toISOString(),
    holder: lock.holder,
    provider: args.provider,
    token: lock.token,
    status: "running",
    journal: [],
  };
  await context.store.update(target, (state) => void state.rollouts.push(record), { token: lock.token });
  return structuredClone(record);
}
