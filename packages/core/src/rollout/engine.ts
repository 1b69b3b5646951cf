import { randomUUID } from "node:crypto";
import { KilnError, isAbortError, throwIfAborted, toKilnError } from "../errors.js";
import type { KilnEventInput, RolloutKind } from "../events.js";
import type { Logger } from "../logger.js";
import type { HoldReason, InstanceSelection, ReplacementPlan, RolloutStep } from "../plan/index.js";
import type { ImageRef, Instance, InstanceConfig, Provider, ProviderContext } from "../provider/contract.js";
import type { SecretValue } from "../secrets/value.js";
import type { ResolvedHealth, ResolvedRollout, ResolvedTraffic } from "../spec/resolve.js";
import type { Target } from "../target.js";
import { describe, providerContext, retireInstances, retireUnusedProxy, shiftTraffic } from "./actions.js";
import { waitUntilHealthy, watchHealth } from "./health-gate.js";
import { undo } from "./undo.js";
import { isRunning } from "../plan/replacement.js";
import { peakInstances } from "../plan/format.js";

export { describe } from "./actions.js";
export { checkAdoptable, waitUntilHealthy, watchHealth } from "./health-gate.js";
export type { GateInput } from "./health-gate.js";

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
  /**
   * The planner's replacement: the instances that stay (`keep`), those that go (`retire`), and
   * the `program` to run, made for `release` by `planDeploy`, `planRollback` or `planRecovery`.
   */
  readonly plan: Pick<ReplacementPlan, "keep" | "retire" | "program">;
  readonly signal: AbortSignal;
  readonly logger: Logger;
  emit(event: KilnEventInput): void;
  /**
   * The values of a release's secrets (`instance.secrets`), by name, for its launches; called
   * only for a release that has secrets. @defaultValue none: such a launch fails
   */
  secretValues?(release: LaunchableRelease): Promise<ReadonlyMap<string, SecretValue>>;
}

/**
 * The `secrets` of a launch request for `release`: its secrets' values, read through
 * `input.secretValues`; empty for a release without secrets.
 * @throws KilnError INTERNAL when the release has secrets and the input cannot read them
 */
export async function launchSecrets(input: RolloutInput, release: LaunchableRelease): Promise<{ secrets?: ReadonlyMap<string, SecretValue> }> {
  if (!release.instance.secrets || release.instance.secrets.length === 0) return {};
  if (!input.secretValues) throw new KilnError("INTERNAL", `Release ${release.number} has secrets, but the rollout was given no way to read them.`);
  return { secrets: await input.secretValues(release) };
}

/** The outcome of a rollout that failed. */
export interface RolloutFailure {
  readonly error: KilnError;
  /** Whether the rollout was undone (its instances removed, the previous release restored). */
  readonly undone: boolean;
  /** The release serving afterwards (the previous one), if it could be restored. */
  readonly restoredRelease: number | undefined;
  /** The previous release's instances running after the undo (empty when not undone or there is none). */
  readonly serving: readonly Instance[];
  /** Why the previous release could not be restored, when it could not. */
  readonly restoreError?: string;
}


/**
 * Moves a target to a release by running the plan's program, step by step, in order: launches
 * (with the idempotency key `<rolloutId>:launch:<n>`), health gates, traffic registration and
 * switches, holds with the checks still running, and retirements (drain, then terminate). The
 * engine decides nothing the plan decided: how many to launch or retire, and when, is the
 * planner's (see `planReplacement`); the engine checks the abort signal before every step.
 *
 * Invariant, checked before every retirement that carries `minServing`: healthy instances never
 * fall below it (`count - maxUnavailable`) unless the new release is complete. When a gate fails
 * or the signal aborts, and `autoRollback` is on (it always is for a cancellation), every
 * instance this rollout launched is removed and the previous release is brought back to its
 * count; its instances that were never retired kept serving.
 *
 * Retirements overlap what follows them. A retirement (drain, then terminate) is started and the
 * program goes on while it runs: gates, registrations and holds run beside it. The engine waits
 * for it to finish only where it must: before a launch that would otherwise run more instances
 * than the plan's peak (`count + maxSurge` for rolling), counting an instance as running from its
 * launch until its termination returned, so the peak is never exceeded, not even for a moment;
 * before the next retirement or traffic switch (one retirement at a time, so the journal's steps
 * keep their order); and before the rollout ends. A retirement that fails stops the rollout at
 * once (its error, not a cancellation); a failing or cancelled rollout waits for the
 * retirements under way to end before it undoes anything, so nothing is terminated twice.
 *
 * @returns undefined on success, or the failure (after undoing it, unless autoRollback is off)
 */
