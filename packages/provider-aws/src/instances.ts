import { createHash } from "node:crypto";
import type { EC2Client, Filter, Instance as Ec2Instance, RunInstancesCommandInput, _InstanceType } from "@aws-sdk/client-ec2";
import {
  KilnError,
  LABELS,
  readSection,
  assertLaunchCount,
  decodeInstanceLabels,
  formatTarget,
  instanceLabels,
  resourceName,
  selectorLabels,
  throwIfAborted,
  waitFor,
  type Endpoint,
  type Instance,
  type InstanceOperations,
  type InstanceState,
  type LaunchRequest,
  type ProviderContext,
} from "@kilnjs/core";
import { awsError, awsErrorCode, type AwsClients, type Ec2Module } from "./client.js";
import { AWS_KILN_TAG_COUNT, AWS_TAG_RULES, awsInstancesSchema, awsProviderSpec, awsTagProblems, type AwsInstanceSettings } from "./spec.js";
import { AWS_TAGS, fromTags, tagFilter, toTags } from "./tags.js";

/** The instance type when neither `instances.aws.instanceType` nor a launch template gives one. */
export const DEFAULT_INSTANCE_TYPE = "t3.micro";

/**
 * The launch settings of a release: its `instances.aws` section, or, for a release without one,
 * the section's defaults (the default VPC's default subnet and security group, no instance
 * profile, no key pair, no user data, the AMI's own volumes, endpoints on the private IP).
 */
export function launchSettings(config: Pick<LaunchRequest["config"], "providerSettings">): AwsInstanceSettings {
  return readSection(awsProviderSpec, "instances", config.providerSettings) ?? awsInstancesSchema.parse({});
}

/**
 * The EC2 instance states Kiln counts as live (every state but `terminated`): the
 * `instance-state-name` filter of {@link InstanceOperations.list}.
 */
export const LIVE_INSTANCE_STATES = ["pending", "running", "stopping", "stopped", "shutting-down"] as const;

/** Most instance ids per TerminateInstances call (EC2 API reference, TerminateInstances: "up to 1000"). */
export const TERMINATE_BATCH_SIZE = 1000;

/**
 * Most values per `instance-id` filter of one DescribeInstances call (200: EC2 limits the values of
 * one filter; this stays within it). Waits describe their batch through this filter rather than `InstanceIds`, because one
 * id EC2 does not know (yet, or any more) makes a call with `InstanceIds` fail as a whole
 * (`InvalidInstanceID.NotFound`), while a filter just leaves it out.
 */
export const INSTANCE_ID_FILTER_SIZE = 200;

/** How many times a launch asks again with a new client token when EC2 replays an old, dead launch. */
const MAX_TOKEN_GENERATIONS = 4;

/** Maps an EC2 instance state name (`pending`, `running`, `shutting-down`, …) to an {@link InstanceState}. */
export function instanceState(name: string | undefined): InstanceState {
  switch (name) {
    case "pending":
      return "pending";
    case "running":
      return "running";
    case "stopping":
    case "shutting-down":
      return "stopping";
    case "stopped":
      return "stopped";
    case "terminated":
      return "terminated";
    default:
      return "unknown";
  }
}

/**
 * The RunInstances `ClientToken` of one launch call: `kiln-` and 59 hex digits of the SHA-256 of
 * the launch step's idempotency key, the subnet's index, how many instances of the key the launch
 * found already, and a generation (0 unless EC2 replayed a launch whose instances are gone): 64
 * ASCII characters, EC2's limit. The same launch step seeing the same world sends the same token,
 * so EC2 answers a repeated call (the SDK's retry after a lost answer, or a resumed rollout that
 * could not see the first call's instances yet) with the first call's instances instead of new ones.
 */
export function launchClientToken(idempotencyKey: string, subnetIndex: number, found: number, generation = 0): string {
  const digest = createHash("sha256").update(`${idempotencyKey}\n${subnetIndex}\n${found}\n${generation}`).digest("hex");
  return `kiln-${digest.slice(0, 59)}`;
}

