import type { EC2Client, InstanceStatus } from "@aws-sdk/client-ec2";
import { probeHttp, probeTcp, throwIfAborted, type HealthCapability, type Instance, type ProbeResult, type ProviderContext, type ResolvedCheck } from "@kilnjs/core";
import { awsError, awsErrorCode, type AwsClients, type Ec2Module } from "./client.js";
import { chunks, describeInstancesById } from "./instances.js";

/**
 * How long concurrent probes wait for each other before their status checks are read in one
 * DescribeInstanceStatus call (milliseconds). The rollout engine probes every instance of a round
 * at once, so the probes of a round share one call.
 */
export const STATUS_BATCH_WINDOW_MS = 5;

/** Most instance ids per DescribeInstanceStatus call (EC2 API reference: at most 100 explicit ids). */
export const STATUS_BATCH_SIZE = 100;

/** The reason a command check fails on the aws provider. */
export const COMMAND_CHECK_UNSUPPORTED =
  "the aws provider cannot run commands in EC2 instances (no exec without an agent), so a command health check always fails; use an http or tcp check";

/**
 * What the EC2 status checks say of one instance: `ok: false` with a reason when it is not
 * `running`, or when its system, instance or attached-EBS status is `impaired`; otherwise `ok: true`,
 * with `initializing` when a status is still `initializing` or `insufficient-data` (the checks have
 * not finished: not a failure, see {@link createHealthCapability}).
 * @param status - one entry of a DescribeInstanceStatus answer (with `IncludeAllInstances`), or
 *   undefined when EC2 does not know the instance
 */
export function judgeInstanceStatus(instanceId: string, status: InstanceStatus | undefined): { ok: true; initializing: boolean } | { ok: false; reason: string } {
  if (!status) return { ok: false, reason: `EC2 does not know instance ${instanceId} (it is gone, or not visible yet)` };
  const state = status.InstanceState?.Name;
  if (state !== "running") return { ok: false, reason: `EC2 instance ${instanceId} is ${state ?? "in no state"}` };
  const parts = [
    ["system", status.SystemStatus],
    ["instance", status.InstanceStatus],
    ["attached EBS", status.AttachedEbsStatus],
  ] as const;
  const impaired = parts.filter(([, summary]) => summary?.Status === "impaired");
  if (impaired.length > 0) {
    const text = impaired
      .map(([name, summary]) => {
        const failed = (summary?.Details ?? []).filter((detail) => detail.Status !== "passed");
        const details = failed.map((detail) => `${detail.Name ?? "check"} ${detail.Status ?? "?"}${detail.ImpairedSince ? ` since ${detail.ImpairedSince.toISOString()}` : ""}`);
        return `${name} status check impaired${details.length > 0 ? ` (${details.join(", ")})` : ""}`;
      })
      .join("; ");
    return { ok: false, reason: `EC2 ${text} on ${instanceId}` };
  }
  const initializing = parts.some(([, summary]) => summary?.Status === "initializing" || summary?.Status === "insufficient-data");
  return { ok: true, initializing };
}

/** One window of probes waiting for their status checks. */
interface StatusBatch {
  readonly ids: Set<string>;
  readonly result: Promise<Map<string, InstanceStatus>>;
}

/**
 * Reads the status of `ids`, at most 100 a call; ids EC2 does not know (the whole call then fails
 * with `InvalidInstanceID.NotFound`) are found with DescribeInstances and left out.
 */
async function describeStatuses(ec2: { sdk: Ec2Module; client: EC2Client }, ids: readonly string[], signal: AbortSignal): Promise<Map<string, InstanceStatus>> {
  const statuses = new Map<string, InstanceStatus>();
  for (const chunk of chunks(ids, STATUS_BATCH_SIZE)) {
    let remaining = chunk;
    for (let attempt = 0; remaining.length > 0; attempt += 1) {
      try {
        const answer = await ec2.client.send(new ec2.sdk.DescribeInstanceStatusCommand({ InstanceIds: remaining, IncludeAllInstances: true }), { abortSignal: signal });
        for (const status of answer.InstanceStatuses ?? []) if (status.InstanceId) statuses.set(status.InstanceId, status);
        break;
      } catch (error) {
        if (awsErrorCode(error) !== "InvalidInstanceID.NotFound" || attempt >= 2) throw error;
        const known = await describeInstancesById(ec2, remaining, signal);
        remaining = remaining.filter((id) => known.has(id));
      }
    }
  }
  return statuses;
}

