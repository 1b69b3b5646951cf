import type { ElasticLoadBalancingV2Client, TargetDescription, TargetHealthDescription } from "@aws-sdk/client-elastic-load-balancing-v2";
import { KilnError, decodeInstanceLabels, formatTarget, isKilnError, readSection, throwIfAborted, waitFor, type Instance, type ProviderContext, type TrafficCapability, type TrafficOptions } from "@kilnjs/core";
import { awsError, awsErrorCode, messageOf, type AwsClients, type LoadBalancingModule } from "./client.js";
import { awsProviderSpec, type AwsLoadBalancer } from "./spec.js";

/** How long `register` waits for the targets to be healthy when the release has no health deadline (milliseconds): 10 minutes. */
export const DEFAULT_REGISTER_DEADLINE_MS = 600_000;

/** The target group attribute that bounds how long a deregistered target drains (seconds). */
export const DEREGISTRATION_DELAY_ATTRIBUTE = "deregistration_delay.timeout_seconds";

type Elb = { sdk: LoadBalancingModule; client: ElasticLoadBalancingV2Client };

/** The target group settings of `options` (the release's `traffic.loadBalancer.aws`), or CAPABILITY_MISSING. */
function targetGroupOf(options: TrafficOptions): AwsLoadBalancer {
  const group = readSection(awsProviderSpec, "loadBalancer", options.loadBalancer);
  if (!group) {
    throw new KilnError(
      "CAPABILITY_MISSING",
      `The aws provider routes traffic through an ELBv2 target group only, and ${formatTarget(options.target)} has none: set traffic.loadBalancer.aws.targetGroupArn (a front proxy, traffic.proxy, is not available on aws).`,
    );
  }
  return group;
}

/**
 * The target (instance id and port) of an instance in the target group: the port named `portName`
 * in the instance's ports label (`LABELS.ports`), else its endpoint's port; without a name, the
 * first tcp port of that label.
 * @throws KilnError ROLLOUT_FAILED when the instance has no port of that name
 */
export function targetOf(instance: Instance, portName: string | undefined): { Id: string; Port: number } {
  const ports = decodeInstanceLabels(instance.labels).ports;
  const port = portName === undefined ? ports.find((candidate) => candidate.protocol === "tcp")?.port : (ports.find((candidate) => candidate.name === portName)?.port ?? instance.endpoints[portName]?.port);
  if (port === undefined) {
    throw new KilnError("ROLLOUT_FAILED", `Instance ${instance.name} (${instance.id}) has no ${portName === undefined ? "tcp port" : `port named "${portName}"`}, so it cannot join the target group on it; check traffic.loadBalancer.aws.port and instances.ports.`, {
      details: { instanceId: instance.id, portName: portName ?? "(the first tcp port)" },
    });
  }
  return { Id: instance.id, Port: port };
}

/** `i-0abc:8080 is unhealthy (Target.Timeout)` for wait messages. */
function describeTarget(description: TargetHealthDescription): string {
  const health = description.TargetHealth;
  return `${description.Target?.Id}:${description.Target?.Port} is ${health?.State ?? "unknown"}${health?.Reason ? ` (${health.Reason}${health.Description ? `: ${health.Description}` : ""})` : ""}`;
}

function summary(descriptions: readonly TargetHealthDescription[]): string {
  return descriptions.slice(0, 3).map(describeTarget).join("; ") + (descriptions.length > 3 ? "; …" : "");
}

/** Whether a target is still draining. */
function draining(description: TargetHealthDescription): boolean {
  const state = description.TargetHealth?.State;
  return state === "draining" || state === "unhealthy.draining";
}