/** One RunInstances call of a launch: how many instances go to which subnet. */
export interface LaunchSlice {
  /** The index of the subnet in `subnetIds` (0 when there are none). */
  readonly subnetIndex: number;
  /** The subnet; undefined for the default VPC's default subnet. */
  readonly subnetId: string | undefined;
  readonly count: number;
}

/**
 * Spreads `count` instances over the subnets in turn (the first `count % n` subnets get one more),
 * minus the instances of the launch found already in each subnet, so that a resumed launch tops up
 * the subnets that are short. Returns one slice per subnet that needs instances; the counts add up
 * to `count - found.length` (never below 0).
 */
export function planLaunch(count: number, subnetIds: readonly string[], found: ReadonlyArray<{ readonly subnetId?: string | undefined }>): LaunchSlice[] {
  const missing = Math.max(0, count - found.length);
  if (missing === 0) return [];
  if (subnetIds.length === 0) return [{ subnetIndex: 0, subnetId: undefined, count: missing }];
  const n = subnetIds.length;
  const share = subnetIds.map((_, index) => Math.floor(count / n) + (index < count % n ? 1 : 0));
  const have = subnetIds.map((subnetId) => found.filter((instance) => instance.subnetId === subnetId).length);
  const plan = share.map((wanted, index) => Math.max(0, wanted - have[index]!));
  let total = plan.reduce((sum, value) => sum + value, 0);
  // Found instances outside the listed subnets, or more than a subnet's share, make the two differ.
  while (total > missing) {
    const index = plan.lastIndexOf(Math.max(...plan));
    plan[index]! -= 1;
    total -= 1;
  }
  while (total < missing) {
    const loads = plan.map((value, index) => value + have[index]!);
    const index = loads.indexOf(Math.min(...loads));
    plan[index]! += 1;
    total += 1;
  }
  return plan.flatMap((value, index) => (value > 0 ? [{ subnetIndex: index, subnetId: subnetIds[index], count: value }] : []));
}

/**
 * The tags of every instance (and its volumes) of a launch call: the release's own labels, then
 * Kiln's {@link LABELS} (with the launch key and ports), `Name`
 * (`<service>.<environment>.r<release>.<suffix>`: core's `resourceName`, so two targets never share
 * a name whatever dashes they contain; instances are found by tags, never by this name, so those
 * named the earlier way, `<service>-<environment>-r<release>-<suffix>`, are still managed), and the address kind ({@link AWS_TAGS}). Kiln's
 * keys win over a label of the same key.
 * @param nameSuffix - the `Name` tag's last part (short hex from the call's client token)
 * @throws KilnError INVALID_ARGUMENT when the labels break AWS's tag rules (naming the tag and the rule)
 */
export function launchTags(request: LaunchRequest, settings: AwsInstanceSettings, nameSuffix: string): Record<string, string> {
  const where = `the labels of ${formatTarget(request.target)} (instances.labels)`;
  const problems = awsTagProblems(request.config.labels, AWS_KILN_TAG_COUNT);
  const tags: Record<string, string> = {
    ...request.config.labels,
    ...instanceLabels(request),
    [AWS_TAGS.name]: resourceName(request.target, { parts: [`r${request.release}`, nameSuffix], maxLength: AWS_TAG_RULES.maxValueLength }),
    [AWS_TAGS.address]: settings.address,
  };
  // Kiln's own values must fit too (a long list of ports, a long rollout id).
  if (problems.length === 0) problems.push(...awsTagProblems(tags, 0));
  if (problems.length > 0) {
    const text = problems.map((problem) => (problem.key !== undefined ? `tag "${problem.key}": ${problem.message}` : problem.message)).join("; ");
    throw new KilnError("INVALID_ARGUMENT", `${where} cannot all be EC2 tags: ${text}.`, { details: { problems } });
  }
  return tags;
}

