/**
 * Kiln testkit: the in-memory provider for core's unit tests, and helpers that gate integration
 * tests on a real engine (skip loudly on a laptop, fail under CI).
 * @module
 */
export { createMemoryProvider } from "./memory-provider.js";
export { dockerEngineAvailable, requireDockerEngine } from "./engines.js";
export type { CallCounts, InstanceBehavior, MemoryProvider, MemoryProviderOptions } from "./memory-provider.js";
