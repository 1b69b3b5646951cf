import type { ResolvedHealth } from "../spec/resolve.js";
import { formatTarget } from "../target.js";
import type { DeployPlan, RolloutPhase, RolloutStep } from "./types.js";

const plural = (n: number) => `${n} instance${n === 1 ? "" : "s"}`;

/** What a program's phases add up to, for its description. */
interface Tally {
  /** Instances of the new release serving. */
  healthy: number;
  /** Old instances still running. */
  old: number;
  running: number;
  peak: number;
}

function launched(steps: readonly RolloutStep[]): number {
  return steps.reduce((sum, step) => sum + (step.action === "launch" ? step.count : 0), 0);
}

function retiredOld(steps: readonly RolloutStep[]): number {
  // Retirements that check capacity are of old, running instances; stopped ones carry no floor.
  return steps.reduce((sum, step) => sum + (step.action === "retire" && step.minServing !== undefined ? step.instances.length : 0), 0);
}

function held(steps: readonly RolloutStep[]): number | undefined {
  return steps.find((step): step is Extract<RolloutStep, { action: "hold" }> => step.action === "hold")?.durationMs;
}

/** Runs the program's counts forward: the most instances running at once. */
export function peakInstances(program: readonly RolloutPhase[], start: { keep: number; oldAlive: number }): number {
  const tally: Tally = { healthy: start.keep, old: start.oldAlive, running: start.keep + start.oldAlive, peak: start.keep + start.oldAlive };
  for (const phase of program) for (const step of phase.steps) advance(tally, step);
  return tally.peak;
}

function advance(tally: Tally, step: RolloutStep): void {
  if (step.action === "launch") {
    tally.running += step.count;
    tally.healthy += step.count;
    tally.peak = Math.max(tally.peak, tally.running);
  } else if (step.action === "retire" && step.minServing !== undefined) {
    tally.running -= step.instances.length;
    tally.old -= step.instances.length;
  }
}

/** The words for one phase (undefined for a phase that is not described), given the counts before it. */
function describePhase(phase: RolloutPhase, tally: Tally, count: number): string | undefined {
  const launch = launched(phase.steps);
  const retire = retiredOld(phase.steps);
  const hold = held(phase.steps);
  switch (phase.phase) {
    case "remove-stopped": {
      const stopped = phase.steps.reduce((sum, step) => sum + (step.action === "retire" ? step.instances.length : 0), 0);
      return `remove ${stopped} stopped instance${stopped === 1 ? "" : "s"}`;
    }
    case "route-kept":
      return undefined;
    case "batch": {
      const parts = [retire ? `retire ${retire}` : "", launch ? `launch ${launch} and wait until healthy` : ""].filter(Boolean);
      return `batch ${phase.number}: ${parts.join(", then ")}${hold !== undefined ? `, hold ${hold} ms` : ""}`;
    }
    case "new-set":
      return `blue-green: launch ${plural(launch)} (the new set) beside the ${plural(tally.old)} serving, wait until all are healthy`;
    case "bake":
      return `bake ${hold ?? 0} ms with the old set still running (a failure now is undone at once)`;
    case "retire-old-set":
      return `retire the old set (${plural(retire)})`;
    case "canary-step":
      return `canary step: ${tally.healthy + launch} of ${count} on the new release (launch ${launch}, retire ${retire})${hold !== undefined ? `, hold ${hold} ms` : ""}`;
    case "retire-rest":
      return `retire the last ${plural(retire)}`;
  }
}

/**
 * A program's phases in words (`batch 1: retire 1, then launch 1 and wait until healthy`), with
 * the rolling strategy's settings first and a warning when it stops every old instance before a
 * new one serves. Pure.
 */
export function describeProgram(
  program: readonly RolloutPhase[],
  options: { count: number; keep: number; oldAlive: number; strategy: { strategy: string; maxSurge: number; maxUnavailable: number; order: string } },
): string[] {
  const { count, strategy } = options;
  const tally: Tally = { healthy: options.keep, old: options.oldAlive, running: 0, peak: 0 };
  const lines: string[] = [];
  for (const phase of program) {
    const line = describePhase(phase, tally, count);
    if (line !== undefined) lines.push(line);
    for (const step of phase.steps) advance(tally, step);
  }
  if (strategy.strategy !== "rolling") return lines;
  // The settings go first, after the removal of stopped instances (which precedes every batch).
  lines.splice(program[0]?.phase === "remove-stopped" ? 1 : 0, 0, rollingHeader(options));
  if (count - strategy.maxUnavailable <= 0 && options.oldAlive > 0) {
    lines.push(`this rollout has DOWNTIME: every old instance stops before a new one serves (stop-first with ${plural(count)}); a front proxy (traffic.proxy) avoids it`);
  }
  return lines;
}

function rollingHeader({ count, strategy }: { count: number; strategy: { maxSurge: number; maxUnavailable: number; order: string } }): string {
  return `rolling${strategy.order === "stop-first" ? " stop-first" : ""}: maxSurge ${strategy.maxSurge}, maxUnavailable ${strategy.maxUnavailable} (never fewer than ${count - strategy.maxUnavailable} healthy, never more than ${count + strategy.maxSurge} running)`;
}

/**
 * The health gate in words, with its deadline and how it was derived.
 * @param providerHealth - what the provider's own check looks at (`the cloud's instance status checks`), put first
 */
export function describeHealth(health: ResolvedHealth, providerHealth?: string): string {
  const check = health.check;
  const own = !check
    ? providerHealth
      ? undefined
      : "running (no check)"
    : check.kind === "http"
      ? `GET ${check.path} on port ${check.portName} answers ${check.expectStatus[0]}-${check.expectStatus[1]}`
      : check.kind === "tcp"
        ? `TCP port ${check.portName} accepts connections`
        : `\`${check.command.join(" ")}\` exits 0`;
  const what = [providerHealth, own].filter((part) => part !== undefined).join(" + ");
  const stable = health.stabilityWindowMs > 0 ? `, then stable for ${health.stabilityWindowMs} ms` : "";
  return `${what}, ${health.healthyThreshold} time(s) in a row${stable}; deadline ${health.deadlineMs} ms (${health.deadlineArithmetic})`;
}

/** A plan as text, like `terraform plan`. */
export function formatPlan(plan: DeployPlan): string {
  const header = `Plan for ${formatTarget(plan.target)}:`;
  if (plan.noop) return `${header}\n  nothing to do: ${plan.changes.slice(1).join("; ")}`;
  return [header, ...plan.changes.map((line) => `  ${line}`)].join("\n");
}
