import os from "node:os";
import path from "node:path";
import { KilnError } from "./errors.js";
import type { EventHandler, KilnEvent, KilnEventInput } from "./events.js";
import { fingerprintBuild, type FingerprintResult } from "./fingerprint/index.js";
import { silentLogger, type Logger } from "./logger.js";
import { currentRelease, formatPlan, nextReleaseNumber, planDeploy, planReplacement, type DeployPlan } from "./plan.js";
import type { ImageRef, Instance, Provider, ProviderContext } from "./provider.js";
import { applyRollout, newRolloutId, type LaunchableRelease } from "./rollout/engine.js";
import { OBJECT_SPEC_FILE, specFromObject, type LoadedSpec } from "./spec/load.js";
import { resolveTarget, type ResolvedTarget } from "./spec/resolve.js";
import type { SpecInput } from "./spec/schema.js";
import { createFileStateStore } from "./state/file-store.js";
import type { Holder, ReleaseRecord, RolloutRecord, StateStore, TargetState } from "./state/types.js";
import { DEFAULT_ENVIRONMENT, formatTarget, parseTarget, type Target } from "./target.js";

/** A provider, or a function that creates it on first use (so its SDK loads only when needed). */
export type ProviderSource = Provider | (() => Provider | Promise<Provider>);

/** Options of {@link createKiln}. */
export interface KilnOptions {
  /** The providers this Kiln may use, by name (`{ docker: createDockerProvider() }`). */
  readonly providers: Readonly<Record<string, ProviderSource>>;
  /** Where releases and rollouts are kept. @defaultValue a file store under `<dataDir>/state` */
  readonly store?: StateStore;
  /** Kiln's working folder (state, fingerprint cache). @defaultValue `.kiln` in the current directory */
  readonly dataDir?: string;
  /** Diagnostics. @defaultValue {@link silentLogger} */
  readonly logger?: Logger;
  /** Receives every event of every operation. */
  readonly onEvent?: EventHandler;
  /** Names the caller in locks and rollout records. @defaultValue "library" */
  readonly command?: string;
}

/** Names the spec (and environment) an operation works on. */
export interface SpecOptions {
  /** A spec loaded with `loadSpec`/`specFromObject`, or a spec object (then `baseDir` applies). */
  readonly spec: LoadedSpec | SpecInput;
  /** For a spec object: the folder its relative paths start from. @defaultValue process.cwd() */
  readonly baseDir?: string;
  /** The environment; @defaultValue "default" (the spec's top-level settings) */
  readonly environment?: string;
  /** Cancels the operation: a rollout stops, removes what it launched and restores the previous release. */
  readonly signal?: AbortSignal;
  /** Receives this operation's events (beside {@link KilnOptions.onEvent}). */
  readonly onEvent?: EventHandler;
}

/** Names a target directly, or through a spec. */
export type TargetOptions =
  | { readonly target: Target | string; readonly signal?: AbortSignal; readonly onEvent?: EventHandler }
  | SpecOptions;

/** Options of {@link Kiln.rollback}. */
export type RollbackOptions = TargetOptions & {
  /** The release number to roll back to. @defaultValue the newest successful release before the current one */
  readonly release?: number;
};

/** What {@link Kiln.build} did. */
export interface BuildResult {
  readonly image: ImageRef;
  readonly fingerprint: FingerprintResult;
  /** False when an image with this fingerprint already existed. */
  readonly built: boolean;
}

/** What a deploy or rollback did. */
export interface DeployResult {
  /** `deployed`: a rollout ran and succeeded; `unchanged`: nothing needed doing. */
  readonly outcome: "deployed" | "unchanged";
  readonly plan: DeployPlan | undefined;
  /** The release serving now. */
  readonly release: ReleaseRecord;
  readonly rollout: RolloutRecord | undefined;
}

/** What runs for a target, beside what state says should run. */
export interface TargetStatus {
  readonly target: Target;
  readonly release: ReleaseRecord | undefined;
  readonly instances: readonly Instance[];
  /** Differences between what runs and the release (missing, extra or foreign instances); empty when none. */
  readonly drift: readonly string[];
  /** A rollout that has not finished, if any. */
  readonly activeRollout: RolloutRecord | undefined;
}