/**
 * Creates the aws provider's {@link TrafficCapability}: the release's ELBv2 target group
 * (`options.loadBalancer`, the `traffic.loadBalancer.aws` section: `targetGroupArn`, and `port`, the instance port targets are
 * registered on) receives new instances and drains old ones. Every wait uses core's `waitFor` with
 * one DescribeTargetHealth call for all the targets per poll, from `clients.options.pollIntervalMs`
 * backing off to 8 times it.
 *
 * - `register(instances, options, ctx)`: one RegisterTargets (instance id, port), then waits until
 *   DescribeTargetHealth says `healthy` for every target (or `unavailable`: the group's health
 *   checks are off, so it routes to every target), at most `options.health.deadlineMs` (else
 *   {@link DEFAULT_REGISTER_DEADLINE_MS}). Registering a registered target is a no-op (EC2 keeps
 *   one registration per id and port). Fails at once with `ROLLOUT_FAILED` when a target is `unused`
 *   because the group is not used by a load balancer or the instance's zone is not enabled
 *   (`Target.NotInUse`), or because the instance is not running (`Target.InvalidState`): it would
 *   never become healthy. `TIMEOUT` when the deadline passes (the message holds each target's
 *   state and reason).
 * - `deregister(instances, options, ctx)`: one DescribeTargetHealth of the whole group finds which
 *   of the instances are registered (on any port; one not registered is a no-op), one
 *   DeregisterTargets for them, then waits until none of them is `draining`, at most `drainMs`, and
 *   at most the group's `deregistration_delay.timeout_seconds` (DescribeTargetGroupAttributes).
 *   Reaching that limit is not an error: it returns, and the caller terminates the instances next.
 *
 * Without `options.loadBalancer` both throw `CAPABILITY_MISSING`. Every call passes `ctx.signal`;
 * `ABORTED` when it fires, `THROTTLED` / `PROVIDER_UNAVAILABLE` after the SDK's retries, else
 * `ROLLOUT_FAILED` with AWS's code and message (a target group that does not exist,
 * `TargetGroupNotFound`; an instance that is not running, `InvalidTarget`).
 *
 * @see https://docs.aws.amazon.com/elasticloadbalancing/latest/APIReference/API_RegisterTargets.html
 * @see https://docs.aws.amazon.com/elasticloadbalancing/latest/APIReference/API_DeregisterTargets.html
 * @see https://docs.aws.amazon.com/elasticloadbalancing/latest/APIReference/API_DescribeTargetHealth.html
 * @see https://docs.aws.amazon.com/elasticloadbalancing/latest/APIReference/API_DescribeTargetGroupAttributes.html
 * @see https://docs.aws.amazon.com/elasticloadbalancing/latest/application/target-group-health-checks.html
 */
