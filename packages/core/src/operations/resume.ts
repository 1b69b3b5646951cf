/**
 * `Kiln.resumeRollout`: under the target's lock, finish a rollout whose process died by rolling
 * out its release from the release's own record (no spec, no build), adopting its healthy instances.
 * @module
 */
import { KilnError } from "../errors.js";
import { currentRelease, planRecovery, recoveryCandidates, type ReplacementPlan } from "../plan/index.js";
import type { Provider } from "../provider/contract.js";
import { checkAdoptable } from "../rollout/engine.js";
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
      replacement,
      adopted: replacement.keep,
      plan: undefined,
    });
    return { interrupted: records, result };
  });
}

/**
 * Plans the rollout that resumes an interrupted release: its running instances with its image
 * are kept when they pass the release's health check (otherwise they are retired with the rest
 * and fresh ones launched). The check runs here, before planning, with the rollout engine's
 * gate; the plan itself ({@link planRecovery}) is pure and takes the verdict as input.
 */
export async function planResume(
  context: OperationContext,
  session: Session,
  provider: Provider,
  release: ReleaseRecord,
  current: ReleaseRecord | undefined,
  interruptedId: string,
): Promise<ReplacementPlan> {
  const instances = await session.list(provider);
  const gate = { provider, target: session.target, rolloutId: interruptedId, signal: session.signal, emit: session.emit, logger: context.logger };
  const unhealthy = await checkAdoptable(gate, release, recoveryCandidates(release, instances), session.ctx);
  // Never "none": the release is pending, so the rollout must run to record its success.
  return planRecovery({ current, instances, release, unhealthy, ...(provider.limits ? { limits: provider.limits } : {}) }) as ReplacementPlan;
}
