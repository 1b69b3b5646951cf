import { randomUUID } from "node:crypto";
import { KilnError, isAbortError, throwIfAborted, toKilnError } from "../errors.js";
import type { EventInstance, KilnEventInput, RolloutKind } from "../events.js";
import { probeHttp, probeTcp } from "../health.js";
import type { Logger } from "../logger.js";
import type { ImageRef, Instance, InstanceConfig, ProbeResult, Provider, ProviderContext } from "../provider/contract.js";
import type { ResolvedHealth, ResolvedRollout, ResolvedTraffic } from "../spec/resolve.js";
import type { Target } from "../target.js";
import { sleep } from "../wait.js";
import { nextRollingBatch } from "./batches.js";

/** A release as the rollout engine needs it: what to launch, how to check it, how to roll it out. */
export interface LaunchableRelease {
  readonly number: number;
  readonly image: ImageRef;
  readonly count: number;
  readonly instance: InstanceConfig;
  readonly health: ResolvedHealth;
  readonly rollout: ResolvedRollout;
  readonly traffic?: ResolvedTraffic;
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

/** The outcome of a rollout that failed. */
export interface RolloutFailure {
  readonly error: KilnError;
  /** Whether the rollout was undone (its instances removed, the previous release restored). */
  readonly undone: boolean;
  /** The release serving afterwards (the previous one), if it could be restored. */
  readonly restoredRelease: number | undefined;
}

/** How long cleanup after a failed or cancelled rollout may take, at most (milliseconds). */
const CLEANUP_TIMEOUT_MS = 120_000;

const isRunning = (instance: Instance) => instance.state === "running" || instance.state === "pending";

/**
 * Moves a target to a release with the release's strategy:
 *
 * - `rolling`: batch by batch, old instances are retired while healthy capacity stays at or
 *   above `count - maxUnavailable` and new ones launched while the total stays at or below
 *   `count + maxSurge`; each batch is gated on the health check, then held for
 *   `pauseBetweenBatchesMs` with the checks still running.
 * - `blue-green`: the whole new set is launched and gated, then held for `bakeTimeMs` while the
 *   old set still runs (a failure then is undone at once), then the old set is retired.
 * - `canary`: the new release grows step by step (surge-first: new instances are healthy before
 *   as many old ones are retired), each step held for its `holdMs` with the checks running.
 *
 * Invariant, checked before every retirement: healthy instances never fall below
 * `count - maxUnavailable`. When a gate fails or the signal aborts, and `autoRollback` is on (it
 * always is for a cancellation), every instance this rollout launched is removed and the previous
 * release is brought back to its count; its instances that were never retired kept serving.
 *
 * @returns undefined on success, or the failure (after undoing it, unless autoRollback is off)
 */
export async function applyRollout(input: RolloutInput): Promise<RolloutFailure | undefined> {
  const run = new RolloutRun(input);
  try {
    await run.execute();
    return undefined;
  } catch (caught) {
    const aborted = isAbortError(caught);
    const error = aborted
      ? new KilnError("ABORTED", "The rollout was cancelled; its new instances were removed and the previous release restored.", { cause: caught })
      : toKilnError(caught, "ROLLOUT_FAILED", "The rollout failed");
    if (!aborted && !input.release.rollout.autoRollback) {
      input.logger.warn("rollout failed; autoRollback is off, so its instances stay for inspection", { rolloutId: input.rolloutId, code: error.code });
      return { error, undone: false, restoredRelease: undefined };
    }
    input.logger.warn("rollout failed, undoing it", { rolloutId: input.rolloutId, code: error.code });
    const restoredRelease = await undo(input, run.launched, run.old);
    return { error, undone: true, restoredRelease };
  }
}

/** The state of one rollout while it runs. */
class RolloutRun {
  /** Old instances still serving. */
  old: Instance[];
  /** Every instance this rollout launched. */
  readonly launched: Instance[] = [];
  /** Instances of the new release that passed their gate (and kept ones). */
  readonly healthy: Instance[];
  private readonly stopped: Instance[];
  private readonly ctx: ProviderContext;
  private launches = 0;

