import os from "node:os";
import path from "node:path";
import { KilnError, isKilnError, toKilnError } from "./errors.js";
import type { EventHandler, KilnEvent, KilnEventInput, RecoveredReleaseOutcome, RolloutKind } from "./events.js";
import { fingerprintBuild, type FingerprintResult } from "./fingerprint/fingerprint.js";
import { fingerprintMachine, type MachineFingerprintResult } from "./fingerprint/machine.js";
import { journaled } from "./journal/journaled.js";
import { markInterruptedRollouts, type InterruptedRollout } from "./journal/recover.js";
import { silentLogger, type Logger } from "./logger.js";
import { currentRelease, formatPlan, planDeploy, planRecovery, planRollback, recoveryCandidates, resumeDeployPlan, type DeployPlan, type ReplacementPlan } from "./plan/index.js";
import type { ImageRecipe, ImageRef, Instance, Provider, ProviderContext } from "./provider/contract.js";
import { applyRollout, checkAdoptable, describe, newRolloutId, type LaunchableRelease } from "./rollout/engine.js";
import { DEFAULT_PROVIDER_SPEC, sectionValues, type ProviderSpec } from "./provider/spec.js";
import { OBJECT_SPEC_FILE, checkSpecWith, specFromObject, type LoadedSpec } from "./spec/load.js";
import { providersOf } from "./spec/validate.js";
import { checkSpec } from "./spec/check.js";
import { resolveTarget, type ResolvedTarget } from "./spec/resolve.js";
import type { SpecInput } from "./spec/schema.js";
import { createFileStateStore } from "./state/file-store.js";
import { formatHolder } from "./state/lease.js";
import type { Holder, LeaseStatus, ReleaseRecord, RolloutRecord, StateStore, TargetLock, TargetState } from "./state/types.js";
import { DEFAULT_ENVIRONMENT, formatTarget, parseTarget, type Target } from "./target.js";
import { waitFor } from "./wait.js";

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
  /**
   * How long a rollout lock's lease lasts without renewal (milliseconds); it is renewed every
   * third of this while the rollout runs. A holder that dies on this host is detected at once by
   * its process id; one on another host when its lease expires. @defaultValue the store's (30000)
   */
  readonly lockTtlMs?: number;
}

/** Options of every operation that takes the target's lock. */
export interface LockWaitOptions {
  /**
   * When another process holds the lock, wait up to this long (milliseconds) for it instead of
   * failing at once with `TARGET_LOCKED`. @defaultValue 0 (do not wait)
   */
  readonly waitForLockMs?: number;
}

