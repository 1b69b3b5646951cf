// Unit tests of the aws provider's instance operations: the pure parts (tags, tokens, subnets,
// mapping), and the call pattern against a scripted stand-in for the EC2 client (what moto cannot
// show: an instance that dies while starting, EC2 replaying an old launch token, a slow start).
import * as ec2Sdk from "@aws-sdk/client-ec2";
import { describe, expect, it } from "vitest";
import { KilnError, LABELS, silentLogger, type LaunchRequest, type ProviderContext } from "@kilnjs/core";
import type { AwsClients } from "./client.js";
import {
  chunks,
  createInstanceOperations,
  filterValue,
  instanceFromEc2,
  instanceState,
  launchClientToken,
  launchSettings,
  launchTags,
  planLaunch,
  runInstancesInput,
} from "./instances.js";
import { AWS_KILN_TAG_COUNT, type AwsInstanceSettings } from "./spec.js";

/** The launch settings of a release without an `instances.aws` section. */
const DEFAULT_AWS_INSTANCE_SETTINGS = launchSettings({});
import { AWS_TAGS } from "./tags.js";

function ctx(signal: AbortSignal = new AbortController().signal): ProviderContext {
  return { signal, logger: silentLogger, emit: () => undefined };
}

function request(overrides: Partial<LaunchRequest> = {}): LaunchRequest {
  return {
    target: { service: "web", environment: "prod" },
    release: 3,
    rolloutId: "ro-1",
    idempotencyKey: "ro-1:launch:1",
    image: { id: "ami-12345678", fingerprint: `sha256:${"a".repeat(64)}`, digest: "ami-12345678", names: [] },
    config: { ports: [{ name: "http", port: 8080, protocol: "tcp" }], env: {}, labels: { team: "blue" }, stopGracePeriodMs: 1000 },
    count: 2,
    ...overrides,
  };
}

function awsFailure(code: string, message = code): Error {
  return Object.assign(new Error(message), { name: code, Code: code, $metadata: { httpStatusCode: 400 } });
}

interface Call {
  readonly name: string;
  readonly input: Record<string, unknown>;
  readonly signal: AbortSignal | undefined;
}

/** A stand-in for AwsClients whose EC2 client answers from `handlers`, by command name. */
function fakeClients(handlers: Record<string, (input: Record<string, unknown>) => unknown>, options: { instanceTimeoutMs?: number } = {}) {
  const calls: Call[] = [];
  const client = {
    send: async (command: { input: Record<string, unknown> }, sendOptions?: { abortSignal?: AbortSignal }) => {
      const name = command.constructor.name.replace(/Command$/, "");
      calls.push({ name, input: command.input, signal: sendOptions?.abortSignal });
      if (sendOptions?.abortSignal?.aborted) throw Object.assign(new Error("Request aborted"), { name: "AbortError" });
      const handler = handlers[name] ?? (name === "DescribeImages" ? () => ({ Images: [{ ImageId: "ami-12345678", State: "available" }] }) : undefined);
      if (!handler) throw new Error(`unexpected call ${name}`);
      return handler(command.input);
    },
  };
  const clients = {
    options: { region: "us-east-1", endpoint: "http://127.0.0.1:1", loadBalancingEndpoint: undefined, credentials: undefined, maxAttempts: 1, pollIntervalMs: 10, instanceTimeoutMs: options.instanceTimeoutMs ?? 5_000 },
    ec2: async () => ({ sdk: ec2Sdk, client }),
    loadBalancing: async () => {
      throw new Error("no ELB here");
    },
  } as unknown as AwsClients;
  return { clients, calls, count: (name: string) => calls.filter((call) => call.name === name).length };
}

/** What RunInstances/DescribeInstances return for one instance. */
function ec2Instance(id: string, state: string, extra: Partial<ec2Sdk.Instance> = {}): ec2Sdk.Instance {
  return {
    InstanceId: id,
    ImageId: "ami-12345678",
    State: { Name: state as ec2Sdk.InstanceStateName },
    PrivateIpAddress: state === "running" ? "10.0.0.5" : undefined,
    LaunchTime: new Date("2026-01-02T03:04:05Z"),
    Tags: [
      { Key: LABELS.service, Value: "web" },
      { Key: LABELS.environment, Value: "prod" },
      { Key: LABELS.release, Value: "3" },
      { Key: LABELS.ports, Value: "http:8080/tcp" },
      { Key: AWS_TAGS.name, Value: "web-prod-r3-abcdef" },
    ],
    ...extra,
  };
}

