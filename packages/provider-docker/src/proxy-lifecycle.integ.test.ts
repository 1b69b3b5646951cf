/**
 * The front proxy's names and lifecycle against a real engine: targets whose names differ only in
 * where the dash is get their own proxies; a proxy, network and volume named the way Kiln named
 * them before are still found (by labels); a proxy that cannot publish its port is removed with
 * what the attempt created, and the error says what holds the port; retiring removes it all.
 */
import { randomBytes } from "node:crypto";
import { get } from "node:http";
import { createServer, type Server } from "node:net";
import Docker from "dockerode";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LABELS, isKilnError, silentLogger, type ImageRef, type Instance, type ProviderContext, type ResolvedProxy, type Target } from "@kilnjs/core";
import { requireDockerEngine } from "@kilnjs/testkit";
import { createDockerProvider } from "./index.js";
import { legacyTargetNetworkName } from "./proxy/config.js";
import { freePort, hostnameServer, proxyTestImage } from "./test-support.js";

const engine = await requireDockerEngine();
const hex = (bytes: number) => randomBytes(bytes).toString("hex");
const ctx = (): ProviderContext => ({ signal: AbortSignal.timeout(60_000), logger: silentLogger, emit() {} });

/** A server on 127.0.0.1 (port 0: a free one); `port` once it listens. */
async function listen(): Promise<{ server: Server; port: number }> {
  const server = createServer((socket) => socket.end());
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", resolve);
  });
  const address = server.address();
  if (typeof address !== "object" || !address) throw new Error("no port");
  return { server, port: address.port };
}

/** GET / with a fresh connection: the body (the answering container's hostname). */
function fetchBody(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const request = get({ host: "127.0.0.1", port, path: "/", agent: false, timeout: 3_000 }, (response) => {
      let body = "";
      response.setEncoding("utf8");
      response.on("data", (chunk: string) => (body += chunk));
      response.on("end", () => (response.statusCode === 200 ? resolve(body.trim()) : reject(new Error(`status ${response.statusCode}`))));
      response.on("error", reject);
    });
    request.on("timeout", () => request.destroy(new Error("timeout")));
    request.on("error", reject);
  });
}

