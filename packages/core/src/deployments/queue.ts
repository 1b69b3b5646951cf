import { randomUUID } from "node:crypto";
import { KilnError } from "../errors.js";
import type { KilnEvent } from "../events.js";
import type { Target } from "../target.js";

// The deployment queue: deployments asked for (by an API, a chat bot, a scheduler) wait here until
// a worker claims one under a lease and runs it with core. The contract is shared by every
// backend: in memory for one process (memory-queue.ts), PostgreSQL for several
// (`@kilnjs/store-postgres`); `runDeploymentQueueConformance` in `@kilnjs/testkit` checks it.

/** What a deployment does: roll out a spec, or roll back to an earlier release. */
export type DeploymentKind = "deploy" | "rollback";

/**
 * Where a deployment is: `queued` until a worker claims it (under a lease), `running` while the
 * worker holding the claim runs it, then one of the {@link FINAL_DEPLOYMENT_STATES}:
 * `succeeded` (a new release serves), `unchanged` (nothing to do), `failed`, `cancelled`.
 */
export type DeploymentState = "queued" | "running" | "succeeded" | "unchanged" | "failed" | "cancelled";

/** A state after which nothing changes. */
export type FinalDeploymentState = Exclude<DeploymentState, "queued" | "running">;

/** The states after which nothing changes: `succeeded`, `unchanged`, `failed`, `cancelled`. */
export const FINAL_DEPLOYMENT_STATES: ReadonlySet<DeploymentState> = new Set<FinalDeploymentState>(["succeeded", "unchanged", "failed", "cancelled"]);

/** Whether `state` is final (nothing changes after it). */
export function isFinalDeploymentState(state: DeploymentState): state is FinalDeploymentState {
  return FINAL_DEPLOYMENT_STATES.has(state);
}

/** What a worker needs to run a deployment, as the caller asked for it (validated by the caller). */
export interface DeploymentRequest {
  /** A spec as an object (already validated), for `deploy` of a given spec. */
  readonly spec?: unknown;
  /** The registered service whose spec file to use, for `deploy` by reference. */
  readonly service?: string;
  /** The environment; `default` for the spec's top level. */
  readonly environment: string;
  /** `rollback`: the release to roll back to; the previous good one when absent. */
  readonly release?: number;
}

/** What became of a deployment that ran to the end. */
export interface DeploymentResult {
  /** The release that serves afterwards. */
  readonly release?: number;
  /** The rollout that made it serve (absent when nothing had to change). */
  readonly rolloutId?: string;
}

/** Why a deployment failed or was cancelled. */
export interface DeploymentError {
  /** A stable Kiln error code (`HEALTH_CHECK_FAILED`, `ABORTED`, …). */
  readonly code: string;
  /** What happened and what to do next; never holds a secret. */
  readonly message: string;
}

/** One deployment: a request to deploy or roll back one target, and what became of it. */
export interface DeploymentRecord {
  /** `dep_` and 32 hexadecimal digits ({@link newDeploymentId}). */
  readonly id: string;
  readonly kind: DeploymentKind;
  readonly target: Target;
  readonly state: DeploymentState;
  /** Who asked for it (an API token's name, a user): for people, not for authorisation. */
  readonly requestedBy: string;
  /** When it was queued (ISO 8601). */
  readonly createdAt: string;
  /** When a worker first claimed it (ISO 8601); a takeover keeps the first time. */
  readonly startedAt?: string;
  /** When it reached its final state (ISO 8601). */
  readonly finishedAt?: string;
  readonly request: DeploymentRequest;
  /** Whether a cancel was asked for: the worker running it stops the rollout, as Ctrl-C does. */
  readonly cancelRequested: boolean;
  /** The worker that claimed it last (a server replica's id); kept after it finished. */
  readonly claimedBy?: string;
  /**
   * While it runs: when the worker's claim lapses unless renewed (ISO 8601). Another worker may
   * then claim it again (a takeover). Absent once it finished.
   */
  readonly leaseExpiresAt?: string;
  /** How many times a worker claimed it: 1 normally, more when it was taken over. */
  readonly attempts: number;
  /** The outcome, once it ran to the end. */
  readonly result?: DeploymentResult;
  /** The error, when it failed or was cancelled. */
  readonly error?: DeploymentError;
}

/** One event of a deployment with its number: 1, 2, 3, … in the order they were appended. */
export interface DeploymentEvent {
  /** The event's number within its deployment (an SSE `id`, a resume point). */
  readonly seq: number;
  readonly event: KilnEvent;
}

/**
 * The answer to a request made with an idempotency key (an HTTP `Idempotency-Key`), kept so that a
 * retry with the same key gets the same answer instead of doing the work again.
 */
export interface IdempotentResponse {
  /** An HTTP status, e.g. 202. */
  readonly status: number;
  /** The body, as JSON. */
  readonly body: unknown;
  /** Headers to send again (lowercase names). */
  readonly headers?: Readonly<Record<string, string>>;
}

/** What to record with {@link DeploymentQueue.enqueue}. */
export interface EnqueueInput {
  readonly kind: DeploymentKind;
  readonly target: Target;
  readonly request: DeploymentRequest;
  /** Who asks (an API token's name, a user). */
  readonly requestedBy: string;
}

/** What {@link DeploymentQueue.enqueue} did. */
export type EnqueueOutcome =
  /** Recorded as `queued`. */
  | { readonly kind: "queued"; readonly record: DeploymentRecord }
  /** Refused: another deployment of the target is queued or running (`active`). */
  | { readonly kind: "conflict"; readonly active: DeploymentRecord };

/** How a deployment ended, as its worker records it with {@link DeploymentQueue.finish}. */
export interface DeploymentOutcome {
  readonly state: FinalDeploymentState;
  readonly result?: DeploymentResult;
  readonly error?: DeploymentError;
}