describe("instance helpers", () => {
  it("maps every EC2 state", () => {
    expect(["pending", "running", "stopping", "shutting-down", "stopped", "terminated", "rebooting", undefined].map(instanceState)).toEqual([
      "pending",
      "running",
      "stopping",
      "stopping",
      "stopped",
      "terminated",
      "unknown",
      "unknown",
    ]);
  });

  it("launches a release without an instances.aws section with that section's defaults", () => {
    expect(DEFAULT_AWS_INSTANCE_SETTINGS).toEqual({ subnetIds: [], securityGroupIds: [], blockDevices: [], address: "private" });
    expect(runInstancesInput(request(), DEFAULT_AWS_INSTANCE_SETTINGS, { subnetIndex: 0, subnetId: undefined, count: 1 }, "t").InstanceType).toBe("t3.micro");
  });

  it("derives client tokens of 64 ASCII characters from the key, the subnet and what was found", () => {
    const token = launchClientToken("ro-1:launch:1", 0, 0);
    expect(token).toMatch(/^kiln-[0-9a-f]{59}$/);
    expect(token).toHaveLength(64);
    expect(launchClientToken("ro-1:launch:1", 0, 0)).toBe(token);
    const others = [launchClientToken("ro-1:launch:2", 0, 0), launchClientToken("ro-1:launch:1", 1, 0), launchClientToken("ro-1:launch:1", 0, 1), launchClientToken("ro-1:launch:1", 0, 0, 1)];
    expect(new Set([token, ...others]).size).toBe(5);
  });

  it("spreads a launch over the subnets in turn and tops up the short ones", () => {
    expect(planLaunch(5, ["a", "b"], [])).toEqual([
      { subnetIndex: 0, subnetId: "a", count: 3 },
      { subnetIndex: 1, subnetId: "b", count: 2 },
    ]);
    expect(planLaunch(3, [], [])).toEqual([{ subnetIndex: 0, subnetId: undefined, count: 3 }]);
    expect(planLaunch(5, ["a", "b"], [{ subnetId: "a" }, { subnetId: "a" }])).toEqual([
      { subnetIndex: 0, subnetId: "a", count: 1 },
      { subnetIndex: 1, subnetId: "b", count: 2 },
    ]);
    // More than its share found in one subnet: the others get the rest, the counts still add up.
    expect(planLaunch(4, ["a", "b"], [{ subnetId: "a" }, { subnetId: "a" }, { subnetId: "a" }])).toEqual([{ subnetIndex: 1, subnetId: "b", count: 1 }]);
    // Found outside the listed subnets (the list changed): still only the missing ones.
    expect(planLaunch(3, ["a", "b", "c"], [{ subnetId: "z" }])).toEqual([
      { subnetIndex: 0, subnetId: "a", count: 1 },
      { subnetIndex: 1, subnetId: "b", count: 1 },
    ]);
    expect(planLaunch(2, ["a"], [{ subnetId: "a" }, { subnetId: "a" }])).toEqual([]);
    for (let count = 1; count <= 7; count += 1) {
      for (let found = 0; found <= count; found += 1) {
        const plan = planLaunch(count, ["a", "b", "c"], Array.from({ length: found }, (_, index) => ({ subnetId: ["a", "b", "c", "d"][index % 4] })));
        expect(plan.reduce((sum, slice) => sum + slice.count, 0)).toBe(count - found);
      }
    }
  });

  it("escapes wildcards in filter values and cuts lists into chunks", () => {
    expect(filterValue("a*b?c\\d")).toBe("a\\*b\\?c\\\\d");
    expect(chunks([1, 2, 3, 4, 5], 2)).toEqual([[1, 2], [3, 4], [5]]);
  });
});

