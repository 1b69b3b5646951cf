/**
 * The gcp provider's health probe: the instance's Compute Engine status, read for a whole probe
 * round in one aggregated list, then core's HTTP/TCP probe.
 * @module
 */
import { probeHttp, probeTcp, selectorLabels, throwIfAborted, type HealthCapability, type Instance, type ProbeResult, type ProviderContext, type ResolvedCheck, type Target } from "@kilnjs/core";
import { labelFilter, type GceInstance, type GcpRuntime } from "./runtime.js";
import { instanceId } from "./instances.js";

/**
 * How long concurrent probes wait for each other before their statuses are read in one list call
 * (milliseconds). The rollout engine probes every instance of a round at once.
 */
export const STATUS_BATCH_WINDOW_MS = 5;

/** The reason a command check fails on the gcp provider. */
export const COMMAND_CHECK_UNSUPPORTED = "the gcp provider cannot run commands in Compute Engine instances (no exec without an agent), so a command health check always fails; use an http or tcp check";

/**
 * What Compute Engine's status says of one instance: `ok` when it is RUNNING, else a reason
 * naming its status (or that Compute Engine does not list it).
 */
export function judgeInstanceStatus(name: string, instance: GceInstance | undefined): ProbeResult {
  if (!instance) return { ok: false, reason: `Compute Engine does not list instance ${name} (it is gone, or not visible yet)` };
  if (instance.status !== "RUNNING") return { ok: false, reason: `Compute Engine instance ${name} is ${String(instance.status ?? "in no status")}` };
  return { ok: true };
}

/** One window of probes of one target waiting for their statuses. */
interface StatusBatch {
  readonly result: Promise<Map<string, GceInstance>>;
}

/**
 * Creates the gcp provider's {@link HealthCapability}. `probe(instance, check, timeoutMs, ctx)`:
 *
 * 1. A `command` check fails at once ({@link COMMAND_CHECK_UNSUPPORTED}).
 * 2. Reads the instance's status. Probes of the same target with the same `ctx.signal` within
 *    {@link STATUS_BATCH_WINDOW_MS} share ONE `instances.aggregatedList` filtered on the target's
 *    labels: one call per probe round, never one per instance. Not RUNNING (or not listed) fails.
 * 3. Probes the endpoint of `check.portName` with core's `probeHttp` / `probeTcp` within
 *    `timeoutMs` (milliseconds). Without a check, a RUNNING instance is healthy.
 *
 * Never throws for an unhealthy instance. Throws `ABORTED` when `ctx.signal` fires, and
 * `THROTTLED` or `PROVIDER_UNAVAILABLE` when the list fails after the backoff. With a backend
 * service (traffic, not implemented yet), one `getHealth` per group would join step 2.
 */
export function createHealthCapability(runtime: GcpRuntime): HealthCapability {
  const batches = new Map<AbortSignal, Map<string, StatusBatch>>();

  function statusOf(instance: Instance, ctx: ProviderContext): Promise<GceInstance | undefined> {
    const key = JSON.stringify([instance.target.service, instance.target.environment]);
    let forSignal = batches.get(ctx.signal);
    if (!forSignal) {
      forSignal = new Map();
      batches.set(ctx.signal, forSignal);
    }
    let batch = forSignal.get(key);
    if (!batch) {
      const target: Target = instance.target;
      const result = new Promise<void>((resolve) => setTimeout(resolve, STATUS_BATCH_WINDOW_MS)).then(async () => {
        // Probes that come after this point start the next window.
        forSignal.delete(key);
        if (forSignal.size === 0) batches.delete(ctx.signal);
        throwIfAborted(ctx.signal);
        const project = await runtime.project();
        const listed = await runtime.listInstances(labelFilter(selectorLabels({ target })), ctx.signal);
        return new Map(listed.map(({ zone, instance: found }) => [instanceId(project, zone, found.name ?? ""), found]));
      });
      batch = { result };
      forSignal.set(key, batch);
    }
    return batch.result.then((statuses) => statuses.get(instance.id));
  }

  return {
    description: "the Compute Engine instance is RUNNING",
    async probe(instance: Instance, check: ResolvedCheck | undefined, timeoutMs: number, ctx: ProviderContext): Promise<ProbeResult> {
      throwIfAborted(ctx.signal);
      if (check?.kind === "command") return { ok: false, reason: COMMAND_CHECK_UNSUPPORTED };
      let status: GceInstance | undefined;
      try {
        status = await statusOf(instance, ctx);
      } catch (error) {
        throw runtime.error(error, "PROVIDER_UNAVAILABLE", `Reading the Compute Engine status of ${instance.name}`);
      }
      const verdict = judgeInstanceStatus(instance.name, status);
      if (!verdict.ok || !check) return verdict;
      const endpoint = instance.endpoints[check.portName];
      if (!endpoint) return { ok: false, reason: `port "${check.portName}" has no address yet (the instance has no network IP)` };
      return check.kind === "http" ? probeHttp(endpoint, check, timeoutMs, ctx.signal) : probeTcp(endpoint, timeoutMs, ctx.signal);
    },
  };
}
