/*
 * The planner: pure functions from what is (state, the instances seen) and what is wanted (the
 * spec, a release) to a plan whose `program` the rollout engine runs step by step. Every
 * strategy's arithmetic (rolling batches, blue-green phases, canary steps) lives here, and only
 * here; nothing in this folder calls a provider or reads a clock.
 */
export { nextRollingBatch, planRollingBatches } from "./batches.js";
export type { RollingBatch, RollingCounts } from "./batches.js";
export { currentRelease, nextReleaseNumber, planDeploy, programRelease, releaseConfigHash, resumeDeployPlan } from "./deploy.js";
export { describeHealth, describeProgram, formatPlan } from "./format.js";
export { planRecovery, recoveryCandidates } from "./recovery.js";
export type { RecoveryInput } from "./recovery.js";
export { effectiveLimits, gracePeriodOf, isRouted, planReplacement } from "./replacement.js";
export { planRollback } from "./rollback.js";
export type { RollbackInput } from "./rollback.js";
export type {
  DeployPlan,
  HoldReason,
  ImagePlan,
  InstanceSelection,
  PlanInput,
  ProgramRelease,
  ReplacementInput,
  ReplacementPlan,
  RolloutPhase,
  RolloutPlan,
  RolloutStep,
} from "./types.js";
