// The aws provider's instance operations against moto (the EC2 emulator), through the real SDK
// client, with testkit's fault proxy in front to count calls and lose answers. Never sends traffic
// to the instances (moto's addresses are fake).
import { randomBytes } from "node:crypto";
import { CreateImageCommand, CreateLaunchTemplateCommand, CreateSecurityGroupCommand, DeregisterImageCommand, DescribeInstancesCommand, DescribeSubnetsCommand, DescribeVolumesCommand, RunInstancesCommand, TerminateInstancesCommand, type Instance as Ec2Instance } from "@aws-sdk/client-ec2";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LABELS, silentLogger, type LaunchRequest, type ProviderContext } from "@kilnjs/core";
import { motoEndpoint, requireMoto, startFaultProxy, type FaultProxy } from "@kilnjs/testkit";
import { AwsClients } from "./client.js";
import { createInstanceOperations, launchClientToken } from "./instances.js";
import { resolveAwsOptions } from "./options.js";
import { AWS_TAGS, BUILDER_ROLE } from "./tags.js";
import { MOTO_REGION, motoBaseImage, motoClient, removeService } from "./test-support.js";

const moto = await requireMoto();

function ctx(signal: AbortSignal = new AbortController().signal): ProviderContext {
  return { signal, logger: silentLogger, emit: () => undefined };
}

