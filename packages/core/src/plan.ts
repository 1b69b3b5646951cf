import { createHash } from "node:crypto";
import { KilnError } from "./errors.js";
import type { ImageRef, Instance, InstanceConfig, ProviderLimits } from "./provider/contract.js";
import { planRollingBatches, type RollingBatch } from "./rollout/batches.js";
import type { ResolvedHealth, ResolvedRollout, ResolvedTarget, ResolvedTraffic } from "./spec/resolve.js";
import type { ReleaseRecord, TargetState } from "./state/types.js";
import { formatTarget, type Target } from "./target.js";

/** What happens to the image. */
export type ImagePlan =
  | { readonly action: "build"; readonly fingerprint: string }
  | { readonly action: "reuse"; readonly fingerprint: string; readonly image: ImageRef };

/** What happens to the instances. */
export type RolloutPlan =
  | { readonly action: "none"; readonly reason: string }
  | {
      readonly action: "replace";
      /** The release whose instances serve now (undefined on a first deploy). */
      readonly fromRelease: number | undefined;
      /** The release the rollout moves to; a new number, or the current one when repairing drift. */
      readonly toRelease: number;
      /** Whether `toRelease` is a new release record. */
      readonly newRelease: boolean;
      readonly count: number;
      readonly maxSurge: number;
      readonly maxUnavailable: number;
      /** Instances of `toRelease` already running, which stay. */
      readonly keep: readonly Instance[];
      /** Instances that are retired (another release, surplus, or not running). */
      readonly retire: readonly Instance[];
      /** How many new instances are launched. */
      readonly launch: number;
      /** The rolling batches, when everything goes to plan (rolling strategy only). */
      readonly batches: readonly RollingBatch[];
      /** The rollout's phases in words, for any strategy. */
      readonly steps: readonly string[];
      /** The most instances that run at once during the rollout. */
      readonly peakInstances: number;
    };

/** The result of {@link planDeploy}: data only, printable like `terraform plan`. */
export interface DeployPlan {
  readonly target: Target;
  readonly fingerprint: string;
  readonly configHash: string;
  readonly image: ImagePlan;
  readonly rollout: RolloutPlan;
  /** True when nothing is built, launched or retired. */
  readonly noop: boolean;
  /** Human-readable lines describing the changes. */
  readonly changes: readonly string[];
}

/** What {@link planDeploy} decides from. */
export interface PlanInput {
  readonly resolved: ResolvedTarget;
  readonly fingerprint: string;
  /** The image already built from this fingerprint, if any. */
  readonly existingImage: ImageRef | undefined;
  readonly state: TargetState;
  /** The target's live instances, from the provider. */
  readonly instances: readonly Instance[];
  /** The provider's limits, if it declares any. */
  readonly limits?: ProviderLimits;
  /** What the provider's own health check looks at (`HealthCapability.description`), if it has one. */
  readonly providerHealth?: string;
  /** The lines the provider adds to the plan (`ProviderSpec.planLines`), without indentation. */
  readonly providerLines?: readonly string[];
}

/**
 * The hash that decides whether a release changes: the fingerprint, the count, the instance
 * configuration and, when there is one, the traffic router (front proxy or load balancer); key
 * order does not matter.
 */
export function releaseConfigHash(fingerprint: string, count: number, instance: InstanceConfig, traffic?: ResolvedTraffic): string {
  // Traffic (the proxy or load balancer instances join) is part of what runs: changing it makes a
  // release. Without any, the hash is what it was before traffic counted, so no release changes.
  const routed = traffic && (traffic.proxy || traffic.loadBalancer !== undefined) ? { traffic } : {};
  return `sha256:${createHash("sha256").update(stableJson({ fingerprint, count, instance, ...routed })).digest("hex")}`;
}

/**
 * Plans a deploy: whether to build, whether a new release is needed and which instances to
 * launch and retire. Pure: reads only its input, touches nothing.
 */
