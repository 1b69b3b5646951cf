/**
 * `@kilnjs/provider-gcp/spec`: the gcp provider's part of the spec alone, for `importProviderSpec`
 * (`kiln validate` and the other spec checks): its sections' schemas and Compute Engine's rules,
 * with `@kilnjs/core/spec`, and none of the provider's client code, Google's SDK or the rest of
 * core. `providerSpec` is the same object the package's main entry exports.
 * @module
 */
export { gcpProviderSpec, gcpProviderSpec as providerSpec } from "./spec.js";
