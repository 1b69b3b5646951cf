/**
 * `Kiln.listImages` and `Kiln.collectGarbage`: a service's images with who uses them, and the
 * removal of those no retained release uses, journaled like a rollout under the target's lock.
 * @module
 */
import { KilnError, isKilnError } from "../errors.js";
import { currentRelease } from "../plan/index.js";
import type { ImageRef, Instance, Provider, ProviderContext } from "../provider/contract.js";
import { imageUsage, planCollection, type CollectionPlan, type ImageUsage } from "../retention/select.js";
import type { RolloutRecord, StateStore, TargetLock, TargetState } from "../state/types.js";
import { formatTarget, type Target } from "../target.js";
import { resolveTarget } from "../spec/resolve.js";
import { DEFAULT_ENVIRONMENT } from "../target.js";
import type { CollectGarbageOptions, CollectionResult, SpecOptions, TargetOptions } from "../kiln.js";
import { givenSpec, type OperationContext } from "./context.js";
import { inSession } from "./session.js";

/** Errors after which a collection stops at once: the lock is gone, the caller cancelled, or state cannot be written. */
const STOPPING_CODES = new Set(["LOCK_LOST", "ABORTED", "STATE_UNAVAILABLE", "STATE_CORRUPT"]);

/** What a collection reads before it plans: every target of the service with its state and provider. */
interface ServiceView {
  readonly states: TargetState[];
  /** The provider each target's releases use, by environment (absent: never deployed). */
  readonly providers: ReadonlyMap<string, string>;
}

/** `Kiln.listImages`; see its documentation. */
export async function listImages(context: OperationContext, options: TargetOptions): Promise<ImageUsage[]> {
  const { target, providerName } = await context.targetOf(options);
  const view = await readService(context.store, target, providerName);
  const ctx = context.providerContext(options.signal, context.emitterFor(target, options.onEvent));
  const listed: ImageUsage[] = [];
  for (const name of [...new Set(view.providers.values())].sort()) {
    const provider = await context.provider(name);
    const [images, instances] = await Promise.all([provider.images.list(target.service, ctx), instancesOn(provider, name, view, ctx)]);
    listed.push(...imageUsage(name, images, view.states, instances));
  }
  return listed.sort((a, b) => (b.image.createdAt ?? "").localeCompare(a.image.createdAt ?? ""));
}

/** `Kiln.collectGarbage`; see its documentation. */
export async function collectGarbage(context: OperationContext, options: CollectGarbageOptions): Promise<CollectionResult> {
  const { target, providerName } = await context.targetOf(options);
  if (!providerName) {
    throw new KilnError("INVALID_ARGUMENT", `${formatTarget(target)} was never deployed, so it has no releases to keep or images to collect; deploy it first.`);
  }
  const plan = async (provider: Provider, ctx: ProviderContext): Promise<CollectionPlan> => {
    const view = await readService(context.store, target, providerName);
    const [images, instances] = await Promise.all([provider.images.list(target.service, ctx), instancesOn(provider, providerName, view, ctx)]);
    return planCollection({
      target,
      provider: providerName,
      keep: options.keep,
      ...(options.olderThanMs !== undefined ? { olderThanMs: options.olderThanMs } : {}),
      now: Date.now(),
      images,
      states: view.states,
      instances,
      otherWindows: await otherWindows(context, options, target),
    });
  };

  if (!options.apply) {
    // The dry run: read and plan, take no lock, change nothing.
    const ctx = context.providerContext(options.signal, context.emitterFor(target, options.onEvent));
    const provider = await context.provider(providerName);
    await provider.ping(ctx);
    const planned = await plan(provider, ctx);
    return { plan: planned, applied: false, gcId: undefined, resumed: [], removed: [], failed: [] };
  }

  return inSession(context, target, providerName, options, async (session) => {
    // Every other environment of the service is locked too: a deploy there may reuse (find) or
    // build an image of the service, which this collection must not take meanwhile.
    const others = await lockOthers(context, target);
    try {
      const provider = await session.connect(providerName);
      const planned = await plan(provider, session.ctx);
      const resumed = unfinishedRemovals(await context.store.read(target), planned);
      const work: ImageRef[] = [...resumed, ...planned.remove.map((usage) => usage.image).filter((image) => !resumed.some((other) => other.id === image.id))];
      if (work.length === 0) return { plan: planned, applied: true, gcId: undefined, resumed: [], removed: [], failed: [] };
      const state = await context.store.read(target);
      const current = currentRelease(state)?.number ?? 0;
      const record = await session.beginRollout({ provider: providerName, kind: "gc", fromRelease: current, toRelease: current });
      const journal = session.journal(provider, record.id);
      const removed: ImageRef[] = [];
      const failed: { image: ImageRef; error: KilnError }[] = [];
      for (const image of work) {
        try {
          await journal.images.remove(image, session.ctx);
          removed.push(image);
          session.emit({ type: "image.removed", gcId: record.id, imageId: image.id, fingerprint: image.fingerprint, ...(image.sizeBytes !== undefined ? { sizeBytes: image.sizeBytes } : {}) });
        } catch (error) {
          // Anything but the provider refusing or failing this one image stops the collection:
          // the journal then holds the intent, and the next collection finishes it.
          if (isKilnError(error, "ABORTED")) await finishRecord(context.store, target, session.lock, record, failed, error).catch(() => undefined);
          if (!isKilnError(error) || STOPPING_CODES.has(error.code)) throw error;
          const failure = removalFailure(image, error);
          failed.push({ image, error: failure });
          session.emit({ type: "image.remove-failed", gcId: record.id, imageId: image.id, fingerprint: image.fingerprint, code: failure.code, message: failure.message });
        }
      }
      await finishRecord(context.store, target, session.lock, record, failed);
      return { plan: planned, applied: true, gcId: record.id, resumed, removed, failed };
    } finally {
      await Promise.all(others.map((lock) => lock.release().catch((error: unknown) => context.logger.error("could not release a lock; it expires by itself", { error: String(error) }))));
    }
  });
}

