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

/**
 * The first delay of a gate's start probes (milliseconds); see {@link waitUntilHealthy}. Short
 * enough to notice an app that listens within a few tens of milliseconds, long enough that a
 * start costs a handful of extra probe rounds, not dozens.
 */
export const START_PROBE_DELAY_MS = 50;

/** What a gate tracks per instance between probe rounds. */
interface ProbeState {
  instance: Instance;
  successes: number;
  failures: number;
  /** When the healthy threshold was last reached (ms since epoch), for the stability window. */
  healthySince: number | undefined;
  lastReason: string;
  /** The restart count as of the last probe that could count a restart as a failure. */
  restartsSeen: number;
}

/** How one probe of an instance counts (see {@link waitUntilHealthy}). */
interface ProbeCounting {
  /** Whether a failure (or a restart seen) counts towards `unhealthyThreshold`. */
  readonly countFailures: boolean;
  /**
   * Whether a restart seen now is settled by this probe: true except for a start probe after the
   * start period, whose restart the next counted probe counts instead.
   */
  readonly settlesRestarts: boolean;
}

/** What a gate tracks per instance, besides its probe results. */
interface GateState extends ProbeState {
  /** When its next probe on the interval cadence is due (ms since epoch); only these count failures. */
  cadenceAt: number;
  /** When its next start probe is due (ms since epoch); undefined once it answered, or when the start probes are over. */
  startProbeAt: number | undefined;
  /** The delay from that start probe to the one after (milliseconds), doubling. */
  startDelayMs: number;
}

/** What a gate needs of a rollout: where to list and probe, whom to tell, when to stop. */
export type GateInput = Pick<RolloutInput, "provider" | "target" | "rolloutId" | "signal" | "emit">;

/**
 * One round: one `list` call for the release's instances (never one call per instance), then one
 * probe per instance in parallel, each with its own signal derived from `ctx.signal`
 * ({@link childContext}: the run's signal carries no listener per probe). Updates each state: an
 * instance that stopped or vanished gets infinite failures; a restart resets its successes and
 * stability window.
 */
