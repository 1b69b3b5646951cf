/**
 * `Kiln.deploy`: under the target's lock, recover, plan, build if needed, create a release and roll
 * it out. An interrupted rollout's release that the spec still asks for is resumed, not replaced.
 * @module
 */
import { currentRelease, formatPlan, resumeDeployPlan, type DeployPlan } from "../plan/index.js";
import type { ImageRef } from "../provider/contract.js";
import type { InterruptedRollout } from "../journal/recover.js";
import type { ReleaseRecord } from "../state/types.js";
import type { DeployResult, SpecOptions } from "../kiln.js";
import { buildImage, prepare, type Prepared } from "./build.js";
import type { OperationContext } from "./context.js";
import { planResume } from "./resume.js";
import { failRollout, runRollout } from "./run-rollout.js";
import { inSession, type Session } from "./session.js";

/** `Kiln.deploy`; see its documentation. */
export async function deploy(context: OperationContext, options: SpecOptions): Promise<DeployResult> {
  // Validate once, before taking the lock: a bad spec never waits for or holds a lock.
  const spec = { ...options, spec: await context.loaded(options) };
  const { target, providerName } = await context.targetOf(spec);
  return inSession(context, target, providerName, spec, async (session) => {
    const prepared = await prepare(context, { ...spec, signal: session.signal });
    const { resolved, fingerprint, provider, ctx, emit, state } = prepared;
    const current = currentRelease(state);
    const resumable = findResumable(session.interrupted, prepared);
    const { plan, resumed } = resumable?.release ? await withResume(context, session, prepared, resumable) : { plan: prepared.plan, resumed: undefined };
    await session.settle(resumed?.number, plan.rollout.action === "replace" ? plan.rollout : undefined, "the spec now asks for another release");
    emit({ type: "plan.ready", summary: formatPlan(plan), noop: plan.noop });
    if (plan.noop && current) {
      emit({ type: "rollout.skipped", reason: plan.rollout.action === "none" ? plan.rollout.reason : "up to date", release: current.number });
      return { outcome: "unchanged", plan, release: current, rollout: undefined };
    }
    const rolloutPlan = plan.rollout;
    if (rolloutPlan.action === "none") {
      // Up to date, but the image had to be rebuilt (it was removed): nothing runs from it yet,
      // so there is no rollout to journal the build in; the image is found by its fingerprint.
      if (plan.image.action === "build") await buildImage(resolved, fingerprint, provider, ctx, emit, prepared.buildSecrets);
      return { outcome: "unchanged", plan, release: current!, rollout: undefined };
    }
    // The rollout record comes first, so that the build is journaled too.
    const rollout = await session.beginRollout({ provider: resolved.provider, kind: resumable?.rollout.kind ?? "deploy", fromRelease: current?.number, toRelease: rolloutPlan.toRelease });
    const journal = session.journal(provider, rollout.id);
    let release: ReleaseRecord;
    try {
      let image: ImageRef;
      if (plan.image.action === "reuse") {
        image = plan.image.image;
        emit({ type: "image.reused", fingerprint: fingerprint.fingerprint, imageId: image.id });
      } else {
        image = await buildImage(resolved, fingerprint, journal, ctx, emit, prepared.buildSecrets, { id: rollout.id, release: rolloutPlan.toRelease });
      }
      release = resumed ?? (rolloutPlan.newRelease ? newRelease(prepared, plan, rolloutPlan.toRelease, image) : current!);
    } catch (error) {
      throw await failRollout(context, session, rollout.id, error);
    }
    return runRollout(context, session, {
      rollout,
      provider: journal,
      release,
      createRelease: rolloutPlan.newRelease && !resumed,
      previous: current,
      replacement: rolloutPlan,
      adopted: resumed ? rolloutPlan.keep : [],
      plan,
      // Every release a deploy rolls out has the configuration (so the secret digests) it read.
      secretValues: prepared.secretValues,
    });
  });
}

/** The interrupted rollout whose release is exactly what the spec asks for (same configuration and image), if any. */
function findResumable(interrupted: readonly InterruptedRollout[], { plan, resolved }: Prepared): InterruptedRollout | undefined {
  return interrupted.find(
    ({ release }) =>
      release?.status === "pending" &&
      release.configHash === plan.configHash &&
      release.provider === resolved.provider &&
      plan.image.action === "reuse" &&
      plan.image.image.id === release.image.id,
  );
}

/** The deploy's plan changed to resume `resumable`'s release (adopting its healthy instances). */
async function withResume(context: OperationContext, session: Session, prepared: Prepared, resumable: InterruptedRollout): Promise<{ plan: DeployPlan; resumed: ReleaseRecord }> {
  const resumed = resumable.release!;
  const rollout = await planResume(context, session, prepared.provider, resumed, currentRelease(prepared.state), resumable.rollout.id);
  return { resumed, plan: resumeDeployPlan(prepared.plan, { rolloutId: resumable.rollout.id, rollout }) };
}

/** The pending record of a release the spec asks for, running `image`. */
function newRelease({ resolved, fingerprint }: Prepared, plan: DeployPlan, number: number, image: ImageRef): ReleaseRecord {
  return {
    number,
    target: resolved.target,
    provider: resolved.provider,
    createdAt: new Date().toISOString(),
    fingerprint: fingerprint.fingerprint,
    image,
    count: resolved.count,
    instance: resolved.instance,
    health: resolved.health,
    rollout: resolved.rollout,
    traffic: resolved.traffic,
    configHash: plan.configHash,
    status: "pending",
  };
}
