import type { Readable } from "node:stream";
import type Dockerode from "dockerode";
import {
  KilnError,
  LABELS,
  throwIfAborted,
  type ImageOperations,
  type ImageRecipe,
  type ImageRef,
  type ProviderContext,
} from "@kilnjs/core";
import { dockerfileRecipe, packBuildContext, shortFingerprint, type DockerImageRecipe } from "./build-context.js";
import { findBuildkitCli, runBuildkitBuild, type BuildkitCli } from "./buildkit.js";
import { engineError, messageOf, statusOf, type EngineClient } from "./engine.js";
import type { ResolvedOptions } from "./options.js";

/** One JSON message of the engine's build stream. */
interface BuildMessage {
  stream?: string;
  status?: string;
  error?: string;
  errorDetail?: { message?: string };
  aux?: { ID?: string };
}

/** `Step 3/7 : RUN npm ci` (the classic builder's step lines). */
const STEP_LINE = /^Step (\d+)\/(\d+) : (.*)$/;

/** Turns one line of build output into progress. */
export function buildLineProgress(line: string): Parameters<ProviderContext["emit"]>[0] {
  const step = STEP_LINE.exec(line);
  if (step) return { type: "image.build.step", step: Number(step[1]), total: Number(step[2]), description: step[3]! };
  return { type: "image.build.log", message: line };
}

/** The image tag Kiln gives a build: `kiln/<service>:<first 12 hex digits of the fingerprint>`. */
export function imageTag(recipe: ImageRecipe): string {
  return `kiln/${recipe.target.service}:${shortFingerprint(recipe.fingerprint)}`;
}

function realTags(tags: readonly string[] | null | undefined): string[] {
  return (tags ?? []).filter((tag) => tag !== "<none>:<none>");
}

function digestOf(id: string, repoDigests: readonly string[] | null | undefined): string {
  const digest = (repoDigests ?? []).map((entry) => entry.slice(entry.indexOf("@") + 1)).find((entry) => entry.startsWith("sha256:"));
  return digest ?? id;
}

/** An {@link ImageRef} from `GET /images/json` data. */
export function imageRefFromList(info: Dockerode.ImageInfo): ImageRef {
  return {
    id: info.Id,
    fingerprint: info.Labels?.[LABELS.fingerprint] ?? "",
    digest: digestOf(info.Id, info.RepoDigests),
    names: realTags(info.RepoTags),
    createdAt: new Date(info.Created * 1000).toISOString(),
    sizeBytes: info.Size,
  };
}

/** An {@link ImageRef} from `GET /images/{id}/json` data. */
export function imageRefFromInspect(info: Dockerode.ImageInspectInfo): ImageRef {
  return {
    id: info.Id,
    fingerprint: info.Config?.Labels?.[LABELS.fingerprint] ?? "",
    digest: digestOf(info.Id, info.RepoDigests),
    names: realTags(info.RepoTags),
    createdAt: new Date(info.Created).toISOString(),
    sizeBytes: info.Size,
  };
}

/** Follows a build stream to its end; resolves with the built image id (when the engine says it). */
function followBuild(docker: Dockerode, stream: Readable, ctx: ProviderContext): Promise<{ imageId?: string; error?: string }> {
  return new Promise((resolve, reject) => {
    let imageId: string | undefined;
    let buildError: string | undefined;
    let partial = "";
    const emitText = (text: string, flush: boolean) => {
      partial += text;
      const lines = partial.split("\n");
      partial = flush ? "" : lines.pop()!;
      for (const raw of lines) {
        const line = raw.replace(/\s+$/, "");
        if (line !== "") ctx.emit(buildLineProgress(line));
      }
    };
    docker.modem.followProgress(
      stream,
      (error: Error | null) => {
        emitText("", true);
        if (error) reject(error);
        else resolve({ imageId, error: buildError });
      },
      (message: BuildMessage) => {
        if (typeof message.stream === "string") emitText(message.stream, false);
        if (message.aux?.ID) imageId = message.aux.ID;
        if (buildError === undefined && (message.error !== undefined || message.errorDetail !== undefined)) {
          buildError = (message.errorDetail?.message ?? message.error ?? "unknown build error").trim();
        }
      },
    );
  });
}

