// Unit tests of the aws provider's traffic capability against a scripted ELBv2 client: moto
// reports a registered target healthy at once and removes a deregistered one at once, so the
// states it skips (initial, draining, unused/Target.NotInUse) are played here.
import * as elbSdk from "@aws-sdk/client-elastic-load-balancing-v2";
import { describe, expect, it } from "vitest";
import { LABELS, silentLogger, type Instance, type ProviderContext, type ResolvedHealth, type TrafficOptions } from "@kilnjs/core";
import type { AwsClients } from "./client.js";
import { fakeInstance } from "./test-support.js";
import { createTrafficCapability, targetOf } from "./traffic.js";

const ARN = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/web/0123456789abcdef";

function ctx(signal: AbortSignal = new AbortController().signal): ProviderContext {
  return { signal, logger: silentLogger, emit: () => undefined };
}

function options(extra: Partial<TrafficOptions> = {}): TrafficOptions {
  return { target: { service: "web", environment: "prod" }, loadBalancer: { targetGroupArn: ARN, port: "http" }, ...extra };
}

function instance(id: string): Instance {
  return { ...fakeInstance(id), labels: { [LABELS.ports]: "metrics:9100/tcp,http:8080/tcp" } };
}

type Health = elbSdk.TargetHealthDescription;

function fakeClients(handlers: Record<string, (input: Record<string, unknown>) => unknown>) {
  const calls: Array<{ name: string; input: Record<string, unknown>; signal: AbortSignal | undefined }> = [];
  const client = {
    send: async (command: { input: Record<string, unknown> }, options?: { abortSignal?: AbortSignal }) => {
      const name = command.constructor.name.replace(/Command$/, "");
      calls.push({ name, input: command.input, signal: options?.abortSignal });
      if (options?.abortSignal?.aborted) throw Object.assign(new Error("Request aborted"), { name: "AbortError" });
      const handler = handlers[name];
      if (!handler) throw new Error(`unexpected call ${name}`);
      return handler(command.input);
    },
  };
  const clients = {
    options: { endpoint: undefined, loadBalancingEndpoint: "http://127.0.0.1:1", pollIntervalMs: 10, instanceTimeoutMs: 1000 },
    loadBalancing: async () => ({ sdk: elbSdk, client }),
  } as unknown as AwsClients;
  return { clients, calls, count: (name: string) => calls.filter((call) => call.name === name).length };
}

function described(id: string, state: string, reason?: string, port = 8080): Health {
  return { Target: { Id: id, Port: port }, TargetHealth: { State: state as elbSdk.TargetHealthStateEnum, ...(reason ? { Reason: reason as elbSdk.TargetHealthReasonEnum } : {}) } };
}

describe("targetOf", () => {
  it("registers on the port named by the section's port from the ports label, else the first tcp port", () => {
    expect(targetOf(instance("i-1"), "http")).toEqual({ Id: "i-1", Port: 8080 });
    expect(targetOf(instance("i-1"), undefined)).toEqual({ Id: "i-1", Port: 9100 });
    expect(() => targetOf(instance("i-1"), "admin")).toThrow(/has no port named "admin"/);
  });
});