export function planDeploy(input: PlanInput): DeployPlan {
  const { resolved, fingerprint, existingImage, state } = input;
  const configHash = releaseConfigHash(fingerprint, resolved.count, resolved.instance, resolved.traffic);
  const image: ImagePlan = existingImage ? { action: "reuse", fingerprint, image: existingImage } : { action: "build", fingerprint };
  const current = currentRelease(state);
  const sameRelease = current !== undefined && current.configHash === configHash && existingImage !== undefined && existingImage.id === current.image.id;
  const toRelease = sameRelease ? current.number : nextReleaseNumber(state);
  const rollout = planReplacement({
    instances: input.instances,
    fromRelease: current?.number,
    toRelease,
    newRelease: !sameRelease,
    imageId: existingImage?.id,
    count: resolved.count,
    maxSurge: resolved.rollout.maxSurge,
    maxUnavailable: resolved.rollout.maxUnavailable,
    rollout: resolved.rollout,
    limits: effectiveLimits(input.limits, resolved.traffic),
  });
  const changes: string[] = [];
  changes.push(image.action === "build" ? `build image ${shortHash(fingerprint)} (${resolved.target.service} has no image with this fingerprint yet)` : `reuse image ${shortHash(fingerprint)} (${existingImage ? (existingImage.id.startsWith("sha256:") ? existingImage.id.slice(0, 19) : existingImage.id) : ""})`);
  if (rollout.action === "none") changes.push(rollout.reason);
  else {
    const what = rollout.newRelease ? `create release ${rollout.toRelease}` : `repair release ${rollout.toRelease} (running instances differ from it)`;
    changes.push(`${what}: ${rollout.count} instance${rollout.count === 1 ? "" : "s"}, launch ${rollout.launch}, retire ${rollout.retire.length}, keep ${rollout.keep.length}`);
    for (const step of rollout.steps) changes.push(`  ${step}`);
    changes.push(`  at most ${rollout.peakInstances} instance${rollout.peakInstances === 1 ? "" : "s"} run at once`);
    changes.push(`  health gate: ${describeHealth(resolved.health, input.providerHealth)}`);
    const proxy = resolved.traffic.proxy;
    if (proxy) changes.push(`  traffic: front proxy at ${proxy.host}:${proxy.port} → port ${proxy.portName}; new instances join after their gate, old ones are drained before they stop`);
    else if (resolved.traffic.loadBalancer === undefined) changes.push("  traffic: clients reach each instance at its own address (no proxy)");
    else if (!(input.providerLines ?? []).some((line) => line.startsWith("traffic:"))) {
      changes.push(`  traffic: the ${resolved.provider} provider's load balancer (traffic.loadBalancer.${resolved.provider}); new instances join after their gate, old ones are drained before they stop`);
    }
    for (const line of input.providerLines ?? []) changes.push(`  ${line}`);
  }
  return { target: resolved.target, fingerprint, configHash, image, rollout, noop: image.action === "reuse" && rollout.action === "none", changes };
}

/** Plans replacing the target's instances with `count` instances of `toRelease`. Pure. */
export function planReplacement(options: {
  instances: readonly Instance[];
  fromRelease: number | undefined;
  toRelease: number;
  newRelease: boolean;
  /**
   * The image of `toRelease`, when it exists already. An instance is kept only when it runs this
   * image: a leftover with the same release number from another state must not pass for it.
   */
  imageId: string | undefined;
  count: number;
  maxSurge: number;
  maxUnavailable: number;
  /** The strategy; rolling with the given surge and unavailability when omitted. */
  rollout?: ResolvedRollout;
  /** The provider's limits: a strategy whose peak exceeds them is refused. */
  limits?: ProviderLimits;
}): RolloutPlan {
  const { instances, toRelease, count, imageId } = options;
  const running = (instance: Instance) => instance.state === "running" || instance.state === "pending";
  const ofRelease = instances.filter((instance) => instance.release === toRelease && instance.imageId === imageId && running(instance));
  const keep = ofRelease.slice(0, count);
  const keepIds = new Set(keep.map((instance) => instance.id));
  const retire = instances.filter((instance) => !keepIds.has(instance.id));
  const launch = count - keep.length;
  if (launch === 0 && retire.length === 0 && !options.newRelease) {
    return { action: "none", reason: `release ${toRelease} is up to date: ${count} instance${count === 1 ? "" : "s"} running, nothing to launch or retire` };
  }
  const oldAlive = retire.filter(running).length;
  const stopped = retire.length - oldAlive;
  const strategy = options.rollout ?? { strategy: "rolling" as const, maxSurge: options.maxSurge, maxUnavailable: options.maxUnavailable, pauseBetweenBatchesMs: 0, bakeTimeMs: 0, steps: [], autoRollback: true, order: "start-first" as const };
  const batches =
    strategy.strategy === "rolling" ? planRollingBatches({ count, maxSurge: strategy.maxSurge, maxUnavailable: strategy.maxUnavailable, oldAlive, keep: keep.length }) : [];
  const { steps, peakInstances } = describeStrategy(strategy, { count, oldAlive, keep: keep.length, batches });
  if (stopped > 0) steps.unshift(`remove ${stopped} stopped instance${stopped === 1 ? "" : "s"}`);
  const limit = options.limits?.maxInstancesPerTarget;
  if (limit !== undefined && peakInstances > limit) {
    throw new KilnError(
      "PLAN_INVALID",
      `This ${strategy.strategy} rollout would run ${peakInstances} instances at once, but the provider allows ${limit} per target; ${
        strategy.strategy === "rolling" ? "lower maxSurge (and allow maxUnavailable)" : "use the rolling strategy with a smaller maxSurge"
      }, or lower instances.count.`,
      { details: { peakInstances, limit, strategy: strategy.strategy } },
    );
  }
  return {
    action: "replace",
    fromRelease: options.fromRelease,
    toRelease,
    newRelease: options.newRelease,
    count,
    maxSurge: options.maxSurge,
    maxUnavailable: options.maxUnavailable,
    keep,
    retire,
    launch,
    batches: stopped > 0 ? [{ retire: stopped, launch: 0 }, ...batches] : batches,
    steps,
    peakInstances,
  };
}