  constructor(private readonly input: RolloutInput) {
    this.old = input.retire.filter(isRunning);
    this.stopped = input.retire.filter((instance) => !isRunning(instance));
    this.healthy = input.keep.slice(0, input.release.count);
    this.ctx = providerContext(input, input.signal);
  }

  private get release() {
    return this.input.release;
  }

  async execute(): Promise<void> {
    if (this.stopped.length > 0) await retireInstances(this.input, this.stopped, this.ctx);
    // Instances that stay (a repair) must be in the router: it may have been recreated since.
    await shiftTraffic(this.input, this.healthy, [], this.ctx);
    switch (this.release.rollout.strategy) {
      case "rolling":
        return this.rolling();
      case "blue-green":
        return this.blueGreen();
      case "canary":
        return this.canary();
    }
  }

  private async rolling(): Promise<void> {
    const { count, rollout } = this.release;
    for (;;) {
      throwIfAborted(this.input.signal);
      const toLaunch = count - this.healthy.length;
      const batch = nextRollingBatch({ count, maxSurge: rollout.maxSurge, maxUnavailable: rollout.maxUnavailable, oldAlive: this.old.length, newHealthy: this.healthy.length, toLaunch });
      if (!batch) return;
      await this.retireOld(batch.retire);
      if (batch.launch > 0) {
        await this.launchAndGate(batch.launch);
        if (rollout.pauseBetweenBatchesMs > 0 && this.healthy.length < count) await this.hold(rollout.pauseBetweenBatchesMs, "pause");
      }
    }
  }

  private async blueGreen(): Promise<void> {
    const missing = this.release.count - this.healthy.length;
    if (missing > 0) await this.launchAndGate(missing);
    // The switch: the new set takes the traffic, the old set is drained but kept for the bake time.
    await shiftTraffic(this.input, this.healthy, this.old, this.ctx);
    if (this.old.length > 0 && this.release.rollout.bakeTimeMs > 0) await this.hold(this.release.rollout.bakeTimeMs, "bake");
    await this.retireOld(this.old.length);
  }

  private async canary(): Promise<void> {
    for (const step of this.release.rollout.steps) {
      throwIfAborted(this.input.signal);
      const add = step.instances - this.healthy.length;
      if (add > 0) {
        await this.launchAndGate(add);
        const surplus = this.old.length + this.healthy.length - this.release.count;
        await this.retireOld(Math.min(this.old.length, Math.max(surplus, 0)));
      }
      if (step.holdMs > 0 && this.healthy.length < this.release.count) await this.hold(step.holdMs, "canary-step");
    }
    await this.retireOld(this.old.length);
  }

  private async launchAndGate(count: number): Promise<void> {
    this.launches += 1;
    const started = await this.input.provider.instances.launch(
      {
        target: this.input.target,
        release: this.release.number,
        rolloutId: this.input.rolloutId,
        idempotencyKey: `${this.input.rolloutId}:launch:${this.launches}`,
        image: this.release.image,
        config: this.release.instance,
        count,
      },
      this.ctx,
    );
    this.launched.push(...started);
    for (const instance of started) this.input.emit({ type: "instance.launched", rolloutId: this.input.rolloutId, instance: describe(instance) });
    await waitUntilHealthy(this.input, this.release, started, this.ctx);
    this.healthy.push(...started);
    // Blue-green registers the whole new set at once, at the switch; the others as each batch passes.
    if (this.release.rollout.strategy !== "blue-green") await shiftTraffic(this.input, started, [], this.ctx);
  }

  /** Retires `count` old instances after checking that capacity stays within the invariant. */
  private async retireOld(count: number): Promise<void> {
    if (count <= 0) return;
    const floor = this.release.count - this.release.rollout.maxUnavailable;
    const servingAfter = this.old.length - count + this.healthy.length;
    if (servingAfter < floor && this.healthy.length < this.release.count) {
      throw new KilnError(
        "INTERNAL",
        `Retiring ${count} instance(s) would leave ${servingAfter} serving, below count - maxUnavailable = ${floor}; the rollout stopped instead.`,
      );
    }
    const leaving = this.old.slice(0, count);
    this.old = this.old.slice(count);
    await retireInstances(this.input, leaving, this.ctx);
  }

