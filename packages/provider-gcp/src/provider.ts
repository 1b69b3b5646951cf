import { defineProvider, throwIfAborted, type Provider } from "@kilnjs/core";
import { createHealthCapability } from "./health.js";
import { createImageOperations } from "./images.js";
import { createInstanceOperations } from "./instances.js";
import { GcpRuntime, labelFilter, type GcpProviderOptions } from "./runtime.js";
import { GCP_MAX_INSTANCE_COUNT, gcpProviderSpec } from "./spec.js";
import { LABELS } from "@kilnjs/core";

/** The gcp provider's name, equal to its package suffix. */
export const PROVIDER_NAME = "gcp";

/**
 * Creates the gcp provider (preview): it launches Compute Engine instances from a release's image
 * with `instances.insert` (a `requestId` per instance from the journal step, so a retry never makes
 * a second VM), lists them with one aggregated, label-filtered call across zones, deletes them, and
 * checks them by their status plus core's HTTP/TCP probe. Images are found, listed and removed by
 * Kiln's labels; **baking is not implemented yet** (`images.build` throws `CAPABILITY_MISSING`),
 * nor is traffic through a backend service. Every resource is labelled with Kiln's
 * {@link @kilnjs/core#LABELS} in Compute Engine's label alphabet. See docs/providers/gcp.md.
 *
 * Creating a provider does no I/O and does not load `@google-cloud/compute`; the first call that
 * needs Compute Engine does. Every call shares one backoff (403 `rateLimitExceeded`, 429, 5xx are
 * retried with jitter, honouring `Retry-After`).
 *
 * @param options - see {@link GcpProviderOptions}; every field is optional
 * @returns a {@link Provider} named {@link PROVIDER_NAME} whose spec is {@link gcpProviderSpec}
 *   (machine images), at most {@link GCP_MAX_INSTANCE_COUNT} instances per target
 * @throws KilnError INVALID_ARGUMENT for an endpoint that is not an http(s) URL or a number out of range
 *
 * Its operations throw `PROVIDER_UNAVAILABLE` when the API cannot be reached or refuses the
 * credentials, `THROTTLED` when Compute Engine still throttles after the backoff, `LAUNCH_FAILED`
 * and `TERMINATE_FAILED` with Compute Engine's reason or the operation's error codes
 * (`details.operationErrors`, such as `QUOTA_EXCEEDED`), `IMAGE_IN_USE` when `images.remove` meets an
 * image an instance still uses, `CAPABILITY_MISSING` from `images.build`, `TIMEOUT` when an operation
 * outlives `operationTimeoutMs`, and `ABORTED` when `ctx.signal` fires.
 *
 * @example
 * ```ts
 * import { createGcpProvider } from "@kilnjs/provider-gcp";
 * const provider = createGcpProvider({ project: "my-project", zone: "europe-west1-b" });
 * ```
 */
export const createGcpProvider = defineProvider((options?: GcpProviderOptions): Provider => {
  const runtime = new GcpRuntime(options);
  return {
    name: PROVIDER_NAME,
    spec: gcpProviderSpec,
    images: createImageOperations(runtime),
    instances: createInstanceOperations(runtime),
    health: createHealthCapability(runtime),
    limits: { maxInstancesPerTarget: GCP_MAX_INSTANCE_COUNT },
    async ping(ctx) {
      throwIfAborted(ctx.signal);
      try {
        // One cheap read that needs the project and the credentials: at most one of Kiln's instances.
        await runtime.listInstances(labelFilter({ [LABELS.managed]: "true" }), ctx.signal, 1);
      } catch (error) {
        throw runtime.error(error, "PROVIDER_UNAVAILABLE", "The Compute Engine API did not answer");
      }
    },
    close: () => runtime.close(),
  };
});
