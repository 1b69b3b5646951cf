import { randomUUID } from "node:crypto";
import { KilnError, formatTarget, type KilnEvent, type Target } from "@kilnjs/core";

/** What a deployment does: roll out a spec, or roll back to an earlier release. */
export type DeploymentKind = "deploy" | "rollback";

/** Where a deployment is: `queued` until a replica claims it, `running`, then one of the final states. */
export type DeploymentState = "queued" | "running" | "succeeded" | "unchanged" | "failed" | "cancelled";

/** The states after which nothing changes. */
export const FINAL_STATES: ReadonlySet<DeploymentState> = new Set(["succeeded", "unchanged", "failed", "cancelled"]);

/** What a replica needs to run a deployment, as accepted from the API (validated there). */
export interface DeploymentRequest {
  /** A spec as an object (already validated), for `deploy` of a posted spec. */
  readonly spec?: unknown;
  /** The registered service whose spec file to use, for `deploy` by reference. */
  readonly service?: string;
  /** The environment; `default` for the spec's top level. */
  readonly environment: string;
  /** `rollback`: the release to roll back to; the previous good one when absent. */
  readonly release?: number;
}

/** One deployment: a request to deploy or roll back one target, and what became of it. */
export interface DeploymentRecord {
  readonly id: string;
  readonly kind: DeploymentKind;
  readonly target: Target;
  readonly state: DeploymentState;
  /** The token (by name) that asked for it. */
  readonly requestedBy: string;
  /** ISO 8601. */
  readonly createdAt: string;
  readonly startedAt?: string;
  readonly finishedAt?: string;
  readonly request: DeploymentRequest;
  /** Whether a cancel was asked for (the runner stops the rollout as Ctrl-C does). */
  readonly cancelRequested: boolean;
  /** The replica running it, while it runs. */
  readonly claimedBy?: string;
  /** When the claim lapses unless renewed (ISO 8601); another replica then takes the deployment over. */
  readonly claimExpiresAt?: string;
  /** How many times a replica claimed it (more than 1: it was taken over). */
  readonly attempts: number;
  /** The outcome when it finished. */
  readonly result?: { readonly release?: number; readonly rolloutId?: string };
  /** The error when it failed or was cancelled. */
  readonly error?: { readonly code: string; readonly message: string };
}

/** A stored event of a deployment, numbered from 1 in order. */
export interface StoredEvent {
  readonly seq: number;
  readonly event: KilnEvent;
}

/** The answer to a request with an `Idempotency-Key`, kept to be given again. */
export interface StoredResponse {
  readonly status: number;
  readonly body: unknown;
  readonly headers?: Readonly<Record<string, string>>;
}

/** What {@link DeploymentStore.create} did. */
export type CreateOutcome =
  | { readonly kind: "created"; readonly record: DeploymentRecord }
  /** Another deployment of the target is queued or running. */
  | { readonly kind: "conflict"; readonly active: DeploymentRecord };

/**
 * Where the server keeps deployments, their events and idempotent answers, shared by every replica:
 * in memory for one process (`createMemoryDeploymentStore`), in PostgreSQL for several
 * (`@kilnjs/store-postgres`). Claims are leases: exactly one replica runs a deployment at a time,
 * and one whose claim lapses (its replica died) is claimed again by another.
 */
export interface DeploymentStore {
  /**
   * Records a new `queued` deployment unless the target has one queued or running (then
   * `conflict`, with it): at most one active deployment per target, decided atomically.
   */
  create(input: { kind: DeploymentKind; target: Target; request: DeploymentRequest; requestedBy: string }): Promise<CreateOutcome>;
  get(id: string): Promise<DeploymentRecord | undefined>;
  /** Newest first, at most `limit`, optionally of one target. */
  list(options: { target?: Target; limit: number }): Promise<DeploymentRecord[]>;
  /**
   * Claims the oldest deployment that is `queued`, or `running` with a lapsed claim (taken over),
   * for `replicaId` for `leaseMs` milliseconds; marks it `running`. Undefined when none waits.
   */
  claim(replicaId: string, leaseMs: number): Promise<DeploymentRecord | undefined>;
  /** Extends this replica's claim; false when the claim is no longer its own (taken over). */
  renew(id: string, replicaId: string, leaseMs: number): Promise<boolean>;
  /** Records the final state, if this replica still holds the claim; false otherwise. */
  finish(id: string, replicaId: string, outcome: { state: DeploymentState; result?: DeploymentRecord["result"]; error?: DeploymentRecord["error"] }): Promise<boolean>;
  /** Asks for a cancel: a queued deployment is cancelled at once, a running one by its runner. */
  requestCancel(id: string): Promise<DeploymentRecord | undefined>;
  /** Appends events; returns the sequence number of the last. */
  appendEvents(id: string, events: readonly KilnEvent[]): Promise<number>;
  /** Events after `afterSeq`, oldest first, at most `limit`. */
  readEvents(id: string, afterSeq: number, limit: number): Promise<StoredEvent[]>;
  /** The answer kept for `key` (scoped by the caller, e.g. token and route), if any. */
  getResponse(key: string): Promise<StoredResponse | undefined>;
  /** Keeps an answer for `key`; a key kept already keeps its first answer (returned). */
  putResponse(key: string, response: StoredResponse): Promise<StoredResponse>;
  close?(): Promise<void>;
}

