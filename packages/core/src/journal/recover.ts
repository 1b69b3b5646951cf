import type { Instance } from "../provider/contract.js";
import type { ReleaseRecord, RolloutRecord, StateStore } from "../state/types.js";
import { formatHolder } from "../state/lease.js";
import type { Target } from "../target.js";

/** A rollout found `running` by a process that holds the lock: its own process stopped before it finished. */
export interface InterruptedRollout {
  /** The rollout's record, now `aborted` with `ROLLOUT_INTERRUPTED`. */
  readonly rollout: RolloutRecord;
  /** The release it rolled out to, if it had been recorded (it is not while the image builds). */
  readonly release: ReleaseRecord | undefined;
  /** Every instance that carries the rollout's id, as the provider lists them now. */
  readonly instances: readonly Instance[];
}

/** Options of {@link markInterruptedRollouts}. */
export interface MarkInterruptedOptions {
  readonly store: StateStore;
  readonly target: Target;
  /** The fencing token of the lock the caller holds. */
  readonly token: number;
  /**
   * Lists the instances that carry a rollout's id (from the provider the rollout used); undefined
   * when no provider is known for it, then the recovery records no instances.
   */
  listInstances(rollout: RolloutRecord): Promise<readonly Instance[]> | undefined;
}

/**
 * The first half of recovery, run by a process that has just taken the target's lock: every
 * rollout still recorded `running` belongs to a process that lost its lease (it died, or stopped
 * renewing), since only the lease holder writes. Lists what each one created (by the rollout id
 * label), journals that as a `recover` step, and marks the rollout `aborted` with
 * `ROLLOUT_INTERRUPTED`. It changes no release and no instance: the caller decides what the
 * interrupted release becomes and retires leftovers through a normal rollout, after the new
 * instances are healthy, so capacity never drops.
 *
 * A garbage collection's record (kind `gc`) left running is marked `aborted` the same way, but not
 * returned: it launched nothing and has no release; the next collection finishes its removals.
 *
 * Also returned, without being marked again: a rollout recovered earlier whose release is still
 * `pending` (the run that recovered it stopped before deciding what the release becomes).
 *
 * @returns the interrupted rollouts, oldest first; empty when there were none
 * @throws KilnError LOCK_LOST, STATE_UNAVAILABLE
 */
export async function markInterruptedRollouts(options: MarkInterruptedOptions): Promise<InterruptedRollout[]> {
  const state = await options.store.read(options.target);
  const running = state.rollouts.filter((rollout) => rollout.status === "running");
  // A rollout recovered before whose release is still pending: the run that recovered it died (or
  // failed) before deciding what the release becomes. It is decided now.
  const undecided = state.rollouts.filter(
    (rollout) =>
      rollout.status === "aborted" &&
      rollout.error?.code === "ROLLOUT_INTERRUPTED" &&
      state.releases.some((release) => release.number === rollout.toRelease && release.status === "pending") &&
      !running.some((other) => other.toRelease === rollout.toRelease),
  );
  const latestUndecided = [...new Map(undecided.map((rollout) => [rollout.toRelease, rollout])).values()];
  if (running.length === 0 && latestUndecided.length === 0) return [];
  const found = new Map<string, readonly Instance[]>();
  for (const rollout of [...latestUndecided, ...running]) {
    if (rollout.kind !== "gc") found.set(rollout.id, (await options.listInstances(rollout)) ?? []);
  }
  const earlier = latestUndecided.map((rollout) => ({
    rollout: structuredClone(rollout),
    release: structuredClone(state.releases.find((release) => release.number === rollout.toRelease)),
    instances: found.get(rollout.id) ?? [],
  }));
  if (running.length === 0) return earlier;
  const finishedAt = new Date().toISOString();
  const marked = await options.store.update(
    options.target,
    (current) =>
      running.flatMap((seen) => {
        const rollout = current.rollouts.find((r) => r.id === seen.id);
        if (!rollout || rollout.status !== "running") return [];
        const instances = found.get(rollout.id) ?? [];
        rollout.journal ??= [];
        rollout.journal.push({
          seq: (rollout.journal.at(-1)?.seq ?? 0) + 1,
          phase: "outcome",
          step: "recover:1",
          op: "rollout.recover",
          instanceIds: instances.map((instance) => instance.id),
          result: "ok",
          time: finishedAt,
        });
        rollout.status = "aborted";
        rollout.finishedAt = finishedAt;
        rollout.error = {
          code: "ROLLOUT_INTERRUPTED",
          message: `The rollout stopped before it finished: its process, ${formatHolder(rollout.holder)}, lost its lock (it was killed or crashed). It was recovered by a later run; ${instances.length} instance(s) carried its id.`,
        };
        const release = current.releases.find((r) => r.number === rollout.toRelease);
        return [{ rollout: structuredClone(rollout), release: release && structuredClone(release), instances }];
      }),
    { token: options.token },
  );
  return [...earlier, ...marked.filter((interrupted) => interrupted.rollout.kind !== "gc")];
}