  /** Keeps the checks running on the new instances for `durationMs`; a failure ends the rollout. */
  private hold(durationMs: number, reason: "bake" | "canary-step" | "pause"): Promise<void> {
    this.input.emit({ type: "rollout.holding", rolloutId: this.input.rolloutId, reason, durationMs, healthy: this.healthy.length, count: this.release.count });
    return watchHealth(this.input, this.release, this.healthy, durationMs, this.ctx);
  }
}

/**
 * Moves traffic through the provider's traffic capability, if it has one: registers `toAdd`,
 * then drains `toRemove` (each for its release's stop grace period).
 */
async function shiftTraffic(input: RolloutInput, toAdd: readonly Instance[], toRemove: readonly Instance[], ctx: ProviderContext): Promise<void> {
  const traffic = input.provider.traffic;
  // The new release's router (front proxy or load balancer), or the previous one's when the new
  // release dropped it.
  const proxy = input.release.traffic?.proxy ?? input.previous?.traffic?.proxy;
  const loadBalancer = input.release.traffic?.loadBalancer ?? input.previous?.traffic?.loadBalancer;
  if (!traffic || (!proxy && !loadBalancer) || (toAdd.length === 0 && toRemove.length === 0)) return;
  const options = { target: input.target, ...(proxy ? { proxy } : {}), ...(loadBalancer ? { loadBalancer } : {}), health: input.release.health };
  if (toAdd.length > 0) await traffic.register(toAdd, options, ctx);
  if (toRemove.length > 0) await traffic.deregister(toRemove, { ...options, drainMs: gracePeriodOf(input, toRemove) }, ctx);
  input.emit({ type: "traffic.shifted", rolloutId: input.rolloutId, registered: toAdd.map(describe), deregistered: toRemove.map(describe) });
}

/** The longest stop grace period among `instances`, each from the release it belongs to (milliseconds). */
function gracePeriodOf(input: RolloutInput, instances: readonly Instance[]): number {
  const graceOf = (instance: Instance) =>
    instance.release === input.release.number ? input.release.instance.stopGracePeriodMs : (input.previous?.instance.stopGracePeriodMs ?? input.release.instance.stopGracePeriodMs);
  return Math.max(0, ...instances.map(graceOf));
}

/**
 * Drains instances from traffic (if the provider routes it), then terminates them with their
 * releases' grace periods. With `cleanup` (undoing a failed rollout) a failed drain is logged and
 * the instances are terminated anyway: an instance must never outlive the rollout that failed
 * because its router could not be reached (a wrong target group, a missing permission).
 */
async function retireInstances(input: RolloutInput, instances: readonly Instance[], ctx: ProviderContext, { cleanup = false }: { cleanup?: boolean } = {}): Promise<void> {
  if (instances.length === 0) return;
  for (const instance of instances) input.emit({ type: "instance.retiring", rolloutId: input.rolloutId, instance: describe(instance) });
  // Stopped ones too: a router may still list an instance that crashed.
  try {
    await shiftTraffic(input, [], instances, ctx);
  } catch (error) {
    if (!cleanup) throw error;
    input.logger.warn("could not drain the failed rollout's instances from traffic; terminating them anyway", { rolloutId: input.rolloutId, error: String(error) });
  }
  const gracePeriodMs = gracePeriodOf(input, instances);
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
    await retireInstances(input, [...byId.values()], ctx, { cleanup: true });
  } catch (error) {
    input.logger.error("could not remove the failed rollout's instances", { rolloutId: input.rolloutId, error: String(error) });
  }
  const previous = input.previous;
  if (!previous) return undefined;
  try {
    // Count what of the previous release really runs (old instances never retired, one caught
    // mid-drain by the cancellation, and in a repair the kept ones), rather than trusting the
    // rollout's own bookkeeping; all of it gets the traffic back (a blue-green switch or a drain
    // had taken it away).
    const running = (await input.provider.instances.list({ target: input.target, release: previous.number }, ctx)).filter(
      (instance) => instance.rolloutId !== input.rolloutId && isRunning(instance),
    );
    await shiftTraffic(input, running, [], ctx);
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
    await shiftTraffic(input, restored, [], ctx);
    return previous.number;
  } catch (error) {
    input.logger.error("could not restore the previous release", { rolloutId: input.rolloutId, error: String(error) });
    return undefined;
  }
}