describe("traffic (scripted ELBv2)", () => {
  it("refuses options without a target group, and a cancelled call, before any call", async () => {
    const { clients, calls } = fakeClients({});
    const traffic = createTrafficCapability(clients);
    await expect(traffic.register([instance("i-1")], { target: { service: "web", environment: "prod" } }, ctx())).rejects.toMatchObject({
      code: "CAPABILITY_MISSING",
      message: expect.stringContaining("traffic.loadBalancer.aws") as string,
    });
    await expect(traffic.deregister([instance("i-1")], { target: { service: "web", environment: "prod" }, drainMs: 10 }, ctx())).rejects.toMatchObject({ code: "CAPABILITY_MISSING" });
    const controller = new AbortController();
    controller.abort();
    await expect(traffic.register([instance("i-1")], options(), ctx(controller.signal))).rejects.toMatchObject({ code: "ABORTED" });
    await expect(traffic.deregister([instance("i-1")], { ...options(), drainMs: 10 }, ctx(controller.signal))).rejects.toMatchObject({ code: "ABORTED" });
    expect(calls).toEqual([]);
  });

  it("registers, then waits with one DescribeTargetHealth per poll until all are healthy", async () => {
    let polls = 0;
    const { clients, calls, count } = fakeClients({
      RegisterTargets: () => ({}),
      DescribeTargetHealth: (input) => {
        polls += 1;
        const targets = input.Targets as Array<{ Id: string; Port: number }>;
        return {
          TargetHealthDescriptions: targets.map((target, index) =>
            polls === 1 && index === 0 ? described(target.Id, "initial", "Elb.RegistrationInProgress") : polls === 2 && index === 1 ? described(target.Id, "unhealthy", "Target.Timeout") : described(target.Id, "healthy"),
          ),
        };
      },
    });
    await createTrafficCapability(clients).register([instance("i-1"), instance("i-2"), instance("i-1")], options(), ctx());
    expect(calls[0]).toMatchObject({ name: "RegisterTargets", input: { TargetGroupArn: ARN, Targets: [{ Id: "i-1", Port: 8080 }, { Id: "i-2", Port: 8080 }] } });
    expect(count("DescribeTargetHealth")).toBe(3);
    expect(calls.every((call) => call.signal !== undefined)).toBe(true);
  });

  it("fails fast when the target group will never route to a target", async () => {
    const { clients } = fakeClients({
      RegisterTargets: () => ({}),
      DescribeTargetHealth: () => ({ TargetHealthDescriptions: [described("i-1", "unused", "Target.NotInUse")] }),
    });
    await expect(createTrafficCapability(clients).register([instance("i-1")], options(), ctx())).rejects.toMatchObject({
      code: "ROLLOUT_FAILED",
      message: expect.stringContaining("Target.NotInUse") as string,
    });
  });

  it("times out at the health deadline with each target's state", async () => {
    const { clients } = fakeClients({
      RegisterTargets: () => ({}),
      DescribeTargetHealth: () => ({ TargetHealthDescriptions: [described("i-1", "unhealthy", "Target.ResponseCodeMismatch")] }),
    });
    const health = { deadlineMs: 80 } as ResolvedHealth;
    await expect(createTrafficCapability(clients).register([instance("i-1")], options({ health }), ctx())).rejects.toMatchObject({
      code: "TIMEOUT",
      message: expect.stringContaining("i-1:8080 is unhealthy (Target.ResponseCodeMismatch)") as string,
    });
  });

  it("maps a missing target group to ROLLOUT_FAILED with AWS's code", async () => {
    const { clients } = fakeClients({
      RegisterTargets: () => {
        throw Object.assign(new Error("One or more target groups not found"), { name: "TargetGroupNotFoundException", Code: "TargetGroupNotFound", $metadata: { httpStatusCode: 400 } });
      },
    });
    await expect(createTrafficCapability(clients).register([instance("i-1")], options(), ctx())).rejects.toMatchObject({
      code: "ROLLOUT_FAILED",
      message: expect.stringContaining("TargetGroupNotFound") as string,
    });
  });

  it("deregisters only registered targets, then waits while they drain", async () => {
    let polls = 0;
    const { clients, calls } = fakeClients({
      DescribeTargetHealth: (input) => {
        if (!input.Targets) return { TargetHealthDescriptions: [described("i-1", "healthy"), described("i-other", "healthy"), described("i-2", "draining", "Target.DeregistrationInProgress", 9090)] };
        polls += 1;
        return { TargetHealthDescriptions: (input.Targets as Array<{ Id: string; Port: number }>).map((target) => (polls < 3 ? described(target.Id, "draining", "Target.DeregistrationInProgress", target.Port) : described(target.Id, "unused", "Target.NotRegistered", target.Port))) };
      },
      DeregisterTargets: () => ({}),
      DescribeTargetGroupAttributes: () => ({ Attributes: [{ Key: "deregistration_delay.timeout_seconds", Value: "300" }] }),
    });
    await createTrafficCapability(clients).deregister([instance("i-1"), instance("i-2"), instance("i-never")], { ...options(), drainMs: 10_000 }, ctx());
    // i-2 already drains (an earlier deregister), i-never was never registered: one call, for i-1.
    expect(calls.filter((call) => call.name === "DeregisterTargets").map((call) => call.input.Targets)).toEqual([[{ Id: "i-1", Port: 8080 }]]);
    const waits = calls.filter((call) => call.name === "DescribeTargetHealth" && call.input.Targets);
    expect(waits).toHaveLength(3);
    expect(waits[0]!.input.Targets).toEqual([
      { Id: "i-1", Port: 8080 },
      { Id: "i-2", Port: 9090 },
    ]);
  });

  it("deregistering instances that are not registered changes nothing", async () => {
    const { clients, calls } = fakeClients({ DescribeTargetHealth: () => ({ TargetHealthDescriptions: [described("i-other", "healthy")] }) });
    await createTrafficCapability(clients).deregister([instance("i-1")], { ...options(), drainMs: 10_000 }, ctx());
    expect(calls.map((call) => call.name)).toEqual(["DescribeTargetHealth"]);
  });

  it("stops waiting for the drain at drainMs, or at the group's deregistration delay, without an error", async () => {
    const draining = () => ({ TargetHealthDescriptions: [described("i-1", "draining", "Target.DeregistrationInProgress")] });
    const forever = (delaySeconds: string) =>
      fakeClients({
        DescribeTargetHealth: (input) => (input.Targets ? draining() : { TargetHealthDescriptions: [described("i-1", "healthy")] }),
        DeregisterTargets: () => ({}),
        DescribeTargetGroupAttributes: () => ({ Attributes: [{ Key: "deregistration_delay.timeout_seconds", Value: delaySeconds }] }),
      });
    const byDrain = forever("300");
    let started = Date.now();
    await createTrafficCapability(byDrain.clients).deregister([instance("i-1")], { ...options(), drainMs: 150 }, ctx());
    expect(Date.now() - started).toBeGreaterThanOrEqual(140);
    expect(Date.now() - started).toBeLessThan(2_000);
    // A delay of 0 s: the load balancer drops the connections at once, nothing to wait for.
    const byDelay = forever("0");
    started = Date.now();
    await createTrafficCapability(byDelay.clients).deregister([instance("i-1")], { ...options(), drainMs: 60_000 }, ctx());
    expect(Date.now() - started).toBeLessThan(1_000);
    expect(byDelay.calls.filter((call) => call.name === "DescribeTargetHealth" && call.input.Targets)).toHaveLength(0);
  });
});
