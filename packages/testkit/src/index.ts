/**
 * Kiln testkit: the in-memory provider (with fault injection and an optional state file shared
 * by processes), the provider conformance suite every provider runs, and helpers that gate
 * integration tests on a real engine (skip loudly on a laptop, fail under CI).
 *
 * The conformance suite registers vitest tests, so this package imports `vitest` (a peer dependency).
 * @module
 */
export { createMemoryProvider } from "./memory-provider.js";
export type { CallCounts, MemoryProvider, MemoryProviderOptions } from "./memory-provider.js";
export { seededRandom } from "./faults.js";
export type {
  ErrorFault,
  FaultCall,
  FaultOptions,
  InstanceBehavior,
  LatencyFault,
  MemoryOperation,
  OperationFaults,
  ThrottleFault,
} from "./faults.js";
export { runProviderConformance } from "./conformance.js";
export type { ProviderConformanceOptions } from "./conformance.js";
export { dockerEngineAvailable, requireDockerEngine } from "./engines.js";
