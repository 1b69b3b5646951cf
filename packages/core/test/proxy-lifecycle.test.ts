// The front proxy's lifecycle as core drives it, through the in-memory provider and a recording
// proxy: a release that drops traffic.proxy never feeds the old proxy and retires it once it
// serves; a failed rollout keeps it; a proxy that cannot start leaves the previous release serving,
// and the rollback says where; status shows any proxy of the target and one the release lacks as drift.
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { createKiln, KilnError, type Instance, type KilnEvent, type ProxyStatus, type SpecInput, type Target } from "../src/index.js";
import { createMemoryProvider, type MemoryProviderOptions } from "@kilnjs/testkit";

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "kiln-proxy-lifecycle-"));
  await writeFile(path.join(dir, "Dockerfile"), "FROM scratch\nCOPY app.txt /\n");
  await writeFile(path.join(dir, "app.txt"), "v1\n");
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const nextVersion = (text: string) => writeFile(path.join(dir, "app.txt"), `${text}\n`);

function spec(proxy: boolean, env: Record<string, string> = {}): SpecInput {
  return {
    service: "web",
    provider: "memory",
    instances: { count: 2, ports: [{ name: "http", port: 8080 }], env },
    health: { http: { port: "http" }, intervalMs: 100, timeoutMs: 100, healthyThreshold: 2, unhealthyThreshold: 2 },
    rollout: { strategy: "rolling", maxSurge: 1, maxUnavailable: 0 },
    ...(proxy ? { traffic: { proxy: { port: 18080 } } } : {}),
  };
}

/**
 * The memory provider with a recording front proxy: it exists from the first register until
 * retired; `failRegister` makes registering throw as a proxy that cannot publish its port does.
 */
function withProxy(options: MemoryProviderOptions = {}) {
  const provider = createMemoryProvider(options);
  const events: KilnEvent[] = [];
  const registered = new Set<string>();
  const calls: string[] = [];
  const proxy = { exists: false, failRegister: false };
  const routed = Object.assign({ ...provider }, {
    traffic: {
      async register(instances: readonly Instance[]) {
        if (proxy.failRegister) throw new KilnError("LAUNCH_FAILED", "The front proxy cannot publish 127.0.0.1:18080: the port is held by a process outside Docker.");
        proxy.exists = true;
        for (const instance of instances) registered.add(instance.id);
        calls.push(`register ${instances.map((i) => `r${i.release}`).join(",")}`);
      },
      async deregister(instances: readonly Instance[]) {
        for (const instance of instances) registered.delete(instance.id);
        calls.push(`deregister ${instances.map((i) => `r${i.release}`).join(",")}`);
      },
      async listProxies(target: Target): Promise<ProxyStatus[]> {
        return proxy.exists ? [{ id: "p1", name: `kiln-proxy.${target.service}.${target.environment}`, state: "running", address: "127.0.0.1:18080" }] : [];
      },
      async retireProxy() {
        calls.push("retire");
        proxy.exists = false;
      },
    },
  });
  const kiln = createKiln({ providers: { memory: routed }, dataDir: path.join(dir, ".kiln"), onEvent: (event) => events.push(event) });
  return { kiln, provider, events, registered, calls, proxy };
}

describe("the front proxy's lifecycle", () => {
  it("a release without traffic.proxy never joins the old proxy, which is retired once the release serves", async () => {
    const { kiln, provider, registered, calls, proxy } = withProxy();
    await kiln.deploy({ spec: spec(true), baseDir: dir });
    expect(registered.size).toBe(2);
    calls.length = 0;

    await nextVersion("v2");
    const plan = await kiln.plan({ spec: spec(false), baseDir: dir });
    expect(plan.changes.join("\n")).toContain("the front proxy at 127.0.0.1:18080 is retired once this release serves");
    await kiln.deploy({ spec: spec(false), baseDir: dir });
    expect(calls.filter((call) => call.startsWith("register")), "no release-2 instance joins the old proxy").toEqual([]);
    expect(calls).toEqual(["deregister r1", "deregister r1", "retire"]);
    expect(registered.size).toBe(0);
    expect(proxy.exists).toBe(false);
    expect([...provider.live.values()].map((i) => i.release)).toEqual([2, 2]);

    const status = await kiln.status({ target: "web@default" });
    expect(status.proxies).toEqual([]);
    expect(status.drift).toEqual([]);
  });

  it("a failed rollout of a release without traffic.proxy keeps the proxy, serving the old release", async () => {
    const { kiln, registered, calls, proxy } = withProxy({ behavior: (request) => (request.config.env.BROKEN ? { neverHealthy: true } : {}) });
    await kiln.deploy({ spec: spec(true), baseDir: dir });
    const v1 = [...registered].sort();
    calls.length = 0;

    await nextVersion("v2");
    await expect(kiln.deploy({ spec: spec(false, { BROKEN: "1" }), baseDir: dir })).rejects.toMatchObject({ code: "HEALTH_CHECK_FAILED" });
    expect(calls).not.toContain("retire");
    expect(proxy.exists).toBe(true);
    expect([...registered].sort()).toEqual(v1);
    const status = await kiln.status({ target: "web@default" });
    expect(status.proxies.map((p) => p.address)).toEqual(["127.0.0.1:18080"]);
    expect(status.drift).toEqual([]);
  });

  it("a proxy that cannot start: the proxy is retired, and the rollback says release 1 still serves and where", async () => {
    const { kiln, events, calls, proxy } = withProxy();
    await kiln.deploy({ spec: spec(false), baseDir: dir });
    proxy.failRegister = true;
    calls.length = 0;
    events.length = 0;

    await nextVersion("v2");
    await expect(kiln.deploy({ spec: spec(true), baseDir: dir })).rejects.toMatchObject({ code: "LAUNCH_FAILED" });
    const rolledBack = events.find((event) => event.type === "rollout.rolled-back");
    expect(rolledBack).toMatchObject({ release: 2, restoredRelease: 1 });
    const reason = (rolledBack as { reason: string }).reason;
    expect(reason).not.toContain("no earlier release");
    expect(reason).toMatch(/^release 1 still serves at memory:\d+/);
    expect(calls).toContain("retire");
  });

  it("status shows a proxy the release does not declare, as drift", async () => {
    const { kiln, proxy } = withProxy();
    await kiln.deploy({ spec: spec(false), baseDir: dir });
    expect((await kiln.status({ target: "web@default" })).drift).toEqual([]);
    // A proxy left behind (a retirement that failed, or one made by another tool run).
    proxy.exists = true;
    const status = await kiln.status({ target: "web@default" });
    expect(status.proxies).toEqual([{ id: "p1", name: "kiln-proxy.web.default", state: "running", address: "127.0.0.1:18080" }]);
    expect(status.drift).toEqual([expect.stringContaining("front proxy kiln-proxy.web.default (127.0.0.1:18080) runs, but release 1 has no traffic.proxy")]);
  });

  it("status reports the release's proxy as drift when it is missing", async () => {
    const { kiln, proxy } = withProxy();
    await kiln.deploy({ spec: spec(true), baseDir: dir });
    expect((await kiln.status({ target: "web@default" })).drift).toEqual([]);
    proxy.exists = false;
    expect((await kiln.status({ target: "web@default" })).drift).toEqual(["the front proxy at 127.0.0.1:18080 of release 1 is missing"]);
  });
});
