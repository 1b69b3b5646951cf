/**
 * Running a planned rollout under a session: record the release, let the rollout engine apply it
 * (journaled), and record its outcome; on failure, what was undone and what serves.
 * @module
 */
import { toKilnError, isKilnError } from "../errors.js";
import type { DeployPlan, ReplacementPlan } from "../plan/index.js";
import type { Instance, Provider } from "../provider/contract.js";
import { applyRollout, describe, type LaunchableRelease, type RolloutFailure } from "../rollout/engine.js";
import type { ReleaseRecord, RolloutRecord } from "../state/types.js";
import type { DeployResult } from "../kiln.js";
import type { OperationContext } from "./context.js";
import type { Session } from "./session.js";
import { readRecordedSecrets } from "../secrets/read.js";
import type { SecretValue } from "../secrets/value.js";

/** How long the cleanup of a failed resume may take (milliseconds). */
const CLEANUP_TIMEOUT_MS = 120_000;

/** What {@link runRollout} rolls out. */
export interface RolloutRun {
  rollout: RolloutRecord;
  /** The provider wrapped by {@link Session.journal} for this rollout. */
  provider: Provider;
  release: ReleaseRecord;
  /** Whether the release record is new (written now); false for a repair or a resumed release. */
  createRelease: boolean;
  previous: ReleaseRecord | undefined;
  /** The planner's replacement, whose program the rollout runs. */
  replacement: ReplacementPlan;
  /** Instances an interrupted rollout left that this one keeps; removed if this one fails. */
  adopted: readonly Instance[];
  plan: DeployPlan | undefined;
  /** The values of `release`'s secrets when the caller read them already (a deploy); else read from the release's sources. */
  secretValues?: ReadonlyMap<string, SecretValue>;
}

/**
 * Rolls `run.release` out under the session's lock, journaling every provider call on the
 * rollout's record, and records the outcome.
 * @throws the rollout's error after it was undone and recorded
 */
export async function runRollout(context: OperationContext, session: Session, run: RolloutRun): Promise<DeployResult> {
  const { store, logger } = context;
  const { target, emit } = session;
  const { release, rollout } = run;
  const rolloutId = rollout.id;
  const token = session.lock.token;
  const startedAt = Date.parse(rollout.startedAt);
  if (run.createRelease) {
    await store.update(target, (state) => void state.releases.push(release), { token });
    emit({ type: "release.created", release: release.number, fingerprint: release.fingerprint, imageId: release.image.id, ...(release.rollbackOf ? { rollbackOf: release.rollbackOf } : {}) });
  }
  emit({
    type: "rollout.started",
    rolloutId,
    kind: rollout.kind,
    strategy: release.rollout.strategy,
    fromRelease: run.previous?.number,
    toRelease: release.number,
    count: release.count,
    maxSurge: release.rollout.maxSurge,
    maxUnavailable: release.rollout.maxUnavailable,
  });
  const failure = await applyRollout({
    rolloutId,
    kind: rollout.kind,
    target,
    provider: run.provider,
    release: launchable(release),
    previous: run.previous ? launchable(run.previous) : undefined,
    plan: run.replacement,
    signal: session.signal,
    logger,
    emit,
    secretValues: secretReader(context, session, run),
  });
  const finishedAt = new Date().toISOString();
  if (!failure) {
    const final = await store.update(
      target,
      (state) => {
        const record = state.releases.find((r) => r.number === release.number)!;
        record.status = "succeeded";
        record.finishedAt ??= finishedAt;
        const stored = state.rollouts.find((r) => r.id === rolloutId)!;
        stored.status = "succeeded";
        stored.finishedAt = finishedAt;
        state.currentRelease = release.number;
        return { record: structuredClone(record), stored: structuredClone(stored) };
      },
      { token },
    );
    emit({ type: "rollout.succeeded", rolloutId, release: release.number, durationMs: Date.now() - startedAt });
    return { outcome: "deployed", plan: run.plan, release: final.record, rollout: final.stored };
  }
  if (failure.undone && run.adopted.length > 0 && release.number !== run.previous?.number) {
    await removeAdopted(context, session, run.provider, release, run.adopted, rolloutId);
  }
  const recorded = { code: failure.error.code, message: failure.error.message };
  await store.update(
    target,
    (state) => {
      const record = state.releases.find((r) => r.number === release.number);
      if (record?.status === "pending") {
        record.status = "failed";
        record.finishedAt = finishedAt;
        record.error = recorded;
      }
      const stored = state.rollouts.find((r) => r.id === rolloutId)!;
      stored.status = failure.error.code === "ABORTED" ? "aborted" : "failed";
      stored.finishedAt = finishedAt;
      stored.error = recorded;
      if (failure.restoredRelease !== undefined) stored.restoredRelease = failure.restoredRelease;
      // The previous release stays the recorded one even when it could not be fully restored:
      // `kiln status` then shows the shortfall as drift and the next deploy repairs it.
      state.currentRelease = run.previous?.number;
    },
    { token },
  );
  emit({ type: "rollout.failed", rolloutId, release: release.number, code: failure.error.code, message: failure.error.message, durationMs: Date.now() - startedAt });
  emit({
    type: "rollout.rolled-back",
    rolloutId,
    release: release.number,
    restoredRelease: failure.restoredRelease,
    reason: rolledBackReason(release, run.previous, failure),
  });
  failure.error.details.rolloutId = rolloutId;
  failure.error.details.release = release.number;
  failure.error.details.restoredRelease = failure.restoredRelease;
  throw failure.error;
}

