import type { EventHandler } from "./events.js";
import type { FingerprintResult } from "./fingerprint/fingerprint.js";
import type { JournalHooks } from "./journal/journaled.js";
import type { Logger } from "./logger.js";
import type { DeployPlan } from "./plan/index.js";
import type { ImageRef, Instance, Provider, ProxyStatus } from "./provider/contract.js";
import { DEFAULT_PROVIDER_SPEC } from "./provider/spec.js";
import { checkSpec } from "./spec/check.js";
import type { LoadedSpec } from "./spec/load.js";
import type { SpecInput } from "./spec/schema.js";
import type { LeaseStatus, ReleaseRecord, RolloutRecord, StateStore, TargetState } from "./state/types.js";
import type { Target } from "./target.js";
import { abortRollout } from "./operations/abort.js";
import { build, plan } from "./operations/build.js";
import { createOperationContext, givenSpec } from "./operations/context.js";
import { deploy } from "./operations/deploy.js";
import { resumeRollout } from "./operations/resume.js";
import { rollback } from "./operations/rollback.js";
import { forceReleaseLock, history, lockStatus, status } from "./operations/status.js";
import { collectGarbage, listImages, retainAfterDeploy } from "./operations/retention.js";
import type { KilnError } from "./errors.js";
import type { CollectionPlan, ImageUsage } from "./retention/select.js";

export { chooseRollbackRelease } from "./operations/rollback.js";

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
  /**
   * Test-only hooks of every rollout's journal: a test harness passes `{ crashAt: "intent:launch:2" }`
   * to kill the process right after that journal entry is written. Leave unset in real use.
   * @defaultValue none
   */
  readonly journalHooks?: JournalHooks;
  /**
   * The variables that secrets written `from: { env: NAME }` are read from (`secrets`,
   * `image.dockerfile.secrets`). @defaultValue process.env
   */
  readonly env?: Readonly<Record<string, string | undefined>>;
  /**
   * When set, secrets may be read only from variables whose names start with this prefix
   * (`from: { env: KILN_SECRET_DB }`): a server sets it, since its callers name the variables.
   * @defaultValue any variable
   */
  readonly secretEnvPrefix?: string;
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
  /**
   * The target's front proxies as the provider finds them by Kiln's labels (empty when the
   * provider runs none or cannot list them), including one the release no longer declares.
   */
  readonly proxies: readonly ProxyStatus[];
  /**
   * Differences between what runs and the release (missing, extra or foreign instances, a proxy it
   * does not declare); empty when none. While a rollout runs (its holder alive), only instances
   * that belong to neither of its releases count as drift: the rest is {@link TargetStatus.progress}.
   */
  readonly drift: readonly string[];
  /**
   * While a rollout runs (its holder alive): one line per release it moves between, with how many
   * of their instances run; empty otherwise. An interrupted rollout has no progress: what it left
   * is drift, and `activeRollout` is set with no live lock.
   */
  readonly progress: readonly string[];
  /** A rollout that has not finished, if any (when {@link TargetStatus.lock} is absent or stale, its process died). */
  readonly activeRollout: RolloutRecord | undefined;
  /** The rollout lock's lease, if anyone holds it. */
  readonly lock: LeaseStatus | undefined;
}

/** Options of {@link Kiln.collectGarbage}: the target, and how much of its history to keep. */
export type CollectGarbageOptions = TargetOptions & {
  /**
   * Releases kept per target, the rollback window: the current release and the `keep - 1` newest
   * successful releases before it (pending releases are always kept). A whole number of 1 or more.
   */
  readonly keep: number;
  /** Only images created at least this long ago (milliseconds) may go; an image of unknown age is then kept. @defaultValue any age */
  readonly olderThanMs?: number;
  /**
   * Remove the images. False (the default) is a dry run: the plan is returned, no lock is taken,
   * nothing changes (as `plan` before `deploy`). @defaultValue false
   */
  readonly apply?: boolean;
};

