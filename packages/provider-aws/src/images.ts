import { createHash, randomUUID } from "node:crypto";
import type { EC2Client, Image, Instance as Ec2Instance } from "@aws-sdk/client-ec2";
import {
  KilnError,
  LABELS,
  formatTarget,
  imageLabels,
  readSection,
  resourceName,
  shortFingerprint,
  throwIfAborted,
  waitFor,
  type ImageOperations,
  type ImageRecipe,
  type ImageRef,
  type MachineRecipe,
  type ProviderContext,
  type Target,
} from "@kilnjs/core";
import { awsError, awsErrorCode, type AwsClients, type Ec2Module } from "./client.js";
import { FoundBeforeRetry, lookBeforeRetry } from "./instances.js";
import { AWS_TAG_RULES, amiNameProblem, awsProviderSpec, type AwsBaseImage, type AwsBuilderSettings } from "./spec.js";
import { AWS_TAGS, BUILDER_ROLE, fromTags, tagFilter, targetTags, toTags } from "./tags.js";
import { RESULT_MARKER, describeStep, renderProvisionScript } from "./user-data.js";

/** How long cleanup of a bake's builder may take after the bake itself failed or was cancelled (milliseconds). */
const CLEANUP_TIMEOUT_MS = 120_000;
/** Bake steps reported as `image.build.step` events. */
const BAKE_STEPS = 5;

/** The recipe's `image.machine.builder.aws` section, or its defaults. */
function builderSettings(machine: MachineRecipe): AwsBuilderSettings {
  return readSection(awsProviderSpec, "builder", machine.builder);
}

/** The AMI name of a recipe: the spec's template with `{service}` and `{fingerprint}` (12 hex digits) filled in. */
export function amiNameOf(recipe: Pick<ImageRecipe, "target" | "fingerprint">, template: string): string {
  return template.replaceAll("{service}", recipe.target.service).replaceAll("{fingerprint}", shortFingerprint(recipe.fingerprint));
}

/**
 * The image operations of the aws provider: AMIs baked without SSH (see {@link createImageOperations}'s
 * `build`), found by their fingerprint tag, removed with their snapshots.
 */
