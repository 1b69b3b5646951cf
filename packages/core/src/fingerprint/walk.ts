/**
 * Walking and hashing a build context: the entries the ignore rules let through, read with a
 * bounded number of files open at once, reusing digests from the stat cache.
 * @module
 */
import { createHash } from "node:crypto";
import { constants, lstat, lstatSync, readdir, readdirSync, type Dirent, type Stats } from "node:fs";
import { open } from "node:fs/promises";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { KilnError, toKilnError } from "../errors.js";
import { isListingUsable, type DirectoryListing, type DirectoryStat, type DirectoryWalk } from "./directory-cache.js";
import type { ContextFilter } from "./ignore.js";
import type { StatTuple } from "./stat-cache.js";

/** How many files (and directories) are open at once while walking and hashing. */
export const FINGERPRINT_MAX_OPEN_FILES = 32;

/** Read size when hashing a file, in bytes; memory use is this times the open-file limit. */
const READ_CHUNK_BYTES = 256 * 1024;

/** A file or symlink of the build context that the ignore rules keep. */
export interface ContextEntry {
  relPath: string;
  absPath: string;
  kind: "file" | "symlink";
  stat: StatTuple;
  executable: boolean;
  /** File: sha256 hex of the content; symlink: the link's target text. */
  digest?: string;
  /** Whether the digest may go into the stat cache (the file did not change while it was read). */
  cacheable?: boolean;
}

/**
 * How the walk makes its `readdir` and `lstat` calls:
 *
 * - `adaptive` (the default): synchronously, in batches of {@link WALK_BATCH_CALLS} with a turn of
 *   the event loop between them, while the calls are fast (the metadata is in the kernel's cache:
 *   a few µs each, where a call through libuv's thread pool costs 3 to 5 times that in CPU); from
 *   the first batch whose calls take more than {@link WALK_SLOW_CALL_MS} each on average (a cold
 *   cache, a network filesystem), with up to {@link FINGERPRINT_MAX_OPEN_FILES} calls in flight.
 * - `sequential`: synchronously in batches, never switching.
 * - `parallel`: always up to {@link FINGERPRINT_MAX_OPEN_FILES} calls in flight.
 *
 * Every mode finds the same entries: results are kept per item, not in completion order, and the
 * entries are sorted before anything is hashed.
 */
export type WalkMode = "adaptive" | "sequential" | "parallel";

/** Calls made synchronously in a row before the walk lets the event loop run (abort signals, I/O). */
export const WALK_BATCH_CALLS = 256;

/**
 * Mean time of one synchronous `lstat`, or of `readdir` per entry it returns, above which an
 * adaptive walk switches to calls in flight, in milliseconds: ~10 times a call served from the
 * kernel's cache on a laptop or CI machine; a disk seek or a network round trip takes far longer.
 */
export const WALK_SLOW_CALL_MS = 0.05;

/** Shared state of one run: the first failure, and a signal that stops every task after it. */
export class Run {
  readonly controller = new AbortController();
  failure: Error | undefined;

  /**
   * @param userSignal - the caller's signal, polled wherever the run checks whether it stopped; a
   *   listener on it would outlive the run (the caller's signal lives on: a deploy's, a server's)
   */
  constructor(
    readonly contextDir: string,
    private readonly userSignal: AbortSignal | undefined,
    /** How the walk calls the filesystem; an adaptive walk becomes `parallel` on slow storage. */
    public walkMode: WalkMode = "adaptive",
  ) {}

  /** Read buffers of {@link READ_CHUNK_BYTES}, reused: at most one per task in flight. */
  private readonly buffers: Buffer[] = [];

  takeBuffer(): Buffer {
    return this.buffers.pop() ?? Buffer.allocUnsafe(READ_CHUNK_BYTES);
  }

  returnBuffer(buffer: Buffer): void {
    this.buffers.push(buffer);
  }

  get stopped(): boolean {
    this.noticeAbort();
    return this.controller.signal.aborted;
  }

  /** Fails the run with ABORTED once the caller's signal has aborted. */
  private noticeAbort(): void {
    if (this.userSignal?.aborted && !this.controller.signal.aborted) {
      this.fail(new KilnError("ABORTED", "The fingerprint was cancelled.", { cause: this.userSignal.reason }));
    }
  }

