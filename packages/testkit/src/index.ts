/**
 * Kiln testkit: the in-memory provider (with fault injection and an optional state file shared
 * by processes), the provider conformance suite every provider runs, the state store conformance
 * suite every `StateStore` runs, the deployment queue conformance suite every `DeploymentQueue`
 * runs, helpers that gate integration tests on a real engine, on moto (the EC2 emulator) or on
 * PostgreSQL (skip loudly on a laptop, fail under CI), a fault-injecting HTTP proxy for AWS
 * query-protocol APIs, a bounded HTTP load generator that reports what clients saw while a
 * service was replaced, a tracer of the modules a process loads, and the local Compute Engine (a
 * fake of Compute Engine v1 REST, held to the message definitions of `@google-cloud/compute`).
 *
 * The conformance suites register vitest tests, so this package imports `vitest` (a peer dependency).
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
/**
 * The state store conformance suite: vitest tests of the whole `StateStore` contract (atomic,
 * serialised updates; leases, fencing tokens, takeover, renewal, forced release; two store objects
 * on one backend). Every store runs it: core's file store in this package, `@kilnjs/store-postgres`
 * against PostgreSQL.
 */
export { runStateStoreConformance } from "./store-conformance.js";
export type { StateStoreConformanceOptions } from "./store-conformance.js";
/**
 * The deployment queue conformance suite: vitest tests of the whole `DeploymentQueue` contract
 * (one active deployment per target, exclusive claims under leases, takeover of a lapsed lease,
 * fenced renew and finish, cancel, events in order, idempotent answers; two queue objects on one
 * backend). Core's in-memory queue runs it in this package, the PostgreSQL queue in
 * `@kilnjs/store-postgres`.
 */
export { runDeploymentQueueConformance } from "./queue-conformance.js";
export type { DeploymentQueueConformanceOptions } from "./queue-conformance.js";
export { dockerEngineAvailable, requireDockerEngine } from "./engines.js";
/**
 * Which modules a Node.js process loads (ES modules and CommonJS), to prove that a command or call
 * leaves a heavy dependency unloaded: a check of what is loaded, not of time.
 */
export { packageOfFile, requireBuildOutput, runTracingModules } from "./module-loads.js";
export type { TraceOptions, TracedRun } from "./module-loads.js";
export { DEFAULT_MOTO_ENDPOINT, motoAvailable, motoEndpoint, requireMoto, resetMoto } from "./moto.js";
/** Gate integration tests on PostgreSQL (`KILN_PG_URL`, else `scripts/postgres.sh`'s 127.0.0.1:5433) like `requireMoto`. */
export { DEFAULT_POSTGRES_URL, postgresAvailable, postgresUrl, requirePostgres } from "./postgres.js";
export { PROXY_FAULT_KINDS, startFaultProxy } from "./fault-proxy.js";
export type { FaultProxy, FaultProxyCall, FaultProxyCounts, FaultProxyOptions, FaultProxyRequest, ProxyFault, ProxyFaultKind, ProxyFaultPhase } from "./fault-proxy.js";
/**
 * A bounded HTTP load generator: `startLoad` (open loop at a rate, with a marked window, failures
 * by reason, served-after-stop answers, answers by instance, latency percentiles) and
 * `runClosedLoop` (fixed concurrency, for throughput benchmarks).
 */
export { LOAD_HISTOGRAM_BOUNDS_MS, LOAD_MAX_DURATION_MS, LOAD_MAX_REQUESTS, formatLoadStats, runClosedLoop, startLoad } from "./load-generator.js";
export type { ClosedLoopOptions, LoadFailureSample, LoadOptions, LoadPercentiles, LoadReport, LoadRun, LoadStats } from "./load-generator.js";
/**
 * The local Compute Engine: an HTTP server on 127.0.0.1 that speaks Compute Engine v1 REST on the
 * real paths (instances, images, disks, operations, instance groups, backend services), checks
 * request bodies against the Compute v1 messages shipped in `@google-cloud/compute`, serves a
 * metadata server for guest attributes, and injects faults from a seeded generator. VMs only change
 * state unless a {@link VmRunner} runs them. docs/local-compute-engine.md says how to use it.
 */
export { DEFAULT_SEED_IMAGES, startLocalComputeEngine } from "./local-compute-engine/server.js";
export type { LocalComputeEngine, LocalComputeEngineOptions } from "./local-compute-engine/server.js";
export type { HealthState, InstanceHealthInput, LocalComputeEngineTiming } from "./local-compute-engine/state.js";
export type { ComputeMethodSelector, LocalComputeEngineFaults, OperationErrorFault } from "./local-compute-engine/faults.js";
export type { SeedImage } from "./local-compute-engine/images.js";
export { METADATA_INSTANCE_HEADER } from "./local-compute-engine/metadata-server.js";
export { createStateOnlyVmRunner } from "./local-compute-engine/vm-runner.js";
export type { VmDescription, VmRunner, VmStarted } from "./local-compute-engine/vm-runner.js";
