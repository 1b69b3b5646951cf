import { KilnError } from "../errors.js";
import { formatTarget } from "../target.js";
import {
  CANCELLED_BEFORE_START,
  assertDeploymentOutcome,
  isFinalDeploymentState,
  newDeploymentId,
  type DeploymentEvent,
  type DeploymentQueue,
  type DeploymentRecord,
  type IdempotentResponse,
} from "./queue.js";

/**
 * A {@link DeploymentQueue} in this process's memory, for one process (the default of `kiln serve`
 * on one machine, with the embedded file state store). Every queue object is its own backend:
 * share the object between the workers of one process. Deployments, events and kept answers do
 * not survive a restart; a rollout cut off by one is journaled in the state store and recovered
 * by the next deploy of its target or `kiln rollout resume`. Lease times are this process's clock.
 * Records and events are handed out as copies.
 */
export function createMemoryDeploymentQueue(): DeploymentQueue {
  const records = new Map<string, DeploymentRecord>();
  const events = new Map<string, DeploymentEvent[]>();
  const responses = new Map<string, IdempotentResponse>();
  /** Ids in the order they were queued. */
  const order: string[] = [];
  const all = () => order.map((id) => records.get(id)!);
  const copy = <T>(value: T): T => structuredClone(value);
  const set = (record: DeploymentRecord) => {
    records.set(record.id, record);
    return copy(record);
  };
  const active = (target: DeploymentRecord["target"]) => all().find((record) => formatTarget(record.target) === formatTarget(target) && !isFinalDeploymentState(record.state));
  const holds = (record: DeploymentRecord | undefined, worker: string): record is DeploymentRecord => record !== undefined && record.claimedBy === worker && record.state === "running";

  return {
    async enqueue(input) {
      const running = active(input.target);
      if (running) return { kind: "conflict", active: copy(running) };
      const record = set({
        id: newDeploymentId(),
        kind: input.kind,
        target: { service: input.target.service, environment: input.target.environment },
        state: "queued",
        requestedBy: input.requestedBy,
        createdAt: new Date().toISOString(),
        request: copy(input.request),
        cancelRequested: false,
        attempts: 0,
      });
      order.push(record.id);
      events.set(record.id, []);
      return { kind: "queued", record };
    },

    async get(id) {
      const record = records.get(id);
      return record && copy(record);
    },

    async list({ target, limit }) {
      return all()
        .reverse()
        .filter((record) => !target || formatTarget(record.target) === formatTarget(target))
        .slice(0, limit)
        .map(copy);
    },

    async claim(worker, leaseMs) {
      const now = Date.now();
      const next = all().find((record) => record.state === "queued" || (record.state === "running" && Date.parse(record.leaseExpiresAt ?? "") < now));
      if (!next) return undefined;
      return set({
        ...next,
        state: "running",
        claimedBy: worker,
        leaseExpiresAt: new Date(now + leaseMs).toISOString(),
        startedAt: next.startedAt ?? new Date(now).toISOString(),
        attempts: next.attempts + 1,
      });
    },

    async renew(id, worker, leaseMs) {
      const record = records.get(id);
      if (!holds(record, worker)) return undefined;
      return set({ ...record, leaseExpiresAt: new Date(Date.now() + leaseMs).toISOString() });
    },

    async finish(id, worker, outcome) {
      assertDeploymentOutcome(outcome);
      const record = records.get(id);
      if (!holds(record, worker)) return false;
      const { leaseExpiresAt: _lease, ...rest } = record;
      set({
        ...rest,
        state: outcome.state,
        finishedAt: new Date().toISOString(),
        ...(outcome.result ? { result: copy(outcome.result) } : {}),
        ...(outcome.error ? { error: copy(outcome.error) } : {}),
      });
      return true;
    },

    async requestCancel(id) {
      const record = records.get(id);
      if (!record) return undefined;
      if (record.state === "queued") return set({ ...record, cancelRequested: true, state: "cancelled", finishedAt: new Date().toISOString(), error: CANCELLED_BEFORE_START });
      return isFinalDeploymentState(record.state) ? copy(record) : set({ ...record, cancelRequested: true });
    },

    async appendEvents(id, added) {
      const list = events.get(id);
      if (!list) throw new KilnError("INVALID_ARGUMENT", `There is no deployment ${id} to append events to.`);
      for (const event of added) list.push({ seq: list.length + 1, event: copy(event) });
      return list.length;
    },

    async readEvents(id, afterSeq, limit) {
      return (events.get(id) ?? []).filter((stored) => stored.seq > afterSeq).slice(0, limit).map(copy);
    },

    async getResponse(key) {
      const kept = responses.get(key);
      return kept && copy(kept);
    },

    async keepResponse(key, response) {
      if (!responses.has(key)) responses.set(key, copy(response));
      return copy(responses.get(key)!);
    },
  };
}
