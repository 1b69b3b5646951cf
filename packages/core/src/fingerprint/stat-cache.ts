import { randomBytes } from "node:crypto";
import { mkdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import path from "node:path";

/**
 * How long before a run began a file's mtime must lie for its cache entry to be trusted next time,
 * in milliseconds (the "racy git" guard).
 *
 * A file rewritten within one tick of the filesystem's timestamp clock, with the same size, keeps
 * the same stat data, so the cache alone cannot see the change. An entry is therefore trusted only
 * when the file's mtime is older than the start of the run that hashed it minus this margin; newer
 * entries are hashed again on the next run (and then settle once they are old enough). 2 s covers
 * the coarsest common granularity (FAT's 2 s; HFS+ and ext3 have 1 s; ext4, APFS, NTFS and tmpfs
 * are finer, with a kernel clock tick of a few ms) and small clock skew with network filesystems.
 *
 * @see https://git-scm.com/docs/racy-git
 */
export const RACY_MARGIN_MS = 2000;

/** The cache file's format tag and version; any other content is treated as an empty cache. */
const CACHE_FORMAT = "kiln-fingerprint-stat-cache";
const CACHE_VERSION = 1;

/** The stat data a cache entry is keyed by (all from `lstat`; times in ms since the epoch). */
export interface StatTuple {
  size: number;
  mtimeMs: number;
  ctimeMs: number;
  ino: number;
  mode: number;
}

/** One file's stat data and the sha256 (hex) of its content when it had that stat data. */
export interface StatCacheEntry extends StatTuple {
  sha256: string;
}

/** A loaded cache: when the run that wrote it began, and its entries by POSIX relative path. */
export interface StatCache {
  startedAtMs: number;
  entries: Map<string, StatCacheEntry>;
}

type SerializedEntry = [size: number, mtimeMs: number, ctimeMs: number, ino: number, mode: number, sha256: string];

/**
 * Whether a cached hash may stand for the file without reading it: the stat tuple is unchanged and
 * the entry is not racy (its mtime is older than `startedAtMs - marginMs`).
 *
 * Only the mtime decides raciness, as in git: writing content always sets the mtime to the current
 * time, so a file with an old mtime that is written again gets a different mtime; and a change that
 * resets the mtime (`touch -d`, `cp -p`, `tar x`) changes the ctime, which is part of the tuple.
 *
 * @param startedAtMs - when the run that wrote the entry began (ms since the epoch)
 * @param marginMs - see {@link RACY_MARGIN_MS}
 */
export function isCacheEntryUsable(
  entry: StatCacheEntry,
  stat: StatTuple,
  startedAtMs: number,
  marginMs: number = RACY_MARGIN_MS,
): boolean {
  return (
    entry.size === stat.size &&
    entry.mtimeMs === stat.mtimeMs &&
    entry.ctimeMs === stat.ctimeMs &&
    entry.ino === stat.ino &&
    entry.mode === stat.mode &&
    entry.mtimeMs < startedAtMs - marginMs
  );
}

function isSerializedEntry(value: unknown): value is SerializedEntry {
  return (
    Array.isArray(value) &&
    value.length === 6 &&
    value.slice(0, 5).every((item) => typeof item === "number" && Number.isFinite(item)) &&
    typeof value[5] === "string" &&
    /^[0-9a-f]{64}$/.test(value[5])
  );
}

/**
 * Reads a stat cache. A missing, unreadable, corrupt or foreign-version file gives `undefined` and
 * the reason, never an error: the cache only saves work.
 */
export async function readStatCache(file: string): Promise<{ cache?: StatCache; problem?: string }> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return {};
    return { problem: `cannot read ${file}: ${(error as Error).message}` };
  }
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (error) {
    return { problem: `${file} is not valid JSON: ${(error as Error).message}` };
  }
  const record = data as { format?: unknown; version?: unknown; startedAtMs?: unknown; entries?: unknown };
  if (
    typeof data !== "object" ||
    data === null ||
    record.format !== CACHE_FORMAT ||
    record.version !== CACHE_VERSION ||
    typeof record.startedAtMs !== "number" ||
    typeof record.entries !== "object" ||
    record.entries === null
  ) {
    return { problem: `${file} is not a version ${CACHE_VERSION} fingerprint stat cache` };
  }
  const entries = new Map<string, StatCacheEntry>();
  for (const [relPath, value] of Object.entries(record.entries)) {
    if (!isSerializedEntry(value)) continue;
    const [size, mtimeMs, ctimeMs, ino, mode, sha256] = value;
    entries.set(relPath, { size, mtimeMs, ctimeMs, ino, mode, sha256 });
  }
  return { cache: { startedAtMs: record.startedAtMs, entries } };
}

/**
 * Writes a stat cache atomically: to a temporary file beside it, then renamed over it, so a reader
 * sees the old cache or the new one, never half of one. Creates the folder.
 *
 * @param startedAtMs - when the run that hashed these entries began (ms since the epoch)
 * @param entries - by POSIX relative path
 */
export async function writeStatCache(
  file: string,
  startedAtMs: number,
  entries: Iterable<[string, StatCacheEntry]>,
): Promise<void> {
  const serialized: Record<string, SerializedEntry> = {};
  for (const [relPath, entry] of entries) {
    serialized[relPath] = [entry.size, entry.mtimeMs, entry.ctimeMs, entry.ino, entry.mode, entry.sha256];
  }
  const text = JSON.stringify({ format: CACHE_FORMAT, version: CACHE_VERSION, startedAtMs, entries: serialized });
  await mkdir(path.dirname(file), { recursive: true });
  const temporary = `${file}.${process.pid}.${randomBytes(6).toString("hex")}.tmp`;
  try {
    await writeFile(temporary, text, { encoding: "utf8", mode: 0o644 });
    await rename(temporary, file);
  } catch (error) {
    await rm(temporary, { force: true });
    throw error;
  }
}
