/**
 * Walking and hashing a build context: the entries the ignore rules let through, read with a
 * bounded number of files open at once, reusing digests from the stat cache.
 * @module
 */
import { createHash } from "node:crypto";
import { constants, type Dirent, type Stats } from "node:fs";
import { lstat, open, readdir } from "node:fs/promises";
import path from "node:path";
import { KilnError, toKilnError } from "../errors.js";
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

/**
 * Walks the context level by level, keeping what `filter` includes, without entering pruned
 * directories. Reads folders, then looks at (lstat) the kept entries, each with bounded concurrency.
 */
export async function walkContext(run: Run, filter: ContextFilter): Promise<ContextEntry[]> {
  const entries: ContextEntry[] = [];
  let level: string[] = [""];
  while (level.length > 0) {
    const nextLevel: string[] = [];
    const toLook: Array<{ relPath: string; absPath: string }> = [];
    await run.forEach(level, async (dirRel) => {
      const dirAbs = dirRel === "" ? run.contextDir : path.join(run.contextDir, ...dirRel.split("/"));
      let dirents: Dirent[];
      try {
        dirents = await readdir(dirAbs, { withFileTypes: true });
      } catch (error) {
        throw unreadable(dirRel === "" ? "." : dirRel, run.contextDir, error);
      }
      for (const dirent of dirents) {
        const relPath = dirRel === "" ? dirent.name : `${dirRel}/${dirent.name}`;
        if (dirent.isDirectory()) {
          if (filter.entersDirectory(relPath)) nextLevel.push(relPath);
          continue;
        }
        // Sockets, FIFOs and devices are not part of a build context.
        if (dirent.isBlockDevice() || dirent.isCharacterDevice() || dirent.isFIFO() || dirent.isSocket()) continue;
        // Excluded files need no lstat; entries of unknown type (some filesystems) are looked at first.
        if ((dirent.isFile() || dirent.isSymbolicLink()) && !filter.includesFile(relPath)) continue;
        toLook.push({ relPath, absPath: path.join(dirAbs, dirent.name) });
      }
    });
    await run.forEach(toLook, async ({ relPath, absPath }) => {
      let stats: Stats;
      try {
        stats = await lstat(absPath);
      } catch (error) {
        throw unreadable(relPath, run.contextDir, error);
      }
      if (stats.isDirectory()) {
        if (filter.entersDirectory(relPath)) nextLevel.push(relPath);
        return;
      }
      if ((!stats.isFile() && !stats.isSymbolicLink()) || !filter.includesFile(relPath)) return;
      entries.push({
        relPath,
        absPath,
        kind: stats.isFile() ? "file" : "symlink",
        stat: toStatTuple(stats),
        executable: (stats.mode & 0o111) !== 0,
      });
    });
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
