/**
 * Test helpers for the aws provider against moto (the EC2 emulator). Not part of the package's
 * API: only tests import this file.
 * @module
 */
import { EC2Client, CreateTagsCommand, DeregisterImageCommand, DescribeImagesCommand, DescribeInstancesCommand, StopInstancesCommand, TerminateInstancesCommand } from "@aws-sdk/client-ec2";
import { LABELS, sleep, type Instance } from "@kilnjs/core";
import { AWS_TAGS, BUILDER_ROLE } from "./tags.js";

/** Region and fake credentials moto accepts; the endpoint is `AWS_ENDPOINT_URL_EC2` (testkit's motoEndpoint). */
export const MOTO_REGION = "us-east-1";

/** Environment for a process (the CLI) that talks to moto. */
export function motoEnvironment(endpoint: string): Record<string, string> {
  return {
    AWS_ENDPOINT_URL_EC2: endpoint,
    AWS_ENDPOINT_URL_ELASTIC_LOAD_BALANCING_V2: endpoint,
    AWS_ENDPOINT_URL_SECRETS_MANAGER: endpoint,
    AWS_ENDPOINT_URL_SSM: endpoint,
    AWS_REGION: MOTO_REGION,
    AWS_ACCESS_KEY_ID: "testing",
    AWS_SECRET_ACCESS_KEY: "testing",
    KILN_AWS_POLL_INTERVAL_MS: "50",
    // The SDK warns on every process that Node 20 support ends in 2027; tests read stderr.
    AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: "true",
  };
}

/** An EC2 client on moto. */
export function motoClient(endpoint: string): EC2Client {
  return new EC2Client({ endpoint, region: MOTO_REGION, credentials: { accessKeyId: "testing", secretAccessKey: "testing" } });
}

/** A Linux base AMI moto ships (Amazon Linux 2), by id. */
export async function motoBaseImage(client: EC2Client): Promise<{ id: string; name: string }> {
  const page = await client.send(new DescribeImagesCommand({ Owners: ["amazon"], Filters: [{ Name: "name", Values: ["amzn2-ami-hvm-*"] }] }));
  const image = page.Images?.find((candidate) => candidate.ImageId && candidate.Name);
  if (!image) throw new Error("moto ships no amzn2-ami-hvm-* AMI; pick another base image for the tests");
  return { id: image.ImageId!, name: image.Name! };
}

/** What {@link playBuilders} did. */
export interface BuilderPlayer {
  /** Builder instance ids it finished, in order. */
  readonly finished: string[];
  /** Stops playing and waits for the loop to end. */
  stop(): Promise<void>;
}

/**
 * Plays the part of the bake's builder instance, which moto cannot: moto runs no user data, so no
 * provisioning script ever tags the builder and powers it off. For every running builder (tag
 * `dev.kiln.role=builder`) it does through the EC2 API what the script does at its end: it sets the
 * `dev.kiln.provision-status` tag (to `exitStatus`) and stops the instance.
 *
 * @param options.owns - which services' builders it plays (by their `dev.kiln.service` tag), so that
 *   suites of two checkouts sharing one moto never finish each other's bakes @defaultValue every service
 * @param options.exitStatus - the provisioning exit status to report (0 = success) @defaultValue 0
 * @param options.intervalMs - pacing of its DescribeInstances loop (milliseconds) @defaultValue 50
 */
export function playBuilders(client: EC2Client, options: { owns?: (service: string) => boolean; exitStatus?: number; intervalMs?: number } = {}): BuilderPlayer {
  const finished: string[] = [];
  const controller = new AbortController();
  const loop = (async () => {
    while (!controller.signal.aborted) {
      try {
        const page = await client.send(
          new DescribeInstancesCommand({ Filters: [{ Name: `tag:${AWS_TAGS.role}`, Values: [BUILDER_ROLE] }, { Name: "instance-state-name", Values: ["running"] }] }),
        );
        for (const instance of (page.Reservations ?? []).flatMap((reservation) => reservation.Instances ?? [])) {
          const id = instance.InstanceId!;
          if (finished.includes(id)) continue;
          const service = instance.Tags?.find((tag) => tag.Key === LABELS.service)?.Value ?? "";
          if (options.owns && !options.owns(service)) continue;
          await client.send(new CreateTagsCommand({ Resources: [id], Tags: [{ Key: AWS_TAGS.provisionStatus, Value: String(options.exitStatus ?? 0) }] }));
          await client.send(new StopInstancesCommand({ InstanceIds: [id] }));
          finished.push(id);
        }
        await sleep(options.intervalMs ?? 50, controller.signal);
      } catch (error) {
        if (controller.signal.aborted) return;
        // moto restarted or reset under the loop: go on.
        process.stderr.write(`builder player: ${String(error)}\n`);
      }
    }
  })();
  return {
    finished,
    async stop() {
      controller.abort();
      await loop;
    },
  };
}

/** Kiln's live instances of a service in moto (any state but terminated), by their tags. */
export async function liveInstances(client: EC2Client, filters: Record<string, string>): Promise<Array<{ id: string; imageId: string; tags: Record<string, string>; state: string }>> {
  const page = await client.send(
    new DescribeInstancesCommand({
      Filters: [
        ...Object.entries(filters).map(([key, value]) => ({ Name: `tag:${key}`, Values: [value] })),
        { Name: "instance-state-name", Values: ["pending", "running", "stopping", "stopped", "shutting-down"] },
      ],
    }),
  );
  return (page.Reservations ?? [])
    .flatMap((reservation) => reservation.Instances ?? [])
    .map((instance) => ({
      id: instance.InstanceId!,
      imageId: instance.ImageId!,
      state: instance.State?.Name ?? "unknown",
      tags: Object.fromEntries((instance.Tags ?? []).map((tag) => [tag.Key!, tag.Value ?? ""])),
    }));
}

/** Kiln's AMIs of a service in moto. */
export async function serviceImages(client: EC2Client, service: string): Promise<Array<{ id: string; name: string; state: string; tags: Record<string, string> }>> {
  const page = await client.send(new DescribeImagesCommand({ Owners: ["self"], Filters: [{ Name: `tag:${LABELS.service}`, Values: [service] }] }));
  return (page.Images ?? []).map((image) => ({
    id: image.ImageId!,
    name: image.Name ?? "",
    state: image.State ?? "unknown",
    tags: Object.fromEntries((image.Tags ?? []).map((tag) => [tag.Key!, tag.Value ?? ""])),
  }));
}

/** Removes every instance and AMI of a service from moto, bypassing the provider. */
export async function removeService(client: EC2Client, service: string): Promise<void> {
  const instances = await liveInstances(client, { [LABELS.service]: service });
  if (instances.length > 0) await client.send(new TerminateInstancesCommand({ InstanceIds: instances.map((instance) => instance.id) }));
  for (const image of await serviceImages(client, service)) await client.send(new DeregisterImageCommand({ ImageId: image.id }));
}

/** An {@link Instance} of web@prod release 1 for unit tests, with an http endpoint on 127.0.0.1 when `port` is given. */
export function fakeInstance(id: string, port?: number): Instance {
  return {
    id,
    name: `web-prod-r1-${id}`,
    target: { service: "web", environment: "prod" },
    release: 1,
    rolloutId: "ro-1",
    imageId: "ami-1",
    state: "running",
    restartCount: 0,
    endpoints: port === undefined ? {} : { http: { host: "127.0.0.1", port } },
    createdAt: new Date().toISOString(),
    labels: {},
  };
}
