import type Dockerode from "dockerode";
import { targetLabels, type ProviderContext, type Target } from "@kilnjs/core";
import { statusOf } from "../engine.js";
import { targetNetworkName } from "./config.js";

/** A target's network, and whether this call created it. */
export interface TargetNetwork {
  readonly name: string;
  /** True when this call (or one it shared) created the network. */
  readonly created: boolean;
}

/** Finds or creates a target's network; calls for the same target at the same time share one creation. */
export type NetworkEnsurer = (docker: Dockerode, target: Target, ctx: ProviderContext) => Promise<TargetNetwork>;

/** The label filter of a target's own networks (managed, service, environment). */
export function targetNetworkFilter(target: Target): string[] {
  return Object.entries(targetLabels(target)).map(([key, value]) => `${key}=${value}`);
}

/**
 * The target's networks, found by their labels: the one a new release uses first (the
 * oldest), whatever its name (Kiln before injective names called it `kiln-<service>-<environment>`).
 */
export async function findTargetNetworks(docker: Dockerode, target: Target): Promise<Dockerode.NetworkInspectInfo[]> {
  const networks = await docker.listNetworks({ filters: { label: targetNetworkFilter(target) } });
  return networks.sort((a, b) => a.Created.localeCompare(b.Created) || a.Name.localeCompare(b.Name));
}

/**
 * A {@link NetworkEnsurer} for one provider object. A target's network is a bridge network
 * labelled managed/service/environment, found by those labels; when there is none, it is created
 * as {@link targetNetworkName} (`kiln.<service>.<environment>`).
 */
export function createNetworkEnsurer(): NetworkEnsurer {
  const inFlight = new Map<string, Promise<TargetNetwork>>();
  return (docker, target, ctx) => {
    const key = `${target.service}@${target.environment}`;
    let pending = inFlight.get(key);
    if (!pending) {
      pending = ensure(docker, target, ctx).finally(() => inFlight.delete(key));
      inFlight.set(key, pending);
    }
    return pending;
  };
}

async function ensure(docker: Dockerode, target: Target, ctx: ProviderContext): Promise<TargetNetwork> {
  const existing = (await findTargetNetworks(docker, target))[0];
  if (existing) return { name: existing.Name, created: false };
  const name = targetNetworkName(target);
  try {
    ctx.logger.info("creating Docker network", { network: name });
    await docker.createNetwork({ Name: name, CheckDuplicate: true, Driver: "bridge", Labels: targetLabels(target) });
    return { name, created: true };
  } catch (error) {
    // 409: another Kiln process created it meanwhile.
    if (statusOf(error) !== 409) throw error;
    return { name, created: false };
  }
}