/**
 * The RunInstances request of one launch slice: the release's AMI, the instance settings, its
 * subnet, `MinCount = MaxCount = slice.count` (all or nothing), the client token, and the tags on
 * the instances and their volumes.
 * @see https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_RunInstances.html
 */
export function runInstancesInput(request: LaunchRequest, settings: AwsInstanceSettings, slice: LaunchSlice, clientToken: string): RunInstancesCommandInput {
  const tags = toTags(launchTags(request, settings, clientToken.slice(-6)));
  const template = settings.launchTemplate;
  const profile = settings.iamInstanceProfile;
  return {
    ImageId: request.image.id,
    MinCount: slice.count,
    MaxCount: slice.count,
    ClientToken: clientToken,
    // The spec's type, else the launch template's, else t3.micro.
    ...(settings.instanceType !== undefined
      ? { InstanceType: settings.instanceType as _InstanceType }
      : template === undefined
        ? { InstanceType: DEFAULT_INSTANCE_TYPE }
        : {}),
    ...(slice.subnetId !== undefined ? { SubnetId: slice.subnetId } : {}),
    ...(settings.securityGroupIds.length > 0 ? { SecurityGroupIds: [...settings.securityGroupIds] } : {}),
    ...(profile !== undefined ? { IamInstanceProfile: /^arn:aws[a-z-]*:iam::/.test(profile) ? { Arn: profile } : { Name: profile } } : {}),
    ...(settings.keyName !== undefined ? { KeyName: settings.keyName } : {}),
    ...(settings.userData !== undefined ? { UserData: Buffer.from(settings.userData, "utf8").toString("base64") } : {}),
    ...(settings.blockDevices.length > 0
      ? {
          BlockDeviceMappings: settings.blockDevices.map((device) => ({
            DeviceName: device.deviceName,
            Ebs: {
              DeleteOnTermination: device.deleteOnTermination,
              ...(device.volumeSizeGiB !== undefined ? { VolumeSize: device.volumeSizeGiB } : {}),
              ...(device.volumeType !== undefined ? { VolumeType: device.volumeType } : {}),
              ...(device.encrypted !== undefined ? { Encrypted: device.encrypted } : {}),
            },
          })),
        }
      : {}),
    ...(template
      ? { LaunchTemplate: { ...(template.id !== undefined ? { LaunchTemplateId: template.id } : { LaunchTemplateName: template.name }), Version: template.version } }
      : {}),
    TagSpecifications: [
      { ResourceType: "instance", Tags: tags },
      { ResourceType: "volume", Tags: tags },
    ],
  };
}

/**
 * Kiln's name of an EC2 instance: its `Name` tag and the last 6 characters of its id
 * (`web.prod.r3.1f2e3d-9a8b7c`). One RunInstances call gives all its instances the same `Name` tag
 * (tags at creation cannot differ per instance), so the id's tail keeps names unique. An instance
 * without a `Name` tag is named by its id.
 */
export function instanceName(tags: Readonly<Record<string, string>>, instanceId: string): string {
  const name = tags[AWS_TAGS.name];
  return name ? `${name}-${instanceId.slice(-6)}` : instanceId;
}

/**
 * An {@link Instance} from DescribeInstances or RunInstances data: `labels` are all its tags,
 * `release`/`rolloutId` come from {@link LABELS}, endpoints are the ports of the ports tag on the
 * private IP (the public IP when the address tag says `public`; none while the instance has no
 * such address), and `restartCount` is always 0: EC2 does not restart instances on its own.
 */
export function instanceFromEc2(instance: Ec2Instance): Instance {
  const id = instance.InstanceId ?? "";
  const tags = fromTags(instance.Tags);
  const host = tags[AWS_TAGS.address] === "public" ? instance.PublicIpAddress : instance.PrivateIpAddress;
  const decoded = decodeInstanceLabels(tags);
  const endpoints: Record<string, Endpoint> = {};
  if (host) for (const port of decoded.ports) endpoints[port.name] = { host, port: port.port };
  return {
    id,
    name: instanceName(tags, id),
    target: decoded.target ?? { service: "", environment: "" },
    release: decoded.release,
    rolloutId: decoded.rolloutId,
    imageId: instance.ImageId ?? "",
    state: instanceState(instance.State?.Name),
    restartCount: 0,
    endpoints,
    createdAt: (instance.LaunchTime ?? new Date(0)).toISOString(),
    labels: tags,
  };
}