describe("launch tags", () => {
  it("puts Kiln's labels, Name and the bookkeeping tags beside the release's labels", () => {
    const tags = launchTags(request({ config: { ...request().config, labels: { team: "blue", [LABELS.service]: "spoof" } } }), DEFAULT_AWS_INSTANCE_SETTINGS, "1a2b3c");
    expect(tags).toEqual({
      team: "blue",
      [LABELS.managed]: "true",
      [LABELS.service]: "web",
      [LABELS.environment]: "prod",
      [LABELS.release]: "3",
      [LABELS.rollout]: "ro-1",
      [LABELS.fingerprint]: `sha256:${"a".repeat(64)}`,
      Name: "web.prod.r3.1a2b3c",
      [LABELS.launchKey]: "ro-1:launch:1",
      [LABELS.ports]: "http:8080/tcp",
      [AWS_TAGS.address]: "private",
    });
    // Kiln's own tags are the count the provider reserves.
    expect(Object.keys(tags).length - 1).toBe(AWS_KILN_TAG_COUNT);
  });

  it("refuses labels that are not valid EC2 tags, naming the tag and the rule", () => {
    const bad = (labels: Record<string, string>) => {
      try {
        launchTags(request({ config: { ...request().config, labels } }), DEFAULT_AWS_INSTANCE_SETTINGS, "000000");
      } catch (error) {
        return error as KilnError;
      }
      throw new Error("no error");
    };
    const reserved = bad({ "aws:owner": "me" });
    expect(reserved.code).toBe("INVALID_ARGUMENT");
    expect(reserved.message).toContain('tag "aws:owner"');
    expect(reserved.message).toContain("reserved for AWS");
    expect(bad({ long: "x".repeat(257) }).message).toMatch(/tag "long".*at most 256/);
    const many = bad(Object.fromEntries(Array.from({ length: 41 }, (_, index) => [`label-${index}`, "x"])));
    expect(many.message).toContain("at most 40 labels fit");
  });

  it("checks Kiln's own tag values too", () => {
    const ports = Array.from({ length: 30 }, (_, index) => ({ name: `port-number-${index}`, port: 10_000 + index, protocol: "tcp" as const }));
    expect(() => launchTags(request({ config: { ...request().config, ports } }), DEFAULT_AWS_INSTANCE_SETTINGS, "000000")).toThrow(/tag "dev.kiln.ports"/);
  });
});

describe("runInstancesInput", () => {
  it("launches a t3.micro in the default VPC without settings, tagging instances and volumes", () => {
    const input = runInstancesInput(request(), DEFAULT_AWS_INSTANCE_SETTINGS, { subnetIndex: 0, subnetId: undefined, count: 2 }, launchClientToken("k", 0, 0));
    expect(input).toMatchObject({ ImageId: "ami-12345678", MinCount: 2, MaxCount: 2, InstanceType: "t3.micro" });
    expect(input.ClientToken).toMatch(/^kiln-/);
    for (const absent of ["SubnetId", "SecurityGroupIds", "IamInstanceProfile", "KeyName", "UserData", "BlockDeviceMappings", "LaunchTemplate", "InstanceInitiatedShutdownBehavior"]) {
      expect(input, absent).not.toHaveProperty(absent);
    }
    expect(input.TagSpecifications?.map((spec) => spec.ResourceType)).toEqual(["instance", "volume"]);
    const tags = Object.fromEntries(input.TagSpecifications![0]!.Tags!.map((tag) => [tag.Key, tag.Value]));
    expect(tags.Name).toBe(`web.prod.r3.${input.ClientToken!.slice(-6)}`);
    expect(input.TagSpecifications![1]!.Tags).toEqual(input.TagSpecifications![0]!.Tags);
  });

  it("passes every setting of instances.aws", () => {
    const settings: AwsInstanceSettings = {
      instanceType: "m6i.large",
      subnetIds: ["subnet-a", "subnet-b"],
      securityGroupIds: ["sg-1", "sg-2"],
      iamInstanceProfile: "arn:aws:iam::123456789012:instance-profile/app",
      keyName: "ops",
      userData: "#!/bin/sh\necho héllo\n",
      blockDevices: [{ deviceName: "/dev/xvda", volumeSizeGiB: 20, volumeType: "gp3", encrypted: true, deleteOnTermination: true }, { deviceName: "/dev/xvdb", deleteOnTermination: false }],
      launchTemplate: { name: "base", version: "$Latest" },
      address: "public",
    };
    const input = runInstancesInput(request({ config: { ...request().config, providerSettings: settings } }), settings, { subnetIndex: 1, subnetId: "subnet-b", count: 1 }, "kiln-token");
    expect(input).toMatchObject({
      InstanceType: "m6i.large",
      SubnetId: "subnet-b",
      SecurityGroupIds: ["sg-1", "sg-2"],
      IamInstanceProfile: { Arn: settings.iamInstanceProfile },
      KeyName: "ops",
      UserData: Buffer.from(settings.userData!).toString("base64"),
      BlockDeviceMappings: [
        { DeviceName: "/dev/xvda", Ebs: { VolumeSize: 20, VolumeType: "gp3", Encrypted: true, DeleteOnTermination: true } },
        { DeviceName: "/dev/xvdb", Ebs: { DeleteOnTermination: false } },
      ],
      LaunchTemplate: { LaunchTemplateName: "base", Version: "$Latest" },
      ImageId: "ami-12345678",
    });
    expect(input.BlockDeviceMappings![1]!.Ebs).toEqual({ DeleteOnTermination: false });
    const byName = runInstancesInput(request(), { ...settings, iamInstanceProfile: "app", launchTemplate: { id: "lt-1", version: "3" } }, { subnetIndex: 0, subnetId: "subnet-a", count: 1 }, "t");
    expect(byName.IamInstanceProfile).toEqual({ Name: "app" });
    expect(byName.LaunchTemplate).toEqual({ LaunchTemplateId: "lt-1", Version: "3" });
  });
});