/**
 * The clean-up a spec's `retention: { keep }` runs after a successful deploy: the same collection
 * as `collectGarbage({ keep, apply: true })`. It never fails the deploy: a failure is logged and
 * reported as a `retention.failed` event, and the images stay for the next deploy or `kiln gc`.
 * @returns the collection, or undefined when the spec has no retention or the clean-up failed
 */
export async function retainAfterDeploy(context: OperationContext, options: SpecOptions): Promise<CollectionResult | undefined> {
  const environment = options.environment ?? DEFAULT_ENVIRONMENT;
  // Most specs have no retention: tell from the spec as given, without loading it again.
  const declared = (() => {
    try {
      const given = givenSpec(options.spec, options.baseDir).validated;
      return environment === DEFAULT_ENVIRONMENT ? given.spec.retention : (given.environments[environment]?.retention ?? given.spec.retention);
    } catch {
      return undefined; // The deploy read this spec; one it cannot read again has nothing to clean up.
    }
  })();
  if (declared === undefined) return undefined;
  let keep: number | undefined;
  try {
    const { validated, baseDir } = await context.loaded(options);
    keep = resolveTarget(validated, environment, baseDir).retention?.keep;
    if (keep === undefined) return undefined;
    const result = await collectGarbage(context, { ...options, keep, apply: true });
    for (const { error } of result.failed) context.logger.warn("retention: an image was not removed", { code: error.code, message: error.message });
    return result;
  } catch (error) {
    const failure = isKilnError(error) ? error : new KilnError("INTERNAL", String(error), { cause: error });
    context.logger.warn("retention: the clean-up after the deploy failed; the deploy stands", { code: failure.code, message: failure.message });
    const target = keep === undefined ? undefined : await context.targetOf(options).then((found) => found.target, () => undefined);
    if (target) context.emitterFor(target, options.onEvent)({ type: "retention.failed", code: failure.code, message: `${failure.message} The deploy stands; the next deploy or kiln gc tries again.` });
    return undefined;
  }
}

/**
 * The `retention.keep` of each other environment whose spec declares one, when the operation names
 * a spec (a bare target has none: every other environment then keeps all its releases).
 */
async function otherWindows(context: OperationContext, options: TargetOptions, target: Target): Promise<Record<string, number>> {
  if ("target" in options) return {};
  const { validated, baseDir } = await context.loaded(options);
  const windows: Record<string, number> = {};
  for (const environment of [DEFAULT_ENVIRONMENT, ...Object.keys(validated.environments)]) {
    if (environment === target.environment) continue;
    const keep = resolveTarget(validated, environment, baseDir).retention?.keep;
    if (keep !== undefined) windows[environment] = keep;
  }
  return windows;
}

/** Every target of the service (the named one too, listed or not) with its state, and the provider each uses. */
async function readService(store: StateStore, target: Target, providerName: string | undefined): Promise<ServiceView> {
  const listed = (await store.listTargets()).filter((other) => other.service === target.service && other.environment !== target.environment);
  const states = await Promise.all([target, ...listed].map((each) => store.read(each)));
  const providers = new Map<string, string>();
  for (const state of states) {
    const name = currentRelease(state)?.provider ?? state.releases.at(-1)?.provider;
    if (name) providers.set(state.target.environment, name);
  }
  if (providerName) providers.set(target.environment, providerName);
  return { states, providers };
}

