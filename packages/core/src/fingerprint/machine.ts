import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import type { Stats } from "node:fs";
import { lstat, readdir, readFile, readlink } from "node:fs/promises";
import path from "node:path";
import { pipeline } from "node:stream/promises";
import { KilnError } from "../errors.js";
import type { MachineStep } from "../provider/contract.js";
import type { FingerprintContribution } from "../provider/spec.js";
import type { ResolvedProvisionStep } from "../spec/resolve.js";
import type { FingerprintResult } from "./fingerprint.js";
import { findSecretFiles, secretFilesError, type SecretFileCandidate } from "./secret-files.js";

/**
 * First line of the hashed manifest; change it whenever what is hashed, or how, changes. Still v1:
 * the manifest is the one Kiln wrote before providers owned their sections (the base line, then
 * the steps), so an unchanged recipe keeps its fingerprint across the upgrade and is not baked
 * again; a provider's own inputs add a line only when it has some.
 */
const MANIFEST_HEADER = "kiln-machine-fingerprint/v1";

/** What {@link fingerprintMachine} hashes. */
export interface MachineFingerprintOptions {
  /** The provisioning steps, with absolute paths (`ResolvedMachine.provision`). */
  readonly steps: readonly ResolvedProvisionStep[];
  /** The provider the image is baked for; its name is part of the fingerprint with its base or inputs. */
  readonly provider: string;
  /**
   * The provider's `image.machine.base.<provider>` section as its schema produced it
   * (`ResolvedMachine.base`), hashed as written. @defaultValue none
   */
  readonly base?: unknown;
  /**
   * What else the provider's settings add (`ProviderSpec.fingerprint`): inputs hashed beside the
   * base, and the base images in words. @defaultValue nothing
   */
  readonly contribution?: FingerprintContribution;
  /**
   * Absolute paths never copied into the image, whatever a `file` step says: Kiln passes its data
   * folder (`.kiln`) and the spec file. @defaultValue none
   */
  readonly exclude?: readonly string[];
  /** Cancels the walk; the call then throws `ABORTED`. */
  readonly signal?: AbortSignal;
  /**
   * The spec's folder: the context guard names files relative to it, and `allowSecretFiles` is
   * relative to it. @defaultValue the folder that holds each step's source
   */
  readonly specDir?: string;
  /**
   * Files of `file` steps that look like secrets (see `secret-files.ts`) and may be copied anyway:
   * `.dockerignore`-syntax patterns relative to {@link MachineFingerprintOptions.specDir} (the
   * spec's `image.allowSecretFiles`). @defaultValue none
   */
  readonly allowSecretFiles?: readonly string[];
}

/** What {@link fingerprintMachine} found: a {@link FingerprintResult} plus the steps with their file lists. */
export interface MachineFingerprintResult extends FingerprintResult {
  /** The steps as the provider receives them: `file` steps carry exactly the files the fingerprint covered. */
  readonly steps: MachineStep[];
}

/**
 * Fingerprints a machine-image recipe: the provider and what its settings add (the base image as
 * written, see `ProviderSpec.fingerprint`), and each provisioning step in
 * order: a `file` step by every file under its source (path, executable bit, SHA-256 of the
 * content; symlinks by their target text) and its destination, a `shell` step by the script's
 * content, a `run` step by its command. Equal recipes give equal fingerprints on any machine; the
 * paths of the spec's folder on this machine are not part of it.
 *
 * A base given by name pattern or image family is fingerprinted as written, not as the image it
 * finds today: pin an image to rebake when the base changes.
 *
 * Before hashing, the context guard checks every file the `file` steps would copy, as for a build
 * context (see `secret-files.ts`): files that look like secrets are refused unless
 * `allowSecretFiles` allows them.
 *
 * @throws KilnError `BUILD_CONTEXT_INVALID` when a step's file or folder is missing or unreadable;
 *   `SECRET_FILES_IN_CONTEXT` when a step would copy files that look like secrets (`details.files`);
 *   `ABORTED` when `signal` aborts.
 */
