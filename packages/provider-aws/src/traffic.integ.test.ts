// The aws provider's traffic capability against moto's ELBv2 target groups, through the real SDK
// clients (testkit's fault proxy in front counts the calls). moto marks a registered target
// healthy at once and forgets a deregistered one at once (no `initial`, no `draining`): the waits
// through those states are covered by traffic.test.ts.
import { randomBytes } from "node:crypto";
import { DescribeVpcsCommand, StopInstancesCommand } from "@aws-sdk/client-ec2";
import { CreateTargetGroupCommand, DeleteTargetGroupCommand, DescribeTargetHealthCommand, ElasticLoadBalancingV2Client } from "@aws-sdk/client-elastic-load-balancing-v2";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { silentLogger, type Instance, type ProviderContext, type TrafficOptions } from "@kilnjs/core";
import { motoEndpoint, requireMoto, startFaultProxy, type FaultProxy } from "@kilnjs/testkit";
import { AwsClients } from "./client.js";
import { createInstanceOperations } from "./instances.js";
import { resolveAwsOptions } from "./options.js";
import { MOTO_REGION, motoBaseImage, motoClient, removeService } from "./test-support.js";
import { createTrafficCapability } from "./traffic.js";

const moto = await requireMoto();

function ctx(signal: AbortSignal = new AbortController().signal): ProviderContext {
  return { signal, logger: silentLogger, emit: () => undefined };
}

describe.skipIf(!moto)("aws traffic through an ELBv2 target group (moto)", () => {
  const endpoint = motoEndpoint();
  const ec2 = motoClient(endpoint);
  const elb = new ElasticLoadBalancingV2Client({ endpoint, region: MOTO_REGION, credentials: { accessKeyId: "testing", secretAccessKey: "testing" } });
  const service = `ktraffic-${randomBytes(3).toString("hex")}`;
  const target = { service, environment: "test" };
  let proxy: FaultProxy;
  let clients: AwsClients;
  let targetGroupArn: string;
  let instances: Instance[];

  const options = (): TrafficOptions => ({ target, loadBalancer: { targetGroupArn, port: "http" } });

  async function registered(): Promise<Array<{ id: string; port: number; state: string }>> {
    const answer = await elb.send(new DescribeTargetHealthCommand({ TargetGroupArn: targetGroupArn }));
    return (answer.TargetHealthDescriptions ?? []).map((description) => ({ id: description.Target!.Id!, port: description.Target!.Port!, state: description.TargetHealth!.State! })).sort((a, b) => a.id.localeCompare(b.id));
  }

  beforeAll(async () => {
    proxy = await startFaultProxy({ upstream: endpoint });
    clients = new AwsClients(
      resolveAwsOptions({ endpoint: proxy.url, loadBalancingEndpoint: proxy.url, region: MOTO_REGION, credentials: { accessKeyId: "testing", secretAccessKey: "testing" }, pollIntervalMs: 20 }),
    );
    const vpcs = await ec2.send(new DescribeVpcsCommand({ Filters: [{ Name: "is-default", Values: ["true"] }] }));
    const group = await elb.send(new CreateTargetGroupCommand({ Name: service, Protocol: "HTTP", Port: 80, VpcId: vpcs.Vpcs![0]!.VpcId!, TargetType: "instance" }));
    targetGroupArn = group.TargetGroups![0]!.TargetGroupArn!;
    const imageId = (await motoBaseImage(ec2)).id;
    instances = await createInstanceOperations(clients).launch(
      {
        target,
        release: 1,
        rolloutId: "ro-traffic",
        idempotencyKey: `ro-traffic:launch:${randomBytes(4).toString("hex")}`,
        image: { id: imageId, fingerprint: `sha256:${"d".repeat(64)}`, digest: imageId, names: [] },
        config: {
          ports: [
            { name: "metrics", port: 9100, protocol: "tcp" },
            { name: "http", port: 8080, protocol: "tcp" },
          ],
          env: {},
          labels: {},
          stopGracePeriodMs: 1000,
        },
        count: 3,
      },
      ctx(),
    );
  });

  afterAll(async () => {
    await elb.send(new DeleteTargetGroupCommand({ TargetGroupArn: targetGroupArn })).catch(() => undefined);
    await removeService(ec2, service);
    await clients.close();
    await proxy.close();
    elb.destroy();
    ec2.destroy();
  });

  it("registers on the named port and waits for healthy; registering again is a no-op", async () => {
    const traffic = createTrafficCapability(clients);
    const [a, b] = instances;
    await traffic.register([a!, b!], options(), ctx());
    expect(await registered()).toEqual(
      [a!, b!].map((instance) => ({ id: instance.id, port: 8080, state: "healthy" })).sort((x, y) => x.id.localeCompare(y.id)),
    );
    await traffic.register([a!, b!], options(), ctx());
    expect(await registered()).toHaveLength(2);
  });

  it("deregisters only what is registered, and a second deregister calls nothing", async () => {
    const traffic = createTrafficCapability(clients);
    const [a, b, c] = instances;
    const before = proxy.counts.received.DeregisterTargets ?? 0;
    // c was never registered: moto (like AWS for some target types) refuses to deregister it, so
    // the provider must leave it out.
    await traffic.deregister([a!, c!], { ...options(), drainMs: 5_000 }, ctx());
    expect(proxy.counts.received.DeregisterTargets! - before).toBe(1);
    expect((await registered()).map((entry) => entry.id)).toEqual([b!.id]);
    await traffic.deregister([a!, c!], { ...options(), drainMs: 5_000 }, ctx());
    expect(proxy.counts.received.DeregisterTargets! - before).toBe(1);
  });

  it("fails with ROLLOUT_FAILED for a missing target group or a stopped instance, CAPABILITY_MISSING without a group", async () => {
    const traffic = createTrafficCapability(clients);
    const missing = `${targetGroupArn.replace(/\/[0-9a-f]+$/, "")}/0123456789abcdef`;
    await expect(traffic.register([instances[0]!], { target, loadBalancer: { targetGroupArn: missing, port: "http" } }, ctx())).rejects.toMatchObject({
      code: "ROLLOUT_FAILED",
      message: expect.stringContaining("TargetGroupNotFound") as string,
    });
    await ec2.send(new StopInstancesCommand({ InstanceIds: [instances[2]!.id] }));
    await expect(traffic.register([instances[2]!], options(), ctx())).rejects.toMatchObject({ code: "ROLLOUT_FAILED", message: expect.stringContaining("InvalidTarget") as string });
    await expect(traffic.register([instances[0]!], { target }, ctx())).rejects.toMatchObject({ code: "CAPABILITY_MISSING" });
  });
});
