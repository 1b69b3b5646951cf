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
export type JournalOp = "images.build" | "images.remove" | "instances.launch" | "instances.terminate" | "traffic.register" | "traffic.deregister" | "traffic.retireProxy" | "rollout.recover";

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
  /** The image built (build outcome), or removed (remove intent and outcome). */
  readonly imageId?: string;
  /** For an outcome: whether the call succeeded. */
  readonly result?: "ok" | "failed";
  /** For a failed outcome: the error. */
  readonly error?: RecordedError;
  /** ISO 8601. */
  readonly time: string;
}

/**
 * A journal entry as a writer hands it to {@link StateStore.appendJournal}: everything but its
 * `seq`, which the store gives it.
 */
export type NewJournalEntry = Omit<JournalEntry, "seq">;

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
  /** The fencing token: pass it to {@link StateStore.update} and {@link StateStore.appendJournal} for every write made for the rollout. */
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

/** Options of {@link StateStore.appendJournal}. */
export interface AppendJournalOptions {
  /**
   * The fencing token of the lease the rollout runs under. The append is refused with
   * `LOCK_LOST` unless the target's current lease has this token: a process that lost its lease
   * writes nothing more.
   */
  readonly token: number;
}

/**
 * Where Kiln keeps releases and rollouts. One contract, several implementations (the embedded
 * file store; PostgreSQL for servers). Every method may throw `STATE_UNAVAILABLE` or `STATE_CORRUPT`.
 *
 * **The journal is append-only.** A rollout's journal entries are written one at a time with
 * {@link StateStore.appendJournal}, which costs the same whatever the size of the fleet, the
 * rollout's journal so far or the target's history: the store keeps appended entries apart from
 * the target's state document (a JSON-lines file beside the file store's state file, rows of a
 * table in PostgreSQL). {@link StateStore.read} and {@link StateStore.update} show each rollout
 * with its whole journal (recorded and appended entries, in `seq` order), and every `update`
 * folds the appended entries into the rollout records it writes (compaction): the update that
 * records a rollout's end leaves its journal whole in its record.
 */
export interface StateStore {
  /**
   * The target's state, each rollout with its whole journal; an empty state for a target never
   * deployed.
   */
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
   * its return value is passed through. Concurrent updates (and appends) of one target are
   * serialised. When `change` throws, nothing is written and the error propagates.
   *
   * `change` sees every rollout with its whole journal, appended entries included, and what it
   * leaves is written with them folded into the rollout records (the store then holds no
   * appended entry apart): this is how a rollout's journal is compacted when its end is recorded.
   * @throws KilnError LOCK_LOST when `options.token` is given and is not the current lease's
   */
  update<T>(target: Target, change: (state: TargetState) => T, options?: UpdateOptions): Promise<T>;
  /**
   * Appends one entry to the journal of rollout `rolloutId`, under the rollout's lease: the store
   * numbers it (`seq`: one more than the rollout's last entry, recorded or appended) and keeps it
   * durably before it resolves, apart from the state document, so the cost of an append does not
   * grow with the fleet, the journal or the history. Appends and updates of one target are
   * serialised. A write cut short by the process dying (a torn last line in the file store) is
   * never seen: `read` ignores it and the next append replaces it.
   * @param target - the rollout's target
   * @param rolloutId - a rollout the target's state holds (written with `update` first)
   * @param entry - the entry, without its `seq`
   * @param options - the lease's fencing token
   * @returns the entry as stored, with its `seq`
   * @throws KilnError LOCK_LOST when `options.token` is not the current lease's (nothing is written)
   * @throws KilnError INTERNAL when the target's state holds no rollout `rolloutId`
   */
  appendJournal(target: Target, rolloutId: string, entry: NewJournalEntry, options: AppendJournalOptions): Promise<JournalEntry>;
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

/** An entry appended to a rollout's journal, as a store keeps it apart until an update folds it in. */
export interface AppendedJournalEntry {
  readonly rolloutId: string;
  readonly entry: JournalEntry;
}

/**
 * Folds appended journal entries into the rollout records of `state` (in place), as a store's
 * `read` and `update` do: each rollout's journal becomes its recorded entries and its appended
 * ones, in `seq` order. An appended entry whose `seq` the record already has is dropped: it was
 * folded in before, by a store that could not clear it in the same atomic step and meets it
 * again. Entries of a rollout the state does not hold are ignored. Returns `state`.
 */
export function foldJournal(state: TargetState, appended: Iterable<AppendedJournalEntry>): TargetState {
  const byRollout = new Map<string, JournalEntry[]>();
  for (const { rolloutId, entry } of appended) {
    const list = byRollout.get(rolloutId);
    if (list) list.push(entry);
    else byRollout.set(rolloutId, [entry]);
  }
  if (byRollout.size === 0) return state;
  for (const rollout of state.rollouts) {
    const entries = byRollout.get(rollout.id);
    if (!entries) continue;
    rollout.journal ??= [];
    const recorded = new Set(rollout.journal.map((entry) => entry.seq));
    let sorted = true;
    for (const entry of entries) {
      if (recorded.has(entry.seq)) continue;
      recorded.add(entry.seq);
      if (rollout.journal.length > 0 && rollout.journal.at(-1)!.seq > entry.seq) sorted = false;
      rollout.journal.push(entry);
    }
    if (!sorted) rollout.journal.sort((a, b) => a.seq - b.seq);
  }
  return state;
}

/** The `seq` of a rollout's last journal entry; 0 when it has none. */
export function lastJournalSeq(rollout: Pick<RolloutRecord, "journal">): number {
  let last = 0;
  for (const entry of rollout.journal ?? []) last = Math.max(last, entry.seq);
  return last;
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
