/**
 * Kiln testkit: the in-memory provider (with fault injection and an optional state file shared
 * by processes), the provider conformance suite every provider runs, helpers that gate
 * integration tests on a real engine or on moto, the EC2 emulator (skip loudly on a laptop, fail
 * under CI), and a fault-injecting HTTP proxy for AWS query-protocol APIs.
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
export { DEFAULT_MOTO_ENDPOINT, motoAvailable, motoEndpoint, requireMoto, resetMoto } from "./moto.js";
export { PROXY_FAULT_KINDS, startFaultProxy } from "./fault-proxy.js";
export type { FaultProxy, FaultProxyCall, FaultProxyCounts, FaultProxyOptions, FaultProxyRequest, ProxyFault, ProxyFaultKind, ProxyFaultPhase } from "./fault-proxy.js";