/** The lifecycle API; one per application. Created by {@link createKiln}. */
export interface Kiln {
  /**
   * Plans a deploy without changing anything (it fingerprints the build context and asks the
   * provider what exists).
   * @throws KilnError SPEC_INVALID, ENVIRONMENT_NOT_FOUND, PROVIDER_NOT_FOUND, PROVIDER_UNAVAILABLE, BUILD_CONTEXT_INVALID
   */
  plan(options: SpecOptions): Promise<DeployPlan>;
  /**
   * Builds the target's image unless an image with the same fingerprint exists.
   * @throws KilnError BUILD_FAILED and those of {@link Kiln.plan}
   */
  build(options: SpecOptions): Promise<BuildResult>;
  /**
   * Plans, builds if needed, creates a release and rolls it out. A rollout that fails is undone
   * (the old instances keep serving) and the release is recorded as failed.
   * @throws KilnError HEALTH_CHECK_FAILED, ROLLOUT_FAILED, LAUNCH_FAILED (after undoing), TARGET_LOCKED, ABORTED and those of {@link Kiln.build}
   */
  deploy(options: SpecOptions): Promise<DeployResult>;
  /**
   * Rolls back to an earlier successful release, reusing its stored image (no rebuild). Creates a
   * new release that copies it.
   * @throws KilnError NO_ROLLBACK_TARGET, RELEASE_NOT_FOUND (unknown, failed, or its image is gone), and those of {@link Kiln.deploy}
   */
  rollback(options: RollbackOptions): Promise<DeployResult>;
  /** The current release, the live instances and any drift between them. */
  status(options: TargetOptions): Promise<TargetStatus>;
  /** Every release and rollout of the target, newest first. */
  history(options: TargetOptions): Promise<TargetState>;
  /** Closes providers and the store. */
  close(): Promise<void>;
}

/**
 * Creates the lifecycle API.
 *
 * @example
 * ```ts
 * import { createKiln } from "@kilnjs/core";
 * import { createDockerProvider } from "@kilnjs/provider-docker";
 *
 * const kiln = createKiln({ providers: { docker: createDockerProvider() }, onEvent: (e) => console.log(e.type) });
 * const result = await kiln.deploy({ spec: { service: "hello-web", instances: { count: 3 } }, baseDir: "./app" });
 * console.log(`release ${result.release.number} serves`);
 * ```
 */