export async function fingerprintMachine(options: MachineFingerprintOptions): Promise<MachineFingerprintResult> {
  const startedAt = performance.now();
  const excluded = (options.exclude ?? []).map((item) => path.resolve(item));
  const manifest = createHash("sha256");
  const line = (value: unknown): void => {
    manifest.update(`${JSON.stringify(value)}\n`);
  };
  manifest.update(`${MANIFEST_HEADER}\n`);
  line(["base", canonical(options.base === undefined ? {} : { [options.provider]: options.base })]);
  if (options.contribution?.inputs !== undefined) line(["provider", options.provider, canonical(options.contribution.inputs)]);
  // First the file lists of every `file` step, so the context guard refuses secrets before any is read.
  const sources = new Map<number, { stats: Stats; directory: boolean; files: string[]; links: ReadonlySet<string> }>();
  const candidates: Array<SecretFileCandidate & { readonly step: number }> = [];
  for (const [index, step] of options.steps.entries()) {
    if (step.kind !== "file") continue;
    throwIfAborted(options.signal);
    const stats = await statOrThrow(step.from, index);
    const directory = stats.isDirectory();
    const { files, links } = directory ? await walk(step.from, excluded, index, options.signal) : { files: [""], links: new Set<string>() };
    sources.set(index, { stats, directory, files, links });
    const specDir = options.specDir ?? path.dirname(step.from);
    for (const relPath of files) {
      if (relPath === "" ? !stats.isFile() : links.has(relPath)) continue;
      const absPath = relPath === "" ? step.from : path.join(step.from, ...relPath.split("/"));
      candidates.push({ relPath: guardPath(specDir, absPath), absPath, step: index });
    }
  }
  const secretFiles = await findSecretFiles(candidates, {
    allow: options.allowSecretFiles ?? [],
    readText: (candidate) => readFile(candidate.absPath, "utf8").catch((error: unknown) => Promise.reject(notReadable(candidate.absPath, candidate.step, errorText(error), error))),
  });
  if (secretFiles.length > 0) throw secretFilesError(secretFiles, { kind: "machine", ...(options.specDir !== undefined ? { specDir: options.specDir } : {}) });

  const steps: MachineStep[] = [];
  const allFiles: string[] = [];
  let totalBytes = 0;
  for (const [index, step] of options.steps.entries()) {
    throwIfAborted(options.signal);
    if (step.kind === "run") {
      line(["run", step.command]);
      steps.push({ kind: "run", command: step.command });
    } else if (step.kind === "shell") {
      const stats = await statOrThrow(step.script, index);
      if (!stats.isFile()) throw notReadable(step.script, index, "is not a file");
      line(["shell", await hashFile(step.script, index)]);
      totalBytes += stats.size;
      allFiles.push(step.script);
      steps.push({ kind: "shell", script: step.script });
    } else {
      const { stats, directory, files } = sources.get(index)!;
      const hashed: unknown[] = [];
      for (const relPath of files) {
        throwIfAborted(options.signal);
        const absPath = relPath === "" ? step.from : path.join(step.from, ...relPath.split("/"));
        const fileStats = relPath === "" ? stats : await statOrThrow(absPath, index);
        if (fileStats.isSymbolicLink()) {
          hashed.push(["symlink", relPath, await readlink(absPath)]);
        } else {
          totalBytes += fileStats.size;
          hashed.push(["file", relPath, fileStats.mode & 0o111 ? "x" : "-", await hashFile(absPath, index)]);
        }
        allFiles.push(absPath);
      }
      line(["file", step.to, directory, hashed]);
      steps.push({ kind: "file", from: step.from, to: step.to, directory, files });
    }
  }
  return {
    fingerprint: `sha256:${manifest.digest("hex")}`,
    files: allFiles,
    baseImages: [...(options.contribution?.baseImages ?? [])],
    fileCount: allFiles.length,
    totalBytes,
    bytesHashed: totalBytes,
    cacheHits: 0,
    directoryCacheHits: 0,
    durationMs: performance.now() - startedAt,
    steps,
  };
}

/** Sorted-key JSON value, so the order keys were written in does not change the fingerprint. */
function canonical(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(canonical);
  if (value && typeof value === "object") {
    return Object.fromEntries(
      Object.keys(value)
        .sort()
        .map((key) => [key, canonical((value as Record<string, unknown>)[key])]),
    );
  }
  return value;
}

/**
 * A file's path for the context guard: POSIX, relative to the spec's folder; absolute when it lies
 * outside that folder (`../shared/.env`), where no `allowSecretFiles` pattern reaches it: move it.
 */
function guardPath(specDir: string, absPath: string): string {
  const relative = path.relative(specDir, absPath);
  return relative.startsWith("..") || path.isAbsolute(relative) ? absPath.split(path.sep).join("/") : relative.split(path.sep).join("/");
}

/** Regular files and symlinks under `root`, as sorted POSIX paths relative to it; `links` holds the symlinks. */
async function walk(
  root: string,
  excluded: readonly string[],
  index: number,
  signal: AbortSignal | undefined,
): Promise<{ files: string[]; links: Set<string> }> {
  const found: string[] = [];
  const links = new Set<string>();
  const visit = async (relDir: string): Promise<void> => {
    throwIfAborted(signal);
    const absDir = relDir === "" ? root : path.join(root, ...relDir.split("/"));
    let entries;
    try {
      entries = await readdir(absDir, { withFileTypes: true });
    } catch (error) {
      throw notReadable(absDir, index, errorText(error), error);
    }
    for (const entry of entries) {
      const relPath = relDir === "" ? entry.name : `${relDir}/${entry.name}`;
      const absPath = path.join(absDir, entry.name);
      if (excluded.some((item) => absPath === item || absPath.startsWith(`${item}${path.sep}`))) continue;
      if (entry.isDirectory()) await visit(relPath);
      else if (entry.isFile() || entry.isSymbolicLink()) {
        found.push(relPath);
        if (entry.isSymbolicLink()) links.add(relPath);
      }
    }
  };
  await visit("");
  return { files: found.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)), links };
}

async function statOrThrow(file: string, index: number) {
  try {
    return await lstat(file);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw notReadable(file, index, code === "ENOENT" ? "does not exist" : errorText(error), error);
  }
}

async function hashFile(file: string, index: number): Promise<string> {
  const hash = createHash("sha256");
  try {
    await pipeline(createReadStream(file), hash);
  } catch (error) {
    throw notReadable(file, index, errorText(error), error);
  }
  return hash.digest("hex");
}

function notReadable(file: string, index: number, why: string, cause?: unknown): KilnError {
  return new KilnError(
    "BUILD_CONTEXT_INVALID",
    `image.machine.provision[${index}]: ${file} ${why}; fix the step's path (relative to the spec file's folder) and try again.`,
    { ...(cause !== undefined ? { cause } : {}), details: { path: file, step: index } },
  );
}

function errorText(error: unknown): string {
  return error instanceof Error ? `cannot be read (${error.message})` : "cannot be read";
}

function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw new KilnError("ABORTED", "The fingerprint was cancelled.", { cause: signal.reason });
}
