import type { Instance } from "../provider/contract.js";
import type { ResolvedRollout } from "../spec/resolve.js";
import { planRollingBatches } from "./batches.js";
import type { HoldReason, InstanceSelection, RolloutPhase, RolloutStep } from "./types.js";

/** What a strategy's program is made from. */
export interface ProgramInput {
  readonly strategy: ResolvedRollout;
  /** Instances wanted of the new release. */
  readonly count: number;
  /** The release launched. */
  readonly toRelease: number;
  /** Instances of the new release that stay (already running). */
  readonly keep: readonly Instance[];
  /** Old instances still running, in the order they are retired. */
  readonly oldRunning: readonly Instance[];
  /** Instances that no longer run (stopped, terminated), removed first. */
  readonly stopped: readonly Instance[];
  /** Whether a router (front proxy or load balancer) gets traffic steps. */
  readonly routed: boolean;
  /** The grace period to stop, and drain, these instances with (milliseconds). */
  gracePeriodOf(instances: readonly Instance[]): number;
}

/**
 * Writes a program step by step while keeping the counts it is decided from: old instances still
 * serving, new ones healthy, launches made.
 */
class ProgramWriter {
  readonly phases: RolloutPhase[] = [];
  /** Old instances not retired yet, in retirement order. */
  private old: Instance[];
  /** Instances of the new release that serve: kept ones, then every gated launch. */
  healthy: number;
  private readonly kept: string[];
  private readonly launches: string[] = [];

  constructor(private readonly input: ProgramInput) {
    this.old = [...input.oldRunning];
    this.kept = input.keep.map((instance) => instance.id);
    this.healthy = input.keep.length;
  }

  get oldCount(): number {
    return this.old.length;
  }

  /** The steps that launch `count` instances, gate them and (unless `register` is false) route them. */
  launch(count: number, { register = true }: { register?: boolean } = {}): RolloutStep[] {
    if (count <= 0) return [];
    const key = `launch:${this.launches.length + 1}`;
    this.launches.push(key);
    this.healthy += count;
    const steps: RolloutStep[] = [
      { action: "launch", key, release: this.input.toRelease, count },
      { action: "wait-until-healthy", launch: key },
    ];
    if (register && this.input.routed) steps.push({ action: "register", instances: { ids: [], launches: [key] } });
    return steps;
  }

  /** The step that retires the next `count` old instances, checking capacity first. */
  retireOld(count: number): RolloutStep[] {
    if (count <= 0) return [];
    const leaving = this.old.slice(0, count);
    this.old = this.old.slice(count);
    const { strategy } = this.input;
    return [this.retire(leaving, this.input.count - strategy.maxUnavailable)];
  }

  retire(instances: readonly Instance[], minServing?: number): RolloutStep {
    return {
      action: "retire",
      instances: instances.map((instance) => instance.id),
      drain: this.input.routed,
      gracePeriodMs: this.input.gracePeriodOf(instances),
      ...(minServing !== undefined ? { minServing } : {}),
    };
  }

  hold(durationMs: number, reason: HoldReason): RolloutStep[] {
    return durationMs > 0 && this.healthy < this.input.count ? [{ action: "hold", reason, durationMs }] : [];
  }

  /** Every instance of the new release that serves now: kept ones, then each launch's. */
  serving(): InstanceSelection {
    return { ids: [...this.kept], launches: [...this.launches] };
  }

  remaining(): readonly Instance[] {
    return this.old;
  }
}

/**
 * The program of a rollout: first the stopped instances are removed and the kept ones routed
 * (a router may have been recreated since), then the strategy's phases. Pure.
 */
export function writeProgram(input: ProgramInput): { program: RolloutPhase[]; batches: ReturnType<typeof planRollingBatches> } {
  const writer = new ProgramWriter(input);
  if (input.stopped.length > 0) writer.phases.push({ phase: "remove-stopped", steps: [writer.retire(input.stopped)] });
  if (input.routed && input.keep.length > 0) writer.phases.push({ phase: "route-kept", steps: [{ action: "register", instances: { ids: input.keep.map((i) => i.id), launches: [] } }] });
  switch (input.strategy.strategy) {
    case "rolling":
      return { program: writer.phases, batches: writeRolling(writer, input) };
    case "blue-green":
      writeBlueGreen(writer, input);
      return { program: writer.phases, batches: [] };
    case "canary":
      writeCanary(writer, input);
      return { program: writer.phases, batches: [] };
  }
}

/**
 * Rolling: batch by batch, old instances are retired while healthy capacity stays at or above
 * `count - maxUnavailable`, and new ones launched while the total stays at or below
 * `count + maxSurge` (see {@link planRollingBatches}); each batch is gated, routed, then held
 * for `pauseBetweenBatchesMs` unless it completed the release.
 */
function writeRolling(writer: ProgramWriter, input: ProgramInput) {
  const { strategy, count } = input;
  const batches = planRollingBatches({ count, maxSurge: strategy.maxSurge, maxUnavailable: strategy.maxUnavailable, oldAlive: input.oldRunning.length, keep: input.keep.length });
  batches.forEach((batch, index) => {
    const steps = [...writer.retireOld(batch.retire), ...writer.launch(batch.launch)];
    if (batch.launch > 0) steps.push(...writer.hold(strategy.pauseBetweenBatchesMs, "pause"));
    writer.phases.push({ phase: "batch", number: index + 1, steps });
  });
  return batches;
}

/**
 * Blue-green: the whole new set is launched and gated beside the old one; then the switch (the
 * new set registered, the old drained but running), a bake of `bakeTimeMs` while the old set can
 * still take over, and the old set retired.
 */
function writeBlueGreen(writer: ProgramWriter, input: ProgramInput): void {
  const launch = writer.launch(input.count - writer.healthy, { register: false });
  const old = writer.remaining();
  const register = writer.serving();
  const switching: RolloutStep[] =
    input.routed && (register.ids.length > 0 || register.launches.length > 0 || old.length > 0)
      ? [{ action: "switch-traffic", register, deregister: old.map((instance) => instance.id), drainMs: input.gracePeriodOf(old) }]
      : [];
  writer.phases.push({ phase: "new-set", steps: [...launch, ...switching] });
  if (old.length > 0 && input.strategy.bakeTimeMs > 0) writer.phases.push({ phase: "bake", steps: [{ action: "hold", reason: "bake", durationMs: input.strategy.bakeTimeMs }] });
  if (old.length > 0) writer.phases.push({ phase: "retire-old-set", steps: writer.retireOld(old.length) });
}

/**
 * Canary: the new release grows step by step, surge-first (the new instances are healthy before
 * as many old ones are retired), each step held for its `holdMs` unless it completed the release;
 * the last step has `count` instances.
 */
function writeCanary(writer: ProgramWriter, input: ProgramInput): void {
  input.strategy.steps.forEach((step, index) => {
    const add = step.instances - writer.healthy;
    const steps: RolloutStep[] = [];
    if (add > 0) {
      steps.push(...writer.launch(add));
      const surplus = writer.oldCount + writer.healthy - input.count;
      steps.push(...writer.retireOld(Math.min(writer.oldCount, Math.max(surplus, 0))));
    }
    steps.push(...writer.hold(step.holdMs, "canary-step"));
    writer.phases.push({ phase: "canary-step", number: index + 1, steps });
  });
  if (writer.oldCount > 0) writer.phases.push({ phase: "retire-rest", steps: writer.retireOld(writer.oldCount) });
}