describe("instanceFromEc2", () => {
  it("maps tags, state, endpoints and times", () => {
    const instance = instanceFromEc2(ec2Instance("i-0123456789abcdef0", "running", { Tags: [...ec2Instance("x", "running").Tags!, { Key: LABELS.rollout, Value: "ro-1" }] }));
    expect(instance).toMatchObject({
      id: "i-0123456789abcdef0",
      name: "web-prod-r3-abcdef-bcdef0",
      target: { service: "web", environment: "prod" },
      release: 3,
      rolloutId: "ro-1",
      imageId: "ami-12345678",
      state: "running",
      restartCount: 0,
      endpoints: { http: { host: "10.0.0.5", port: 8080 } },
      createdAt: "2026-01-02T03:04:05.000Z",
    });
    expect(instance.labels[LABELS.ports]).toBe("http:8080/tcp");
  });

  it("uses the public IP when the address tag says so, and has no endpoint without an address", () => {
    const tags = [...ec2Instance("x", "running").Tags!, { Key: AWS_TAGS.address, Value: "public" }];
    expect(instanceFromEc2(ec2Instance("i-1", "running", { Tags: tags, PublicIpAddress: "54.1.2.3" })).endpoints).toEqual({ http: { host: "54.1.2.3", port: 8080 } });
    expect(instanceFromEc2(ec2Instance("i-1", "running", { Tags: tags })).endpoints).toEqual({});
    expect(instanceFromEc2(ec2Instance("i-2", "pending")).endpoints).toEqual({});
    const untagged = instanceFromEc2({ InstanceId: "i-3", State: { Name: "stopped" } });
    expect(untagged).toMatchObject({ name: "i-3", release: undefined, rolloutId: undefined, state: "stopped" });
  });
});

