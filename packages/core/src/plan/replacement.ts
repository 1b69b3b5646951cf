import { KilnError } from "../errors.js";
import type { Instance, ProviderLimits } from "../provider/contract.js";
import type { ResolvedRollout, ResolvedTraffic } from "../spec/resolve.js";
import { describeProgram, peakInstances } from "./format.js";
import { writeProgram } from "./strategies.js";
import type { ProgramRelease, ReplacementInput, RolloutPlan } from "./types.js";

/** Whether an instance runs or is starting: one a rollout counts, keeps or must stop. */
export const isRunning = (instance: Instance): boolean => instance.state === "running" || instance.state === "pending";

/**
 * Plans replacing the target's instances with `count` instances of `toRelease`: which stay,
 * which go (in the order they go), and the program of the release's strategy. Pure.
 * @throws KilnError PLAN_INVALID when the strategy would run more instances at once than `limits` allow
 */
export function planReplacement(options: ReplacementInput): RolloutPlan {
  const { instances, toRelease, count, imageId } = options;
  // Instances that failed their check when they were to be adopted go first, and are never kept.
  const unhealthy = new Set(options.unhealthy ?? []);
  const candidates = instances.filter((instance) => !unhealthy.has(instance.id));
  const ordered = [...instances.filter((instance) => unhealthy.has(instance.id)), ...candidates];
  const keep = adoptable(candidates, { number: toRelease, imageId, count });
  const keepIds = new Set(keep.map((instance) => instance.id));
  const retire = orderForRetirement(
    ordered.filter((instance) => !keepIds.has(instance.id)),
    options.previous,
  );
  const launch = count - keep.length;
  if (launch === 0 && retire.length === 0 && !options.newRelease) {
    return { action: "none", reason: `release ${toRelease} is up to date: ${count} instance${count === 1 ? "" : "s"} running, nothing to launch or retire` };
  }
  const oldRunning = retire.filter(isRunning);
  const stopped = retire.filter((instance) => !isRunning(instance));
  const strategy: ResolvedRollout = options.rollout ?? {
    strategy: "rolling",
    maxSurge: options.maxSurge,
    maxUnavailable: options.maxUnavailable,
    pauseBetweenBatchesMs: 0,
    bakeTimeMs: 0,
    steps: [],
    autoRollback: true,
    order: "start-first",
  };
  const release: ProgramRelease = { number: toRelease, imageId, stopGracePeriodMs: options.release?.stopGracePeriodMs ?? 0, traffic: options.release?.traffic };
  const { program, batches } = writeProgram({
    strategy,
    count,
    toRelease,
    keep,
    oldRunning,
    stopped,
    routed: isRouted(release.traffic, options.previous?.traffic),
    gracePeriodOf: (list) => gracePeriodOf(list, release, options.previous),
  });
  const peak = peakInstances(program, { keep: keep.length, oldAlive: oldRunning.length });
  const limit = options.limits?.maxInstancesPerTarget;
  if (limit !== undefined && peak > limit) {
    throw new KilnError(
      "PLAN_INVALID",
      `This ${strategy.strategy} rollout would run ${peak} instances at once, but the provider allows ${limit} per target; ${
        strategy.strategy === "rolling" ? "lower maxSurge (and allow maxUnavailable)" : "use the rolling strategy with a smaller maxSurge"
      }, or lower instances.count.`,
      { details: { peakInstances: peak, limit, strategy: strategy.strategy } },
    );
  }
  return {
    action: "replace",
    fromRelease: options.fromRelease,
    toRelease,
    newRelease: options.newRelease,
    count,
    // The program's own numbers: when a strategy is given, its surge and unavailability are what runs.
    maxSurge: strategy.maxSurge,
    maxUnavailable: strategy.maxUnavailable,
    strategy,
    keep,
    retire,
    launch,
    batches: stopped.length > 0 ? [{ retire: stopped.length, launch: 0 }, ...batches] : batches,
    program,
    steps: describeProgram(program, { count, keep: keep.length, oldAlive: oldRunning.length, strategy }),
    peakInstances: peak,
  };
}

/**
 * The instances of a release that a rollout to it keeps: running or starting, with its image,
 * at most `count` of them, in the order given. Pure.
 */
export function adoptable(instances: readonly Instance[], release: { readonly number: number; readonly imageId: string | undefined; readonly count: number }): Instance[] {
  return instances.filter((instance) => instance.release === release.number && instance.imageId === release.imageId && isRunning(instance)).slice(0, release.count);
}

/**
 * The limits that apply to one target: the provider's per-target limit, and behind a front proxy
 * the proxy's own (its slots), whichever is lower.
 */
export function effectiveLimits(limits: ProviderLimits | undefined, traffic: ResolvedTraffic | undefined): ProviderLimits {
  const candidates = [limits?.maxInstancesPerTarget, traffic?.proxy ? limits?.maxInstancesBehindProxy : undefined].filter((value): value is number => value !== undefined);
  return candidates.length > 0 ? { maxInstancesPerTarget: Math.min(...candidates) } : {};
}

/**
 * Whether traffic steps apply: the new release's router (front proxy or load balancer) or, when it
 * dropped it, the previous release's.
 */
export function isRouted(traffic: ResolvedTraffic | undefined, previous: ResolvedTraffic | undefined): boolean {
  return Boolean(traffic?.proxy ?? previous?.proxy) || Boolean(traffic?.loadBalancer ?? previous?.loadBalancer);
}

/**
 * The longest stop grace period among `instances`, each from the release it belongs to: `release`'s
 * own, and for any other instance the previous release's (or `release`'s when there is none);
 * 0 for none (milliseconds).
 */
export function gracePeriodOf(
  instances: readonly Instance[],
  release: Pick<ProgramRelease, "number" | "stopGracePeriodMs">,
  previous: Pick<ProgramRelease, "stopGracePeriodMs"> | undefined,
): number {
  const graceOf = (instance: Instance) => (instance.release === release.number ? release.stopGracePeriodMs : (previous?.stopGracePeriodMs ?? release.stopGracePeriodMs));
  return Math.max(0, ...instances.map(graceOf));
}

/**
 * Orders instances to retire so that leftovers (instances of no release that serves: an
 * interrupted rollout's, a failed release's) go before the previous release's own, which are the
 * ones known to serve: capacity is then never counted on an instance nobody checked.
 */
function orderForRetirement(instances: readonly Instance[], previous: Pick<ProgramRelease, "number" | "imageId"> | undefined): Instance[] {
  const serves = (instance: Instance) => previous !== undefined && instance.release === previous.number && instance.imageId === previous.imageId;
  return [...instances].sort((a, b) => Number(serves(a)) - Number(serves(b)));
}
