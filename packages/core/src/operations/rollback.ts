/**
 * `Kiln.rollback`: under the target's lock, roll out a copy of an earlier successful release from
 * its stored image (no rebuild).
 * @module
 */
import { KilnError } from "../errors.js";
import { currentRelease, planRollback } from "../plan/index.js";
import type { ReleaseRecord, TargetState } from "../state/types.js";
import { formatTarget } from "../target.js";
import type { DeployResult, RollbackOptions } from "../kiln.js";
import type { OperationContext } from "./context.js";
import { runRollout } from "./run-rollout.js";
import { inSession } from "./session.js";

/** `Kiln.rollback`; see its documentation. */
export async function rollback(context: OperationContext, options: RollbackOptions): Promise<DeployResult> {
  const { target, providerName } = await context.targetOf(options);
  return inSession(context, target, providerName, options, async (session) => {
    const { interrupted, emit } = session;
    const state = await context.store.read(target);
    const current = currentRelease(state);
    const chosen = chooseRollbackRelease(state, options.release);
    const provider = await session.connect(chosen.provider);
    const image = await provider.images.find({ service: target.service, fingerprint: chosen.fingerprint }, session.ctx);
    if (!image) {
      await session.settle(undefined, undefined, "a rollback was asked for instead");
      throw new KilnError(
        "RELEASE_NOT_FOUND",
        `The image of release ${chosen.number} (${chosen.fingerprint.slice(0, 19)}) no longer exists, so it cannot be rolled back to without a rebuild; deploy that version's spec instead.`,
      );
    }
    const instances = await session.list(provider);
    const replacement = planRollback({ state, instances, release: chosen, image, recovering: interrupted.length > 0, ...(provider.limits ? { limits: provider.limits } : {}) });
    if (replacement.action === "none") {
      emit({ type: "rollout.skipped", reason: replacement.reason, release: current!.number });
      return { outcome: "unchanged", plan: undefined, release: current!, rollout: undefined };
    }
    const release: ReleaseRecord = { ...structuredClone(chosen), number: replacement.toRelease, createdAt: new Date().toISOString(), image, rollbackOf: chosen.number, status: "pending" };
    delete release.finishedAt;
    delete release.error;
    await session.settle(undefined, replacement, "a rollback was asked for instead");
    const rollout = await session.beginRollout({ provider: chosen.provider, kind: "rollback", fromRelease: current?.number, toRelease: replacement.toRelease });
    const journal = session.journal(provider, rollout.id);
    return runRollout(context, session, { rollout, provider: journal, release, createRelease: true, previous: current, replacement, adopted: [], plan: undefined });
  });
}

/**
 * The release a rollback goes to: the one named (it must have succeeded), or the newest
 * successful release before the current one whose configuration differs from it. Failed releases
 * are never rollback targets.
 * @param state the target's state
 * @param requested the release number asked for; undefined for the newest earlier one
 * @throws KilnError RELEASE_NOT_FOUND, NO_ROLLBACK_TARGET
 */
export function chooseRollbackRelease(state: TargetState, requested: number | undefined): ReleaseRecord {
  const current = currentRelease(state);
  if (requested !== undefined) {
    const found = state.releases.find((release) => release.number === requested);
    if (!found) throw new KilnError("RELEASE_NOT_FOUND", `${formatTarget(state.target)} has no release ${requested}; see \`kiln history\` for the releases it has.`);
    if (found.status !== "succeeded") {
      throw new KilnError("RELEASE_NOT_FOUND", `Release ${requested} of ${formatTarget(state.target)} ${found.status === "failed" ? "failed" : "never finished"}, so it is not a rollback target; pick a release whose status is succeeded.`);
    }
    return found;
  }
  const candidates = state.releases
    .filter((release) => release.status === "succeeded" && release.number !== current?.number && release.configHash !== current?.configHash)
    .filter((release) => current === undefined || release.number < current.number || release.rollbackOf !== undefined)
    .sort((a, b) => b.number - a.number);
  const chosen = candidates[0];
  if (!chosen) {
    throw new KilnError("NO_ROLLBACK_TARGET", `${formatTarget(state.target)} has no earlier successful release to roll back to; what runs now stays.`);
  }
  return chosen;
}
