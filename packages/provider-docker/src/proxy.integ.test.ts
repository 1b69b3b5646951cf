import { randomBytes } from "node:crypto";
import { get } from "node:http";
import Docker from "dockerode";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LABELS, silentLogger, type ImageRef, type Instance, type ProviderContext, type ResolvedProxy, type Target } from "@kilnjs/core";
import { requireDockerEngine } from "@kilnjs/testkit";
import { createDockerProvider } from "./index.js";
import { proxyContainerName, targetNetworkName } from "./proxy/config.js";
import { freePort, hostnameServer, proxyTestImage } from "./test-support.js";

const engine = await requireDockerEngine();
const hex = (bytes: number) => randomBytes(bytes).toString("hex");
const ctx = (): ProviderContext => ({ signal: AbortSignal.timeout(60_000), logger: silentLogger, emit() {} });

/** GET / through the proxy with a fresh connection; the body names the container that answered. */
function fetchBody(port: number): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const request = get({ host: "127.0.0.1", port, path: "/", agent: false, timeout: 3_000 }, (response) => {
      let body = "";
      response.setEncoding("utf8");
      response.on("data", (chunk: string) => (body += chunk));
      response.on("end", () => resolve({ status: response.statusCode ?? 0, body: body.trim() }));
      response.on("error", reject);
    });
    request.on("timeout", () => request.destroy(new Error("timeout")));
    request.on("error", reject);
  });
}

async function bodies(port: number, count: number): Promise<string[]> {
  const seen: string[] = [];
  for (let i = 0; i < count; i++) {
    const answer = await fetchBody(port);
    expect(answer.status).toBe(200);
    seen.push(answer.body);
  }
  return seen;
}

async function eventually<T>(what: string, check: () => Promise<T | undefined>, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined) return value;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`, { cause: last });
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

describe.skipIf(!engine)("docker provider front proxy against a real engine", () => {
  const docker = new Docker(process.env.DOCKER_HOST?.startsWith("unix://") ? { socketPath: process.env.DOCKER_HOST.slice("unix://".length) } : undefined);
  const provider = createDockerProvider();
  const run = hex(3);
  const target: Target = { service: `kp-${run}`, environment: "test" };
  let proxy: ResolvedProxy;
  let image: ImageRef;
  let instances: Instance[] = [];

  beforeAll(async () => {
    image = await proxyTestImage(docker);
    proxy = { host: "127.0.0.1", port: await freePort(), portName: "http", retries: 2 };
  });

  afterAll(async () => {
    const containers = await docker.listContainers({ all: true, filters: { label: [`${LABELS.service}=${target.service}`] } });
    await Promise.all(containers.map((info) => docker.getContainer(info.Id).remove({ force: true }).catch(() => undefined)));
    await docker.getVolume(proxyContainerName(target)).remove().catch(() => undefined);
    await docker.getNetwork(targetNetworkName(target)).remove().catch(() => undefined);
    await provider.close?.();
  });

  it("launches unpublished instances on the target's network", async () => {
    instances = await provider.instances.launch(
      {
        target,
        release: 1,
        rolloutId: `ro-${run}`,
        idempotencyKey: `launch-${run}`,
        image,
        config: hostnameServer(false),
        count: 2,
      },
      ctx(),
    );
    expect(instances).toHaveLength(2);
    for (const instance of instances) {
      const info = await docker.getContainer(instance.id).inspect();
      expect(Object.keys(info.NetworkSettings.Networks)).toContain(targetNetworkName(target));
      expect(info.HostConfig.PortBindings ?? {}).toEqual({});
      expect(instance.endpoints.http?.host).toBe(info.NetworkSettings.Networks[targetNetworkName(target)]?.IPAddress);
    }
    const network = await docker.getNetwork(targetNetworkName(target)).inspect();
    expect(network.Labels).toMatchObject({ [LABELS.managed]: "true", [LABELS.service]: target.service, [LABELS.environment]: target.environment });
  });

  it("registers instances: requests through the proxy alternate between them", async () => {
    await provider.traffic!.register(instances, { target, proxy }, ctx());
    // Idempotent: a second register changes nothing.
    await provider.traffic!.register(instances, { target, proxy }, ctx());
    const seen = await bodies(proxy.port, 6);
    const hostnames = instances.map((instance) => instance.id.slice(0, 12));
    expect(new Set(seen)).toEqual(new Set(hostnames));
    for (let i = 1; i < seen.length; i++) expect(seen[i]).not.toBe(seen[i - 1]);

    const info = await docker.getContainer(proxyContainerName(target)).inspect();
    expect(info.Config.Labels).toMatchObject({ "dev.kiln.role": "proxy", [LABELS.service]: target.service, [LABELS.environment]: target.environment });
    expect(info.HostConfig.RestartPolicy?.Name).toBe("unless-stopped");
    // The proxy is not an instance.
    expect((await provider.instances.list({ target }, ctx())).map((instance) => instance.id).sort()).toEqual(instances.map((instance) => instance.id).sort());
  });

  it("deregisters (drains) one: it gets no more requests", async () => {
    const [leaving, staying] = instances as [Instance, Instance];
    await provider.traffic!.deregister([leaving], { target, proxy, drainMs: 2_000 }, ctx());
    expect(new Set(await bodies(proxy.port, 6))).toEqual(new Set([staying.id.slice(0, 12)]));
    // Deregistering again is a no-op.
    await provider.traffic!.deregister([leaving], { target, proxy, drainMs: 2_000 }, ctx());
  });

  it("survives a proxy restart without Kiln: the remaining instance is served again", async () => {
    const staying = instances[1]!;
    await docker.getContainer(proxyContainerName(target)).restart({ t: 5 });
    const info = await docker.getContainer(proxyContainerName(target)).inspect();
    expect(info.State.Running).toBe(true);
    const seen = await eventually("the restarted proxy to answer", async () => {
      const answers = await bodies(proxy.port, 4).catch(() => undefined);
      return answers;
    });
    expect(new Set(seen)).toEqual(new Set([staying.id.slice(0, 12)]));
    // A new provider object (another Kiln process) continues from the proxy's own state.
    const other = createDockerProvider();
    await other.traffic!.register(instances, { target, proxy }, ctx());
    expect(new Set(await bodies(proxy.port, 6))).toEqual(new Set(instances.map((instance) => instance.id.slice(0, 12))));
    await other.close?.();
  });

  it("reloads with new settings and keeps its servers", async () => {
    await provider.traffic!.register(instances, { target, proxy: { ...proxy, retries: 3 } }, ctx());
    const seen = await eventually("the reloaded proxy to serve both", async () => {
      const answers = await bodies(proxy.port, 6).catch(() => undefined);
      return answers && new Set(answers).size === 2 ? answers : undefined;
    });
    expect(new Set(seen)).toEqual(new Set(instances.map((instance) => instance.id.slice(0, 12))));
  });
});
