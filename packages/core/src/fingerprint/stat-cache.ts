import { createHash, randomBytes } from "node:crypto";
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

/**
 * The cache file's format tag and version: the first two words of its first line. Any other
 * content (version 1 was a JSON document) is treated as an empty cache.
 */
const CACHE_FORMAT = "kiln-fingerprint-stat-cache";
const CACHE_VERSION = 2;

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

/**
 * A loaded cache: when the run that wrote it began, and its entries by POSIX relative path. An
 * entry's line is only indexed when the cache is read and parsed when it is asked for, so a run
 * pays for the files it looks up, not for building every entry.
 */
export interface StatCache {
  readonly startedAtMs: number;
  /** How many entry lines the cache holds (malformed ones included). */
  readonly size: number;
  /** The entry of `relPath`; `undefined` when there is none or its line is malformed. */
  get(relPath: string): StatCacheEntry | undefined;
}

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

const SHA256_HEX_LENGTH = 64;

/**
 * The checksum the header carries: sha256 (hex) of everything after the header line. One native
 * pass over the file (a few ms for 3 MB) finds any change or damage, where checking each entry's
 * fields in JavaScript would cost more on every run and still miss a changed number.
 */
export function checksumOf(body: string): string {
  return createHash("sha256").update(body, "utf8").digest("hex");
}

/** A number field of an entry line; NaN when it is empty or not a finite number. */
function numberField(text: string, start: number, end: number): number {
  if (end <= start) return Number.NaN;
  const value = Number(text.slice(start, end));
  return Number.isFinite(value) ? value : Number.NaN;
}

/** How many space-separated fields come before the path on an entry line. */
const ENTRY_FIELDS = 6;

/**
 * The entry of the line starting at `start` (see {@link formatStatCache}), or `undefined` when the
 * line is malformed (a number that is not one, a digest that is not 64 characters long). The
 * digest's characters are not checked one by one: the file's checksum vouches for them.
 */
function parseEntryLine(text: string, start: number): StatCacheEntry | undefined {
  const numbers: number[] = [];
  let at = start;
  for (let field = 0; field < ENTRY_FIELDS - 1; field++) {
    const space = text.indexOf(" ", at);
    const value = numberField(text, at, space);
    if (Number.isNaN(value)) return undefined;
    numbers.push(value);
    at = space + 1;
  }
  const shaEnd = text.indexOf(" ", at);
  if (shaEnd - at !== SHA256_HEX_LENGTH) return undefined;
  const [size, mtimeMs, ctimeMs, ino, mode] = numbers as [number, number, number, number, number];
  return { size, mtimeMs, ctimeMs, ino, mode, sha256: text.slice(at, shaEnd) };
}

/** The header of a cache file once checked: where it ends, its fields, and the fields `extra` asked for. */
export interface CacheHeader {
  readonly headerEnd: number;
  readonly startedAtMs: number;
  readonly declared: number;
  readonly extra: readonly string[];
}

/**
 * Checks the header line of a cache file, `<format> <version> <startedAtMs> <extra fields…> <lines> <sha256 hex of the lines below>`,
 * and the checksum of what follows it: any difference (another format or version, a field missing
 * or too many, a changed, damaged or cut-short body) is a problem, and the file is not used.
 * @param extraFields - how many fields of the cache's own come after `startedAtMs` (each a 64-hex-digit key)
 */
export function parseCacheHeader(text: string, format: string, version: number, extraFields: number): CacheHeader | { problem: string } {
  const headerEnd = text.indexOf("\n");
  const fields = (headerEnd === -1 ? text : text.slice(0, headerEnd)).split(" ");
  const [name, versionText, startedAtText] = fields;
  const extra = fields.slice(3, 3 + extraFields);
  const [countText, checksum, ...rest] = fields.slice(3 + extraFields);
  const startedAtMs = Number(startedAtText);
  const declared = Number(countText);
  if (
    headerEnd === -1 ||
    name !== format ||
    versionText !== String(version) ||
    extra.length !== extraFields ||
    extra.some((field) => field.length !== SHA256_HEX_LENGTH) ||
    checksum?.length !== SHA256_HEX_LENGTH ||
    rest.length > 0 ||
    !Number.isFinite(startedAtMs) ||
    !Number.isSafeInteger(declared) ||
    declared < 0
  ) {
    return { problem: `not a version ${version} ${format.replace(/^kiln-/, "").replaceAll("-", " ")}` };
  }
  if (checksumOf(text.slice(headerEnd + 1)) !== checksum) return { problem: "its checksum does not match its content (the file was changed, damaged or cut short)" };
  return { headerEnd, startedAtMs, declared, extra };
}

