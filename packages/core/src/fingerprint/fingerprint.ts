import { createHash } from "node:crypto";
import type { Stats } from "node:fs";
import { lstat, readFile, readlink, realpath, stat } from "node:fs/promises";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { KilnError } from "../errors.js";
import { silentLogger, type Logger } from "../logger.js";
import { resolveBaseImages } from "./dockerfile.js";
import { directoryCacheFileOf, directoryCacheKey, readDirectoryCache, writeDirectoryCache, type DirectoryCache, type DirectoryWalk } from "./directory-cache.js";
import { createContextFilter } from "./ignore.js";
import { findSecretFiles, secretFilesError } from "./secret-files.js";
import {
  isCacheEntryUsable,
  readStatCache,
  writeStatCache,
  type StatCache,
  type StatCacheEntry,
} from "./stat-cache.js";
import { Run, compareCodeUnits, errnoCode, hashFile, unreadable, walkContext, withExclusions } from "./walk.js";

export { FINGERPRINT_MAX_OPEN_FILES } from "./walk.js";

/**
 * The first line of every hashed manifest. Change it whenever what is hashed, or how, changes, so
 * an old fingerprint can never be taken for a new one.
 */
const MANIFEST_HEADER = "kiln-fingerprint/v1";


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
   * Where to keep the stat cache (a versioned text file, one line per file: see
   * `formatStatCache`; its folder is created). Files whose stat data (size, mtime, ctime, inode,
   * mode) match the cache are not read again. A missing, corrupt, cut-short or foreign-version
   * cache (version 1 caches were JSON) is treated as empty and rewritten.
   *
   * Beside it, the directory cache ({@link directoryCacheFileOf}: `<name>.directory-cache` for a
   * `<name>.stat-cache`) keeps each folder's listing after the ignore rules: a folder whose stat
   * data (mtime, ctime, inode) is unchanged is not listed or matched again (git's untracked cache);
   * its files are still looked at. @defaultValue no caches: every folder is listed and every file read
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
  /**
   * Files of the context that look like secrets (see `secret-files.ts`) and may be built anyway:
   * `.dockerignore`-syntax patterns relative to the context (the spec's `image.allowSecretFiles`).
   * Any other such file makes the call throw `SECRET_FILES_IN_CONTEXT`. @defaultValue none
   */
  allowSecretFiles?: readonly string[];
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
  /** How many folders the directory cache served without listing them (0 without a cache file). */
  directoryCacheHits: number;
  /** Wall time of the call, in milliseconds. */
  durationMs: number;
}

/** One path of the context that is part of the build. */

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

/**
 * The context's `.dockerignore`, or `undefined` when there is none. A symlink is followed when it
 * points at a file inside the context, as Docker's builders do; a link out of the context is
 * refused (the legacy builder follows it, BuildKit does not: see docs/secrets.md, "Build
 * contexts"). Anything else is an error, never "no rules": a rule file that silently counts for
 * nothing would send what it was written to keep out.
 * @throws KilnError BUILD_CONTEXT_INVALID for a dangling link, a link out of the context, a folder,
 *   or a file that cannot be read
 */