describe.skipIf(!engine)("the Docker front proxy's names and lifecycle against a real engine", () => {
  const docker = new Docker(process.env.DOCKER_HOST?.startsWith("unix://") ? { socketPath: process.env.DOCKER_HOST.slice("unix://".length) } : undefined);
  const provider = createDockerProvider();
  const run = hex(3);
  // Two targets that the old names (kiln-proxy-<service>-<environment>) could not tell apart.
  const dashFirst: Target = { service: `kl${run}-b`, environment: "c" };
  const dashSecond: Target = { service: `kl${run}`, environment: "b-c" };
  const services = new Set<string>();
  let image: ImageRef;
  const holders: Server[] = [];

  const labelled = (target: Target) => [`${LABELS.service}=${target.service}`, `${LABELS.environment}=${target.environment}`];
  const proxiesOf = (target: Target) => docker.listContainers({ all: true, filters: { label: [...labelled(target), "dev.kiln.role=proxy"] } });
  const volumesOf = async (target: Target) => (await docker.listVolumes({ filters: { label: [...labelled(target), "dev.kiln.role=proxy"] } })).Volumes ?? [];
  const networksOf = (target: Target) => docker.listNetworks({ filters: { label: labelled(target) } });

  /** Launches `count` httpd instances of `target` answering their hostname on 8080. */
  async function launch(target: Target, count: number, publishPorts: boolean): Promise<Instance[]> {
    services.add(target.service);
    return provider.instances.launch(
      {
        target,
        release: 1,
        rolloutId: `ro-${run}`,
        idempotencyKey: `launch-${target.service}-${target.environment}-${hex(3)}`,
        image,
        config: hostnameServer(publishPorts),
        count,
      },
      ctx(),
    );
  }

  const proxyOn = (port: number): ResolvedProxy => ({ host: "127.0.0.1", port, portName: "http", retries: 2 });

  beforeAll(async () => {
    image = await proxyTestImage(docker);
  });

  afterAll(async () => {
    for (const server of holders) server.close();
    for (const service of services) {
      const label = [`${LABELS.service}=${service}`];
      for (const info of await docker.listContainers({ all: true, filters: { label } })) await docker.getContainer(info.Id).remove({ force: true }).catch(() => undefined);
      for (const volume of (await docker.listVolumes({ filters: { label } })).Volumes ?? []) await docker.getVolume(volume.Name).remove().catch(() => undefined);
      for (const network of await docker.listNetworks({ filters: { label } })) await docker.getNetwork(network.Id).remove().catch(() => undefined);
    }
    await provider.close?.();
  });

  it("gives a-b@c and a@b-c their own proxies: both addresses serve their own instances", async () => {
    const [firstPort, secondPort] = [await freePort(), await freePort()];
    const first = await launch(dashFirst, 1, false);
    const second = await launch(dashSecond, 1, false);
    await provider.traffic!.register(first, { target: dashFirst, proxy: proxyOn(firstPort) }, ctx());
    await provider.traffic!.register(second, { target: dashSecond, proxy: proxyOn(secondPort) }, ctx());

    expect(await fetchBody(firstPort)).toBe(first[0]!.id.slice(0, 12));
    expect(await fetchBody(secondPort)).toBe(second[0]!.id.slice(0, 12));
    const [firstProxies, secondProxies] = [await proxiesOf(dashFirst), await proxiesOf(dashSecond)];
    expect(firstProxies).toHaveLength(1);
    expect(secondProxies).toHaveLength(1);
    expect(firstProxies[0]!.Id).not.toBe(secondProxies[0]!.Id);
    expect((await networksOf(dashFirst)).map((network) => network.Name)).not.toEqual((await networksOf(dashSecond)).map((network) => network.Name));
    expect(await provider.traffic!.listProxies!(dashFirst, ctx())).toEqual([
      { id: firstProxies[0]!.Id, name: firstProxies[0]!.Names[0]!.slice(1), state: "running", address: `127.0.0.1:${firstPort}` },
    ]);
  });

  it("still drives a proxy and a network that carry the names older Kiln gave them (found by labels)", async () => {
    const target: Target = { service: `kl${run}-legacy`, environment: "test" };
    services.add(target.service);
    // The network as Kiln created it before: kiln-<service>-<environment>.
    const legacyNetwork = legacyTargetNetworkName(target);
    await docker.createNetwork({ Name: legacyNetwork, Driver: "bridge", Labels: { [LABELS.managed]: "true", [LABELS.service]: target.service, [LABELS.environment]: target.environment } });
    const instances = await launch(target, 2, false);
    for (const instance of instances) {
      const info = await docker.getContainer(instance.id).inspect();
      expect(Object.keys(info.NetworkSettings.Networks), "a new instance joins the existing network").toEqual([legacyNetwork]);
      expect(instance.endpoints.http?.host).toBe(info.NetworkSettings.Networks[legacyNetwork]!.IPAddress);
    }
    const port = await freePort();
    await provider.traffic!.register([instances[0]!], { target, proxy: proxyOn(port) }, ctx());
    // The proxy as Kiln named it before.
    const [proxy] = await proxiesOf(target);
    await docker.getContainer(proxy!.Id).rename({ name: `kiln-proxy-${target.service}-${target.environment}` });

    await provider.traffic!.register(instances, { target, proxy: proxyOn(port) }, ctx());
    const seen = new Set<string>();
    for (let i = 0; i < 6; i++) seen.add(await fetchBody(port));
    expect(seen).toEqual(new Set(instances.map((instance) => instance.id.slice(0, 12))));
    await provider.traffic!.deregister([instances[0]!], { target, proxy: proxyOn(port), drainMs: 1_000 }, ctx());
    expect(await fetchBody(port)).toBe(instances[1]!.id.slice(0, 12));
    const after = await proxiesOf(target);
    expect(after.map((info) => info.Id), "the same proxy, no second one").toEqual([proxy!.Id]);
    expect((await networksOf(target)).map((network) => network.Name)).toEqual([legacyNetwork]);
    expect((await provider.traffic!.listProxies!(target, ctx())).map((found) => found.name)).toEqual([`kiln-proxy-${target.service}-${target.environment}`]);
  });

  it("a proxy whose port a process outside Docker holds is removed with its volume; the error says so", async () => {
    const target: Target = { service: `kl${run}-held`, environment: "test" };
    const { server, port } = await listen();
    holders.push(server);
    const instances = await launch(target, 1, false);
    const error = await provider.traffic!.register(instances, { target, proxy: proxyOn(port) }, ctx()).then(
      () => undefined,
      (caught: unknown) => caught,
    );
    expect(isKilnError(error, "LAUNCH_FAILED"), String(error)).toBe(true);
    expect((error as Error).message).toContain(`cannot publish 127.0.0.1:${port}`);
    expect((error as Error).message).toContain("a process outside Docker");
    expect(await proxiesOf(target), "no proxy container left").toEqual([]);
    expect(await volumesOf(target), "no proxy volume left").toEqual([]);
    // The network was the instances' (their launch created it), not the attempt's: it stays.
    expect(await networksOf(target)).toHaveLength(1);
  });

  it("a proxy whose port another Kiln proxy holds names that proxy, and removes the network the attempt created", async () => {
    const target: Target = { service: `kl${run}-taken`, environment: "test" };
    const [holder] = await proxiesOf(dashFirst);
    const taken = Number(holder!.Labels["dev.kiln.proxy-address"]!.split(":")[1]);
    // Published instances: the proxy's attempt is what creates the target's network.
    const instances = await launch(target, 1, true);
    expect(await networksOf(target)).toEqual([]);
    const error = await provider.traffic!.register(instances, { target, proxy: proxyOn(taken) }, ctx()).then(
      () => undefined,
      (caught: unknown) => caught,
    );
    expect(isKilnError(error, "LAUNCH_FAILED"), String(error)).toBe(true);
    expect((error as Error).message).toContain(`the front proxy of ${dashFirst.service}@${dashFirst.environment}`);
    expect(await proxiesOf(target)).toEqual([]);
    expect(await volumesOf(target)).toEqual([]);
    expect(await networksOf(target), "the network this attempt created is gone").toEqual([]);
    // The holder was not touched.
    expect((await docker.getContainer(holder!.Id).inspect()).State.Running).toBe(true);
  });

  it("retireProxy removes the proxy, its volume and the network no instance uses any more", async () => {
    const instances = await provider.instances.list({ target: dashSecond }, ctx());
    await provider.instances.terminate(instances, { gracePeriodMs: 1_000 }, ctx());
    await provider.traffic!.retireProxy!(dashSecond, ctx());
    expect(await proxiesOf(dashSecond)).toEqual([]);
    expect(await volumesOf(dashSecond)).toEqual([]);
    expect(await networksOf(dashSecond)).toEqual([]);
    expect(await provider.traffic!.listProxies!(dashSecond, ctx())).toEqual([]);
    // The other target's proxy still serves; retiring again is a no-op.
    expect(await proxiesOf(dashFirst)).toHaveLength(1);
    await provider.traffic!.retireProxy!(dashSecond, ctx());
  });
});
