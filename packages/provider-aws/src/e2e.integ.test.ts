// End to end against moto through core: bake an AMI from a spec, deploy 4 instances, change the
// spec, deploy again (4 new instances from the new AMI, the 4 old ones terminated), deploy once
// more unchanged (nothing baked, nothing launched). Then the same rollout through a proxy that
// throttles and fails 20% of the EC2 calls.
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { DescribeInstancesCommand } from "@aws-sdk/client-ec2";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LABELS, createKiln, type KilnEvent, type SpecInput } from "@kilnjs/core";
import { motoEndpoint, requireMoto, startFaultProxy } from "@kilnjs/testkit";
import { createAwsProvider } from "./index.js";
import { liveInstances, motoBaseImage, motoClient, playBuilders, removeService, serviceImages, MOTO_REGION, type BuilderPlayer } from "./test-support.js";

const moto = await requireMoto();

describe.skipIf(!moto)("aws provider end to end (moto)", () => {
  const endpoint = motoEndpoint();
  const client = motoClient(endpoint);
  let dir: string;
  let player: BuilderPlayer;
  let baseImageId: string;
  const services: string[] = [];

  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "kiln-aws-e2e-"));
    await mkdir(path.join(dir, "dist"));
    baseImageId = (await motoBaseImage(client)).id;
    // moto runs no user data: this plays the builder's part (tag the result, power off).
    player = playBuilders(client, { owns: (name) => services.includes(name) });
  });

  afterAll(async () => {
    await player.stop();
    for (const service of services) await removeService(client, service);
    client.destroy();
    await rm(dir, { recursive: true, force: true });
  });

  function specFor(service: string): SpecInput {
    return {
      service,
      provider: "aws",
      image: { machine: { provision: [{ file: { from: "dist", to: "/opt/app" } }, { run: "systemctl enable app" }], base: { aws: { id: baseImageId } }, timeoutMs: 120_000 } },
      instances: { count: 4, ports: [{ name: "http", port: 8080 }], aws: { instanceType: "t3.micro" } },
      health: { intervalMs: 100, healthyThreshold: 1 },
      rollout: { strategy: "rolling", maxSurge: 2, maxUnavailable: 0 },
    };
  }

  async function deployAll(service: string, providerEndpoint: string) {
    const events: KilnEvent[] = [];
    const kiln = createKiln({
      providers: { aws: () => createAwsProvider({ endpoint: providerEndpoint, region: MOTO_REGION, credentials: { accessKeyId: "testing", secretAccessKey: "testing" }, pollIntervalMs: 50 }) },
      dataDir: path.join(dir, `.kiln-${service}`),
      onEvent: (event) => events.push(event),
    });
    const deploy = async () => {
      const start = events.length;
      const result = await kiln.deploy({ spec: specFor(service), baseDir: dir });
      return { result, events: events.slice(start) };
    };
    return { kiln, deploy };
  }

  const count = (events: readonly KilnEvent[], type: KilnEvent["type"]) => events.filter((event) => event.type === type).length;

  it("bakes, deploys 4, replaces all 4 from a new AMI, and then does nothing for an unchanged spec", async () => {
    const service = `e2e-${Date.now().toString(36)}`;
    services.push(service);
    await writeFile(path.join(dir, "dist", "server.js"), "console.log('v1')\n");
    const { kiln, deploy } = await deployAll(service, endpoint);

    const first = await deploy();
    expect(first.result.outcome).toBe("deployed");
    expect(count(first.events, "image.built")).toBe(1);
    expect(count(first.events, "instance.launched")).toBe(4);
    const firstImages = await serviceImages(client, service);
    expect(firstImages).toHaveLength(1);
    const v1 = await liveInstances(client, { [LABELS.service]: service });
    expect(v1).toHaveLength(4);
    expect(new Set(v1.map((instance) => instance.imageId))).toEqual(new Set([firstImages[0]!.id]));
    expect(v1.every((instance) => instance.tags[LABELS.release] === "1" && instance.state === "running")).toBe(true);

    await writeFile(path.join(dir, "dist", "server.js"), "console.log('v2')\n");
    const second = await deploy();
    expect(second.result.outcome).toBe("deployed");
    expect(count(second.events, "image.built")).toBe(1);
    expect(count(second.events, "instance.launched")).toBe(4);
    expect(count(second.events, "instance.retired")).toBe(4);
    const images = await serviceImages(client, service);
    expect(images).toHaveLength(2);
    const newImage = images.find((image) => image.id !== firstImages[0]!.id)!;
    const v2 = await liveInstances(client, { [LABELS.service]: service });
    expect(v2).toHaveLength(4);
    expect(v2.every((instance) => instance.imageId === newImage.id && instance.tags[LABELS.release] === "2")).toBe(true);
    expect(v2.some((instance) => v1.some((old) => old.id === instance.id))).toBe(false);
    // No builder is left running or stopped.
    expect(await liveInstances(client, { "dev.kiln.role": "builder" })).toEqual([]);

    const third = await deploy();
    expect(third.result.outcome).toBe("unchanged");
    expect(count(third.events, "image.build.started")).toBe(0);
    expect(count(third.events, "instance.launched")).toBe(0);
    expect((await liveInstances(client, { [LABELS.service]: service })).map((instance) => instance.id).sort()).toEqual(v2.map((instance) => instance.id).sort());

    const history = await kiln.history({ target: `${service}@default` });
    expect(history.releases.map((release) => [release.number, release.status, release.image.id])).toEqual([
      [2, "succeeded", newImage.id],
      [1, "succeeded", firstImages[0]!.id],
    ]);
  });

  it("a rollout into a target group that does not exist fails and leaves no instance running", async () => {
    const service = `tg-${Date.now().toString(36)}`;
    services.push(service);
    await writeFile(path.join(dir, "dist", "server.js"), "console.log('tg')\n");
    const kiln = createKiln({
      providers: { aws: () => createAwsProvider({ endpoint, region: MOTO_REGION, credentials: { accessKeyId: "testing", secretAccessKey: "testing" }, pollIntervalMs: 50 }) },
      dataDir: path.join(dir, `.kiln-${service}`),
    });
    const spec = { ...specFor(service), traffic: { loadBalancer: { aws: { targetGroupArn: "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/nope/0123456789abcdef" } } } };
    await expect(kiln.deploy({ spec, baseDir: dir })).rejects.toMatchObject({ code: "ROLLOUT_FAILED", message: expect.stringContaining("TargetGroupNotFound") as unknown });
    const left = (await liveInstances(client, { [LABELS.service]: service })).filter((instance) => instance.tags["dev.kiln.role"] !== "builder");
    expect(left).toEqual([]);
  });

  it("launches once when the answer to RunInstances is lost after moto made the instances (the SDK retries with the same client token)", async () => {
    const service = `token-${Date.now().toString(36)}`;
    services.push(service);
    await writeFile(path.join(dir, "dist", "server.js"), "console.log('token')\n");
    let lost = 0;
    const proxy = await startFaultProxy({
      upstream: endpoint,
      decide: (call) => (call.action === "RunInstances" && lost++ < 2 ? { kind: "unavailable", phase: "after" } : undefined),
    });
    try {
      const { deploy } = await deployAll(service, proxy.url);
      expect((await deploy()).result.outcome).toBe("deployed");
      expect(proxy.counts.faultsAfter.RunInstances).toBe(2);
      const all = await client.send(new DescribeInstancesCommand({ Filters: [{ Name: `tag:${LABELS.service}`, Values: [service] }] }));
      const ever = (all.Reservations ?? []).flatMap((reservation) => reservation.Instances ?? []);
      // One builder and 4 instances: the two lost answers made nothing twice.
      expect(ever).toHaveLength(5);
    } finally {
      await proxy.close();
    }
  });

  it("completes with exactly the expected instances when 20% of EC2 calls are throttled or fail with 503", async () => {
    const service = `faults-${Date.now().toString(36)}`;
    services.push(service);
    await writeFile(path.join(dir, "dist", "server.js"), "console.log('faults v1')\n");
    const proxy = await startFaultProxy({ upstream: endpoint, faultRate: 0.2, seed: 42, phase: "mixed" });
    try {
      const { deploy } = await deployAll(service, proxy.url);
      expect((await deploy()).result.outcome).toBe("deployed");
      await writeFile(path.join(dir, "dist", "server.js"), "console.log('faults v2')\n");
      expect((await deploy()).result.outcome).toBe("deployed");
      const live = await liveInstances(client, { [LABELS.service]: service });
      expect(live).toHaveLength(4);
      expect(live.every((instance) => instance.tags[LABELS.release] === "2")).toBe(true);
      // Every instance ever launched for the service, terminated ones included: one builder per
      // bake and 4 instances per release, never a duplicate.
      const all = await client.send(new DescribeInstancesCommand({ Filters: [{ Name: `tag:${LABELS.service}`, Values: [service] }] }));
      const ever = (all.Reservations ?? []).flatMap((reservation) => reservation.Instances ?? []);
      const builders = ever.filter((instance) => instance.Tags?.some((tag) => tag.Key === "dev.kiln.role" && tag.Value === "builder"));
      expect(builders).toHaveLength(2);
      expect(ever.length - builders.length).toBe(8);
      expect(await serviceImages(client, service)).toHaveLength(2);
      const injected = Object.values(proxy.counts.faults).reduce((sum, value) => sum + value, 0);
      expect(injected).toBeGreaterThan(5);
    } finally {
      await proxy.close();
    }
  });
});