/**
 * Parses the text of a version 2 stat cache (see {@link formatStatCache} for the layout) by fixed
 * separators, without a regex: the first line is the header; each further line is indexed by its
 * path (what follows the sixth space) and parsed only when {@link StatCache.get} asks for it. A
 * malformed entry line counts as no entry; a bad header, a checksum that does not match (a file
 * changed, damaged or cut short), a line without its six fields, a last line without its newline,
 * or another number of lines than the header says makes the whole text unusable.
 *
 * @returns the cache, or why the text is not one
 */
export function parseStatCache(text: string): { cache?: StatCache; problem?: string } {
  const header = parseCacheHeader(text, CACHE_FORMAT, CACHE_VERSION, 0);
  if ("problem" in header) return header;
  const { headerEnd, startedAtMs, declared } = header;
  const lineStarts = new Map<string, number>();
  let lines = 0;
  let start = headerEnd + 1;
  while (start < text.length) {
    const end = text.indexOf("\n", start);
    if (end === -1) return { problem: "the file was cut short (its last line has no end)" };
    let at = start;
    for (let field = 0; field < ENTRY_FIELDS; field++) {
      const space = text.indexOf(" ", at);
      if (space === -1 || space >= end) return { problem: `line ${lines + 2} has fewer than ${ENTRY_FIELDS + 1} fields` };
      at = space + 1;
    }
    lineStarts.set(text.slice(at, end), start);
    lines++;
    start = end + 1;
  }
  if (lines !== declared) return { problem: `the header counts ${declared} entries but the file holds ${lines}` };
  return {
    cache: {
      startedAtMs,
      size: lines,
      get(relPath) {
        const lineStart = lineStarts.get(relPath);
        return lineStart === undefined ? undefined : parseEntryLine(text, lineStart);
      },
    },
  };
}

/**
 * Reads a stat cache. A missing, unreadable, corrupt, cut-short or foreign-version file (version 1
 * caches, which were JSON, included) gives no cache and the reason, never an error: the cache only
 * saves work, and the next write replaces it.
 */
export async function readStatCache(file: string): Promise<{ cache?: StatCache; problem?: string }> {
  return readCacheFile(file, parseStatCache);
}

/**
 * Reads a cache file with `parse`: a missing file gives no cache; an unreadable or unparsable one
 * gives the reason, naming the file, never an error.
 */
export async function readCacheFile<T>(file: string, parse: (text: string) => { cache?: T; problem?: string }): Promise<{ cache?: T; problem?: string }> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return {};
    return { problem: `cannot read ${file}: ${(error as Error).message}` };
  }
  const parsed = parse(text);
  return parsed.problem === undefined ? parsed : { problem: `${file}: ${parsed.problem}` };
}

/**
 * The text of a stat cache: a header line
 * `kiln-fingerprint-stat-cache 2 <startedAtMs> <entries> <sha256 hex of the lines below>`, then one
 * line per entry, `<size> <mtimeMs> <ctimeMs> <ino> <mode> <sha256 hex> <path>`, each ending with a
 * newline. Numbers are written as JavaScript prints them (so they read back exactly);
 * the path, last, may hold spaces. A path with a newline cannot be written on one line: such a file
 * is left out (and so hashed again on every run).
 */
export function formatStatCache(startedAtMs: number, entries: Iterable<[string, StatCacheEntry]>): string {
  const lines: string[] = [];
  for (const [relPath, entry] of entries) {
    if (relPath.includes("\n")) continue;
    lines.push(`${entry.size} ${entry.mtimeMs} ${entry.ctimeMs} ${entry.ino} ${entry.mode} ${entry.sha256} ${relPath}\n`);
  }
  const body = lines.join("");
  return `${CACHE_FORMAT} ${CACHE_VERSION} ${startedAtMs} ${lines.length} ${checksumOf(body)}\n${body}`;
}

/**
 * Writes a stat cache ({@link formatStatCache}) atomically: to a temporary file beside it, then
 * renamed over it, so a reader sees the old cache or the new one, never half of one. Creates the
 * folder.
 *
 * @param startedAtMs - when the run that hashed these entries began (ms since the epoch)
 * @param entries - by POSIX relative path
 */
export async function writeStatCache(
  file: string,
  startedAtMs: number,
  entries: Iterable<[string, StatCacheEntry]>,
): Promise<void> {
  await writeCacheFile(file, formatStatCache(startedAtMs, entries));
}

/**
 * Writes a cache file atomically: to a temporary file beside it, then renamed over it, so a reader
 * sees the old file or the new one, never half of one. Creates the folder. No fsync: a cache lost
 * in a crash only costs the next run its work.
 */
export async function writeCacheFile(file: string, text: string): Promise<void> {
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
