import { readFileSync } from "node:fs";
import os from "node:os";
import { KilnError } from "../errors.js";
import { silentLogger, type Logger } from "../logger.js";
import { formatTarget } from "../target.js";
import type { Holder, Lease, LeaseStatus, TargetLock, TargetState } from "./types.js";

// The lease logic every StateStore shares: pure functions over a TargetState, run inside the
// store's own atomic update, and the renewal timer of a held lock. A store implements `lock`,
// `lockStatus`, `forceRelease` and fenced `update` with these, so the rules are the same for the
// file store and a database.

/** The lease length when the caller names none (milliseconds). */
export const DEFAULT_LEASE_TTL_MS = 30_000;

/**
 * Whether a process with this id runs on this host (`kill(pid, 0)`: ESRCH means gone). On Linux a
 * zombie counts as gone: a process killed with SIGKILL whose parent has not reaped it yet (a
 * harness that starts the next command before it waits for the last) still answers `kill(pid, 0)`,
 * but it will never renew or release its lease (`/proc/<pid>/stat`, state `Z`, see proc(5)).
 */
export function processAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
  } catch (error) {
    // EPERM: it exists but belongs to another user.
    return (error as NodeJS.ErrnoException).code !== "ESRCH";
  }
  return !isZombie(pid);
}

/** Whether `pid` is a zombie (Linux `/proc`; false where there is none to read). */
function isZombie(pid: number): boolean {
  if (process.platform !== "linux") return false;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // "pid (command) state ...": the command may hold spaces and parentheses, so read after the last ")".
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) === "Z";
  } catch {
    return false;
  }
}

/**
 * Why a lease may be taken over, or undefined while it is live: it expired, or its holder ran on
 * this host and that process is gone. A holder on another host is trusted until its lease expires.
 */
export function leaseStaleReason(lease: Lease, now: number = Date.now(), host: string = os.hostname()): string | undefined {
  const expiresAt = Date.parse(lease.expiresAt);
  if (!Number.isFinite(expiresAt) || expiresAt <= now) return `it expired at ${lease.expiresAt} (not renewed for ${Math.round(lease.ttlMs / 1000)} s)`;
  if (lease.holder.host === host && !processAlive(lease.holder.pid)) return `its process (pid ${lease.holder.pid} on ${host}) is gone`;
  return undefined;
}

/** A lease with its staleness. */
export function describeLease(lease: Lease, now: number = Date.now()): LeaseStatus {
  const staleReason = leaseStaleReason(lease, now);
  return { ...structuredClone(lease), stale: staleReason !== undefined, staleReason };
}

/** `user@host (pid N, "command", since …)`: how messages name a holder. */
export function formatHolder(holder: Holder): string {
  return `${holder.user}@${holder.host} (pid ${holder.pid}, "${holder.command}", since ${holder.since})`;
}

/**
 * Grants a new lease in `state` (to be run inside the store's atomic update): the next fencing
 * token, expiring `ttlMs` from `now`. A stale lease is replaced and returned as `tookOver`.
 * @throws KilnError TARGET_LOCKED naming the holder when a live lease is held
 */
export function acquireLease(state: TargetState, holder: Holder, ttlMs: number, now: number = Date.now()): { lease: Lease; tookOver: LeaseStatus | undefined } {
  let tookOver: LeaseStatus | undefined;
  if (state.lease) {
    const status = describeLease(state.lease, now);
    if (!status.stale) {
      throw new KilnError(
        "TARGET_LOCKED",
        `${formatTarget(state.target)} is being rolled out by ${formatHolder(status.holder)}; its lease expires at ${status.expiresAt} unless renewed. Wait for it to finish (or pass --wait-for-lock), and if that process is gone for good, \`kiln lock release --force\` frees the lock.`,
        { details: { holder: status.holder, token: status.token, expiresAt: status.expiresAt } },
      );
    }
    tookOver = status;
  }
  const token = Math.max(state.fencingToken ?? 0, state.lease?.token ?? 0) + 1;
  const lease: Lease = { holder, token, expiresAt: new Date(now + ttlMs).toISOString(), ttlMs };
  state.lease = lease;
  state.fencingToken = token;
  return { lease: structuredClone(lease), tookOver };
}

/**
 * Checks that `token` is the current lease's (inside the store's atomic update, before writing).
 * @throws KilnError LOCK_LOST when it is not
 */
export function assertLeaseToken(state: TargetState, token: number): void {
  const lease = state.lease;
  if (lease?.token === token) return;
  const now = lease ? `${formatHolder(lease.holder)} holds it now (token ${lease.token})` : "nobody holds it now (it was released by force)";
  throw new KilnError(
    "LOCK_LOST",
    `This process lost its lock on ${formatTarget(state.target)} (token ${token}): ${now}. Nothing more is written for this rollout; the next deploy, or \`kiln rollout resume\`, recovers what it left.`,
    { details: { token, currentToken: lease?.token, holder: lease?.holder } },
  );
}

/**
 * Extends the lease with `token` by its ttl from `now` (inside the store's atomic update).
 * @throws KilnError LOCK_LOST when the lease is no longer this token's
 */
export function renewLease(state: TargetState, token: number, now: number = Date.now()): Lease {
  assertLeaseToken(state, token);
  const lease = state.lease!;
  lease.expiresAt = new Date(now + lease.ttlMs).toISOString();
  return structuredClone(lease);
}

