import { KilnError } from "../errors.js";
import type { KilnEvent } from "../events.js";
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
 * not survive a restart (`createFileDeploymentQueue` keeps them in a folder); a rollout cut off by
 * one is journaled in the state store and recovered by the next deploy of its target or
 * `kiln rollout resume`. Lease times are this process's clock. Records and events are handed out
 * as copies.
 */
export function createMemoryDeploymentQueue(): DeploymentQueue {
  const events = new Map<string, DeploymentEvent[]>();
  return queueInMemory({
    records: [],
    responses: new Map(),
    events: {
      async append(id, added) {
        const list = events.get(id) ?? [];
        events.set(id, list);
        for (const event of added) list.push({ seq: list.length + 1, event: structuredClone(event) });
        return list.length;
      },
      async read(id, afterSeq, limit) {
        return (events.get(id) ?? []).filter((stored) => stored.seq > afterSeq).slice(0, limit).map((stored) => structuredClone(stored));
      },
    },
  });
}

/** Where a queue kept in memory keeps its events (internal: the memory and file queues). */
export interface QueueEventLog {
  /** Appends events to an existing deployment, numbered on from its last; returns the last number. Calls for one id are numbered in call order. */
  append(id: string, events: readonly KilnEvent[]): Promise<number>;
  /** Events numbered above `afterSeq`, oldest first, at most `limit`. */
  read(id: string, afterSeq: number, limit: number): Promise<DeploymentEvent[]>;
}

/** What a backend keeps of a queue kept in memory (internal: the file queue): awaited before the call that changed it returns. */
export interface QueueKeeper {
  /** A deployment as it is now, new or changed. */
  record(record: DeploymentRecord): Promise<void>;
  /** The answer kept first under `key`. */
  response(key: string, response: IdempotentResponse): Promise<void>;
}

/** What {@link queueInMemory} starts from. */
export interface QueueInMemoryOptions {
  /** Deployments already recorded, oldest first. */
  readonly records: readonly DeploymentRecord[];
  /** Answers already kept, by key. */
  readonly responses: Map<string, IdempotentResponse>;
  readonly events: QueueEventLog;
  readonly keeper?: QueueKeeper;
  /** Releases what the backend holds. */
  readonly close?: () => Promise<void>;
}

/**
 * The rules of the {@link DeploymentQueue} contract over records in this process's memory, where
 * every decision (one active deployment per target, exclusive claims) is made synchronously, so
 * concurrent calls of one process cannot interleave inside it. A `keeper` is told of each change
 * before the call returns (internal: shared by the memory queue and the file queue).
 */
export function queueInMemory(options: QueueInMemoryOptions): DeploymentQueue {
  const records = new Map<string, DeploymentRecord>(options.records.map((record) => [record.id, structuredClone(record)]));
  const responses = options.responses;
  /** Ids in the order they were queued. */
  const order: string[] = options.records.map((record) => record.id);
  const all = () => order.map((id) => records.get(id)!);
  const copy = <T>(value: T): T => structuredClone(value);
  /** Records the change in memory now; the keeper keeps it before the caller is answered. */
  const set = async (record: DeploymentRecord) => {
    records.set(record.id, record);
    const answer = copy(record);
    await options.keeper?.record(answer);
    return copy(answer);
  };
  const active = (target: DeploymentRecord["target"]) => all().find((record) => formatTarget(record.target) === formatTarget(target) && !isFinalDeploymentState(record.state));
  const holds = (record: DeploymentRecord | undefined, worker: string): record is DeploymentRecord => record !== undefined && record.claimedBy === worker && record.state === "running";

  return {
    async enqueue(input) {
      const running = active(input.target);
      if (running) return { kind: "conflict", active: copy(running) };
      const record: DeploymentRecord = {
        id: newDeploymentId(),
        kind: input.kind,
        target: { service: input.target.service, environment: input.target.environment },
        state: "queued",
        requestedBy: input.requestedBy,
        createdAt: new Date().toISOString(),
        request: copy(input.request),
        cancelRequested: false,
        attempts: 0,
      };
      order.push(record.id);
      return { kind: "queued", record: await set(record) };
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
      await set({
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
      if (!records.has(id)) throw new KilnError("INVALID_ARGUMENT", `There is no deployment ${id} to append events to.`);
      return options.events.append(id, added);
    },

    async readEvents(id, afterSeq, limit) {
      return records.has(id) ? options.events.read(id, afterSeq, limit) : [];
    },

    async getResponse(key) {
      const kept = responses.get(key);
      return kept && copy(kept);
    },

    async keepResponse(key, response) {
      if (responses.has(key)) return copy(responses.get(key)!);
      responses.set(key, copy(response));
      await options.keeper?.response(key, copy(response));
      return copy(response);
    },

    ...(options.close ? { close: options.close } : {}),
  };
}