async function readDockerignore(contextDir: string): Promise<string | undefined> {
  const file = path.join(contextDir, ".dockerignore");
  const fail = (what: string, todo: string, error?: unknown, extra: Record<string, unknown> = {}): KilnError =>
    new KilnError("BUILD_CONTEXT_INVALID", `The .dockerignore of the build context ${contextDir} ${what}, so Kiln cannot tell which files to keep out of the image. ${todo}`, {
      ...(error !== undefined ? { cause: error } : {}),
      details: { path: ".dockerignore", contextDir, ...(errnoCode(error) ? { errno: errnoCode(error) } : {}), ...extra },
    });
  let stats: Stats;
  try {
    stats = await lstat(file);
  } catch (error) {
    if (errnoCode(error) === "ENOENT") return undefined;
    throw fail(`cannot be looked at (${(error as Error).message})`, "Make the context folder readable for this user.", error);
  }
  if (stats.isSymbolicLink()) {
    const linkText = await readlink(file).catch(() => "?");
    let target: string;
    try {
      target = await realpath(file);
    } catch (error) {
      throw fail(
        errnoCode(error) === "ELOOP" ? `is a symbolic link to "${linkText}", which is a loop of links` : `is a symbolic link to "${linkText}", which does not exist`,
        "Point the link at an existing file inside the context, replace it with a regular file, or delete it if the context needs no rules.",
        error,
        { linkTarget: linkText },
      );
    }
    const realContext = await realpath(contextDir);
    const relative = path.relative(realContext, target);
    if (relative === "" || relative.startsWith("..") || path.isAbsolute(relative)) {
      throw fail(
        `is a symbolic link to ${target}, outside the context; Docker's builders disagree about such a link (the legacy builder follows it, BuildKit reads only inside the context and then sees no rules), so Kiln refuses it rather than guess which rules the build would apply`,
        "Copy the rules into a regular .dockerignore file in the context (or link to a file inside the context).",
        undefined,
        { linkTarget: linkText },
      );
    }
  }
  try {
    return await readFile(file, "utf8");
  } catch (error) {
    const code = errnoCode(error);
    if (code === "EISDIR") throw fail("is a folder, not a file", "Replace it with a file of ignore rules (or remove it if the context needs none).", error);
    if (code === "EACCES" || code === "EPERM") throw fail("cannot be read: permission denied", "Make it readable for this user.", error);
    throw fail(`cannot be read (${(error as Error).message})`, "Fix or replace the file, then try again.", error);
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
 * Before reading any file, the context guard looks for files that look like secrets (`.env`, private
 * keys, cloud credentials, `.npmrc`/`.netrc` with a credential, `.git`: see `secret-files.ts`) among
 * the files `.dockerignore` keeps, by name only (it reads just the `.npmrc` and `.netrc` files), and
 * refuses the build unless `allowSecretFiles` allows each of them.
 *
 * @throws KilnError `INVALID_ARGUMENT` when a path is not absolute; `BUILD_CONTEXT_INVALID` when the
 *   context folder or the Dockerfile is missing, the `.dockerignore` is dangling, a link out of the
 *   context, a folder or unreadable, or a file vanishes or cannot be read during the walk (the cause
 *   is kept); `SECRET_FILES_IN_CONTEXT` when files that look like secrets would be built
 *   (`details.files`); `ABORTED` when `signal` aborts.
 * @example
 * ```ts
 * const { fingerprint, files } = await fingerprintBuild({
 *   contextDir: "/srv/app",
 *   dockerfilePath: "/srv/app/Dockerfile",
 *   args: { NODE_ENV: "production" },
 *   cacheFile: "/srv/app/.kiln/cache/fingerprint-web.stat-cache",
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
  const dockerignore = await readDockerignore(run.contextDir);
  const alwaysIncluded = [".dockerignore", ...(dockerfileRel ? [dockerfileRel] : [])];
  const excluded = (options.exclude ?? []).flatMap((excludedPath) => pathInside(run.contextDir, path.resolve(excludedPath)) ?? []);
  const filter = withExclusions(createContextFilter(dockerignore, alwaysIncluded), excluded);

  // Read the stat cache while walking; both only read. The walk needs the directory cache first.
  const cacheLoading = cacheFile ? readStatCache(cacheFile) : Promise.resolve(undefined);
  const rulesKey = directoryCacheKey({ dockerignore, alwaysIncluded, excluded });
  const directoryCacheFile = cacheFile ? directoryCacheFileOf(cacheFile) : undefined;
  let directories: DirectoryWalk | undefined;
  if (directoryCacheFile) {
    const read = await readDirectoryCache(directoryCacheFile);
    if (read.problem) logger.debug("fingerprint: ignoring the directory cache", { cacheFile: directoryCacheFile, problem: read.problem });
    const cached: DirectoryCache | undefined = read.cache?.rulesKey === rulesKey ? read.cache : undefined;
    directories = { cached, listings: new Map(), listed: 0 };
  }
  const entries = await walkContext(run, filter, directories);
  // Refuse secrets before reading any file: nothing of them is hashed, cached or sent.
  const secretFiles = await findSecretFiles(
    entries.filter((entry) => entry.kind === "file"),
    {
      allow: options.allowSecretFiles ?? [],
      readText: (candidate) => readFile(candidate.absPath, "utf8").catch((error: unknown) => Promise.reject(unreadable(candidate.relPath, run.contextDir, error))),
    },
  );
  if (secretFiles.length > 0) throw secretFilesError(secretFiles, { kind: "context", contextDir: run.contextDir });
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
    const cached = cache?.get(entry.relPath);
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

  // The manifest's lines are hashed in one update: one call per file into the hash costs more than
  // the text (the bytes, so the fingerprint, are the same).
  const lines: string[] = [MANIFEST_HEADER + "\n"];
  const line = (value: unknown): void => {
    lines.push(JSON.stringify(value) + "\n");
  };
  line(["dockerfile", dockerfileRel ?? null, createHash("sha256").update(dockerfile).digest("hex")]);
  line(["args", Object.entries(args).sort(([a], [b]) => compareCodeUnits(a, b))]);
  line(["stage", stage ?? null]);
  line(["baseImages", baseImages]);
  for (const entry of entries) {
    if (entry.kind === "file") line(["file", entry.relPath, entry.executable ? "x" : "-", entry.digest]);
    else line(["symlink", entry.relPath, entry.digest]);
  }
  const manifest = createHash("sha256").update(lines.join(""));

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

  if (directoryCacheFile && directories && (directories.listed > 0 || directories.cached?.size !== directories.listings.size)) {
    try {
      await writeDirectoryCache(directoryCacheFile, startedAtMs, rulesKey, directories.listings);
    } catch (error) {
      logger.warn("fingerprint: could not write the directory cache; the next run lists every folder again", {
        cacheFile: directoryCacheFile,
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
    directoryCacheHits: directories ? directories.listings.size - directories.listed : 0,
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