export function createImageOperations(clients: AwsClients): ImageOperations {
  const endpoint = clients.options.endpoint;

  async function describeImages(client: EC2Client, sdk: Ec2Module, input: ConstructorParameters<Ec2Module["DescribeImagesCommand"]>[0], ctx: ProviderContext): Promise<Image[]> {
    const images: Image[] = [];
    let token: string | undefined;
    do {
      const page = await client.send(new sdk.DescribeImagesCommand({ ...input, ...(token ? { NextToken: token } : {}) }), { abortSignal: ctx.signal });
      images.push(...(page.Images ?? []));
      token = page.NextToken;
    } while (token);
    return images;
  }

  /** Kiln's AMIs of a service (owned by this account), optionally of one fingerprint, in any state. */
  async function imagesOf(service: string, fingerprint: string | undefined, ctx: ProviderContext): Promise<Image[]> {
    const { sdk, client } = await clients.ec2();
    return describeImages(
      client,
      sdk,
      {
        Owners: ["self"],
        Filters: [tagFilter(LABELS.managed, "true"), tagFilter(LABELS.service, service), ...(fingerprint ? [tagFilter(LABELS.fingerprint, fingerprint)] : [])],
      },
      ctx,
    );
  }

  async function find(query: { readonly service: string; readonly fingerprint: string }, ctx: ProviderContext): Promise<ImageRef | undefined> {
    throwIfAborted(ctx.signal);
    try {
      const available = (await imagesOf(query.service, query.fingerprint, ctx)).filter((image) => image.State === "available");
      return newest(available).map(toImageRef)[0];
    } catch (error) {
      throw awsError(error, "PROVIDER_UNAVAILABLE", `Looking up the AMI of ${query.service} ${query.fingerprint.slice(0, 19)}`, endpoint);
    }
  }

  async function build(recipe: ImageRecipe, ctx: ProviderContext): Promise<ImageRef> {
    throwIfAborted(ctx.signal);
    const machine = recipe.machine;
    if (!machine) {
      throw new KilnError("CAPABILITY_MISSING", "The aws provider bakes AMIs from image.machine (provision steps and base.aws); this recipe is a Dockerfile. Add image.machine to the spec.");
    }
    const base = readSection(awsProviderSpec, "base", machine.base);
    if (!base) throw new KilnError("INVALID_ARGUMENT", "image.machine.base.aws is required by the aws provider: the base AMI's id, or a name pattern with owners.");
    const builder = builderSettings(machine);
    const amiName = amiNameOf(recipe, builder.amiName);
    const problem = amiNameProblem(amiName);
    if (problem) throw new KilnError("INVALID_ARGUMENT", `image.machine.builder.aws.amiName: ${problem}`);
    // The whole bake has one deadline; cancelling the operation cancels it too.
    const deadline = AbortSignal.timeout(machine.timeoutMs);
    const bakeCtx: ProviderContext = { ...ctx, signal: AbortSignal.any([ctx.signal, deadline]) };
    const what = `Baking the AMI of ${formatTarget(recipe.target)} (${shortFingerprint(recipe.fingerprint)})`;
    let builderId: string | undefined;
    try {
      const { sdk, client } = await clients.ec2();
      await removeLeftovers(recipe.target, bakeCtx);

      // An AMI of this recipe may exist already (a killed bake got as far as CreateImage, or another
      // environment of the service baked it): use it. The name must be free otherwise.
      const existing = await imagesOf(recipe.target.service, recipe.fingerprint, bakeCtx);
      const reusable = newest(existing.filter((image) => image.State === "available" || image.State === "pending"))[0];
      if (reusable?.ImageId) {
        ctx.emit({ type: "image.build.log", message: `AMI ${reusable.ImageId} (${reusable.Name ?? amiName}) of this recipe exists (${reusable.State}); not baking again` });
        return toImageRef(await waitAvailable(reusable.ImageId, bakeCtx));
      }
      const named = await describeImages(client, sdk, { Owners: ["self"], Filters: [{ Name: "name", Values: [amiName] }] }, bakeCtx);
      if (named[0]) {
        throw new KilnError(
          "BUILD_FAILED",
          `An AMI named "${amiName}" already exists (${named[0].ImageId}, ${named[0].State}) and was not baked from this recipe; deregister it, or change image.machine.builder.aws.amiName.`,
          { details: { amiName, existingImageId: named[0].ImageId } },
        );
      }

      step(ctx, 1, `resolve the base AMI (${describeBase(base)})`);
      const baseImage = await resolveBase(base, bakeCtx);
      ctx.emit({ type: "image.build.log", message: `base AMI ${baseImage.ImageId} (${baseImage.Name ?? "unnamed"}, ${baseImage.CreationDate ?? "date unknown"})` });
      const userData = await renderProvisionScript(machine, { service: recipe.target.service, fingerprint: recipe.fingerprint });
      for (const [index, provisionStep] of machine.steps.entries()) {
        ctx.emit({ type: "image.build.log", message: `provision step ${index + 1}/${machine.steps.length}: ${describeStep(provisionStep)}` });
      }

      step(ctx, 2, `launch the builder (${builder.instanceType}, ${userData.bytes} bytes of user data)`);
      builderId = await launchBuilder(recipe, machine, baseImage.ImageId!, userData.script, bakeCtx);
      ctx.emit({ type: "image.build.log", message: `builder ${builderId} started; the steps run from its user data, then it powers itself off` });

      step(ctx, 3, `wait for the builder ${builderId} to provision and power off (at most ${Math.round(machine.timeoutMs / 60_000)} min)`);
      const stopped = await waitStopped(builderId, bakeCtx);
      const status = await provisionStatus(stopped, bakeCtx);
      if (status.code !== 0) {
        throw new KilnError(
          "BUILD_FAILED",
          status.code === undefined
            ? `The builder ${builderId} powered off without reporting its provisioning result (no ${RESULT_MARKER} line on its console, no ${AWS_TAGS.provisionStatus} tag): check that the base image runs user data with cloud-init, and read the console output above (kiln build --verbose).`
            : `A provisioning step failed on the builder ${builderId} (exit status ${status.code}).${status.tail ? ` Its console output ends with:\n${status.tail}` : ""}`,
          { details: { builderId, ...(status.code !== undefined ? { exitStatus: status.code } : {}) } },
        );
      }

      step(ctx, 4, `create the AMI ${amiName}`);
      const imageId = await createImage(recipe, builderId, amiName, bakeCtx);
      step(ctx, 5, `wait for ${imageId} to be available`);
      const image = await waitAvailable(imageId, bakeCtx);
      await tagSnapshots(image, bakeCtx);
      return toImageRef(image);
    } catch (error) {
      if (deadline.aborted && !ctx.signal.aborted) {
        throw new KilnError("TIMEOUT", `${what} took longer than image.machine.timeoutMs (${machine.timeoutMs} ms); the builder was removed. Raise the timeout, or make the steps faster.`, {
          cause: error,
          retryable: true,
        });
      }
      throw awsError(error, "BUILD_FAILED", what, endpoint);
    } finally {
      if (builderId) await removeBuilders([builderId], ctx);
    }
  }

  /** Emits a numbered bake step. */
  function step(ctx: ProviderContext, number: number, description: string): void {
    ctx.emit({ type: "image.build.step", step: number, total: BAKE_STEPS, description });
  }

  async function resolveBase(base: AwsBaseImage, ctx: ProviderContext): Promise<Image> {
    const { sdk, client } = await clients.ec2();
    if (base.id) {
      const found = await describeImages(client, sdk, { ImageIds: [base.id] }, ctx).catch((error: unknown) => {
        if (awsErrorCode(error)?.startsWith("InvalidAMIID")) return [];
        throw error;
      });
      const image = found[0];
      if (!image || image.State !== "available") {
        throw new KilnError("BUILD_FAILED", `The base AMI ${base.id} (image.machine.base.aws.id) ${image ? `is ${image.State}` : "does not exist in this region or is not shared with this account"}; give an available AMI.`);
      }
      return image;
    }
    const images = await describeImages(client, sdk, { Owners: [...(base.owners ?? [])], Filters: [{ Name: "name", Values: [base.name!] }, { Name: "state", Values: ["available"] }] }, ctx);
    const image = newest(images)[0];
    if (!image) {
      throw new KilnError("BUILD_FAILED", `No available AMI matches image.machine.base.aws (${describeBase(base)}) in this region; check the pattern and the owners.`);
    }
    return image;
  }

  async function launchBuilder(recipe: ImageRecipe, machine: MachineRecipe, baseImageId: string, userData: string, ctx: ProviderContext): Promise<string> {
    const { sdk, client } = await clients.ec2();
    const builder = builderSettings(machine);
    const expires = new Date(Date.now() + machine.timeoutMs).toISOString();
    const tags = toTags({
      ...targetTags(recipe.target),
      [LABELS.fingerprint]: recipe.fingerprint,
      ...(recipe.rolloutId ? { [LABELS.rollout]: recipe.rolloutId } : {}),
      [AWS_TAGS.role]: BUILDER_ROLE,
      [AWS_TAGS.expires]: expires,
      // Injective in the target (core's resourceName): kiln-bake.<service>.<environment>.<fingerprint12>.
      [AWS_TAGS.name]: resourceName(recipe.target, { prefix: "kiln-bake", parts: [shortFingerprint(recipe.fingerprint)], maxLength: AWS_TAG_RULES.maxValueLength }),
    });
    // One builder per bake attempt: a retried call (an answer lost on the way) gets the same instance.
    const clientToken = createHash("sha256").update(`bake:${recipe.fingerprint}:${recipe.rolloutId ?? randomUUID()}`).digest("hex").slice(0, 64);
    const command = new sdk.RunInstancesCommand({
        ImageId: baseImageId,
        InstanceType: builder.instanceType as never,
        MinCount: 1,
        MaxCount: 1,
        ClientToken: clientToken,
        UserData: Buffer.from(userData).toString("base64"),
        // The script powers the builder off when it is done: stopped, not terminated, so it can be imaged.
        InstanceInitiatedShutdownBehavior: "stop",
        ...(builder.subnetId ? { SubnetId: builder.subnetId } : {}),
        ...(builder.securityGroupIds.length > 0 ? { SecurityGroupIds: [...builder.securityGroupIds] } : {}),
        ...(builder.iamInstanceProfile ? { IamInstanceProfile: builder.iamInstanceProfile.startsWith("arn:") ? { Arn: builder.iamInstanceProfile } : { Name: builder.iamInstanceProfile } } : {}),
        TagSpecifications: [
          { ResourceType: "instance", Tags: tags },
          { ResourceType: "volume", Tags: tags },
        ],
      });
    // Before the SDK retries (an answer lost on the way), look for the builder the lost attempt
    // made: an API that ignores the token (moto) would otherwise start a second one.
    lookBeforeRetry(command, async () => {
      const page = await client.send(
        new sdk.DescribeInstancesCommand({
          Filters: [tagFilter(AWS_TAGS.role, BUILDER_ROLE), tagFilter(AWS_TAGS.target, formatTarget(recipe.target)), tagFilter(AWS_TAGS.expires, expires)],
        }),
        { abortSignal: ctx.signal },
      );
      return (page.Reservations ?? []).flatMap((reservation) => reservation.Instances ?? []).find((instance) => instance.State?.Name !== "terminated")?.InstanceId;
    });
    try {
      const result = await client.send(command, { abortSignal: ctx.signal });
      const id = result.Instances?.[0]?.InstanceId;
      if (!id) throw new KilnError("BUILD_FAILED", "RunInstances answered without an instance for the builder.");
      return id;
    } catch (error) {
      if (error instanceof FoundBeforeRetry) return error.value as string;
      throw error;
    }
  }

  async function describeInstance(id: string, ctx: ProviderContext): Promise<Ec2Instance | undefined> {
    const { sdk, client } = await clients.ec2();
    const page = await client.send(new sdk.DescribeInstancesCommand({ InstanceIds: [id] }), { abortSignal: ctx.signal });
    return page.Reservations?.flatMap((reservation) => reservation.Instances ?? [])[0];
  }

  async function waitStopped(id: string, ctx: ProviderContext): Promise<Ec2Instance> {
    const { pollIntervalMs } = clients.options;
    const startedAt = Date.now();
    let nextReportS = 30;
    return waitFor(
      async () => {
        const instance = await describeInstance(id, ctx);
        const state = instance?.State?.Name;
        if (state === "stopped") return { done: true, value: instance! };
        if (!instance || state === "terminated" || state === "shutting-down") {
          throw new KilnError("BUILD_FAILED", `The builder ${id} went away (${state ?? "gone"}${instance?.StateReason?.Message ? `: ${instance.StateReason.Message}` : ""}) before it was imaged.`);
        }
        const waitedS = Math.round((Date.now() - startedAt) / 1000);
        if (waitedS >= nextReportS) {
          ctx.emit({ type: "image.build.log", message: `builder ${id} is ${state ?? "unknown"} after ${waitedS} s; still provisioning` });
          nextReportS = waitedS + 30;
        }
        return { done: false, reason: `the builder is ${state ?? "unknown"}` };
      },
      { timeoutMs: 365 * 24 * 3_600_000, minDelayMs: pollIntervalMs, maxDelayMs: pollIntervalMs * 8, signal: ctx.signal, description: `the builder ${id} to power off` },
    );
  }

  /** The steps' exit status: the builder's own tag when it could set one, else its console's result line. */
  async function provisionStatus(instance: Ec2Instance, ctx: ProviderContext): Promise<{ code: number | undefined; tail?: string }> {
    const tagged = fromTags(instance.Tags)[AWS_TAGS.provisionStatus];
    let console = "";
    try {
      const { sdk, client } = await clients.ec2();
      const output = await client.send(new sdk.GetConsoleOutputCommand({ InstanceId: instance.InstanceId!, Latest: true }), { abortSignal: ctx.signal });
      console = output.Output ? Buffer.from(output.Output, "base64").toString("utf8") : "";
    } catch (error) {
      ctx.logger.debug("aws: no console output from the builder", { instanceId: instance.InstanceId, error: String(error) });
    }
    const lines = console.split(/\r?\n/).filter((line) => line.trim() !== "");
    for (const line of lines.slice(-200)) ctx.emit({ type: "image.build.log", message: line });
    const tail = lines.slice(-20).join("\n");
    if (tagged !== undefined && /^\d+$/.test(tagged)) return { code: Number(tagged), tail };
    const marker = [...console.matchAll(new RegExp(`${RESULT_MARKER} status=(\\d+)`, "g"))].at(-1);
    return { code: marker ? Number(marker[1]) : undefined, tail };
  }

  async function createImage(recipe: ImageRecipe, builderId: string, amiName: string, ctx: ProviderContext): Promise<string> {
    const { sdk, client } = await clients.ec2();
    const tags = toTags({
      ...imageLabels(recipe),
      [AWS_TAGS.target]: formatTarget(recipe.target),
      [AWS_TAGS.name]: amiName,
    });
    try {
      const command = new sdk.CreateImageCommand({
          InstanceId: builderId,
          Name: amiName,
          Description: `Kiln: ${recipe.target.service} ${recipe.fingerprint}`,
          // The snapshots are tagged once they exist (see tagSnapshots): not every EC2 API
          // (moto) takes a snapshot tag specification here.
          TagSpecifications: [{ ResourceType: "image", Tags: tags }],
        });
      // A retried CreateImage whose first answer was lost: the image it made has our name (an API
      // that does not refuse a duplicate name, like moto, would otherwise make a second one).
      lookBeforeRetry(command, async () => (await describeImages(client, sdk, { Owners: ["self"], Filters: [{ Name: "name", Values: [amiName] }] }, ctx))[0]?.ImageId);
      const created = await client.send(command, { abortSignal: ctx.signal });
      if (!created.ImageId) throw new KilnError("BUILD_FAILED", "CreateImage answered without an image id.");
      return created.ImageId;
    } catch (error) {
      if (error instanceof FoundBeforeRetry) return error.value as string;
      // A retried CreateImage whose first answer was lost: the name is taken by our own image.
      if (awsErrorCode(error) === "InvalidAMIName.Duplicate") {
        const mine = (await imagesOf(recipe.target.service, recipe.fingerprint, ctx)).find((image) => image.Name === amiName);
        if (mine?.ImageId) return mine.ImageId;
      }
      throw error;
    }
  }

  /** Gives the AMI's snapshots the AMI's own tags, so they are found (and billed) by service and fingerprint. */
  async function tagSnapshots(image: Image, ctx: ProviderContext): Promise<void> {
    const snapshots = (image.BlockDeviceMappings ?? []).flatMap((mapping) => (mapping.Ebs?.SnapshotId ? [mapping.Ebs.SnapshotId] : []));
    if (snapshots.length === 0) return;
    const { sdk, client } = await clients.ec2();
    await client.send(new sdk.CreateTagsCommand({ Resources: snapshots, Tags: (image.Tags ?? []).filter((tag) => tag.Key && !tag.Key.startsWith("aws:")) }), { abortSignal: ctx.signal });
  }

  async function waitAvailable(imageId: string, ctx: ProviderContext): Promise<Image> {
    const { sdk, client } = await clients.ec2();
    const { pollIntervalMs } = clients.options;
    return waitFor(
      async () => {
        const image = (await describeImages(client, sdk, { ImageIds: [imageId] }, ctx))[0];
        if (image?.State === "available") return { done: true, value: image };
        if (!image || image.State === "failed" || image.State === "invalid" || image.State === "deregistered" || image.State === "error") {
          throw new KilnError("BUILD_FAILED", `The AMI ${imageId} ended ${image?.State ?? "missing"}${image?.StateReason?.Message ? `: ${image.StateReason.Message}` : ""}.`);
        }
        return { done: false, reason: `the AMI is ${image.State ?? "unknown"}` };
      },
      { timeoutMs: 365 * 24 * 3_600_000, minDelayMs: pollIntervalMs, maxDelayMs: pollIntervalMs * 8, signal: ctx.signal, description: `the AMI ${imageId} to be available` },
    );
  }

  /**
   * Removes what killed bakes left: every builder of this target (the caller holds the target's
   * lock, so no other bake of it runs), and every builder of the service past its expiry.
   */
  async function removeLeftovers(target: Target, ctx: ProviderContext): Promise<void> {
    const { sdk, client } = await clients.ec2();
    const page = await client.send(
      new sdk.DescribeInstancesCommand({
        Filters: [
          tagFilter(AWS_TAGS.role, BUILDER_ROLE),
          tagFilter(LABELS.service, target.service),
          { Name: "instance-state-name", Values: ["pending", "running", "stopping", "stopped"] },
        ],
      }),
      { abortSignal: ctx.signal },
    );
    const now = Date.now();
    const leftovers = (page.Reservations ?? [])
      .flatMap((reservation) => reservation.Instances ?? [])
      .filter((instance) => {
        const tags = fromTags(instance.Tags);
        const expires = Date.parse(tags[AWS_TAGS.expires] ?? "");
        return tags[AWS_TAGS.target] === formatTarget(target) || (Number.isFinite(expires) && expires < now);
      })
      .flatMap((instance) => (instance.InstanceId ? [instance.InstanceId] : []));
    if (leftovers.length === 0) return;
    const message = `removing ${leftovers.length} builder${leftovers.length === 1 ? "" : "s"} an interrupted bake left: ${leftovers.join(", ")}`;
    ctx.emit({ type: "image.build.log", message });
    ctx.logger.warn(`aws: ${message}`, { instanceIds: leftovers });
    await removeBuilders(leftovers, ctx);
  }

  /** Terminates builders with a signal of its own (the bake's may be aborted), waiting until they are gone; logs, never throws. */
  async function removeBuilders(ids: readonly string[], ctx: ProviderContext): Promise<void> {
    const signal = AbortSignal.timeout(CLEANUP_TIMEOUT_MS);
    const cleanupCtx: ProviderContext = { ...ctx, signal };
    try {
      const { sdk, client } = await clients.ec2();
      await client.send(new sdk.TerminateInstancesCommand({ InstanceIds: [...ids] }), { abortSignal: signal });
      const { pollIntervalMs } = clients.options;
      await waitFor(
        async () => {
          const page = await client.send(new sdk.DescribeInstancesCommand({ InstanceIds: [...ids] }), { abortSignal: signal });
          const left = (page.Reservations ?? []).flatMap((reservation) => reservation.Instances ?? []).filter((instance) => instance.State?.Name !== "terminated");
          return left.length === 0 ? { done: true, value: undefined } : { done: false, reason: `${left.length} still ${left[0]?.State?.Name ?? "there"}` };
        },
        { timeoutMs: CLEANUP_TIMEOUT_MS, minDelayMs: pollIntervalMs, maxDelayMs: pollIntervalMs * 8, signal, description: "the builders to terminate" },
      );
    } catch (error) {
      if (awsErrorCode(error) === "InvalidInstanceID.NotFound") return;
      cleanupCtx.logger.error("aws: could not remove bake builders; the next bake of this target removes them", { instanceIds: ids, error: String(error) });
    }
  }

  return {
    build,
    find,
    async list(service, ctx) {
      throwIfAborted(ctx.signal);
      try {
        return newest((await imagesOf(service, undefined, ctx)).filter((image) => image.State === "available" || image.State === "pending")).map(toImageRef);
      } catch (error) {
        throw awsError(error, "PROVIDER_UNAVAILABLE", `Listing the AMIs of ${service}`, endpoint);
      }
    },
    async remove(image, ctx) {
      throwIfAborted(ctx.signal);
      try {
        const { sdk, client } = await clients.ec2();
        const users = await client.send(
          new sdk.DescribeInstancesCommand({ Filters: [{ Name: "image-id", Values: [image.id] }, { Name: "instance-state-name", Values: ["pending", "running", "stopping", "stopped"] }] }),
          { abortSignal: ctx.signal },
        );
        const using = (users.Reservations ?? []).flatMap((reservation) => reservation.Instances ?? []).flatMap((instance) => (instance.InstanceId ? [instance.InstanceId] : []));
        if (using.length > 0) {
          throw new KilnError("IMAGE_IN_USE", `The AMI ${image.id} is used by ${using.length} instance${using.length === 1 ? "" : "s"} (${using.slice(0, 5).join(", ")}); it was kept. Retire them first.`, {
            details: { imageId: image.id, instanceIds: using },
          });
        }
        const templates = await launchTemplatesUsing(image.id, ctx);
        if (templates.length > 0) {
          throw new KilnError("IMAGE_IN_USE", `The AMI ${image.id} is in launch template${templates.length === 1 ? "" : "s"} ${templates.join(", ")}; it was kept. Point the templates at another AMI first.`, {
            details: { imageId: image.id, launchTemplates: templates },
          });
        }
        const found = await describeImages(client, sdk, { ImageIds: [image.id] }, ctx).catch((error: unknown) => {
          if (awsErrorCode(error)?.startsWith("InvalidAMIID")) return [];
          throw error;
        });
        const current = found[0];
        const mapped = (current?.BlockDeviceMappings ?? []).flatMap((mapping) => (mapping.Ebs?.SnapshotId ? [mapping.Ebs.SnapshotId] : []));
        if (current && current.State !== "deregistered") await client.send(new sdk.DeregisterImageCommand({ ImageId: image.id }), { abortSignal: ctx.signal });
        // An AMI deregistered by an earlier removal that stopped before its snapshots went (a
        // killed gc) no longer lists them: they are found by the description CreateImage gives them.
        const snapshots = [...new Set([...mapped, ...(await createImageSnapshots(image.id, ctx))])];
        for (const snapshotId of snapshots) {
          try {
            await client.send(new sdk.DeleteSnapshotCommand({ SnapshotId: snapshotId }), { abortSignal: ctx.signal });
          } catch (error) {
            if (awsErrorCode(error) !== "InvalidSnapshot.NotFound") throw error;
          }
        }
      } catch (error) {
        throw awsError(error, "PROVIDER_UNAVAILABLE", `Removing the AMI ${image.id}`, endpoint);
      }
    },
  };

  /**
   * The snapshots CreateImage made for an AMI, found by the description EC2 gives each
   * ("Created by CreateImage(i-…) for ami-…"), owned by this account: how the snapshots of an AMI
   * already deregistered are found.
   * @see https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/deregister-ami.html
   */
  async function createImageSnapshots(imageId: string, ctx: ProviderContext): Promise<string[]> {
    const { sdk, client } = await clients.ec2();
    const ids: string[] = [];
    let token: string | undefined;
    do {
      const page = await client.send(
        new sdk.DescribeSnapshotsCommand({ OwnerIds: ["self"], Filters: [{ Name: "description", Values: [`Created by CreateImage(*) for ${imageId}`] }], ...(token ? { NextToken: token } : {}) }),
        { abortSignal: ctx.signal },
      );
      for (const snapshot of page.Snapshots ?? []) if (snapshot.SnapshotId && snapshot.Description?.endsWith(` for ${imageId}`)) ids.push(snapshot.SnapshotId);
      token = page.NextToken;
    } while (token);
    return ids;
  }

  /** Launch templates whose default or latest version launches this AMI (DescribeLaunchTemplateVersions over every template). */
  async function launchTemplatesUsing(imageId: string, ctx: ProviderContext): Promise<string[]> {
    const { sdk, client } = await clients.ec2();
    try {
      const found = new Set<string>();
      let token: string | undefined;
      do {
        const page = await client.send(
          new sdk.DescribeLaunchTemplateVersionsCommand({ Versions: ["$Latest", "$Default"], Filters: [{ Name: "image-id", Values: [imageId] }], ...(token ? { NextToken: token } : {}) }),
          { abortSignal: ctx.signal },
        );
        for (const version of page.LaunchTemplateVersions ?? []) {
          if (version.LaunchTemplateData?.ImageId === imageId) found.add(version.LaunchTemplateName ?? version.LaunchTemplateId ?? "?");
        }
        token = page.NextToken;
      } while (token);
      return [...found];
    } catch (error) {
      // An API without the cross-template form (some emulators) cannot tell; say so and go on.
      if (awsErrorCode(error) === "MissingParameter" || awsErrorCode(error) === "InvalidRequest" || awsErrorCode(error) === "NotImplementedError") {
        ctx.logger.warn("aws: could not check launch templates for the AMI", { imageId, error: String(error) });
        return [];
      }
      throw error;
    }
  }
}

/** Newest first, by creation date. */
function newest(images: readonly Image[]): Image[] {
  return [...images].sort((a, b) => (b.CreationDate ?? "").localeCompare(a.CreationDate ?? ""));
}

function describeBase(base: AwsBaseImage): string {
  return base.id ?? `${base.name ?? "?"} owned by ${(base.owners ?? []).join(", ")}`;
}

/** An AMI as an {@link ImageRef}: the AMI id is also its digest (AMIs have no content digest). */
export function toImageRef(image: Image): ImageRef {
  const tags = fromTags(image.Tags);
  const sizeGiB = (image.BlockDeviceMappings ?? []).reduce((sum, mapping) => sum + (mapping.Ebs?.VolumeSize ?? 0), 0);
  return {
    id: image.ImageId!,
    fingerprint: tags[LABELS.fingerprint] ?? "",
    digest: image.ImageId!,
    names: image.Name ? [image.Name] : [],
    ...(image.CreationDate ? { createdAt: new Date(image.CreationDate).toISOString() } : {}),
    ...(sizeGiB > 0 ? { sizeBytes: sizeGiB * 1024 ** 3 } : {}),
  };
}
