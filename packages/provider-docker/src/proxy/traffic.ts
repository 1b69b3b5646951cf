import type Dockerode from "dockerode";
import {
  KilnError,
  LABELS,
  decodeInstanceLabels,
  formatTarget,
  isKilnError,
  targetLabels,
  throwIfAborted,
  waitFor,
  type Instance,
  type ProviderContext,
  type ProxyStatus,
  type ResolvedProxy,
  type Target,
  type TrafficCapability,
  type TrafficOptions,
} from "@kilnjs/core";
import { engineError, messageOf, statusOf, type EngineClient } from "../engine.js";
import { DOCKER_LABELS, instanceState } from "../instances.js";
import { LOCAL_PROXY_IMAGE, type ResolvedOptions } from "../options.js";
import {
  PROXY_ADMIN_PORT,
  PROXY_CONFIG_DIR,
  PROXY_CONFIG_FILE,
  PROXY_FRONTEND_PORT,
  PROXY_SLOTS,
  parseConfig,
  proxyContainerName,
  proxySettings,
  renderConfig,
  sameSettings,
  serverName,
  type ProxySettings,
  type ProxySlot,
} from "./config.js";
import { findTargetNetworks, type NetworkEnsurer, type TargetNetwork } from "./network.js";
import { clearCommands, enableCommands, isReady, parseServersState, parseStat, runtimeChange, runtimeCommand, type AdminAddress } from "./runtime.js";
import { readFileFromTar, tarOneFile } from "./tar.js";

/** The proxy container's role label value ({@link DOCKER_LABELS}.role). */
export const PROXY_ROLE = "proxy";

/** What the engine passes; `health` drives the proxy's active check (a TCP check without it). */
type Options = TrafficOptions & { readonly proxy: NonNullable<TrafficOptions["proxy"]> };

/** A running proxy Kiln can drive. */
interface LiveProxy {
  readonly container: Dockerode.Container;
  readonly admin: AdminAddress;
  /** The slots as written in its configuration, after reconciling them with the running containers. */
  slots: ProxySlot[];
  settings: ProxySettings;
}

/** A running container of the target, as the proxy needs it. */
interface Backend {
  readonly id: string;
  readonly name: string;
  /** Its address on the target's network; undefined when it is not attached to it. */
  readonly address: string | undefined;
  readonly labels: Record<string, string>;
}

/**
 * The Docker provider's traffic capability: a front proxy (HAProxy) per target, driven through its
 * runtime API. See docs/traffic.md.
 */
