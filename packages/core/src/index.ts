/**
 * Kiln core: the spec, fingerprints, the plan/build/deploy/rollback lifecycle, rollouts, health
 * checks, state, events and errors. Imports no provider, cloud SDK, CLI or HTTP library.
 * @module
 */
export { ERROR_CODES, KilnError, isKilnError, toKilnError, isAbortError, throwIfAborted } from "./errors.js";
export type { ErrorCode, KilnErrorOptions } from "./errors.js";
export { silentLogger } from "./logger.js";
export type { Logger } from "./logger.js";
export { DEFAULT_ENVIRONMENT, LABELS, formatTarget, parseTarget } from "./target.js";
export type { Target, LabelKey } from "./target.js";
export { defineProvider, launchLabels } from "./provider.js";
export type {
  DockerfileRecipe,
  Endpoint,
  ImageOperations,
  ImageRecipe,
  ImageRef,
  Instance,
  InstanceConfig,
  InstanceOperations,
  InstanceSelector,
  InstanceState,
  LaunchRequest,
  MachineFileStep,
  MachineRecipe,
  MachineStep,
  AwsInstanceSettings,
  PortConfig,
  Provider,
  ProviderContext,
  ProviderProgress,
} from "./provider.js";
export type { HealthCapability, ProbeResult, ProviderLimits, TrafficCapability, TrafficOptions } from "./provider.js";
export type { EventBase, EventHandler, EventInstance, KilnEvent, KilnEventInput, KilnEventType, RolloutKind } from "./events.js";
export type { RecoveredReleaseOutcome } from "./events.js";
export { waitFor, sleep } from "./wait.js";
export type { WaitOptions, WaitOutcome } from "./wait.js";
export { probeHttp, probeTcp } from "./health.js";
export * from "./spec/index.js";
export * from "./fingerprint/index.js";
export { planDeploy, planReplacement, formatPlan, releaseConfigHash, currentRelease, nextReleaseNumber, effectiveLimits, describeHealth } from "./plan.js";
export type { DeployPlan, ImagePlan, PlanInput, RolloutPlan } from "./plan.js";
export { nextRollingBatch, planRollingBatches } from "./rollout/batches.js";
export type { RollingBatch, RollingCounts } from "./rollout/batches.js";
export { createFileStateStore } from "./state/file-store.js";
export type { FileStateStoreOptions } from "./state/file-store.js";
export { emptyTargetState, compactHistory, JOURNALED_ROLLOUTS_KEPT } from "./state/types.js";
export type { Holder, RecordedError, ReleaseRecord, ReleaseStatus, RolloutRecord, RolloutStatus, StateStore, TargetLock, TargetState } from "./state/types.js";
export type { JournalEntry, JournalOp, Lease, LeaseStatus, LockOptions, UpdateOptions } from "./state/types.js";
export { DEFAULT_LEASE_TTL_MS, acquireLease, assertLeaseToken, describeLease, formatHolder, holdLease, leaseStaleReason, processAlive, releaseLease, renewLease } from "./state/lease.js";
export type { LeaseKeeperOptions } from "./state/lease.js";
export { keepLease } from "./state/lease.js";
export type { KeepLeaseOptions, KeptLease } from "./state/lease.js";
export { CANCELLED_BEFORE_START, FINAL_DEPLOYMENT_STATES, assertDeploymentOutcome, isFinalDeploymentState, newDeploymentId } from "./deployments/queue.js";
export type {
  DeploymentError,
  DeploymentEvent,
  DeploymentKind,
  DeploymentOutcome,
  DeploymentQueue,
  DeploymentRecord,
  DeploymentRequest,
  DeploymentResult,
  DeploymentState,
  EnqueueInput,
  EnqueueOutcome,
  FinalDeploymentState,
  IdempotentResponse,
} from "./deployments/queue.js";
export { createMemoryDeploymentQueue } from "./deployments/memory-queue.js";
export { CRASH_AT_ENV, journalCrashPoints, journaled, parseCrashPoint } from "./journal/index.js";
export type { JournalOptions } from "./journal/index.js";
export { createKiln, chooseRollbackRelease } from "./kiln.js";
export type { BuildResult, DeployResult, Kiln, KilnOptions, ProviderSource, RollbackOptions, SpecOptions, TargetOptions, TargetStatus } from "./kiln.js";
export type { LockWaitOptions, RecoveryResult } from "./kiln.js";