/** Clears the lease when it is still `token`'s (inside the store's atomic update). */
export function releaseLease(state: TargetState, token: number): boolean {
  if (state.lease?.token !== token) return false;
  delete state.lease;
  return true;
}

/** What {@link holdLease} needs from a store. */
export interface LeaseKeeperOptions {
  readonly target: TargetState["target"];
  readonly lease: Lease;
  readonly tookOver: LeaseStatus | undefined;
  /** Renews the lease in the store; throws LOCK_LOST when it is gone. */
  renew(token: number): Promise<Lease>;
  /** Clears the lease in the store if it is still this token's. */
  release(token: number): Promise<void>;
  readonly logger?: Logger;
}

/** Options of {@link keepLease}. */
export interface KeepLeaseOptions {
  /** How long the lease lasts without a renewal (milliseconds); it is renewed every third of this. */
  readonly ttlMs: number;
  /** When the lease lapses now, unless renewed (ISO 8601). */
  readonly expiresAt: string;
  /** The shortest time between two renewals (milliseconds), for very short leases. @defaultValue 10 */
  readonly minIntervalMs?: number;
  /**
   * Renews the lease where it is kept, and resolves with its new expiry (ISO 8601). Rejects with a
   * `LOCK_LOST` {@link KilnError} when the lease is no longer the holder's (taken over, released by
   * force, finished elsewhere); any other rejection is taken as transient and retried at the next tick.
   */
  renew(): Promise<string>;
  /** Told once, with the `LOCK_LOST` error, when a renewal finds the lease lost (before `signal` aborts). */
  onLost?(error: KilnError): void;
  /** Told of each renewal that failed for another reason (it is retried at the next tick). */
  onRenewalFailed?(error: unknown): void;
}

/** A lease being kept alive by {@link keepLease}. */
export interface KeptLease {
  /** Aborted, with the `LOCK_LOST` {@link KilnError} as its reason, when a renewal finds the lease lost. */
  readonly signal: AbortSignal;
  /** When the lease lapses unless renewed (ISO 8601); moves on with each renewal. */
  readonly expiresAt: string;
  /**
   * Stops renewing (calling it twice is harmless) and waits for a renewal in flight.
   * @returns whether the lease was still held when renewing stopped (false once it was lost)
   */
  stop(): Promise<boolean>;
}

/**
 * Keeps a lease alive, whatever holds it (a target's rollout lock, a claim on a queued
 * deployment): renews it every third of its ttl on an unref'd timer (so it never keeps the process
 * alive), one renewal at a time, and aborts {@link KeptLease.signal} with `LOCK_LOST` when a
 * renewal finds it lost. A renewal that fails otherwise (a full disk, a database hiccup) is retried
 * at the next tick: the lease stays valid until it expires.
 */
export function keepLease(options: KeepLeaseOptions): KeptLease {
  const controller = new AbortController();
  let expiresAt = options.expiresAt;
  let renewing: Promise<void> | undefined;
  let stopped = false;
  const timer = setInterval(() => {
    if (renewing || stopped) return;
    renewing = options
      .renew()
      .then((renewed) => {
        expiresAt = renewed;
      })
      .catch((error: unknown) => {
        if (error instanceof KilnError && error.code === "LOCK_LOST") {
          options.onLost?.(error);
          clearInterval(timer);
          controller.abort(error);
        } else {
          options.onRenewalFailed?.(error);
        }
      })
      .finally(() => {
        renewing = undefined;
      });
  }, Math.max(options.minIntervalMs ?? 10, Math.floor(options.ttlMs / 3)));
  timer.unref();
  return {
    signal: controller.signal,
    get expiresAt() {
      return expiresAt;
    },
    async stop() {
      stopped = true;
      clearInterval(timer);
      await renewing?.catch(() => {});
      return !controller.signal.aborted;
    },
  };
}

/**
 * A held lock: renews the lease every third of its ttl on an unref'd timer (so it never keeps the
 * process alive), aborts {@link TargetLock.signal} with `LOCK_LOST` when a renewal finds another
 * holder, and clears the lease on `release()`. Built on {@link keepLease}.
 */
export function holdLease(options: LeaseKeeperOptions): TargetLock {
  const logger = options.logger ?? silentLogger;
  const { token, holder, ttlMs } = options.lease;
  const kept = keepLease({
    ttlMs,
    expiresAt: options.lease.expiresAt,
    renew: async () => (await options.renew(token)).expiresAt,
    onLost: (error) => logger.warn("the rollout lock was taken over; stopping", { target: formatTarget(options.target), token, error: error.message }),
    // A transient failure (disk full, database hiccup): tried again at the next tick; the lease
    // stays valid until it expires.
    onRenewalFailed: (error) => logger.warn("could not renew the rollout lock; retrying", { target: formatTarget(options.target), token, error: String(error) }),
  });
  let released = false;
  return {
    holder,
    token,
    get expiresAt() {
      return kept.expiresAt;
    },
    tookOver: options.tookOver,
    signal: kept.signal,
    async release() {
      if (released) return;
      released = true;
      // Lost: the lease is another holder's now, and stays theirs.
      if (!(await kept.stop())) return;
      await options.release(token);
    },
  };
}
