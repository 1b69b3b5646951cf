import {
  DescribeImagesCommand,
  DescribeInstancesCommand,
  DescribeRegionsCommand,
  EC2Client,
  RunInstancesCommand,
  TerminateInstancesCommand,
  type EC2ClientConfig,
} from "@aws-sdk/client-ec2";
import { ConfiguredRetryStrategy } from "@smithy/core/retry";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import { startFaultProxy, type FaultProxy } from "./fault-proxy.js";
import { motoEndpoint, requireMoto, resetMoto } from "./moto.js";

const moto = await requireMoto();

/** An EC2 client of `endpoint` with fake credentials and up to 10 attempts with no delay between them. */
function ec2Client(endpoint: string): EC2Client {
  const config: EC2ClientConfig = {
    endpoint,
    region: "us-east-1",
    credentials: { accessKeyId: "testing", secretAccessKey: "testing" },
    retryStrategy: new ConfiguredRetryStrategy(10, 0),
  };
  return new EC2Client(config);
}

const sum = (record: Readonly<Record<string, number>>) => Object.values(record).reduce((a, b) => a + b, 0);

describe.skipIf(!moto)("fault proxy in front of moto, driven by the AWS SDK", () => {
  let proxy: FaultProxy | undefined;
  let imageId: string;

  beforeAll(async () => {
    await resetMoto();
    const direct = ec2Client(motoEndpoint());
    const images = await direct.send(new DescribeImagesCommand({ Owners: ["amazon"] }));
    imageId = images.Images!.find((image) => image.Platform === undefined)!.ImageId!;
    direct.destroy();
  });

  afterEach(async () => {
    await proxy?.close();
    proxy = undefined;
  });

  it("injects throttling and 503s; the SDK retries through them and every call succeeds", async () => {
    proxy = await startFaultProxy({ upstream: motoEndpoint(), faultRate: 0.3, seed: 7 });
    const ec2 = ec2Client(proxy.url);
    let attempts = 0;
    const launched: string[] = [];
    for (let i = 0; i < 8; i++) {
      const regions = await ec2.send(new DescribeRegionsCommand({}));
      expect(regions.Regions!.length).toBeGreaterThan(0);
      attempts += regions.$metadata.attempts ?? 1;
      const run = await ec2.send(new RunInstancesCommand({ ImageId: imageId, MinCount: 1, MaxCount: 1, ClientToken: `fault-proxy-${i}` }));
      launched.push(run.Instances![0]!.InstanceId!);
      attempts += run.$metadata.attempts ?? 1;
      const described = await ec2.send(new DescribeInstancesCommand({ InstanceIds: [launched[i]!] }));
      expect(described.Reservations![0]!.Instances![0]!.InstanceId).toBe(launched[i]);
      attempts += described.$metadata.attempts ?? 1;
    }
    const { counts } = proxy;
    // Before-phase faults only (the default): each call reached moto exactly once.
    expect(counts.forwarded).toEqual({ DescribeRegions: 8, RunInstances: 8, DescribeInstances: 8 });
    expect(counts.faultsAfter).toEqual({});
    for (const action of ["DescribeRegions", "RunInstances", "DescribeInstances"]) {
      expect(counts.received[action]).toBe(counts.forwarded[action]! + (counts.faults[action] ?? 0));
    }
    // Faults were injected, of both kinds, and the SDK's attempts account for every request.
    expect(sum(counts.faults)).toBeGreaterThan(0);
    expect(new Set(proxy.requests.flatMap((r) => (r.fault ? [r.fault.kind] : [])))).toEqual(new Set(["throttle", "unavailable"]));
    expect(attempts).toBe(sum(counts.received));
    // A retried RunInstances carried the same ClientToken on every attempt.
    const tokens = proxy.requests.filter((r) => r.action === "RunInstances").map((r) => r.params.ClientToken);
    expect(new Set(tokens)).toEqual(new Set(launched.map((_, i) => `fault-proxy-${i}`)));
    await ec2.send(new TerminateInstancesCommand({ InstanceIds: launched }));
    ec2.destroy();
  });

  it("an after-phase fault: moto did the work, the SDK saw an error and retried with the same ClientToken", async () => {
    proxy = await startFaultProxy({
      upstream: motoEndpoint(),
      decide: (call) => (call.action === "RunInstances" && call.callNumber === 1 ? { kind: "throttle", phase: "after" } : undefined),
    });
    const ec2 = ec2Client(proxy.url);
    const run = await ec2.send(new RunInstancesCommand({ ImageId: imageId, MinCount: 1, MaxCount: 1, ClientToken: "lost-answer" }));
    expect(run.$metadata.attempts).toBe(2);
    expect(proxy.counts.forwarded.RunInstances).toBe(2);
    expect(proxy.counts.faultsAfter.RunInstances).toBe(1);
    const attempts = proxy.requests.filter((r) => r.action === "RunInstances");
    expect(attempts.map((r) => r.params.ClientToken)).toEqual(["lost-answer", "lost-answer"]);
    expect(attempts.map((r) => [r.upstreamStatus, r.status])).toEqual([
      [200, 503],
      [200, 200],
    ]);
    // moto 5.2.1 ignores ClientToken, so it now holds two instances where AWS would hold one: a
    // provider's own idempotency (find by tag before launching) must not rely on the emulator.
    const all = await ec2.send(new DescribeInstancesCommand({ Filters: [{ Name: "image-id", Values: [imageId] }, { Name: "instance-state-name", Values: ["pending", "running"] }] }));
    expect(all.Reservations!.flatMap((r) => r.Instances!).length).toBeGreaterThanOrEqual(1);
    ec2.destroy();
  });
});
