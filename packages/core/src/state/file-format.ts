/**
 * The embedded state store's files, as bytes on disk: the state file and the lease file of a
 * target, how each is read (and checked) and written (the journal file's are in
 * `journal-file.ts`). Internal to the file store, which decides when each is read and written.
 * @module
 */
import { readFile } from "node:fs/promises";
import path from "node:path";
import { KilnError } from "../errors.js";
import { formatTarget, type Target } from "../target.js";
import { emptyTargetState, type JournalEntry, type Lease, type RolloutRecord, type TargetState } from "./types.js";

/**
 * The state file's format. 2: JSON lines. The first holds the state (releases, rollout records,
 * the current release) with the journal of each running rollout; each further line holds the
 * journal of one finished rollout, `{"rolloutId", "journal"}`, read only when something asks for
 * it (so the history's journals cost nothing to an update that does not touch them: they are
 * written back as they were read). The lease is in the lease file and journal entries appended
 * since the last update are in the journal file. 1 (read, and rewritten as 2 by the first write):
 * one JSON document holding everything, lease and journals included. Kiln before format 2 refuses
 * a format 2 file (`STATE_CORRUPT`) rather than miss a lease or journal entries it does not know of.
 */
export const STATE_FORMAT = 2;
const LEGACY_STATE_FORMAT = 1;
const LEASE_FORMAT = 1;

/** The files of one target under the store's folder. */
export interface TargetFiles {
  /** `<target>.json`: releases, rollouts (with the journal folded in so far), the current release. */
  readonly state: string;
  /** `<target>.lease.json`: the rollout lock's lease and the fencing token counter. */
  readonly lease: string;
  /** `<target>.journal.jsonl`: journal entries appended since the last update. */
  readonly journal: string;
}

/** The files of `target` under `directory`. */
export function targetFiles(directory: string, target: Target): TargetFiles {
  const name = formatTarget(target);
  return { state: path.join(directory, `${name}.json`), lease: path.join(directory, `${name}.lease.json`), journal: path.join(directory, `${name}.journal.jsonl`) };
}

/** Which journal file a state file holds folded in, and how many of its bytes. */
export interface JournalFolded {
  readonly id: string;
  readonly bytes: number;
}

/** A state file as read: its bytes (to tell whether a write changes it) and what it holds. */
export interface LoadedState {
  /** Undefined when there is no state file. */
  readonly bytes: Buffer | undefined;
  readonly version: number | undefined;
  /** The state, without lease or fencing token. */
  readonly state: TargetState;
  /**
   * The journal file folded into `state` last. An update writes the state file, then removes the
   * journal file; a process that dies between the two leaves a journal file whose first `bytes`
   * must not be read again.
   */
  readonly journalFolded: JournalFolded | undefined;
  /** A format 1 file's lease and fencing token (format 2 keeps them in the lease file). */
  readonly legacyLease: Pick<TargetState, "lease" | "fencingToken">;
}

/** The lease file's content: the rollout lock's lease and the fencing token counter. */
export interface LeaseFileContent {
  readonly lease?: Lease | undefined;
  readonly fencingToken?: number | undefined;
}

/** `STATE_CORRUPT` for a file Kiln did not write (or a line of one). */
export function corrupt(file: string, why: string, cause?: unknown): KilnError {
  return new KilnError("STATE_CORRUPT", `The state file ${file} is not one Kiln wrote (${why}); restore it from a backup or version control.`, cause === undefined ? {} : { cause });
}

/** `STATE_UNAVAILABLE` for a file that could not be read or written. */
export function unavailable(doing: string, file: string, cause: unknown): KilnError {
  return new KilnError("STATE_UNAVAILABLE", `Cannot ${doing} ${file}: check free disk space and permissions.`, { cause });
}

/** A file's bytes; undefined when it does not exist. */
async function readBytes(file: string): Promise<Buffer | undefined> {
  try {
    return await readFile(file);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new KilnError("STATE_UNAVAILABLE", `Cannot read the state file ${file}: check its permissions.`, { cause: error });
  }
}

