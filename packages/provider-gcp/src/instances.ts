/**
 * The gcp provider's instances: launch with `instances.insert` (a `requestId` per instance from
 * the journal step), list with one aggregated, label-filtered call across zones, terminate with
 * `instances.delete`; one wait loop per operation.
 * @module
 */
import type * as ComputeSdk from "@google-cloud/compute";
import {
  KilnError,
  LABELS,
  assertLaunchCount,
  decodeInstanceLabels,
  formatTarget,
  instanceLabels,
  readSection,
  selectorLabels,
  throwIfAborted,
  type Endpoint,
  type Instance,
  type InstanceOperations,
  type InstanceState,
  type LaunchRequest,
  type ProviderContext,
} from "@kilnjs/core";
import { GCE_PROVIDER_LABEL_KEYS, GCE_KILN_INSTANCE_LABEL_COUNT, fromGceLabels, toGceLabels } from "./labels.js";
import { instanceName } from "./names.js";
import { requestIdFor } from "./request-id.js";
import { gceLabelProblems } from "./rules.js";
import { forEachLimited, labelFilter, type GceInstance, type GceOperation, type GcpRuntime } from "./runtime.js";
import { gcpInstancesSchema, gcpProviderSpec, type GcpInstanceSettings } from "./spec.js";
import { readGceError } from "./errors.js";

/**
 * The metadata items Kiln writes on each instance beside the user's: the release's image (the
 * instance's boot disk names its disk, not its image) and Kiln's labels as JSON, because a label
 * value too long for Compute Engine's 63 characters is stored hashed ({@link toGceLabels}) and
 * cannot be read back from the label.
 */
export const GCE_INSTANCE_METADATA_KEYS = { image: "kiln-image", labels: "kiln-labels" } as const;

/**
 * The launch settings of a release: its `instances.gcp` section, or, for a release without one,
 * the section's defaults (e2-small, the `default` network, no service account, a pd-balanced
 * boot disk of the image's size).
 */
export function launchSettings(config: Pick<LaunchRequest["config"], "providerSettings">): GcpInstanceSettings {
  return readSection(gcpProviderSpec, "instances", config.providerSettings) ?? gcpInstancesSchema.parse({});
}

/**
 * Maps a Compute Engine instance status to an {@link InstanceState}: PROVISIONING and STAGING are
 * `pending`, RUNNING `running`, STOPPING, SUSPENDING and PENDING_STOP `stopping`, TERMINATED
 * (stopped, not deleted) and SUSPENDED `stopped`; anything else (REPAIRING) `unknown`.
 * @see https://cloud.google.com/compute/docs/instances/instance-life-cycle
 */
export function instanceState(status: string | null | undefined): InstanceState {
  switch (status) {
    case "PROVISIONING":
    case "STAGING":
      return "pending";
    case "RUNNING":
      return "running";
    case "STOPPING":
    case "SUSPENDING":
    case "PENDING_STOP":
      return "stopping";
    case "TERMINATED":
    case "SUSPENDED":
      return "stopped";
    default:
      return "unknown";
  }
}

/**
 * Kiln's id of a Compute Engine instance: `projects/P/zones/Z/instances/NAME`, the partial URL
 * Compute Engine itself refers to instances by. Unique, and enough to delete the instance
 * without a lookup.
 */
export function instanceId(project: string, zone: string, name: string): string {
  return `projects/${project}/zones/${zone}/instances/${name}`;
}

/** Reads {@link instanceId} back; undefined for any other text. */
export function parseInstanceId(id: string): { project: string; zone: string; name: string } | undefined {
  const match = /^projects\/([^/]+)\/zones\/([^/]+)\/instances\/([^/]+)$/.exec(id);
  return match ? { project: match[1]!, zone: match[2]!, name: match[3]! } : undefined;
}

function metadataOf(instance: GceInstance): Map<string, string> {
  return new Map((instance.metadata?.items ?? []).map((item) => [item.key ?? "", item.value ?? ""]));
}

