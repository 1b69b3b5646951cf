/**
 * `@kilnjs/provider-docker/spec`: the docker provider's part of the spec alone, for `importProviderSpec`
 * (`kiln validate` and the other spec checks): its sections' schemas and rules, with
 * `@kilnjs/core/spec`, and none of the provider's operations or dockerode or the rest of core.
 * `providerSpec` is the same object the package's main entry exports.
 * @module
 */
export { dockerProviderSpec, dockerProviderSpec as providerSpec } from "./spec.js";
