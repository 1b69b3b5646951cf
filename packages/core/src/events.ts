import type { ErrorCode } from "./errors.js";

/** Fields every event carries. */
export interface EventBase {
  /** ISO 8601 time the event happened. */
  readonly time: string;
  /** `service@environment`. */
  readonly target: string;
}

/** An instance as events describe it. */
export interface EventInstance {
  readonly id: string;
  readonly name: string;
  readonly release: number | undefined;
}

/**
 * Everything Kiln reports while it works, as one discriminated union on `type`. The CLI renders
 * these (a task view, or NDJSON with `--json`); the server streams them. No event holds a secret.
 */
export type KilnEvent = EventBase &
  (
    | { type: "plan.ready"; summary: string; noop: boolean }
    | { type: "image.fingerprinted"; fingerprint: string; fileCount: number; totalBytes: number; bytesHashed: number; durationMs: number }
    | { type: "image.reused"; fingerprint: string; imageId: string }
    | { type: "image.build.started"; fingerprint: string }
    | { type: "image.build.step"; step: number; total: number; description: string }
    | { type: "image.build.log"; message: string }
    | { type: "image.built"; fingerprint: string; imageId: string; durationMs: number }
    | { type: "release.created"; release: number; fingerprint: string; imageId: string; rollbackOf?: number }
    | {
        type: "rollout.started";
        rolloutId: string;
        kind: RolloutKind;
        strategy: "rolling" | "blue-green" | "canary";
        fromRelease: number | undefined;
        toRelease: number;
        count: number;
        maxSurge: number;
        maxUnavailable: number;
      }
    /** The rollout holds with its health checks running: a blue-green bake, a canary step's hold, a pause between batches. */
    | { type: "rollout.holding"; rolloutId: string; reason: "bake" | "canary-step" | "pause"; durationMs: number; healthy: number; count: number }
    | { type: "rollout.skipped"; reason: string; release: number }
    | { type: "instance.launched"; rolloutId: string; instance: EventInstance }
    | { type: "instance.healthy"; rolloutId: string; instance: EventInstance; durationMs: number }
    | { type: "instance.unhealthy"; rolloutId: string; instance: EventInstance; reason: string }
    | { type: "instance.retiring"; rolloutId: string; instance: EventInstance }
    | { type: "traffic.shifted"; rolloutId: string; registered: EventInstance[]; deregistered: EventInstance[] }
    | { type: "instance.retired"; rolloutId: string; instance: EventInstance }
    | { type: "rollout.succeeded"; rolloutId: string; release: number; durationMs: number }
    | { type: "rollout.failed"; rolloutId: string; release: number; code: ErrorCode; message: string; durationMs: number }
    | { type: "rollout.rolled-back"; rolloutId: string; release: number; restoredRelease: number | undefined; reason: string }
    /** Another process holds the target's lock; this one waits for it (`--wait-for-lock`). */
    | { type: "lock.waiting"; holder: string; expiresAt: string; timeoutMs: number }
    /** The target's lock was stale (its holder died or let it expire) and was taken over with a new fencing token. */
    | { type: "lock.taken-over"; previousHolder: string; previousToken: number; reason: string; token: number }
    /**
     * A rollout whose process stopped before it finished (killed, crashed) was found and marked
     * `aborted`: `found` are the instances that carry its id; `adopted` those the rollout that
     * follows keeps (healthy instances of a release it resumes); `retiring` those it retires once
     * its new instances are healthy. `releaseOutcome` says what became of its release.
     */
    | {
        type: "rollout.recovered";
        rolloutId: string;
        release: number;
        holder: string;
        releaseOutcome: RecoveredReleaseOutcome;
        found: EventInstance[];
        adopted: EventInstance[];
        retiring: EventInstance[];
      }
    /** Garbage collection (`collectGarbage`, `kiln gc`) removed an image: its removal is complete (an AMI's snapshots too). */
    | { type: "image.removed"; gcId: string; imageId: string; fingerprint: string; sizeBytes?: number }
    /** Garbage collection could not remove an image; it was kept and the collection went on with the next one. */
    | { type: "image.remove-failed"; gcId: string; imageId: string; fingerprint: string; code: ErrorCode; message: string }
    /**
     * The clean-up a spec's `retention` runs after a successful deploy failed: the deploy stands,
     * the images stay, and the next deploy (or `kiln gc`) tries again.
     */
    | { type: "retention.failed"; code: ErrorCode; message: string }
  );

/** The `type` of a {@link KilnEvent}. */
export type KilnEventType = KilnEvent["type"];

/**
 * What recovery did with an interrupted rollout's release: `resumed` (its number is reused and
 * its healthy instances adopted), `failed` (recorded as failed: the spec now asks for something
 * else, its image is gone, or the rollout was aborted), `not-created` (the process died before
 * recording it, e.g. during the build), `unchanged` (it was not pending: an interrupted repair).
 */
export type RecoveredReleaseOutcome = "resumed" | "failed" | "not-created" | "unchanged";

/**
 * Whether a rollout deploys a new release, rolls back to an earlier one, or is a garbage
 * collection (`gc`: it removes images and changes no instance; its record carries the journal of
 * the removals, and its `fromRelease` and `toRelease` are both the release serving, 0 for none).
 */
export type RolloutKind = "deploy" | "rollback" | "gc";

/** Receives events; must not throw (errors in a handler are logged and dropped). */
export type EventHandler = (event: KilnEvent) => void;

/** An event as emitted, before core stamps `time` and `target`. */
export type KilnEventInput = KilnEvent extends infer E ? (E extends KilnEvent ? Omit<E, "time" | "target"> : never) : never;