/**
 * An {@link Instance} from a Compute Engine instance: `labels` are its labels mapped back to
 * core's keys (values too long for a label come from the `kiln-labels` metadata item), endpoints
 * are the ports of the ports label on the first network interface's `networkIP` (none until it has
 * one), `imageId` is the `kiln-image` metadata item, and `restartCount` is 0: Compute Engine
 * reports no restart count (a host maintenance migrates the VM, it does not restart it).
 */
export function instanceFromGce(project: string, zone: string, instance: GceInstance): Instance {
  const name = instance.name ?? "";
  const metadata = metadataOf(instance);
  let kept: Record<string, string>;
  try {
    kept = JSON.parse(metadata.get(GCE_INSTANCE_METADATA_KEYS.labels) ?? "{}") as Record<string, string>;
  } catch {
    kept = {};
  }
  const labels = { ...kept, ...fromGceLabels(instance.labels) };
  const decoded = decodeInstanceLabels(labels);
  const host = instance.networkInterfaces?.[0]?.networkIP ?? "";
  const endpoints: Record<string, Endpoint> = {};
  if (host) for (const port of decoded.ports) endpoints[port.name] = { host, port: port.port };
  return {
    id: instanceId(project, zone, name),
    name,
    target: decoded.target ?? { service: "", environment: "" },
    release: decoded.release,
    rolloutId: decoded.rolloutId,
    imageId: metadata.get(GCE_INSTANCE_METADATA_KEYS.image) ?? "",
    state: instanceState(instance.status),
    restartCount: 0,
    endpoints,
    createdAt: instance.creationTimestamp ? new Date(instance.creationTimestamp).toISOString() : new Date(0).toISOString(),
    labels,
  };
}

/**
 * The labels of every instance of a launch: the release's own labels, then Kiln's
 * ({@link instanceLabels}: managed, service, environment, release, rollout, fingerprint, launch key,
 * ports), mapped to Compute Engine's alphabet with {@link toGceLabels}. Kiln's keys win.
 * @throws KilnError INVALID_ARGUMENT when the release's labels break Compute Engine's label rules
 */
export function launchLabels(request: LaunchRequest): Record<string, string> {
  const problems = gceLabelProblems(request.config.labels, GCE_KILN_INSTANCE_LABEL_COUNT);
  if (problems.length > 0) {
    const text = problems.map((problem) => (problem.key !== undefined ? `label "${problem.key}": ${problem.message}` : problem.message)).join("; ");
    throw new KilnError("INVALID_ARGUMENT", `The labels of ${formatTarget(request.target)} (instances.labels) cannot all be Compute Engine labels: ${text}.`, { details: { problems } });
  }
  return toGceLabels({ ...request.config.labels, ...instanceLabels(request) });
}

/** The Compute Engine reference of a release's image: a name in the provider's project, or a partial or full URL as given. */
export function sourceImageOf(project: string, imageId: string): string {
  return imageId.includes("/") ? imageId : `projects/${project}/global/images/${imageId}`;
}

/**
 * The `instances.insert` body of one instance: machine type, network or subnetwork, service
 * account, boot disk from the release's image (auto-deleted with the instance), labels, and the
 * user's metadata with Kiln's {@link GCE_INSTANCE_METADATA_KEYS}.
 * @see https://cloud.google.com/compute/docs/reference/rest/v1/instances/insert
 */