describe.skipIf(!moto)("aws instance operations (moto)", () => {
  const endpoint = motoEndpoint();
  const ec2 = motoClient(endpoint);
  const service = `kinst-${randomBytes(3).toString("hex")}`;
  const target = { service, environment: "test" };
  let proxy: FaultProxy;
  let clients: AwsClients;
  let imageId: string;
  let subnets: string[];
  let securityGroupId: string;

  /** Clients through the proxy (`via`), with fast polling. */
  function awsClients(via: string, extra: { maxAttempts?: number } = {}): AwsClients {
    return new AwsClients(
      resolveAwsOptions({ endpoint: via, loadBalancingEndpoint: via, region: MOTO_REGION, credentials: { accessKeyId: "testing", secretAccessKey: "testing" }, pollIntervalMs: 20, ...extra }),
    );
  }

  function request(overrides: Partial<LaunchRequest> = {}): LaunchRequest {
    return {
      target,
      release: 3,
      rolloutId: "ro-integ",
      idempotencyKey: `ro-integ:launch:${randomBytes(4).toString("hex")}`,
      image: { id: imageId, fingerprint: `sha256:${"b".repeat(64)}`, digest: imageId, names: [] },
      config: { ports: [{ name: "http", port: 8080, protocol: "tcp" }], env: {}, labels: { team: "integ" }, stopGracePeriodMs: 1000 },
      count: 1,
      ...overrides,
    };
  }

  async function describeLaunch(key: string): Promise<Ec2Instance[]> {
    const page = await ec2.send(
      new DescribeInstancesCommand({ Filters: [{ Name: `tag:${LABELS.launchKey}`, Values: [key] }, { Name: "instance-state-name", Values: ["pending", "running", "stopping", "stopped"] }] }),
    );
    return (page.Reservations ?? []).flatMap((reservation) => reservation.Instances ?? []);
  }

  beforeAll(async () => {
    imageId = (await motoBaseImage(ec2)).id;
    const found = await ec2.send(new DescribeSubnetsCommand({ Filters: [{ Name: "default-for-az", Values: ["true"] }] }));
    subnets = (found.Subnets ?? []).map((subnet) => subnet.SubnetId!).slice(0, 2);
    expect(subnets).toHaveLength(2);
    securityGroupId = (await ec2.send(new CreateSecurityGroupCommand({ GroupName: `${service}-sg`, Description: "kiln integ" }))).GroupId!;
    proxy = await startFaultProxy({ upstream: endpoint });
    clients = awsClients(proxy.url);
  });

  afterAll(async () => {
    await removeService(ec2, service);
    await clients.close();
    await proxy.close();
    ec2.destroy();
  });

  it("launches across subnets with the settings and tags, once per key", async () => {
    const operations = createInstanceOperations(clients);
    const settings = {
      instanceType: "t3.small",
      subnetIds: subnets,
      securityGroupIds: [securityGroupId],
      keyName: "ops",
      userData: "#!/bin/sh\necho kiln\n",
      blockDevices: [{ deviceName: "/dev/xvda", volumeSizeGiB: 20, volumeType: "gp3", encrypted: true, deleteOnTermination: true }],
      address: "private" as const,
    };
    const launch = request({ count: 3, config: { ...request().config, providerSettings: settings } });
    const runsBefore = proxy.counts.received.RunInstances ?? 0;
    const launched = await operations.launch(launch, ctx());
    expect(proxy.counts.received.RunInstances! - runsBefore).toBe(2);

    expect(launched).toHaveLength(3);
    expect(new Set(launched.map((instance) => instance.name)).size).toBe(3);
    for (const instance of launched) {
      expect(instance).toMatchObject({ target, release: 3, rolloutId: "ro-integ", imageId, state: "running", restartCount: 0 });
      expect(instance.name).toMatch(new RegExp(`^${service}\\.test\\.r3\\.[0-9a-f]{6}-[0-9a-f]{6}$`));
      expect(instance.endpoints.http).toEqual({ host: expect.stringMatching(/^\d+\.\d+\.\d+\.\d+$/) as string, port: 8080 });
      expect(instance.labels).toMatchObject({ team: "integ", [LABELS.fingerprint]: `sha256:${"b".repeat(64)}`, [LABELS.ports]: "http:8080/tcp", [AWS_TAGS.address]: "private" });
    }

    const described = await describeLaunch(launch.idempotencyKey);
    expect(described.map((instance) => instance.InstanceId).sort()).toEqual(launched.map((instance) => instance.id).sort());
    // Two in the first subnet, one in the second; each call with its own derived token.
    expect(described.filter((instance) => instance.SubnetId === subnets[0])).toHaveLength(2);
    expect(described.filter((instance) => instance.SubnetId === subnets[1])).toHaveLength(1);
    for (const instance of described) {
      const index = subnets.indexOf(instance.SubnetId!);
      expect(instance.ClientToken).toBe(launchClientToken(launch.idempotencyKey, index, 0));
      expect(instance.InstanceType).toBe("t3.small");
      expect(instance.KeyName).toBe("ops");
      expect(instance.SecurityGroups?.map((group) => group.GroupId)).toEqual([securityGroupId]);
      const tags = Object.fromEntries((instance.Tags ?? []).map((tag) => [tag.Key, tag.Value]));
      expect(tags).toMatchObject({
        Name: `${service}.test.r3.${instance.ClientToken!.slice(-6)}`,
        [LABELS.managed]: "true",
        [LABELS.service]: service,
        [LABELS.environment]: "test",
        [LABELS.release]: "3",
        [LABELS.rollout]: "ro-integ",
        [LABELS.launchKey]: launch.idempotencyKey,
      });
    }
    const volumes = await ec2.send(new DescribeVolumesCommand({ Filters: [{ Name: `tag:${LABELS.launchKey}`, Values: [launch.idempotencyKey] }] }));
    expect(volumes.Volumes?.length).toBeGreaterThanOrEqual(3);
    expect(volumes.Volumes?.some((volume) => volume.Size === 20)).toBe(true);

    // The same key again: the same instances, no RunInstances.
    const runsAfter = proxy.counts.received.RunInstances!;
    const again = await operations.launch(launch, ctx());
    expect(again.map((instance) => instance.id).sort()).toEqual(launched.map((instance) => instance.id).sort());
    expect(proxy.counts.received.RunInstances).toBe(runsAfter);

    // One more with the same key: only the missing one, in the subnet that is short.
    const more = await operations.launch({ ...launch, count: 4 }, ctx());
    expect(proxy.counts.received.RunInstances).toBe(runsAfter + 1);
    expect(more).toHaveLength(4);
    const added = (await describeLaunch(launch.idempotencyKey)).filter((instance) => !launched.some((old) => old.id === instance.InstanceId));
    expect(added.map((instance) => [instance.SubnetId, instance.ClientToken])).toEqual([[subnets[1], launchClientToken(launch.idempotencyKey, 1, 3)]]);
  });

  it("waits with one DescribeInstances per poll for the whole batch", async () => {
    const before = proxy.requests.length;
    await createInstanceOperations(clients).launch(request({ count: 5 }), ctx());
    const calls = proxy.requests.slice(before).map((call) => call.action);
    // The lookup by launch tag, the AMI check, one RunInstances, then moto's instances run at the first poll.
    expect(calls).toEqual(["DescribeInstances", "DescribeImages", "RunInstances", "DescribeInstances"]);
    const poll = proxy.requests.slice(before)[3]!.params;
    expect(Object.keys(poll).filter((key) => /^Filter\.1\.Value\.\d+$/.test(key))).toHaveLength(5);
  });

  it("uses the public address when asked, an instance profile by name and a launch template", async () => {
    const profile = `${service}-profile`;
    // moto checks that the instance profile exists; IAM is not a dependency, so create it with a raw query call.
    const created = await fetch(`${endpoint}/`, {
      method: "POST",
      headers: { authorization: "AWS4-HMAC-SHA256 Credential=testing/20240101/us-east-1/iam/aws4_request, SignedHeaders=host, Signature=0", "content-type": "application/x-www-form-urlencoded" },
      body: `Action=CreateInstanceProfile&InstanceProfileName=${profile}&Version=2010-05-08`,
    });
    expect(created.status).toBe(200);
    const template = await ec2.send(new CreateLaunchTemplateCommand({ LaunchTemplateName: `${service}-lt`, LaunchTemplateData: { InstanceType: "t3.large" } }));
    const settings = {
      instanceType: "t3.nano",
      subnetIds: [],
      securityGroupIds: [],
      iamInstanceProfile: profile,
      blockDevices: [],
      launchTemplate: { name: `${service}-lt`, version: "$Latest" },
      address: "public" as const,
    };
    const launch = request({ config: { ...request().config, providerSettings: settings } });
    const [instance] = await createInstanceOperations(clients).launch(launch, ctx());
    const [described] = await describeLaunch(launch.idempotencyKey);
    expect(instance!.endpoints.http).toEqual({ host: described!.PublicIpAddress, port: 8080 });
    expect(described!.IamInstanceProfile?.Arn).toBe(`arn:aws:iam::123456789012:instance-profile/${profile}`);
    // The settings override the template's; the template shows in moto's aws: tags.
    expect(described!.InstanceType).toBe("t3.nano");
    expect(instance!.labels["aws:ec2launchtemplate:id"]).toBe(template.LaunchTemplate!.LaunchTemplateId);
  });

  it("lists by target, release and rollout, without terminated instances or bake builders", async () => {
    const operations = createInstanceOperations(clients);
    const other = { ...target, environment: "other" };
    const [a, b] = await operations.launch(request({ count: 2, release: 7, rolloutId: "ro-list" }), ctx());
    const [c] = await operations.launch(request({ release: 8, rolloutId: "ro-list-2" }), ctx());
    const [elsewhere] = await operations.launch(request({ target: other, release: 7, rolloutId: "ro-list" }), ctx());
    await ec2.send(new TerminateInstancesCommand({ InstanceIds: [b!.id] }));
    // A bake's builder carries the target's tags and a role.
    await ec2.send(
      new RunInstancesCommand({
        ImageId: imageId,
        MinCount: 1,
        MaxCount: 1,
        TagSpecifications: [
          {
            ResourceType: "instance",
            Tags: [
              { Key: LABELS.managed, Value: "true" },
              { Key: LABELS.service, Value: service },
              { Key: LABELS.environment, Value: "test" },
              { Key: AWS_TAGS.role, Value: BUILDER_ROLE },
            ],
          },
        ],
      }),
    );
    const before = proxy.counts.received.DescribeInstances ?? 0;
    const byRelease = await operations.list({ target, release: 7 }, ctx());
    expect(proxy.counts.received.DescribeInstances! - before).toBe(1);
    expect(byRelease.map((instance) => instance.id)).toEqual([a!.id]);
    expect((await operations.list({ target, rolloutId: "ro-list-2" }, ctx())).map((instance) => instance.id)).toEqual([c!.id]);
    const all = await operations.list({ target, withRestartCounts: true }, ctx());
    expect(all.map((instance) => instance.id)).toEqual(expect.arrayContaining([a!.id, c!.id]));
    expect(all.map((instance) => instance.id)).not.toContain(b!.id);
    expect(all.map((instance) => instance.id)).not.toContain(elsewhere!.id);
    expect(all.every((instance) => instance.labels[AWS_TAGS.role] === undefined && instance.restartCount === 0)).toBe(true);
    expect((await operations.list({ target: other }, ctx())).map((instance) => instance.id)).toEqual([elsewhere!.id]);
  });

  it("fails with LAUNCH_FAILED for a subnet that does not exist, INVALID_ARGUMENT for bad labels, ABORTED when cancelled", async () => {
    const operations = createInstanceOperations(clients);
    const badSubnet = request({ config: { ...request().config, providerSettings: { instanceType: "t3.micro", subnetIds: ["subnet-0123456789abcdef0"], securityGroupIds: [], blockDevices: [], address: "private" } } });
    await expect(operations.launch(badSubnet, ctx())).rejects.toMatchObject({ code: "LAUNCH_FAILED", message: expect.stringContaining("InvalidSubnetID.NotFound") as string });

    const before = proxy.requests.length;
    await expect(operations.launch(request({ config: { ...request().config, labels: { "aws:team": "x" } } }), ctx())).rejects.toMatchObject({
      code: "INVALID_ARGUMENT",
      message: expect.stringContaining('tag "aws:team"') as string,
    });
    const controller = new AbortController();
    controller.abort();
    await expect(operations.launch(request(), ctx(controller.signal))).rejects.toMatchObject({ code: "ABORTED" });
    expect(proxy.requests.length).toBe(before);
  });

  it("refuses to launch from a deregistered AMI", async () => {
    // moto would launch from it; the provider checks the AMI first (AWS refuses it in RunInstances).
    const [builder] = await createInstanceOperations(clients).launch(request({ release: 11 }), ctx());
    const created = await ec2.send(new CreateImageCommand({ InstanceId: builder!.id, Name: `${service}-gone` }));
    await ec2.send(new DeregisterImageCommand({ ImageId: created.ImageId! }));
    const before = proxy.counts.received.RunInstances ?? 0;
    await expect(createInstanceOperations(clients).launch(request({ image: { id: created.ImageId!, fingerprint: `sha256:${"e".repeat(64)}`, digest: created.ImageId!, names: [] } }), ctx())).rejects.toMatchObject({
      code: "LAUNCH_FAILED",
      message: expect.stringContaining(`AMI ${created.ImageId} does not exist`) as string,
    });
    expect(proxy.counts.received.RunInstances ?? 0).toBe(before);
  });

  it("launches once when the answer to RunInstances is lost, and retries with the same token when the request was", async () => {
    // moto does not honour client tokens (a repeated RunInstances with the same token launches
    // again; AWS answers it with the first launch). Before the SDK sends a RunInstances again, the
    // provider looks the token up among the launch's instances, so a lost answer does not double
    // the launch even here.
    for (const phase of ["after", "before"] as const) {
      const lossy = await startFaultProxy({ upstream: endpoint, decide: (call) => (call.action === "RunInstances" && call.callNumber === 1 ? { kind: "unavailable", phase } : undefined) });
      const lossyClients = awsClients(lossy.url);
      try {
        const launch = request({ count: 2 });
        const launched = await createInstanceOperations(lossyClients).launch(launch, ctx());
        expect(launched, phase).toHaveLength(2);
        expect((await describeLaunch(launch.idempotencyKey)).map((instance) => instance.InstanceId).sort(), phase).toEqual(launched.map((instance) => instance.id).sort());
        const sent = lossy.requests.filter((call) => call.action === "RunInstances");
        // Lost after moto did the work: the retry is never sent. Lost before: the retry carries the same token.
        expect(sent.map((call) => call.params.ClientToken), phase).toEqual(
          phase === "after" ? [launchClientToken(launch.idempotencyKey, 0, 0)] : [launchClientToken(launch.idempotencyKey, 0, 0), launchClientToken(launch.idempotencyKey, 0, 0)],
        );
        expect(lossy.counts.forwarded.RunInstances, phase).toBe(1);
      } finally {
        await lossyClients.close();
        await lossy.close();
      }
    }
  });

  it("terminates a batch, counting instances already gone as terminated", async () => {
    const operations = createInstanceOperations(clients);
    const launched = await operations.launch(request({ count: 3, release: 9 }), ctx());
    await ec2.send(new TerminateInstancesCommand({ InstanceIds: [launched[2]!.id] }));
    const ghost = { ...launched[0]!, id: "i-0123456789abcdef0" };
    const before = proxy.counts.received.TerminateInstances ?? 0;
    await operations.terminate([...launched, ghost], { gracePeriodMs: 10_000 }, ctx());
    // moto refuses the whole call for the unknown id; the provider repeats it without that one.
    expect(proxy.counts.received.TerminateInstances! - before).toBe(2);
    const states = await ec2.send(new DescribeInstancesCommand({ InstanceIds: launched.map((instance) => instance.id) }));
    expect((states.Reservations ?? []).flatMap((reservation) => reservation.Instances ?? []).map((instance) => instance.State?.Name)).toEqual(["terminated", "terminated", "terminated"]);
    expect(await operations.list({ target, release: 9 }, ctx())).toEqual([]);

    const count = proxy.requests.length;
    await operations.terminate([], { gracePeriodMs: 0 }, ctx());
    await operations.terminate(launched, { gracePeriodMs: 0 }, ctx());
    // Terminating terminated instances again is harmless (EC2 accepts it).
    expect(proxy.requests.slice(count).map((call) => call.action)).toEqual(["TerminateInstances", "DescribeInstances"]);
  });
});
