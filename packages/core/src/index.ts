/**
 * Kiln core: the spec, fingerprints, the plan/build/deploy/rollback lifecycle, rollouts, health
 * checks, state, events, errors, and the provider contract (with the plumbing every provider
 * shares: labels, error mapping, loading a provider by name). Imports no provider, cloud SDK, CLI
 * or HTTP library.
 * @module
 */

// Errors, logging, waiting, targets.
export { ERROR_CODES, KilnError, isKilnError, toKilnError, isAbortError, throwIfAborted } from "./errors.js";
export type { ErrorCode, KilnErrorOptions } from "./errors.js";
/**
 * The zod that core validates specs with (zod 4, bundled into core's build): a provider builds its
 * spec sections ({@link ProviderSpec}) with this `z`, so that one copy of zod composes core's schema
 * and every provider's, and a command that only reads a spec loads zod once, as one file. A schema
 * made with another copy of the same zod major version composes too (zod 4 recognises its types by
 * traits, not by class), at the cost of loading that copy. See https://zod.dev/api for the API.
 */
export { z } from "zod";
export { silentLogger } from "./logger.js";
export type { Logger } from "./logger.js";
export { waitFor, sleep } from "./wait.js";
export type { WaitOptions, WaitOutcome } from "./wait.js";
export { DEFAULT_ENVIRONMENT, RESOURCE_NAME_MAX_LENGTH, formatTarget, parseTarget, resourceName } from "./target.js";
export type { ResourceNameOptions, Target } from "./target.js";

// The provider contract and what every provider shares.
export { childContext, defineProvider } from "./provider/contract.js";
export type {
  DockerfileRecipe,
  Endpoint,
  HealthCapability,
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
  PortConfig,
  ProbeResult,
  Provider,
  ProviderContext,
  ProviderLimits,
  ProviderProgress,
  ProxyStatus,
  TrafficCapability,
  TrafficOptions,
} from "./provider/contract.js";
export { REDACTED, SecretValue, redactSecrets } from "./secrets/value.js";
export type { SecretDelivery, SecretMount, SecretSource, SecretStoreCapability } from "./secrets/types.js";
export { looksLikeSecretName } from "./secrets/names.js";
export { describeSecretSource, readSecret, secretDigest } from "./secrets/read.js";
export type { SecretSources } from "./secrets/read.js";
export { DEFAULT_PROVIDER_SPEC, PROVIDER_SECTION_KEYS, PROVIDER_SECTION_PATHS, defineProviderSpec, readSection, sectionValues } from "./provider/spec.js";
export type { FingerprintContribution, ProviderSectionKey, ProviderSections, ProviderSpec, ReadSection, SectionValues } from "./provider/spec.js";
export { LABELS, decodeInstanceLabels, formatPortsLabel, imageLabels, instanceLabels, parsePortsLabel, selectorLabels, targetLabels } from "./provider/labels.js";
export type { DecodedLabels, LabelKey } from "./provider/labels.js";
export { CONNECTION_ERROR_CODES, assertLaunchCount, createErrorMapper, isConnectionError } from "./provider/errors.js";
export type { ProviderErrorMapper, ProviderErrorRules } from "./provider/errors.js";
export { importProvider, importProviderSpec, providerPackage, providerPackages, providerSources } from "./provider/import.js";
export type { ImportProviderOptions, ProviderModule } from "./provider/import.js";
export { probeHttp, probeTcp } from "./health.js";

// Events.
export type { EventBase, EventHandler, EventInstance, KilnEvent, KilnEventInput, KilnEventType, RecoveredReleaseOutcome, RolloutKind } from "./events.js";