export function createKiln(options: KilnOptions): Kiln {
  const logger = options.logger ?? silentLogger;
  const dataDir = path.resolve(options.dataDir ?? path.join(process.cwd(), ".kiln"));
  const store = options.store ?? createFileStateStore({ directory: path.join(dataDir, "state") });
  const providers = new Map<string, Promise<Provider>>();

  function getProvider(name: string): Promise<Provider> {
    let provider = providers.get(name);
    if (!provider) {
      const source = options.providers[name];
      if (!source) {
        const known = Object.keys(options.providers);
        throw new KilnError(
          "PROVIDER_NOT_FOUND",
          `No provider named "${name}" is configured (${known.length > 0 ? `known: ${known.join(", ")}` : "none are"}); install @kilnjs/provider-${name} and pass it to createKiln, or change the spec's provider.`,
        );
      }
      provider = Promise.resolve(typeof source === "function" ? source() : source);
      providers.set(name, provider);
    }
    return provider;
  }

  function emitterFor(target: Target, onEvent: EventHandler | undefined) {
    const targetText = formatTarget(target);
    return (input: KilnEventInput) => {
      const event = { ...input, time: new Date().toISOString(), target: targetText } as KilnEvent;
      for (const handler of [options.onEvent, onEvent]) {
        try {
          handler?.(event);
        } catch (error) {
          logger.warn("an event handler threw; the event was dropped for it", { type: event.type, error: String(error) });
        }
      }
    };
  }

  function contextFor(signal: AbortSignal | undefined, emit: (input: KilnEventInput) => void): ProviderContext {
    return { signal: signal ?? new AbortController().signal, logger, emit };
  }

  function loaded(spec: SpecOptions): LoadedSpec {
    if (isLoadedSpec(spec.spec)) return spec.spec;
    return specFromObject(spec.spec, path.resolve(spec.baseDir ?? process.cwd()));
  }

  function holder(): Holder {
    return { user: safeUser(), host: os.hostname(), pid: process.pid, command: options.command ?? "library", since: new Date().toISOString() };
  }

  /** Fingerprints, looks the image up, reads state and live instances, and plans. */
  async function prepare(spec: SpecOptions) {
    const { validated, baseDir, file } = loaded(spec);
    const resolved = resolveTarget(validated, spec.environment ?? DEFAULT_ENVIRONMENT, baseDir);
    const emit = emitterFor(resolved.target, spec.onEvent);
    const ctx = contextFor(spec.signal, emit);
    const provider = await getProvider(resolved.provider);
    await provider.ping(ctx);
    const fingerprint = await fingerprintBuild({
      contextDir: resolved.build.contextDir,
      dockerfilePath: resolved.build.dockerfilePath,
      args: resolved.build.args,
      ...(resolved.build.stage ? { stage: resolved.build.stage } : {}),
      cacheFile: path.join(dataDir, "cache", `fingerprint-${formatTarget(resolved.target)}.json`),
      // Kiln's own files never enter an image: its state changes on every deploy, and a spec edit
      // (a new env value, another count) must not force a rebuild.
      exclude: file === OBJECT_SPEC_FILE ? [dataDir] : [dataDir, file],
      logger,
      ...(spec.signal ? { signal: spec.signal } : {}),
    });
    emit({
      type: "image.fingerprinted",
      fingerprint: fingerprint.fingerprint,
      fileCount: fingerprint.fileCount,
      totalBytes: fingerprint.totalBytes,
      bytesHashed: fingerprint.bytesHashed,
      durationMs: fingerprint.durationMs,
    });
    const [existingImage, state, instances] = await Promise.all([
      provider.images.find({ service: resolved.target.service, fingerprint: fingerprint.fingerprint }, ctx),
      store.read(resolved.target),
      provider.instances.list({ target: resolved.target }, ctx),
    ]);
    const plan = planDeploy({ resolved, fingerprint: fingerprint.fingerprint, existingImage, state, instances });
    return { resolved, emit, ctx, provider, fingerprint, plan, state };
  }

  async function buildImage(resolved: ResolvedTarget, fingerprint: FingerprintResult, provider: Provider, ctx: ProviderContext, emit: (e: KilnEventInput) => void): Promise<ImageRef> {
    emit({ type: "image.build.started", fingerprint: fingerprint.fingerprint });
    const startedAt = Date.now();
    const image = await provider.images.build(
      {
        target: resolved.target,
        fingerprint: fingerprint.fingerprint,
        dockerfile: {
          kind: "dockerfile",
          contextDir: resolved.build.contextDir,
          dockerfilePath: resolved.build.dockerfilePath,
          files: fingerprint.files,
          args: resolved.build.args,
          ...(resolved.build.stage ? { stage: resolved.build.stage } : {}),
        },
      },
      ctx,
    );
    emit({ type: "image.built", fingerprint: fingerprint.fingerprint, imageId: image.id, durationMs: Date.now() - startedAt });
    return image;
  }

  /**
   * Runs one rollout to `release` under the target's lock and records its outcome.
   * @throws the rollout's error after it was undone and recorded
   */
  async function runRollout(args: {
    target: Target;
    provider: Provider;
    release: ReleaseRecord;
    newRelease: boolean;
    previous: ReleaseRecord | undefined;
    kind: "deploy" | "rollback";
    keep: readonly Instance[];
    retire: readonly Instance[];
    signal: AbortSignal | undefined;
    emit: (event: KilnEventInput) => void;
    plan: DeployPlan | undefined;
  }): Promise<DeployResult> {
    const { target, release, emit } = args;
    const rolloutId = newRolloutId();
    const startedAt = Date.now();
    const rollout: RolloutRecord = {
      id: rolloutId,
      target,
      kind: args.kind,
      fromRelease: args.previous?.number,
      toRelease: release.number,
      startedAt: new Date(startedAt).toISOString(),
      holder: holder(),
      status: "running",
    };
    await store.update(target, (state) => {
      if (args.newRelease) state.releases.push(release);
      state.rollouts.push(rollout);
    });
    if (args.newRelease) {
      emit({ type: "release.created", release: release.number, fingerprint: release.fingerprint, imageId: release.image.id, ...(release.rollbackOf ? { rollbackOf: release.rollbackOf } : {}) });
    }
    emit({
      type: "rollout.started",
      rolloutId,
      kind: args.kind,
      fromRelease: args.previous?.number,
      toRelease: release.number,
      count: release.count,
      maxSurge: release.rollout.maxSurge,
      maxUnavailable: release.rollout.maxUnavailable,
    });
    const failure = await applyRollout({
      rolloutId,
      kind: args.kind,
      target,
      provider: args.provider,
      release: launchable(release),
      previous: args.previous ? launchable(args.previous) : undefined,
      keep: args.keep,
      retire: args.retire,
      signal: args.signal ?? new AbortController().signal,
      logger,
      emit,
    });
    const finishedAt = new Date().toISOString();
    if (!failure) {
      const final = await store.update(target, (state) => {
        const record = state.releases.find((r) => r.number === release.number)!;
        record.status = "succeeded";
        record.finishedAt ??= finishedAt;
        const stored = state.rollouts.find((r) => r.id === rolloutId)!;
        stored.status = "succeeded";
        stored.finishedAt = finishedAt;
        state.currentRelease = release.number;
        return { record: structuredClone(record), stored: structuredClone(stored) };
      });
      emit({ type: "rollout.succeeded", rolloutId, release: release.number, durationMs: Date.now() - startedAt });
      return { outcome: "deployed", plan: args.plan, release: final.record, rollout: final.stored };
    }
    const recorded = { code: failure.error.code, message: failure.error.message };
    await store.update(target, (state) => {
      if (args.newRelease) {
        const record = state.releases.find((r) => r.number === release.number)!;
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
      state.currentRelease = args.previous?.number;
    });
    emit({ type: "rollout.failed", rolloutId, release: release.number, code: failure.error.code, message: failure.error.message, durationMs: Date.now() - startedAt });
    emit({
      type: "rollout.rolled-back",
      rolloutId,
      release: release.number,
      restoredRelease: failure.restoredRelease,
      reason: failure.restoredRelease === undefined ? "the failed release's instances were removed; no earlier release to restore" : `release ${failure.restoredRelease} keeps serving`,
    });
    failure.error.details.rolloutId = rolloutId;
    failure.error.details.release = release.number;
    failure.error.details.restoredRelease = failure.restoredRelease;
    throw failure.error;
  }

  async function withLock<T>(target: Target, run: () => Promise<T>): Promise<T> {
    const lock = await store.lock(target, holder());
    try {
      return await run();
    } finally {
      await lock.release();
    }
  }

  async function targetOf(opts: TargetOptions): Promise<{ target: Target; providerName: string | undefined }> {
    if ("target" in opts) {
      const target = typeof opts.target === "string" ? parseTarget(opts.target) : opts.target;
      const state = await store.read(target);
      return { target, providerName: currentRelease(state)?.provider ?? state.releases.at(-1)?.provider };
    }
    const { validated, baseDir } = loaded(opts);
    const resolved = resolveTarget(validated, opts.environment ?? DEFAULT_ENVIRONMENT, baseDir);
    return { target: resolved.target, providerName: resolved.provider };
  }

  const kiln: Kiln = {
    async plan(spec) {
      return (await prepare(spec)).plan;
    },

    async build(spec) {
      const { resolved, fingerprint, plan, provider, ctx, emit } = await prepare(spec);
      if (plan.image.action === "reuse") {
        emit({ type: "image.reused", fingerprint: fingerprint.fingerprint, imageId: plan.image.image.id });
        return { image: plan.image.image, fingerprint, built: false };
      }
      return { image: await buildImage(resolved, fingerprint, provider, ctx, emit), fingerprint, built: true };
    },

    async deploy(options) {
      // Validate once, before taking the lock: a bad spec never waits for or holds a lock.
      const spec = { ...options, spec: loaded(options) };
      const { target } = await targetOf(spec);
      return withLock(target, async () => {
        const { resolved, fingerprint, plan, provider, ctx, emit, state } = await prepare(spec);
        emit({ type: "plan.ready", summary: formatPlan(plan), noop: plan.noop });
        const current = currentRelease(state);
        if (plan.noop && current) {
          emit({ type: "rollout.skipped", reason: plan.rollout.action === "none" ? plan.rollout.reason : "up to date", release: current.number });
          return { outcome: "unchanged", plan, release: current, rollout: undefined };
        }
        let image: ImageRef;
        if (plan.image.action === "reuse") {
          image = plan.image.image;
          emit({ type: "image.reused", fingerprint: fingerprint.fingerprint, imageId: image.id });
        } else {
          image = await buildImage(resolved, fingerprint, provider, ctx, emit);
        }
        const rollout = plan.rollout;
        if (rollout.action === "none") {
          // Up to date but the image had to be rebuilt (it was removed): nothing runs from it yet.
          return { outcome: "unchanged", plan, release: current!, rollout: undefined };
        }
        const release: ReleaseRecord = rollout.newRelease
          ? {
              number: rollout.toRelease,
              target: resolved.target,
              provider: resolved.provider,
              createdAt: new Date().toISOString(),
              fingerprint: fingerprint.fingerprint,
              image,
              count: resolved.count,
              instance: resolved.instance,
              health: resolved.health,
              rollout: resolved.rollout,
              configHash: plan.configHash,
              status: "pending",
            }
          : current!;
        return runRollout({
          target: resolved.target,
          provider,
          release,
          newRelease: rollout.newRelease,
          previous: current,
          kind: "deploy",
          keep: rollout.keep,
          retire: rollout.retire,
          signal: spec.signal,
          emit,
          plan,
        });
      });
    },

    async rollback(opts) {
      const { target } = await targetOf(opts);
      return withLock(target, async () => {
        const state = await store.read(target);
        const current = currentRelease(state);
        const chosen = chooseRollbackRelease(state, opts.release);
        const emit = emitterFor(target, opts.onEvent);
        const ctx = contextFor(opts.signal, emit);
        const provider = await getProvider(chosen.provider);
        await provider.ping(ctx);
        const image = await provider.images.find({ service: target.service, fingerprint: chosen.fingerprint }, ctx);
        if (!image) {
          throw new KilnError(
            "RELEASE_NOT_FOUND",
            `The image of release ${chosen.number} (${chosen.fingerprint.slice(0, 19)}) no longer exists, so it cannot be rolled back to without a rebuild; deploy that version's spec instead.`,
          );
        }
        const instances = await provider.instances.list({ target }, ctx);
        const number = nextReleaseNumber(state);
        const release: ReleaseRecord = {
          ...structuredClone(chosen),
          number,
          createdAt: new Date().toISOString(),
          image,
          rollbackOf: chosen.number,
          status: "pending",
        };
        delete release.finishedAt;
        delete release.error;
        const replacement = planReplacement({
          instances,
          fromRelease: current?.number,
          toRelease: number,
          newRelease: true,
          imageId: image.id,
          count: release.count,
          maxSurge: release.rollout.maxSurge,
          maxUnavailable: release.rollout.maxUnavailable,
        });
        if (replacement.action === "none") throw new KilnError("INTERNAL", "A rollback planned no replacement.");
        return runRollout({ target, provider, release, newRelease: true, previous: current, kind: "rollback", keep: replacement.keep, retire: replacement.retire, signal: opts.signal, emit, plan: undefined });
      });
    },

    async status(opts) {
      const { target, providerName } = await targetOf(opts);
      const state = await store.read(target);
      const release = currentRelease(state);
      const activeRollout = state.rollouts.findLast((r) => r.status === "running");
      if (!providerName) return { target, release, instances: [], drift: [], activeRollout };
      const emit = emitterFor(target, opts.onEvent);
      const ctx = contextFor(opts.signal, emit);
      const provider = await getProvider(providerName);
      await provider.ping(ctx);
      const instances = await provider.instances.list({ target }, ctx);
      return { target, release, instances, drift: describeDrift(release, instances), activeRollout };
    },

    async history(opts) {
      const { target } = await targetOf(opts);
      const state = await store.read(target);
      return { ...state, releases: [...state.releases].reverse(), rollouts: [...state.rollouts].reverse() };
    },

    async close() {
      const opened = await Promise.allSettled(providers.values());
      await Promise.all(opened.flatMap((result) => (result.status === "fulfilled" && result.value.close ? [result.value.close()] : [])));
      await store.close?.();
    },
  };
  return kiln;
}

/**
 * The release a rollback goes to: the one named (it must have succeeded), or the newest
 * successful release before the current one whose configuration differs from it. Failed releases
 * are never rollback targets.
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

function describeDrift(release: ReleaseRecord | undefined, instances: readonly Instance[]): string[] {
  if (!release) return instances.length > 0 ? [`${instances.length} instance(s) run, but no release succeeded yet`] : [];
  const drift: string[] = [];
  const ofRelease = instances.filter((i) => i.release === release.number && i.state === "running");
  if (ofRelease.length < release.count) drift.push(`${release.count - ofRelease.length} of ${release.count} instance(s) of release ${release.number} are missing or not running`);
  if (ofRelease.length > release.count) drift.push(`${ofRelease.length - release.count} instance(s) of release ${release.number} more than its count`);
  const foreign = instances.filter((i) => i.release !== release.number);
  if (foreign.length > 0) drift.push(`${foreign.length} instance(s) belong to another release: ${foreign.map((i) => i.name).join(", ")}`);
  const wrongImage = ofRelease.filter((i) => i.imageId !== release.image.id);
  if (wrongImage.length > 0) drift.push(`${wrongImage.length} instance(s) run another image than release ${release.number}'s`);
  return drift;
}

function launchable(release: ReleaseRecord): LaunchableRelease {
  return { number: release.number, image: release.image, count: release.count, instance: release.instance, health: release.health, rollout: release.rollout };
}

function isLoadedSpec(spec: LoadedSpec | SpecInput): spec is LoadedSpec {
  return typeof spec === "object" && spec !== null && "validated" in spec && "baseDir" in spec;
}

function safeUser(): string {
  try {
    return os.userInfo().username;
  } catch {
    return "unknown";
  }
}

