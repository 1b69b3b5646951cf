// The aws provider's bake and image removal against moto (the EC2 emulator), through the real SDK
// client: a failed provisioning, a name conflict, the bake deadline, and removing an AMI with its
// snapshots. moto runs no user data: the builder player plays the builder's last step.
import { randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { CreateImageCommand, DeregisterImageCommand, DescribeImagesCommand, DescribeSnapshotsCommand, RunInstancesCommand, TerminateInstancesCommand } from "@aws-sdk/client-ec2";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LABELS, silentLogger, type ImageRecipe, type ProviderContext, type ProviderProgress } from "@kilnjs/core";
import { motoEndpoint, requireMoto } from "@kilnjs/testkit";
import { AwsClients } from "./client.js";
import type { AwsBaseImage, AwsBuilderSettings } from "./spec.js";
import { amiNameOf, createImageOperations } from "./images.js";
import { resolveAwsOptions } from "./options.js";
import { AWS_TAGS } from "./tags.js";
import { MOTO_REGION, liveInstances, motoBaseImage, motoClient, playBuilders, removeService, serviceImages } from "./test-support.js";

const moto = await requireMoto();

describe.skipIf(!moto)("aws image operations (moto)", () => {
  const endpoint = motoEndpoint();
  const ec2 = motoClient(endpoint);
  const service = `kimg-${randomBytes(3).toString("hex")}`;
  const clients = new AwsClients(resolveAwsOptions({ endpoint, region: MOTO_REGION, credentials: { accessKeyId: "testing", secretAccessKey: "testing" }, pollIntervalMs: 20 }));
  const images = createImageOperations(clients);
  let dir: string;
  let baseImageId: string;

  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "kiln-aws-images-"));
    await writeFile(path.join(dir, "app.txt"), "app\n");
    baseImageId = (await motoBaseImage(ec2)).id;
  });

  afterAll(async () => {
    await removeService(ec2, service);
    await clients.close();
    ec2.destroy();
    await rm(dir, { recursive: true, force: true });
  });

  function recipe(timeoutMs = 60_000): ImageRecipe {
    return {
      target: { service, environment: "test" },
      fingerprint: `sha256:${randomBytes(32).toString("hex")}`,
      rolloutId: `ro-${randomBytes(3).toString("hex")}`,
      release: 1,
      machine: {
        kind: "machine",
        steps: [{ kind: "file", from: path.join(dir, "app.txt"), to: "/opt/app.txt", directory: false, files: [""] }],
        // The recipe carries the aws provider's own sections: image.machine.base.aws and builder.aws.
        base: { id: baseImageId } satisfies AwsBaseImage,
        builder: { instanceType: "t3.micro", securityGroupIds: [], amiName: "kiln-{service}-{fingerprint}" } satisfies AwsBuilderSettings,
        timeoutMs,
      },
    };
  }

  function ctx(progress: ProviderProgress[] = []): ProviderContext {
    return { signal: new AbortController().signal, logger: silentLogger, emit: (event) => progress.push(event) };
  }

  const builders = () => liveInstances(ec2, { [LABELS.service]: service, [AWS_TAGS.role]: "builder" });

  it("fails a bake whose provisioning reports a non-zero status, with the status, and removes the builder", async () => {
    const player = playBuilders(ec2, { owns: (name) => name === service, exitStatus: 3 });
    try {
      const wanted = recipe();
      await expect(images.build(wanted, ctx())).rejects.toMatchObject({ code: "BUILD_FAILED", message: expect.stringContaining("exit status 3") as unknown });
      expect(player.finished).toHaveLength(1);
      expect(await builders()).toEqual([]);
      expect(await images.find({ service, fingerprint: wanted.fingerprint }, ctx())).toBeUndefined();
    } finally {
      await player.stop();
    }
  });

  it("fails with TIMEOUT when the builder never powers off within image.machine.timeoutMs, and removes it", async () => {
    // No player: the builder keeps running, as one whose script hangs would.
    await expect(images.build(recipe(1_500), ctx())).rejects.toMatchObject({ code: "TIMEOUT", message: expect.stringContaining("image.machine.timeoutMs") as unknown });
    expect(await builders()).toEqual([]);
  });

  it("refuses a recipe whose AMI name is taken by another image before any builder starts, naming that image", async () => {
    const wanted = recipe();
    const name = amiNameOf(wanted, (wanted.machine!.builder as AwsBuilderSettings).amiName);
    const squatter = await ec2.send(new RunInstancesCommand({ ImageId: baseImageId, MinCount: 1, MaxCount: 1, InstanceType: "t3.micro" }));
    const squatterId = squatter.Instances![0]!.InstanceId!;
    const taken = await ec2.send(new CreateImageCommand({ InstanceId: squatterId, Name: name, TagSpecifications: [{ ResourceType: "image", Tags: [{ Key: LABELS.service, Value: service }] }] }));
    await ec2.send(new TerminateInstancesCommand({ InstanceIds: [squatterId] }));
    const error: unknown = await images.build(wanted, ctx()).catch((thrown: unknown) => thrown);
    expect(error).toMatchObject({ code: "BUILD_FAILED", message: expect.stringContaining(taken.ImageId!) as unknown });
    expect(await builders()).toEqual([]);
  });

  it("bakes, tags the AMI and its snapshots, finds it, and removes it with its snapshots", async () => {
    const player = playBuilders(ec2, { owns: (name) => name === service });
    const progress: ProviderProgress[] = [];
    const wanted = recipe();
    try {
      const built = await images.build(wanted, ctx(progress));
      expect(built.fingerprint).toBe(wanted.fingerprint);
      expect(progress.filter((event) => event.type === "image.build.step").map((event) => (event.type === "image.build.step" ? event.step : 0))).toEqual([1, 2, 3, 4, 5]);
      const [ami] = (await ec2.send(new DescribeImagesCommand({ ImageIds: [built.id] }))).Images ?? [];
      const tags = Object.fromEntries((ami?.Tags ?? []).map((tag) => [tag.Key, tag.Value]));
      expect(tags).toMatchObject({ [LABELS.fingerprint]: wanted.fingerprint, [LABELS.service]: service, [LABELS.release]: "1", [LABELS.rollout]: wanted.rolloutId });
      const snapshotIds = (ami?.BlockDeviceMappings ?? []).flatMap((mapping) => (mapping.Ebs?.SnapshotId ? [mapping.Ebs.SnapshotId] : []));
      expect(snapshotIds.length).toBeGreaterThan(0);
      const snapshots = (await ec2.send(new DescribeSnapshotsCommand({ SnapshotIds: snapshotIds }))).Snapshots ?? [];
      expect(snapshots.every((snapshot) => snapshot.Tags?.some((tag) => tag.Key === LABELS.fingerprint && tag.Value === wanted.fingerprint))).toBe(true);
      expect((await images.find({ service, fingerprint: wanted.fingerprint }, ctx()))?.id).toBe(built.id);
      expect(await builders()).toEqual([]);

      await images.remove(built, ctx());
      expect((await serviceImages(ec2, service)).map((image) => image.id)).not.toContain(built.id);
      const left = await ec2.send(new DescribeSnapshotsCommand({ Filters: [{ Name: "snapshot-id", Values: snapshotIds }] }));
      expect(left.Snapshots ?? []).toEqual([]);
      // Removing it again is not an error.
      await images.remove(built, ctx());
    } finally {
      await player.stop();
    }
  });

  it("keeps an AMI an instance runs (IMAGE_IN_USE), and finishes a removal that stopped after the deregistration: the snapshots go", async () => {
    const source = await ec2.send(new RunInstancesCommand({ ImageId: baseImageId, MinCount: 1, MaxCount: 1, InstanceType: "t3.micro" }));
    const sourceId = source.Instances![0]!.InstanceId!;
    const fingerprint = `sha256:${randomBytes(32).toString("hex")}`;
    const created = await ec2.send(
      new CreateImageCommand({
        InstanceId: sourceId,
        Name: `kiln-${service}-gc-${randomBytes(3).toString("hex")}`,
        TagSpecifications: [{ ResourceType: "image", Tags: [{ Key: LABELS.service, Value: service }, { Key: LABELS.fingerprint, Value: fingerprint }] }],
      }),
    );
    await ec2.send(new TerminateInstancesCommand({ InstanceIds: [sourceId] }));
    const amiId = created.ImageId!;
    const [ami] = (await ec2.send(new DescribeImagesCommand({ ImageIds: [amiId] }))).Images ?? [];
    const snapshotIds = (ami?.BlockDeviceMappings ?? []).flatMap((mapping) => (mapping.Ebs?.SnapshotId ? [mapping.Ebs.SnapshotId] : []));
    expect(snapshotIds.length).toBeGreaterThan(0);
    const ref = { id: amiId, fingerprint, digest: amiId, names: [] };

    const user = await ec2.send(new RunInstancesCommand({ ImageId: amiId, MinCount: 1, MaxCount: 1, InstanceType: "t3.micro" }));
    const userId = user.Instances![0]!.InstanceId!;
    await expect(images.remove(ref, ctx())).rejects.toMatchObject({ code: "IMAGE_IN_USE", message: expect.stringContaining(userId) as unknown });
    expect((await ec2.send(new DescribeImagesCommand({ ImageIds: [amiId] }))).Images?.[0]?.State).toBe("available");
    expect((await ec2.send(new DescribeSnapshotsCommand({ Filters: [{ Name: "snapshot-id", Values: snapshotIds }] }))).Snapshots ?? []).toHaveLength(snapshotIds.length);
    await ec2.send(new TerminateInstancesCommand({ InstanceIds: [userId] }));

    // A removal killed between the deregistration and the snapshots' deletion, then run again.
    await ec2.send(new DeregisterImageCommand({ ImageId: amiId }));
    await images.remove(ref, ctx());
    expect((await ec2.send(new DescribeSnapshotsCommand({ Filters: [{ Name: "snapshot-id", Values: snapshotIds }] }))).Snapshots ?? []).toEqual([]);
  });
});
