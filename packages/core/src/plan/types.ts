import type { ImageRef, Instance, ProviderLimits } from "../provider/contract.js";
import type { ResolvedRollout, ResolvedTarget, ResolvedTraffic } from "../spec/resolve.js";
import type { TargetState } from "../state/types.js";
import type { Target } from "../target.js";
import type { RollingBatch } from "./batches.js";

/** What happens to the image. */
export type ImagePlan =
  | { readonly action: "build"; readonly fingerprint: string }
  | { readonly action: "reuse"; readonly fingerprint: string; readonly image: ImageRef };

/**
 * Instances a step acts on: instances that ran when the plan was made, by id, and those that
 * earlier `launch` steps of the same program started, by their launch key.
 */
export interface InstanceSelection {
  /** Ids of instances seen when planning (in {@link ReplacementPlan.keep} or {@link ReplacementPlan.retire}). */
  readonly ids: readonly string[];
  /** Keys of earlier `launch` steps (`launch:1`); their instances, in launch order. */
  readonly launches: readonly string[];
}

/** Why a rollout holds with health checks still running. */
export type HoldReason = "bake" | "canary-step" | "pause";

/**
 * One step of a rollout program: a single thing the engine does, in order, with every number
 * decided by the planner. Plain data (JSON-serialisable).
 *
 * - `launch`: start `count` instances of `release`; the provider receives the idempotency key
 *   `<rolloutId>:<key>` (`key` is `launch:<n>`, n counting this program's launches from 1, which
 *   is also the journal's step name for the call).
 * - `wait-until-healthy`: gate the instances of one launch on the release's health check.
 * - `register`: give instances traffic (present only when the release or the one before it is routed).
 * - `switch-traffic`: blue-green's switch: register the new set, then drain the old set from
 *   traffic for `drainMs` (it keeps running until retired).
 * - `hold`: keep probing every instance of the new release for `durationMs`; a failure ends the rollout.
 * - `retire`: drain the instances from traffic (when `drain`), then terminate them with
 *   `gracePeriodMs`. With `minServing`, the engine first checks that at least that many
 *   instances still serve afterwards (unless the new release is complete) and stops otherwise.
 */
export type RolloutStep =
  | { readonly action: "launch"; readonly key: string; readonly release: number; readonly count: number }
  | { readonly action: "wait-until-healthy"; readonly launch: string }
  | { readonly action: "register"; readonly instances: InstanceSelection }
  | { readonly action: "switch-traffic"; readonly register: InstanceSelection; readonly deregister: readonly string[]; readonly drainMs: number }
  | { readonly action: "hold"; readonly reason: HoldReason; readonly durationMs: number }
  | { readonly action: "retire"; readonly instances: readonly string[]; readonly drain: boolean; readonly gracePeriodMs: number; readonly minServing?: number };

/**
 * A named group of steps, the unit a plan is described in (`batch 2: retire 1, then launch 1 and
 * wait until healthy`). The engine runs the steps of every phase in order; the phase itself only
 * names them.
 */
export type RolloutPhase =
  | { readonly phase: "remove-stopped"; readonly steps: readonly RolloutStep[] }
  | { readonly phase: "route-kept"; readonly steps: readonly RolloutStep[] }
  | { readonly phase: "batch"; readonly number: number; readonly steps: readonly RolloutStep[] }
  | { readonly phase: "new-set"; readonly steps: readonly RolloutStep[] }
  | { readonly phase: "bake"; readonly steps: readonly RolloutStep[] }
  | { readonly phase: "retire-old-set"; readonly steps: readonly RolloutStep[] }
  | { readonly phase: "canary-step"; readonly number: number; readonly steps: readonly RolloutStep[] }
  | { readonly phase: "retire-rest"; readonly steps: readonly RolloutStep[] };

