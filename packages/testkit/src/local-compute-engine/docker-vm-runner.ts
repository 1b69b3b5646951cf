import { randomBytes } from "node:crypto";
import type Docker from "dockerode";
import { KilnError } from "@kilnjs/core";
import type { VmDescription, VmRunner } from "./vm-runner.js";

/** Options of {@link createDockerVmRunner}. */
export interface DockerVmRunnerOptions {
  /** The Docker engine's unix socket. @defaultValue the engine `DOCKER_HOST` names (dockerode's default) */
  readonly socketPath?: string;
  /** Seconds a stopping VM gets before it is killed (busybox `sh` ignores SIGTERM). @defaultValue 1 */
  readonly stopTimeoutSeconds?: number;
}

/** Where a VM's startup script runs from, and how the guest learns the metadata server. */
const STARTUP_WRAPPER = [
  // The engine learns the VM's address when the container has started; until then the metadata
  // server cannot tell who is asking. A guest agent waits for its metadata server the same way.
  'until wget -q -O /dev/null --header "Metadata-Flavor: Google" "http://$GCE_METADATA_HOST/computeMetadata/v1/instance/id" 2>/dev/null; do sleep 0.1; done',
  'if [ -n "$KILN_STARTUP_SCRIPT" ]; then',
  '  printf "%s\\n" "$KILN_STARTUP_SCRIPT" > /tmp/kiln-startup-script',
  "  sh /tmp/kiln-startup-script",
  '  echo "kiln-local-compute-engine: startup-script exit status $?"',
  "fi",
  // A VM keeps running after its startup script, as a machine does.
  "while :; do sleep 3600; done",
].join("\n");

/**
 * A {@link VmRunner} where each VM is a container on a Docker engine: made from the boot disk's
 * image (`imageArtifact`, a Docker image reference: give seed images an `artifact` such as
 * `kiln-local/busybox:latest`), on a bridge network of the runner's own, so the VM's `networkIP` is
 * the container's address and its apps answer there. The `startup-script` metadata item runs at
 * every boot with `sh`; its output (the container's terminal) goes to serial port 1, followed by
 * `kiln-local-compute-engine: startup-script exit status N` (the script starts once the metadata
 * server knows the VM, so it may use it at once; the image needs `sh`, `wget` and `sleep`, as
 * busybox has them). The guest finds the metadata server at
 * `$GCE_METADATA_HOST` (host:port on the network's gateway; `metadata.google.internal` resolves
 * there too), which knows the VM by its address, as on GCE. Stopping stops the container (its
 * filesystem is the boot disk and stays); an image is `docker commit` of the stopped container.
 * `close()` removes the containers, images and network the runner made.
 *
 * dockerode is loaded on first use.
 * @throws KilnError PROVIDER_UNAVAILABLE (from `start`) when the engine cannot be reached
 */
