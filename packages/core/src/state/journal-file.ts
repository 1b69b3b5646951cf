/**
 * The embedded state store's journal file, as bytes on disk: JSON lines, a header (the file's
 * random id, and the last seq of each running rollout when an update made the file), then one
 * appended entry per line. How it is read whole, how its end is found without reading it whole,
 * and the bytes of an append. Internal to the file store.
 * @module
 */
import { randomBytes } from "node:crypto";
import { readFile, type FileHandle } from "node:fs/promises";
import { KilnError } from "../errors.js";
import { corrupt, type JournalFolded } from "./file-format.js";
import type { AppendedJournalEntry, JournalEntry } from "./types.js";

const JOURNAL_FORMAT = 1;
/** How much of the journal file's end one read takes when looking for its last line (bytes). */
const TAIL_CHUNK_BYTES = 64 * 1024;
const NEWLINE = 0x0a;

/** A journal file as read: its complete lines (a torn last line is left out). */
export interface LoadedJournal {
  /** The file's id (its header's); undefined when not even the header line is complete. */
  readonly id: string | undefined;
  /** Its header's {@link JournalHeader.lastSeq}. */
  readonly lastSeq: Readonly<Record<string, number>> | undefined;
  /** The bytes of its complete lines. */
  readonly bytes: number;
  /** Its entries, each with the byte offset where its line ends. */
  readonly entries: readonly (AppendedJournalEntry & { readonly endsAt: number })[];
}

/** The journal file's first line. */
interface JournalHeader {
  readonly kilnJournal: number;
  /** Random: tells this journal file from an earlier one at the same path. */
  readonly id: string;
  /**
   * The last `seq` of each rollout that was running when an update made this file (its entries
   * folded into the state file): an append numbers on from it without reading the state file.
   * Absent in a file an append made.
   */
  readonly lastSeq?: Readonly<Record<string, number>>;
}

/**
 * Parses a journal file's complete lines (`buffer` up to `complete`): a header, then one entry per line.
 * @throws KilnError STATE_CORRUPT when a complete line is not one Kiln wrote
 */
export function parseJournal(file: string, buffer: Buffer, complete: number): LoadedJournal {
  const entries: (AppendedJournalEntry & { endsAt: number })[] = [];
  let header: JournalHeader | undefined;
  let start = 0;
  let line = 0;
  while (start < complete) {
    const end = buffer.indexOf(NEWLINE, start);
    line += 1;
    let parsed: unknown;
    try {
      parsed = JSON.parse(buffer.toString("utf8", start, end));
    } catch (error) {
      throw corrupt(file, `line ${line}: ${(error as Error).message}`, error);
    }
    if (line === 1) header = journalHeader(file, parsed);
    else entries.push({ ...journalLine(file, parsed, `line ${line}`), endsAt: end + 1 });
    start = end + 1;
  }
  return { id: header?.id, lastSeq: header?.lastSeq, bytes: complete, entries };
}

/** A parsed first line of a journal file, checked. */
function journalHeader(file: string, parsed: unknown): JournalHeader {
  const header = parsed as Partial<JournalHeader> | null;
  if (header?.kilnJournal !== JOURNAL_FORMAT || typeof header.id !== "string" || (header.lastSeq !== undefined && typeof header.lastSeq !== "object")) {
    throw corrupt(file, `its first line is not a journal header of format ${JOURNAL_FORMAT}`);
  }
  return header as JournalHeader;
}

/** A parsed line of a journal file after its header, checked. `where` names it for the message (`line 3`). */
function journalLine(file: string, parsed: unknown, where: string): AppendedJournalEntry {
  const appended = parsed as Partial<AppendedJournalEntry> | null;
  if (typeof appended?.rolloutId !== "string" || typeof appended.entry?.seq !== "number") throw corrupt(file, `${where} is not a journal entry`);
  return { rolloutId: appended.rolloutId, entry: appended.entry };
}

/**
 * Reads a journal file's complete lines; undefined when there is no journal file. Whatever
 * follows the last newline is a torn line (its writer died in the middle of it): not an entry.
 * @throws KilnError STATE_CORRUPT, STATE_UNAVAILABLE
 */
export async function loadJournalFile(file: string): Promise<LoadedJournal | undefined> {
  let buffer: Buffer;
  try {
    buffer = await readFile(file);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new KilnError("STATE_UNAVAILABLE", `Cannot read the journal file ${file}: check its permissions.`, { cause: error });
  }
  return parseJournal(file, buffer, buffer.lastIndexOf(NEWLINE) + 1);
}

