/**
 * The front proxy's lifecycle through the `kiln` CLI on a real Docker engine: a proxy whose port is
 * taken leaves nothing behind and the rollback says where the previous release still serves;
 * dropping `traffic.proxy` retires the proxy once the new release serves (a failed rollout keeps
 * it); `kiln status` shows the proxy; and two services whose names differ only in where the dash
 * is get their own proxies.
 */
import { createServer, type Server } from "node:net";
import { afterAll, describe, expect, it } from "vitest";
import { requireDockerEngine } from "@kilnjs/testkit";
import {
  LABEL_ENVIRONMENT,
  LABEL_RELEASE,
  LABEL_SERVICE,
  Scratch,
  containersWith,
  describeResult,
  dockerClient,
  freePort,
  httpGet,
  jsonLines,
  replaceOnce,
  withProxy,
  type App,
  type StatusDocument,
} from "./harness.js";

const engine = await requireDockerEngine();

/** `kiln status --json` with the proxies it lists. */
type ProxiedStatus = StatusDocument & { proxies: Array<{ name: string; state: string; address?: string }> };

describe.skipIf(!engine)("the front proxy's lifecycle through the kiln CLI", () => {
  const docker = dockerClient();
  const scratch = new Scratch();
  const holders: Server[] = [];

  afterAll(async () => {
    for (const server of holders) server.close();
    const problems = await scratch.cleanUp(docker);
    for (const service of scratch.services) {
      const label = [`${LABEL_SERVICE}=${service}`];
      for (const volume of (await docker.listVolumes({ filters: { label } }).catch(() => ({ Volumes: [] }))).Volumes ?? []) {
        await docker.getVolume(volume.Name).remove().catch((error: unknown) => problems.push(`volume ${volume.Name}: ${String(error)}`));
      }
      for (const network of await docker.listNetworks({ filters: { label } }).catch(() => [])) {
        await docker.getNetwork(network.Id).remove().catch((error: unknown) => problems.push(`network ${network.Name}: ${String(error)}`));
      }
    }
    if (problems.length > 0) throw new Error(`cleanup problems:\n${problems.join("\n")}`);
  });

  /** A hello-web copy with one instance in the default environment (no staging). */
  const app = (service = scratch.service("pxl"), edit: (spec: string) => string = (spec) => spec) =>
    scratch.helloWeb(service, (spec) => edit(replaceOnce(replaceOnce(spec, "  count: 3\n", "  count: 1\n"), "environments:\n  staging:\n    instances: { count: 1 }\n", "")));

  const proxyLeftovers = async (service: string) => ({
    containers: (await containersWith(docker, `${LABEL_SERVICE}=${service}`, "dev.kiln.role=proxy")).map((info) => info.Names[0]),
    volumes: ((await docker.listVolumes({ filters: { label: [`${LABEL_SERVICE}=${service}`] } })).Volumes ?? []).map((volume) => volume.Name),
    networks: (await docker.listNetworks({ filters: { label: [`${LABEL_SERVICE}=${service}`] } })).map((network) => network.Name),
  });

  const withoutProxy = (spec: string) => spec.replace(/\ntraffic:\n {2}proxy: .*\n/, "\n");

  async function deployOk(target: App): Promise<void> {
    const result = await target.kiln(["deploy", "--json"]);
    expect(result.code, describeResult(result)).toBe(0);
  }

  it("a proxy whose port a process holds: nothing is left behind, and the rollback says where release 1 still serves", async () => {
    const web = await app();
    await deployOk(web);
    const before = await web.json<ProxiedStatus>(["status"], "status");
    const v1 = before.instances.map((instance) => `${instance.endpoints.http!.host}:${instance.endpoints.http!.port}`);
    expect(v1).toHaveLength(1);

    const holder = createServer((socket) => socket.end());
    holders.push(holder);
    await new Promise<void>((resolve) => holder.listen(0, "127.0.0.1", resolve));
    const port = (holder.address() as { port: number }).port;
    await web.editSpec((spec) => withProxy(spec, port));
    await web.write("version.txt", "v2\n");
    const result = await web.kiln(["deploy", "--json"]);
    expect(result.code, describeResult(result)).toBe(1);
    const events = jsonLines(result.stdout);
    const rolledBack = events.find((event) => event.type === "rollout.rolled-back") as { reason: string; restoredRelease?: number } | undefined;
    expect(rolledBack, describeResult(result)).toMatchObject({ restoredRelease: 1 });
    expect(rolledBack!.reason).not.toContain("no earlier release");
    expect(rolledBack!.reason).toBe(`release 1 still serves at ${v1.join(", ")}`);
    const error = events.at(-1) as { type: string; message: string };
    expect(error.type).toBe("error");
    expect(error.message).toContain(`cannot publish 127.0.0.1:${port}: the port is held by a process outside Docker`);

    expect(await proxyLeftovers(web.service)).toEqual({ containers: [], volumes: [], networks: [] });
    const after = await web.json<ProxiedStatus>(["status"], "status");
    expect(after.release?.number).toBe(1);
    expect(after.proxies).toEqual([]);
    expect(after.drift).toEqual([]);
    const [host, published] = v1[0]!.split(":");
    expect((await httpGet(host!, Number(published), "/healthz")).status).toBe(200);
  });

  it("dropping traffic.proxy: a failed rollout keeps the proxy; the next one retires it once the new release serves", async () => {
    const port = await freePort();
    const web = await app(undefined, (spec) => withProxy(spec, port));
    await deployOk(web);
    expect((await httpGet("127.0.0.1", port, "/healthz")).status).toBe(200);
    const proxied = await web.json<ProxiedStatus>(["status"], "status");
    expect(proxied.proxies.map((proxy) => [proxy.state, proxy.address])).toEqual([["running", `127.0.0.1:${port}`]]);
    expect(proxied.drift).toEqual([]);
    const human = await web.kiln(["status"]);
    expect(human.stdout).toContain(`front proxy: ${proxied.proxies[0]!.name}, running, publishing http://127.0.0.1:${port}`);

    // v2 without the proxy, whose health check fails: rolled back, the proxy stays and serves v1.
    await web.editSpec((spec) => replaceOnce(withoutProxy(spec), "    LOG_LEVEL: info\n", `    LOG_LEVEL: info\n    HEALTHZ_STATUS: "500"\n`));
    await web.write("version.txt", "v2\n");
    const failed = await web.kiln(["deploy", "--json"]);
    expect(failed.code, describeResult(failed)).toBe(1);
    expect(JSON.parse((await httpGet("127.0.0.1", port, "/version")).body)).toMatchObject({ version: "v1" });
    expect((await web.json<ProxiedStatus>(["status"], "status")).proxies).toHaveLength(1);

    // v2 without the proxy, healthy: the new instance publishes its port, the proxy goes.
    await web.editSpec((spec) => replaceOnce(spec, `    HEALTHZ_STATUS: "500"\n`, ""));
    const plan = await web.kiln(["plan"]);
    expect(plan.stdout).toContain(`the front proxy at 127.0.0.1:${port} is retired once this release serves`);
    await deployOk(web);
    expect(await proxyLeftovers(web.service)).toEqual({ containers: [], volumes: [], networks: [] });
    const status = await web.json<ProxiedStatus>(["status"], "status");
    expect(status.proxies).toEqual([]);
    expect(status.drift).toEqual([]);
    expect(status.instances).toHaveLength(1);
    const endpoint = status.instances[0]!.endpoints.http!;
    expect(endpoint.host).toBe("127.0.0.1");
    expect(JSON.parse((await httpGet(endpoint.host, endpoint.port, "/version")).body)).toMatchObject({ version: "v2" });
    const v2 = await containersWith(docker, `${LABEL_SERVICE}=${web.service}`, `${LABEL_RELEASE}=3`);
    const networks = Object.keys((await docker.getContainer(v2[0]!.Id).inspect()).NetworkSettings.Networks);
    expect(networks.filter((name) => name.includes(web.service)), "the new instance never joined the proxy's network").toEqual([]);
  });

  it("services a-b in environment c and a in environment b-c get their own proxies", async () => {
    const stem = scratch.service("pxn");
    const [firstPort, secondPort] = [await freePort(), await freePort()];
    const inEnvironment = (environment: string, port: number) => (spec: string) => `${withProxy(spec, port).replace("traffic:\n", "environments:\n  " + environment + ": {}\ntraffic:\n")}`;
    const first = await app(`${stem}-b`, inEnvironment("c", firstPort));
    const second = await app(stem, inEnvironment("b-c", secondPort));
    scratch.services.add(first.service);
    const deployed = [await first.kiln(["deploy", "--environment", "c", "--json"]), await second.kiln(["deploy", "--environment", "b-c", "--json"])];
    for (const result of deployed) expect(result.code, describeResult(result)).toBe(0);

    for (const port of [firstPort, secondPort]) expect((await httpGet("127.0.0.1", port, "/healthz")).status).toBe(200);
    const proxies = await containersWith(docker, "dev.kiln.role=proxy", `${LABEL_ENVIRONMENT}=c`);
    expect(proxies.filter((info) => info.Labels[LABEL_SERVICE] === first.service)).toHaveLength(1);
    const firstStatus = await first.json<ProxiedStatus>(["status", "--environment", "c"], "status");
    expect(firstStatus.drift).toEqual([]);
    expect(firstStatus.proxies.map((proxy) => proxy.address)).toEqual([`127.0.0.1:${firstPort}`]);
    const secondStatus = await second.json<ProxiedStatus>(["status", "--environment", "b-c"], "status");
    expect(secondStatus.proxies.map((proxy) => proxy.address)).toEqual([`127.0.0.1:${secondPort}`]);
    expect(firstStatus.proxies[0]!.name).not.toBe(secondStatus.proxies[0]!.name);
  });
});