/** What the engine tracks per instance between probe rounds. */
interface ProbeState {
  instance: Instance;
  successes: number;
  failures: number;
  /** When the healthy threshold was last reached (ms since epoch), for the stability window. */
  healthySince: number | undefined;
  lastReason: string;
}

type GateInput = Pick<RolloutInput, "provider" | "target" | "rolloutId" | "signal" | "emit">;

/**
 * One round: one `list` call for the whole set (never one call per instance), then one probe per
 * instance in parallel. Updates each state; returns a failure reason for an instance that
 * stopped, vanished or restarted (a restart resets its successes and stability window).
 */
async function probeRound(input: GateInput, health: ResolvedHealth, states: Iterable<ProbeState>, ctx: ProviderContext, countFailures: boolean): Promise<void> {
  const live = new Map((await input.provider.instances.list({ target: input.target, withRestartCounts: true }, ctx)).map((instance) => [instance.id, instance]));
  await Promise.all(
    [...states].map(async (state) => {
      const current = live.get(state.instance.id);
      if (!current || current.state === "stopped" || current.state === "terminated") {
        state.failures = Number.POSITIVE_INFINITY;
        state.lastReason = `it ${current ? `is ${current.state}` : "no longer exists"} (it exited or was removed)`;
        return;
      }
      if (current.restartCount > state.instance.restartCount) {
        state.successes = 0;
        state.healthySince = undefined;
        state.lastReason = `it restarted (${current.restartCount} restart${current.restartCount === 1 ? "" : "s"})`;
        if (countFailures) state.failures += 1;
      }
      state.instance = current;
      // A container being restarted has no endpoints yet: say so, rather than "port not published".
      const result: ProbeResult =
        current.state === "pending" && state.successes === 0 && current.restartCount > 0
          ? { ok: false, reason: `it is restarting (${current.restartCount} restart${current.restartCount === 1 ? "" : "s"}): the app exits after starting` }
          : await probeInstance(input.provider, current, health, ctx);
      if (result.ok) {
        state.successes += 1;
        state.failures = 0;
        if (state.successes >= health.healthyThreshold) state.healthySince ??= Date.now();
      } else {
        state.successes = 0;
        state.healthySince = undefined;
        state.lastReason = result.reason;
        if (countFailures) state.failures += 1;
      }
    }),
  );
}

function unhealthy(input: GateInput, release: Pick<LaunchableRelease, "number">, instance: Instance, reason: string): KilnError {
  input.emit({ type: "instance.unhealthy", rolloutId: input.rolloutId, instance: describe(instance), reason });
  return new KilnError(
    "HEALTH_CHECK_FAILED",
    `Instance ${instance.name} of release ${release.number} did not pass its health check: ${reason}. To keep a failed instance for its logs, set rollout.autoRollback: false; check the health check settings (path, port, startPeriodMs, stabilityWindowMs) too.`,
    { details: { instance: instance.name, release: release.number, reason } },
  );
}

/**
 * Waits until every instance is healthy: `healthyThreshold` consecutive successful probes, then
 * `stabilityWindowMs` more without a failure or a restart (an app that answers once and then
 * crash-loops is not healthy). Failures during `startPeriodMs` do not count; `unhealthyThreshold`
 * consecutive failures after it, an instance that stopped, or the deadline fail the gate.
 *
 * @throws KilnError HEALTH_CHECK_FAILED, CAPABILITY_MISSING (a command check on a provider that cannot run commands), ABORTED
 */
