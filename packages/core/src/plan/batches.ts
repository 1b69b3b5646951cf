/** One batch of a rolling rollout: retire some old instances, launch some new ones, wait until healthy. */
export interface RollingBatch {
  /** Old instances to retire before launching (allowed by maxUnavailable, or surplus). */
  readonly retire: number;
  /** New instances to launch in this batch. */
  readonly launch: number;
}

/** Counts a rolling step is decided from. */
export interface RollingCounts {
  /** Desired number of instances. */
  readonly count: number;
  readonly maxSurge: number;
  readonly maxUnavailable: number;
  /** Old instances still serving. */
  readonly oldAlive: number;
  /** New instances that passed their health check. */
  readonly newHealthy: number;
  /** New instances still to launch. */
  readonly toLaunch: number;
}

/**
 * Decides the next batch of a rolling rollout, the way Kubernetes Deployments do: retire old
 * instances while healthy capacity stays at or above `count - maxUnavailable`, then launch new
 * ones while the total stays at or below `count + maxSurge`. Pure.
 * Returns undefined when nothing remains to launch or retire.
 */
export function nextRollingBatch(counts: RollingCounts): RollingBatch | undefined {
  const { count, maxSurge, maxUnavailable, oldAlive, newHealthy, toLaunch } = counts;
  if (toLaunch === 0) return oldAlive > 0 ? { retire: oldAlive, launch: 0 } : undefined;
  const retire = Math.max(0, Math.min(oldAlive, oldAlive + newHealthy - (count - maxUnavailable)));
  const launch = Math.max(0, Math.min(toLaunch, count + maxSurge - (oldAlive - retire + newHealthy)));
  if (retire === 0 && launch === 0) return undefined;
  return { retire, launch };
}

/**
 * Every batch of a rolling rollout that goes to plan, for display: `oldAlive` old instances
 * serving, `keep` instances of the new release already healthy, `count` wanted.
 */
export function planRollingBatches(options: { count: number; maxSurge: number; maxUnavailable: number; oldAlive: number; keep: number }): RollingBatch[] {
  const batches: RollingBatch[] = [];
  let oldAlive = options.oldAlive;
  let newHealthy = Math.min(options.keep, options.count);
  let toLaunch = options.count - newHealthy;
  // Each batch launches or retires at least one instance, so there are at most as many batches as
  // instances to launch and retire: a bound that grows with the fleet (a fixed one would cut the
  // last batches of a large rollout, leaving old instances running).
  const most = toLaunch + oldAlive + 1;
  for (let guard = 0; guard < most; guard++) {
    const batch = nextRollingBatch({ ...options, oldAlive, newHealthy, toLaunch });
    if (!batch) break;
    batches.push(batch);
    oldAlive -= batch.retire;
    newHealthy += batch.launch;
    toLaunch -= batch.launch;
  }
  return batches;
}
