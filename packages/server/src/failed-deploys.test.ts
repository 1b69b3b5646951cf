// Deployments that fail before they make a release (a missing Dockerfile, a build context that is
// not there, a secret file that cannot be read, a registered service whose kiln.yaml is gone):
// they leave no target behind in /v1/targets, and nothing a caller reads (the deployment's error,
// its events, a problem document) shows the server's own absolute paths: files are named relative
// to the spec's root.
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { silentLogger, waitFor } from "@kilnjs/core";
import { createMemoryProvider } from "@kilnjs/testkit";
import { hashToken } from "./auth.js";
import { createKilnServer, type KilnServer } from "./server.js";

const TOKEN = "t-failed-deploys";

describe("deployments that fail before they make a release", () => {
  let dir: string;
  let specRoot: string;
  let server: KilnServer;

  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "kiln-failed-deploys-"));
    specRoot = path.join(dir, "specs");
    await mkdir(path.join(specRoot, "app"), { recursive: true });
    await writeFile(path.join(specRoot, "app", "Dockerfile"), "FROM scratch\n");
    await mkdir(path.join(dir, "gone"), { recursive: true });
    server = createKilnServer({
      providers: { memory: createMemoryProvider() },
      tokens: [{ name: "admin", sha256: hashToken(TOKEN), scopes: ["admin"], environments: ["*"] }],
      dataDir: path.join(dir, "data"),
      specRoot,
      services: { vanished: path.join(dir, "gone", "kiln.yaml") },
      logger: silentLogger,
      pollIntervalMs: 50,
      env: {},
    });
  });
  afterAll(async () => {
    await server.close();
    await rm(dir, { recursive: true, force: true });
  });

  const call = async (method: string, route: string, body?: unknown) =>
    server.fetch(
      new Request(`http://127.0.0.1${route}`, {
        method,
        headers: { authorization: `Bearer ${TOKEN}`, ...(body !== undefined ? { "content-type": "application/json" } : {}) },
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      }),
    );
  const spec = (service: string, extra: Record<string, unknown>) => ({
    service,
    provider: "memory",
    instances: { count: 1, ports: [{ name: "http", port: 8080 }] },
    health: { intervalMs: 100, healthyThreshold: 1 },
    ...extra,
  });
  /** Deploys `body`, waits for the deployment to end, and returns it with its events as the API gives them. */
  async function deployAndWait(body: unknown): Promise<{ deployment: { state: string; error?: { code: string; message: string } }; text: string }> {
    const accepted = await call("POST", "/v1/deployments", body);
    expect(accepted.status, await accepted.clone().text()).toBe(202);
    const { id } = (await accepted.json()) as { id: string };
    const deployment = await waitFor(
      async () => {
        const found = (await (await call("GET", `/v1/deployments/${id}`)).json()) as { state: string; error?: { code: string; message: string } };
        return ["succeeded", "unchanged", "failed", "cancelled"].includes(found.state) ? { done: true, value: found } : { done: false, reason: found.state };
      },
      { timeoutMs: 20_000, minDelayMs: 20, maxDelayMs: 100, description: `deployment ${id} to end` },
    );
    // Everything a caller can read about it: the record, its steps, its event stream, the list.
    const text = [
      JSON.stringify(deployment),
      await (await call("GET", `/v1/deployments/${id}`)).text(),
      await (await call("GET", `/v1/deployments/${id}/events`)).text(),
      await (await call("GET", "/v1/deployments")).text(),
    ].join("\n");
    return { deployment, text };
  }
  const listed = async () => ((await (await call("GET", "/v1/targets")).json()) as { targets: Array<{ target: string }> }).targets.map((row) => row.target);

  it.each([
    ["a missing Dockerfile", "no-dockerfile", { image: { dockerfile: { context: "app", file: "Missing.Dockerfile" } } }, "BUILD_CONTEXT_INVALID", "app/Missing.Dockerfile"],
    ["a build context that is not there", "no-context", { image: { dockerfile: { context: "nowhere" } } }, "BUILD_CONTEXT_INVALID", "nowhere"],
    [
      "a secret file that does not exist",
      "no-secret",
      { image: { dockerfile: { context: "app" } }, secrets: { DB_PASSWORD: { from: { file: "secrets/db-password" } } } },
      "SECRET_UNAVAILABLE",
      "secrets/db-password",
    ],
  ])("%s: the deployment fails naming the file relative to the spec root, and leaves no target", async (_, service, extra, code, relative) => {
    const { deployment, text } = await deployAndWait({ spec: spec(service, extra) });
    expect(deployment.state).toBe("failed");
    expect(deployment.error?.code).toBe(code);
    expect(deployment.error?.message).toContain(relative);
    expect(text).not.toContain(dir);
    expect(await listed()).not.toContain(`${service}@default`);
    // The target's own reads answer (nothing deployed), without a path either.
    const history = (await (await call("GET", `/v1/targets/${service}@default/history`)).json()) as { releases: unknown[]; rollouts: unknown[] };
    expect(history).toMatchObject({ releases: [], rollouts: [] });
  });

  it("a target that did get a release is listed; the failed ones next to it are not", async () => {
    const { deployment } = await deployAndWait({ spec: spec("works", { image: { dockerfile: { context: "app" } } }) });
    expect(deployment.state).toBe("succeeded");
    expect(await listed()).toContain("works@default");
    expect(await listed()).not.toContain("no-dockerfile@default");
  });

  it("a problem document names a registered service's file relative to its folder, never by the server's path", async () => {
    const answer = await call("POST", "/v1/deployments", { service: "vanished" });
    expect(answer.headers.get("content-type")).toBe("application/problem+json");
    const text = await answer.text();
    expect(text).toContain("kiln.yaml");
    expect(text).not.toContain(dir);
  });
});