/** Names the spec (and environment) an operation works on. */
export interface SpecOptions extends LockWaitOptions {
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
  | ({ readonly target: Target | string; readonly signal?: AbortSignal; readonly onEvent?: EventHandler } & LockWaitOptions)
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

/** What {@link Kiln.resumeRollout} or {@link Kiln.abortRollout} did. */
export interface RecoveryResult {
  /** The interrupted rollouts found (their process died) and marked `aborted`; empty when none. */
  readonly interrupted: readonly RolloutRecord[];
  /**
   * The rollout run afterwards (resume: to the interrupted release; abort: repairing the current
   * release), or `unchanged`; undefined when there was nothing to resume, or no release to restore.
   */
  readonly result: DeployResult | undefined;
}

/** What runs for a target, beside what state says should run. */
export interface TargetStatus {
  readonly target: Target;
  readonly release: ReleaseRecord | undefined;
  readonly instances: readonly Instance[];
  /** Differences between what runs and the release (missing, extra or foreign instances); empty when none. */
  readonly drift: readonly string[];
  /** A rollout that has not finished, if any (when {@link TargetStatus.lock} is absent or stale, its process died). */
  readonly activeRollout: RolloutRecord | undefined;
  /** The rollout lock's lease, if anyone holds it. */
  readonly lock: LeaseStatus | undefined;
}

/** Options of {@link Kiln.check}. */
export interface CheckOptions {
  /** A spec loaded with `loadSpec`/`specFromYaml`/`specFromObject`, or a spec object (then `baseDir` applies). */
  readonly spec: LoadedSpec | SpecInput;
  /** For a spec object: the folder its relative paths start from. @defaultValue process.cwd() */
  readonly baseDir?: string;
  /** Also check that the files the spec references exist. @defaultValue true */
  readonly references?: boolean;
  /** Also require the files the spec references to lie in this folder (a server's spec root). */
  readonly root?: string;
}

/** The lifecycle API; one per application. Created by {@link createKiln}. */
export interface Kiln {
  /**
   * Checks a spec as completely as can be done without touching a backend (`checkSpec`): with the
   * sections and rules of every provider it names (each loaded, not created), the files it
   * references, and `root`. Changes nothing.
   * @returns the spec checked with every provider it names
   * @throws KilnError SPEC_INVALID listing every issue (a provider this Kiln does not have is one)
   */
  check(options: CheckOptions): Promise<LoadedSpec>;
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
   * Takes the target's lock, recovers any rollout whose process died (see
   * {@link Kiln.resumeRollout}), plans, builds if needed, creates a release and rolls it out. A
   * rollout that fails is undone (the old instances keep serving) and the release is recorded as
   * failed. When an interrupted rollout's release is what the spec asks for, its number is reused
   * and its healthy instances adopted.
   * @throws KilnError HEALTH_CHECK_FAILED, ROLLOUT_FAILED, LAUNCH_FAILED (after undoing), TARGET_LOCKED, LOCK_LOST, ABORTED and those of {@link Kiln.build}
   */
  deploy(options: SpecOptions): Promise<DeployResult>;
  /**
   * Rolls back to an earlier successful release, reusing its stored image (no rebuild). Creates a
   * new release that copies it.
   * @throws KilnError NO_ROLLBACK_TARGET, RELEASE_NOT_FOUND (unknown, failed, or its image is gone), and those of {@link Kiln.deploy}
   */
  rollback(options: RollbackOptions): Promise<DeployResult>;
  /**
   * Takes the lock and finishes a rollout whose process died: marks it `aborted`
   * (`ROLLOUT_INTERRUPTED`), then rolls out its release from the release's own record (no spec, no
   * build), adopting its instances that pass the health check and retiring everything else once
   * the new instances are healthy. Nothing to resume is not an error (`result` is undefined).
   * @throws KilnError RELEASE_NOT_FOUND (the release's image is gone) and those of {@link Kiln.deploy}
   */
  resumeRollout(options: TargetOptions): Promise<RecoveryResult>;
  /**
   * Takes the lock and rolls back on purpose: marks an interrupted rollout `aborted` and its
   * release `failed`, then repairs the current release (keeps its instances, relaunches missing
   * ones, retires every other instance). With no current release, removes the target's instances.
   * @throws KilnError those of {@link Kiln.deploy}
   */
  abortRollout(options: TargetOptions): Promise<RecoveryResult>;
  /** The current release, the live instances, any drift between them, and the lock. */
  status(options: TargetOptions): Promise<TargetStatus>;
  /** Every release and rollout of the target, newest first. */
  history(options: TargetOptions): Promise<TargetState>;
  /** The target's lock: holder, token, expiry and whether it is stale; undefined when free. */
  lockStatus(options: TargetOptions): Promise<LeaseStatus | undefined>;
  /**
   * Clears the target's lock whoever holds it, and returns the lease it cleared. The former
   * holder's next write fails with `LOCK_LOST`; a rollout it left running is recovered by the next
   * deploy, `resumeRollout` or `abortRollout`.
   */
  forceReleaseLock(options: TargetOptions): Promise<LeaseStatus | undefined>;
  /** Closes providers and the store. */
  close(): Promise<void>;
}

type Emit = (event: KilnEventInput) => void;

/** What an operation holds while it has the target's lock. */
interface Session {
  readonly target: Target;
  readonly lock: TargetLock;
  /** The caller's signal, also aborted when the lease is lost. */
  readonly signal: AbortSignal;
  readonly emit: Emit;
}

/**
 * Kiln's own files, never part of a fingerprint or a build: the data folder, and the spec file; for
 * a spec given as an object, the `kiln.yaml`/`kiln.yml` in its base folder (the same service
 * deployed from its file and from an object, as a server does, must fingerprint the same).
 */
function specExclusions(file: string, baseDir: string, dataDir: string): string[] {
  return file === OBJECT_SPEC_FILE ? [dataDir, path.join(baseDir, "kiln.yaml"), path.join(baseDir, "kiln.yml")] : [dataDir, file];
}

