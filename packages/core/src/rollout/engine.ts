import { randomUUID } from "node:crypto";
import { KilnError, isAbortError, throwIfAborted, toKilnError } from "../errors.js";
import type { EventInstance, KilnEventInput, RolloutKind } from "../events.js";
import { probeHttp } from "../health.js";
import type { Logger } from "../logger.js";
import type { ImageRef, Instance, InstanceConfig, Provider, ProviderContext } from "../provider.js";
import type { ResolvedHealth } from "../spec/resolve.js";
import type { Target } from "../target.js";
import { sleep } from "../wait.js";
import { nextRollingBatch } from "./batches.js";

/** A release as the rollout engine needs it: what to launch. */
export interface LaunchableRelease {
  readonly number: number;
  readonly image: ImageRef;
  readonly count: number;
  readonly instance: InstanceConfig;
  readonly health: ResolvedHealth;
  readonly rollout: { readonly maxSurge: number; readonly maxUnavailable: number };
}

/** Input of {@link applyRollout}. */
export interface RolloutInput {
  readonly rolloutId: string;
  readonly kind: RolloutKind;
  readonly target: Target;
  readonly provider: Provider;
  /** The release to move to. */
  readonly release: LaunchableRelease;
  /** The release serving before, restored when the rollout fails; undefined on a first deploy. */
  readonly previous: LaunchableRelease | undefined;
  /** Instances of `release` already running, which stay. */
  readonly keep: readonly Instance[];
  /** Instances to retire: other releases, surplus and stopped ones. */
  readonly retire: readonly Instance[];
  readonly signal: AbortSignal;
  readonly logger: Logger;
  emit(event: KilnEventInput): void;
}

/** The outcome of a rollout that failed and was undone. */
export interface RolloutFailure {
  readonly error: KilnError;
  /** The release serving afterwards (the previous one), if any could be restored. */
  readonly restoredRelease: number | undefined;
}

/** How long cleanup after a failed or cancelled rollout may take, at most (milliseconds). */
const CLEANUP_TIMEOUT_MS = 120_000;

/**
 * Performs a rolling replacement: batch by batch, retire old instances while healthy capacity
 * stays at or above `count - maxUnavailable`, launch new ones while the total stays at or below
 * `count + maxSurge`, and gate each batch on the health check. When a batch fails (or the signal
 * aborts), every instance this rollout launched is removed and the previous release is brought
 * back to its count; the old instances that were never retired keep serving throughout.
 *
 * @returns undefined on success, or the failure after it was undone
 */
export async function applyRollout(input: RolloutInput): Promise<RolloutFailure | undefined> {
  const { provider, release, rolloutId, target } = input;
  const ctx = providerContext(input, input.signal);
  const launched: Instance[] = [];
  const running = (instance: Instance) => instance.state === "running" || instance.state === "pending";
  let old = input.retire.filter(running);
  const stopped = input.retire.filter((instance) => !running(instance));
  let newHealthy = Math.min(input.keep.length, release.count);
  let toLaunch = release.count - newHealthy;
  let batchNumber = 0;
  try {
    if (stopped.length > 0) await retire(input, stopped, ctx);
    for (;;) {
      throwIfAborted(input.signal);
      const batch = nextRollingBatch({
        count: release.count,
        maxSurge: release.rollout.maxSurge,
        maxUnavailable: release.rollout.maxUnavailable,
        oldAlive: old.length,
        newHealthy,
        toLaunch,
      });
      if (!batch) break;
      batchNumber += 1;
      if (batch.retire > 0) {
        const leaving = old.slice(0, batch.retire);
        old = old.slice(batch.retire);
        await retire(input, leaving, ctx);
      }
      if (batch.launch > 0) {
        const started = await provider.instances.launch(
          {
            target,
            release: release.number,
            rolloutId,
            idempotencyKey: `${rolloutId}:launch:${batchNumber}`,
            image: release.image,
            config: release.instance,
            count: batch.launch,
          },
          ctx,
        );
        launched.push(...started);
        for (const instance of started) input.emit({ type: "instance.launched", rolloutId, instance: describe(instance) });
        toLaunch -= started.length;
        await waitUntilHealthy(input, release, started, ctx);
        newHealthy += started.length;
      }
    }
    return undefined;
  } catch (caught) {
    const error = isAbortError(caught)
      ? new KilnError("ABORTED", "The rollout was cancelled; its new instances were removed and the previous release restored.", { cause: caught })
      : toKilnError(caught, "ROLLOUT_FAILED", "The rollout failed");
    input.logger.warn("rollout failed, undoing it", { rolloutId, code: error.code });
    const restoredRelease = await undo(input, launched, old);
    return { error, restoredRelease };
  }
}

