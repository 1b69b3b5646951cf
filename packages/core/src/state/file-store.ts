import { mkdir, open, readdir, unlink, type FileHandle } from "node:fs/promises";
import path from "node:path";
import lockfile from "proper-lockfile";
import writeFileAtomic from "write-file-atomic";
import { KilnError } from "../errors.js";
import { formatTarget, parseTarget, type Target } from "../target.js";
import { isLegacy, leaseFileText, loadLeaseFile, loadStateFile, stateFileBytes, targetFiles, unavailable, type LeaseFileContent, type LoadedState, type TargetFiles } from "./file-format.js";
import { journalHeaderText, journalLineBytes, loadJournalFile, readJournalTail, readJournalThrough, unfoldedEntries, type LoadedJournal } from "./journal-file.js";
import { DEFAULT_LEASE_TTL_MS, acquireLease, assertLeaseToken, describeLease, holdLease, releaseLease, renewLease } from "./lease.js";
import { compactHistory, emptyTargetState, foldJournal, isListedTarget, lastJournalSeq, type JournalEntry, type NewJournalEntry, type StateStore, type TargetLock, type TargetState } from "./types.js";

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

/**
 * The embedded state store: a few files per target under `directory`, shared safely by several
 * processes on one machine. Needs nothing installed.
 *
 * Files, for a target `<service>@<environment>`:
 *
 * - `<target>.json`: the state (releases, rollouts with their journal folded in so far, the
 *   current release), written atomically (temporary file + rename) by `update`, only when it
 *   changes. JSON lines: the state with the journals of running rollouts, then one line per
 *   finished rollout's journal, parsed only when something asks for it and otherwise written back
 *   as read, so an update costs the same however many journals the history keeps.
 * - `<target>.lease.json`: the rollout lock's lease and the fencing token counter, written
 *   atomically by `lock`, its renewals and `release`, and read by every fenced write. Kept apart
 *   so that checking a token costs the same whatever the state's size.
 * - `<target>.journal.jsonl`: journal entries appended since the last `update` (JSON lines: a
 *   header with the file's random id and the last `seq` of each running rollout, then
 *   `{"rolloutId", "entry"}` per line), each with one `write` (`O_APPEND`) and an `fdatasync`.
 *   `read` and `update` fold them into the rollout records; `update` writes them into the state
 *   file, then replaces this file with a new header (or removes it when no rollout runs).
 * - `<target>.json.lock`: for a moment during each write, the lock (proper-lockfile) that
 *   serialises the target's writers across processes (within one process they queue up).
 *
 * An append reads the lease file and the journal file's last line (or its header), never the state
 * file (except to journal on a rollout that had finished, as `rollout abort` does, whose number
 * it finds there), so its cost does not grow with the fleet, the journal or the history. A process killed in the middle of an
 * append leaves at most a torn last line: it is not an entry (its write never returned), reading
 * ignores it and the next append cuts it off. Any other line that does not parse is
 * `STATE_CORRUPT`. An update that dies after writing the state file, before replacing the journal
 * file, loses and repeats nothing: the state file names the journal file (id and length) it holds.
 *
 * `read` takes no lock: it reads the journal file, then the state file, so an update running at
 * the same time (which writes the state file before it removes the journal file) is seen either
 * before or after. A state file of format 1 (Kiln before the append-only journal: lease and
 * journal inside) is read, and rewritten as format 2 by the first write.
 */