/**
 * The limits that apply to one target: the provider's per-target limit, and behind a front proxy
 * the proxy's own (its slots), whichever is lower.
 */
export function effectiveLimits(limits: ProviderLimits | undefined, traffic: ResolvedTraffic | undefined): ProviderLimits {
  const candidates = [limits?.maxInstancesPerTarget, traffic?.proxy ? limits?.maxInstancesBehindProxy : undefined].filter((value): value is number => value !== undefined);
  return candidates.length > 0 ? { maxInstancesPerTarget: Math.min(...candidates) } : {};
}

/** A strategy's phases in words, and the most instances that run at once. Pure. */
function describeStrategy(rollout: ResolvedRollout, state: { count: number; oldAlive: number; keep: number; batches: readonly RollingBatch[] }): { steps: string[]; peakInstances: number } {
  const { count, oldAlive, keep } = state;
  const plural = (n: number) => `${n} instance${n === 1 ? "" : "s"}`;
  switch (rollout.strategy) {
    case "rolling": {
      let old = oldAlive;
      let healthy = keep;
      let peak = old + healthy;
      const steps = state.batches.map((batch, index) => {
        old -= batch.retire;
        peak = Math.max(peak, old + healthy + batch.launch);
        healthy += batch.launch;
        const parts = [batch.retire ? `retire ${batch.retire}` : "", batch.launch ? `launch ${batch.launch} and wait until healthy` : ""].filter(Boolean);
        const pause = batch.launch && rollout.pauseBetweenBatchesMs > 0 && healthy < count ? `, hold ${rollout.pauseBetweenBatchesMs} ms` : "";
        return `batch ${index + 1}: ${parts.join(", then ")}${pause}`;
      });
      steps.unshift(
        `rolling${rollout.order === "stop-first" ? " stop-first" : ""}: maxSurge ${rollout.maxSurge}, maxUnavailable ${rollout.maxUnavailable} (never fewer than ${count - rollout.maxUnavailable} healthy, never more than ${count + rollout.maxSurge} running)`,
      );
      if (count - rollout.maxUnavailable <= 0 && oldAlive > 0) {
        steps.push(`this rollout has DOWNTIME: every old instance stops before a new one serves (stop-first with ${count} instance${count === 1 ? "" : "s"}); a front proxy (traffic.proxy) avoids it`);
      }
      return { steps, peakInstances: peak };
    }
    case "blue-green": {
      const launch = count - keep;
      const steps = [
        `blue-green: launch ${plural(launch)} (the new set) beside the ${plural(oldAlive)} serving, wait until all are healthy`,
        ...(oldAlive > 0 && rollout.bakeTimeMs > 0 ? [`bake ${rollout.bakeTimeMs} ms with the old set still running (a failure now is undone at once)`] : []),
        ...(oldAlive > 0 ? [`retire the old set (${plural(oldAlive)})`] : []),
      ];
      return { steps, peakInstances: oldAlive + count };
    }
    case "canary": {
      let healthy = keep;
      let old = oldAlive;
      let peak = old + healthy;
      const steps: string[] = [];
      for (const step of rollout.steps) {
        const add = Math.max(0, step.instances - healthy);
        peak = Math.max(peak, old + healthy + add);
        healthy += add;
        const retire = Math.min(old, Math.max(0, old + healthy - count));
        old -= retire;
        const hold = step.holdMs > 0 && healthy < count ? `, hold ${step.holdMs} ms` : "";
        steps.push(`canary step: ${healthy} of ${count} on the new release (launch ${add}, retire ${retire})${hold}`);
      }
      if (old > 0) steps.push(`retire the last ${plural(old)}`);
      return { steps, peakInstances: peak };
    }
  }
}

/**
 * The health gate in words, with its deadline and how it was derived.
 * @param providerHealth - what the provider's own check looks at (`EC2 status checks not impaired`), put first
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

/** The release serving now, from state. */
export function currentRelease(state: TargetState): ReleaseRecord | undefined {
  return state.currentRelease === undefined ? undefined : state.releases.find((release) => release.number === state.currentRelease);
}

/** The number the next release of the target gets. */
export function nextReleaseNumber(state: TargetState): number {
  return state.releases.reduce((max, release) => Math.max(max, release.number), 0) + 1;
}

/** A plan as text, like `terraform plan`. */
export function formatPlan(plan: DeployPlan): string {
  const header = `Plan for ${formatTarget(plan.target)}:`;
  if (plan.noop) return `${header}\n  nothing to do: ${plan.changes.slice(1).join("; ")}`;
  return [header, ...plan.changes.map((line) => `  ${line}`)].join("\n");
}

function shortHash(fingerprint: string): string {
  return fingerprint.replace(/^sha256:/, "").slice(0, 12);
}

function stableJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(stableJson).join(",")}]`;
  if (value && typeof value === "object") {
    return `{${Object.keys(value)
      .sort()
      .filter((key) => (value as Record<string, unknown>)[key] !== undefined)
      .map((key) => `${JSON.stringify(key)}:${stableJson((value as Record<string, unknown>)[key])}`)
      .join(",")}}`;
  }
  return JSON.stringify(value);
}