/** Terminates instances, each given the stop grace period of the release it belongs to. */
async function retire(input: RolloutInput, instances: readonly Instance[], ctx: ProviderContext): Promise<void> {
  if (instances.length === 0) return;
  for (const instance of instances) input.emit({ type: "instance.retiring", rolloutId: input.rolloutId, instance: describe(instance) });
  const graceOf = (instance: Instance) =>
    instance.release === input.release.number ? input.release.instance.stopGracePeriodMs : (input.previous?.instance.stopGracePeriodMs ?? input.release.instance.stopGracePeriodMs);
  const gracePeriodMs = Math.max(...instances.map(graceOf));
  await input.provider.instances.terminate(instances, { gracePeriodMs }, ctx);
  for (const instance of instances) input.emit({ type: "instance.retired", rolloutId: input.rolloutId, instance: describe(instance) });
}

/**
 * Removes what the failed rollout launched and brings the previous release back to its count.
 * Runs with its own signal (the rollout's may be aborted) and a bounded time.
 */
async function undo(input: RolloutInput, launched: readonly Instance[], oldStillServing: readonly Instance[]): Promise<number | undefined> {
  const signal = AbortSignal.timeout(CLEANUP_TIMEOUT_MS);
  const ctx = providerContext(input, signal);
  try {
    // Everything this rollout launched, including any a crashed launch call left behind.
    const mine = await input.provider.instances.list({ target: input.target, rolloutId: input.rolloutId }, ctx);
    const byId = new Map([...launched, ...mine].map((instance) => [instance.id, instance]));
    await retire(input, [...byId.values()], ctx);
  } catch (error) {
    input.logger.error("could not remove the failed rollout's instances", { rolloutId: input.rolloutId, error: String(error) });
  }
  const previous = input.previous;
  if (!previous) return undefined;
  try {
    // Count what of the previous release really runs (old instances never retired, and in a
    // repair the kept ones too), rather than trusting the rollout's own bookkeeping.
    const running = (await input.provider.instances.list({ target: input.target, release: previous.number }, ctx)).filter(
      (instance) => instance.rolloutId !== input.rolloutId && (instance.state === "running" || instance.state === "pending"),
    );
    const missing = previous.count - Math.max(running.length, oldStillServing.length);
    if (missing <= 0) return previous.number;
    const restored = await input.provider.instances.launch(
      {
        target: input.target,
        release: previous.number,
        rolloutId: input.rolloutId,
        idempotencyKey: `${input.rolloutId}:restore`,
        image: previous.image,
        config: previous.instance,
        count: missing,
      },
      ctx,
    );
    for (const instance of restored) input.emit({ type: "instance.launched", rolloutId: input.rolloutId, instance: describe(instance) });
    await waitUntilHealthy({ ...input, signal }, previous, restored, ctx);
    return previous.number;
  } catch (error) {
    input.logger.error("could not restore the previous release", { rolloutId: input.rolloutId, error: String(error) });
    return undefined;
  }
}

interface ProbeState {
  successes: number;
  failures: number;
  lastReason: string;
}

/**
 * Waits until every instance passes the health check: `healthyThreshold` consecutive successful
 * probes. Failures during `startPeriodMs` do not count; `unhealthyThreshold` consecutive failures
 * after it, an instance that stopped, or the deadline fail the batch. Instance states come from
 * one `list` call per round for the whole batch, never one call per instance.
 *
 * @throws KilnError HEALTH_CHECK_FAILED, ABORTED
 */