export function createFileStateStore(options: FileStateStoreOptions): StateStore {
  const directory = path.resolve(options.directory);
  const leaseTtlMs = options.leaseTtlMs ?? DEFAULT_LEASE_TTL_MS;
  const folder: StoreFolder = { path: directory, made: false };
  const on = (target: Target): TargetAt => ({ target, folder, files: targetFiles(directory, target) });
  return {
    read: (target) => readState(on(target)),
    listTargets: () => listTargets(directory),
    update: (target, change, updateOptions) => updateState(on(target), change, updateOptions?.token),
    appendJournal: (target, rolloutId, entry, appendOptions) => appendEntry(on(target), rolloutId, entry, appendOptions.token),
    async lock(target, holder, lockOptions = {}): Promise<TargetLock> {
      const at = on(target);
      const { lease, tookOver } = await changeLease(at, (state) => acquireLease(state, holder, lockOptions.ttlMs ?? leaseTtlMs));
      if (tookOver) {
        lockOptions.logger?.warn("took over a stale rollout lock", { target: formatTarget(target), from: tookOver.holder, reason: tookOver.staleReason, token: lease.token });
      }
      return holdLease({
        target,
        lease,
        tookOver,
        ...(lockOptions.logger ? { logger: lockOptions.logger } : {}),
        renew: (token) => changeLease(at, (state) => renewLease(state, token)),
        release: async (token) => {
          await changeLease(at, (state) => releaseLease(state, token));
        },
      });
    },
    async lockStatus(target) {
      const { lease } = await loadLease(on(target));
      return lease ? describeLease(lease) : undefined;
    },
    forceRelease: (target) =>
      changeLease(on(target), (state) => {
        const lease = state.lease;
        if (!lease) return undefined;
        delete state.lease;
        return describeLease(lease);
      }),
  };
}

/** The store's folder, and whether this store object has made sure it exists. */
interface StoreFolder {
  readonly path: string;
  made: boolean;
}

/** A target, with the store's folder and the target's files in it. */
interface TargetAt {
  readonly target: Target;
  readonly folder: StoreFolder;
  readonly files: TargetFiles;
}

/** The lease of a target, with where it was read from. */
interface LoadedLease extends LeaseFileContent {
  /** Whether the lease file exists (else the values come from a format 1 state file, or there are none). */
  readonly stored: boolean;
  /** The format 1 state file they came from, to rewrite as format 2 once the lease file holds them. */
  readonly legacy: LoadedState | undefined;
}

/**
 * Serialises, within this process, the file-locked operations on one target (by state file path),
 * so that calls from one process queue up instead of retrying the lock file.
 */
const queued = new Map<string, Promise<void>>();

async function inProcessOrder<T>(key: string, run: () => Promise<T>): Promise<T> {
  const previous = queued.get(key) ?? Promise.resolve();
  let finish!: () => void;
  const current = new Promise<void>((resolve) => (finish = resolve));
  const tail = previous.then(() => current);
  queued.set(key, tail);
  try {
    await previous;
    return await run();
  } finally {
    finish();
    if (queued.get(key) === tail) queued.delete(key);
  }
}

/** Runs `run` holding the target's lock file (after the process's other operations on the target). */
async function withFileLock<T>(at: TargetAt, run: () => Promise<T>): Promise<T> {
  return inProcessOrder(at.files.state, async () => {
    const release = await lockFile(at);
    try {
      return await run();
    } finally {
      await release();
    }
  });
}

/**
 * Takes the target's lock file (proper-lockfile: a folder made with `mkdir`, seen as stale after
 * 10 s without its holder touching it), making the store's folder first (once per store object,
 * and again if it went away).
 */
async function lockFile(at: TargetAt): Promise<() => Promise<void>> {
  const take = () => lockfile.lock(at.files.state, { realpath: false, stale: 10_000, retries: { retries: 50, minTimeout: 20, maxTimeout: 200, randomize: true } });
  if (!at.folder.made) {
    await mkdir(at.folder.path, { recursive: true });
    at.folder.made = true;
  }
  try {
    return await take();
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
    // The folder was removed since this store made it.
    await mkdir(at.folder.path, { recursive: true });
    return take();
  }
}

async function writeFile(file: string, text: string | Buffer): Promise<void> {
  try {
    await writeFileAtomic(file, text);
  } catch (error) {
    throw unavailable("write the state file", file, error);
  }
}

