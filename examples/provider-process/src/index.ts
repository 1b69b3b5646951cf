/**
 * Example Kiln provider: an image is a folder built by the spec's machine recipe, an instance a local process.
 * It needs nothing but `@kilnjs/core`'s public entry; docs/providers/writing-a-provider.md walks through it.
 * @module
 */
export { createProcessProvider, createProcessProvider as createProvider, PROVIDER_NAME } from "./provider.js";
export type { ProcessProviderOptions } from "./provider.js";
export { processProviderSpec, processProviderSpec as providerSpec, processBaseSchema, processInstancesSchema } from "./spec.js";
export type { ProcessSections } from "./spec.js";