/** Escapes `*`, `?` and `\` in an EC2 filter value, which would otherwise be wildcards. */
export function filterValue(value: string): string {
  return value.replace(/[\\*?]/g, (char) => `\\${char}`);
}

/** A tag filter whose value is matched literally. */
function exactTag(key: string, value: string): Filter {
  return tagFilter(key, filterValue(value));
}

/**
 * Every instance DescribeInstances returns for `filters`, following `NextToken` (1000 a page).
 * @see https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_DescribeInstances.html
 */
export async function describeInstances(ec2: { sdk: Ec2Module; client: EC2Client }, filters: Filter[], signal: AbortSignal): Promise<Ec2Instance[]> {
  const instances: Ec2Instance[] = [];
  let nextToken: string | undefined;
  do {
    const page = await ec2.client.send(new ec2.sdk.DescribeInstancesCommand({ Filters: filters, MaxResults: 1000, ...(nextToken ? { NextToken: nextToken } : {}) }), { abortSignal: signal });
    for (const reservation of page.Reservations ?? []) instances.push(...(reservation.Instances ?? []));
    nextToken = page.NextToken;
  } while (nextToken);
  return instances;
}

/**
 * The instances of `ids` EC2 knows, through the `instance-id` filter (one DescribeInstances per 200
 * ids, see {@link INSTANCE_ID_FILTER_SIZE}); ids EC2 does not know are left out rather than failing.
 */
export async function describeInstancesById(ec2: { sdk: Ec2Module; client: EC2Client }, ids: readonly string[], signal: AbortSignal): Promise<Map<string, Ec2Instance>> {
  const found = new Map<string, Ec2Instance>();
  for (const chunk of chunks(ids, INSTANCE_ID_FILTER_SIZE)) {
    for (const instance of await describeInstances(ec2, [{ Name: "instance-id", Values: chunk }], signal)) {
      if (instance.InstanceId) found.set(instance.InstanceId, instance);
    }
  }
  return found;
}

/** `items` cut into arrays of at most `size`. */
export function chunks<T>(items: readonly T[], size: number): T[][] {
  const result: T[][] = [];
  for (let start = 0; start < items.length; start += size) result.push(items.slice(start, start + size));
  return result;
}

function byName(a: Instance, b: Instance): number {
  return a.name.localeCompare(b.name) || a.id.localeCompare(b.id);
}

/** What {@link lookBeforeRetry}'s lookup found: `send` rejects with it, carrying the value. */
export class FoundBeforeRetry<T> extends Error {
  override readonly name = "FoundBeforeRetry";
  constructor(readonly value: T) {
    super("An earlier attempt of the call had done its work; the SDK's retries ended.");
  }
}

/**
 * Makes the SDK look before it sends `command` again: before every retry (after a lost answer, a
 * 5xx, throttling) it runs `lookup`, and when that finds what the call makes, the retries end and
 * `send` rejects with a {@link FoundBeforeRetry} holding it. For calls whose idempotency token the
 * server may not honour: EC2 answers a repeated `ClientToken` with the first result, but moto does
 * not, and a retry after a lost answer would then make a second resource. On AWS it only saves a
 * call; when the lookup finds nothing (not visible yet), the retry goes out and relies on the
 * token. A middleware after the SDK's retry middleware (`finalizeRequest` step), so it runs once
 * per attempt; the first attempt is sent as it is.
 */