/**
 * What a failed rollout left serving, in words: the restored release and where it answers (its
 * front proxy's address, or its instances' own), or why it could not be restored and what of it
 * still runs; "no earlier release" only when there is none.
 */
export function rolledBackReason(release: ReleaseRecord, previous: ReleaseRecord | undefined, failure: RolloutFailure): string {
  if (!failure.undone) return `autoRollback is off: release ${release.number}'s instances stay for inspection; run kiln rollback or kiln deploy`;
  if (!previous) return "the failed release's instances were removed; no earlier release to restore";
  const proxy = previous.traffic?.proxy;
  const addresses = [
    ...new Set(failure.serving.flatMap((instance) => Object.values(instance.endpoints).map((endpoint) => `${endpoint.host}:${endpoint.port}`))),
  ];
  const where = proxy ? ` at ${proxy.host}:${proxy.port} (its front proxy)` : addresses.length > 0 ? ` at ${addresses.join(", ")}` : "";
  if (failure.restoredRelease !== undefined) return `release ${failure.restoredRelease} still serves${where}`;
  const running = failure.serving.length;
  return (
    `the failed release's instances were removed, but release ${previous.number} could not be fully restored (${failure.restoreError ?? "unknown reason"}): ` +
    `${running} of its ${previous.count} instance(s) run${running > 0 ? where : ""}; run kiln deploy or kiln rollback to repair it`
  );
}

/**
 * Records a rollout that failed before its release was rolled out (a build failed or was
 * cancelled) and returns the error to throw: the failure, or `LOCK_LOST` when the lease is gone.
 */
export async function failRollout(context: OperationContext, session: Session, rolloutId: string, error: unknown): Promise<unknown> {
  const failed = toKilnError(error, "ROLLOUT_FAILED", "The rollout failed");
  try {
    await context.store.update(
      session.target,
      (state) => {
        const stored = state.rollouts.find((r) => r.id === rolloutId);
        if (!stored) return;
        stored.status = failed.code === "ABORTED" ? "aborted" : "failed";
        stored.finishedAt = new Date().toISOString();
        stored.error = { code: failed.code, message: failed.message };
      },
      { token: session.lock.token },
    );
  } catch (stateError) {
    if (isKilnError(stateError, "LOCK_LOST")) return stateError;
    context.logger.error("could not record the failed rollout", { rolloutId, error: String(stateError) });
  }
  return error;
}

/** After a resumed rollout failed and was undone: removes the instances it had adopted. */
async function removeAdopted(context: OperationContext, session: Session, provider: Provider, release: ReleaseRecord, adopted: readonly Instance[], rolloutId: string): Promise<void> {
  const ctx = context.providerContext(AbortSignal.timeout(CLEANUP_TIMEOUT_MS), session.emit);
  try {
    const ids = new Set(adopted.map((instance) => instance.id));
    const left = (await provider.instances.list({ target: session.target, release: release.number }, ctx)).filter((instance) => ids.has(instance.id));
    if (left.length === 0) return;
    for (const instance of left) session.emit({ type: "instance.retiring", rolloutId, instance: describe(instance) });
    await provider.instances.terminate(left, { gracePeriodMs: release.instance.stopGracePeriodMs }, ctx);
    for (const instance of left) session.emit({ type: "instance.retired", rolloutId, instance: describe(instance) });
  } catch (error) {
    context.logger.error("could not remove the adopted instances of the failed release", { rolloutId, error: String(error) });
  }
}


/** What the rollout engine needs of a release record. */
/**
 * How the rollout reads a release's secrets: `run.secretValues` for the release a deploy just
 * read them for; otherwise (a rollback, a resume, the previous release restored) from the
 * release's recorded sources, once per release, warning when a value changed since the release
 * was made (today's value is used: a rollback restores an image and settings, not old secrets).
 */
function secretReader(context: OperationContext, session: Session, run: RolloutRun): (release: LaunchableRelease) => Promise<ReadonlyMap<string, SecretValue>> {
  const read = new Map<number, Promise<ReadonlyMap<string, SecretValue>>>();
  return (release) => {
    if (release.number === run.release.number && run.secretValues) return Promise.resolve(run.secretValues);
    let values = read.get(release.number);
    if (!values) {
      values = (async () => {
        const key = (await context.store.read(session.target)).secretDigestKey;
        const ctx = context.providerContext(session.signal, session.emit);
        const { values: found, changed } = await readRecordedSecrets(release.instance.secrets ?? [], key, context.secretSources(ctx));
        if (changed.length > 0) {
          context.logger.warn(`release ${release.number}: ${changed.map((name) => `secrets.${name}`).join(", ")} changed since the release was made; its instances get today's value`, { release: release.number });
        }
        return found;
      })();
      read.set(release.number, values);
    }
    return values;
  };
}

export function launchable(release: ReleaseRecord): LaunchableRelease {
  return {
    number: release.number,
    image: release.image,
    count: release.count,
    instance: release.instance,
    health: release.health,
    rollout: release.rollout,
    ...(release.traffic ? { traffic: release.traffic } : {}),
  };
}
