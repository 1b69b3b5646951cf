import type { ErrorCode } from "../errors.js";
import type { RolloutKind } from "../events.js";
import type { Logger } from "../logger.js";
import type { ImageRef, InstanceConfig } from "../provider/contract.js";
import type { ResolvedHealth, ResolvedRollout, ResolvedTraffic } from "../spec/resolve.js";
import type { Target } from "../target.js";

/** Where a release stands. `pending` while its rollout runs. */
export type ReleaseStatus = "pending" | "succeeded" | "failed";

/** An error as state records it: code and message only, never a stack or a secret. */
export interface RecordedError {
  readonly code: ErrorCode;
  readonly message: string;
}

/** The immutable, numbered record of what a target runs: an image and how its instances run. */
export interface ReleaseRecord {
  /** 1, 2, 3, … per target, never reused. */
  readonly number: number;
  readonly target: Target;
  readonly provider: string;
  /** ISO 8601. */
  readonly createdAt: string;
  readonly fingerprint: string;
  /** The image the release runs, with its digest. */
  readonly image: ImageRef;
  readonly count: number;
  readonly instance: InstanceConfig;
  readonly health: ResolvedHealth;
  readonly rollout: ResolvedRollout;
  /** How requests reach the release's instances (absent in records written before traffic existed). */
  readonly traffic?: ResolvedTraffic;
  /**
   * A hash of the fingerprint, the count and the instance configuration: equal hashes mean the
   * same instances would run. Health and rollout settings are not part of it: changing only them
   * applies to the next rollout and deploys nothing now.
   */
  readonly configHash: string;
  /** The release this one copies, when it was made by `rollback`. */
  readonly rollbackOf?: number;
  status: ReleaseStatus;
  finishedAt?: string;
  error?: RecordedError;
}

/** Who runs a rollout (written into the lock and the rollout record). */
export interface Holder {
  readonly user: string;
  readonly host: string;
  readonly pid: number;
  readonly command: string;
  /** ISO 8601. */
  readonly since: string;
}

/** Where a rollout stands. */
export type RolloutStatus = "running" | "succeeded" | "failed" | "aborted";

/** A provider operation the journal records: the calls that create or destroy something. */
export type JournalOp = "images.build" | "instances.launch" | "instances.terminate" | "traffic.register" | "traffic.deregister" | "traffic.retireProxy" | "rollout.recover";

/**
 * One entry of a rollout's journal (its write-ahead record). Every provider call that creates or
 * destroys something is written twice: an `intent` before the call and an `outcome` after it, both
 * with the same `step`. See `journaled()` in `@kilnjs/core` for step names and the crash hook.
 */
export interface JournalEntry {
  /** 1, 2, 3, … within the rollout, in write order. */
  readonly seq: number;
  /** `intent` before the provider call, `outcome` after it. */
  readonly phase: "intent" | "outcome";
  /**
   * Stable name of the step within its rollout, `<verb>:<n>` with n counting that verb's calls
   * from 1: `build:1`, `launch:2`, `terminate:1`, `recover:1`. The same plan gives the same names
   * in every run, so a test can name a step to crash at.
   */
  readonly step: string;
  readonly op: JournalOp;
  /** The launch request's idempotency key (launch steps only). */
  readonly idempotencyKey?: string;
  /** The release the instances belong to (launch steps). */
  readonly release?: number;
  /** How many instances a launch asks for. */
  readonly count?: number;
  /**
   * Instances the step concerns: for a terminate (intent and outcome), those to terminate; for a
   * launch outcome, those started; for a recovery, those found carrying the rollout's id.
   */
  readonly instanceIds: readonly string[];
  /** The image built (build outcome). */
  readonly imageId?: string;
  /** For an outcome: whether the call succeeded. */
  readonly result?: "ok" | "failed";
  /** For a failed outcome: the error. */
  readonly error?: RecordedError;
  /** ISO 8601. */
  readonly time: string;
}

/** One rollout: moving a target from one release to another. */
export interface RolloutRecord {
  readonly id: string;
  readonly target: Target;
  readonly kind: RolloutKind;
  readonly fromRelease: number | undefined;
  readonly toRelease: number;
  readonly startedAt: string;
  readonly holder: Holder;
  /** The provider the rollout used (absent in records written before it was kept). */
  readonly provider?: string;
  /** The fencing token of the lease the rollout ran under. */
  readonly token?: number;
  status: RolloutStatus;
  finishedAt?: string;
  error?: RecordedError;
  /** The release serving after a failed rollout was undone. */
  restoredRelease?: number;
  /** The write-ahead journal: intent and outcome of each provider call, in order. */
  journal: JournalEntry[];
}

/**
 * The lease on a target's rollout lock, kept in the target's state. Only its holder may write
 * state on behalf of a rollout, proving it with `token`.
 */
export interface Lease {
  readonly holder: Holder;
  /**
   * The fencing token: 1, 2, 3, … per target, one more for every lease ever granted, so a newer
   * holder always has a larger token than any older one.
   */
  readonly token: number;
  /** When the lease lapses unless renewed (ISO 8601). */
  expiresAt: string;
  /** How long one renewal extends it (milliseconds); the holder renews every third of it. */
  readonly ttlMs: number;
}

/** A lease as `lockStatus` reports it. */
export interface LeaseStatus extends Lease {
  /** Whether another process may take the lease over: it expired, or its holder's process is gone. */
  readonly stale: boolean;
  /** Why it is stale, in words; undefined when it is live. */
  readonly staleReason: string | undefined;
}