/** A rollout that replaces instances: what stays, what goes, and the program that does it. */
export interface ReplacementPlan {
  readonly action: "replace";
  /** The release whose instances serve now (undefined on a first deploy). */
  readonly fromRelease: number | undefined;
  /** The release the rollout moves to; a new number, or the current one when repairing drift. */
  readonly toRelease: number;
  /** Whether `toRelease` is a new release record. */
  readonly newRelease: boolean;
  readonly count: number;
  readonly maxSurge: number;
  readonly maxUnavailable: number;
  /** The strategy and its settings the program was made with. */
  readonly strategy: ResolvedRollout;
  /** Instances of `toRelease` already running, which stay. */
  readonly keep: readonly Instance[];
  /**
   * Instances that are retired (another release, surplus, or not running), in the order the
   * program retires them: leftovers nobody checked before the previous release's own.
   */
  readonly retire: readonly Instance[];
  /** How many new instances are launched. */
  readonly launch: number;
  /** The rolling batches, when everything goes to plan (rolling strategy only). */
  readonly batches: readonly RollingBatch[];
  /** The program the rollout engine runs, phase by phase, step by step. */
  readonly program: readonly RolloutPhase[];
  /** The program's phases in words, for any strategy. */
  readonly steps: readonly string[];
  /** The most instances that run at once during the rollout. */
  readonly peakInstances: number;
}

/** What happens to the instances. */
export type RolloutPlan = { readonly action: "none"; readonly reason: string } | ReplacementPlan;

/** The result of {@link planDeploy}: data only, printable like `terraform plan`. */
export interface DeployPlan {
  readonly target: Target;
  readonly fingerprint: string;
  readonly configHash: string;
  readonly image: ImagePlan;
  readonly rollout: RolloutPlan;
  /** True when nothing is built, launched or retired. */
  readonly noop: boolean;
  /** Human-readable lines describing the changes. */
  readonly changes: readonly string[];
}

/** What {@link planDeploy} decides from. */
export interface PlanInput {
  readonly resolved: ResolvedTarget;
  readonly fingerprint: string;
  /** The image already built from this fingerprint, if any. */
  readonly existingImage: ImageRef | undefined;
  readonly state: TargetState;
  /** The target's live instances, from the provider. */
  readonly instances: readonly Instance[];
  /** The provider's limits, if it declares any. */
  readonly limits?: ProviderLimits;
  /** What the provider's own health check looks at (`HealthCapability.description`), if it has one. */
  readonly providerHealth?: string;
  /** The lines the provider adds to the plan (`ProviderSpec.planLines`), without indentation. */
  readonly providerLines?: readonly string[];
}

/** The release a rollout moves from or to, as far as the program depends on it. */
export interface ProgramRelease {
  readonly number: number;
  /** The image id its instances run. */
  readonly imageId: string | undefined;
  /** How long its instances get to stop, and to drain from traffic (milliseconds). */
  readonly stopGracePeriodMs: number;
  /** How requests reach its instances; absent or without a router: no traffic steps for it. */
  readonly traffic?: ResolvedTraffic | undefined;
}

/** Input of {@link planReplacement}. */
export interface ReplacementInput {
  readonly instances: readonly Instance[];
  readonly fromRelease: number | undefined;
  readonly toRelease: number;
  readonly newRelease: boolean;
  /**
   * The image of `toRelease`, when it exists already. An instance is kept only when it runs this
   * image: a leftover with the same release number from another state must not pass for it.
   */
  readonly imageId: string | undefined;
  readonly count: number;
  readonly maxSurge: number;
  readonly maxUnavailable: number;
  /** The strategy; rolling with the given surge and unavailability when omitted. */
  readonly rollout?: ResolvedRollout;
  /** The provider's limits: a strategy whose peak exceeds them is refused. */
  readonly limits?: ProviderLimits;
  /** `toRelease`'s grace period and traffic. @defaultValue a 0 ms grace period, no traffic */
  readonly release?: Omit<ProgramRelease, "number" | "imageId">;
  /**
   * Ids of instances of `toRelease` that failed their health check when a recovery was to adopt
   * them: they are never kept, and retired first.
   */
  readonly unhealthy?: readonly string[];
  /** The release serving now, if any: its instances are retired last, with its grace period. */
  readonly previous?: ProgramRelease | undefined;
}