export async function applyRollout(input: RolloutInput): Promise<RolloutFailure | undefined> {
  const run = new RolloutRun(input);
  try {
    await run.execute();
    // A release without a front proxy now serves: the one an earlier release used goes.
    await retireUnusedProxy(input, input.release, providerContext(input, input.signal));
    return undefined;
  } catch (caught) {
    const aborted = isAbortError(caught);
    const error = aborted
      ? new KilnError("ABORTED", "The rollout was cancelled; its new instances were removed and the previous release restored.", { cause: caught })
      : toKilnError(caught, "ROLLOUT_FAILED", "The rollout failed");
    if (!aborted && !input.release.rollout.autoRollback) {
      input.logger.warn("rollout failed; autoRollback is off, so its instances stay for inspection", { rolloutId: input.rolloutId, code: error.code });
      return { error, undone: false, restoredRelease: undefined, serving: [] };
    }
    input.logger.warn("rollout failed, undoing it", { rolloutId: input.rolloutId, code: error.code });
    const outcome = await undo(input, run.launched, run.old, run.registered);
    return { error, undone: true, ...outcome };
  }
}

/** The state of one rollout while its program runs. */
class RolloutRun {
  /** Old instances still serving. */
  old: Instance[];
  /** Every instance this rollout launched. */
  readonly launched: Instance[] = [];
  /** The ids of the instances this rollout registered with traffic (the undo drains only those of its own). */
  readonly registered = new Set<string>();
  /** Instances of the new release that passed their gate (and kept ones). */
  private readonly healthy: Instance[];
  /** The instances seen when planning, by id. */
  private readonly seen: Map<string, Instance>;
  /** What each launch step started, by its key. */
  private readonly launches = new Map<string, Instance[]>();
  private readonly ctx: ProviderContext;
  /** The most instances that may run at once: the plan's own peak. */
  private readonly peak: number;
  /** Retirements under way, oldest first, with the running instances they hold until they end. */
  private retiring: { readonly running: number; readonly done: Promise<void> }[] = [];
  /** The error of the first retirement that failed; it stops the rollout. */
  private retireFailure: KilnError | undefined;
  /** Aborts the steps under way when a retirement fails. */
  private readonly stop = new AbortController();
  /** The rollout's signal: the caller's, or a failed retirement's. */
  private readonly signal: AbortSignal;
  /** What the gates need: the rollout's input with the rollout's signal. */
  private readonly gate: RolloutInput;

  constructor(private readonly input: RolloutInput) {
    this.old = input.plan.retire.filter(isRunning);
    this.healthy = [...input.plan.keep];
    this.seen = new Map([...input.plan.keep, ...input.plan.retire].map((instance) => [instance.id, instance]));
    // A derived signal, so that a failed retirement can stop the other steps; it adds no listener to the caller's signal.
    this.signal = AbortSignal.any([input.signal, this.stop.signal]);
    this.gate = { ...input, signal: this.signal };
    this.ctx = providerContext(input, this.signal);
    this.peak = Math.max(peakInstances(input.plan.program, { keep: input.plan.keep.length, oldAlive: this.old.length }), input.plan.keep.length + this.old.length);
  }

  async execute(): Promise<void> {
    try {
      for (const phase of this.input.plan.program) {
        for (const step of phase.steps) {
          throwIfAborted(this.signal);
          await this.run(step);
        }
      }
      await this.awaitRetirements();
    } catch (error) {
      // A retirement that failed first is the reason (the error caught is then the abort it caused).
      const reason = this.retireFailure ?? error;
      // Nothing is undone while a retirement still runs.
      await Promise.all(this.retiring.map((retirement) => retirement.done));
      this.retiring = [];
      throw reason;
    }
  }

  private async run(step: RolloutStep): Promise<void> {
    switch (step.action) {
      case "launch":
        await this.makeRoom(step.count);
        return this.launch(step.key, step.release, step.count);
      case "wait-until-healthy": {
        const started = this.launchedBy(step.launch);
        await waitUntilHealthy(this.gate, this.input.release, started, this.ctx);
        this.healthy.push(...started);
        return;
      }
      case "register": {
        const joining = this.select(step.instances);
        for (const instance of joining) this.registered.add(instance.id);
        return shiftTraffic(this.input, joining, [], this.ctx);
      }
      case "switch-traffic": {
        await this.awaitRetirements();
        const joining = this.select(step.register);
        for (const instance of joining) this.registered.add(instance.id);
        return shiftTraffic(this.input, joining, this.select({ ids: step.deregister, launches: [] }), this.ctx, step.drainMs);
      }
      case "hold":
        return this.hold(step.durationMs, step.reason);
      case "retire":
        await this.awaitRetirements();
        return this.retire(step);
    }
  }