export function instanceResource(request: LaunchRequest, settings: GcpInstanceSettings, where: { project: string; zone: string; region: string }, name: string): ComputeSdk.protos.google.cloud.compute.v1.IInstance {
  const network = settings.network === undefined ? undefined : settings.network.includes("/") ? settings.network : `global/networks/${settings.network}`;
  const subnetwork = settings.subnetwork === undefined ? undefined : settings.subnetwork.includes("/") ? settings.subnetwork : `regions/${where.region}/subnetworks/${settings.subnetwork}`;
  const metadata = {
    ...settings.metadata,
    [GCE_INSTANCE_METADATA_KEYS.image]: request.image.id,
    [GCE_INSTANCE_METADATA_KEYS.labels]: JSON.stringify(instanceLabels(request)),
  };
  return {
    name,
    machineType: `zones/${where.zone}/machineTypes/${settings.machineType}`,
    labels: launchLabels(request),
    disks: [
      {
        boot: true,
        autoDelete: true,
        initializeParams: {
          sourceImage: sourceImageOf(where.project, request.image.id),
          diskType: `zones/${where.zone}/diskTypes/${settings.bootDisk.type}`,
          ...(settings.bootDisk.sizeGb !== undefined ? { diskSizeGb: String(settings.bootDisk.sizeGb) } : {}),
        },
      },
    ],
    networkInterfaces: [{ ...(network !== undefined ? { network } : subnetwork === undefined ? { network: "global/networks/default" } : {}), ...(subnetwork !== undefined ? { subnetwork } : {}) }],
    metadata: { items: Object.entries(metadata).map(([key, value]) => ({ key, value })) },
    ...(settings.serviceAccount ? { serviceAccounts: [{ email: settings.serviceAccount.email, scopes: [...settings.serviceAccount.scopes] }] } : {}),
  };
}

function byName(a: Instance, b: Instance): number {
  return a.name.localeCompare(b.name);
}

/**
 * Creates the gcp provider's {@link InstanceOperations}.
 *
 * - `launch(request, ctx)`: names the instances from the launch step ({@link instanceName}: the
 *   same step always gives the same names), lists those that exist already with ONE aggregated
 *   list filtered on the launch key, and inserts each missing one with `instances.insert` carrying
 *   a `requestId` from {@link requestIdFor} (the step, the call, the instance's name): a retry after
 *   a time-out or throttling gets the original operation back, never a second VM. At most
 *   `concurrency` inserts at a time, each awaited with one wait loop on its operation. An operation
 *   that ends DONE with errors fails the launch with `LAUNCH_FAILED` and the operation's codes in
 *   `details.operationErrors` (`QUOTA_EXCEEDED`; `ZONE_RESOURCE_POOL_EXHAUSTED` retryable);
 *   instances made before a failure keep their labels, so a retry with the same key adopts them and
 *   a rolled-back rollout finds and terminates them. Instances of the launch found stopped
 *   (TERMINATED) are started again (`instances.start`, with a `requestId`). Returns the instances as one more aggregated
 *   list sees them (PROVISIONING/STAGING are `pending`): health is core's concern. `env`, `command`,
 *   `memoryBytes`, `cpus` and `hostPort` have no Compute Engine counterpart and are ignored (the
 *   image decides what runs, the machine type the size). Throws `INVALID_ARGUMENT` (count below 1,
 *   no zone, labels that are not valid Compute Engine labels), `CAPABILITY_MISSING` (secrets: not
 *   delivered by this provider yet), `LAUNCH_FAILED`, `TIMEOUT`, `THROTTLED`,
 *   `PROVIDER_UNAVAILABLE`, `ABORTED`.
 * - `list(selector, ctx)`: ONE `instances.aggregatedList` across every zone of the project,
 *   filtered on Kiln's labels (managed, service, environment, and release / rollout when given);
 *   a bake's builder VMs (label `kiln-role`) are left out. Sorted by name.
 * - `terminate(instances, options, ctx)`: `instances.delete` per instance with a `requestId` from
 *   the instance's id and creation time, at most `concurrency` at a time, each awaited with one wait
 *   loop; an instance already gone counts as terminated. Compute Engine shuts the guest down
 *   (ACPI) and stops it after its own shutdown period, so `gracePeriodMs` cannot be enforced.
 *   Throws `TERMINATE_FAILED`, `TIMEOUT`, `THROTTLED`, `PROVIDER_UNAVAILABLE`, `ABORTED`.
 *
 * There is no `exec`: Compute Engine runs no command in a VM without an agent.
 */
