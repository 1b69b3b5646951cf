import { createHash } from "node:crypto";
import { constants, type Dirent, type Stats } from "node:fs";
import { lstat, open, readdir, readFile, readlink, stat } from "node:fs/promises";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { KilnError, toKilnError } from "../errors.js";
import { silentLogger, type Logger } from "../logger.js";
import { resolveBaseImages } from "./dockerfile.js";
import { createContextFilter, type ContextFilter } from "./ignore.js";
import {
  isCacheEntryUsable,
  readStatCache,
  writeStatCache,
  type StatCache,
  type StatCacheEntry,
  type StatTuple,
} from "./stat-cache.js";

/**
 * The first line of every hashed manifest. Change it whenever what is hashed, or how, changes, so
 * an old fingerprint can never be taken for a new one.
 */
const MANIFEST_HEADER = "kiln-fingerprint/v1";

/** How many files (and directories) are open at once while walking and hashing. */
export const FINGERPRINT_MAX_OPEN_FILES = 32;

/** Read size when hashing a file, in bytes; memory use is this times the open-file limit. */
const READ_CHUNK_BYTES = 256 * 1024;

/** What {@link fingerprintBuild} hashes. */
export interface FingerprintOptions {
  /** Absolute path of the build context folder. */
  contextDir: string;
  /** Absolute path of the Dockerfile; it may lie outside {@link FingerprintOptions.contextDir}. */
  dockerfilePath: string;
  /** Build arguments (`--build-arg NAME=value`); their order does not matter. @defaultValue `{}` */
  args?: Record<string, string>;
  /** The build stage to stop at (`--target`). @defaultValue the last stage */
  stage?: string;
  /**
   * Where to keep the stat cache (a JSON file; its folder is created). Files whose stat data
   * (size, mtime, ctime, inode, mode) match the cache are not read again. A missing, corrupt or
   * foreign-version cache is treated as empty. @defaultValue no cache: every file is read
   */
  cacheFile?: string;
  /** Cancels the walk and the hashing; the call then throws `ABORTED`. */
  signal?: AbortSignal;
  /**
   * Absolute paths kept out of the build whatever `.dockerignore` says: Kiln passes its own data
   * folder (`.kiln`), whose state changes on every deploy and must never reach an image. Paths
   * outside the context are ignored. @defaultValue none
   */
  exclude?: readonly string[];
  /** Receives diagnostics (a cache that could not be read or written). @defaultValue {@link silentLogger} */
  logger?: Logger;
}

/** What {@link fingerprintBuild} found. */
export interface FingerprintResult {
  /** `sha256:` and 64 lowercase hex digits; equal inputs give equal fingerprints on any machine. */
  fingerprint: string;
  /**
   * The context's paths that are part of the build (what the build context archive must hold), as
   * sorted POSIX paths relative to the context: regular files and symlinks, after `.dockerignore`,
   * including the Dockerfile and `.dockerignore` when they lie in the context.
   */
  files: string[];
  /** The base image references of the `FROM` lines, with `ARG`s substituted, in order, without duplicates. */
  baseImages: string[];
  /** How many entries {@link FingerprintResult.files} has. */
  fileCount: number;
  /** Size of all included regular files, in bytes. */
  totalBytes: number;
  /** Bytes read from context files this time, in bytes; 0 when the stat cache served every file. */
  bytesHashed: number;
  /** How many regular files the stat cache served without reading them. */
  cacheHits: number;
  /** Wall time of the call, in milliseconds. */
  durationMs: number;
}

/** One path of the context that is part of the build. */
interface ContextEntry {
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
class Run {
  readonly controller = new AbortController();
  failure: Error | undefined;

  constructor(
    readonly contextDir: string,
    userSignal: AbortSignal | undefined,
  ) {
    if (userSignal) {
      const onAbort = (): void =>
        this.fail(new KilnError("ABORTED", "The fingerprint was cancelled.", { cause: userSignal.reason }));
      if (userSignal.aborted) onAbort();
      else userSignal.addEventListener("abort", onAbort, { once: true });
    }
  }

  /** Read buffers of {@link READ_CHUNK_BYTES}, reused: at most one per task in flight. */
  private readonly buffers: Buffer[] = [];

  takeBuffer(): Buffer {
    return this.buffers.pop() ?? Buffer.allocUnsafe(READ_CHUNK_BYTES);
  }

  returnBuffer(buffer: Buffer): void {
    this.buffers.push(buffer);
  }

