/**
 * The gcp provider's images: find and list by Kiln's labels, remove (refused while an instance
 * uses the image). Baking is not implemented yet (phase 3 of issue 14).
 * @module
 */
import { KilnError, LABELS, formatTarget, throwIfAborted, type ImageOperations, type ImageRef, type ProviderContext } from "@kilnjs/core";
import { readGceError } from "./errors.js";
import { fromGceLabels } from "./labels.js";
import { requestIdFor } from "./request-id.js";
import { labelFilter, type GceImage, type GceOperation, type GcpRuntime } from "./runtime.js";

/**
 * An {@link ImageRef} from a Compute Engine image: `id` and the first name are the image's name
 * (in the provider's project), the second its family when it has one; `fingerprint` is its
 * fingerprint label; `digest` is the image's numeric id (a new image of the same name gets a new
 * one); `sizeBytes` the archive size when Compute Engine reports it.
 */
export function imageFromGce(image: GceImage): ImageRef {
  const labels = fromGceLabels(image.labels);
  const name = image.name ?? "";
  const size = image.archiveSizeBytes !== undefined && image.archiveSizeBytes !== null ? Number(image.archiveSizeBytes) : undefined;
  return {
    id: name,
    fingerprint: labels[LABELS.fingerprint] ?? "",
    digest: String(image.id ?? name),
    names: [name, ...(image.family ? [image.family] : [])],
    ...(image.creationTimestamp ? { createdAt: new Date(image.creationTimestamp).toISOString() } : {}),
    ...(size !== undefined && Number.isFinite(size) ? { sizeBytes: size } : {}),
  };
}

/**
 * Creates the gcp provider's {@link ImageOperations}.
 *
 * - `build(recipe, ctx)`: not implemented yet: throws `CAPABILITY_MISSING` saying so. The contract
 *   has no provider without builds (`images.build` is required, and a machine-image provider gets
 *   no image from anywhere else), so the method exists and refuses with a code the CLI maps to its
 *   "capability missing" exit status; baking (a builder VM, its startup script, guest attributes) is
 *   phase 3 of issue 14.
 * - `find({ service, fingerprint })`: ONE `images.list` in the provider's project filtered on the
 *   managed, service and fingerprint labels; the first READY image, else undefined.
 * - `list(service)`: `images.list` filtered on the managed and service labels (the SDK follows the
 *   pages); READY and PENDING images, newest first.
 * - `remove(image)`: first ONE aggregated instance list filtered on the image's service and
 *   fingerprint labels (an instance Kiln launched from it carries both); any instance found makes it
 *   `IMAGE_IN_USE`. Then `images.delete` with a `requestId` and one wait loop on its operation; an
 *   image already gone counts as removed. Instances not launched by Kiln and instance templates are
 *   not checked (Compute Engine itself lets an image be deleted while disks made from it exist).
 *
 * Every call throws `PROVIDER_UNAVAILABLE` (unreachable, credentials refused), `THROTTLED`, or
 * `ABORTED` when `ctx.signal` fires.
 */
export function createImageOperations(runtime: GcpRuntime): ImageOperations {
  async function listImages(filter: string, signal: AbortSignal): Promise<GceImage[]> {
    const project = await runtime.project();
    const { images } = await runtime.clients.clients();
    // The SDK follows nextPageToken; a throttled page starts the list again (it changes nothing).
    return runtime.clients.backoff.call(async () => {
      const found: GceImage[] = [];
      for await (const image of images.listAsync({ project, filter, maxResults: 500 }, { autoPaginate: false })) found.push(image);
      return found;
    }, signal);
  }

  return {
    build(recipe, ctx) {
      throwIfAborted(ctx.signal);
      return Promise.reject(
        new KilnError(
          "CAPABILITY_MISSING",
          `The gcp provider cannot bake images yet (building ${formatTarget(recipe.target)}: baking on a builder VM is not implemented in this version); deploy an image that exists already, or use the aws or docker provider for now.`,
        ),
      );
    },

    async find(query, ctx) {
      throwIfAborted(ctx.signal);
      try {
        const found = await listImages(labelFilter({ [LABELS.managed]: "true", [LABELS.service]: query.service, [LABELS.fingerprint]: query.fingerprint }), ctx.signal);
        const ready = found.filter((image) => image.status === "READY").map(imageFromGce);
        return ready.find((ref) => ref.fingerprint === query.fingerprint);
      } catch (error) {
        throw runtime.error(error, "PROVIDER_UNAVAILABLE", `Finding the image of ${query.service} with fingerprint ${query.fingerprint}`);
      }
    },

    async list(service, ctx) {
      throwIfAborted(ctx.signal);
      try {
        const found = await listImages(labelFilter({ [LABELS.managed]: "true", [LABELS.service]: service }), ctx.signal);
        return found
          .filter((image) => image.status === "READY" || image.status === "PENDING")
          .map(imageFromGce)
          .sort((a, b) => (b.createdAt ?? "").localeCompare(a.createdAt ?? "") || a.id.localeCompare(b.id));
      } catch (error) {
        throw runtime.error(error, "PROVIDER_UNAVAILABLE", `Listing the images of ${service}`);
      }
    },

    async remove(image, ctx) {
      throwIfAborted(ctx.signal);
      const what = `Removing image ${image.id}`;
      try {
        const project = await runtime.project();
        const { images } = await runtime.clients.clients();
        const service = await serviceOf(image, ctx);
        if (service !== undefined) {
          const users = await runtime.listInstances(labelFilter({ [LABELS.managed]: "true", [LABELS.service]: service, [LABELS.fingerprint]: image.fingerprint }), ctx.signal);
          if (users.length > 0) {
            const names = users.map(({ instance }) => instance.name ?? "?");
            throw new KilnError("IMAGE_IN_USE", `${what}: ${names.length} instance(s) still run it (${names.slice(0, 3).join(", ")}${names.length > 3 ? ", …" : ""}); retire them (kiln deploy, or kiln destroy) before removing the image.`, {
              details: { instances: names },
            });
          }
        }
        const requestId = requestIdFor({ step: `remove ${image.digest}`, call: "images.delete", resource: image.id });
        let operation: GceOperation;
        try {
          const [started] = await runtime.clients.backoff.call(() => images.delete({ project, image: image.id, requestId }), ctx.signal);
          operation = started.latestResponse as GceOperation;
        } catch (error) {
          if (readGceError(error)?.kind === "not-found") return;
          throw error;
        }
        await runtime.waitForOperation(operation, { global: true }, "PROVIDER_UNAVAILABLE", what, ctx.signal);
      } catch (error) {
        throw runtime.error(error, "PROVIDER_UNAVAILABLE", what);
      }
    },
  };

  /** The service label of the image as Compute Engine holds it; undefined when it is gone. */
  async function serviceOf(image: ImageRef, ctx: ProviderContext): Promise<string | undefined> {
    const project = await runtime.project();
    const { images } = await runtime.clients.clients();
    try {
      const [found] = await runtime.clients.backoff.call(() => images.get({ project, image: image.id }), ctx.signal);
      return fromGceLabels(found.labels)[LABELS.service];
    } catch (error) {
      if (readGceError(error)?.kind === "not-found") return undefined;
      throw error;
    }
  }
}
