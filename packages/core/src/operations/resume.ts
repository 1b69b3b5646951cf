/**
 * `Kiln.resumeRollout`: under the target's lock, finish a rollout whose process died by rolling
 * out its release from the release's own record (no spec, no build), adopting its healthy instances.
 * @module
 */
import { KilnError, isAbortError, isKilnError } from "../errors.js";
import { currentRelease, effectiveLimits, planReplacement, type RolloutPlan } from "../plan.js";
import type { Instance, Provider } from "../provider/contract.js";
import { waitUntilHealthy } from "../rollout/engine.js";
import type { ReleaseRecord } from "../state/types.js";
import type { RecoveryResult, TargetOptions } from "../kiln.js";
import type { OperationContext } from "./context.js";
import { runRollout } from "./run-rollout.js";
import { inSession, type Session } from "./session.js";

/** `Kiln.resumeRollout`; see its documentation. */
export async function resumeRollout(context: OperationContext, options: TargetOptions): Promise<RecoveryResult> {
  const { target, providerName } = await context.targetOf(options);
  return inSession(context, target, providerName, options, async (session) => {
    const { interrupted } = session;
    const resumable = interrupted.findLast(({ release }) => release?.status === "pending");
    const records = interrupted.map(({ rollout }) => rollout);
    if (!resumable?.release) {
      await session.settle(undefined, undefined, "there was nothing to resume");
      return { interrupted: records, result: undefined };
    }
    const release = resumable.release;
    const provider = await session.connect(release.provider);
    const image = await provider.images.find({ service: target.service, fingerprint: release.fingerprint }, session.ctx);
    if (!image || image.id !== release.image.id) {
      await session.settle(undefined, undefined, "its image no longer exists");
      throw new KilnError(
        "RELEASE_NOT_FOUND",
        `The image of release ${release.number} (${release.fingerprint.slice(0, 19)}) no longer exists, so its rollout cannot be resumed; it was recorded as failed. Run kiln deploy to build and deploy again.`,
      );
    }
    const current = currentRelease(await context.store.read(target));
    const replacement = await planResume(context, session, provider, release, current, resumable.rollout.id);
    await session.settle(release.number, replacement, "another interrupted rollout was resumed");
    const rollout = await session.beginRollout({ provider: release.provider, kind: resumable.rollout.kind, fromRelease: current?.number, toRelease: release.number });
    const result = await runRollout(context, session, {
      rollout,
      provider: session.journal(provider, rollout.id),
      release,
      createRelease: false,
      previous: current,
      keep: replacement.keep,
      retire: replacement.retire,
      adopted: replacement.keep,
      plan: undefined,
    });
    return { interrupted: records, result };
  });
}

/**
 * Plans the rollout that resumes an interrupted release: its running instances with its image
 * are kept when they pass the release's health check (otherwise they are retired with the rest
 * and fresh ones launched).
 */
export async function planResume(
  context: OperationContext,
  session: Session,
  provider: Provider,
  release: ReleaseRecord,
  current: ReleaseRecord | undefined,
  interruptedId: string,
): Promise<Extract<RolloutPlan, { action: "replace" }>> {
  const instances = await session.list(provider);
  const plan = (list: readonly Instance[]) =>
    planReplacement({
      instances: list,
      fromRelease: current?.number,
      toRelease: release.number,
      // Never "none": even with every instance in place, the rollout must run to record success.
      newRelease: true,
      imageId: release.image.id,
      count: release.count,
      maxSurge: release.rollout.maxSurge,
      maxUnavailable: release.rollout.maxUnavailable,
      rollout: release.rollout,
      limits: effectiveLimits(provider.limits, release.traffic),
    }) as Extract<RolloutPlan, { action: "replace" }>;
  const first = plan(instances);
  if (first.keep.length === 0) return first;
  try {
    await waitUntilHealthy({ provider, target: session.target, rolloutId: interruptedId, signal: session.signal, emit: session.emit }, release, first.keep, session.ctx);
    return first;
  } catch (error) {
    if (isAbortError(error) || isKilnError(error, "LOCK_LOST")) throw error;
    context.logger.warn("the interrupted rollout's instances are not healthy; they are replaced", { release: release.number, error: String(error) });
    const unhealthy = new Set(first.keep.map((instance) => instance.id));
    const second = plan(instances.filter((instance) => !unhealthy.has(instance.id)));
    return { ...second, retire: [...first.keep, ...second.retire] };
  }
}