export function createTrafficCapability(clients: AwsClients): TrafficCapability {
  const endpoint = () => clients.options.loadBalancingEndpoint;
  const waitOptions = (ctx: ProviderContext, timeoutMs: number, description: string) => ({
    timeoutMs,
    minDelayMs: clients.options.pollIntervalMs,
    maxDelayMs: clients.options.pollIntervalMs * 8,
    signal: ctx.signal,
    description,
  });

  async function health(elb: Elb, targetGroupArn: string, targets: readonly TargetDescription[] | undefined, ctx: ProviderContext): Promise<TargetHealthDescription[]> {
    const answer = await elb.client.send(new elb.sdk.DescribeTargetHealthCommand({ TargetGroupArn: targetGroupArn, ...(targets ? { Targets: [...targets] } : {}) }), {
      abortSignal: ctx.signal,
    });
    return answer.TargetHealthDescriptions ?? [];
  }

  /** The group's deregistration delay (milliseconds), or undefined when it cannot be read. */
  async function deregistrationDelayMs(elb: Elb, targetGroupArn: string, ctx: ProviderContext): Promise<number | undefined> {
    try {
      const answer = await elb.client.send(new elb.sdk.DescribeTargetGroupAttributesCommand({ TargetGroupArn: targetGroupArn }), { abortSignal: ctx.signal });
      const value = answer.Attributes?.find((attribute) => attribute.Key === DEREGISTRATION_DELAY_ATTRIBUTE)?.Value;
      return value !== undefined && /^\d+$/.test(value) ? Number(value) * 1000 : undefined;
    } catch (error) {
      const mapped = awsError(error, "ROLLOUT_FAILED", "Reading the target group's deregistration delay", endpoint(), "ELBv2");
      if (mapped.code === "ABORTED") throw mapped;
      // Only an upper bound on the drain: without it, drainMs alone bounds the wait.
      ctx.logger.warn("could not read the target group's deregistration delay; draining for at most the stop grace period", { targetGroupArn, error: mapped.message });
      return undefined;
    }
  }

  return {
    async register(instances, options, ctx) {
      throwIfAborted(ctx.signal);
      const group = targetGroupOf(options);
      if (instances.length === 0) return;
      const unique = [...new Map(instances.map((instance) => [instance.id, instance])).values()];
      const targets = unique.map((instance) => targetOf(instance, group.port));
      const what = `Registering ${targets.length} instance(s) of ${formatTarget(options.target)} with target group ${group.targetGroupArn}`;
      const elb = await clients.loadBalancing();
      try {
        await elb.client.send(new elb.sdk.RegisterTargetsCommand({ TargetGroupArn: group.targetGroupArn, Targets: targets }), { abortSignal: ctx.signal });
        ctx.logger.debug("targets registered", { targetGroupArn: group.targetGroupArn, targets: targets.map((target) => `${target.Id}:${target.Port}`) });
        const deadlineMs = options.health?.deadlineMs ?? DEFAULT_REGISTER_DEADLINE_MS;
        await waitFor(async () => {
          const descriptions = await health(elb, group.targetGroupArn, targets, ctx);
          const stuck = descriptions.filter((description) => description.TargetHealth?.State === "unused" && ["Target.NotInUse", "Target.InvalidState"].includes(description.TargetHealth.Reason ?? ""));
          if (stuck.length > 0) {
            throw new KilnError("ROLLOUT_FAILED", `${what}: the target group will never send them traffic: ${summary(stuck)}.`, {
              details: { targetGroupArn: group.targetGroupArn, targets: stuck.map(describeTarget) },
            });
          }
          const byKey = new Map(descriptions.map((description) => [`${description.Target?.Id}:${description.Target?.Port}`, description]));
          const notHealthy = targets
            .map((target) => byKey.get(`${target.Id}:${target.Port}`) ?? { Target: target, TargetHealth: { State: "unused", Reason: "Target.NotRegistered" } })
            .filter((description) => description.TargetHealth?.State !== "healthy" && description.TargetHealth?.State !== "unavailable");
          if (notHealthy.length === 0) return { done: true, value: undefined };
          return { done: false, reason: `${notHealthy.length} of ${targets.length} not healthy yet (${summary(notHealthy as TargetHealthDescription[])})` };
        }, waitOptions(ctx, deadlineMs, `target group ${group.targetGroupArn} to find ${targets.length} instance(s) of ${formatTarget(options.target)} healthy`));
      } catch (error) {
        throw awsError(error, "ROLLOUT_FAILED", what, endpoint(), "ELBv2");
      }
    },

    async deregister(instances, options, ctx) {
      throwIfAborted(ctx.signal);
      const group = targetGroupOf(options);
      if (instances.length === 0) return;
      const ids = new Set(instances.map((instance) => instance.id));
      const what = `Deregistering ${ids.size} instance(s) of ${formatTarget(options.target)} from target group ${group.targetGroupArn}`;
      const elb = await clients.loadBalancing();
      try {
        // The group's own list says on which ports they are registered; one not in it is a no-op.
        const mine = (await health(elb, group.targetGroupArn, undefined, ctx)).filter((description) => description.Target?.Id !== undefined && ids.has(description.Target.Id));
        const targets = mine.map((description) => ({ Id: description.Target!.Id!, ...(description.Target!.Port !== undefined ? { Port: description.Target!.Port } : {}) }));
        const registered = mine.filter((description) => !draining(description)).map((description) => ({ Id: description.Target!.Id!, ...(description.Target!.Port !== undefined ? { Port: description.Target!.Port } : {}) }));
        if (registered.length > 0) {
          try {
            await elb.client.send(new elb.sdk.DeregisterTargetsCommand({ TargetGroupArn: group.targetGroupArn, Targets: registered }), { abortSignal: ctx.signal });
          } catch (error) {
            // A target that went away between the two calls (its instance terminated): deregister the rest.
            if (awsErrorCode(error) !== "InvalidTarget" && awsErrorCode(error) !== "InvalidTargetException") throw error;
            const still = (await health(elb, group.targetGroupArn, undefined, ctx))
              .filter((description) => description.Target?.Id !== undefined && ids.has(description.Target.Id) && !draining(description))
              .map((description) => ({ Id: description.Target!.Id!, ...(description.Target!.Port !== undefined ? { Port: description.Target!.Port } : {}) }));
            if (still.length > 0) await elb.client.send(new elb.sdk.DeregisterTargetsCommand({ TargetGroupArn: group.targetGroupArn, Targets: still }), { abortSignal: ctx.signal });
          }
          ctx.logger.debug("targets deregistered", { targetGroupArn: group.targetGroupArn, targets: registered.map((target) => `${target.Id}:${target.Port}`) });
        }
        if (targets.length === 0 || options.drainMs <= 0) return;
        const delayMs = await deregistrationDelayMs(elb, group.targetGroupArn, ctx);
        const limitMs = Math.min(options.drainMs, delayMs ?? options.drainMs);
        if (limitMs <= 0) return;
        try {
          await waitFor(async () => {
            const still = (await health(elb, group.targetGroupArn, targets, ctx)).filter(draining);
            if (still.length === 0) return { done: true, value: undefined };
            return { done: false, reason: `${still.length} of ${targets.length} still draining (${summary(still)})` };
          }, waitOptions(ctx, limitMs, `${targets.length} target(s) to drain from ${group.targetGroupArn}`));
        } catch (error) {
          if (!isKilnError(error, "TIMEOUT")) throw error;
          // The drain limit: in-flight requests had their time; the caller terminates the instances next.
          ctx.logger.info("drain limit reached; moving on", { targetGroupArn: group.targetGroupArn, limitMs, reason: messageOf(error) });
        }
      } catch (error) {
        // No such group: nothing can be registered in it, so deregistering is done (the rollout
        // that registered into a wrong ARN failed already and is being undone).
        if (awsErrorCode(error) === "TargetGroupNotFound" || awsErrorCode(error) === "TargetGroupNotFoundException") {
          ctx.logger.warn("the target group does not exist; nothing to deregister", { targetGroupArn: group.targetGroupArn });
          return;
        }
        throw awsError(error, "ROLLOUT_FAILED", what, endpoint(), "ELBv2");
      }
    },
  };
}
