import type Dockerode from "dockerode";
import { LABELS, type ProviderContext, type Target } from "@kilnjs/core";
import { statusOf } from "../engine.js";
import { targetNetworkName } from "./config.js";

/** Creates a target's network when missing; calls for the same network at the same time share one creation. */
export type NetworkEnsurer = (docker: Dockerode, target: Target, ctx: ProviderContext) => Promise<string>;

/**
 * A {@link NetworkEnsurer} for one provider object. The network `kiln-<service>-<environment>` is a
 * bridge network labelled managed/service/environment; one that exists is used as it is.
 */
export function createNetworkEnsurer(): NetworkEnsurer {
  const inFlight = new Map<string, Promise<string>>();
  return (docker, target, ctx) => {
    const name = targetNetworkName(target);
    let pending = inFlight.get(name);
    if (!pending) {
      pending = ensure(docker, name, target, ctx).finally(() => inFlight.delete(name));
      inFlight.set(name, pending);
    }
    return pending;
  };
}

async function ensure(docker: Dockerode, name: string, target: Target, ctx: ProviderContext): Promise<string> {
  try {
    await docker.getNetwork(name).inspect();
    return name;
  } catch (error) {
    if (statusOf(error) !== 404) throw error;
  }
  try {
    ctx.logger.info("creating Docker network", { network: name });
    await docker.createNetwork({
      Name: name,
      CheckDuplicate: true,
      Driver: "bridge",
      Labels: { [LABELS.managed]: "true", [LABELS.service]: target.service, [LABELS.environment]: target.environment },
    });
  } catch (error) {
    // 409: another Kiln process created it meanwhile.
    if (statusOf(error) !== 409) throw error;
  }
  return name;
}
