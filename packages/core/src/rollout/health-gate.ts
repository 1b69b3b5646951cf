import { KilnError, isAbortError, isKilnError, throwIfAborted } from "../errors.js";
import { probeHttp, probeTcp } from "../health.js";
import type { Logger } from "../logger.js";
import { childContext, type Instance, type ProbeResult, type Provider, type ProviderContext } from "../provider/contract.js";
import type { ResolvedHealth } from "../spec/resolve.js";
import { sleep } from "../wait.js";
import { describe } from "./actions.js";
import type { LaunchableRelease, RolloutInput } from "./engine.js";

/*
 * Health gates: the only place Kiln probes instances. The rollout engine runs them for its
 * `wait-until-healthy` and `hold` steps, and for an undo's restored instances; a recovery runs
 * {@link checkAdoptable} before it plans.
 */

/** What the engine tracks per instance between probe rounds. */
interface ProbeState {
  instance: Instance;
  successes: number;
  failures: number;
  /** When the healthy threshold was last reached (ms since epoch), for the stability window. */
  healthySince: number | undefined;
  lastReason: string;
}

/** What a gate needs of a rollout: where to list and probe, whom to tell, when to stop. */
export type GateInput = Pick<RolloutInput, "provider" | "target" | "rolloutId" | "signal" | "emit">;

/**
 * One round: one `list` call for the whole set (never one call per instance), then one probe per
 * instance in parallel, each with its own signal derived from `ctx.signal` ({@link childContext}:
 * the run's signal carries no listener per probe). Updates each state; returns a failure reason for an instance that
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
          : await probeInstance(input.provider, current, health, childContext(ctx));
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
  // A provider-native check (a cloud's own instance status checks) applies with or without the spec's own check.
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

/**
 * Checks the instances a recovery would adopt (see `recoveryCandidates`) with the release's
 * health gate, before the recovery is planned: the plan then keeps only instances that passed.
 * Probing is the executing side's job, so the caller runs this and hands the verdict to the
 * (pure) planner, rather than the planner probing.
 * @returns the ids of the candidates that are not adopted: all of them when the gate failed, else none
 * @throws KilnError ABORTED, LOCK_LOST (the gate's own failure is the verdict, not an error)
 */
export async function checkAdoptable(
  input: GateInput & { readonly logger: Logger },
  release: Pick<LaunchableRelease, "number" | "health">,
  candidates: readonly Instance[],
  ctx: ProviderContext,
): Promise<string[]> {
  if (candidates.length === 0) return [];
  try {
    await waitUntilHealthy(input, release, candidates, ctx);
    return [];
  } catch (error) {
    if (isAbortError(error) || isKilnError(error, "LOCK_LOST")) throw error;
    input.logger.warn("the interrupted rollout's instances are not healthy; they are replaced", { release: release.number, error: String(error) });
    return candidates.map((instance) => instance.id);
  }
}