export async function waitUntilHealthy(
  input: GateInput,
  release: Pick<LaunchableRelease, "number" | "health">,
  instances: readonly Instance[],
  ctx: ProviderContext,
): Promise<void> {
  const { health } = release;
  const startedAt = Date.now();
  const pending = new Map<string, ProbeState>(instances.map((instance) => [instance.id, { instance, successes: 0, failures: 0, healthySince: undefined, lastReason: "not probed yet" }]));
  while (pending.size > 0) {
    throwIfAborted(input.signal);
    await probeRound(input, health, pending.values(), ctx, Date.now() - startedAt >= health.startPeriodMs);
    for (const state of pending.values()) {
      if (state.failures === Number.POSITIVE_INFINITY) throw unhealthy(input, release, state.instance, state.lastReason);
      if (state.failures >= health.unhealthyThreshold) {
        throw unhealthy(input, release, state.instance, `${state.failures} consecutive failed probes after the ${health.startPeriodMs} ms start period; last: ${state.lastReason}`);
      }
      if (state.healthySince !== undefined && Date.now() - state.healthySince >= health.stabilityWindowMs) {
        pending.delete(state.instance.id);
        input.emit({ type: "instance.healthy", rolloutId: input.rolloutId, instance: describe(state.instance), durationMs: Date.now() - startedAt });
      }
    }
    if (pending.size === 0) break;
    if (Date.now() - startedAt >= health.deadlineMs) {
      const first = [...pending.values()][0]!;
      throw unhealthy(input, release, first.instance, `not healthy within the ${health.deadlineMs} ms deadline (${health.deadlineArithmetic}); last: ${first.lastReason}`);
    }
    await sleep(health.intervalMs, input.signal);
  }
}

/**
 * Keeps probing healthy instances for `durationMs` (a canary hold, a blue-green bake, a pause
 * between batches): `unhealthyThreshold` consecutive failures, a restart or a stop fail it.
 * @throws KilnError HEALTH_CHECK_FAILED, ABORTED
 */
export async function watchHealth(input: GateInput, release: Pick<LaunchableRelease, "number" | "health">, instances: readonly Instance[], durationMs: number, ctx: ProviderContext): Promise<void> {
  const { health } = release;
  const until = Date.now() + durationMs;
  const states = instances.map((instance): ProbeState => ({ instance, successes: health.healthyThreshold, failures: 0, healthySince: Date.now(), lastReason: "" }));
  while (Date.now() < until) {
    await sleep(Math.min(health.intervalMs, Math.max(0, until - Date.now())), input.signal);
    if (instances.length === 0) continue;
    await probeRound(input, health, states, ctx, true);
    for (const state of states) {
      if (state.failures === Number.POSITIVE_INFINITY) throw unhealthy(input, release, state.instance, state.lastReason);
      if (state.failures >= health.unhealthyThreshold || state.lastReason.startsWith("it restarted")) {
        throw unhealthy(input, release, state.instance, `failed while held: ${state.lastReason}`);
      }
    }
  }
}

function probeInstance(provider: Provider, instance: Instance, health: ResolvedHealth, ctx: ProviderContext): Promise<ProbeResult> {
  const check = health.check;
  // A provider-native check (EC2 status checks) applies with or without the spec's own check.
  if (provider.health) return provider.health.probe(instance, check, health.timeoutMs, ctx);
  if (!check) return Promise.resolve(instance.state === "running" ? { ok: true } : { ok: false, reason: `it is ${instance.state}` });
  if (check.kind === "command") {
    if (!provider.instances.exec) {
      throw new KilnError("CAPABILITY_MISSING", `The ${provider.name} provider cannot run commands in instances, so a command health check cannot be used with it; use an http or tcp check.`);
    }
    return provider.instances
      .exec(instance, check.command, { timeoutMs: health.timeoutMs }, ctx)
      .then(({ exitCode, output }): ProbeResult => (exitCode === 0 ? { ok: true } : { ok: false, reason: `${check.command.join(" ")} exited ${exitCode}${output ? `: ${output.trim().slice(-200)}` : ""}` }));
  }
  const endpoint = instance.endpoints[check.portName];
  if (!endpoint) return Promise.resolve({ ok: false, reason: `port "${check.portName}" is not reachable (not published)` });
  return check.kind === "http" ? probeHttp(endpoint, check, health.timeoutMs, ctx.signal) : probeTcp(endpoint, health.timeoutMs, ctx.signal);
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