export function createDockerVmRunner(options: DockerVmRunnerOptions = {}): VmRunner {
  const runId = randomBytes(4).toString("hex");
  const networkName = `kiln-lce-${runId}`;
  const containers = new Map<string, Docker.Container>();
  const images = new Set<string>();
  let docker: Docker | undefined;
  let network: Promise<{ id: string; gateway: string }> | undefined;
  let closed = false;
  /** Runner calls in flight: close() waits for them, so nothing is made after it cleaned up. */
  const inFlight = new Set<Promise<unknown>>();
  const tracked = <T>(work: () => Promise<T>): Promise<T> => {
    if (closed) return Promise.reject(new KilnError("INVALID_ARGUMENT", "The Docker VM runner is closed: its local Compute Engine was closed."));
    const running = work();
    inFlight.add(running);
    void running.then(
      () => inFlight.delete(running),
      () => inFlight.delete(running),
    );
    return running;
  };

  const client = async (): Promise<Docker> => {
    if (!docker) {
      const { default: Dockerode } = await import("dockerode");
      docker = new Dockerode(options.socketPath ? { socketPath: options.socketPath } : undefined);
    }
    return docker;
  };
  const ensureNetwork = () =>
    (network ??= (async () => {
      const engine = await client();
      const created = await engine.createNetwork({ Name: networkName, Driver: "bridge", Labels: { "dev.kiln.local-compute-engine": runId } });
      const inspected = (await created.inspect()) as { IPAM?: { Config?: { Gateway?: string }[] } };
      const gateway = inspected.IPAM?.Config?.[0]?.Gateway;
      if (!gateway) throw new KilnError("PROVIDER_UNAVAILABLE", `Docker network ${networkName} has no gateway address; check the engine's default address pools.`);
      return { id: created.id, gateway };
    })());
  const containerName = (vm: VmDescription) => `kiln-lce-${runId}-${vm.name}-${vm.id.slice(-6)}`;
  const stopTimeout = options.stopTimeoutSeconds ?? 1;

  const attachSerialPort = async (container: Docker.Container, vm: VmDescription) => {
    const stream = await container.attach({ stream: true, stdout: true, stderr: true, logs: false });
    stream.on("data", (chunk: Buffer) => vm.writeSerialPort(chunk.toString("utf8").replace(/\r\n/g, "\n")));
    stream.on("error", () => undefined);
  };

  return {
    async metadataHost() {
      return (await ensureNetwork()).gateway;
    },
    start: (vm) => tracked(async () => {
      const engine = await client();
      const { gateway } = await ensureNetwork();
      let container = containers.get(vm.id);
      if (!container) {
        const image = vm.bootDisk.imageArtifact;
        if (!image) {
          throw new KilnError("INVALID_ARGUMENT", `The boot image of ${vm.name} has no Docker image: give its seed image an artifact (a local Docker image such as kiln-local/busybox:latest), or make it with images.insert from a VM of this runner.`);
        }
        const metadataHost = new URL(vm.metadataServer.url).host;
        container = await engine.createContainer({
          name: containerName(vm),
          Image: image,
          Cmd: ["sh", "-c", STARTUP_WRAPPER],
          Tty: true,
          Hostname: vm.name,
          Env: [`KILN_STARTUP_SCRIPT=${vm.metadata["startup-script"] ?? ""}`, `GCE_METADATA_HOST=${metadataHost}`, `GCE_METADATA_IP=${metadataHost}`],
          Labels: { "dev.kiln.local-compute-engine": runId, "dev.kiln.instance": `projects/${vm.project}/zones/${vm.zone}/instances/${vm.name}` },
          HostConfig: { NetworkMode: networkName, ExtraHosts: [`metadata.google.internal:${gateway}`] },
        });
        containers.set(vm.id, container);
      }
      await attachSerialPort(container, vm);
      await container.start();
      const inspected = await container.inspect();
      const networkIP = inspected.NetworkSettings.Networks[networkName]?.IPAddress;
      return networkIP ? { networkIP } : {};
    }),
    async stop(vm) {
      await containers.get(vm.id)?.stop({ t: stopTimeout }).catch((error: { statusCode?: number }) => {
        // 304: already stopped.
        if (error.statusCode !== 304) throw error;
      });
    },
    async delete(vm) {
      const container = containers.get(vm.id);
      containers.delete(vm.id);
      await container?.remove({ force: true });
    },
    captureImage: (disk, image) => tracked(async () => {
      const engine = await client();
      const attached = disk.lastAttachedInstance;
      const found = attached
        ? (await engine.listContainers({ all: true, filters: { label: [`dev.kiln.local-compute-engine=${runId}`, `dev.kiln.instance=${attached}`] } }))[0]
        : undefined;
      if (!found) return undefined;
      const repository = `kiln-lce-${runId}/${image.name}`;
      await engine.getContainer(found.Id).commit({ repo: repository, tag: "latest" });
      images.add(`${repository}:latest`);
      return `${repository}:latest`;
    }),
    async close() {
      closed = true;
      await Promise.allSettled([...inFlight]);
      if (!docker) return;
      const engine = docker;
      const leftovers = await engine.listContainers({ all: true, filters: { label: [`dev.kiln.local-compute-engine=${runId}`] } });
      await Promise.all(leftovers.map((container) => engine.getContainer(container.Id).remove({ force: true }).catch(() => undefined)));
      containers.clear();
      for (const image of images) await engine.getImage(image).remove({ force: true }).catch(() => undefined);
      if (network) {
        const { id } = await network.catch(() => ({ id: "" }));
        if (id) await engine.getNetwork(id).remove().catch(() => undefined);
      }
    },
  };
}
