import { gracePeriodOf } from "../plan/index.js";
import { isRunning } from "../plan/replacement.js";
import type { Instance } from "../provider/contract.js";
import { describe, providerContext, retireInstances, retireUnusedProxy, shiftTraffic } from "./actions.js";
import { launchSecrets, type RolloutInput } from "./engine.js";
import { waitUntilHealthy } from "./health-gate.js";

/** How long cleanup after a failed or cancelled rollout may take, at most (milliseconds). */
const CLEANUP_TIMEOUT_MS = 120_000;


/** What {@link undo} left serving. */
export interface UndoOutcome {
  /** The previous release, when it was brought back to its count; undefined when there is none or it could not be. */
  readonly restoredRelease: number | undefined;
  /** The previous release's instances that run after the undo (all of them, restored or not). */
  readonly serving: readonly Instance[];
  /** Why the previous release could not be restored, when it could not. */
  readonly restoreError?: string;
}

/**
 * Removes what the failed rollout launched and brings the previous release back to its count,
 * registered with its own router; when the previous release has no front proxy (or there is
 * none) but the failed one had, the provider retires the proxy the attempt made.
 * Drains from traffic only the launched instances the rollout registered (`registered`, by id)
 * and any found that it did not launch itself (an earlier run's, whose registration is unknown):
 * an instance that failed its gate never joined, so it is not drained (nor reported drained).
 * Runs with its own signal (the rollout's may be aborted) and a bounded time.
 */
export async function undo(input: RolloutInput, launched: readonly Instance[], oldStillServing: readonly Instance[], registered: ReadonlySet<string> = new Set()): Promise<UndoOutcome> {
  const signal = AbortSignal.timeout(CLEANUP_TIMEOUT_MS);
  const ctx = providerContext(input, signal);
  try {
    // Everything this rollout launched, including any a crashed launch call left behind.
    const mine = await input.provider.instances.list({ target: input.target, rolloutId: input.rolloutId }, ctx);
    const byId = new Map([...launched, ...mine].map((instance) => [instance.id, instance]));
    const instances = [...byId.values()];
    const launchedIds = new Set(launched.map((instance) => instance.id));
    const joined = new Set(instances.filter((instance) => registered.has(instance.id) || !launchedIds.has(instance.id)).map((instance) => instance.id));
    await retireInstances(input, instances, ctx, { drain: true, drainOnly: joined, gracePeriodMs: gracePeriodOfRelease(input, instances), cleanup: true });
  } catch (error) {
    input.logger.error("could not remove the failed rollout's instances", { rolloutId: input.rolloutId, error: String(error) });
  }
  const previous = input.previous;
  if (input.release.traffic?.proxy) await retireUnusedProxy(input, previous, ctx);
  if (!previous) return { restoredRelease: undefined, serving: [] };
  let running: Instance[] = [];
  try {
    // Count what of the previous release really runs (old instances never retired, one caught
    // mid-drain by the cancellation, and in a repair the kept ones), rather than trusting the
    // rollout's own bookkeeping; all of it gets the traffic back (a blue-green switch or a drain
    // had taken it away).
    running = (await input.provider.instances.list({ target: input.target, release: previous.number }, ctx)).filter(
      (instance) => instance.rolloutId !== input.rolloutId && isRunning(instance),
    );
    await shiftTraffic(input, running, [], ctx, 0, previous);
    const missing = previous.count - Math.max(running.length, oldStillServing.length);
    if (missing <= 0) return { restoredRelease: previous.number, serving: running };
    const restored = await input.provider.instances.launch(
      {
        target: input.target,
        release: previous.number,
        rolloutId: input.rolloutId,
        idempotencyKey: `${input.rolloutId}:restore`,
        image: previous.image,
        config: previous.instance,
        count: missing,
        ...(await launchSecrets(input, previous)),
      },
      ctx,
    );
    for (const instance of restored) input.emit({ type: "instance.launched", rolloutId: input.rolloutId, instance: describe(instance) });
    await waitUntilHealthy({ ...input, signal }, previous, restored, ctx);
    await shiftTraffic(input, restored, [], ctx, 0, previous);
    return { restoredRelease: previous.number, serving: [...running, ...restored] };
  } catch (error) {
    input.logger.error("could not restore the previous release", { rolloutId: input.rolloutId, error: String(error) });
    return { restoredRelease: undefined, serving: running, restoreError: error instanceof Error ? error.message : String(error) };
  }
}

/** The grace period of `instances`, each from the release it belongs to (milliseconds). */
function gracePeriodOfRelease(input: RolloutInput, instances: readonly Instance[]): number {
  return gracePeriodOf(
    instances,
    { number: input.release.number, stopGracePeriodMs: input.release.instance.stopGracePeriodMs },
    input.previous && { stopGracePeriodMs: input.previous.instance.stopGracePeriodMs },
  );
}