export async function waitUntilHealthy(
  input: Pick<RolloutInput, "provider" | "target" | "rolloutId" | "signal" | "emit">,
  release: Pick<LaunchableRelease, "number" | "health">,
  instances: readonly Instance[],
  ctx: ProviderContext,
): Promise<void> {
  const { health } = release;
  const startedAt = Date.now();
  const pending = new Map<string, { instance: Instance; probe: ProbeState }>(
    instances.map((instance) => [instance.id, { instance, probe: { successes: 0, failures: 0, lastReason: "not probed yet" } }]),
  );
  const fail = (instance: Instance, reason: string): never => {
    input.emit({ type: "instance.unhealthy", rolloutId: input.rolloutId, instance: describe(instance), reason });
    throw new KilnError(
      "HEALTH_CHECK_FAILED",
      `Instance ${instance.name} of release ${release.number} did not become healthy: ${reason}. The rollout was undone; check the instance's logs, the health check settings (path, port, startPeriodMs) and try again.`,
      { details: { instance: instance.name, release: release.number, reason } },
    );
  };
  while (pending.size > 0) {
    throwIfAborted(input.signal);
    const elapsed = Date.now() - startedAt;
    const live = new Map((await input.provider.instances.list({ target: input.target, rolloutId: input.rolloutId }, ctx)).map((i) => [i.id, i]));
    await Promise.all(
      [...pending.values()].map(async (entry) => {
        const current = live.get(entry.instance.id);
        if (!current || current.state === "stopped" || current.state === "terminated") {
          fail(entry.instance, `it ${current ? `is ${current.state}` : "no longer exists"} (it exited or was removed)`);
          return;
        }
        if (current.restartCount > entry.instance.restartCount) {
          entry.instance = current;
          entry.probe.successes = 0;
          entry.probe.lastReason = "it restarted";
        }
        const result = health.http ? await probeInstance(input.provider, current, health, ctx) : current.state === "running" ? { ok: true as const } : { ok: false as const, reason: `it is ${current.state}` };
        if (result.ok) {
          entry.probe.successes += 1;
          entry.probe.failures = 0;
        } else {
          entry.probe.successes = 0;
          entry.probe.lastReason = result.reason;
          if (elapsed >= health.startPeriodMs) entry.probe.failures += 1;
        }
        if (entry.probe.successes >= health.healthyThreshold) {
          pending.delete(current.id);
          input.emit({ type: "instance.healthy", rolloutId: input.rolloutId, instance: describe(current), durationMs: Date.now() - startedAt });
        } else if (entry.probe.failures >= health.unhealthyThreshold) {
          fail(current, `${entry.probe.failures} consecutive failed probes after the ${health.startPeriodMs} ms start period; last: ${entry.probe.lastReason}`);
        }
      }),
    );
    if (pending.size === 0) break;
    if (Date.now() - startedAt >= health.deadlineMs) {
      const first = [...pending.values()][0]!;
      fail(first.instance, `not healthy within the ${health.deadlineMs} ms deadline; last: ${first.probe.lastReason}`);
    }
    await sleep(health.intervalMs, input.signal);
  }
}

function probeInstance(provider: Provider, instance: Instance, health: ResolvedHealth, ctx: ProviderContext) {
  const check = health.http!;
  if (provider.health) return provider.health.probe(instance, check, health.timeoutMs, ctx);
  const endpoint = instance.endpoints[check.portName];
  if (!endpoint) return Promise.resolve({ ok: false as const, reason: `port "${check.portName}" is not reachable (not published)` });
  return probeHttp(endpoint, check, health.timeoutMs, ctx.signal);
}

function providerContext(input: Pick<RolloutInput, "logger" | "emit">, signal: AbortSignal): ProviderContext {
  return { signal, logger: input.logger, emit: (progress) => input.emit(progress) };
}

/** An instance as events describe it. */
export function describe(instance: Instance): EventInstance {
  return { id: instance.id, name: instance.name, release: instance.release };
}

/** A new rollout id: sortable by time, unique. */
export function newRolloutId(): string {
  return `${new Date().toISOString().replace(/[-:.TZ]/g, "").slice(0, 14)}-${randomUUID().slice(0, 8)}`;
}
