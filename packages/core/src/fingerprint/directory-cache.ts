/**
 * The directory cache: what each folder of a build context held the last time it was listed, and
 * what the ignore rules kept of it, so that a folder whose stat data is unchanged is neither listed
 * (`readdir`) nor matched against the rules again. Its files are still looked at (`lstat`) one by
 * one: a file's content can change without its folder changing.
 *
 * The same idea as git's untracked cache (`core.untrackedCache`): adding, removing or renaming an
 * entry of a folder sets the folder's mtime, so an unchanged mtime (with the same ctime and inode,
 * and old enough to rule out a change within one tick of the filesystem's clock) means an unchanged
 * listing. The ignore rules are part of the key: other rules, no cached listing is used.
 *
 * @see https://git-scm.com/docs/git-update-index#_untracked_cache
 * @module
 */
import { createHash } from "node:crypto";
import { RACY_MARGIN_MS, checksumOf, parseCacheHeader, readCacheFile, writeCacheFile, type StatTuple } from "./stat-cache.js";

const CACHE_FORMAT = "kiln-fingerprint-directory-cache";
const CACHE_VERSION = 1;

/** The stat data of a folder that says whether its listing may have changed (from `lstat`; ms since the epoch). */
export type DirectoryStat = Pick<StatTuple, "mtimeMs" | "ctimeMs" | "ino">;

/**
 * One folder's listing as the walk used it: the subfolders the rules let it enter, the files and
 * symlinks the rules keep, and the entries whose type the listing did not give (looked at, then
 * matched, every time). Names only, in the order the listing gave them.
 */
export interface DirectoryListing {
  readonly stat: DirectoryStat;
  readonly directories: readonly string[];
  readonly files: readonly string[];
  readonly unknown: readonly string[];
}

/** A loaded directory cache: when the run that wrote it began, its rules' key, and its listings by folder. */
export interface DirectoryCache {
  readonly startedAtMs: number;
  /** Identifies the ignore rules the listings were filtered with (see {@link directoryCacheKey}). */
  readonly rulesKey: string;
  readonly size: number;
  /** The listing of `dirRel` (POSIX relative path; `""` is the context's root). */
  get(dirRel: string): DirectoryListing | undefined;
}

/**
 * The directory cache as one walk uses it ({@link DirectoryCache}): the listings of an earlier run
 * it may reuse, and, filled by the walk, every folder's listing (reused or new) for the next run.
 */
export interface DirectoryWalk {
  /** An earlier run's listings, filtered with the same ignore rules; `undefined` lists every folder. */
  readonly cached: DirectoryCache | undefined;
  /** Filled by the walk: each folder's listing by POSIX relative path (`""` is the root). */
  readonly listings: Map<string, DirectoryListing>;
  /** Filled by the walk: how many folders were listed with `readdir` rather than reused. */
  listed: number;
}

/**
 * The key of a set of ignore rules: sha256 (hex) of everything that decides what the walk keeps
 * (the .dockerignore text, the paths always kept, the paths excluded). Listings filtered with other
 * rules are never used.
 */
export function directoryCacheKey(parts: { dockerignore: string | undefined; alwaysIncluded: readonly string[]; excluded: readonly string[] }): string {
  return createHash("sha256").update(JSON.stringify([CACHE_VERSION, parts.dockerignore ?? null, parts.alwaysIncluded, parts.excluded])).digest("hex");
}

/**
 * Whether a cached listing may stand for the folder without listing it: the folder's stat data is
 * unchanged and its mtime is older than `startedAtMs - marginMs` (the racy-git guard of the stat
 * cache, {@link RACY_MARGIN_MS}: an entry added in the same clock tick as the listing would leave
 * the mtime as it was).
 */
export function isListingUsable(listing: DirectoryListing, stat: DirectoryStat, startedAtMs: number, marginMs: number = RACY_MARGIN_MS): boolean {
  return (
    listing.stat.mtimeMs === stat.mtimeMs &&
    listing.stat.ctimeMs === stat.ctimeMs &&
    listing.stat.ino === stat.ino &&
    listing.stat.mtimeMs < startedAtMs - marginMs
  );
}

/**
 * Where the directory cache of a stat cache file lives: beside it, `<name>.directory-cache` for a
 * `<name>.stat-cache` (Kiln's `.kiln/cache/fingerprint-<service>@<environment>.stat-cache`), else
 * the stat cache's name with `.directory-cache` added.
 */
export function directoryCacheFileOf(statCacheFile: string): string {
  return statCacheFile.endsWith(".stat-cache") ? `${statCacheFile.slice(0, -".stat-cache".length)}.directory-cache` : `${statCacheFile}.directory-cache`;
}

/** A name or folder path that cannot be written on a line of fields separated by tabs. */
const UNWRITABLE = /[\t\n]/;

