/**
 * The traffic part of the provider contract: how requests reach instances (a front proxy the
 * provider runs, or a cloud load balancer), and the proxies a provider lists and retires.
 * @module
 */
import type { ResolvedHealth, ResolvedProxy } from "../spec/resolve.js";
import type { Target } from "../target.js";
import type { Instance, InstanceState, ProviderContext } from "./contract.js";

/**
 * Optional: how requests reach instances (a front proxy the provider runs, or a cloud load balancer's
 * backend set). When a provider has it, the rollout
 * engine registers new instances only after their health gate passes, and deregisters (drains)
 * old ones before it stops them; a blue-green switch is one register of the new set followed by
 * one deregister of the old set.
 */
export interface TrafficCapability {
  /**
   * Starts sending the target's requests to these instances (creating the router, e.g. the front
   * proxy, if it does not exist yet). Registering one already registered is a no-op.
   */
  register(instances: readonly Instance[], options: TrafficOptions, ctx: ProviderContext): Promise<void>;
  /**
   * Stops sending new requests to these instances and waits until their in-flight requests end,
   * at most `drainMs` milliseconds. Deregistering one not registered is a no-op.
   */
  deregister(instances: readonly Instance[], options: TrafficOptions & { readonly drainMs: number }, ctx: ProviderContext): Promise<void>;
  /**
   * Optional, for a provider that runs a front proxy: the target's proxies, found by Kiln's labels
   * or tags (never by name), whether or not the target's release still has `traffic.proxy`.
   * `Kiln.status` shows them, and reports one the release does not declare as drift.
   * @throws KilnError PROVIDER_UNAVAILABLE
   */
  listProxies?(target: Target, ctx: ProviderContext): Promise<ProxyStatus[]>;
  /**
   * Optional, for a provider that runs a front proxy: removes the target's proxies and what only
   * they used (their configuration, a network no instance uses any more). The rollout engine calls
   * it once a release without `traffic.proxy` serves (after a deploy that dropped the proxy, and
   * after undoing a failed rollout when the restored release has none). Nothing to remove is no error.
   * @throws KilnError ROLLOUT_FAILED, PROVIDER_UNAVAILABLE
   */
  retireProxy?(target: Target, ctx: ProviderContext): Promise<void>;
}

/** A front proxy a provider runs for a target, as {@link TrafficCapability.listProxies} finds it. */
export interface ProxyStatus {
  /** The provider's id (a container id). */
  readonly id: string;
  /** Its name (a container name). */
  readonly name: string;
  readonly state: InstanceState;
  /** The `host:port` it publishes, when the provider knows it. */
  readonly address: string | undefined;
}

/** Which target's router a traffic call is about, and how it is set up. */
export interface TrafficOptions {
  readonly target: Target;
  /** The front proxy's settings from the release (`traffic.proxy`). */
  readonly proxy?: ResolvedProxy;
  /**
   * The provider's `traffic.loadBalancer.<provider>` section from the release, as its own schema
   * produced it; undefined when the release has no load balancer.
   */
  readonly loadBalancer?: unknown;
  /** The release's health settings, so a router can run the same check actively (HAProxy httpchk). */
  readonly health?: ResolvedHealth;
}