/**
 * Where deployments wait and are run from, shared by every worker (server replica) that uses the
 * same backend. Queued deployments are claimed under a lease; a worker renews its lease while it
 * runs the deployment, and one whose lease lapses (its process died) loses the deployment to the
 * next worker that claims it, which sees `attempts` above 1 and recovers the interrupted rollout.
 *
 * The rules every backend keeps (checked by `runDeploymentQueueConformance` in `@kilnjs/testkit`):
 *
 * - **One active deployment per target**: {@link enqueue} refuses, atomically, a target with one
 *   `queued` or `running`, whichever worker or process asks.
 * - **Exclusive claims**: {@link claim} gives each claimable deployment to exactly one caller, also
 *   when many claim at once through different queue objects on one backend.
 * - **Fenced by the claim**: {@link renew} and {@link finish} work only for the worker holding the
 *   claim; after a takeover the old worker gets `undefined` and `false`.
 * - **Events in order**, numbered per deployment from 1, readable by every worker.
 * - **Idempotent answers**: the first answer kept under a key is the answer.
 *
 * Lease times are the backend's clock (PostgreSQL's for the PostgreSQL queue), so workers whose
 * clocks differ agree on when a claim lapses.
 */
export interface DeploymentQueue {
  /**
   * Records a new `queued` deployment (attempts 0, no cancel asked), unless the target has one
   * `queued` or `running`: then it is refused with `conflict` and that deployment. Decided
   * atomically: of several requests for one target at once, exactly one is queued.
   */
  enqueue(input: EnqueueInput): Promise<EnqueueOutcome>;
  /** One deployment by its id; `undefined` when there is none. */
  get(id: string): Promise<DeploymentRecord | undefined>;
  /**
   * Deployments, newest first.
   * @param options.limit - at most this many (a count)
   * @param options.target - only this target's
   */
  list(options: { readonly target?: Target; readonly limit: number }): Promise<DeploymentRecord[]>;
  /**
   * Claims the oldest deployment that is `queued`, or `running` under a lapsed lease (a takeover),
   * for `worker` for `leaseMs` milliseconds: it becomes `running`, `claimedBy` the worker,
   * `attempts` one more, `startedAt` set on the first claim. Each deployment goes to exactly one
   * caller, however many claim at once.
   * @param worker - the claiming worker's id (e.g. a server replica's)
   * @returns the claimed deployment, or `undefined` when none waits
   */
  claim(worker: string, leaseMs: number): Promise<DeploymentRecord | undefined>;
  /**
   * Extends `worker`'s lease on a `running` deployment by `leaseMs` milliseconds from now.
   * @returns the deployment as renewed (so the worker also learns of a cancel request), or
   *   `undefined` when the claim is not this worker's any more (taken over, finished, unknown id)
   */
  renew(id: string, worker: string, leaseMs: number): Promise<DeploymentRecord | undefined>;
  /**
   * Records how a `running` deployment ended, if `worker` still holds its claim (even when its
   * lease lapsed and nobody took it over): the final state, `finishedAt`, the result or error; the
   * lease is gone, the target free for the next deployment.
   * @returns false when the claim is not this worker's (taken over, already finished, unknown id)
   * @throws KilnError INVALID_ARGUMENT when `outcome.state` is not a final state
   */
  finish(id: string, worker: string, outcome: DeploymentOutcome): Promise<boolean>;
  /**
   * Asks for a cancel. A `queued` deployment is `cancelled` at once (error `ABORTED`); a `running`
   * one gets `cancelRequested`, which its worker sees at its next renewal and acts on; a final one
   * is left as it is.
   * @returns the deployment afterwards, or `undefined` when there is none
   */
  requestCancel(id: string): Promise<DeploymentRecord | undefined>;
  /**
   * Appends events to a deployment, numbered on from its last one; events appended at the same
   * time (by two workers) get distinct numbers with no gaps.
   * @returns the number of the deployment's last event (0 when it has none)
   * @throws KilnError INVALID_ARGUMENT when there is no deployment `id`
   */
  appendEvents(id: string, events: readonly KilnEvent[]): Promise<number>;
  /**
   * A deployment's events numbered above `afterSeq`, oldest first, at most `limit` of them; none
   * for an unknown deployment.
   */
  readEvents(id: string, afterSeq: number, limit: number): Promise<DeploymentEvent[]>;
  /** The answer kept under `key` (which the caller scopes, e.g. by token and route), if any. */
  getResponse(key: string): Promise<IdempotentResponse | undefined>;
  /**
   * Keeps `response` under `key` unless an answer is kept there already, which then stays.
   * @returns the answer kept under `key`: `response`, or the one kept first
   */
  keepResponse(key: string, response: IdempotentResponse): Promise<IdempotentResponse>;
  /** Releases what the queue holds (connections); it is not used afterwards. */
  close?(): Promise<void>;
}

/** A new deployment id: `dep_` and a random UUID's 32 hexadecimal digits. */
export function newDeploymentId(): string {
  return `dep_${randomUUID().replace(/-/g, "")}`;
}

/**
 * Checks a worker's outcome before it is recorded.
 * @throws KilnError INVALID_ARGUMENT when the state is not final
 */
export function assertDeploymentOutcome(outcome: DeploymentOutcome): void {
  if (!isFinalDeploymentState(outcome.state)) {
    throw new KilnError("INVALID_ARGUMENT", `A deployment finishes in one of ${[...FINAL_DEPLOYMENT_STATES].join(", ")}, not "${String(outcome.state)}".`);
  }
}

/** The error a deployment cancelled before any worker claimed it carries. */
export const CANCELLED_BEFORE_START: DeploymentError = { code: "ABORTED", message: "Cancelled before it started." };
