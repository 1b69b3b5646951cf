import type { EventInstance } from "../events.js";
import type { Instance, ProviderContext } from "../provider/contract.js";
import type { RolloutInput } from "./engine.js";

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
 * Moves traffic through the provider's traffic capability, if it has one and the release (or the
 * one before it) is routed: registers `toAdd`, then drains `toRemove` for `drainMs` milliseconds.
 * Emits `traffic.shifted`; does nothing when both lists are empty.
 */
export async function shiftTraffic(input: RolloutInput, toAdd: readonly Instance[], toRemove: readonly Instance[], ctx: ProviderContext, drainMs = 0): Promise<void> {
  const traffic = input.provider.traffic;
  // The new release's router (front proxy or load balancer), or the previous one's when the new
  // release dropped it.
  const proxy = input.release.traffic?.proxy ?? input.previous?.traffic?.proxy;
  const loadBalancer = input.release.traffic?.loadBalancer ?? input.previous?.traffic?.loadBalancer;
  if (!traffic || (!proxy && !loadBalancer) || (toAdd.length === 0 && toRemove.length === 0)) return;
  const options = { target: input.target, ...(proxy ? { proxy } : {}), ...(loadBalancer ? { loadBalancer } : {}), health: input.release.health };
  if (toAdd.length > 0) await traffic.register(toAdd, options, ctx);
  if (toRemove.length > 0) await traffic.deregister(toRemove, { ...options, drainMs }, ctx);
  input.emit({ type: "traffic.shifted", rolloutId: input.rolloutId, registered: toAdd.map(describe), deregistered: toRemove.map(describe) });
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