export function createTrafficCapability(client: EngineClient, options: ResolvedOptions, ensureNetwork: NetworkEnsurer): TrafficCapability {
  const address = client.address;
  /** One traffic call per target at a time in this process. */
  const queues = new Map<string, Promise<unknown>>();

  function serialize<T>(target: Target, run: () => Promise<T>): Promise<T> {
    const key = `${target.service}@${target.environment}`;
    const previous = queues.get(key) ?? Promise.resolve();
    const next = previous.catch(() => undefined).then(run);
    const settled = next.catch(() => undefined);
    queues.set(key, settled);
    void settled.then(() => {
      if (queues.get(key) === settled) queues.delete(key);
    });
    return next;
  }

  // ---- the proxy container ----

  async function inspect(container: Dockerode.Container, ctx: ProviderContext): Promise<Dockerode.ContainerInspectInfo | undefined> {
    try {
      return await container.inspect({ abortSignal: ctx.signal });
    } catch (error) {
      if (statusOf(error) === 404) return undefined;
      throw error;
    }
  }

  async function imageExists(docker: Dockerode, image: string): Promise<boolean> {
    try {
      await docker.getImage(image).inspect();
      return true;
    } catch (error) {
      if (statusOf(error) === 404) return false;
      throw error;
    }
  }

  /** The image rule: see {@link ResolvedOptions.proxyImage}. */
  async function proxyImage(docker: Dockerode, ctx: ProviderContext): Promise<string> {
    const wanted = options.proxyImage;
    if (await imageExists(docker, wanted)) return wanted;
    if (!options.proxyImageExplicit && (await imageExists(docker, LOCAL_PROXY_IMAGE))) {
      ctx.logger.info("the official proxy image is not on the engine; using the locally built one", { wanted, using: LOCAL_PROXY_IMAGE });
      return LOCAL_PROXY_IMAGE;
    }
    throw new KilnError(
      "LAUNCH_FAILED",
      `The front proxy image ${wanted} is not on the Docker engine, and Kiln does not pull images. Pull it (docker pull ${wanted}), ` +
        `or, on a machine without a registry, build ${LOCAL_PROXY_IMAGE} with scripts/proxy-image.sh (the provider then uses it when ` +
        `neither the proxyImage option nor KILN_DOCKER_PROXY_IMAGE names another image).`,
      { details: { image: wanted } },
    );
  }

  function proxyLabels(target: Target, proxy: ResolvedProxy): Record<string, string> {
    return {
      [LABELS.managed]: "true",
      [LABELS.service]: target.service,
      [LABELS.environment]: target.environment,
      [DOCKER_LABELS.role]: PROXY_ROLE,
      [DOCKER_LABELS.proxyAddress]: `${proxy.host}:${proxy.port}`,
    };
  }

  /** A proxy container one {@link openProxy} call made, and which of its parts that call created. */
  interface CreatedProxy {
    readonly container: Dockerode.Container;
    readonly name: string;
    readonly createdContainer: boolean;
    readonly volume: string;
    readonly createdVolume: boolean;
  }

  /**
   * Creates the target's proxy container as {@link proxyContainerName} (`kiln-proxy.<service>.<environment>`),
   * with its configuration on `volume` (a recreated proxy keeps its old one), and says what it created.
   */
  async function createProxy(docker: Dockerode, target: Target, proxy: ResolvedProxy, network: string, volume: string | undefined, ctx: ProviderContext): Promise<CreatedProxy> {
    const name = proxyContainerName(target);
    const image = await proxyImage(docker, ctx);
    const labels = proxyLabels(target, proxy);
    const volumeName = volume ?? name;
    // The configuration lives on a named volume, so a recreated proxy starts with the same servers.
    let createdVolume = false;
    try {
      await docker.getVolume(volumeName).inspect();
    } catch (error) {
      if (statusOf(error) !== 404) throw error;
      await docker.createVolume({ Name: volumeName, Labels: { ...targetLabels(target), [DOCKER_LABELS.role]: PROXY_ROLE } });
      createdVolume = true;
    }
    ctx.logger.info("creating the front proxy", { container: name, image, address: `${proxy.host}:${proxy.port}` });
    let createdContainer = true;
    try {
      await docker.createContainer({
        name,
        Image: image,
        Entrypoint: ["haproxy"],
        Cmd: ["-W", "-db", "-f", `${PROXY_CONFIG_DIR}/${PROXY_CONFIG_FILE}`],
        Labels: labels,
        ExposedPorts: { [`${PROXY_FRONTEND_PORT}/tcp`]: {}, [`${PROXY_ADMIN_PORT}/tcp`]: {} },
        StopSignal: "SIGUSR1",
        StopTimeout: 30,
        HostConfig: {
          RestartPolicy: { Name: "unless-stopped" },
          PortBindings: {
            [`${PROXY_FRONTEND_PORT}/tcp`]: [{ HostIp: proxy.host, HostPort: String(proxy.port) }],
            // The runtime API has no authentication: loopback only, a random port.
            [`${PROXY_ADMIN_PORT}/tcp`]: [{ HostIp: "127.0.0.1", HostPort: "" }],
          },
          NetworkMode: network,
          Mounts: [{ Type: "volume", Source: volumeName, Target: PROXY_CONFIG_DIR }],
        },
        abortSignal: ctx.signal,
      });
    } catch (error) {
      // 409: another Kiln process created it meanwhile.
      if (statusOf(error) !== 409) throw error;
      createdContainer = false;
    }
    return { container: docker.getContainer(name), name, createdContainer, volume: volumeName, createdVolume };
  }

  /** The label filter of the target's proxy containers and volumes. */
  function proxyFilter(target: Target): string[] {
    return [...Object.entries(targetLabels(target)).map(([key, value]) => `${key}=${value}`), `${DOCKER_LABELS.role}=${PROXY_ROLE}`];
  }

  /**
   * The target's proxy containers, found by their labels whatever their names (Kiln before
   * injective names called one `kiln-proxy-<service>-<environment>`): running ones first, then the oldest.
   */
  async function findProxies(docker: Dockerode, target: Target, ctx: ProviderContext): Promise<Dockerode.ContainerInfo[]> {
    const found = await docker.listContainers({ all: true, filters: { label: proxyFilter(target) }, abortSignal: ctx.signal });
    return found
      .filter((info) => info.State !== "removing")
      .sort((a, b) => Number(b.State === "running") - Number(a.State === "running") || a.Created - b.Created);
  }

  /** The volume a proxy keeps its configuration on. */
  function configVolumeOf(info: Dockerode.ContainerInspectInfo): string | undefined {
    return info.Mounts?.find((mount) => mount.Type === "volume" && mount.Destination === PROXY_CONFIG_DIR)?.Name;
  }

  /** Whether a published port's address `ip` takes `host`'s port too. */
  function overlaps(ip: string | undefined, host: string): boolean {
    const any = (address: string | undefined) => address === undefined || address === "" || address === "0.0.0.0" || address === "::";
    return any(ip) || any(host) || ip === host;
  }

  /**
   * Who holds `proxy`'s address, in words: a container that publishes it (named, and said to be a
   * Kiln front proxy or instance when its labels say so), else a process outside Docker.
   */
  async function portHolder(docker: Dockerode, proxy: ResolvedProxy, ctx: ProviderContext): Promise<string> {
    const running = await docker.listContainers({ abortSignal: ctx.signal });
    const holder = running.find((info) => (info.Ports ?? []).some((port) => port.PublicPort === proxy.port && overlaps(port.IP, proxy.host)));
    if (!holder) return "a process outside Docker (no running container publishes it)";
    const labels = holder.Labels ?? {};
    const name = (holder.Names?.[0] ?? holder.Id).replace(/^\//, "");
    const service = labels[LABELS.service];
    const environment = labels[LABELS.environment];
    const owner = service && environment ? formatTarget({ service, environment }) : undefined;
    if (owner && labels[DOCKER_LABELS.role] === PROXY_ROLE) return `the front proxy of ${owner} (container ${name})`;
    if (owner) return `container ${name}, an instance of ${owner}`;
    return `container ${name}`;
  }

  /**
   * The error for a proxy that would not start: when its address is taken, what holds it and
   * what to do; otherwise the engine's error as it is.
   */
  async function startFailure(docker: Dockerode, target: Target, proxy: ResolvedProxy, error: unknown, removed: boolean, ctx: ProviderContext): Promise<unknown> {
    if (!/port is already allocated|address already in use/i.test(messageOf(error))) return error;
    const address = `${proxy.host}:${proxy.port}`;
    const holder = await portHolder(docker, proxy, ctx).catch((cause: unknown) => `something Kiln could not identify (listing containers failed: ${messageOf(cause)})`);
    return new KilnError(
      "LAUNCH_FAILED",
      `The front proxy of ${formatTarget(target)} cannot publish ${address}: the port is held by ${holder}. ` +
        `Free the port, or give traffic.proxy another port.${removed ? " The proxy container, and the network and volume this attempt created, were removed." : ""}`,
      { cause: error, details: { address, holder } },
    );
  }

  /**
   * Removes what one attempt created for a proxy that would not start (its container, and its
   * volume and network when the attempt created them); what fails to go is logged.
   */
  async function removeFailedProxy(docker: Dockerode, created: CreatedProxy, network: TargetNetwork, ctx: ProviderContext): Promise<void> {
    const parts: Array<[string, () => Promise<unknown>]> = [];
    if (created.createdContainer) parts.push([`container ${created.name}`, () => created.container.remove({ force: true, v: false })]);
    if (created.createdVolume) parts.push([`volume ${created.volume}`, () => docker.getVolume(created.volume).remove()]);
    if (network.created) parts.push([`network ${network.name}`, () => docker.getNetwork(network.name).remove()]);
    for (const [what, remove] of parts) {
      try {
        await remove();
        ctx.logger.info("removed the front proxy's leftover after it failed to start", { what });
      } catch (error) {
        if (statusOf(error) !== 404) ctx.logger.warn("could not remove a leftover of a front proxy that failed to start", { what, error: messageOf(error) });
      }
    }
  }

  function publishesAt(info: Dockerode.ContainerInspectInfo, proxy: ResolvedProxy): boolean {
    return info.Config?.Labels?.[DOCKER_LABELS.proxyAddress] === `${proxy.host}:${proxy.port}`;
  }

  function adminAddress(info: Dockerode.ContainerInspectInfo): AdminAddress | undefined {
    const binding = (info.NetworkSettings?.Ports?.[`${PROXY_ADMIN_PORT}/tcp`] ?? []).find((entry) => entry.HostPort);
    return binding ? { host: "127.0.0.1", port: Number(binding.HostPort) } : undefined;
  }

  async function readConfig(container: Dockerode.Container): Promise<string> {
    try {
      const stream = await container.getArchive({ path: `${PROXY_CONFIG_DIR}/${PROXY_CONFIG_FILE}` });
      const chunks: Buffer[] = [];
      for await (const chunk of stream as AsyncIterable<Buffer>) chunks.push(chunk);
      return readFileFromTar(Buffer.concat(chunks), PROXY_CONFIG_FILE)?.toString("utf8") ?? "";
    } catch (error) {
      if (statusOf(error) === 404) return "";
      throw error;
    }
  }

  async function writeConfig(container: Dockerode.Container, target: Target, settings: ProxySettings, slots: readonly ProxySlot[]): Promise<void> {
    await container.putArchive(tarOneFile(PROXY_CONFIG_FILE, renderConfig(target, settings, slots)), { path: PROXY_CONFIG_DIR });
  }

  /** The target's running containers (not the proxy), with their addresses on its network. */
  async function backends(docker: Dockerode, target: Target, network: string, ctx: ProviderContext): Promise<Map<string, Backend>> {
    const containers = await docker.listContainers({
      filters: { label: [`${LABELS.managed}=true`, `${LABELS.service}=${target.service}`, `${LABELS.environment}=${target.environment}`], status: ["running"] },
      abortSignal: ctx.signal,
    });
    const byId = new Map<string, Backend>();
    for (const info of containers) {
      const labels = info.Labels ?? {};
      if (labels[DOCKER_LABELS.role] === PROXY_ROLE) continue;
      const networks = (info.NetworkSettings?.Networks ?? {}) as Record<string, { IPAddress?: string }>;
      byId.set(info.Id, { id: info.Id, name: (info.Names?.[0] ?? info.Id).replace(/^\//, ""), address: networks[network]?.IPAddress || undefined, labels });
    }
    return byId;
  }

  /** Keeps the slots whose container still runs, at its current address (an engine restart may change it). */
  function reconcile(slots: readonly ProxySlot[], running: Map<string, Backend>, ctx: ProviderContext): ProxySlot[] {
    const kept: ProxySlot[] = [];
    for (const slot of slots) {
      const backend = running.get(slot.containerId);
      if (!backend?.address) {
        ctx.logger.info("front proxy: dropping a server whose container no longer runs", { server: serverName(slot.slot), container: slot.containerName });
        continue;
      }
      kept.push(backend.address === slot.address ? slot : { ...slot, address: backend.address });
    }
    return kept;
  }

  async function waitForAdmin(container: Dockerode.Container, ctx: ProviderContext): Promise<AdminAddress> {
    return waitFor(
      async () => {
        const info = await inspect(container, ctx);
        if (!info) throw new KilnError("LAUNCH_FAILED", "The front proxy container disappeared while it started.");
        if (info.State?.Status === "exited" || info.State?.Status === "dead") {
          const logs = await container.logs({ stdout: true, stderr: true, tail: 20 }).catch(() => Buffer.from(""));
          throw new KilnError("LAUNCH_FAILED", `The front proxy exited (code ${info.State.ExitCode}): ${Buffer.from(logs).toString("utf8").replace(/[^\x20-\x7e\n]/g, "").trim()}`);
        }
        const admin = adminAddress(info);
        if (!info.State?.Running || !admin) return { done: false, reason: `the proxy is ${info.State?.Status ?? "unknown"}` };
        try {
          parseServersStateOrThrow(await runtimeCommand(admin, "show servers state", ctx.signal));
          return { done: true, value: admin };
        } catch (error) {
          if (isKilnError(error, "ABORTED")) throw error;
          return { done: false, reason: messageOf(error) };
        }
      },
      { timeoutMs: 20_000, minDelayMs: 50, maxDelayMs: 500, signal: ctx.signal, description: "the front proxy's runtime API to answer" },
    );
  }

  function parseServersStateOrThrow(text: string) {
    const servers = parseServersState(text);
    if (servers.length === 0) throw new Error(`unexpected answer to show servers state: ${text.slice(0, 200)}`);
    return servers;
  }

  /** Makes the running proxy's servers equal to `slots`; returns how many servers it changed. */
  async function applyToRuntime(admin: AdminAddress, slots: readonly ProxySlot[], ctx: ProviderContext, dryRun = false): Promise<number> {
    const servers = new Map(parseServersStateOrThrow(await runtimeCommand(admin, `show servers state`, ctx.signal)).map((server) => [server.name, server]));
    const bySlot = new Map(slots.map((slot) => [slot.slot, slot]));
    let changes = 0;
    for (let number = 1; number <= PROXY_SLOTS; number++) {
      const server = servers.get(serverName(number));
      if (!server) continue;
      const slot = bySlot.get(number);
      let commands: string[] = [];
      if (slot) {
        if (server.address !== slot.address || server.port !== slot.port || !isReady(server)) commands = enableCommands(number, slot.address, slot.port);
      } else if (isReady(server) || server.address !== "127.0.0.1") {
        commands = clearCommands(number);
      }
      if (commands.length === 0) continue;
      changes += 1;
      if (dryRun) continue;
      for (const command of commands) await runtimeChange(admin, command, ctx.signal);
    }
    return changes;
  }

  /**
   * Finds the target's proxy (creating it when `create`), makes sure it runs, and brings its
   * servers in line with its configuration file and the containers that still run.
   */
  async function openProxy(target: Target, opts: Options, create: boolean, ctx: ProviderContext): Promise<LiveProxy | undefined> {
    const docker = await client.get();
    const found = (await findProxies(docker, target, ctx))[0];
    let container = found ? docker.getContainer(found.Id) : undefined;
    let info = container ? await inspect(container, ctx) : undefined;
    const name = found ? (found.Names?.[0] ?? found.Id).replace(/^\//, "") : proxyContainerName(target);
    let keptVolume: string | undefined;
    if (info && container && create && !publishesAt(info, opts.proxy)) {
      ctx.logger.warn("the front proxy's address changed: recreating it (its servers are kept)", { container: name, address: `${opts.proxy.host}:${opts.proxy.port}` });
      keptVolume = configVolumeOf(info);
      await container.remove({ force: true });
      info = undefined;
    }
    if (!info && !create) return undefined;
    const network = await ensureNetwork(docker, target, ctx);
    let created: CreatedProxy | undefined;
    if (!info) {
      created = await createProxy(docker, target, opts.proxy, network.name, keptVolume, ctx);
      container = created.container;
      info = await inspect(container, ctx);
      if (!info) throw new KilnError("LAUNCH_FAILED", `The front proxy ${created.name} was created but cannot be found.`);
    }
    container = container!;
    const persisted = parseConfig(await readConfig(container));
    const running = await backends(docker, target, network.name, ctx);
    const slots = reconcile(persisted.slots, running, ctx);
    const settings = proxySettings(opts.proxy, opts.health);
    const slotsChanged = JSON.stringify(slots) !== JSON.stringify(persisted.slots);

    if (!info.State?.Running || info.State.Restarting) {
      try {
        // Not serving: write the configuration first, so it starts with the right servers.
        await writeConfig(container, target, settings, slots);
        try {
          await container.start({ abortSignal: ctx.signal });
        } catch (error) {
          if (statusOf(error) !== 304) throw error;
        }
        const admin = await waitForAdmin(container, ctx);
        return { container, admin, slots, settings };
      } catch (error) {
        // A proxy this call created and that would not start goes again, with what it brought.
        if (created) await removeFailedProxy(docker, created, network, ctx);
        throw await startFailure(docker, target, opts.proxy, error, created !== undefined, ctx);
      }
    }
    let admin = await waitForAdmin(container, ctx);
    if (!sameSettings(persisted.settings, settings)) {
      // New settings (a retry count, a check path): a reload (SIGUSR2 to HAProxy's master) reads
      // them; requests in flight finish on the old worker.
      ctx.logger.info("front proxy settings changed: reloading it", { container: name });
      await writeConfig(container, target, settings, slots);
      await container.kill({ signal: "SIGUSR2" });
      admin = await waitFor(
        async () => {
          const current = await waitForAdmin(container, ctx);
          const pending = await applyToRuntime(current, slots, ctx, true).catch(() => 1);
          return pending === 0 ? { done: true, value: current } : { done: false, reason: `${pending} servers differ from the configuration` };
        },
        { timeoutMs: 20_000, minDelayMs: 100, maxDelayMs: 500, signal: ctx.signal, description: "the front proxy to reload" },
      );
      return { container, admin, slots, settings };
    }
    if (slotsChanged) await writeConfig(container, target, settings, slots);
    const changed = await applyToRuntime(admin, slots, ctx);
    if (changed > 0) ctx.logger.info("front proxy: restored servers from its configuration", { container: name, changed });
    return { container, admin, slots, settings };
  }

  /** Attaches a running container to the target's network when it is not, and returns its address there. */
  async function addressOf(docker: Dockerode, instance: Instance, network: string, ctx: ProviderContext): Promise<string> {
    const container = docker.getContainer(instance.id);
    let info = await inspect(container, ctx);
    if (!info || !info.State?.Running) throw new KilnError("INVALID_ARGUMENT", `Instance ${instance.name} is not running; only running instances can get traffic.`);
    const current = (info.NetworkSettings?.Networks as Record<string, { IPAddress?: string }> | undefined)?.[network]?.IPAddress;
    if (current) return current;
    ctx.logger.info("attaching an instance to the front proxy's network", { instance: instance.name, network });
    await docker.getNetwork(network).connect({ Container: instance.id });
    info = await inspect(container, ctx);
    const attached = (info?.NetworkSettings?.Networks as Record<string, { IPAddress?: string }> | undefined)?.[network]?.IPAddress;
    if (!attached) throw new KilnError("INVALID_ARGUMENT", `Instance ${instance.name} has no address on network ${network}.`);
    return attached;
  }

  function portOf(instance: Instance, opts: Options): number {
    const port = decodeInstanceLabels(instance.labels).ports.find((entry) => entry.name === opts.proxy.portName);
    if (!port) {
      throw new KilnError("INVALID_ARGUMENT", `Instance ${instance.name} has no port named "${opts.proxy.portName}" for the front proxy to send traffic to.`);
    }
    return port.port;
  }

  async function register(instances: readonly Instance[], opts: Options, ctx: ProviderContext): Promise<void> {
    throwIfAborted(ctx.signal);
    if (instances.length === 0) return;
    const live = (await openProxy(opts.target, opts, true, ctx))!;
    const docker = await client.get();
    const network = (await ensureNetwork(docker, opts.target, ctx)).name;
    const slots = [...live.slots];
    const added: ProxySlot[] = [];
    for (const instance of instances) {
      const address = await addressOf(docker, instance, network, ctx);
      const port = portOf(instance, opts);
      const index = slots.findIndex((slot) => slot.containerId === instance.id);
      if (index >= 0) {
        const existing = slots[index]!;
        if (existing.address !== address || existing.port !== port) {
          slots[index] = { ...existing, address, port };
          added.push(slots[index]);
        }
        continue;
      }
      const used = new Set(slots.map((slot) => slot.slot));
      let free = 1;
      while (used.has(free)) free += 1;
      if (free > PROXY_SLOTS) {
        throw new KilnError("INVALID_ARGUMENT", `The front proxy of ${opts.target.service}@${opts.target.environment} holds at most ${PROXY_SLOTS} instances.`);
      }
      const slot: ProxySlot = { slot: free, containerId: instance.id, containerName: instance.name, address, port };
      slots.push(slot);
      added.push(slot);
    }
    if (added.length === 0) return;
    slots.sort((a, b) => a.slot - b.slot);
    // Intent first: a Kiln killed between the two steps leaves a configuration the next call applies.
    await writeConfig(live.container, opts.target, live.settings, slots);
    for (const slot of added) {
      for (const command of enableCommands(slot.slot, slot.address, slot.port)) await runtimeChange(live.admin, command, ctx.signal);
      ctx.logger.info("front proxy: server registered", { server: serverName(slot.slot), instance: slot.containerName, address: `${slot.address}:${slot.port}` });
    }
  }

  async function deregister(instances: readonly Instance[], opts: Options & { readonly drainMs: number }, ctx: ProviderContext): Promise<void> {
    throwIfAborted(ctx.signal);
    if (instances.length === 0) return;
    const live = await openProxy(opts.target, opts, false, ctx);
    if (!live) return;
    const ids = new Set(instances.map((instance) => instance.id));
    const leaving = live.slots.filter((slot) => ids.has(slot.containerId));
    if (leaving.length === 0) return;
    const staying = live.slots.filter((slot) => !ids.has(slot.containerId));
    await writeConfig(live.container, opts.target, live.settings, staying);
    for (const slot of leaving) await runtimeChange(live.admin, `set server be/${serverName(slot.slot)} state drain`, ctx.signal);
    const names = new Set(leaving.map((slot) => serverName(slot.slot)));
    try {
      await waitFor(
        async () => {
          const stats = parseStat(await runtimeCommand(live.admin, "show stat", ctx.signal)).filter((stat) => names.has(stat.name));
          const busy = stats.filter((stat) => stat.current + stat.queued > 0);
          return busy.length === 0 ? { done: true, value: undefined } : { done: false, reason: `${busy.map((stat) => `${stat.name}: ${stat.current} in flight`).join(", ")}` };
        },
        { timeoutMs: Math.max(0, opts.drainMs), minDelayMs: 100, maxDelayMs: 500, signal: ctx.signal, description: "requests in flight to drain" },
      );
    } catch (error) {
      if (!isKilnError(error, "TIMEOUT")) throw error;
      ctx.logger.warn("front proxy: drain time ran out with requests in flight", { error: error.message });
    }
    for (const slot of leaving) {
      for (const command of clearCommands(slot.slot)) await runtimeChange(live.admin, command, ctx.signal);
      ctx.logger.info("front proxy: server deregistered", { server: serverName(slot.slot), instance: slot.containerName });
    }
  }

  const wrap =
    <A extends unknown[]>(what: string, run: (instances: readonly Instance[], opts: Options & { readonly drainMs?: number }, ctx: ProviderContext, ...rest: A) => Promise<void>) =>
    (instances: readonly Instance[], opts: TrafficOptions & { readonly drainMs?: number }, ctx: ProviderContext, ...rest: A) =>
      serialize(opts.target, async () => {
        if (!opts.proxy) {
          throw new KilnError("CAPABILITY_MISSING", `The docker provider routes traffic through its front proxy only; give traffic.proxy for ${opts.target.service}@${opts.target.environment} (traffic.loadBalancer is for cloud providers).`);
        }
        try {
          await run(instances, opts as Options & { readonly drainMs?: number }, ctx, ...rest);
        } catch (error) {
          throw engineError(error, address, "ROLLOUT_FAILED", `${what} ${opts.target.service}@${opts.target.environment} on the front proxy failed`);
        }
      });

  /** The target's front proxies, found by their labels (whatever the spec says now). */
  async function listProxies(target: Target, ctx: ProviderContext): Promise<ProxyStatus[]> {
    throwIfAborted(ctx.signal);
    try {
      const docker = await client.get();
      return (await findProxies(docker, target, ctx)).map((info) => ({
        id: info.Id,
        name: (info.Names?.[0] ?? info.Id).replace(/^\//, ""),
        state: instanceState(info.State),
        address: info.Labels?.[DOCKER_LABELS.proxyAddress],
      }));
    } catch (error) {
      throw engineError(error, address, "PROVIDER_UNAVAILABLE", `Listing the front proxy of ${formatTarget(target)} failed`);
    }
  }

  /**
   * Removes the target's front proxies (a soft stop first, so requests in flight finish), their
   * configuration volumes, and the target's networks that no container uses any more.
   */
  async function retireProxy(target: Target, ctx: ProviderContext): Promise<void> {
    throwIfAborted(ctx.signal);
    const docker = await client.get();
    try {
      for (const info of await findProxies(docker, target, ctx)) {
        const container = docker.getContainer(info.Id);
        const name = (info.Names?.[0] ?? info.Id).replace(/^\//, "");
        try {
          await container.stop({ t: 10 });
        } catch (error) {
          // 304: already stopped; 404: already gone.
          if (statusOf(error) !== 304 && statusOf(error) !== 404) throw error;
        }
        try {
          await container.remove({ force: true });
        } catch (error) {
          if (statusOf(error) !== 404 && !(statusOf(error) === 409 && /already in progress/i.test(messageOf(error)))) throw error;
        }
        ctx.logger.info("front proxy retired", { container: name, address: info.Labels?.[DOCKER_LABELS.proxyAddress] });
      }
      const volumes = (await docker.listVolumes({ filters: { label: proxyFilter(target) } })).Volumes ?? [];
      for (const volume of volumes) {
        try {
          await docker.getVolume(volume.Name).remove();
        } catch (error) {
          if (statusOf(error) !== 404) ctx.logger.warn("could not remove a retired front proxy's volume", { volume: volume.Name, error: messageOf(error) });
        }
      }
      for (const network of await findTargetNetworks(docker, target)) {
        const inspected = await docker.getNetwork(network.Id).inspect();
        if (Object.keys(inspected.Containers ?? {}).length > 0) continue;
        try {
          await docker.getNetwork(network.Id).remove();
          ctx.logger.info("removed the front proxy's network", { network: network.Name });
        } catch (error) {
          // 403/409: a container joined it meanwhile; 404: gone already.
          if (![403, 404, 409].includes(statusOf(error) ?? 0)) throw error;
        }
      }
    } catch (error) {
      throw engineError(error, address, "ROLLOUT_FAILED", `Retiring the front proxy of ${formatTarget(target)} failed`);
    }
  }

  return {
    listProxies: (target, ctx) => listProxies(target, ctx),
    retireProxy: (target, ctx) => serialize(target, () => retireProxy(target, ctx)),
    register: wrap("Registering instances of", register),
    deregister: wrap("Deregistering instances of", (instances, opts, ctx) => deregister(instances, { ...opts, drainMs: opts.drainMs ?? 0 }, ctx)),
  };
}