/** How long the cleanup of a failed resume may take (milliseconds). */
const CLEANUP_TIMEOUT_MS = 120_000;

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

  function emitterFor(target: Target, onEvent: EventHandler | undefined): Emit {
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

  function contextFor(signal: AbortSignal | undefined, emit: Emit): ProviderContext {
    return { signal: signal ?? new AbortController().signal, logger, emit };
  }

  /**
   * The spec, validated with the sections and rules of every configured provider it names (a
   * provider it names that this Kiln does not have is checked when a target uses it, which fails
   * with PROVIDER_NOT_FOUND).
   */
  async function loaded(spec: SpecOptions): Promise<LoadedSpec> {
    const given = isLoadedSpec(spec.spec) ? spec.spec : specFromObject(spec.spec, path.resolve(spec.baseDir ?? process.cwd()));
    const specs: Record<string, ProviderSpec> = {};
    for (const name of providersOf(given.validated)) {
      if (options.providers[name] === undefined) continue;
      specs[name] = (await getProvider(name)).spec ?? DEFAULT_PROVIDER_SPEC;
    }
    return checkSpecWith(given, specs);
  }

  function holder(): Holder {
    return { user: safeUser(), host: os.hostname(), pid: process.pid, command: options.command ?? "library", since: new Date().toISOString() };
  }

  /** Fingerprints, looks the image up, reads state and live instances, and plans. */
  async function prepare(spec: SpecOptions) {
    const { validated, baseDir, file } = await loaded(spec);
    const resolved = resolveTarget(validated, spec.environment ?? DEFAULT_ENVIRONMENT, baseDir);
    const emit = emitterFor(resolved.target, spec.onEvent);
    const ctx = contextFor(spec.signal, emit);
    const provider = await getProvider(resolved.provider);
    if (resolved.traffic.proxy && !provider.traffic) {
      throw new KilnError(
        "CAPABILITY_MISSING",
        `The ${provider.name} provider cannot run a front proxy (it has no traffic capability), so traffic.proxy cannot be used with it; remove traffic.proxy to reach instances at their own addresses.`,
      );
    }
    if (resolved.traffic.loadBalancer !== undefined && !provider.traffic) {
      throw new KilnError(
        "CAPABILITY_MISSING",
        `The ${provider.name} provider cannot register instances with a load balancer (it has no traffic capability); remove traffic.loadBalancer.`,
      );
    }
    const providerSpec = provider.spec ?? DEFAULT_PROVIDER_SPEC;
    const format = providerSpec.imageFormat;
    if (format === "machine" && !resolved.machine) {
      throw new KilnError(
        "CAPABILITY_MISSING",
        `The ${provider.name} provider bakes machine images and the spec has no image.machine; add image.machine (provision steps and base.${provider.name}), see docs/reference/kiln-yaml.md.`,
      );
    }
    await provider.ping(ctx);
    const fingerprint = format === "machine" ? await fingerprintMachine({
      steps: resolved.machine!.provision,
      provider: resolved.provider,
      ...(providerSpec.fingerprint ? { contribution: providerSpec.fingerprint(resolved, sectionValues(resolved)) } : {}),
      exclude: specExclusions(file, baseDir, dataDir),
      ...(spec.signal ? { signal: spec.signal } : {}),
    }) : await fingerprintBuild({
      contextDir: resolved.build.contextDir,
      dockerfilePath: resolved.build.dockerfilePath,
      args: resolved.build.args,
      ...(resolved.build.stage ? { stage: resolved.build.stage } : {}),
      cacheFile: path.join(dataDir, "cache", `fingerprint-${formatTarget(resolved.target)}.json`),
      // Kiln's own files never enter an image: its state changes on every deploy, and a spec edit
      // (a new env value, another count) must not force a rebuild.
      exclude: specExclusions(file, baseDir, dataDir),
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
    const plan = planDeploy({
      resolved,
      fingerprint: fingerprint.fingerprint,
      existingImage,
      state,
      instances,
      ...(provider.limits ? { limits: provider.limits } : {}),
      ...(provider.health?.description ? { providerHealth: provider.health.description } : {}),
      ...(providerSpec.planLines ? { providerLines: providerSpec.planLines(resolved, sectionValues(resolved)) } : {}),
    });
    return { resolved, emit, ctx, provider, fingerprint, plan, state, instances };
  }

  async function buildImage(
    resolved: ResolvedTarget,
    fingerprint: FingerprintResult | MachineFingerprintResult,
    provider: Provider,
    ctx: ProviderContext,
    emit: Emit,
    rollout?: { readonly id: string; readonly release: number },
  ): Promise<ImageRef> {
    emit({ type: "image.build.started", fingerprint: fingerprint.fingerprint });
    const startedAt = Date.now();
    const recipe: ImageRecipe =
      "steps" in fingerprint
        ? {
            target: resolved.target,
            fingerprint: fingerprint.fingerprint,
            machine: { kind: "machine", steps: fingerprint.steps, base: resolved.machine!.base, builder: resolved.machine!.builder, timeoutMs: resolved.machine!.timeoutMs },
            ...(rollout ? { rolloutId: rollout.id, release: rollout.release } : {}),
          }
        : {
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
            ...(rollout ? { rolloutId: rollout.id, release: rollout.release } : {}),
          };
    const image = await provider.images.build(recipe, ctx);
    emit({ type: "image.built", fingerprint: fingerprint.fingerprint, imageId: image.id, durationMs: Date.now() - startedAt });
    return image;
  }

  /**
   * Takes the target's lock, waiting up to `waitForLockMs` for a live holder to let go.
   * @throws KilnError TARGET_LOCKED (at once, or after the wait), ABORTED
   */
  async function acquireLock(target: Target, opts: LockWaitOptions & { signal?: AbortSignal | undefined }, emit: Emit): Promise<TargetLock> {
    const attempt = () => store.lock(target, holder(), { ...(options.lockTtlMs ? { ttlMs: options.lockTtlMs } : {}), logger });
    const waitMs = opts.waitForLockMs ?? 0;
    if (waitMs <= 0) return attempt();
    let last: KilnError | undefined;
    try {
      return await waitFor(
        async () => {
          try {
            return { done: true, value: await attempt() };
          } catch (error) {
            if (!isKilnError(error, "TARGET_LOCKED")) throw error;
            if (!last) {
              const held = error.details.holder as Holder | undefined;
              emit({ type: "lock.waiting", holder: held ? formatHolder(held) : "another process", expiresAt: typeof error.details.expiresAt === "string" ? error.details.expiresAt : "", timeoutMs: waitMs });
            }
            last = error;
            return { done: false, reason: error.message };
          }
        },
        { timeoutMs: waitMs, minDelayMs: 200, maxDelayMs: 2_000, description: `the lock of ${formatTarget(target)}`, ...(opts.signal ? { signal: opts.signal } : {}) },
      );
    } catch (error) {
      if (isKilnError(error, "TIMEOUT") && last) {
        throw new KilnError("TARGET_LOCKED", `Waited ${waitMs} ms for the lock, in vain: ${last.message}`, { cause: error, details: last.details });
      }
      throw error;
    }
  }

  /** Runs `run` holding the target's lock; the lock is released whatever happens. */
  async function withLock<T>(target: Target, opts: LockWaitOptions & { signal?: AbortSignal | undefined; onEvent?: EventHandler | undefined }, run: (session: Session) => Promise<T>): Promise<T> {
    const emit = emitterFor(target, opts.onEvent);
    const lock = await acquireLock(target, opts, emit);
    if (lock.tookOver) {
      emit({
        type: "lock.taken-over",
        previousHolder: formatHolder(lock.tookOver.holder),
        previousToken: lock.tookOver.token,
        reason: lock.tookOver.staleReason ?? "it was stale",
        token: lock.token,
      });
    }
    const signal = opts.signal ? AbortSignal.any([opts.signal, lock.signal]) : lock.signal;
    try {
      return await run({ target, lock, signal, emit });
    } finally {
      await lock.release().catch((error: unknown) => {
        logger.error("could not release the rollout lock; it expires by itself", { target: formatTarget(target), token: lock.token, error: String(error) });
      });
    }
  }

  /** Marks every rollout whose process died `aborted` and lists what it left (recovery, first half). */
  function markInterrupted(session: Session, providerName: string | undefined): Promise<InterruptedRollout[]> {
    const ctx = contextFor(session.signal, session.emit);
    return markInterruptedRollouts({
      store,
      target: session.target,
      token: session.lock.token,
      listInstances: (rollout) => {
        const name = rollout.provider ?? providerName;
        if (!name) return undefined;
        return getProvider(name).then((provider) => provider.instances.list({ target: session.target, rolloutId: rollout.id }, ctx));
      },
    });
  }

  /**
   * Recovery, second half: decides what each interrupted rollout's release becomes (the one
   * `resumed` keeps pending; any other pending one is recorded failed) and reports it.
   */
  async function settleInterrupted(session: Session, interrupted: readonly InterruptedRollout[], resumed: number | undefined, next: { keep: readonly Instance[]; retire: readonly Instance[] } | undefined, why: string): Promise<void> {
    if (interrupted.length === 0) return;
    const outcomes = await store.update(
      session.target,
      (state) =>
        interrupted.map(({ rollout }): RecoveredReleaseOutcome => {
          const release = state.releases.find((r) => r.number === rollout.toRelease);
          if (!release) return "not-created";
          if (release.status !== "pending") return "unchanged";
          if (release.number === resumed) return "resumed";
          release.status = "failed";
          release.finishedAt = new Date().toISOString();
          release.error = { code: "ROLLOUT_INTERRUPTED", message: `Its rollout ${rollout.id} was interrupted (its process died) and ${why}.` };
          return "failed";
        }),
      { token: session.lock.token },
    );
    const keepIds = new Set(next?.keep.map((instance) => instance.id));
    const retireIds = new Set(next?.retire.map((instance) => instance.id));
    interrupted.forEach(({ rollout, instances }, index) => {
      session.emit({
        type: "rollout.recovered",
        rolloutId: rollout.id,
        release: rollout.toRelease,
        holder: formatHolder(rollout.holder),
        releaseOutcome: outcomes[index]!,
        found: instances.map(describe),
        adopted: instances.filter((instance) => keepIds.has(instance.id)).map(describe),
        retiring: instances.filter((instance) => retireIds.has(instance.id)).map(describe),
      });
    });
  }

  /**
   * Plans the rollout that resumes an interrupted release: its running instances with its image
   * are kept when they pass the release's health check (otherwise they are retired with the rest
   * and fresh ones launched). The check runs here, before planning, with the rollout engine's
   * gate; the plan itself ({@link planRecovery}) is pure and takes the verdict as input.
   */
  async function planResume(session: Session, provider: Provider, release: ReleaseRecord, current: ReleaseRecord | undefined, interruptedId: string): Promise<ReplacementPlan> {
    const ctx = contextFor(session.signal, session.emit);
    const instances = await provider.instances.list({ target: session.target }, ctx);
    const gate = { provider, target: session.target, rolloutId: interruptedId, signal: session.signal, emit: session.emit, logger };
    const unhealthy = await checkAdoptable(gate, release, recoveryCandidates(release, instances), ctx);
    // Never "none": the release is not the current one, so the rollout must run to record its success.
    return planRecovery({ current, instances, release, unhealthy, ...(provider.limits ? { limits: provider.limits } : {}) }) as ReplacementPlan;
  }

  /** Writes a new rollout record (status running) under the session's lease. */
  async function beginRollout(session: Session, args: { provider: string; kind: RolloutKind; fromRelease: number | undefined; toRelease: number }): Promise<RolloutRecord> {
    const record: RolloutRecord = {
      id: newRolloutId(),
      target: session.target,
      kind: args.kind,
      fromRelease: args.fromRelease,
      toRelease: args.toRelease,
      startedAt: new Date().toISOString(),
      holder: session.lock.holder,
      provider: args.provider,
      token: session.lock.token,
      status: "running",
      journal: [],
    };
    await store.update(session.target, (state) => void state.rollouts.push(record), { token: session.lock.token });
    return structuredClone(record);
  }

  /**
   * Records a rollout that failed before its release was rolled out (a build failed or was
   * cancelled) and returns the error to throw: the failure, or `LOCK_LOST` when the lease is gone.
   */
  async function failRollout(session: Session, rolloutId: string, error: unknown): Promise<unknown> {
    const failed = toKilnError(error, "ROLLOUT_FAILED", "The rollout failed");
    try {
      await store.update(
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
      logger.error("could not record the failed rollout", { rolloutId, error: String(stateError) });
    }
    return error;
  }

  /**
   * Rolls `release` out under the session's lock, journaling every provider call on the rollout's
   * record, and records the outcome.
   * @throws the rollout's error after it was undone and recorded
   */
  async function runRollout(session: Session, args: {
    rollout: RolloutRecord;
    /** The provider wrapped by {@link journaled} for this rollout. */
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
  }): Promise<DeployResult> {
    const { target, emit } = session;
    const { release, rollout } = args;
    const rolloutId = rollout.id;
    const token = session.lock.token;
    const startedAt = Date.parse(rollout.startedAt);
    if (args.createRelease) {
      await store.update(target, (state) => void state.releases.push(release), { token });
      emit({ type: "release.created", release: release.number, fingerprint: release.fingerprint, imageId: release.image.id, ...(release.rollbackOf ? { rollbackOf: release.rollbackOf } : {}) });
    }
    emit({
      type: "rollout.started",
      rolloutId,
      kind: rollout.kind,
      strategy: release.rollout.strategy,
      fromRelease: args.previous?.number,
      toRelease: release.number,
      count: release.count,
      maxSurge: release.rollout.maxSurge,
      maxUnavailable: release.rollout.maxUnavailable,
    });
    const failure = await applyRollout({
      rolloutId,
      kind: rollout.kind,
      target,
      provider: args.provider,
      release: launchable(release),
      previous: args.previous ? launchable(args.previous) : undefined,
      plan: args.replacement,
      signal: session.signal,
      logger,
      emit,
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
      return { outcome: "deployed", plan: args.plan, release: final.record, rollout: final.stored };
    }
    if (failure.undone && args.adopted.length > 0 && release.number !== args.previous?.number) {
      await removeAdopted(session, args.provider, release, args.adopted, rolloutId);
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
        state.currentRelease = args.previous?.number;
      },
      { token },
    );
    emit({ type: "rollout.failed", rolloutId, release: release.number, code: failure.error.code, message: failure.error.message, durationMs: Date.now() - startedAt });
    emit({
      type: "rollout.rolled-back",
      rolloutId,
      release: release.number,
      restoredRelease: failure.restoredRelease,
      reason: !failure.undone
        ? `autoRollback is off: release ${release.number}'s instances stay for inspection; run kiln rollback or kiln deploy`
        : failure.restoredRelease === undefined
          ? "the failed release's instances were removed; no earlier release to restore"
          : `release ${failure.restoredRelease} keeps serving`,
    });
    failure.error.details.rolloutId = rolloutId;
    failure.error.details.release = release.number;
    failure.error.details.restoredRelease = failure.restoredRelease;
    throw failure.error;
  }

  /** After a resumed rollout failed and was undone: removes the instances it had adopted. */
  async function removeAdopted(session: Session, provider: Provider, release: ReleaseRecord, adopted: readonly Instance[], rolloutId: string): Promise<void> {
    const ctx = contextFor(AbortSignal.timeout(CLEANUP_TIMEOUT_MS), session.emit);
    try {
      const ids = new Set(adopted.map((instance) => instance.id));
      const left = (await provider.instances.list({ target: session.target, release: release.number }, ctx)).filter((instance) => ids.has(instance.id));
      if (left.length === 0) return;
      for (const instance of left) session.emit({ type: "instance.retiring", rolloutId, instance: describe(instance) });
      await provider.instances.terminate(left, { gracePeriodMs: release.instance.stopGracePeriodMs }, ctx);
      for (const instance of left) session.emit({ type: "instance.retired", rolloutId, instance: describe(instance) });
    } catch (error) {
      logger.error("could not remove the adopted instances of the failed release", { rolloutId, error: String(error) });
    }
  }

  async function targetOf(opts: TargetOptions): Promise<{ target: Target; providerName: string | undefined }> {
    if ("target" in opts) {
      const target = typeof opts.target === "string" ? parseTarget(opts.target) : opts.target;
      const state = await store.read(target);
      return { target, providerName: currentRelease(state)?.provider ?? state.releases.at(-1)?.provider };
    }
    const { validated, baseDir } = await loaded(opts);
    const resolved = resolveTarget(validated, opts.environment ?? DEFAULT_ENVIRONMENT, baseDir);
    return { target: resolved.target, providerName: resolved.provider };
  }

  const kiln: Kiln = {
    async check(opts) {
      const given = isLoadedSpec(opts.spec) ? opts.spec : specFromObject(opts.spec, path.resolve(opts.baseDir ?? process.cwd()));
      return checkSpec(given, {
        providerSpec: async (name) => (await getProvider(name)).spec ?? DEFAULT_PROVIDER_SPEC,
        ...(opts.references !== undefined ? { references: opts.references } : {}),
        ...(opts.root !== undefined ? { root: opts.root } : {}),
      });
    },

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
      const spec = { ...options, spec: await loaded(options) };
      const { target, providerName } = await targetOf(spec);
      return withLock(target, spec, async (session) => {
        const interrupted = await markInterrupted(session, providerName);
        const prepared = await prepare({ ...spec, signal: session.signal });
        const { resolved, fingerprint, provider, ctx, emit, state } = prepared;
        let plan = prepared.plan;
        const current = currentRelease(state);
        // An interrupted rollout's release that the spec still asks for is resumed, not replaced.
        const resumable = interrupted.find(
          ({ release }) =>
            release?.status === "pending" &&
            release.configHash === plan.configHash &&
            release.provider === resolved.provider &&
            plan.image.action === "reuse" &&
            plan.image.image.id === release.image.id,
        );
        let resumed: ReleaseRecord | undefined;
        if (resumable?.release) {
          resumed = resumable.release;
          plan = resumeDeployPlan(plan, { rolloutId: resumable.rollout.id, rollout: await planResume(session, provider, resumed, current, resumable.rollout.id) });
        }
        await settleInterrupted(session, interrupted, resumed?.number, plan.rollout.action === "replace" ? plan.rollout : undefined, "the spec now asks for another release");
        emit({ type: "plan.ready", summary: formatPlan(plan), noop: plan.noop });
        if (plan.noop && current) {
          emit({ type: "rollout.skipped", reason: plan.rollout.action === "none" ? plan.rollout.reason : "up to date", release: current.number });
          return { outcome: "unchanged", plan, release: current, rollout: undefined };
        }
        const rolloutPlan = plan.rollout;
        if (rolloutPlan.action === "none") {
          // Up to date, but the image had to be rebuilt (it was removed): nothing runs from it yet,
          // so there is no rollout to journal the build in; the image is found by its fingerprint.
          if (plan.image.action === "build") await buildImage(resolved, fingerprint, provider, ctx, emit);
          return { outcome: "unchanged", plan, release: current!, rollout: undefined };
        }
        // The rollout record comes first, so that the build is journaled too.
        const rollout = await beginRollout(session, { provider: resolved.provider, kind: resumable?.rollout.kind ?? "deploy", fromRelease: current?.number, toRelease: rolloutPlan.toRelease });
        const journal = journaled(provider, { store, target, rolloutId: rollout.id, token: session.lock.token, logger });
        let release: ReleaseRecord;
        try {
          let image: ImageRef;
          if (plan.image.action === "reuse") {
            image = plan.image.image;
            emit({ type: "image.reused", fingerprint: fingerprint.fingerprint, imageId: image.id });
          } else {
            image = await buildImage(resolved, fingerprint, journal, ctx, emit, { id: rollout.id, release: rolloutPlan.toRelease });
          }
          release =
            resumed ??
            (rolloutPlan.newRelease
              ? {
                  number: rolloutPlan.toRelease,
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
                }
              : current!);
        } catch (error) {
          throw await failRollout(session, rollout.id, error);
        }
        return runRollout(session, {
          rollout,
          provider: journal,
          release,
          createRelease: rolloutPlan.newRelease && !resumed,
          previous: current,
          replacement: rolloutPlan,
          adopted: resumed ? rolloutPlan.keep : [],
          plan,
        });
      });
    },

    async rollback(opts) {
      const { target, providerName } = await targetOf(opts);
      return withLock(target, opts, async (session) => {
        const interrupted = await markInterrupted(session, providerName);
        const state = await store.read(target);
        const current = currentRelease(state);
        const chosen = chooseRollbackRelease(state, opts.release);
        const { emit } = session;
        const ctx = contextFor(session.signal, emit);
        const provider = await getProvider(chosen.provider);
        await provider.ping(ctx);
        const image = await provider.images.find({ service: target.service, fingerprint: chosen.fingerprint }, ctx);
        if (!image) {
          await settleInterrupted(session, interrupted, undefined, undefined, "a rollback was asked for instead");
          throw new KilnError(
            "RELEASE_NOT_FOUND",
            `The image of release ${chosen.number} (${chosen.fingerprint.slice(0, 19)}) no longer exists, so it cannot be rolled back to without a rebuild; deploy that version's spec instead.`,
          );
        }
        const instances = await provider.instances.list({ target }, ctx);
        const replacement = planRollback({ state, instances, release: chosen, image, recovering: interrupted.length > 0, ...(provider.limits ? { limits: provider.limits } : {}) });
        if (replacement.action === "none") {
          emit({ type: "rollout.skipped", reason: replacement.reason, release: current!.number });
          return { outcome: "unchanged", plan: undefined, release: current!, rollout: undefined };
        }
        const release: ReleaseRecord = {
          ...structuredClone(chosen),
          number: replacement.toRelease,
          createdAt: new Date().toISOString(),
          image,
          rollbackOf: chosen.number,
          status: "pending",
        };
        delete release.finishedAt;
        delete release.error;
        await settleInterrupted(session, interrupted, undefined, replacement, "a rollback was asked for instead");
        const rollout = await beginRollout(session, { provider: chosen.provider, kind: "rollback", fromRelease: current?.number, toRelease: replacement.toRelease });
        const journal = journaled(provider, { store, target, rolloutId: rollout.id, token: session.lock.token, logger });
        return runRollout(session, { rollout, provider: journal, release, createRelease: true, previous: current, replacement, adopted: [], plan: undefined });
      });
    },

    async resumeRollout(opts) {
      const { target, providerName } = await targetOf(opts);
      return withLock(target, opts, async (session) => {
        const interrupted = await markInterrupted(session, providerName);
        const resumable = interrupted.findLast(({ release }) => release?.status === "pending");
        const records = interrupted.map(({ rollout }) => rollout);
        if (!resumable?.release) {
          await settleInterrupted(session, interrupted, undefined, undefined, "there was nothing to resume");
          return { interrupted: records, result: undefined };
        }
        const release = resumable.release;
        const ctx = contextFor(session.signal, session.emit);
        const provider = await getProvider(release.provider);
        await provider.ping(ctx);
        const image = await provider.images.find({ service: target.service, fingerprint: release.fingerprint }, ctx);
        if (!image || image.id !== release.image.id) {
          await settleInterrupted(session, interrupted, undefined, undefined, "its image no longer exists");
          throw new KilnError(
            "RELEASE_NOT_FOUND",
            `The image of release ${release.number} (${release.fingerprint.slice(0, 19)}) no longer exists, so its rollout cannot be resumed; it was recorded as failed. Run kiln deploy to build and deploy again.`,
          );
        }
        const current = currentRelease(await store.read(target));
        const replacement = await planResume(session, provider, release, current, resumable.rollout.id);
        await settleInterrupted(session, interrupted, release.number, replacement, "another interrupted rollout was resumed");
        const rollout = await beginRollout(session, { provider: release.provider, kind: resumable.rollout.kind, fromRelease: current?.number, toRelease: release.number });
        const journal = journaled(provider, { store, target, rolloutId: rollout.id, token: session.lock.token, logger });
        const result = await runRollout(session, {
          rollout,
          provider: journal,
          release,
          createRelease: false,
          previous: current,
          replacement,
          adopted: replacement.keep,
          plan: undefined,
        });
        return { interrupted: records, result };
      });
    },

    async abortRollout(opts) {
      const { target, providerName } = await targetOf(opts);
      return withLock(target, opts, async (session) => {
        const interrupted = await markInterrupted(session, providerName);
        const records = interrupted.map(({ rollout }) => rollout);
        const current = currentRelease(await store.read(target));
        const name = current?.provider ?? interrupted.at(-1)?.rollout.provider ?? providerName;
        if (!name) {
          await settleInterrupted(session, interrupted, undefined, undefined, "it was aborted");
          return { interrupted: records, result: undefined };
        }
        const { emit } = session;
        const ctx = contextFor(session.signal, emit);
        const provider = await getProvider(name);
        await provider.ping(ctx);
        const instances = await provider.instances.list({ target }, ctx);
        if (!current) {
          // Nothing ever served: what runs is all leftovers. Journaled on the interrupted rollout.
          await settleInterrupted(session, interrupted, undefined, { keep: [], retire: instances }, "it was aborted");
          const last = interrupted.at(-1)?.rollout;
          if (instances.length > 0) {
            const via = last ? journaled(provider, { store, target, rolloutId: last.id, token: session.lock.token, logger }) : provider;
            const rolloutId = last?.id ?? "";
            for (const instance of instances) emit({ type: "instance.retiring", rolloutId, instance: describe(instance) });
            await via.instances.terminate(instances, { gracePeriodMs: interrupted.at(-1)?.release?.instance.stopGracePeriodMs ?? 10_000 }, ctx);
            for (const instance of instances) emit({ type: "instance.retired", rolloutId, instance: describe(instance) });
          }
          return { interrupted: records, result: undefined };
        }
        const replacement = planRecovery({ current, instances, release: current, ...(provider.limits ? { limits: provider.limits } : {}) });
        await settleInterrupted(session, interrupted, undefined, replacement.action === "replace" ? replacement : undefined, "it was aborted");
        if (replacement.action === "none") {
          emit({ type: "rollout.skipped", reason: replacement.reason, release: current.number });
          return { interrupted: records, result: { outcome: "unchanged", plan: undefined, release: current, rollout: undefined } };
        }
        const rollout = await beginRollout(session, { provider: name, kind: "rollback", fromRelease: current.number, toRelease: current.number });
        const journal = journaled(provider, { store, target, rolloutId: rollout.id, token: session.lock.token, logger });
        const result = await runRollout(session, { rollout, provider: journal, release: current, createRelease: false, previous: current, replacement, adopted: [], plan: undefined });
        return { interrupted: records, result };
      });
    },

    async status(opts) {
      const { target, providerName } = await targetOf(opts);
      const [state, lock] = await Promise.all([store.read(target), store.lockStatus(target)]);
      const release = currentRelease(state);
      const activeRollout = state.rollouts.findLast((r) => r.status === "running");
      if (!providerName) return { target, release, instances: [], drift: [], activeRollout, lock };
      const emit = emitterFor(target, opts.onEvent);
      const ctx = contextFor(opts.signal, emit);
      const provider = await getProvider(providerName);
      await provider.ping(ctx);
      const instances = await provider.instances.list({ target }, ctx);
      return { target, release, instances, drift: describeDrift(release, instances), activeRollout, lock };
    },

    async history(opts) {
      const { target } = await targetOf(opts);
      const state = await store.read(target);
      return { ...state, releases: [...state.releases].reverse(), rollouts: [...state.rollouts].reverse() };
    },

    async lockStatus(opts) {
      const { target } = await targetOf(opts);
      return store.lockStatus(target);
    },

    async forceReleaseLock(opts) {
      const { target } = await targetOf(opts);
      const cleared = await store.forceRelease(target);
      if (cleared) logger.warn("released the rollout lock by force", { target: formatTarget(target), holder: cleared.holder, token: cleared.token });
      return cleared;
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