/** What {@link Kiln.collectGarbage} planned and did. */
export interface CollectionResult {
  /** What goes and what stays, and why. */
  readonly plan: CollectionPlan;
  /** Whether images were removed (false: a dry run). */
  readonly applied: boolean;
  /** The id of the collection's record in the target's history (kind `gc`); undefined when nothing was removed. */
  readonly gcId: string | undefined;
  /** Removals an earlier, interrupted collection announced and this one finished (they may not be in `plan.remove`). */
  readonly resumed: readonly ImageRef[];
  /** The images removed, completely (an AMI with its snapshots). */
  readonly removed: readonly ImageRef[];
  /** The images that could not be removed, each with an error naming it and saying what to do; they stay. */
  readonly failed: readonly { readonly image: ImageRef; readonly error: KilnError }[];
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
   * and its healthy instances adopted. With `retention: { keep }` in the spec, a successful deploy
   * is followed by {@link Kiln.collectGarbage} with that `keep` (applied); a failure of that
   * clean-up is a `retention.failed` event and a warning, never a failed deploy.
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
  /**
   * Every image of the target's service, across its environments and their providers, newest
   * first: fingerprint, size (bytes, when the provider knows it), creation time, the releases and
   * environments that reference it, and the instances that run it now. Reads the state of every
   * target of the service, one `images.list` per provider and one `instances.list` per target.
   * Takes no lock and changes nothing.
   * @throws KilnError PROVIDER_NOT_FOUND, PROVIDER_UNAVAILABLE, STATE_UNAVAILABLE
   */
  listImages(options: TargetOptions): Promise<ImageUsage[]>;
  /**
   * Removes the images of the target's service that no retained release uses (see
   * `planCollection` for exactly what is kept): never an image an instance of any environment
   * runs, or that a release in the target's window or in another environment's references (that
   * environment's window is its spec's `retention.keep`; without one, or given a bare target,
   * all its releases). A dry run unless `apply` is set. Applied, it takes the lock of every environment
   * of the service (so no deploy interleaves), finishes removals an interrupted collection left,
   * and journals each removal (intent before, outcome after) on a `gc` record in the target's
   * history. A removal that fails is reported in `failed` and the others go on.
   * @throws KilnError INVALID_ARGUMENT (keep, olderThanMs, a target never deployed), TARGET_LOCKED, LOCK_LOST, ABORTED, PROVIDER_UNAVAILABLE
   */
  collectGarbage(options: CollectGarbageOptions): Promise<CollectionResult>;
  /** Closes providers and the store. */
  close(): Promise<void>;
}

/**
 * Creates the lifecycle API. Each operation lives in its own module under `operations/`; they
 * share one {@link createOperationContext} (providers created on first use, the store, events).
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
  const context = createOperationContext(options);
  return {
    // Async throughout, so that bad input rejects the promise rather than throwing.
    check: async (opts) =>
      checkSpec(givenSpec(opts.spec, opts.baseDir), {
        providerSpec: async (name) => (await context.provider(name)).spec ?? DEFAULT_PROVIDER_SPEC,
        ...(opts.references !== undefined ? { references: opts.references } : {}),
        ...(opts.root !== undefined ? { root: opts.root } : {}),
      }),
    plan: (opts) => plan(context, opts),
    build: (opts) => build(context, opts),
    async deploy(opts) {
      const result = await deploy(context, opts);
      // The spec's retention runs once the deploy's lock is released; it never fails the deploy.
      await retainAfterDeploy(context, opts);
      return result;
    },
    rollback: (opts) => rollback(context, opts),
    resumeRollout: (opts) => resumeRollout(context, opts),
    abortRollout: (opts) => abortRollout(context, opts),
    status: (opts) => status(context, opts),
    history: (opts) => history(context, opts),
    lockStatus: (opts) => lockStatus(context, opts),
    forceReleaseLock: (opts) => forceReleaseLock(context, opts),
    listImages: (opts) => listImages(context, opts),
    collectGarbage: (opts) => collectGarbage(context, opts),
    async close() {
      const opened = await Promise.allSettled(context.createdProviders());
      await Promise.all(opened.flatMap((result) => (result.status === "fulfilled" && result.value.close ? [result.value.close()] : [])));
      await context.store.close?.();
    },
  };
}