export function createInstanceOperations(runtime: GcpRuntime): InstanceOperations {
  /** One instance insert and its operation; `alreadyExists` (a request id older than Compute Engine keeps) counts as made. */
  async function insertOne(request: LaunchRequest, settings: GcpInstanceSettings, where: { project: string; zone: string; region: string }, name: string, what: string, ctx: ProviderContext): Promise<void> {
    const { instances } = await runtime.clients.clients();
    const requestId = requestIdFor({ step: request.idempotencyKey, call: "instances.insert", resource: name });
    let operation: GceOperation;
    try {
      const [started] = await runtime.clients.backoff.call(() => instances.insert({ project: where.project, zone: where.zone, requestId, instanceResource: instanceResource(request, settings, where, name) }), ctx.signal);
      operation = started.latestResponse as GceOperation;
    } catch (error) {
      if (readGceError(error)?.kind === "already-exists") {
        ctx.logger.debug("instance of this launch exists already", { instance: name });
        return;
      }
      throw error;
    }
    await runtime.waitForOperation(operation, { zone: where.zone }, "LAUNCH_FAILED", `${what}: inserting instance ${name}`, ctx.signal);
  }

  /**
   * Starts an instance of the launch found stopped, with a `requestId` from the launch step, the
   * instance and when it was stopped (a later stop of the same instance gets a new id).
   */
  async function startOne(request: LaunchRequest, project: string, zone: string, instance: GceInstance, what: string, ctx: ProviderContext): Promise<void> {
    const { instances } = await runtime.clients.clients();
    const name = instance.name ?? "";
    const requestId = requestIdFor({ step: request.idempotencyKey, call: "instances.start", resource: `${name} stopped ${instance.lastStopTimestamp ?? ""}` });
    const [started] = await runtime.clients.backoff.call(() => instances.start({ project, zone, instance: name, requestId }), ctx.signal);
    await runtime.waitForOperation(started.latestResponse as GceOperation, { zone }, "LAUNCH_FAILED", `${what}: starting instance ${name}, found stopped`, ctx.signal);
  }

  /** The launch's instances, by the launch-key label, in one aggregated list. */
  async function launched(request: LaunchRequest, signal: AbortSignal): Promise<Array<{ zone: string; instance: GceInstance }>> {
    return runtime.listInstances(labelFilter({ [LABELS.managed]: "true", [LABELS.launchKey]: request.idempotencyKey }), signal);
  }

  async function deleteOne(instance: Instance, ctx: ProviderContext): Promise<void> {
    const where = parseInstanceId(instance.id);
    if (!where) throw new KilnError("INVALID_ARGUMENT", `"${instance.id}" is not an instance id of the gcp provider (projects/P/zones/Z/instances/NAME).`);
    const { instances } = await runtime.clients.clients();
    const requestId = requestIdFor({ step: `terminate ${instance.createdAt}`, call: "instances.delete", resource: instance.id });
    let operation: GceOperation;
    try {
      const [started] = await runtime.clients.backoff.call(() => instances.delete({ project: where.project, zone: where.zone, instance: where.name, requestId }), ctx.signal);
      operation = started.latestResponse as GceOperation;
    } catch (error) {
      if (readGceError(error)?.kind === "not-found") return;
      throw error;
    }
    await runtime.waitForOperation(operation, { zone: where.zone }, "TERMINATE_FAILED", `Deleting instance ${where.name}`, ctx.signal);
  }

  return {
    async launch(request, ctx) {
      throwIfAborted(ctx.signal);
      assertLaunchCount(request.count);
      if ((request.config.secrets?.length ?? 0) > 0) {
        throw new KilnError("CAPABILITY_MISSING", `The gcp provider cannot hand secrets to instances yet; remove instances.secrets from ${formatTarget(request.target)} or use another provider.`);
      }
      const settings = launchSettings(request.config);
      // Validate before any call: a bad label must not leave half a launch behind.
      launchLabels(request);
      const zone = runtime.zone(settings.zone);
      const what = `Launching ${formatTarget(request.target)} release ${request.release}`;
      try {
        const project = await runtime.project();
        if (settings.project !== undefined && settings.project !== project) {
          throw new KilnError(
            "INVALID_ARGUMENT",
            `${what}: instances.gcp.project is ${settings.project}, but the provider works in ${project}; Kiln lists and removes instances in the provider's project only, so set the provider's project (or GCLOUD_PROJECT) to ${settings.project}.`,
          );
        }
        const where = { project, zone, region: settings.region ?? zone.replace(/-[a-z]$/, "") };
        const names = Array.from({ length: request.count }, (_, index) => instanceName({ target: request.target, release: request.release, launchKey: request.idempotencyKey, index }));
        const found = await launched(request, ctx.signal);
        const existing = new Set(found.map(({ instance }) => instance.name));
        const missing = names.filter((name) => !existing.has(name));
        if (existing.size > 0) ctx.logger.debug("launch already started", { idempotencyKey: request.idempotencyKey, found: names.length - missing.length, missing: missing.length });
        // Instances of this launch found stopped (TERMINATED) are started again, as the launch's own.
        const stopped = found.filter(({ instance }) => instance.status === "TERMINATED" && names.includes(instance.name ?? ""));
        if (stopped.length > 0) ctx.logger.info("starting instances of the launch found stopped", { instances: stopped.map(({ instance }) => instance.name) });
        await forEachLimited(
          [...missing.map((name) => () => insertOne(request, settings, where, name, what, ctx)), ...stopped.map(({ zone: at, instance }) => () => startOne(request, project, at, instance, what, ctx))],
          runtime.concurrency,
          (call) => call(),
          ctx.signal,
        );
        const wanted = new Set(names);
        const seen = (await launched(request, ctx.signal)).filter(({ instance }) => wanted.has(instance.name ?? ""));
        const result = seen.map(({ zone: at, instance }) => instanceFromGce(project, at, instance)).sort(byName);
        if (result.length !== names.length) {
          throw new KilnError("LAUNCH_FAILED", `${what}: ${names.length} instance(s) were made but ${result.length} are listed; the list may lag behind, so deploy again (the same launch adopts what exists).`, { retryable: true });
        }
        return result;
      } catch (error) {
        throw runtime.error(error, "LAUNCH_FAILED", what);
      }
    },

    async list(selector, ctx) {
      throwIfAborted(ctx.signal);
      const what = `Listing the Compute Engine instances of ${formatTarget(selector.target)}`;
      try {
        const project = await runtime.project();
        const found = await runtime.listInstances(labelFilter(selectorLabels(selector)), ctx.signal);
        return found
          .filter(({ instance }) => instance.labels?.[GCE_PROVIDER_LABEL_KEYS.role] === undefined)
          .map(({ zone, instance }) => instanceFromGce(project, zone, instance))
          .sort(byName);
      } catch (error) {
        throw runtime.error(error, "PROVIDER_UNAVAILABLE", what);
      }
    },

    async terminate(instances, _options, ctx) {
      throwIfAborted(ctx.signal);
      const unique = [...new Map(instances.map((instance) => [instance.id, instance])).values()];
      if (unique.length === 0) return;
      try {
        await forEachLimited(unique, runtime.concurrency, (instance) => deleteOne(instance, ctx), ctx.signal);
        ctx.logger.debug("instances deleted", { instances: unique.map((instance) => instance.name) });
      } catch (error) {
        throw runtime.error(error, "TERMINATE_FAILED", `Terminating ${unique.length} Compute Engine instance(s)`);
      }
    },
  };
}