/** Everything the store holds for one target. */
export interface TargetState {
  readonly target: Target;
  releases: ReleaseRecord[];
  rollouts: RolloutRecord[];
  /** The release that serves now: the last one whose rollout succeeded. */
  currentRelease: number | undefined;
  /** The rollout lock, while someone holds it (or held it and died). */
  lease?: Lease;
  /** The last fencing token granted for this target (0 or absent: none yet). */
  fencingToken?: number;
  /**
   * The key of the target's secret digests (`SecretMount.digest`): 32 random bytes, base64, made
   * by the first deploy with secrets. Never printed or served: status, history and the HTTP API
   * show releases and rollouts, not this. Losing it makes the next deploy a new release.
   */
  secretDigestKey?: string;
}

/** An exclusive, leased hold on one target; release it when the rollout ends. */
export interface TargetLock {
  readonly holder: Holder;
  /** The fencing token: pass it to {@link StateStore.update} for every write made for the rollout. */
  readonly token: number;
  /** When the lease lapses unless renewed (ISO 8601); moves on with each renewal. */
  readonly expiresAt: string;
  /** The stale lease this lock took over, if it replaced one (its holder died or let it expire). */
  readonly tookOver: LeaseStatus | undefined;
  /**
   * Aborted, with a `LOCK_LOST` {@link KilnError} as its reason, when a renewal finds that another
   * holder has the lease: stop working, nothing more can be written.
   */
  readonly signal: AbortSignal;
  /** Stops renewing and clears the lease if it is still this lock's; calling it twice is harmless. */
  release(): Promise<void>;
}

/** Options of {@link StateStore.lock}. */
export interface LockOptions {
  /**
   * How long the lease lasts without a renewal (milliseconds); the holder renews it every third
   * of this while it lives. @defaultValue the store's default (30000 for the file store)
   */
  readonly ttlMs?: number;
  /** Diagnostics for renewals and a lost lease. */
  readonly logger?: Logger;
}

/** Options of {@link StateStore.update}. */
export interface UpdateOptions {
  /**
   * The fencing token of the lease this write is made under. When given, the write is refused with
   * `LOCK_LOST` unless the target's current lease has this token.
   */
  readonly token?: number;
}

/**
 * Where Kiln keeps releases and rollouts. One contract, several implementations (the embedded
 * file store; PostgreSQL for servers). Every method may throw `STATE_UNAVAILABLE` or `STATE_CORRUPT`.
 */
export interface StateStore {
  /** The target's state; an empty state for a target never deployed. */
  read(target: Target): Promise<TargetState>;
  /**
   * Every target that has been deployed: with a release, a rollout or a current release
   * ({@link isListedTarget}). A target whose only state is a lease, a fencing token or a secret
   * digest key (a first deploy that failed before it made a release: a missing Dockerfile, a
   * secret that cannot be read) keeps that state but is not listed.
   */
  listTargets(): Promise<Target[]>;
  /**
   * Changes a target's state atomically: `change` gets the current state to modify in place and
   * its return value is passed through. Concurrent updates of one target are serialised. When
   * `change` throws, nothing is written and the error propagates.
   * @throws KilnError LOCK_LOST when `options.token` is given and is not the current lease's
   */
  update<T>(target: Target, change: (state: TargetState) => T, options?: UpdateOptions): Promise<T>;
  /**
   * Takes the target's rollout lock: a lease with a new fencing token, renewed every `ttlMs / 3`
   * by an unref'd timer (it never keeps the process alive) until {@link TargetLock.release}. A
   * stale lease (expired, or its holder's process on this host is gone) is taken over.
   * @throws KilnError TARGET_LOCKED naming the holder when a live lease is held
   */
  lock(target: Target, holder: Holder, options?: LockOptions): Promise<TargetLock>;
  /** The target's lease, with whether it is stale; undefined when nobody holds the lock. */
  lockStatus(target: Target): Promise<LeaseStatus | undefined>;
  /**
   * Clears the target's lease whoever holds it, and returns it. The former holder's next write
   * fails with `LOCK_LOST`; it is not stopped otherwise. Undefined when nobody held the lock.
   */
  forceRelease(target: Target): Promise<LeaseStatus | undefined>;
  /** Releases resources; the store is not used afterwards. */
  close?(): Promise<void>;
}

/** An empty state for a target never deployed. */
export function emptyTargetState(target: Target): TargetState {
  return { target: { service: target.service, environment: target.environment }, releases: [], rollouts: [], currentRelease: undefined };
}

/**
 * Whether {@link StateStore.listTargets} lists a target with this state: it has a release, a
 * rollout or a current release. The rollout lock's lease, the fencing token counter and the secret
 * digest key are kept in a target's state before anything is deployed (the token must never go
 * back, so that state is kept), but alone they do not make a target: a deploy that fails before it
 * makes a release leaves nothing to list.
 */
export function isListedTarget(state: Pick<TargetState, "releases" | "rollouts" | "currentRelease">): boolean {
  return state.releases.length > 0 || state.rollouts.length > 0 || state.currentRelease !== undefined;
}

/** How many finished rollouts keep their journal; older ones keep their record without it. */
export const JOURNALED_ROLLOUTS_KEPT = 20;

/**
 * Drops the journal of finished rollouts older than the newest {@link JOURNALED_ROLLOUTS_KEPT}:
 * a journal is needed to recover an unfinished rollout and useful to audit recent ones, but
 * keeping every one makes each state write (and so each journaled step) slower as history grows.
 * Releases and rollout records are kept. Changes `state` in place and returns it.
 */
export function compactHistory(state: TargetState): TargetState {
  let finishedSeen = 0;
  for (let index = state.rollouts.length - 1; index >= 0; index--) {
    const rollout = state.rollouts[index]!;
    if (rollout.status === "running") continue;
    finishedSeen += 1;
    if (finishedSeen > JOURNALED_ROLLOUTS_KEPT && rollout.journal.length > 0) rollout.journal = [];
  }
  return state;
}