/**
 * The text of a directory cache: a header line
 * `kiln-fingerprint-directory-cache 1 <startedAtMs> <rulesKey> <folders> <sha256 hex of the lines below>`,
 * then one line per folder: `<mtimeMs> <ctimeMs> <ino> <path>`, then a tab and each entry as its
 * kind (`d` folder, `f` file or symlink, `?` unknown) and its name, separated by tabs. The root is
 * the path `.`. A folder whose path or any entry's name holds a tab or newline is left out (and so
 * listed on every run).
 */
export function formatDirectoryCache(startedAtMs: number, rulesKey: string, listings: Iterable<[string, DirectoryListing]>): string {
  const lines: string[] = [];
  for (const [dirRel, listing] of listings) {
    const names = [...listing.directories.map((name) => `d${name}`), ...listing.files.map((name) => `f${name}`), ...listing.unknown.map((name) => `?${name}`)];
    if (UNWRITABLE.test(dirRel) || names.some((name) => UNWRITABLE.test(name))) continue;
    const { mtimeMs, ctimeMs, ino } = listing.stat;
    lines.push(`${mtimeMs} ${ctimeMs} ${ino} ${dirRel === "" ? "." : dirRel}${names.map((name) => `\t${name}`).join("")}\n`);
  }
  const body = lines.join("");
  return `${CACHE_FORMAT} ${CACHE_VERSION} ${startedAtMs} ${rulesKey} ${lines.length} ${checksumOf(body)}\n${body}`;
}

/** The listing on the line from `start` to `end` (after its path), or `undefined` when a number is not one. */
function parseListing(text: string, start: number, pathStart: number, pathEnd: number, end: number): DirectoryListing | undefined {
  const [mtimeMs, ctimeMs, ino] = text.slice(start, pathStart - 1).split(" ").map(Number) as [number, number, number];
  if (![mtimeMs, ctimeMs, ino].every(Number.isFinite)) return undefined;
  const directories: string[] = [];
  const files: string[] = [];
  const unknown: string[] = [];
  if (pathEnd < end) {
    for (const entry of text.slice(pathEnd + 1, end).split("\t")) {
      const name = entry.slice(1);
      if (name === "") return undefined;
      if (entry[0] === "d") directories.push(name);
      else if (entry[0] === "f") files.push(name);
      else if (entry[0] === "?") unknown.push(name);
      else return undefined;
    }
  }
  return { stat: { mtimeMs, ctimeMs, ino }, directories, files, unknown };
}

/**
 * Parses a directory cache's text ({@link formatDirectoryCache}): each line is indexed by its
 * folder's path and parsed when {@link DirectoryCache.get} asks for it. A bad header, a checksum
 * that does not match, a line without its fields or a count that differs makes the whole text
 * unusable; a malformed line counts as no listing.
 *
 * @returns the cache, or why the text is not one
 */
export function parseDirectoryCache(text: string): { cache?: DirectoryCache; problem?: string } {
  const header = parseCacheHeader(text, CACHE_FORMAT, CACHE_VERSION, 1);
  if ("problem" in header) return header;
  const { headerEnd, startedAtMs, declared } = header;
  const rulesKey = header.extra[0] ?? "";
  const lines = new Map<string, [start: number, pathStart: number, pathEnd: number, end: number]>();
  let start = headerEnd + 1;
  while (start < text.length) {
    const end = text.indexOf("\n", start);
    if (end === -1) return { problem: "the file was cut short (its last line has no end)" };
    let pathStart = start;
    for (let field = 0; field < 3; field++) {
      const space = text.indexOf(" ", pathStart);
      if (space === -1 || space >= end) return { problem: `line ${lines.size + 2} has fewer than 4 fields` };
      pathStart = space + 1;
    }
    const tab = text.indexOf("\t", pathStart);
    const pathEnd = tab === -1 || tab > end ? end : tab;
    const dirPath = text.slice(pathStart, pathEnd);
    lines.set(dirPath === "." ? "" : dirPath, [start, pathStart, pathEnd, end]);
    start = end + 1;
  }
  if (lines.size !== declared) return { problem: `the header counts ${declared} folders but the file holds ${lines.size}` };
  return {
    cache: {
      startedAtMs,
      rulesKey,
      size: lines.size,
      get(dirRel) {
        const line = lines.get(dirRel);
        return line === undefined ? undefined : parseListing(text, ...line);
      },
    },
  };
}

/**
 * Reads a directory cache. A missing, unreadable, corrupt or foreign file gives no cache and the
 * reason, never an error: the cache only saves work, and the next write replaces it.
 */
export async function readDirectoryCache(file: string): Promise<{ cache?: DirectoryCache; problem?: string }> {
  return readCacheFile(file, parseDirectoryCache);
}

/**
 * Writes a directory cache atomically ({@link writeCacheFile}); creates the folder.
 * @param startedAtMs - when the run that listed these folders began (ms since the epoch)
 */
export async function writeDirectoryCache(file: string, startedAtMs: number, rulesKey: string, listings: Iterable<[string, DirectoryListing]>): Promise<void> {
  await writeCacheFile(file, formatDirectoryCache(startedAtMs, rulesKey, listings));
}