const NEWLINE = 0x0a;

/** A finished rollout's journal as its line of the state file, parsed when first asked for. */
interface ArchivedJournal {
  readonly file: string;
  /** The line as read; undefined for a rollout with no journal line. */
  readonly line: Buffer | undefined;
  /** Whether the journal was asked for (or replaced) since it was read: then it is written anew. */
  touched: boolean;
  value: JournalEntry[] | undefined;
}

/** The finished rollouts whose journal is still (or was) a line of the state file, as read. */
const archived = new WeakMap<RolloutRecord, ArchivedJournal>();

/**
 * Gives a finished rollout's record its journal from its line of the state file, parsed on first
 * access (`rollout.journal` is an accessor: reading, spreading, cloning and serialising the record
 * all see the array; assigning replaces it).
 */
function archiveJournal(rollout: RolloutRecord, file: string, line: Buffer | undefined): void {
  const journal: ArchivedJournal = { file, line, touched: false, value: undefined };
  archived.set(rollout, journal);
  Object.defineProperty(rollout, "journal", {
    enumerable: true,
    configurable: true,
    get() {
      journal.touched = true;
      journal.value ??= journal.line === undefined ? [] : parseArchivedJournal(journal.file, journal.line);
      return journal.value;
    },
    set(value: JournalEntry[]) {
      journal.touched = true;
      journal.value = value;
    },
  });
}

function parseArchivedJournal(file: string, line: Buffer): JournalEntry[] {
  try {
    const parsed = JSON.parse(line.toString("utf8")) as { journal?: unknown };
    if (!Array.isArray(parsed.journal)) throw new Error("a journal line holds no journal");
    return parsed.journal as JournalEntry[];
  } catch (error) {
    throw corrupt(file, (error as Error).message, error);
  }
}

/** The rollout id a journal line of the state file starts with (`{"rolloutId":"…",`), read without parsing the line. */
const ARCHIVED_LINE_START = /^\{"rolloutId":("(?:[^"\\]|\\.)*"),"journal":/;

/** The longest start of a journal line decoded to find its rollout id (bytes): ids are short. */
const ARCHIVED_LINE_START_BYTES = 512;

/** The journal lines of a state file (from byte `from`), by rollout id, undecoded. */
function archivedLines(file: string, bytes: Buffer, from: number): Map<string, Buffer> {
  const lines = new Map<string, Buffer>();
  for (let start = from; start < bytes.length; ) {
    let end = bytes.indexOf(NEWLINE, start);
    if (end < 0) end = bytes.length;
    if (end > start) {
      const match = ARCHIVED_LINE_START.exec(bytes.toString("utf8", start, Math.min(end, start + ARCHIVED_LINE_START_BYTES)));
      if (!match) throw corrupt(file, "a line after the first is not a rollout's journal");
      lines.set(JSON.parse(match[1]!) as string, bytes.subarray(start, end));
    }
    start = end + 1;
  }
  return lines;
}

/**
 * Reads a state file (format 1 or 2). The journals of finished rollouts (format 2) are parsed
 * when first asked for.
 * @throws KilnError STATE_CORRUPT, STATE_UNAVAILABLE
 */
