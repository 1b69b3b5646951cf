import { mkdir, readFile, readdir, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import lockfile from "proper-lockfile";
import writeFileAtomic from "write-file-atomic";
import { KilnError } from "../errors.js";
import { formatTarget, parseTarget, type Target } from "../target.js";
import { emptyTargetState, type Holder, type StateStore, type TargetLock, type TargetState } from "./types.js";

/** Options of {@link createFileStateStore}. */
export interface FileStateStoreOptions {
  /** The folder to keep state in, e.g. `<project>/.kiln/state`. Created on first write. */
  readonly directory: string;
  /**
   * How long a lock may go without being refreshed before another process may take it over
   * (milliseconds). The holder refreshes it every half of this.
   * @defaultValue 30000
   */
  readonly staleLockMs?: number;
}

const FORMAT_VERSION = 1;

/**
 * The embedded state store: one JSON file per target under `directory`, written atomically
 * (temporary file + rename), with updates serialised by a lock file (proper-lockfile) so several
 * processes on one machine can share it. Needs nothing installed.
 *
 * Files: `<service>@<environment>.json` (state) and `<service>@<environment>.rollout.lock`
 * (the rollout lock, with `.holder.json` beside it naming the holder).
 */
export function createFileStateStore(options: FileStateStoreOptions): StateStore {
  const directory = path.resolve(options.directory);
  const staleLockMs = options.staleLockMs ?? 30_000;
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
      return names.filter((name) => /^[^.].*@.*\.json$/.test(name) && !name.endsWith(".holder.json")).map((name) => parseTarget(name.slice(0, -".json".length)));
    },

    async update(target, change) {
      const file = fileOf(target);
      return withFileLock(file, async () => {
        const state = await readState(target);
        const result = change(state);
        try {
          await writeFileAtomic(file, `${JSON.stringify({ version: FORMAT_VERSION, state }, null, 2)}\n`);
        } catch (error) {
          throw new KilnError("STATE_UNAVAILABLE", `Cannot write the state file ${file}: check free disk space and permissions.`, { cause: error });
        }
        return result;
      });
    },

    async lock(target, holder): Promise<TargetLock> {
      await mkdir(directory, { recursive: true });
      const lockTarget = path.join(directory, `${formatTarget(target)}.rollout`);
      const holderFile = `${lockTarget}.holder.json`;
      await writeFile(lockTarget, "", { flag: "a" });
      let releaseLock: () => Promise<void>;
      try {
        releaseLock = await lockfile.lock(lockTarget, {
          realpath: false,
          stale: staleLockMs,
          update: Math.floor(staleLockMs / 2),
          retries: 0,
          // A lock lost while held (the machine slept past the stale time) must not crash the
          // process from a timer; the journal and fencing of later issues handle the takeover.
          onCompromised: () => {},
        });
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== "ELOCKED") throw new KilnError("STATE_UNAVAILABLE", `Cannot lock ${lockTarget}.`, { cause: error });
        const current = await readFile(holderFile, "utf8").then((text) => JSON.parse(text) as Holder).catch(() => undefined);
        const who = current ? `${current.user}@${current.host} (pid ${current.pid}, "${current.command}", since ${current.since})` : "another process";
        throw new KilnError(
          "TARGET_LOCKED",
          `${formatTarget(target)} is being rolled out by ${who}. Wait for it to finish and try again; a lock whose holder died expires after ${Math.round(staleLockMs / 1000)} s.`,
          { details: { holder: current } },
        );
      }
      await writeFileAtomic(holderFile, JSON.stringify(holder));
      let released = false;
      return {
        holder,
        async release() {
          if (released) return;
          released = true;
          await rm(holderFile, { force: true });
          await releaseLock();
        },
      };
    },
  };
}