export function lookBeforeRetry<T>(
  command: { readonly middlewareStack: { addRelativeTo(middleware: never, options: { relation: "before" | "after"; toMiddleware: string; name?: string }): void } },
  lookup: () => Promise<T | undefined>,
): void {
  let attempts = 0;
  type Handler = (args: unknown) => Promise<unknown>;
  const middleware = (next: Handler): Handler => async (args) => {
    attempts += 1;
    if (attempts > 1) {
      const found = await lookup();
      if (found !== undefined) throw new FoundBeforeRetry(found);
    }
    return next(args);
  };
  command.middlewareStack.addRelativeTo(middleware as never, { relation: "after", toMiddleware: "retryMiddleware", name: "kilnLookBeforeRetry" });
}

/** The reason EC2 gives for an instance's last state change. */
function stateReason(instance: Ec2Instance): string {
  return instance.StateReason?.Message ?? instance.StateTransitionReason ?? "EC2 gave no reason";
}

/**
 * Creates the aws provider's {@link InstanceOperations}: EC2 instances launched from the release's
 * AMI with RunInstances, found by tags, terminated with TerminateInstances. Every call passes
 * `ctx.signal` to the SDK; every wait uses core's `waitFor`, one describe call per poll for the whole
 * batch, from `clients.options.pollIntervalMs` backing off to 8 times it.
 *
 * - `launch(request, ctx)`: validates the release's labels as EC2 tags, then one DescribeInstances
 *   by the launch step's tag ({@link LABELS}.launchKey = `idempotencyKey`) finds the instances an
 *   earlier call with the same key started (any state but `shutting-down`/`terminated`), and only
 *   the missing ones are started: one RunInstances per subnet (`instances.aws.subnetIds` taken in
 *   turn; the default VPC without any) with its share of the count, each carrying a `ClientToken`
 *   from {@link launchClientToken} and the tags of {@link launchTags} on the instances and their
 *   volumes. Instances found `stopped` are started again (StartInstances). Then it waits until every
 *   one is `running` with its address, at most `clients.options.instanceTimeoutMs`. Without
 *   an `instances.aws` section it uses that section's defaults ({@link launchSettings}). `env`, `command`, `memoryBytes`,
 *   `cpus` and `hostPort` have no EC2 counterpart and are ignored: the AMI and the user data decide
 *   what runs, the instance type decides the size. Instances started before a failure are left
 *   running and tagged: a retry with the same key adopts them; an undone rollout finds them by tag.
 *   Before the first RunInstances, one DescribeImages checks that the AMI exists and is `available`.
 *   Throws `INVALID_ARGUMENT` (count below 1, labels that are not valid EC2 tags), `LAUNCH_FAILED`
 *   (the AMI is gone or not available; RunInstances refused, with AWS's code and message; an
 *   instance went `shutting-down` or `terminated`, with EC2's state reason; `address: public` on an
 *   instance that got no public IP), `TIMEOUT`, `THROTTLED`, `PROVIDER_UNAVAILABLE`, `ABORTED`.
 *   A RunInstances the SDK retries (lost answer, throttling, 5xx) keeps its token, and before each
 *   retry the launch's instances are looked up by that token ({@link lookBeforeRetry}).
 * - `list(selector, ctx)`: one DescribeInstances (following `NextToken`) filtered by Kiln's tags
 *   (managed, service, environment, and release / rollout when given) and by state (every state but
 *   `terminated`); a bake's builder instances ({@link AWS_TAGS}.role) are left out. Sorted by name.
 *   `withRestartCounts` changes nothing: EC2 does not restart instances, `restartCount` is always 0.
 *   Throws `PROVIDER_UNAVAILABLE` (or AWS's error under that code), `THROTTLED`, `ABORTED`.
 * - `terminate(instances, options, ctx)`: one TerminateInstances per 1000 ids; ids EC2 no longer
 *   knows count as terminated (EC2 refuses the whole call with `InvalidInstanceID.NotFound`, so the
 *   call is repeated without them); then waits until all are `terminated` (or gone), at most
 *   `instanceTimeoutMs`. `gracePeriodMs` cannot be enforced: EC2 shuts the OS down, which sends
 *   SIGTERM to the services, and powers the instance off when the OS is done or after EC2's own
 *   limit. Throws `TERMINATE_FAILED` (with AWS's code and message), `TIMEOUT`, `THROTTLED`,
 *   `PROVIDER_UNAVAILABLE`, `ABORTED`.
 *
 * There is no `exec`: EC2 cannot run a command in an instance without an agent (SSM), so command
 * health checks are not available.
 *
 * @see https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_RunInstances.html
 * @see https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_DescribeImages.html
 * @see https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_DescribeInstances.html
 * @see https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_StartInstances.html
 * @see https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_TerminateInstances.html
 * @see https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/Run_Instance_Idempotency.html
 */