  fail(error: unknown): void {
    this.failure ??= error instanceof Error ? error : toKilnError(error, "INTERNAL", "Fingerprinting failed");
    this.controller.abort();
  }

  /**
   * Calls `task` for each item with at most {@link FINGERPRINT_MAX_OPEN_FILES} calls in flight
   * (a fixed set of workers over a shared index: no promise per waiting item). Stops at the first
   * failure or abort, waits for the calls in flight, then throws that failure.
   */
  async forEach<T>(items: readonly T[], task: (item: T) => Promise<void>): Promise<void> {
    let next = 0;
    const worker = async (): Promise<void> => {
      while (!this.stopped && next < items.length) {
        const item = items[next++] as T;
        try {
          await task(item);
        } catch (error) {
          this.fail(error);
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(FINGERPRINT_MAX_OPEN_FILES, items.length) }, worker));
    this.throwIfFailed();
  }

  throwIfFailed(): void {
    this.noticeAbort();
    if (this.failure !== undefined) throw this.failure;
  }
}

/** The stat fields that decide whether a cached digest still holds. */
export function toStatTuple(stats: Stats): StatTuple {
  return { size: stats.size, mtimeMs: stats.mtimeMs, ctimeMs: stats.ctimeMs, ino: stats.ino, mode: stats.mode };
}

/** The `code` of a Node.js system error (`ENOENT`, ...), if `error` is one. */
export function errnoCode(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === "string" ? code : undefined;
}

/** A `BUILD_CONTEXT_INVALID` error for a path of the context that could not be read. */
export function unreadable(relPath: string, contextDir: string, error: unknown): KilnError {
  const code = errnoCode(error);
  const where = `"${relPath}" in the build context ${contextDir}`;
  const details = { path: relPath, contextDir, ...(code ? { errno: code } : {}) };
  if (code === "ENOENT" || code === "ENOTDIR" || code === "ELOOP") {
    return new KilnError(
      "BUILD_CONTEXT_INVALID",
      `${where} vanished or was replaced while it was being read. Stop whatever changes the context during the build (or exclude that path in .dockerignore), then try again.`,
      { cause: error, details, retryable: true },
    );
  }
  if (code === "EACCES" || code === "EPERM") {
    return new KilnError(
      "BUILD_CONTEXT_INVALID",
      `${where} cannot be read: permission denied. Make it readable for this user, or exclude it in .dockerignore.`,
      { cause: error, details },
    );
  }
  const detail = error instanceof Error ? error.message : String(error);
  return new KilnError(
    "BUILD_CONTEXT_INVALID",
    `${where} cannot be read (${detail}). Fix or remove it, or exclude it in .dockerignore.`,
    { cause: error, details },
  );
}

/** A filter that also drops the given context paths (POSIX, relative) and everything below them. */
export function withExclusions(filter: ContextFilter, excluded: readonly string[]): ContextFilter {
  if (excluded.length === 0) return filter;
  const hit = (relPath: string) => excluded.some((prefix) => relPath === prefix || relPath.startsWith(`${prefix}/`));
  return {
    includesFile: (relPath) => !hit(relPath) && filter.includesFile(relPath),
    entersDirectory: (relPath) => !hit(relPath) && filter.entersDirectory(relPath),
  };
}

