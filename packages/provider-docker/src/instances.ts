import { randomBytes } from "node:crypto";
import { Writable } from "node:stream";
import type Dockerode from "dockerode";
import {
  KilnError,
  LABELS,
  assertLaunchCount,
  childContext,
  decodeInstanceLabels,
  instanceLabels,
  resourceName,
  selectorLabels,
  throwIfAborted,
  type Endpoint,
  type Instance,
  type InstanceOperations,
  type InstanceState,
  type LaunchRequest,
  type ProviderContext,
} from "@kilnjs/core";
import { engineError, messageOf, statusOf, type EngineClient } from "./engine.js";
import type { ResolvedOptions } from "./options.js";
import { DOCKER_NAME_MAX_LENGTH, legacyTargetNetworkName, targetNetworkName } from "./proxy/config.js";
import { assertFileSecretsReachable, createSecretFileStore, fileSecretsUnsupported, isMissingMountSource, secretEnv, secretValues, withoutSecrets, type SecretFileStore } from "./secrets.js";
import { createNetworkEnsurer, type NetworkEnsurer } from "./proxy/network.js";

/**
 * Labels the Docker provider adds beside core's {@link LABELS} (which carry the launch key and the
 * named ports too).
 */
export const DOCKER_LABELS = {
  /** What a Kiln container that is not an instance is for: `proxy` on a target's front proxy. */
  role: "dev.kiln.role",
  /** On a front proxy: the `host:port` it publishes, so a changed address is noticed. */
  proxyAddress: "dev.kiln.proxy-address",
} as const;

/** Maps Docker's container status to an {@link InstanceState}. */
export function instanceState(status: string | undefined): InstanceState {
  switch (status) {
    case "created":
    case "restarting":
      return "pending";
    case "running":
      return "running";
    case "paused":
    case "exited":
    case "dead":
      return "stopped";
    case "removing":
      return "terminated";
    default:
      return "unknown";
  }
}

/**
 * `<service>.<environment>.r<release>.<6 random hex>` (core's `resourceName`, injective in the
 * target): unique even across versions of a release. Instances are found by their labels, never by
 * name, so containers named the earlier way (`<service>-<environment>-r<release>-<hex>`) are still managed.
 */
export function containerName(request: LaunchRequest): string {
  return resourceName(request.target, { parts: [`r${request.release}`, randomBytes(3).toString("hex")], maxLength: DOCKER_NAME_MAX_LENGTH });
}

/** Common part of an {@link Instance}, from labels. */
function baseInstance(labels: Record<string, string>): Pick<Instance, "target" | "release" | "rolloutId" | "labels"> {
  const decoded = decodeInstanceLabels(labels);
  return {
    target: decoded.target ?? { service: "", environment: "" },
    release: decoded.release,
    rolloutId: decoded.rolloutId,
    labels: { ...labels },
  };
}

/**
 * The container's address on its (first) Docker network, for ports it does not publish (behind a
 * front proxy): reachable from the engine's host, where Kiln runs next to a local engine.
 */
function networkAddress(networks: Record<string, { IPAddress?: string }> | undefined, labels: Record<string, string>): string | undefined {
  // Behind a front proxy, the address on the target's network (the one the proxy uses) comes first.
  const service = labels[LABELS.service];
  const environment = labels[LABELS.environment];
  const target = service && environment ? { service, environment } : undefined;
  const preferred = target ? (networks?.[targetNetworkName(target)]?.IPAddress ?? networks?.[legacyTargetNetworkName(target)]?.IPAddress) : undefined;
  return preferred || Object.values(networks ?? {}).find((network) => network.IPAddress)?.IPAddress || undefined;
}