  /** Instances running now, as the plan's peak counts them: kept, launched, and old ones until their termination returned. */
  private running(): number {
    return this.input.plan.keep.length + this.launched.length + this.old.length + this.retiring.reduce((sum, retirement) => sum + retirement.running, 0);
  }

  /** Waits for the oldest retirements under way until `count` more instances fit within the plan's peak. */
  private async makeRoom(count: number): Promise<void> {
    while (this.retiring.length > 0 && this.running() + count > this.peak) {
      await this.retiring[0]!.done;
      this.retiring.shift();
    }
    this.throwIfRetireFailed();
  }

  /** Waits until every retirement under way has ended. @throws the first retirement's error */
  private async awaitRetirements(): Promise<void> {
    while (this.retiring.length > 0) {
      await this.retiring[0]!.done;
      this.retiring.shift();
    }
    this.throwIfRetireFailed();
  }

  private throwIfRetireFailed(): void {
    if (this.retireFailure !== undefined) throw this.retireFailure;
  }

  private async launch(key: string, release: number, count: number): Promise<void> {
    if (release !== this.input.release.number) throw new KilnError("INTERNAL", `The plan launches release ${release}, but the rollout runs release ${this.input.release.number}.`);
    const started = await this.input.provider.instances.launch(
      {
        target: this.input.target,
        release,
        rolloutId: this.input.rolloutId,
        idempotencyKey: `${this.input.rolloutId}:${key}`,
        image: this.input.release.image,
        config: this.input.release.instance,
        count,
        ...(await launchSecrets(this.input, this.input.release)),
      },
      this.ctx,
    );
    this.launches.set(key, started);
    this.launched.push(...started);
    for (const instance of started) this.input.emit({ type: "instance.launched", rolloutId: this.input.rolloutId, instance: describe(instance) });
  }

  /**
   * Starts retiring the step's instances after checking that capacity stays within the invariant;
   * the program goes on while they are drained and terminated (see {@link applyRollout}).
   */
  private retire(step: Extract<RolloutStep, { action: "retire" }>): void {
    const leaving = this.select({ ids: step.instances, launches: [] });
    const ids = new Set(step.instances);
    const remaining = this.old.filter((instance) => !ids.has(instance.id));
    const servingAfter = remaining.length + this.healthy.length;
    if (step.minServing !== undefined && servingAfter < step.minServing && this.healthy.length < this.input.release.count) {
      throw new KilnError(
        "INTERNAL",
        `Retiring ${leaving.length} instance(s) would leave ${servingAfter} serving, below count - maxUnavailable = ${step.minServing}; the rollout stopped instead.`,
      );
    }
    this.old = remaining;
    const done = retireInstances(this.input, leaving, this.ctx, { drain: step.drain, gracePeriodMs: step.gracePeriodMs }).catch((error: unknown) => {
      this.retireFailure ??= toKilnError(error, "ROLLOUT_FAILED", "Retiring instances failed");
      this.stop.abort(this.retireFailure);
    });
    this.retiring.push({ running: leaving.filter(isRunning).length, done });
  }

  /** Keeps the checks running on the new instances for `durationMs`; a failure ends the rollout. */
  private hold(durationMs: number, reason: HoldReason): Promise<void> {
    this.input.emit({ type: "rollout.holding", rolloutId: this.input.rolloutId, reason, durationMs, healthy: this.healthy.length, count: this.input.release.count });
    return watchHealth(this.gate, this.input.release, this.healthy, durationMs, this.ctx);
  }

  /** The instances of a selection: seen ones by id, then each launch's, in order. */
  private select(selection: InstanceSelection): Instance[] {
    const seen = selection.ids.map((id) => {
      const instance = this.seen.get(id);
      if (!instance) throw new KilnError("INTERNAL", `The plan names instance ${id}, which it neither keeps nor retires.`);
      return instance;
    });
    return [...seen, ...selection.launches.flatMap((key) => this.launchedBy(key))];
  }

  private launchedBy(key: string): Instance[] {
    const started = this.launches.get(key);
    if (!started) throw new KilnError("INTERNAL", `The plan uses the instances of ${key} before that launch.`);
    return started;
  }
}

/** A new rollout id: sortable by time, unique. */
export function newRolloutId(): string {
  return `${new Date().toISOString().replace(/[-:.TZ]/g, "").slice(0, 14)}-${randomUUID().slice(0, 8)}`;
}