/** The instances of every target of the service on `providerName`: one `instances.list` per target. */
async function instancesOn(provider: Provider, providerName: string, view: ServiceView, ctx: ProviderContext): Promise<Instance[]> {
  const targets = view.states.filter((state) => view.providers.get(state.target.environment) === providerName).map((state) => state.target);
  return (await Promise.all(targets.map((target) => provider.instances.list({ target }, ctx)))).flat();
}

/** Takes the locks of the service's other targets, in name order; releases those taken when one is held. */
async function lockOthers(context: OperationContext, target: Target): Promise<TargetLock[]> {
  const others = (await context.store.listTargets())
    .filter((other) => other.service === target.service && other.environment !== target.environment)
    .sort((a, b) => a.environment.localeCompare(b.environment));
  const taken: TargetLock[] = [];
  try {
    for (const other of others) {
      const ttl = context.options.lockTtlMs;
      taken.push(await context.store.lock(other, context.holder(), { ...(ttl ? { ttlMs: ttl } : {}), logger: context.logger }));
    }
  } catch (error) {
    await Promise.all(taken.map((lock) => lock.release().catch(() => undefined)));
    if (isKilnError(error, "TARGET_LOCKED")) {
      throw new KilnError("TARGET_LOCKED", `${error.message} A garbage collection locks every environment of ${target.service}, so that no deploy reuses an image while it goes; try again when that rollout ends.`, {
        cause: error,
        details: error.details,
      });
    }
    throw error;
  }
  return taken;
}

/**
 * The removals an earlier collection of this target announced (an `images.remove` intent in its
 * journal) but never finished (no `ok` outcome in it or in a later collection's journal): its
 * process died, or the removal failed. Each is removed again unless the plan now keeps it (a
 * release or an instance uses it again): removal is idempotent, and an image only partly removed
 * (an AMI deregistered whose snapshots remain) is no longer listed, so its journal is the only
 * record of it.
 */
function unfinishedRemovals(state: TargetState, plan: CollectionPlan): ImageRef[] {
  const keptIds = new Set(plan.kept.map((kept) => kept.image.id));
  const listed = new Map(plan.remove.map((usage) => [usage.image.id, usage.image]));
  const unfinished = new Map<string, ImageRef>();
  for (const rollout of state.rollouts.filter((each) => each.kind === "gc")) {
    for (const entry of rollout.journal ?? []) {
      if (entry.op !== "images.remove" || entry.imageId === undefined) continue;
      if (entry.phase === "outcome" && entry.result === "ok") unfinished.delete(entry.imageId);
      else if (entry.phase === "intent" && rollout.status !== "succeeded") unfinished.set(entry.imageId, listed.get(entry.imageId) ?? { id: entry.imageId, fingerprint: "", digest: "", names: [] });
    }
  }
  return [...unfinished.values()].filter((image) => !keptIds.has(image.id));
}

/** A failed removal's error, saying which image and what to do. */
function removalFailure(image: ImageRef, error: KilnError): KilnError {
  const name = image.names[0] ?? image.id;
  const next =
    error.code === "IMAGE_IN_USE"
      ? "Retire what uses it (or leave it: the next gc tries again once nothing does)."
      : "Check the provider, then run kiln gc --yes again: the journal remembers the removal and the next run finishes it.";
  return new KilnError(error.code, `Could not remove image ${name} (${image.id}): ${error.message} ${next}`, { cause: error, details: { ...error.details, imageId: image.id } });
}

/**
 * Records the end of a collection: succeeded, failed (some removals failed) or, when `cancelled`
 * is given, aborted (the caller cancelled; the next collection finishes the announced removals).
 */
async function finishRecord(store: StateStore, target: Target, lock: TargetLock, record: RolloutRecord, failed: readonly { image: ImageRef; error: KilnError }[], cancelled?: KilnError): Promise<void> {
  await store.update(
    target,
    (state) => {
      const stored = state.rollouts.find((rollout) => rollout.id === record.id);
      if (!stored) return;
      stored.status = cancelled ? "aborted" : failed.length === 0 ? "succeeded" : "failed";
      stored.finishedAt = new Date().toISOString();
      if (cancelled) stored.error = { code: cancelled.code, message: cancelled.message };
      else if (failed.length > 0) {
        const first = failed[0]!.error;
        stored.error = { code: first.code, message: `${failed.length} image(s) were not removed; the first: ${first.message}` };
      }
    },
    { token: lock.token },
  );
}