/** The journal's entries that a state file (folded `folded`) does not already hold. */
export function unfoldedEntries(journal: LoadedJournal | undefined, folded: JournalFolded | undefined): AppendedJournalEntry[] {
  if (!journal) return [];
  const skip = folded && folded.id === journal.id ? folded.bytes : 0;
  return journal.entries.filter((appended) => appended.endsAt > skip);
}

/** Reads `buffer.length` bytes from `position`, however many reads that takes. */
async function readFully(handle: FileHandle, buffer: Buffer, position: number): Promise<void> {
  let done = 0;
  while (done < buffer.length) {
    const { bytesRead } = await handle.read(buffer, done, buffer.length - done, position + done);
    if (bytesRead === 0) throw new Error(`the file ended ${buffer.length - done} bytes early`);
    done += bytesRead;
  }
}

/** The end of a journal file open for appending, as {@link readJournalTail} finds it. */
export interface JournalTail {
  /** The offset just after the last newline: where the complete lines end (a torn line may follow). */
  readonly end: number;
  /** The last complete line, when it is an entry (not the header). */
  readonly last: AppendedJournalEntry | undefined;
  /** The header's {@link JournalHeader.lastSeq}, when the header is the only complete line. */
  readonly lastSeq: Readonly<Record<string, number>> | undefined;
}

/**
 * Finds the end of a journal file of `size` bytes: reads backwards in chunks, as far as the start
 * of its last complete line, so the cost is that line's length, not the file's.
 * @throws KilnError STATE_CORRUPT when that line is not an entry
 */
export async function readJournalTail(file: string, handle: FileHandle, size: number): Promise<JournalTail> {
  let buffer = Buffer.alloc(0);
  let start = size;
  let end: number | undefined;
  while (start > 0) {
    const from = Math.max(0, start - TAIL_CHUNK_BYTES);
    const chunk = Buffer.alloc(start - from);
    await readFully(handle, chunk, from);
    buffer = buffer.length === 0 ? chunk : Buffer.concat([chunk, buffer]);
    start = from;
    if (end === undefined) {
      const newline = buffer.lastIndexOf(NEWLINE);
      if (newline >= 0) end = start + newline + 1;
    }
    if (end === undefined) continue;
    const lineEnd = end - start - 1;
    const previous = lineEnd > 0 ? buffer.lastIndexOf(NEWLINE, lineEnd - 1) : -1;
    if (previous < 0 && start > 0) continue;
    let parsed: unknown;
    try {
      parsed = JSON.parse(buffer.toString("utf8", previous + 1, lineEnd));
    } catch (error) {
      throw corrupt(file, `its last line: ${(error as Error).message}`, error);
    }
    // The first line of the file is the header, not an entry.
    if (previous < 0) return { end, last: undefined, lastSeq: journalHeader(file, parsed).lastSeq };
    return { end, last: journalLine(file, parsed, "its last line"), lastSeq: undefined };
  }
  return { end: end ?? 0, last: undefined, lastSeq: undefined };
}

/** A journal file's complete lines, read through a handle open on it (for an append that needs them all). */
export async function readJournalThrough(file: string, handle: FileHandle, complete: number): Promise<LoadedJournal | undefined> {
  if (complete === 0) return undefined;
  const buffer = Buffer.alloc(complete);
  await readFully(handle, buffer, 0);
  return parseJournal(file, buffer, complete);
}

/** A new journal file's header line (a new random id), with the last seq of each running rollout when an update makes it. */
export function journalHeaderText(lastSeq?: Readonly<Record<string, number>>): string {
  return `${JSON.stringify({ kilnJournal: JOURNAL_FORMAT, id: randomBytes(8).toString("hex"), ...(lastSeq ? { lastSeq } : {}) } satisfies JournalHeader)}\n`;
}

/**
 * The bytes that append `entry` to rollout `rolloutId`'s journal: its line, after a header when
 * the file has no complete line yet.
 */
export function journalLineBytes(rolloutId: string, entry: JournalEntry, withHeader: boolean): Buffer {
  return Buffer.from(`${withHeader ? journalHeaderText() : ""}${JSON.stringify({ rolloutId, entry } satisfies AppendedJournalEntry)}\n`);
}
