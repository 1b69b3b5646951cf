import { defineProviderSpec } from "@kilnjs/core";

/**
 * The docker provider's part of the spec: container images from `image.dockerfile`; it owns no
 * sections of its own (every instance setting it honours is core's: ports, env, labels, command,
 * resources, the stop grace period, `traffic.proxy`).
 */
export const dockerProviderSpec = defineProviderSpec({ imageFormat: "dockerfile" });
