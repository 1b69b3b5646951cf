import type { EventInstance } from "../events.js";
import type { Instance, ProviderContext, TrafficOptions } from "../provider/contract.js";
import type { LaunchableRelease, RolloutInput } from "./engine.js";

/*
 * The provider calls a rollout makes besides launching (traffic and retirement), each with its
 * events, shared by the steps of a program and by the undo of a failed rollout.
 */

/** An instance as events describe it. */
export function describe(instance: Instance): EventInstance {
  return { id: instance.id, name: instance.name, release: instance.release };
}

/** The provider context of a rollout's calls, with `signal`. */
export function providerContext(input: Pick<RolloutInput, "logger" | "emit">, signal: AbortSignal): ProviderContext {
  return { signal, logger: input.logger, emit: (progress) => input.emit(progress) };
}

/**
 * Moves traffic through the provider's traffic capability: registers `toAdd` with the router of
 * `owner` (the release they belong to: the new one, or the previous one when a failed rollout
 * restores it), then drains `toRemove` for `drainMs` milliseconds from the router they are in (the
 * new release's, or the previous one's when the new release dropped it). A release without a
 * router (no front proxy, no load balancer) serves on its instances' own addresses: its instances
 * never join another release's router. Emits `traffic.shifted`; does nothing when there is nothing to move.
 */
export async function shiftTraffic(
  input: RolloutInput,
  toAdd: readonly Instance[],
  toRemove: readonly Instance[],
  ctx: ProviderContext,
  drainMs = 0,
  owner: LaunchableRelease | undefined = input.release,
): Promise<void> {
  const traffic = input.provider.traffic;
  if (!traffic) return;
  const adding = toAdd.length > 0 ? routerOf(input, owner) : undefined;
  const removing = toRemove.length > 0 ? (routerOf(input, input.release) ?? routerOf(input, input.previous)) : undefined;
  if (!adding && !removing) return;
  if (adding) await traffic.register(toAdd, adding, ctx);
  if (removing) await traffic.deregister(toRemove, { ...removing, drainMs }, ctx);
  input.emit({ type: "traffic.shifted", rolloutId: input.rolloutId, registered: adding ? toAdd.map(describe) : [], deregistered: removing ? toRemove.map(describe) : [] });
}

/** The traffic options of `release`'s router; undefined when it has none. */
function routerOf(input: RolloutInput, release: LaunchableRelease | undefined): TrafficOptions | undefined {
  const proxy = release?.traffic?.proxy;
  const loadBalancer = release?.traffic?.loadBalancer;
  if (!release || (!proxy && loadBalancer === undefined)) return undefined;
  return { target: input.target, ...(proxy ? { proxy } : {}), ...(loadBalancer !== undefined ? { loadBalancer } : {}), health: release.health };
}

/**
 * After a release without a front proxy starts serving (`serving`: the new release after its
 * rollout, or the restored previous one after an undo): asks the provider to retire the target's
 * proxy (see `TrafficCapability.retireProxy`) when the rollout involved one, or when the provider
 * still lists one (a retirement that failed before). A failure is logged, not thrown: the release
 * serves, `kiln status` shows the proxy as drift, and the next deploy retires it.
 */
export async function retireUnusedProxy(input: RolloutInput, serving: LaunchableRelease | undefined, ctx: ProviderContext): Promise<void> {
  const traffic = input.provider.traffic;
  if (!traffic?.retireProxy || serving?.traffic?.proxy) return;
  try {
    const involved = input.release.traffic?.proxy !== undefined || input.previous?.traffic?.proxy !== undefined;
    if (!involved && (!traffic.listProxies || (await traffic.listProxies(input.target, ctx)).length === 0)) return;
    await traffic.retireProxy(input.target, ctx);
  } catch (error) {
    input.logger.warn("the release serves without a front proxy, but the old proxy could not be retired; kiln status shows it, and the next deploy retires it", {
      rolloutId: input.rolloutId,
      error: String(error),
    });
  }
}

/** How {@link retireInstances} retires. */
export interface RetireOptions {
  /** Drain the instances from traffic first. */
  readonly drain: boolean;
  /** With `drain`: drain only the instances with these ids (the others never joined traffic). @defaultValue every instance */
  readonly drainOnly?: ReadonlySet<string>;
  /** The grace period to drain and to stop them with (milliseconds). */
  readonly gracePeriodMs: number;
  /**
   * Undoing a failed rollout: a failed drain is logged and the instances are terminated anyway,
   * since an instance must never outlive the rollout that failed because its router could not be
   * reached (a wrong load balancer, a missing permission). @defaultValue false
   */
  readonly cleanup?: boolean;
}

/**
 * Drains instances from traffic (stopped ones too: a router may still list an instance that
 * crashed), then terminates them; emits `instance.retiring` before and `instance.retired` after.
 */
export async function retireInstances(input: RolloutInput, instances: readonly Instance[], ctx: ProviderContext, options: RetireOptions): Promise<void> {
  if (instances.length === 0) return;
  for (const instance of instances) input.emit({ type: "instance.retiring", rolloutId: input.rolloutId, instance: describe(instance) });
  const draining = options.drainOnly ? instances.filter((instance) => options.drainOnly!.has(instance.id)) : instances;
  if (options.drain && draining.length > 0) {
    try {
      await shiftTraffic(input, [], draining, ctx, options.gracePeriodMs);
    } catch (error) {
      if (!options.cleanup) throw error;
      input.logger.warn("could not drain the failed rollout's instances from traffic; terminating them anyway", { rolloutId: input.rolloutId, error: String(error) });
    }
  }
  await input.provider.instances.terminate(instances, { gracePeriodMs: options.gracePeriodMs }, ctx);
  for (const instance of instances) input.emit({ type: "instance.retired", rolloutId: input.rolloutId, instance: describe(instance) });
}