/**
 * A {@link DeploymentStore} in this process's memory: for one server with the embedded file store
 * (the default of `kiln serve` on one machine). Deployments and events do not survive a restart;
 * rollouts themselves are journaled in the state store and are recovered by `kiln rollout resume`.
 */
export function createMemoryDeploymentStore(): DeploymentStore {
  const records = new Map<string, DeploymentRecord>();
  const events = new Map<string, StoredEvent[]>();
  const responses = new Map<string, StoredResponse>();
  const order: string[] = [];
  const active = (target: Target) =>
    order.map((id) => records.get(id)!).find((record) => formatTarget(record.target) === formatTarget(target) && !FINAL_STATES.has(record.state));
  const set = (record: DeploymentRecord) => {
    records.set(record.id, record);
    return record;
  };
  return {
    create(input) {
      const running = active(input.target);
      if (running) return Promise.resolve({ kind: "conflict", active: running });
      const record = set({ ...input, id: newDeploymentId(), state: "queued", createdAt: new Date().toISOString(), cancelRequested: false, attempts: 0 });
      order.push(record.id);
      events.set(record.id, []);
      return Promise.resolve({ kind: "created", record });
    },
    get: (id) => Promise.resolve(records.get(id)),
    list({ target, limit }) {
      return Promise.resolve(
        [...order]
          .reverse()
          .map((id) => records.get(id)!)
          .filter((record) => !target || formatTarget(record.target) === formatTarget(target))
          .slice(0, limit),
      );
    },
    claim(replicaId, leaseMs) {
      const now = Date.now();
      const next = order
        .map((id) => records.get(id)!)
        .find((record) => record.state === "queued" || (record.state === "running" && Date.parse(record.claimExpiresAt ?? "") < now));
      if (!next) return Promise.resolve(undefined);
      return Promise.resolve(
        set({
          ...next,
          state: "running",
          claimedBy: replicaId,
          claimExpiresAt: new Date(now + leaseMs).toISOString(),
          startedAt: next.startedAt ?? new Date(now).toISOString(),
          attempts: next.attempts + 1,
        }),
      );
    },
    renew(id, replicaId, leaseMs) {
      const record = records.get(id);
      if (!record || record.claimedBy !== replicaId || FINAL_STATES.has(record.state)) return Promise.resolve(false);
      set({ ...record, claimExpiresAt: new Date(Date.now() + leaseMs).toISOString() });
      return Promise.resolve(true);
    },
    finish(id, replicaId, outcome) {
      const record = records.get(id);
      if (!record || record.claimedBy !== replicaId || FINAL_STATES.has(record.state)) return Promise.resolve(false);
      const { claimExpiresAt: _expires, ...rest } = record;
      set({ ...rest, state: outcome.state, finishedAt: new Date().toISOString(), ...(outcome.result ? { result: outcome.result } : {}), ...(outcome.error ? { error: outcome.error } : {}) });
      return Promise.resolve(true);
    },
    requestCancel(id) {
      const record = records.get(id);
      if (!record) return Promise.resolve(undefined);
      if (record.state === "queued") {
        return Promise.resolve(
          set({ ...record, cancelRequested: true, state: "cancelled", finishedAt: new Date().toISOString(), error: { code: "ABORTED", message: "Cancelled before it started." } }),
        );
      }
      return Promise.resolve(FINAL_STATES.has(record.state) ? record : set({ ...record, cancelRequested: true }));
    },
    appendEvents(id, added) {
      const list = events.get(id);
      if (!list) return Promise.reject(new KilnError("INVALID_ARGUMENT", `No deployment ${id}.`));
      for (const event of added) list.push({ seq: list.length + 1, event });
      return Promise.resolve(list.length);
    },
    readEvents(id, afterSeq, limit) {
      return Promise.resolve((events.get(id) ?? []).filter((stored) => stored.seq > afterSeq).slice(0, limit));
    },
    getResponse: (key) => Promise.resolve(responses.get(key)),
    putResponse(key, response) {
      const kept = responses.get(key);
      if (kept) return Promise.resolve(kept);
      responses.set(key, response);
      return Promise.resolve(response);
    },
  };
}

/** A new deployment id: `dep_` and a UUID without dashes. */
export function newDeploymentId(): string {
  return `dep_${randomUUID().replace(/-/g, "")}`;
}
