import type { ErrorCode } from "../errors.js";
import type { RolloutKind } from "../events.js";
import type { ImageRef, InstanceConfig } from "../provider.js";
import type { ResolvedHealth } from "../spec/resolve.js";
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
  readonly rollout: { readonly strategy: "rolling"; readonly maxSurge: number; readonly maxUnavailable: number };
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

/** One rollout: moving a target from one release to another. */
export interface RolloutRecord {
  readonly id: string;
  readonly target: Target;
  readonly kind: RolloutKind;
  readonly fromRelease: number | undefined;
  readonly toRelease: number;
  readonly startedAt: string;
  readonly holder: Holder;
  status: RolloutStatus;
  finishedAt?: string;
  error?: RecordedError;
  /** The release serving after a failed rollout was undone. */
  restoredRelease?: number;
}

/** Everything the store holds for one target. */
export interface TargetState {
  readonly target: Target;
  releases: ReleaseRecord[];
  rollouts: RolloutRecord[];
  /** The release that serves now: the last one whose rollout succeeded. */
  currentRelease: number | undefined;
}

/** An exclusive hold on one target; release it when the rollout ends. */
export interface TargetLock {
  readonly holder: Holder;
  /** Gives the lock up; calling it twice is harmless. */
  release(): Promise<void>;
}

/**
 * Where Kiln keeps releases and rollouts. One contract, several implementations (the embedded
 * file store; PostgreSQL for servers). Every method may throw `STATE_UNAVAILABLE` or `STATE_CORRUPT`.
 */
export interface StateStore {
  /** The target's state; an empty state for a target never deployed. */
  read(target: Target): Promise<TargetState>;
  /** Every target with any state. */
  listTargets(): Promise<Target[]>;
  /**
   * Changes a target's state atomically: `change` gets the current state to modify in place and
   * its return value is passed through. Concurrent updates of one target are serialised.
   */
  update<T>(target: Target, change: (state: TargetState) => T): Promise<T>;
  /**
   * Takes the target's rollout lock.
   * @throws KilnError TARGET_LOCKED naming the holder when another live process holds it
   */
  lock(target: Target, holder: Holder): Promise<TargetLock>;
  /** Releases resources; the store is not used afterwards. */
  close?(): Promise<void>;
}

/** An empty state for a target never deployed. */
export function emptyTargetState(target: Target): TargetState {
  return { target: { service: target.service, environment: target.environment }, releases: [], rollouts: [], currentRelease: undefined };
}