/**
 * Creates the aws provider's {@link HealthCapability}. `probe(instance, check, timeoutMs, ctx)`:
 *
 * 1. With a `command` check it returns `ok: false` at once ({@link COMMAND_CHECK_UNSUPPORTED}): EC2
 *    cannot run a command in an instance.
 * 2. Reads the instance's EC2 status checks with DescribeInstanceStatus (`IncludeAllInstances`).
 *    Probes that run at the same time (the rollout engine probes a whole round at once) are
 *    coalesced: every probe with the same `ctx.signal` within {@link STATUS_BATCH_WINDOW_MS} shares
 *    one call for all their ids (100 ids a call). An instance that is not `running`, unknown to EC2,
 *    or whose system / instance / attached-EBS status is `impaired` fails, with EC2's details.
 * 3. Probes the instance's endpoint for `check.portName` with core's `probeHttp` / `probeTcp`
 *    (`timeoutMs`, milliseconds, bounds this part; the status call is bounded by the SDK's retries).
 *    No endpoint (the instance has no address of the kind `instances.aws.address` asks) fails.
 *
 * Without a check (`check` undefined: the spec has none; the rollout engine calls the probe then
 * too), steps 1 and 3 are skipped: a running instance whose status checks are not impaired is healthy.
 *
 * Status `initializing` (or `insufficient-data`) is not a failure: EC2's checks take minutes after
 * boot, while an app answering its HTTP/TCP check proves the instance is reachable; when that check
 * fails too, the reason says the status checks are still initializing. Without a check it passes as
 * well (EC2 has found nothing wrong yet); an instance whose checks turn `impaired` later fails the
 * probes that follow (the engine keeps probing through its stability window and holds).
 *
 * Never throws for an unhealthy instance. Throws `ABORTED` when `ctx.signal` fires, and
 * `THROTTLED`, `PROVIDER_UNAVAILABLE` or `ROLLOUT_FAILED` (with AWS's code) when the status call
 * fails after the SDK's retries.
 *
 * @see https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_DescribeInstanceStatus.html
 * @see https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/monitoring-system-instance-status-check.html
 */
export function createHealthCapability(clients: AwsClients): HealthCapability {
  const batches = new Map<AbortSignal, StatusBatch>();

  /** The status of `instanceId`, read together with the other probes of the same window. */
  function statusOf(instanceId: string, ctx: ProviderContext): Promise<InstanceStatus | undefined> {
    let batch = batches.get(ctx.signal);
    if (!batch) {
      const ids = new Set<string>();
      const result = new Promise<void>((resolve) => setTimeout(resolve, STATUS_BATCH_WINDOW_MS)).then(async () => {
        // Probes that come after this point start the next window.
        batches.delete(ctx.signal);
        throwIfAborted(ctx.signal);
        return describeStatuses(await clients.ec2(), [...ids], ctx.signal);
      });
      batch = { ids, result };
      batches.set(ctx.signal, batch);
    }
    batch.ids.add(instanceId);
    return batch.result.then((statuses) => statuses.get(instanceId));
  }

  return {
    description: "EC2 status checks not impaired",
    async probe(instance: Instance, check: ResolvedCheck | undefined, timeoutMs: number, ctx: ProviderContext): Promise<ProbeResult> {
      throwIfAborted(ctx.signal);
      if (check?.kind === "command") return { ok: false, reason: COMMAND_CHECK_UNSUPPORTED };
      let status: InstanceStatus | undefined;
      try {
        status = await statusOf(instance.id, ctx);
      } catch (error) {
        throw awsError(error, "ROLLOUT_FAILED", `Reading the EC2 status checks of ${instance.name}`, clients.options.endpoint);
      }
      const verdict = judgeInstanceStatus(instance.id, status);
      if (!verdict.ok || !check) return verdict.ok ? { ok: true } : verdict;
      const endpoint = instance.endpoints[check.portName];
      if (!endpoint) return { ok: false, reason: `port "${check.portName}" has no address yet (the instance has no IP of the kind instances.aws.address asks for)` };
      const result = check.kind === "http" ? await probeHttp(endpoint, check, timeoutMs, ctx.signal) : await probeTcp(endpoint, timeoutMs, ctx.signal);
      if (!result.ok && verdict.initializing) return { ok: false, reason: `${result.reason} (EC2 status checks are still initializing)` };
      return result;
    },
  };
}