export function createInstanceOperations(clients: AwsClients): InstanceOperations {
  const endpoint = () => clients.options.endpoint;
  const waitOptions = (ctx: ProviderContext, description: string) => ({
    timeoutMs: clients.options.instanceTimeoutMs,
    minDelayMs: clients.options.pollIntervalMs,
    maxDelayMs: clients.options.pollIntervalMs * 8,
    signal: ctx.signal,
    description,
  });

  /**
   * Runs one slice, with a new token generation when EC2 answers with a launch of the same token
   * whose instances are all gone (a token is remembered for at least 24 hours after termination)
   * or refuses the token (`IdempotentParameterMismatch`).
   */
  async function runSlice(ec2: { sdk: Ec2Module; client: EC2Client }, request: LaunchRequest, settings: AwsInstanceSettings, slice: LaunchSlice, found: number, ctx: ProviderContext): Promise<Ec2Instance[]> {
    for (let generation = 0; ; generation += 1) {
      const token = launchClientToken(request.idempotencyKey, slice.subnetIndex, found, generation);
      const last = generation === MAX_TOKEN_GENERATIONS - 1;
      let launched: Ec2Instance[];
      try {
        const command = new ec2.sdk.RunInstancesCommand(runInstancesInput(request, settings, slice, token));
        // Before a retry: did the lost attempt launch them? (By the launch tag: moto lacks the client-token filter.)
        lookBeforeRetry(command, async () => {
          const mine = (await describeInstances(ec2, [exactTag(LABELS.launchKey, request.idempotencyKey)], ctx.signal)).filter((instance) => instance.ClientToken === token);
          return mine.length > 0 ? mine : undefined;
        });
        const answer = await ec2.client.send(command, { abortSignal: ctx.signal });
        launched = answer.Instances ?? [];
      } catch (error) {
        if (error instanceof FoundBeforeRetry) {
          launched = error.value as Ec2Instance[];
          ctx.logger.debug("a RunInstances whose answer was lost had launched the instances; not asking again", { clientToken: token, count: launched.length });
        } else if (!last && awsErrorCode(error) === "IdempotentParameterMismatch") {
          ctx.logger.warn("EC2 refused a launch token used before with other parameters; trying the next one", { clientToken: token });
          continue;
        } else {
          throw error;
        }
      }
      const dead = launched.filter((instance) => instance.State?.Name === "shutting-down" || instance.State?.Name === "terminated");
      if (launched.length > 0 && dead.length === launched.length && !last) {
        ctx.logger.warn("EC2 replayed an earlier launch whose instances are gone; launching with the next token", { clientToken: token });
        continue;
      }
      ctx.logger.debug("instances launched", { subnetId: slice.subnetId, count: launched.length, clientToken: token });
      return launched;
    }
  }

  /**
   * Checks that the release's AMI exists and is `available` before launching from it: RunInstances
   * would refuse a missing one too, but this names the cause (a deregistered AMI, one still being
   * created), and moto launches from a deregistered AMI.
   */
  async function checkImage(ec2: { sdk: Ec2Module; client: EC2Client }, request: LaunchRequest, what: string, ctx: ProviderContext): Promise<void> {
    const id = request.image.id;
    let state: string | undefined;
    try {
      const answer = await ec2.client.send(new ec2.sdk.DescribeImagesCommand({ ImageIds: [id] }), { abortSignal: ctx.signal });
      state = answer.Images?.find((image) => image.ImageId === id)?.State ?? "missing";
    } catch (error) {
      const code = awsErrorCode(error);
      if (code !== "InvalidAMIID.NotFound" && code !== "InvalidAMIID.Unavailable" && code !== "InvalidAMIID.Malformed") throw error;
      state = "missing";
    }
    if (state === "available") return;
    throw new KilnError(
      "LAUNCH_FAILED",
      state === "missing"
        ? `${what}: the release's AMI ${id} does not exist (deregistered, or not shared with this account); build the image again (kiln build) and deploy.`
        : `${what}: the release's AMI ${id} is ${state}, not available.`,
      { details: { imageId: id, imageState: state } },
    );
  }

  /** Waits until every id runs with its address; starts instances found stopped. */
  function waitRunning(ec2: { sdk: Ec2Module; client: EC2Client }, ids: readonly string[], request: LaunchRequest, what: string, ctx: ProviderContext): Promise<Instance[]> {
    const started = new Set<string>();
    const wantsPublic = launchSettings(request.config).address === "public";
    return waitFor(async () => {
      const seen = await describeInstancesById(ec2, ids, ctx.signal);
      const waiting: string[] = [];
      const toStart: string[] = [];
      for (const id of ids) {
        const instance = seen.get(id);
        const state = instance?.State?.Name;
        if (!instance) {
          waiting.push(`${id} is not visible yet`);
          continue;
        }
        if (state === "shutting-down" || state === "terminated") {
          throw new KilnError("LAUNCH_FAILED", `${what}: instance ${id} went ${state} while starting: ${stateReason(instance)}.`, {
            details: { instanceId: id, state, ...(instance.StateReason?.Code ? { stateReason: instance.StateReason.Code } : {}) },
          });
        }
        if (state === "stopped" && !started.has(id)) toStart.push(id);
        if (state !== "running") {
          waiting.push(`${id} is ${state ?? "in no state"}`);
          continue;
        }
        if (wantsPublic && !instance.PublicIpAddress) {
          throw new KilnError(
            "LAUNCH_FAILED",
            `${what}: instance ${id} runs without a public IP, but instances.aws.address is public; launch into a subnet that assigns public IPs, or use address: private.`,
            { details: { instanceId: id } },
          );
        }
        if (!instance.PrivateIpAddress) waiting.push(`${id} has no private IP yet`);
      }
      if (toStart.length > 0) {
        ctx.logger.info("starting instances of the launch found stopped", { instanceIds: toStart });
        await ec2.client.send(new ec2.sdk.StartInstancesCommand({ InstanceIds: toStart }), { abortSignal: ctx.signal });
        for (const id of toStart) started.add(id);
      }
      if (waiting.length === 0) return { done: true, value: ids.map((id) => instanceFromEc2(seen.get(id)!)) };
      return { done: false, reason: `${waiting.length} of ${ids.length} not running yet (${waiting.slice(0, 3).join("; ")}${waiting.length > 3 ? "; …" : ""})` };
    }, waitOptions(ctx, `${ids.length} EC2 instance(s) of ${formatTarget(request.target)} release ${request.release} to run`));
  }

  /** TerminateInstances for one batch; ids EC2 no longer knows are dropped and the call repeated. */
  async function terminateBatch(ec2: { sdk: Ec2Module; client: EC2Client }, ids: readonly string[], ctx: ProviderContext): Promise<void> {
    let remaining = [...ids];
    for (let attempt = 0; remaining.length > 0; attempt += 1) {
      try {
        await ec2.client.send(new ec2.sdk.TerminateInstancesCommand({ InstanceIds: remaining }), { abortSignal: ctx.signal });
        return;
      } catch (error) {
        if (awsErrorCode(error) !== "InvalidInstanceID.NotFound" || attempt >= 2) throw error;
        const known = await describeInstancesById(ec2, remaining, ctx.signal);
        const gone = remaining.filter((id) => !known.has(id));
        ctx.logger.debug("instances already gone count as terminated", { instanceIds: gone });
        remaining = remaining.filter((id) => known.has(id) && known.get(id)!.State?.Name !== "terminated");
      }
    }
  }

  return {
    async launch(request, ctx) {
      throwIfAborted(ctx.signal);
      assertLaunchCount(request.count);
      const settings = launchSettings(request.config);
      // Validate the tags before any call: a bad label must not leave half a launch behind.
      launchTags(request, settings, "000000");
      const what = `Launching ${formatTarget(request.target)} release ${request.release}`;
      const ec2 = await clients.ec2();
      try {
        const found = (
          await describeInstances(
            ec2,
            [
              exactTag(LABELS.managed, "true"),
              exactTag(LABELS.launchKey, request.idempotencyKey),
              { Name: "instance-state-name", Values: ["pending", "running", "stopping", "stopped"] },
            ],
            ctx.signal,
          )
        ).slice(0, request.count);
        const slices = planLaunch(request.count, settings.subnetIds, found.map((instance) => ({ subnetId: instance.SubnetId })));
        if (found.length > 0) ctx.logger.debug("launch already started", { idempotencyKey: request.idempotencyKey, found: found.length, missing: request.count - found.length });
        if (slices.length > 0) await checkImage(ec2, request, what, ctx);
        const results = await Promise.allSettled(slices.map((slice) => runSlice(ec2, request, settings, slice, found.length, ctx)));
        const failure = results.find((result): result is PromiseRejectedResult => result.status === "rejected");
        if (failure) throw failure.reason;
        const launched = results.flatMap((result) => (result as PromiseFulfilledResult<Ec2Instance[]>).value);
        const ids = [...new Set([...found, ...launched].map((instance) => instance.InstanceId).filter((id): id is string => id !== undefined))];
        return (await waitRunning(ec2, ids, request, what, ctx)).sort(byName);
      } catch (error) {
        throw awsError(error, "LAUNCH_FAILED", what, endpoint());
      }
    },

    async list(selector, ctx) {
      throwIfAborted(ctx.signal);
      const ec2 = await clients.ec2();
      const filters: Filter[] = [
        ...Object.entries(selectorLabels(selector)).map(([key, value]) => exactTag(key, value)),
        { Name: "instance-state-name", Values: [...LIVE_INSTANCE_STATES] },
      ];
      try {
        const instances = await describeInstances(ec2, filters, ctx.signal);
        // A bake's builder instance carries the target's tags too, but is not an instance of a release.
        return instances
          .filter((instance) => !(instance.Tags ?? []).some((tag) => tag.Key === AWS_TAGS.role))
          .map(instanceFromEc2)
          .sort(byName);
      } catch (error) {
        throw awsError(error, "PROVIDER_UNAVAILABLE", `Listing the EC2 instances of ${formatTarget(selector.target)} failed`, endpoint());
      }
    },

    async terminate(instances, _options, ctx) {
      throwIfAborted(ctx.signal);
      const ids = [...new Set(instances.map((instance) => instance.id))];
      if (ids.length === 0) return;
      const ec2 = await clients.ec2();
      try {
        for (const batch of chunks(ids, TERMINATE_BATCH_SIZE)) await terminateBatch(ec2, batch, ctx);
        await waitFor(async () => {
          const seen = await describeInstancesById(ec2, ids, ctx.signal);
          const left = [...seen.values()].filter((instance) => instance.State?.Name !== "terminated");
          if (left.length === 0) return { done: true, value: undefined };
          return { done: false, reason: `${left.length} of ${ids.length} not terminated yet (${left.slice(0, 3).map((instance) => `${instance.InstanceId} is ${instance.State?.Name}`).join("; ")})` };
        }, waitOptions(ctx, `${ids.length} EC2 instance(s) to terminate`));
        ctx.logger.debug("instances terminated", { instanceIds: ids });
      } catch (error) {
        throw awsError(error, "TERMINATE_FAILED", `Terminating ${ids.length} EC2 instance(s)`, endpoint());
      }
    },
  };
}