describe("launch (scripted EC2)", () => {
  it("refuses a count below 1 and an aborted signal before any call", async () => {
    const { clients, calls } = fakeClients({});
    const operations = createInstanceOperations(clients);
    await expect(operations.launch(request({ count: 0 }), ctx())).rejects.toMatchObject({ code: "INVALID_ARGUMENT" });
    const controller = new AbortController();
    controller.abort();
    await expect(operations.launch(request(), ctx(controller.signal))).rejects.toMatchObject({ code: "ABORTED" });
    await expect(operations.list({ target: request().target }, ctx(controller.signal))).rejects.toMatchObject({ code: "ABORTED" });
    await expect(operations.terminate([instanceFromEc2(ec2Instance("i-1", "running"))], { gracePeriodMs: 0 }, ctx(controller.signal))).rejects.toMatchObject({ code: "ABORTED" });
    expect(calls).toEqual([]);
  });

  it("waits with one DescribeInstances per poll for the whole batch, then returns running instances", async () => {
    let polls = 0;
    const { clients, calls, count } = fakeClients({
      DescribeInstances: (input) => {
        const filters = input.Filters as Array<{ Name: string; Values: string[] }>;
        const byId = filters.find((filter) => filter.Name === "instance-id");
        if (!byId) return { Reservations: [] };
        polls += 1;
        return { Reservations: [{ Instances: byId.Values.map((id) => ec2Instance(id, polls < 3 ? "pending" : "running")) }] };
      },
      RunInstances: (input) => ({ Instances: Array.from({ length: input.MinCount as number }, (_, index) => ec2Instance(`i-${index}`, "pending")) }),
    });
    const launched = await createInstanceOperations(clients).launch(request({ count: 3 }), ctx());
    expect(launched.map((instance) => instance.state)).toEqual(["running", "running", "running"]);
    expect(count("RunInstances")).toBe(1);
    // One lookup by the launch tag, then one describe per poll for all three.
    expect(count("DescribeInstances")).toBe(1 + 3);
    const lookup = calls[0]!.input.Filters as Array<{ Name: string; Values: string[] }>;
    expect(lookup).toContainEqual({ Name: `tag:${LABELS.launchKey}`, Values: ["ro-1:launch:1"] });
    expect(calls.every((call) => call.signal !== undefined)).toBe(true);
  });

  it("starts only the missing instances when the key's launch was partly done", async () => {
    const { clients, calls } = fakeClients({
      DescribeInstances: (input) => {
        const filters = input.Filters as Array<{ Name: string; Values: string[] }>;
        const byId = filters.find((filter) => filter.Name === "instance-id");
        if (!byId) return { Reservations: [{ Instances: [ec2Instance("i-old", "running", { SubnetId: "subnet-a" })] }] };
        return { Reservations: [{ Instances: byId.Values.map((id) => ec2Instance(id, "running")) }] };
      },
      RunInstances: (input) => ({ Instances: Array.from({ length: input.MinCount as number }, (_, index) => ec2Instance(`i-new-${String(input.SubnetId)}-${index}`, "pending")) }),
    });
    const settings = { ...DEFAULT_AWS_INSTANCE_SETTINGS, subnetIds: ["subnet-a", "subnet-b"] };
    const launched = await createInstanceOperations(clients).launch(request({ count: 3, config: { ...request().config, providerSettings: settings } }), ctx());
    expect(launched.map((instance) => instance.id).sort()).toEqual(["i-new-subnet-a-0", "i-new-subnet-b-0", "i-old"]);
    const runs = calls.filter((call) => call.name === "RunInstances").map((call) => call.input);
    expect(runs.map((input) => [input.SubnetId, input.MinCount, input.ClientToken])).toEqual([
      ["subnet-a", 1, launchClientToken("ro-1:launch:1", 0, 1)],
      ["subnet-b", 1, launchClientToken("ro-1:launch:1", 1, 1)],
    ]);
  });

  it("starts an instance of the launch found stopped", async () => {
    let started = false;
    const { clients, calls } = fakeClients({
      DescribeInstances: (input) => {
        const byId = (input.Filters as Array<{ Name: string; Values: string[] }>).some((filter) => filter.Name === "instance-id");
        return { Reservations: [{ Instances: [ec2Instance("i-stopped", byId && started ? "running" : "stopped")] }] };
      },
      StartInstances: () => {
        started = true;
        return {};
      },
    });
    const [instance] = await createInstanceOperations(clients).launch(request({ count: 1 }), ctx());
    expect(instance!.state).toBe("running");
    expect(calls.filter((call) => call.name === "StartInstances").map((call) => call.input)).toEqual([{ InstanceIds: ["i-stopped"] }]);
    expect(calls.some((call) => call.name === "RunInstances")).toBe(false);
  });

  it("fails with LAUNCH_FAILED and EC2's reason when an instance dies while starting", async () => {
    const { clients } = fakeClients({
      DescribeInstances: (input) => {
        const byId = (input.Filters as Array<{ Name: string; Values: string[] }>).find((filter) => filter.Name === "instance-id");
        if (!byId) return { Reservations: [] };
        return {
          Reservations: [
            {
              Instances: [
                ec2Instance("i-0", "running"),
                ec2Instance("i-1", "terminated", { StateReason: { Code: "Server.InsufficientInstanceCapacity", Message: "Server.InsufficientInstanceCapacity: Insufficient capacity." } }),
              ],
            },
          ],
        };
      },
      RunInstances: () => ({ Instances: [ec2Instance("i-0", "pending"), ec2Instance("i-1", "pending")] }),
    });
    const error: unknown = await createInstanceOperations(clients)
      .launch(request(), ctx())
      .catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(KilnError);
    expect(error).toMatchObject({ code: "LAUNCH_FAILED", details: { instanceId: "i-1", stateReason: "Server.InsufficientInstanceCapacity" } });
    expect((error as KilnError).message).toContain("Insufficient capacity");
  });

  it("refuses to launch from an AMI that is gone or not available, before RunInstances", async () => {
    for (const [images, expected] of [
      [() => ({ Images: [] }), "does not exist"],
      [() => ({ Images: [{ ImageId: "ami-12345678", State: "pending" }] }), "is pending, not available"],
      [
        () => {
          throw awsFailure("InvalidAMIID.NotFound");
        },
        "does not exist",
      ],
    ] as const) {
      const { clients, count } = fakeClients({ DescribeInstances: () => ({ Reservations: [] }), DescribeImages: images });
      await expect(createInstanceOperations(clients).launch(request(), ctx())).rejects.toMatchObject({
        code: "LAUNCH_FAILED",
        message: expect.stringContaining(`AMI ami-12345678 ${expected}`) as string,
        details: { imageId: "ami-12345678" },
      });
      expect(count("RunInstances")).toBe(0);
    }
  });

  it("maps RunInstances errors to LAUNCH_FAILED with AWS's code", async () => {
    const { clients } = fakeClients({
      DescribeInstances: () => ({ Reservations: [] }),
      RunInstances: () => {
        throw awsFailure("InvalidAMIID.NotFound", "The image id '[ami-12345678]' does not exist");
      },
    });
    await expect(createInstanceOperations(clients).launch(request(), ctx())).rejects.toMatchObject({
      code: "LAUNCH_FAILED",
      message: expect.stringContaining("InvalidAMIID.NotFound") as string,
    });
  });

  it("times out with TIMEOUT when instances stay pending", async () => {
    const { clients } = fakeClients(
      {
        DescribeInstances: (input) => {
          const byId = (input.Filters as Array<{ Name: string; Values: string[] }>).find((filter) => filter.Name === "instance-id");
          return { Reservations: byId ? [{ Instances: byId.Values.map((id) => ec2Instance(id, "pending")) }] : [] };
        },
        RunInstances: () => ({ Instances: [ec2Instance("i-0", "pending")] }),
      },
      { instanceTimeoutMs: 100 },
    );
    await expect(createInstanceOperations(clients).launch(request({ count: 1 }), ctx())).rejects.toMatchObject({
      code: "TIMEOUT",
      message: expect.stringContaining("i-0 is pending") as string,
    });
  });

  it("stops waiting with ABORTED when the signal fires", async () => {
    const { clients } = fakeClients({
      DescribeInstances: (input) => {
        const byId = (input.Filters as Array<{ Name: string; Values: string[] }>).find((filter) => filter.Name === "instance-id");
        return { Reservations: byId ? [{ Instances: byId.Values.map((id) => ec2Instance(id, "pending")) }] : [] };
      },
      RunInstances: () => ({ Instances: [ec2Instance("i-0", "pending")] }),
    });
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 50);
    await expect(createInstanceOperations(clients).launch(request({ count: 1 }), ctx(controller.signal))).rejects.toMatchObject({ code: "ABORTED" });
  });

  it("launches with the next token when EC2 replays an old launch whose instances are gone", async () => {
    const { clients, calls } = fakeClients({
      DescribeInstances: (input) => {
        const byId = (input.Filters as Array<{ Name: string; Values: string[] }>).find((filter) => filter.Name === "instance-id");
        return { Reservations: byId ? [{ Instances: byId.Values.map((id) => ec2Instance(id, "running")) }] : [] };
      },
      RunInstances: (input) =>
        input.ClientToken === launchClientToken("ro-1:launch:1", 0, 0) ? { Instances: [ec2Instance("i-dead", "terminated")] } : { Instances: [ec2Instance("i-fresh", "pending")] },
    });
    const launched = await createInstanceOperations(clients).launch(request({ count: 1 }), ctx());
    expect(launched.map((instance) => instance.id)).toEqual(["i-fresh"]);
    expect(calls.filter((call) => call.name === "RunInstances").map((call) => call.input.ClientToken)).toEqual([
      launchClientToken("ro-1:launch:1", 0, 0),
      launchClientToken("ro-1:launch:1", 0, 0, 1),
    ]);
  });
});