/** The options image operations use: the docker CLI for builds with secrets. */
export type ImageOptions = Pick<ResolvedOptions, "dockerCli" | "dockerCliExplicit">;

/**
 * Image operations against one engine. A build with build secrets runs through the docker CLI
 * with BuildKit (see {@link runBuildkitBuild}: dockerode cannot open the BuildKit session that
 * serves secrets); every other build goes through the engine API (dockerode).
 */
export function createImageOperations(client: EngineClient, options: ImageOptions = { dockerCli: "docker", dockerCliExplicit: false }): ImageOperations {
  const address = client.address;
  let buildkitCli: Promise<BuildkitCli> | undefined;

  /** The CLI for builds with secrets, found (and probed) once; a failed search is tried again next time. */
  function cli(): Promise<BuildkitCli> {
    buildkitCli ??= findBuildkitCli(options.dockerCli, options.dockerCliExplicit).catch((error: unknown) => {
      buildkitCli = undefined;
      throw error;
    });
    return buildkitCli;
  }

  /** Builds `recipe` (which has build secrets) with BuildKit through the docker CLI. */
  async function buildWithSecrets(docker: Dockerode, recipe: DockerImageRecipe, tag: string, labels: Record<string, string>, ctx: ProviderContext): Promise<ImageRef> {
    const found = await cli();
    throwIfAborted(ctx.signal);
    const context = await packBuildContext(recipe);
    let result: { imageId?: string; error?: string };
    try {
      result = await runBuildkitBuild({ cli: found, address, recipe, tag, labels, context }, ctx);
    } finally {
      context.stream.destroy();
    }
    return builtImage(docker, tag, result);
  }

  /**
   * The image a build made, from its outcome: its id (else its tag) inspected.
   * @throws KilnError BUILD_FAILED with the build's own error, or when the image cannot be inspected
   */
  async function builtImage(docker: Dockerode, tag: string, result: { imageId?: string; error?: string }): Promise<ImageRef> {
    if (result.error !== undefined) {
      throw new KilnError("BUILD_FAILED", `Building ${tag} failed: ${result.error}${missingBaseImageHint(result.error)}`, { details: { tag } });
    }
    try {
      return await inspect(docker, result.imageId ?? tag);
    } catch (error) {
      throw engineError(error, address, "BUILD_FAILED", `The build of ${tag} ended but the image cannot be inspected`);
    }
  }

  async function inspect(docker: Dockerode, name: string): Promise<ImageRef> {
    return imageRefFromInspect(await docker.getImage(name).inspect());
  }

  return {
    async build(input, ctx) {
      const recipe = dockerfileRecipe(input);
      throwIfAborted(ctx.signal);
      const tag = imageTag(recipe);
      const docker = await client.get();
      const labels: Record<string, string> = {
        [LABELS.managed]: "true",
        [LABELS.service]: recipe.target.service,
        [LABELS.fingerprint]: recipe.fingerprint,
      };
      if (recipe.dockerfile.secrets && recipe.dockerfile.secrets.size > 0) return buildWithSecrets(docker, recipe, tag, labels, ctx);
      const context = await packBuildContext(recipe);

      // One controller aborts the request for both a cancelled operation and an unreadable context.
      const controller = new AbortController();
      let contextError: unknown;
      const onAbort = () => controller.abort(ctx.signal.reason);
      ctx.signal.addEventListener("abort", onAbort, { once: true });
      context.stream.on("error", (error) => {
        contextError ??= error;
        controller.abort(error);
      });
      let response: Readable | undefined;
      const destroyResponse = () => response?.destroy();
      controller.signal.addEventListener("abort", destroyResponse, { once: true });

      ctx.logger.debug("docker build", { tag, dockerfile: context.dockerfile, files: recipe.dockerfile.files.length });
      let result: { imageId?: string; error?: string };
      try {
        response = (await docker.buildImage(context.stream, {
          t: tag,
          dockerfile: context.dockerfile,
          buildargs: { ...recipe.dockerfile.args },
          ...(recipe.dockerfile.stage === undefined ? {} : { target: recipe.dockerfile.stage }),
          labels,
          rm: true,
          forcerm: true,
          abortSignal: controller.signal,
        })) as unknown as Readable;
        if (controller.signal.aborted) response.destroy();
        result = await followBuild(docker, response, ctx);
      } catch (error) {
        throw buildFailure(error);
      } finally {
        ctx.signal.removeEventListener("abort", onAbort);
        controller.signal.removeEventListener("abort", destroyResponse);
        context.stream.destroy();
      }
      // A stream cut short by an abort ends without an error: check why it ended.
      if (contextError !== undefined || ctx.signal.aborted) throw buildFailure(contextError ?? ctx.signal.reason);
      return builtImage(docker, tag, result);

      function buildFailure(error: unknown): KilnError {
        if (contextError !== undefined) {
          return new KilnError("BUILD_CONTEXT_INVALID", `Reading the build context ${recipe.dockerfile.contextDir} failed: ${messageOf(contextError)}`, {
            cause: contextError,
          });
        }
        if (ctx.signal.aborted) return new KilnError("ABORTED", "The operation was cancelled.", { cause: ctx.signal.reason });
        return engineError(error, address, "BUILD_FAILED", `Building ${tag} failed`);
      }
    },

    async find({ service, fingerprint }, ctx) {
      throwIfAborted(ctx.signal);
      try {
        const images = await client.reads.listImages(
          { label: [`${LABELS.managed}=true`, `${LABELS.service}=${service}`, `${LABELS.fingerprint}=${fingerprint}`] },
          ctx.signal,
        );
        const newest = images.sort((a, b) => b.Created - a.Created)[0];
        return newest === undefined ? undefined : imageRefFromList(newest);
      } catch (error) {
        throw engineError(error, address, "PROVIDER_UNAVAILABLE", "Listing images failed");
      }
    },

    async list(service, ctx) {
      throwIfAborted(ctx.signal);
      try {
        const images = await client.reads.listImages({ label: [`${LABELS.managed}=true`, `${LABELS.service}=${service}`] }, ctx.signal);
        return images.sort((a, b) => a.Created - b.Created || a.Id.localeCompare(b.Id)).map(imageRefFromList);
      } catch (error) {
        throw engineError(error, address, "PROVIDER_UNAVAILABLE", "Listing images failed");
      }
    },

    async remove(image, ctx) {
      throwIfAborted(ctx.signal);
      const docker = await client.get();
      const removeOne = async (name: string) => {
        try {
          await docker.getImage(name).remove({ abortSignal: ctx.signal });
        } catch (error) {
          if (statusOf(error) === 404) return;
          throw error;
        }
      };
      try {
        try {
          await removeOne(image.id);
        } catch (error) {
          // Removing by id refuses an image with several tags: untag each (the last removes it).
          if (statusOf(error) !== 409 || !/multiple repositories/i.test(messageOf(error))) throw error;
          const current = await docker.getImage(image.id).inspect();
          for (const tag of realTags(current.RepoTags)) await removeOne(tag);
          await removeOne(image.id);
        }
      } catch (error) {
        if (statusOf(error) === 409) {
          throw new KilnError("IMAGE_IN_USE", `Image ${image.id} is in use and was not removed: ${messageOf(error)}. Retire (remove) the containers that use it first; kiln gc keeps an image any instance runs, so this one runs outside Kiln or was started meanwhile.`, {
            cause: error,
            details: { reason: "image-in-use", imageId: image.id },
          });
        }
        throw engineError(error, address, "PROVIDER_UNAVAILABLE", `Removing image ${image.id} failed`);
      }
    },
  };
}

/**
 * When a build failed because the engine tried to fetch a base image it does not have (Kiln never
 * asks it to pull, but the builder fetches a missing `FROM` image itself), says what to do.
 */
export function missingBaseImageHint(message: string): string {
  const fetchFailed = /pull access denied|manifest unknown|registry-1\.docker\.io|no such host|dial tcp|repository does not exist|not found: manifest/i.test(message);
  return fetchFailed
    ? ". A base image (FROM) is not on the engine and could not be fetched: load it first (docker pull, docker load, or docker import as scripts/base-images.sh does), or point the Dockerfile's FROM (or its build argument) at an image the engine has"
    : "";
}