  get stopped(): boolean {
    return this.controller.signal.aborted;
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
    if (this.failure !== undefined) throw this.failure;
  }
}

function toStatTuple(stats: Stats): StatTuple {
  return { size: stats.size, mtimeMs: stats.mtimeMs, ctimeMs: stats.ctimeMs, ino: stats.ino, mode: stats.mode };
}

function errnoCode(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === "string" ? code : undefined;
}

/** A `BUILD_CONTEXT_INVALID` error for a path of the context that could not be read. */
function unreadable(relPath: string, contextDir: string, error: unknown): KilnError {
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
function withExclusions(filter: ContextFilter, excluded: readonly string[]): ContextFilter {
  if (excluded.length === 0) return filter;
  const hit = (relPath: string) => excluded.some((prefix) => relPath === prefix || relPath.startsWith(`${prefix}/`));
  return {
    includesFile: (relPath) => !hit(relPath) && filter.includesFile(relPath),
    entersDirectory: (relPath) => !hit(relPath) && filter.entersDirectory(relPath),
  };
}

function compareCodeUnits(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * Walks the context level by level, keeping what `filter` includes, without entering pruned
 * directories. Reads folders, then looks at (lstat) the kept entries, each with bounded concurrency.
 */
async function walkContext(run: Run, filter: ContextFilter): Promise<ContextEntry[]> {
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
async function hashFile(run: Run, entry: ContextEntry): Promise<number> {
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

async function readDockerfile(dockerfilePath: string): Promise<Buffer> {
  try {
    const stats = await stat(dockerfilePath);
    if (!stats.isFile()) {
      throw new KilnError("BUILD_CONTEXT_INVALID", `The Dockerfile ${dockerfilePath} is not a file. Point the spec's Dockerfile path at the file itself.`, {
        details: { dockerfilePath },
      });
    }
    return await readFile(dockerfilePath);
  } catch (error) {
    if (error instanceof KilnError) throw error;
    const missing = errnoCode(error) === "ENOENT" || errnoCode(error) === "ENOTDIR";
    throw new KilnError(
      "BUILD_CONTEXT_INVALID",
      missing
        ? `The Dockerfile ${dockerfilePath} does not exist. Check the Dockerfile path in the spec (it is relative to the context unless absolute).`
        : `The Dockerfile ${dockerfilePath} cannot be read: ${(error as Error).message}`,
      { cause: error, details: { dockerfilePath } },
    );
  }
}

async function checkContextDir(contextDir: string): Promise<void> {
  let stats: Stats;
  try {
    stats = await stat(contextDir);
  } catch (error) {
    const missing = errnoCode(error) === "ENOENT" || errnoCode(error) === "ENOTDIR";
    throw new KilnError(
      "BUILD_CONTEXT_INVALID",
      missing
        ? `The build context folder ${contextDir} does not exist. Check the context path in the spec (it is relative to the spec file).`
        : `The build context folder ${contextDir} cannot be read: ${(error as Error).message}`,
      { cause: error, details: { contextDir } },
    );
  }
  if (!stats.isDirectory()) {
    throw new KilnError("BUILD_CONTEXT_INVALID", `The build context ${contextDir} is not a folder. Point the spec's context at a folder.`, {
      details: { contextDir },
    });
  }
}

async function readDockerignore(contextDir: string): Promise<string | undefined> {
  const file = path.join(contextDir, ".dockerignore");
  try {
    return await readFile(file, "utf8");
  } catch (error) {
    if (errnoCode(error) === "ENOENT") return undefined;
    throw unreadable(".dockerignore", contextDir, error);
  }
}

/** The Dockerfile's POSIX path relative to the context, or `undefined` when it lies outside. */
function pathInside(contextDir: string, file: string): string | undefined {
  const relative = path.relative(contextDir, file);
  if (relative === "" || relative.startsWith("..") || path.isAbsolute(relative)) return undefined;
  return relative.split(path.sep).join("/");
}

/**
 * Computes the fingerprint of a container image build: a sha256 over everything that goes into it.
 *
 * Hashed, in a versioned manifest: every path of the context that `.dockerignore` keeps (Docker's
 * matching rules; the Dockerfile and `.dockerignore` always count), each with its type, executable
 * bit and content sha256 (a symlink with its target text); the Dockerfile's content and its path in
 * the context; the build arguments, sorted; the target stage; the resolved base image references.
 * Not hashed: mtimes, owners, other permission bits, absolute paths, empty folders. So equal inputs
 * give equal fingerprints on any machine, and one changed byte gives another.
 *
 * Files are streamed (never read whole) with at most {@link FINGERPRINT_MAX_OPEN_FILES} open at once.
 * An excluded folder is not entered unless it holds the Dockerfile or some `!` pattern could match
 * inside it. With `cacheFile`, unchanged files (same stat data) are not read again; see
 * {@link RACY_MARGIN_MS} for when a fresh file is read again anyway.
 *
 * @throws KilnError `INVALID_ARGUMENT` when a path is not absolute; `BUILD_CONTEXT_INVALID` when the
 *   context folder or the Dockerfile is missing, or a file vanishes or cannot be read during the
 *   walk (the cause is kept); `ABORTED` when `signal` aborts.
 * @example
 * ```ts
 * const { fingerprint, files } = await fingerprintBuild({
 *   contextDir: "/srv/app",
 *   dockerfilePath: "/srv/app/Dockerfile",
 *   args: { NODE_ENV: "production" },
 *   cacheFile: "/srv/app/.kiln/cache/fingerprint-web.json",
 * });
 * ```
 */
export async function fingerprintBuild(options: FingerprintOptions): Promise<FingerprintResult> {
  const startedAt = performance.now();
  const startedAtMs = Date.now();
  const { contextDir, dockerfilePath, args = {}, stage, cacheFile, signal } = options;
  const logger = options.logger ?? silentLogger;

  for (const [name, value] of [
    ["contextDir", contextDir],
    ["dockerfilePath", dockerfilePath],
    ["cacheFile", cacheFile],
  ] as const) {
    if (value !== undefined && (typeof value !== "string" || !path.isAbsolute(value))) {
      throw new KilnError("INVALID_ARGUMENT", `fingerprintBuild: ${name} must be an absolute path (got ${JSON.stringify(value)}).`);
    }
  }
  const run = new Run(path.resolve(contextDir), signal);
  run.throwIfFailed();

  await checkContextDir(run.contextDir);
  const dockerfile = await readDockerfile(dockerfilePath);
  const dockerfileRel = pathInside(run.contextDir, path.resolve(dockerfilePath));
  const baseImages = resolveBaseImages(dockerfile.toString("utf8"), args);
  const filter = withExclusions(
    createContextFilter(await readDockerignore(run.contextDir), [".dockerignore", ...(dockerfileRel ? [dockerfileRel] : [])]),
    (options.exclude ?? []).flatMap((excluded) => pathInside(run.contextDir, path.resolve(excluded)) ?? []),
  );

  // Read the cache while walking; both only read.
  const cacheLoading = cacheFile ? readStatCache(cacheFile) : Promise.resolve(undefined);
  const entries = await walkContext(run, filter);
  const loaded = await cacheLoading;
  if (loaded?.problem) logger.debug("fingerprint: ignoring the stat cache", { cacheFile, problem: loaded.problem });
  const cache: StatCache | undefined = loaded?.cache;
  entries.sort((a, b) => compareCodeUnits(a.relPath, b.relPath));

  let bytesHashed = 0;
  let cacheHits = 0;
  let totalBytes = 0;
  await run.forEach(entries, async (entry) => {
    if (entry.kind === "symlink") {
      try {
        entry.digest = await readlink(entry.absPath);
      } catch (error) {
        throw unreadable(entry.relPath, run.contextDir, error);
      }
      return;
    }
    totalBytes += entry.stat.size;
    const cached = cache?.entries.get(entry.relPath);
    if (cache && cached && isCacheEntryUsable(cached, entry.stat, cache.startedAtMs)) {
      entry.digest = cached.sha256;
      entry.cacheable = true;
      cacheHits++;
      return;
    }
    const bytes = await hashFile(run, entry);
    bytesHashed += bytes;
  });
  run.throwIfFailed();

  const manifest = createHash("sha256");
  const line = (value: unknown): void => {
    manifest.update(JSON.stringify(value) + "\n");
  };
  manifest.update(MANIFEST_HEADER + "\n");
  line(["dockerfile", dockerfileRel ?? null, createHash("sha256").update(dockerfile).digest("hex")]);
  line(["args", Object.entries(args).sort(([a], [b]) => compareCodeUnits(a, b))]);
  line(["stage", stage ?? null]);
  line(["baseImages", baseImages]);
  for (const entry of entries) {
    if (entry.kind === "file") line(["file", entry.relPath, entry.executable ? "x" : "-", entry.digest]);
    else line(["symlink", entry.relPath, entry.digest]);
  }

  if (cacheFile && cacheHits !== entries.filter((entry) => entry.kind === "file").length) {
    const fresh: Array<[string, StatCacheEntry]> = [];
    for (const entry of entries) {
      if (entry.kind === "file" && entry.cacheable && entry.digest) fresh.push([entry.relPath, { ...entry.stat, sha256: entry.digest }]);
    }
    try {
      await writeStatCache(cacheFile, startedAtMs, fresh);
    } catch (error) {
      logger.warn("fingerprint: could not write the stat cache; the next run reads every file again", {
        cacheFile,
        error: error instanceof Error ? error.message : String(error),
      });
    }
  }

  return {
    fingerprint: `sha256:${manifest.digest("hex")}`,
    files: entries.map((entry) => entry.relPath),
    baseImages,
    fileCount: entries.length,
    totalBytes,
    bytesHashed,
    cacheHits,
    durationMs: performance.now() - startedAt,
  };
}

/**
 * The first 12 hex digits of a fingerprint, for display (`sha256:0123…` → `0123456789ab`).
 * @throws KilnError `INVALID_ARGUMENT` when `fp` is not `sha256:` (optional) and at least 12 hex digits
 */
export function shortFingerprint(fp: string): string {
  const match = /^(?:sha256:)?([0-9a-f]{12})[0-9a-f]*$/.exec(fp);
  if (!match?.[1]) throw new KilnError("INVALID_ARGUMENT", `Not a fingerprint: ${JSON.stringify(fp)} (expected sha256: and hex digits).`);
  return match[1];
}
