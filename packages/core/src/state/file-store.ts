import { mkdir, readFile, readdir } from "node:fs/promises";
import path from "node:path";
import lockfile from "proper-lockfile";
import writeFileAtomic from "write-file-atomic";
import { KilnError } from "../errors.js";
import { formatTarget, parseTarget, type Target } from "../target.js";
import { DEFAULT_LEASE_TTL_MS, acquireLease, assertLeaseToken, describeLease, holdLease, releaseLease, renewLease } from "./lease.js";
import { compactHistory, emptyTargetState, isListedTarget, type StateStore, type TargetLock, type TargetState } from "./types.js";

/** Options of {@link createFileStateStore}. */
export interface FileStateStoreOptions {
  /** The folder to keep state in, e.g. `<project>/.kiln/state`. Created on first write. */
  readonly directory: string;
  /**
   * How long a rollout lock's lease lasts without a renewal when `lock` is given no `ttlMs`
   * (milliseconds). The holder renews it every third of this; a holder that died on this host is
   * detected at once by its process id, one on another host when the lease expires.
   * @defaultValue 30000
   */
  readonly leaseTtlMs?: number;
}

const FORMAT_VERSION = 1;

/**
 * The embedded state store: one JSON file per target under `directory`, written atomically
 * (temporary file + rename), with updates serialised by a short-lived lock file (proper-lockfile)
 * so several processes on one machine can share it. Needs nothing installed.
 *
 * The rollout lock is a lease kept in the target's state file (`state.lease`, with the fencing
 * token counter `state.fencingToken`), so taking, renewing, checking and releasing it are ordinary
 * atomic updates, and a fenced write checks the token in the same update that writes.
 *
 * Files: `<service>@<environment>.json` (state, journal and lease) and, for a moment during each
 * update, `<service>@<environment>.json.lock`.
 */
export function createFileStateStore(options: FileStateStoreOptions): StateStore {
  const directory = path.resolve(options.directory);
  const leaseTtlMs = options.leaseTtlMs ?? DEFAULT_LEASE_TTL_MS;
  const fileOf = (target: Target) => path.join(directory, `${formatTarget(target)}.json`);

  async function readState(target: Target): Promise<TargetState> {
    let text: string;
    try {
      text = await readFile(fileOf(target), "utf8");
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") return emptyTargetState(target);
      throw new KilnError("STATE_UNAVAILABLE", `Cannot read the state file ${fileOf(target)}: check its permissions.`, { cause: error });
    }
    try {
      const parsed = JSON.parse(text) as { version?: number; state?: TargetState };
      if (parsed.version !== FORMAT_VERSION || !parsed.state || !Array.isArray(parsed.state.releases)) throw new Error(`unknown format version ${String(parsed.version)}`);
      // Rollouts recorded before the journal existed have none.
      for (const rollout of parsed.state.rollouts) rollout.journal ??= [];
      return parsed.state;
    } catch (error) {
      throw new KilnError(
        "STATE_CORRUPT",
        `The state file ${fileOf(target)} is not one Kiln wrote (${(error as Error).message}); restore it from a backup or version control.`,
        { cause: error },
      );
    }
  }

  async function withFileLock<T>(file: string, run: () => Promise<T>): Promise<T> {
    await mkdir(directory, { recursive: true });
    const release = await lockfile.lock(file, {
      realpath: false,
      stale: 10_000,
      retries: { retries: 50, minTimeout: 20, maxTimeout: 200, randomize: true },
    });
    try {
      return await run();
    } finally {
      await release();
    }
  }

  async function update<T>(target: Target, change: (state: TargetState) => T, token?: number): Promise<T> {
    const file = fileOf(target);
    return withFileLock(file, async () => {
      const state = await readState(target);
      if (token !== undefined) assertLeaseToken(state, token);
      const result = change(state);
      try {
        // Compact JSON: the journal makes this write frequent, and the file is for Kiln, not people
        // (`kiln history --json` prints it readably).
        await writeFileAtomic(file, `${JSON.stringify({ version: FORMAT_VERSION, state: compactHistory(state) })}\n`);
      } catch (error) {
        throw new KilnError("STATE_UNAVAILABLE", `Cannot write the state file ${file}: check free disk space and permissions.`, { cause: error });
      }
      return result;
    });
  }

  return {
    read: readState,

    async listTargets() {
      let names: string[];
      try {
        names = await readdir(directory);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === "ENOENT") return [];
        throw new KilnError("STATE_UNAVAILABLE", `Cannot list ${directory}.`, { cause: error });
      }
      const targets = names.filter((name) => /^[^.].*@.*\.json$/.test(name) && !name.endsWith(".holder.json")).map((name) => parseTarget(name.slice(0, -".json".length)));
      // A file made only by a lock (or a secret digest key) is a deploy that never made a release:
      // not a target to list. A file that cannot be read is listed, so that reading it says why.
      const listed = await Promise.all(targets.map((target) => readState(target).then(isListedTarget, () => true)));
      return targets.filter((_, index) => listed[index]);
    },

    update(target, change, updateOptions) {
      return update(target, change, updateOptions?.token);
    },

    async lock(target, holder, lockOptions = {}): Promise<TargetLock> {
      const ttlMs = lockOptions.ttlMs ?? leaseTtlMs;
      const { lease, tookOver } = await update(target, (state) => acquireLease(state, holder, ttlMs));
      if (tookOver) {
        lockOptions.logger?.warn("took over a stale rollout lock", { target: formatTarget(target), from: tookOver.holder, reason: tookOver.staleReason, token: lease.token });
      }
      return holdLease({
        target,
        lease,
        tookOver,
        ...(lockOptions.logger ? { logger: lockOptions.logger } : {}),
        renew: (token) => update(target, (state) => renewLease(state, token)),
        release: async (token) => {
          await update(target, (state) => releaseLease(state, token));
        },
      });
    },

    async lockStatus(target) {
      const { lease } = await readState(target);
      return lease ? describeLease(lease) : undefined;
    },

    async forceRelease(target) {
      return update(target, (state) => {
        const lease = state.lease;
        if (!lease) return undefined;
        delete state.lease;
        return describeLease(lease);
      });
    },
  };
}