describe("list and terminate (scripted EC2)", () => {
  it("lists in one call, filtered by tags and live states, without bake builders", async () => {
    const { clients, calls } = fakeClients({
      DescribeInstances: () => ({
        Reservations: [{ Instances: [ec2Instance("i-b", "running"), ec2Instance("i-builder", "running", { Tags: [{ Key: AWS_TAGS.role, Value: "builder" }] })] }, { Instances: [ec2Instance("i-a", "stopping")] }],
      }),
    });
    const listed = await createInstanceOperations(clients).list({ target: { service: "web", environment: "prod" }, release: 3, rolloutId: "ro-*" }, ctx());
    expect(listed.map((instance) => instance.id)).toEqual(["i-a", "i-b"]);
    expect(calls).toHaveLength(1);
    expect(calls[0]!.input.Filters).toEqual([
      { Name: `tag:${LABELS.managed}`, Values: ["true"] },
      { Name: `tag:${LABELS.service}`, Values: ["web"] },
      { Name: `tag:${LABELS.environment}`, Values: ["prod"] },
      { Name: `tag:${LABELS.release}`, Values: ["3"] },
      { Name: `tag:${LABELS.rollout}`, Values: ["ro-\\*"] },
      { Name: "instance-state-name", Values: ["pending", "running", "stopping", "stopped", "shutting-down"] },
    ]);
  });

  it("follows NextToken", async () => {
    const { clients, count } = fakeClients({
      DescribeInstances: (input) => (input.NextToken ? { Reservations: [{ Instances: [ec2Instance("i-2", "running")] }] } : { Reservations: [{ Instances: [ec2Instance("i-1", "running")] }], NextToken: "page-2" }),
    });
    expect((await createInstanceOperations(clients).list({ target: { service: "web", environment: "prod" } }, ctx())).map((instance) => instance.id)).toEqual(["i-1", "i-2"]);
    expect(count("DescribeInstances")).toBe(2);
  });

  it("terminates without the ids EC2 no longer knows, then waits for terminated", async () => {
    const known = new Map([
      ["i-1", "running"],
      ["i-2", "running"],
    ]);
    const { clients, calls } = fakeClients({
      TerminateInstances: (input) => {
        const ids = input.InstanceIds as string[];
        const missing = ids.filter((id) => !known.has(id));
        if (missing.length > 0) throw awsFailure("InvalidInstanceID.NotFound", `The instance IDs '${missing.join(", ")}' do not exist`);
        for (const id of ids) known.set(id, "shutting-down");
        return {};
      },
      DescribeInstances: (input) => {
        const ids = (input.Filters as Array<{ Name: string; Values: string[] }>)[0]!.Values;
        const instances = ids.filter((id) => known.has(id)).map((id) => ec2Instance(id, known.get(id)!));
        for (const [id, state] of known) if (state === "shutting-down") known.set(id, "terminated");
        return { Reservations: [{ Instances: instances }] };
      },
    });
    const instances = ["i-1", "i-gone", "i-2"].map((id) => instanceFromEc2(ec2Instance(id, "running")));
    await createInstanceOperations(clients).terminate(instances, { gracePeriodMs: 30_000 }, ctx());
    expect(calls.filter((call) => call.name === "TerminateInstances").map((call) => call.input.InstanceIds)).toEqual([
      ["i-1", "i-gone", "i-2"],
      ["i-1", "i-2"],
    ]);
    expect([...known.values()]).toEqual(["terminated", "terminated"]);
  });

  it("maps other TerminateInstances errors to TERMINATE_FAILED", async () => {
    const { clients } = fakeClients({
      TerminateInstances: () => {
        throw awsFailure("OperationNotPermitted", "The instance 'i-1' may not be terminated. Modify its 'disableApiTermination' instance attribute and try again.");
      },
    });
    await expect(createInstanceOperations(clients).terminate([instanceFromEc2(ec2Instance("i-1", "running"))], { gracePeriodMs: 0 }, ctx())).rejects.toMatchObject({
      code: "TERMINATE_FAILED",
      message: expect.stringContaining("OperationNotPermitted") as string,
    });
  });
});
