import { readFile } from "node:fs/promises";
import path from "node:path";
import type { Readable } from "node:stream";
import { KilnError, type DockerfileRecipe, type ImageRecipe } from "@kilnjs/core";

/** A recipe that has its Dockerfile part (see {@link dockerfileRecipe}). */
export type DockerImageRecipe = ImageRecipe & { readonly dockerfile: DockerfileRecipe };

/**
 * The recipe, checked to carry a Dockerfile (the Docker provider builds nothing else).
 * @throws KilnError CAPABILITY_MISSING for a machine-image recipe
 */
export function dockerfileRecipe(recipe: ImageRecipe): DockerImageRecipe {
  if (!recipe.dockerfile) {
    throw new KilnError("CAPABILITY_MISSING", "The docker provider builds container images from a Dockerfile, and this recipe has none (it is a machine image recipe); use a VM provider such as aws for image.machine.");
  }
  return recipe as DockerImageRecipe;
}

/** A build context ready to stream to the engine. */
export interface BuildContext {
  /** The tar stream of exactly the recipe's files (plus the Dockerfile when it lies outside). */
  readonly stream: Readable;
  /** The Dockerfile's path inside the tar (POSIX). */
  readonly dockerfile: string;
}

/** The first 12 hex digits of a `sha256:` fingerprint: the image tag Kiln uses. */
export function shortFingerprint(fingerprint: string): string {
  const match = /^sha256:([0-9a-f]{64})$/.exec(fingerprint);
  if (!match) {
    throw new KilnError("INVALID_ARGUMENT", `Fingerprint "${fingerprint}" is not of the form sha256: followed by 64 lowercase hex digits.`);
  }
  return match[1]!.slice(0, 12);
}

/** Whether `child` lies inside the folder `parent` (both absolute). */
function isInside(parent: string, child: string): boolean {
  const relative = path.relative(parent, child);
  return relative !== "" && !relative.startsWith("..") && !path.isAbsolute(relative);
}

/** The recipe's file list, checked: relative POSIX paths that stay inside the context. */
function checkedFiles(recipe: DockerImageRecipe): string[] {
  const files: string[] = [];
  for (const file of recipe.dockerfile.files) {
    const normal = path.posix.normalize(file);
    if (normal === "." || normal.startsWith("../") || normal === ".." || path.posix.isAbsolute(normal) || normal.includes("\\")) {
      throw new KilnError("BUILD_CONTEXT_INVALID", `The build context lists "${file}", which is not a relative path inside ${recipe.dockerfile.contextDir}.`);
    }
    files.push(normal);
  }
  return files;
}

/**
 * Packs the recipe's build context as a tar stream without buffering it: exactly the files the
 * recipe lists (what the fingerprint covered), read from `contextDir` as the stream is consumed.
 * A Dockerfile outside the context is added under `.kiln-dockerfile-<fingerprint12>`.
 *
 * The stream emits `error` when a file cannot be read (vanished, permission denied); the caller
 * turns that into `BUILD_CONTEXT_INVALID`.
 * @throws KilnError BUILD_CONTEXT_INVALID when a listed path escapes the context or the Dockerfile
 *   cannot be read; INVALID_ARGUMENT for a malformed fingerprint
 */
export async function packBuildContext(recipe: DockerImageRecipe): Promise<BuildContext> {
  const { contextDir, dockerfilePath } = recipe.dockerfile;
  if (!path.isAbsolute(contextDir) || !path.isAbsolute(dockerfilePath)) {
    throw new KilnError("BUILD_CONTEXT_INVALID", `The build context (${contextDir}) and the Dockerfile (${dockerfilePath}) must be absolute paths.`);
  }
  const short = shortFingerprint(recipe.fingerprint);
  const files = checkedFiles(recipe);
  const context = path.resolve(contextDir);
  const dockerfileAbsolute = path.resolve(dockerfilePath);

  let dockerfile: string;
  let outsideDockerfile: Buffer | undefined;
  if (isInside(context, dockerfileAbsolute)) {
    dockerfile = path.relative(context, dockerfileAbsolute).split(path.sep).join("/");
    if (!files.includes(dockerfile)) files.push(dockerfile);
  } else {
    dockerfile = `.kiln-dockerfile-${short}`;
    try {
      outsideDockerfile = await readFile(dockerfileAbsolute);
    } catch (error) {
      throw new KilnError("BUILD_CONTEXT_INVALID", `Reading the Dockerfile ${dockerfileAbsolute} failed: ${(error as Error).message}`, { cause: error });
    }
  }

  // Only listed paths: should a listed path be a folder, nothing inside it that is not listed too.
  const listed = new Set(files);
  const { pack } = await import("tar-fs");
  const stream = pack(context, {
    entries: files,
    ignore: (name: string) => !listed.has(path.relative(context, name).split(path.sep).join("/")),
    finalize: outsideDockerfile === undefined,
    finish: (tar) => {
      if (outsideDockerfile === undefined) return;
      tar.entry({ name: dockerfile, size: outsideDockerfile.length, mode: 0o644, mtime: new Date(0) }, outsideDockerfile);
      tar.finalize();
    },
  });
  return { stream: stream as unknown as Readable, dockerfile };
}