/** The target's lease: from the lease file, or (before the first lock by this version) a format 1 state file. */
async function loadLease(at: TargetAt, loadedState?: LoadedState): Promise<LoadedLease> {
  const stored = await loadLeaseFile(at.files.lease);
  if (stored) return { ...stored, stored: true, legacy: undefined };
  const loaded = loadedState ?? (await loadStateFile(at.files.state, at.target));
  return { ...loaded.legacyLease, stored: false, legacy: isLegacy(loaded) ? loaded : undefined };
}

/** `state` (changed in place) with the lease and fencing token of `lease`. */
function withLease(state: TargetState, lease: LeaseFileContent): TargetState {
  if (lease.lease) state.lease = lease.lease;
  if (lease.fencingToken !== undefined) state.fencingToken = lease.fencingToken;
  return state;
}

/** A state holding only the lease, for the lease functions (which read and write nothing else). */
const leaseState = (target: Target, lease: LeaseFileContent): TargetState => withLease(emptyTargetState(target), lease);

/**
 * Changes the lease alone, under the target's file lock, writing the lease file when it changed.
 * The first lease written for a target with a format 1 state file rewrites that file as format 2
 * (without the lease), so that an older Kiln no longer acts on the target.
 */
function changeLease<T>(at: TargetAt, change: (state: TargetState) => T): Promise<T> {
  return withFileLock(at, async () => {
    const loaded = await loadLease(at);
    const state = leaseState(at.target, loaded);
    const before = leaseFileText(state);
    const result = change(state);
    if (leaseFileText(state) !== before || loaded.legacy) {
      await writeFile(at.files.lease, leaseFileText(state));
      if (loaded.legacy) await writeFile(at.files.state, stateFileBytes(loaded.legacy.state, loaded.legacy.journalFolded));
    }
    return result;
  });
}

async function readState(at: TargetAt): Promise<TargetState> {
  // The journal first: an update writes the state file before it removes the journal file, so
  // whatever this reads of the journal is, at the latest, in the state file read next.
  const journal = await loadJournalFile(at.files.journal);
  const loaded = await loadStateFile(at.files.state, at.target);
  const state = withLease(loaded.state, await loadLease(at, loaded));
  return foldJournal(state, unfoldedEntries(journal, loaded.journalFolded));
}

async function listTargets(directory: string): Promise<Target[]> {
  let names: string[];
  try {
    names = await readdir(directory);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return [];
    throw new KilnError("STATE_UNAVAILABLE", `Cannot list ${directory}.`, { cause: error });
  }
  const targets = names
    .filter((name) => /^[^.].*@.*\.json$/.test(name) && !name.endsWith(".holder.json") && !name.endsWith(".lease.json"))
    .map((name) => parseTarget(name.slice(0, -".json".length)));
  // A file made only by a lock (or a secret digest key) is a deploy that never made a release:
  // not a target to list. A file that cannot be read is listed, so that reading it says why.
  const listed = await Promise.all(targets.map((target) => loadStateFile(targetFiles(directory, target).state, target).then(({ state }) => isListedTarget(state), () => true)));
  return targets.filter((_, index) => listed[index]);
}

/**
 * `update`: the state with the journal folded in, the token checked, `change` applied; then the
 * lease file (when the lease changed), the state file (when it changed) and, every appended entry
 * being in the state file by then, the journal file removed.
 */
function updateState<T>(at: TargetAt, change: (state: TargetState) => T, token: number | undefined): Promise<T> {
  return withFileLock(at, async () => {
    const journal = await loadJournalFile(at.files.journal);
    const loaded = await loadStateFile(at.files.state, at.target);
    const lease = await loadLease(at, loaded);
    const state = withLease(loaded.state, lease);
    foldJournal(state, unfoldedEntries(journal, loaded.journalFolded));
    if (token !== undefined) assertLeaseToken(state, token);
    const leaseBefore = leaseFileText(state);
    const result = change(state);
    compactHistory(state);
    // The lease file first: rewriting a format 1 state file drops its lease, which must be kept elsewhere by then.
    const leaseAfter = leaseFileText(state);
    if (leaseAfter !== leaseBefore || (!lease.stored && leaseAfter !== leaseFileText({}))) await writeFile(at.files.lease, leaseAfter);
    const bytes = stateFileBytes(state, journal?.id !== undefined ? { id: journal.id, bytes: journal.bytes } : loaded.journalFolded);
    if (!loaded.bytes?.equals(bytes)) await writeFile(at.files.state, bytes);
    await restartJournal(at, journal, state);
    return result;
  });
}