export async function loadStateFile(file: string, target: Target): Promise<LoadedState> {
  const bytes = await readBytes(file);
  if (bytes === undefined) return { bytes, version: undefined, state: emptyTargetState(target), journalFolded: undefined, legacyLease: {} };
  const firstLineEnd = bytes.indexOf(NEWLINE);
  let parsed: { version?: unknown; state?: TargetState; journalFolded?: JournalFolded };
  try {
    parsed = JSON.parse(bytes.toString("utf8", 0, firstLineEnd < 0 ? bytes.length : firstLineEnd)) as typeof parsed;
  } catch (error) {
    throw corrupt(file, (error as Error).message, error);
  }
  const state = parsed.state;
  if ((parsed.version !== STATE_FORMAT && parsed.version !== LEGACY_STATE_FORMAT) || !state || !Array.isArray(state.releases) || !Array.isArray(state.rollouts)) {
    throw corrupt(file, `unknown format version ${String(parsed.version)}`);
  }
  const lines = parsed.version === STATE_FORMAT && firstLineEnd >= 0 ? archivedLines(file, bytes, firstLineEnd + 1) : new Map<string, Buffer>();
  for (const rollout of state.rollouts) {
    if (parsed.version === STATE_FORMAT && rollout.status !== "running") archiveJournal(rollout, file, lines.get(rollout.id));
    // Rollouts recorded before the journal existed have none.
    else rollout.journal ??= [];
  }
  const { lease, fencingToken } = state;
  delete state.lease;
  delete state.fencingToken;
  return {
    bytes,
    version: parsed.version,
    state,
    journalFolded: parsed.journalFolded,
    legacyLease: parsed.version === LEGACY_STATE_FORMAT ? { ...(lease ? { lease } : {}), ...(fencingToken !== undefined ? { fencingToken } : {}) } : {},
  };
}

/** Whether a loaded state file is of format 1 (to be rewritten as format 2 once its lease is kept elsewhere). */
export const isLegacy = (loaded: LoadedState): boolean => loaded.version === LEGACY_STATE_FORMAT;

/**
 * A state file's bytes: format 2, without lease or fencing token, compact JSON (for Kiln, not
 * people). A finished rollout's journal goes on a line of its own, copied as it was read when
 * nothing asked for it since.
 */
export function stateFileBytes(state: TargetState, journalFolded: JournalFolded | undefined): Buffer {
  const { lease: _lease, fencingToken: _fencingToken, rollouts, ...rest } = state;
  const lines: Buffer[] = [];
  const records = rollouts.map((rollout) => {
    if (rollout.status === "running") return rollout;
    const record: Record<string, unknown> = {};
    // Every key but the journal, whose accessor would parse it.
    for (const key of Object.keys(rollout)) if (key !== "journal") record[key] = rollout[key as keyof RolloutRecord];
    const journal = archived.get(rollout);
    if (journal && !journal.touched) {
      if (journal.line !== undefined) lines.push(journal.line);
    } else if (rollout.journal.length > 0) {
      lines.push(Buffer.from(JSON.stringify({ rolloutId: rollout.id, journal: rollout.journal })));
    }
    return record;
  });
  const first = Buffer.from(JSON.stringify({ version: STATE_FORMAT, state: { ...rest, rollouts: records }, ...(journalFolded ? { journalFolded } : {}) }));
  const newline = Buffer.from("\n");
  return Buffer.concat([first, ...lines].flatMap((line) => [line, newline]));
}

/**
 * Reads a lease file; undefined when there is none.
 * @throws KilnError STATE_CORRUPT, STATE_UNAVAILABLE
 */
export async function loadLeaseFile(file: string): Promise<LeaseFileContent | undefined> {
  const bytes = await readBytes(file);
  if (bytes === undefined) return undefined;
  try {
    const parsed = JSON.parse(bytes.toString("utf8")) as LeaseFileContent & { version?: unknown };
    if (parsed.version !== LEASE_FORMAT) throw new Error(`unknown format version ${String(parsed.version)}`);
    return { lease: parsed.lease, fencingToken: parsed.fencingToken };
  } catch (error) {
    throw corrupt(file, (error as Error).message, error);
  }
}

/** A lease file's text. */
export function leaseFileText(content: LeaseFileContent): string {
  const { lease, fencingToken } = content;
  return `${JSON.stringify({ version: LEASE_FORMAT, ...(fencingToken !== undefined ? { fencingToken } : {}), ...(lease ? { lease } : {}) })}\n`;
}