async function probeRound<S extends ProbeState>(
  input: GateInput,
  release: Pick<LaunchableRelease, "number" | "health">,
  states: Iterable<S>,
  ctx: ProviderContext,
  counting: (state: S) => ProbeCounting,
): Promise<void> {
  const { health } = release;
  // Only the release's instances: a gate's are all of one release, and on Docker each instance listed costs an inspect.
  const listed = await input.provider.instances.list({ target: input.target, release: release.number, withRestartCounts: true }, ctx);
  const live = new Map(listed.map((instance) => [instance.id, instance]));
  await Promise.all(
    [...states].map(async (state) => {
      const { countFailures, settlesRestarts } = counting(state);
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
      }
      if (current.restartCount > state.restartsSeen && (countFailures || settlesRestarts)) {
        if (countFailures) state.failures += 1;
        state.restartsSeen = current.restartCount;
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
 * crash-loops is not healthy).
 *
 * When probes run. Every instance is probed at once, then on the **interval cadence**: again
 * `intervalMs` after each of its counted probes. An instance that has not answered yet is also
 * probed in between, during the first interval only (**start probes**): after
 * {@link START_PROBE_DELAY_MS}, then after delays doubling (50, 100, 200, … ms) for as long as
 * one more fits before the interval is over; from then on, probes are `intervalMs` apart. So an
 * app that listens 150 ms after its start is seen then, not one interval later.
 *
 * How probes count (the thresholds mean what they always meant):
 * - A success counts on any probe. The first success of an instance restarts its cadence, so
 *   the successes that make `healthyThreshold` are `intervalMs` apart, as without start probes.
 * - A failure counts towards `unhealthyThreshold` only on the interval cadence and after
 *   `startPeriodMs` (from the start of the gate); a start probe's failure never counts. For an
 *   instance that never answers, the verdict comes on the same counted probe as without start
 *   probes: no sooner than `startPeriodMs + (unhealthyThreshold - 1) × intervalMs`.
 * - A restart resets the successes on any probe; it counts as a failure only on a counted probe
 *   (a start probe's restart after the start period is counted by the next counted probe).
 * - An instance that stopped or vanished fails the gate when any probe sees it, start probes
 *   included (as a stopped instance always did; start probes may see it sooner).
 * - The deadline (`deadlineMs`, from the start of the gate) is checked after every round.
 *
 * Precedents: Docker's HEALTHCHECK `--start-interval` probes more often during `--start-period`
 * and ignores failures in it; Kubernetes' startupProbe runs before readiness with its own period.
 * Kiln's start probes are extra probes that can only bring a success sooner.
 * @see https://docs.docker.com/reference/dockerfile/#healthcheck
 * @see https://kubernetes.io/docs/concepts/configuration/liveness-readiness-startup-probes/
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
  const startProbesUntil = startedAt + health.intervalMs - START_PROBE_DELAY_MS;
  const firstStartProbe = startedAt + START_PROBE_DELAY_MS;
  const pending = new Map<string, GateState>(
    instances.map((instance) => [
      instance.id,
      {
        instance,
        successes: 0,
        failures: 0,
        healthySince: undefined,
        lastReason: "not probed yet",
        restartsSeen: instance.restartCount,
        cadenceAt: startedAt,
        startProbeAt: firstStartProbe <= startProbesUntil ? firstStartProbe : undefined,
        startDelayMs: 2 * START_PROBE_DELAY_MS,
      },
    ]),
  );
  while (pending.size > 0) {
    throwIfAborted(input.signal);
    const roundAt = Date.now();
    const afterStartPeriod = roundAt - startedAt >= health.startPeriodMs;
    const due = [...pending.values()].filter((state) => nextProbeAt(state) <= roundAt);
    if (due.length === 0) {
      await sleep(nextDue(pending.values()) - roundAt, input.signal);
      continue;
    }
    const onCadence = new Set(due.filter((state) => state.cadenceAt <= roundAt));
    await probeRound(input, release, due, ctx, (state) => ({
      countFailures: afterStartPeriod && onCadence.has(state),
      settlesRestarts: !afterStartPeriod || onCadence.has(state),
    }));
    const roundEnd = Date.now();
    for (const state of due) {
      const answered = state.successes > 0;
      // A counted probe, or the first success (which restarts the cadence): the next counted probe is an interval on.
      if (onCadence.has(state) || (answered && state.startProbeAt !== undefined)) state.cadenceAt = roundEnd + health.intervalMs;
      if (answered) state.startProbeAt = undefined;
      while (state.startProbeAt !== undefined && state.startProbeAt <= roundEnd) {
        state.startProbeAt += state.startDelayMs;
        state.startDelayMs *= 2;
        if (state.startProbeAt > startProbesUntil) state.startProbeAt = undefined;
      }
    }
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
    const next = nextDue(pending.values());
    await sleep(Math.max(0, next - Date.now()), input.signal);
  }
}

/** When an instance's next probe is due: its start probe or its counted one, whichever comes first (ms since epoch). */
function nextProbeAt(state: GateState): number {
  return Math.min(state.cadenceAt, state.startProbeAt ?? Number.POSITIVE_INFINITY);
}

/** When the first of `states` is due (ms since epoch); a loop, not a spread, for fleets of thousands. */
function nextDue(states: Iterable<GateState>): number {
  let first = Number.POSITIVE_INFINITY;
  for (const state of states) first = Math.min(first, nextProbeAt(state));
  return first;
}

/**
 * Keeps probing healthy instances for `durationMs` (a canary hold, a blue-green bake, a pause
 * between batches), every `intervalMs`: `unhealthyThreshold` consecutive failures, a restart or a
 * stop fail it.
 * @throws KilnError HEALTH_CHECK_FAILED, ABORTED
 */
export async function watchHealth(input: GateInput, release: Pick<LaunchableRelease, "number" | "health">, instances: readonly Instance[], durationMs: number, ctx: ProviderContext): Promise<void> {
  const { health } = release;
  const until = Date.now() + durationMs;
  const states = instances.map(
    (instance): ProbeState => ({ instance, successes: health.healthyThreshold, failures: 0, healthySince: Date.now(), lastReason: "", restartsSeen: instance.restartCount }),
  );
  while (Date.now() < until) {
    await sleep(Math.min(health.intervalMs, Math.max(0, until - Date.now())), input.signal);
    if (instances.length === 0) continue;
    await probeRound(input, release, states, ctx, () => ({ countFailures: true, settlesRestarts: true }));
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
