import type { Instance, ProviderLimits } from "../provider/contract.js";
import type { ReleaseRecord } from "../state/types.js";
import { programRelease, replacementSettings } from "./deploy.js";
import { adoptable, planReplacement } from "./replacement.js";
import type { RolloutPlan } from "./types.js";

/** What {@link planRecovery} decides from: the target, and the facts an interrupted rollout left. */
export interface RecoveryInput {
  /** The release serving now (`currentRelease(state)`), if any. */
  readonly current: ReleaseRecord | undefined;
  /** The target's live instances, from the provider (the interrupted rollout's among them). */
  readonly instances: readonly Instance[];
  /**
   * The release the recovery rolls out: the interrupted rollout's (to resume it), or the current
   * one (to repair it when the interrupted rollout is aborted).
   */
  readonly release: ReleaseRecord;
  /**
   * Ids of the instances {@link recoveryCandidates} named that failed the health check the caller
   * gave them before planning; they are retired first, and fresh ones launched. @defaultValue none
   */
  readonly unhealthy?: readonly string[];
  /** The provider's limits, if it declares any. */
  readonly limits?: ProviderLimits;
}

/**
 * The instances a recovery to `release` would adopt: its running instances with its image, at
 * most its count. A caller checks their health (with the rollout engine's gate) before
 * {@link planRecovery}, and passes the ones that failed as `unhealthy`. Pure.
 */
export function recoveryCandidates(release: ReleaseRecord, instances: readonly Instance[]): Instance[] {
  return adoptable(instances, { number: release.number, imageId: release.image.id, count: release.count });
}

/**
 * Plans finishing what an interrupted rollout left: `release`'s healthy instances are adopted,
 * every other instance is retired once new ones are healthy, with `release`'s own strategy. To
 * resume a pending release, the rollout always runs (even with every instance in place, it must
 * run to record the release's success); to repair the current release it is `none` when nothing
 * differs. Pure.
 * @throws KilnError PLAN_INVALID when the strategy would exceed the provider's limits
 */
export function planRecovery(input: RecoveryInput): RolloutPlan {
  const { release, current } = input;
  return planReplacement({
    instances: input.instances,
    fromRelease: current?.number,
    toRelease: release.number,
    // A pending release (an interrupted one) must run even when nothing differs, to record its success.
    newRelease: release.number !== current?.number || release.status === "pending",
    imageId: release.image.id,
    ...replacementSettings(release, input.limits),
    ...(input.unhealthy ? { unhealthy: input.unhealthy } : {}),
    previous: current && programRelease(current),
  });
}
