import type { ImageRef, Instance, ProviderLimits } from "../provider/contract.js";
import type { ReleaseRecord, TargetState } from "../state/types.js";
import { currentRelease, nextReleaseNumber, programRelease, replacementSettings } from "./deploy.js";
import { planReplacement } from "./replacement.js";
import type { RolloutPlan } from "./types.js";

/** What {@link planRollback} decides from. */
export interface RollbackInput {
  readonly state: TargetState;
  /** The target's live instances, from the provider. */
  readonly instances: readonly Instance[];
  /** The release rolled back to (see `chooseRollbackRelease`). */
  readonly release: ReleaseRecord;
  /** Its image, as the provider still has it. */
  readonly image: ImageRef;
  /**
   * Whether interrupted rollouts were found first: then a rollback runs even when what it goes
   * back to already serves intact (the rollout records the outcome). @defaultValue false
   */
  readonly recovering?: boolean;
  /** The provider's limits, if it declares any. */
  readonly limits?: ProviderLimits;
}

/**
 * Plans a rollback: a new release (the next number) that copies `release`, rolled out with
 * `release`'s own strategy, health check and traffic; or nothing (`action: "none"`) when that
 * configuration already serves, intact. Pure.
 * @throws KilnError PLAN_INVALID when the strategy would exceed the provider's limits
 */
export function planRollback(input: RollbackInput): RolloutPlan {
  const { state, instances, release, image } = input;
  const current = currentRelease(state);
  const sameAsCurrent = current !== undefined && (release.number === current.number || (release.configHash === current.configHash && release.image.id === current.image.id));
  if (sameAsCurrent && !input.recovering) {
    // Rolling back to what already serves, intact, does nothing (as a deploy of an unchanged spec).
    const intact = planReplacement({
      instances,
      fromRelease: current.number,
      toRelease: current.number,
      newRelease: false,
      imageId: current.image.id,
      count: current.count,
      maxSurge: current.rollout.maxSurge,
      maxUnavailable: current.rollout.maxUnavailable,
    });
    if (intact.action === "none") return { action: "none", reason: `release ${release.number} already serves (as release ${current.number}): nothing to roll back` };
  }
  return planReplacement({
    instances,
    fromRelease: current?.number,
    toRelease: nextReleaseNumber(state),
    newRelease: true,
    imageId: image.id,
    ...replacementSettings(release, input.limits),
    previous: current && programRelease(current),
  });
}