// The spec.
export {
  specSchema,
  environmentSchema,
  imageSchema,
  dockerfileSchema,
  machineSchema,
  machineBaseSchema,
  machineBuilderSchema,
  provisionStepSchema,
  instancesSchema,
  portSchema,
  resourcesSchema,
  healthSchema,
  httpCheckSchema,
  tcpCheckSchema,
  commandCheckSchema,
  rolloutSchema,
  canaryStepSchema,
  countOrPercentSchema,
  trafficSchema,
  proxySchema,
  loadBalancerSchema,
  providerSchema,
  MEMORY_PATTERN,
  MAX_INSTANCE_COUNT,
  DEFAULT_MAX_INSTANCE_COUNT,
} from "./spec/schema.js";
export { NAME_MAX_LENGTH, NAME_PATTERN, nameProblems } from "./spec/names.js";
export type { Spec, SpecInput, EnvironmentOverrides } from "./spec/schema.js";
export { composeSpecSchemas, providersNamedIn } from "./spec/compose.js";
export type { ComposedSchemas, ProviderRegistry } from "./spec/compose.js";
export { formatPath, formatSpecIssue, specInvalidError } from "./spec/issues.js";
export type { SpecIssue } from "./spec/issues.js";
export { assertValidSpec, providersOf, validateSpec } from "./spec/validate.js";
export type { SpecValidation, ValidateOptions, ValidatedSpec } from "./spec/validate.js";
export { OBJECT_SPEC_FILE, checkSpecWith, loadSpec, parseSpec, specFromObject, specFromYaml } from "./spec/load.js";
export { checkSpec, confinementIssues, referenceIssues } from "./spec/check.js";
export type { CheckSpecOptions } from "./spec/check.js";
export type { LoadSpecOptions, LoadedSpec, ParseSpecOptions } from "./spec/load.js";
export { defaultHealthDeadlineMs, parseMemory, resolveTarget } from "./spec/resolve.js";
export type {
  ResolvedCanaryStep,
  ResolvedCheck,
  ResolvedCommandCheck,
  ResolvedHealth,
  ResolvedHttpCheck,
  ResolvedMachine,
  ResolvedProvisionStep,
  ResolvedProxy,
  ResolvedRollout,
  ResolvedSecret,
  ResolvedTarget,
  ResolvedTcpCheck,
  ResolvedTraffic,
} from "./spec/resolve.js";
export { SPEC_SCHEMA_ID, renderSpecReference, specJsonSchema } from "./spec/json-schema.js";

// Fingerprints.
export { FINGERPRINT_MAX_OPEN_FILES, fingerprintBuild, shortFingerprint } from "./fingerprint/fingerprint.js";
export type { FingerprintOptions, FingerprintResult } from "./fingerprint/fingerprint.js";
export { RACY_MARGIN_MS } from "./fingerprint/stat-cache.js";
export { resolveBaseImages } from "./fingerprint/dockerfile.js";
export { fingerprintMachine } from "./fingerprint/machine.js";
export type { MachineFingerprintOptions, MachineFingerprintResult } from "./fingerprint/machine.js";

// Plans and rollouts.
export {
  planDeploy,
  planRollback,
  planRecovery,
  recoveryCandidates,
  planReplacement,
  formatPlan,
  releaseConfigHash,
  currentRelease,
  nextReleaseNumber,
  effectiveLimits,
  describeHealth,
} from "./plan/index.js";
export type {
  DeployPlan,
  HoldReason,
  ImagePlan,
  InstanceSelection,
  PlanInput,
  ProgramRelease,
  RecoveryInput,
  ReplacementInput,
  ReplacementPlan,
  RollbackInput,
  RolloutPhase,
  RolloutPlan,
  RolloutStep,
} from "./plan/index.js";
export { nextRollingBatch, planRollingBatches } from "./plan/index.js";
export type { RollingBatch, RollingCounts } from "./plan/index.js";

// State.
export { createFileStateStore } from "./state/file-store.js";
export type { FileStateStoreOptions } from "./state/file-store.js";
export { emptyTargetState, compactHistory, foldJournal, isListedTarget, lastJournalSeq, JOURNALED_ROLLOUTS_KEPT } from "./state/types.js";
export type { AppendJournalOptions, AppendedJournalEntry, NewJournalEntry, Holder, JournalEntry, JournalOp, Lease, LeaseStatus, LockOptions, RecordedError, ReleaseRecord, ReleaseStatus, RolloutRecord, RolloutStatus, StateStore, TargetLock, TargetState, UpdateOptions } from "./state/types.js";
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
export { INTERRUPTED_BY_RESTART, createFileDeploymentQueue } from "./deployments/file-queue.js";
export type { FileDeploymentQueue, FileDeploymentQueueOptions } from "./deployments/file-queue.js";

// The journal.
export { journalCrashPoints, journaled, parseCrashPoint } from "./journal/journaled.js";
export type { JournalHooks, JournalOptions } from "./journal/journaled.js";

// Retention.
export { DEFAULT_RETENTION_KEEP, assertRetention, imageUsage, planCollection, retainedReleases } from "./retention/select.js";
export type { CollectionInput, CollectionPlan, ImageInstanceRef, ImageReleaseRef, ImageUsage, KeptImage } from "./retention/select.js";

// The lifecycle API.
export { createKiln, chooseRollbackRelease } from "./kiln.js";
export type { BuildResult, CheckOptions, CollectGarbageOptions, CollectionResult, DeployResult, Kiln, KilnOptions, LockWaitOptions, ProviderSource, RecoveryResult, RollbackOptions, SpecOptions, TargetOptions, TargetStatus } from "./kiln.js";