/**
 * After an update wrote the state file (every appended entry in it by then): replaces the journal
 * file by one holding only a header with the last seq of each running rollout, so that their
 * next appends need not read the state file; removes it when no rollout runs.
 */
async function restartJournal(at: TargetAt, journal: LoadedJournal | undefined, state: TargetState): Promise<void> {
  const running = state.rollouts.filter((rollout) => rollout.status === "running");
  if (running.length === 0) {
    if (journal) await removeJournal(at.files.journal);
    return;
  }
  const lastSeq = Object.fromEntries(running.map((rollout) => [rollout.id, lastJournalSeq(rollout)]));
  if (journal && journal.entries.length === 0 && JSON.stringify(journal.lastSeq) === JSON.stringify(lastSeq)) return;
  await writeFile(at.files.journal, journalHeaderText(lastSeq));
}

async function removeJournal(file: string): Promise<void> {
  try {
    await unlink(file);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw unavailable("remove the journal file", file, error);
  }
}

/**
 * `appendJournal`: the token checked against the lease file, the entry numbered from the journal
 * file's last line or header (else, for a rollout that had finished, from the state), and
 * appended with one write and an fdatasync. A torn last line is cut off first.
 */
function appendEntry(at: TargetAt, rolloutId: string, entry: NewJournalEntry, token: number): Promise<JournalEntry> {
  return withFileLock(at, async () => {
    assertLeaseToken(leaseState(at.target, await loadLease(at)), token);
    const file = at.files.journal;
    let handle: FileHandle;
    try {
      handle = await open(file, "a+");
    } catch (error) {
      throw unavailable("open the journal file", file, error);
    }
    try {
      const { size } = await handle.stat();
      const tail = await readJournalTail(file, handle, size);
      // A torn line (its writer died in the middle): cut off, so that the new entry starts a line.
      if (tail.end < size) await handle.truncate(tail.end);
      const recorded = tail.last?.rolloutId === rolloutId ? tail.last.entry.seq : tail.lastSeq?.[rolloutId];
      const seq = recorded !== undefined ? recorded + 1 : await nextSeqFromState(at, rolloutId, await readJournalThrough(file, handle, tail.end));
      const stored: JournalEntry = { ...entry, seq };
      const bytes = journalLineBytes(rolloutId, stored, tail.end === 0);
      // One write, appended (O_APPEND); a short one (a full disk) leaves a torn line, cut off by the next append.
      const { bytesWritten } = await handle.write(bytes);
      if (bytesWritten !== bytes.length) throw new Error(`only ${bytesWritten} of ${bytes.length} bytes were written`);
      await handle.datasync();
      return stored;
    } catch (error) {
      if (error instanceof KilnError) throw error;
      throw unavailable("append to the journal file", file, error);
    } finally {
      await handle.close();
    }
  });
}

/**
 * The `seq` of a rollout's next entry when neither the journal file's last line nor its header
 * numbers it (a rollout that had finished): from the state file and the whole journal file.
 * @throws KilnError INTERNAL when the state holds no such rollout
 */
async function nextSeqFromState(at: TargetAt, rolloutId: string, journal: LoadedJournal | undefined): Promise<number> {
  const loaded = await loadStateFile(at.files.state, at.target);
  const rollout = foldJournal(loaded.state, unfoldedEntries(journal, loaded.journalFolded)).rollouts.find((r) => r.id === rolloutId);
  if (!rollout) throw new KilnError("INTERNAL", `Rollout ${rolloutId} has no record to journal into.`);
  return lastJournalSeq(rollout) + 1;
}