/** Orders strings by UTF-16 code units, independent of locale (so a fingerprint is the same everywhere). */
export function compareCodeUnits(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** `fs.lstat` as a promise, without `fs/promises`' extra cost per call. */
function lstatAsync(absPath: string): Promise<Stats> {
  return new Promise((resolve, reject) => lstat(absPath, (error, stats) => (error ? reject(error) : resolve(stats))));
}

/** `fs.readdir` with file types as a promise, without `fs/promises`' extra cost per call. */
function readdirAsync(absPath: string): Promise<Dirent[]> {
  return new Promise((resolve, reject) => readdir(absPath, { withFileTypes: true }, (error, dirents) => (error ? reject(error) : resolve(dirents))));
}

/** Lets the event loop run (timers, abort signals, other requests of a server) between batches. */
function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/**
 * Makes one filesystem call per item, the way `run.walkMode` says ({@link WalkMode}), and hands
 * each item with its result to `handle`, which must not depend on the order of the items. A call
 * that throws fails the run with `failure(item, error)`. `call.units` says how much work a result
 * was (the entries a folder listing returned; 1 by default), for the slow-call check.
 */
async function callEach<T, R>(
  run: Run,
  items: readonly T[],
  call: { readonly sync: (item: T) => R; readonly async: (item: T) => Promise<R>; readonly units?: (result: R) => number },
  handle: (item: T, result: R) => void,
  failure: (item: T, error: unknown) => Error,
): Promise<void> {
  let index = 0;
  while (index < items.length && run.walkMode !== "parallel") {
    run.throwIfFailed();
    const end = Math.min(items.length, index + WALK_BATCH_CALLS);
    let units = 0;
    const started = performance.now();
    for (; index < end; index++) {
      const item = items[index] as T;
      let result: R;
      try {
        result = call.sync(item);
      } catch (error) {
        run.fail(failure(item, error));
        run.throwIfFailed();
        return;
      }
      units += Math.max(1, call.units?.(result) ?? 1);
      handle(item, result);
    }
    if (run.walkMode === "adaptive" && (performance.now() - started) / units > WALK_SLOW_CALL_MS) run.walkMode = "parallel";
    if (index < items.length) await yieldToEventLoop();
  }
  run.throwIfFailed();
  if (index >= items.length) return;
  await run.forEach(index === 0 ? items : items.slice(index), async (item) => {
    let result: R;
    try {
      result = await call.async(item);
    } catch (error) {
      throw failure(item, error);
    }
    handle(item, result);
  });
}

/**
 * Walks the context level by level, keeping what `filter` includes, without entering pruned
 * directories. Reads folders, then looks at (lstat) the kept entries, each the way
 * `run.walkMode` says ({@link WalkMode}). The entries come in no particular order.
 *
 * With `directories`, each folder is looked at first and, when its stat data says its listing is
 * the cached one ({@link isListingUsable}), the cached listing is used without `readdir` or the
 * ignore rules; the kept files are looked at either way.
 */
export async function walkContext(run: Run, filter: ContextFilter, directories?: DirectoryWalk): Promise<ContextEntry[]> {
  const entries: ContextEntry[] = [];
  let level: string[] = [""];
  const absoluteDir = (dirRel: string) => (dirRel === "" ? run.contextDir : path.join(run.contextDir, ...dirRel.split("/")));
  while (level.length > 0) {
    const nextLevel: string[] = [];
    // `checked`: the ignore rules were asked already (the listing said file or symlink).
    const toLook: Array<{ relPath: string; absPath: string; checked: boolean }> = [];
    const keep = (dirRel: string, listing: Omit<DirectoryListing, "stat">): void => {
      const dirAbs = absoluteDir(dirRel);
      const relPathOf = (name: string) => (dirRel === "" ? name : `${dirRel}/${name}`);
      for (const name of listing.directories) nextLevel.push(relPathOf(name));
      // A name from a listing has no separator: no path.join (and its normalising) needed.
      for (const name of listing.files) toLook.push({ relPath: relPathOf(name), absPath: `${dirAbs}${path.sep}${name}`, checked: true });
      for (const name of listing.unknown) toLook.push({ relPath: relPathOf(name), absPath: `${dirAbs}${path.sep}${name}`, checked: false });
    };
    let toList = level;
    const statOf = new Map<string, DirectoryStat>();
    if (directories) {
      toList = [];
      await callEach(
        run,
        level,
        { sync: (dirRel) => lstatSync(absoluteDir(dirRel)), async: (dirRel) => lstatAsync(absoluteDir(dirRel)) },
        (dirRel, stats) => {
          const stat = { mtimeMs: stats.mtimeMs, ctimeMs: stats.ctimeMs, ino: stats.ino };
          const cache = directories.cached;
          const cached = cache?.get(dirRel);
          if (cache && cached && stats.isDirectory() && isListingUsable(cached, stat, cache.startedAtMs)) {
            directories.listings.set(dirRel, cached);
            keep(dirRel, cached);
          } else {
            statOf.set(dirRel, stat);
            toList.push(dirRel);
          }
        },
        (dirRel, error) => unreadable(dirRel === "" ? "." : dirRel, run.contextDir, error),
      );
    }
    await callEach(
      run,
      toList,
      {
        sync: (dirRel) => readdirSync(absoluteDir(dirRel), { withFileTypes: true }),
        async: (dirRel) => readdirAsync(absoluteDir(dirRel)),
        units: (dirents) => dirents.length,
      },
      (dirRel, dirents) => {
        const listing = { directories: [] as string[], files: [] as string[], unknown: [] as string[] };
        for (const dirent of dirents) {
          const relPath = dirRel === "" ? dirent.name : `${dirRel}/${dirent.name}`;
          if (dirent.isDirectory()) {
            if (filter.entersDirectory(relPath)) listing.directories.push(dirent.name);
            continue;
          }
          // Sockets, FIFOs and devices are not part of a build context.
          if (dirent.isBlockDevice() || dirent.isCharacterDevice() || dirent.isFIFO() || dirent.isSocket()) continue;
          // Excluded files need no lstat; entries of unknown type (some filesystems) are looked at first.
          if (!dirent.isFile() && !dirent.isSymbolicLink()) listing.unknown.push(dirent.name);
          else if (filter.includesFile(relPath)) listing.files.push(dirent.name);
        }
        keep(dirRel, listing);
        const stat = statOf.get(dirRel);
        if (directories && stat) {
          directories.listings.set(dirRel, { stat, ...listing });
          directories.listed++;
        }
      },
      (dirRel, error) => unreadable(dirRel === "" ? "." : dirRel, run.contextDir, error),
    );
    await callEach(
      run,
      toLook,
      { sync: ({ absPath }) => lstatSync(absPath), async: ({ absPath }) => lstatAsync(absPath) },
      ({ relPath, absPath, checked }, stats) => {
        if (stats.isDirectory()) {
          if (filter.entersDirectory(relPath)) nextLevel.push(relPath);
          return;
        }
        if (!stats.isFile() && !stats.isSymbolicLink()) return;
        if (!checked && !filter.includesFile(relPath)) return;
        entries.push({
          relPath,
          absPath,
          kind: stats.isFile() ? "file" : "symlink",
          stat: toStatTuple(stats),
          executable: (stats.mode & 0o111) !== 0,
        });
      },
      ({ relPath }, error) => unreadable(relPath, run.contextDir, error),
    );
    level = nextLevel;
  }
  return entries;
}

/**
 * Hashes one regular file, reading it in chunks of at most {@link READ_CHUNK_BYTES} into a buffer
 * of the run's pool (a small file takes one read). Returns the bytes read.
 *
 * The stat cache keeps the stat data seen before the read: if the file is written during or after
 * the read, its mtime moves on and the next run reads it again. A file whose length differs from
 * that stat data was caught in the middle of a change and is not cached at all.
 */
export async function hashFile(run: Run, entry: ContextEntry): Promise<number> {
  let bytes = 0;
  const buffer = run.takeBuffer();
  try {
    const handle = await open(entry.absPath, constants.O_RDONLY | (constants.O_NOFOLLOW ?? 0));
    try {
      const hash = createHash("sha256");
      for (;;) {
        if (run.stopped) throw run.failure ?? new KilnError("ABORTED", "The fingerprint was cancelled.");
        const { bytesRead } = await handle.read(buffer, 0, buffer.length, null);
        if (bytesRead === 0) break;
        hash.update(buffer.subarray(0, bytesRead));
        bytes += bytesRead;
        // A short read of a regular file is its end; skip the extra read that would say so.
        if (bytesRead < buffer.length && bytes >= entry.stat.size) break;
      }
      entry.digest = hash.digest("hex");
      entry.cacheable = bytes === entry.stat.size;
    } finally {
      await handle.close();
    }
  } catch (error) {
    if (error instanceof KilnError) throw error;
    throw unreadable(entry.relPath, run.contextDir, error);
  } finally {
    run.returnBuffer(buffer);
  }
  return bytes;
}
