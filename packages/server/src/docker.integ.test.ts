// The HTTP API end to end on the real Docker engine with examples/hello-web: deploy and follow the
// events over SSE, plan, deploy v2, roll back; and two POSTs for one target 100 ms apart: one 202,
// one 409, no orphaned containers, and both callers read the same final state.
import { cp, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import Docker from "dockerode";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LABELS, silentLogger, waitFor } from "@kilnjs/core";
import { createDockerProvider } from "@kilnjs/provider-docker";
import { requireDockerEngine } from "@kilnjs/testkit";
import { hashToken } from "./auth.js";
import { createKilnServer, type KilnServer } from "./server.js";

const engine = await requireDockerEngine();
const HELLO_WEB = fileURLToPath(new URL("../../../examples/hello-web", import.meta.url));
const TOKEN = "t-docker-admin";

describe.skipIf(!engine)("the HTTP API on the Docker engine (hello-web)", () => {
  const docker = new Docker(process.env.DOCKER_HOST?.startsWith("unix://") ? { socketPath: process.env.DOCKER_HOST.slice("unix://".length) } : undefined);
  const service = `api-${Date.now().toString(36)}`;
  let dir: string;
  let server: KilnServer;
  let base: string;

  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "kiln-server-docker-"));
    await cp(HELLO_WEB, dir, { recursive: true, filter: (source) => !/[/\\](\.kiln|node_modules)$/.test(source) });
    await writeFile(path.join(dir, "itest-id.txt"), `${service}\n`);
    server = createKilnServer({
      providers: { docker: createDockerProvider() },
      tokens: [{ name: "admin", sha256: hashToken(TOKEN), scopes: ["admin"], environments: ["*"] }],
      dataDir: path.join(dir, ".kiln"),
      specRoot: dir,
      logger: silentLogger,
      pollIntervalMs: 100,
    });
    base = (await server.listen(0)).url;
  });

  afterAll(async () => {
    await server.close();
    const containers = await docker.listContainers({ all: true, filters: { label: [`${LABELS.service}=${service}`] } });
    await Promise.all(containers.map((info) => docker.getContainer(info.Id).remove({ force: true }).catch(() => undefined)));
    for (const image of await docker.listImages({ filters: { label: [`${LABELS.service}=${service}`] } })) await docker.getImage(image.Id).remove({ force: true }).catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  });

  const spec = (version: string) => ({
    service,
    image: { dockerfile: { context: ".", args: { BASE_IMAGE: "kiln-local/node:20" } } },
    instances: { count: 2, ports: [{ name: "http", port: 8080 }], env: { APP_VERSION: version }, stopGracePeriodMs: 1000 },
    health: { http: { port: "http", path: "/healthz" }, intervalMs: 300, timeoutMs: 500, healthyThreshold: 1, startPeriodMs: 1000 },
    rollout: { strategy: "rolling", maxSurge: 1, maxUnavailable: 0 },
  });
  const call = (method: string, route: string, body?: unknown) =>
    fetch(`${base}${route}`, { method, headers: { authorization: `Bearer ${TOKEN}`, ...(body !== undefined ? { "content-type": "application/json" } : {}) }, ...(body !== undefined ? { body: JSON.stringify(body) } : {}) });
  const containers = () => docker.listContainers({ all: true, filters: { label: [`${LABELS.service}=${service}`] } });
  const finished = (id: string) =>
    waitFor(
      async () => {
        const body = (await (await call("GET", `/v1/deployments/${id}`)).json()) as { state: string; release?: number };
        return ["succeeded", "unchanged", "failed", "cancelled"].includes(body.state) ? { done: true, value: body } : { done: false, reason: body.state };
      },
      { timeoutMs: 120_000, minDelayMs: 100, maxDelayMs: 500, description: `deployment ${id} to finish` },
    );

  it("deploys v1 and streams its events over SSE to the end", async () => {
    const accepted = await call("POST", "/v1/deployments", { spec: spec("v1") });
    expect(accepted.status).toBe(202);
    const location = accepted.headers.get("location")!;
    const text = await (await fetch(`${base}${location}/events`, { headers: { authorization: `Bearer ${TOKEN}`, accept: "text/event-stream" } })).text();
    expect(text).toContain("event: image.built");
    expect(text.match(/^event: instance\.healthy$/gm)).toHaveLength(2);
    expect(text).toContain("event: rollout.succeeded");
    const final = (await (await call("GET", location)).json()) as { state: string; release: number };
    expect(final).toMatchObject({ state: "succeeded", release: 1 });
    const running = (await containers()).filter((info) => info.State === "running");
    expect(running).toHaveLength(2);
    // The instances really serve.
    const status = (await (await call("GET", `/v1/targets/${service}@default`)).json()) as { instances: Array<{ endpoints: { http: { host: string; port: number } } }> };
    const { host, port } = status.instances[0]!.endpoints.http;
    expect((await fetch(`http://${host}:${port}/healthz`)).status).toBe(200);
  });

  it("plans without changing anything, deploys v2, and rolls back to v1's image", async () => {
    const before = (await containers()).map((info) => info.Id).sort();
    const plan = (await (await call("POST", "/v1/plan", { spec: spec("v2") })).json()) as { noop: boolean; changes: string[] };
    expect(plan.noop).toBe(false);
    expect(plan.changes.join("\n")).toContain("create release 2");
    expect((await containers()).map((info) => info.Id).sort()).toEqual(before);

    const v2 = (await (await call("POST", "/v1/deployments", { spec: spec("v2") })).json()) as { id: string };
    expect(await finished(v2.id)).toMatchObject({ state: "succeeded", release: 2 });
    const rollback = await call("POST", `/v1/targets/${service}@default/rollback`, {});
    expect(rollback.status).toBe(202);
    expect(await finished(((await rollback.json()) as { id: string }).id)).toMatchObject({ state: "succeeded", release: 3 });
    const live = (await containers()).filter((info) => info.State === "running");
    expect(live).toHaveLength(2);
    expect(new Set(live.map((info) => info.Labels[LABELS.release]))).toEqual(new Set(["3"]));
  });

  it("two POSTs for one target 100 ms apart: one 202, one 409; no orphaned containers; both read the final state", async () => {
    const first = call("POST", "/v1/deployments", { spec: spec("v4") });
    await new Promise((resolve) => setTimeout(resolve, 100)); // the 100 ms apart the scenario asks for, not a synchronisation
    const second = call("POST", "/v1/deployments", { spec: spec("v5") });
    const answers = await Promise.all([first, second]);
    expect(answers.map((answer) => answer.status).sort()).toEqual([202, 409]);
    const accepted = answers.find((answer) => answer.status === 202)!;
    const refused = answers.find((answer) => answer.status === 409)!;
    const { id } = (await accepted.json()) as { id: string };
    const conflict = (await refused.json()) as { code: string; details: { deployment: { id: string; links: { self: string } } } };
    expect(conflict.code).toBe("TARGET_LOCKED");
    expect(conflict.details.deployment.id).toBe(id);
    // Both callers follow the same deployment to its end and read the same final state.
    const [fromFirst, fromSecond] = await Promise.all([finished(id), finished(conflict.details.deployment.id)]);
    expect(fromFirst).toEqual(fromSecond);
    expect(fromFirst).toMatchObject({ state: "succeeded", release: 4 });
    const all = await containers();
    expect(all).toHaveLength(2);
    expect(all.every((info) => info.State === "running" && info.Labels[LABELS.release] === "4")).toBe(true);
  });
});