/** An {@link Instance} from `GET /containers/{id}/json` data. */
export function instanceFromInspect(info: Dockerode.ContainerInspectInfo, endpointHost: string): Instance {
  const labels = info.Config?.Labels ?? {};
  const endpoints: Record<string, Endpoint> = {};
  const bindings = info.NetworkSettings?.Ports ?? {};
  for (const port of decodeInstanceLabels(labels).ports) {
    const published = (bindings[`${port.port}/${port.protocol}`] ?? []).find((binding) => binding.HostPort);
    if (published) endpoints[port.name] = { host: endpointHost, port: Number(published.HostPort) };
    else if (networkAddress(info.NetworkSettings?.Networks, labels)) endpoints[port.name] = { host: networkAddress(info.NetworkSettings?.Networks, labels)!, port: port.port };
  }
  return {
    id: info.Id,
    name: info.Name.replace(/^\//, ""),
    imageId: info.Image,
    state: instanceState(info.State?.Status),
    restartCount: info.RestartCount ?? 0,
    endpoints,
    createdAt: new Date(info.Created).toISOString(),
    ...baseInstance(labels),
  };
}

/**
 * An {@link Instance} from `GET /containers/json` data. The list data holds no restart count:
 * `restartCount` is 0 here unless `restartCount` is given (from an inspect).
 */
export function instanceFromList(info: Dockerode.ContainerInfo, endpointHost: string, restartCount = 0): Instance {
  const labels = info.Labels ?? {};
  const endpoints: Record<string, Endpoint> = {};
  for (const port of decodeInstanceLabels(labels).ports) {
    const published = (info.Ports ?? []).find((entry) => entry.PrivatePort === port.port && entry.Type === port.protocol && entry.PublicPort);
    if (published) endpoints[port.name] = { host: endpointHost, port: published.PublicPort };
    else if (networkAddress(info.NetworkSettings?.Networks, labels)) endpoints[port.name] = { host: networkAddress(info.NetworkSettings?.Networks, labels)!, port: port.port };
  }
  return {
    id: info.Id,
    name: (info.Names?.[0] ?? info.Id).replace(/^\//, ""),
    imageId: info.ImageID,
    state: instanceState(info.State),
    restartCount,
    endpoints,
    createdAt: new Date(info.Created * 1000).toISOString(),
    ...baseInstance(labels),
  };
}

/**
 * The `POST /containers/create` body for one instance of a launch request. Secrets delivered as
 * environment variables join `Env` (the engine keeps them in the container's configuration, which
 * `docker inspect` shows); `secretMounts` are the read-only bind mounts of file secrets (see
 * {@link createSecretFileStore}). No label holds a secret.
 * @param targetNetwork - the target's network (found by its labels), which instances behind a
 *   front proxy join; @defaultValue the name a new one gets ({@link targetNetworkName})
 */
export function containerCreateOptions(
  request: LaunchRequest,
  options: ResolvedOptions,
  name: string,
  targetNetwork = targetNetworkName(request.target),
  secretMounts: readonly Dockerode.MountSettings[] = [],
): Dockerode.ContainerCreateOptions {
  const { config } = request;
  const labels: Record<string, string> = { ...config.labels, ...instanceLabels(request) };
  const exposed: Record<string, object> = {};
  const bindings: Record<string, { HostIp: string; HostPort: string }[]> = {};
  for (const port of config.ports) {
    const key = `${port.port}/${port.protocol}`;
    exposed[key] = {};
    // A pinned host port when the spec asks for one; otherwise a random one on publishHost.
    if (config.publishPorts !== false) bindings[key] = [{ HostIp: options.publishHost, HostPort: port.hostPort === undefined ? "" : String(port.hostPort) }];
  }
  return {
    name,
    Image: request.image.id,
    Labels: labels,
    Env: [...Object.entries(config.env).map(([key, value]) => `${key}=${value}`), ...secretEnv(request)],
    ...(config.command === undefined ? {} : { Cmd: [...config.command] }),
    ExposedPorts: exposed,
    StopTimeout: Math.ceil(config.stopGracePeriodMs / 1000),
    HostConfig: {
      ...(config.memoryBytes === undefined ? {} : { Memory: config.memoryBytes }),
      ...(config.cpus === undefined ? {} : { NanoCpus: Math.round(config.cpus * 1e9) }),
      RestartPolicy: { Name: "unless-stopped" },
      PortBindings: bindings,
      ...(secretMounts.length === 0 ? {} : { Mounts: [...secretMounts] }),
      // Behind a front proxy (ports not published) the container joins the target's network, where
      // the proxy reaches it; the configured network, if any, is connected as well after creation.
      ...(config.publishPorts === false
        ? { NetworkMode: targetNetwork }
        : options.network === undefined
          ? {}
          : { NetworkMode: options.network }),
    },
  };
}

function byName(a: Instance, b: Instance): number {
  return a.name.localeCompare(b.name);
}

/** Instance operations against one engine. */
export function createInstanceOperations(
  client: EngineClient,
  options: ResolvedOptions,
  ensureTargetNetwork: NetworkEnsurer = createNetworkEnsurer(),
  secretFiles: SecretFileStore = createSecretFileStore(client.address, options.secretsDir),
): InstanceOperations {
  const address = client.address;
  let network: Promise<void> | undefined;

  /** Creates the configured network once, when it does not exist. */
  function ensureNetwork(docker: Dockerode, ctx: ProviderContext): Promise<void> {
    const name = options.network;
    if (name === undefined) return Promise.resolve();
    network ??= (async () => {
      try {
        await docker.getNetwork(name).inspect();
        return;
      } catch (error) {
        if (statusOf(error) !== 404) throw error;
      }
      try {
        ctx.logger.info("creating Docker network", { network: name });
        await docker.createNetwork({ Name: name, CheckDuplicate: true, Driver: "bridge", Labels: { [LABELS.managed]: "true" } });
      } catch (error) {
        if (statusOf(error) !== 409) throw error;
      }
    })().catch((error: unknown) => {
      network = undefined;
      throw error;
    });
    return network;
  }

  /**
   * Creates and starts one container; a container that fails to start is removed again, with its
   * secret files.
   */
  async function launchOne(docker: Dockerode, request: LaunchRequest, targetNetwork: string | undefined, ctx: ProviderContext): Promise<Instance> {
    const name = containerName(request);
    const mounts = await secretFiles.write(docker, name, request, ctx);
    let container: Dockerode.Container;
    try {
      container = await docker.createContainer({ ...containerCreateOptions(request, options, name, targetNetwork, mounts), abortSignal: ctx.signal });
    } catch (error) {
      if (mounts.length > 0) await secretFiles.remove(docker, [name], ctx);
      // The engine cannot see the folder Kiln just made: it runs elsewhere (another host, a VM, another mount namespace).
      if (mounts.length > 0 && isMissingMountSource(error)) throw fileSecretsUnsupported(address, "it cannot see the memory-backed folder Kiln wrote them to", error);
      throw error;
    }
    try {
      if (request.config.publishPorts === false && options.network !== undefined && options.network !== targetNetwork) {
        await docker.getNetwork(options.network).connect({ Container: container.id });
      }
      await container.start({ abortSignal: ctx.signal });
    } catch (error) {
      await container.remove({ force: true }).catch((cleanup: unknown) => {
        ctx.logger.warn("removing a container that failed to start failed", { container: name, error: messageOf(cleanup) });
      });
      if (mounts.length > 0) await secretFiles.remove(docker, [name], ctx);
      throw error;
    }
    ctx.logger.debug("container started", { container: name, id: container.id });
    return instanceFromInspect(await container.inspect({ abortSignal: ctx.signal }), options.endpointHost);
  }

  /** Starts a container a previous launch created but did not start. */
  async function resume(docker: Dockerode, info: Dockerode.ContainerInfo, ctx: ProviderContext): Promise<Instance> {
    const container = docker.getContainer(info.Id);
    if (info.State === "created") {
      try {
        await container.start({ abortSignal: ctx.signal });
      } catch (error) {
        if (statusOf(error) !== 304) throw error;
      }
    }
    return instanceFromInspect(await container.inspect({ abortSignal: ctx.signal }), options.endpointHost);
  }

  return {
    async launch(request, ctx) {
      throwIfAborted(ctx.signal);
      assertLaunchCount(request.count);
      assertFileSecretsReachable(address, request);
      const docker = await client.get();
      let existing: Dockerode.ContainerInfo[];
      let targetNetwork: string | undefined;
      try {
        if (request.config.publishPorts === false) targetNetwork = (await ensureTargetNetwork(docker, request.target, ctx)).name;
        await ensureNetwork(docker, ctx);
        existing = (
          await docker.listContainers({
            all: true,
            filters: { label: [`${LABELS.managed}=true`, `${LABELS.launchKey}=${request.idempotencyKey}`] },
            abortSignal: ctx.signal,
          })
        ).filter((info) => info.State !== "removing" && info.State !== "dead");
      } catch (error) {
        throw engineError(error, address, "LAUNCH_FAILED", `Launching ${request.target.service}@${request.target.environment} failed`);
      }
      const missing = Math.max(0, request.count - existing.length);
      if (existing.length > 0) ctx.logger.debug("launch already started", { idempotencyKey: request.idempotencyKey, existing: existing.length, missing });

      // One signal per container: engine requests on the caller's one signal would add a listener per container to it.
      const results = await Promise.allSettled([
        ...existing.map((info) => resume(docker, info, childContext(ctx))),
        ...Array.from({ length: missing }, () => launchOne(docker, request, targetNetwork, childContext(ctx))),
      ]);
      const failure = results.find((result): result is PromiseRejectedResult => result.status === "rejected");
      if (failure) {
        // An engine's message may quote the container's configuration, secrets included.
        throw withoutSecrets(
          engineError(failure.reason, address, "LAUNCH_FAILED", `Launching ${request.target.service}@${request.target.environment} release ${request.release} failed`),
          secretValues(request.secrets),
        );
      }
      return results.map((result) => (result as PromiseFulfilledResult<Instance>).value).sort(byName);
    },

    async list(selector, ctx) {
      throwIfAborted(ctx.signal);
      const label = Object.entries(selectorLabels(selector)).map(([key, value]) => `${key}=${value}`);
      try {
        // Read-only calls without dockerode: a deploy with nothing to do lists and never loads it.
        const containers = await client.reads.listContainers({ label }, ctx.signal);
        // The target's front proxy carries its labels too, but is not an instance.
        const live = containers.filter((info) => info.State !== "removing" && info.Labels?.[DOCKER_LABELS.role] === undefined);
        // Restart counts are not in the list data: inspect containers that are not running (the
        // few worth a second look), and running ones only when the caller asks for exact counts
        // (the rollout engine, while it gates); otherwise running ones report 0.
        const instances = await Promise.all(
          live.map(async (info) => {
            if (info.State === "running" && !selector.withRestartCounts) return instanceFromList(info, options.endpointHost);
            try {
              // A signal of its own per inspect (see childContext): not one listener per container on the caller's.
              const inspected = await client.reads.inspectContainer(info.Id, childContext(ctx).signal);
              return instanceFromList(info, options.endpointHost, inspected.RestartCount ?? 0);
            } catch (error) {
              if (statusOf(error) === 404) return undefined;
              throw error;
            }
          }),
        );
        return instances.filter((instance): instance is Instance => instance !== undefined).sort(byName);
      } catch (error) {
        throw engineError(error, address, "PROVIDER_UNAVAILABLE", "Listing containers failed");
      }
    },

    async exec(instance, command, { timeoutMs }, ctx) {
      throwIfAborted(ctx.signal);
      const docker = await client.get();
      try {
        const exec = await docker.getContainer(instance.id).exec({ Cmd: [...command], AttachStdout: true, AttachStderr: true, abortSignal: ctx.signal });
        const stream = await exec.start({ hijack: true, stdin: false, abortSignal: ctx.signal });
        const chunks: Buffer[] = [];
        const sink = new Writable({
          write(chunk: Buffer, _encoding, callback) {
            if (chunks.reduce((total, part) => total + part.length, 0) < 64 * 1024) chunks.push(chunk);
            callback();
          },
        });
        docker.modem.demuxStream(stream, sink, sink);
        await new Promise<void>((resolve, reject) => {
          const timer = setTimeout(() => {
            stream.destroy();
            reject(new KilnError("TIMEOUT", `${command.join(" ")} did not finish within ${timeoutMs} ms in ${instance.name}.`, { retryable: true }));
          }, timeoutMs);
          stream.once("end", () => {
            clearTimeout(timer);
            resolve();
          });
          stream.once("error", (error: Error) => {
            clearTimeout(timer);
            reject(error);
          });
        });
        const info = await exec.inspect({ abortSignal: ctx.signal });
        return { exitCode: info.ExitCode ?? -1, output: Buffer.concat(chunks).toString("utf8") };
      } catch (error) {
        if (error instanceof KilnError) throw error;
        throw engineError(error, address, "PROVIDER_UNAVAILABLE", `Running ${command[0] ?? "a command"} in ${instance.name} failed`);
      }
    },

    async terminate(instances, { gracePeriodMs }, ctx) {
      throwIfAborted(ctx.signal);
      const docker = await client.get();
      const t = Math.max(0, Math.ceil(gracePeriodMs / 1000));
      const results = await Promise.allSettled(
        instances.map(async (instance) => {
          const container = docker.getContainer(instance.id);
          try {
            await container.stop({ t });
          } catch (error) {
            // 304: already stopped; 404: already gone; 409: being removed.
            const status = statusOf(error);
            if (status === 404) return;
            if (status !== 304 && status !== 409) throw error;
          }
          try {
            await container.remove({ force: true });
          } catch (error) {
            const status = statusOf(error);
            if (status === 404) return;
            if (status === 409 && /already in progress/i.test(messageOf(error))) return;
            throw error;
          }
          ctx.logger.debug("container removed", { container: instance.name, id: instance.id });
        }),
      );
      const failures = results.filter((result): result is PromiseRejectedResult => result.status === "rejected");
      const removed = instances.filter((_, index) => results[index]!.status === "fulfilled").map((instance) => instance.name);
      await secretFiles.remove(docker, removed, ctx);
      if (failures.length > 0) {
        const first = engineError(failures[0]!.reason, address, "TERMINATE_FAILED", "Terminating containers failed");
        if (first.code !== "TERMINATE_FAILED") throw first;
        throw new KilnError("TERMINATE_FAILED", `${failures.length} of ${instances.length} containers could not be terminated: ${first.message}`, {
          cause: failures.length === 1 ? failures[0]!.reason : new AggregateError(failures.map((failure) => failure.reason as unknown)),
        });
      }
    },
  };
}
