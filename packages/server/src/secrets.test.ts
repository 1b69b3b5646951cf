// Secrets through the server: a request names a secret, never carries one, and can reach only what
// the server lets its callers name: variables with the secret prefix, files under the spec root.
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { silentLogger, waitFor, type LaunchRequest, type Provider } from "@kilnjs/core";
import { createMemoryProvider } from "@kilnjs/testkit";
import { hashToken } from "./auth.js";
import { createKilnServer, type KilnServer } from "./server.js";

const TOKEN = "t-secrets-admin";

describe("secrets through the server (memory provider)", () => {
  let dir: string;
  let outside: string;
  let server: KilnServer;
  let base: string;
  const launches: LaunchRequest[] = [];

  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "kiln-server-secrets-"));
    outside = await mkdtemp(path.join(tmpdir(), "kiln-server-outside-"));
    await writeFile(path.join(dir, "Dockerfile"), "FROM scratch\n");
    await writeFile(path.join(dir, "db.secret"), "from-a-file");
    await writeFile(path.join(outside, "server-only.secret"), "not-for-callers");
    const memory = createMemoryProvider();
    const provider: Provider = { ...memory, instances: { ...memory.instances, launch: (request, ctx) => (launches.push(request), memory.instances.launch(request, ctx)) } };
    server = createKilnServer({
      providers: { memory: provider },
      tokens: [{ name: "admin", sha256: hashToken(TOKEN), scopes: ["admin"], environments: ["*"] }],
      dataDir: path.join(dir, ".kiln"),
      specRoot: dir,
      logger: silentLogger,
      pollIntervalMs: 50,
      env: { KILN_SECRET_DB: "from-a-variable", DATABASE_URL: "postgres://server:its-own-password@db/kiln" },
    });
    base = (await server.listen(0)).url;
  });
  afterAll(async () => {
    await server.close();
    await rm(dir, { recursive: true, force: true });
    await rm(outside, { recursive: true, force: true });
  });

  const call = async (method: string, route: string, body?: unknown) => {
    const response = await fetch(`${base}${route}`, { method, headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" }, ...(body !== undefined ? { body: JSON.stringify(body) } : {}) });
    return { status: response.status, body: (await response.json()) as Record<string, unknown> };
  };
  const spec = (service: string, secrets: Record<string, unknown>) => ({ service, provider: "memory", instances: { count: 1 }, health: { intervalMs: 100, healthyThreshold: 1 }, secrets });
  const finished = (id: string) =>
    waitFor(
      async () => {
        const { body } = await call("GET", `/v1/deployments/${id}`);
        return ["succeeded", "unchanged", "failed", "cancelled"].includes(body.state as string) ? { done: true, value: body } : { done: false, reason: String(body.state) };
      },
      { timeoutMs: 20_000, minDelayMs: 20, maxDelayMs: 100, description: `deployment ${id} to finish` },
    );

  it("reads a prefixed variable and a file under the spec root", async () => {
    const posted = await call("POST", "/v1/deployments", { spec: spec("sec-ok", { DB: { from: { env: "KILN_SECRET_DB" } }, FILE: { from: { file: "db.secret" } } }) });
    expect(posted.status).toBe(202);
    expect((await finished(posted.body.id as string)).state).toBe("succeeded");
    const launch = launches.find((request) => request.target.service === "sec-ok")!;
    expect([launch.secrets?.get("DB")?.reveal(), launch.secrets?.get("FILE")?.reveal()]).toEqual(["from-a-variable", "from-a-file"]);
  });

  it("never hands a caller one of the server's own variables", async () => {
    const posted = await call("POST", "/v1/deployments", { spec: spec("sec-env", { STOLEN: { from: { env: "DATABASE_URL" } } }) });
    const record = await finished(posted.body.id as string);
    expect(record.state).toBe("failed");
    expect(JSON.stringify(record)).toMatch(/SECRET_UNAVAILABLE/);
    expect(JSON.stringify(record)).toMatch(/only variables whose names start with KILN_SECRET_/);
    expect(JSON.stringify(record)).not.toContain("its-own-password");
    expect(launches.some((request) => request.target.service === "sec-env")).toBe(false);
  });

  it("refuses a secret file outside the spec root before anything runs", async () => {
    const posted = await call("POST", "/v1/deployments", { spec: spec("sec-file", { STOLEN: { from: { file: path.join(outside, "server-only.secret") } } }) });
    expect(posted.status).toBe(422);
    expect(JSON.stringify(posted.body)).toMatch(/secrets\.STOLEN\.from\.file/);
    expect(JSON.stringify(posted.body)).not.toContain("not-for-callers");
    expect(launches.some((request) => request.target.service === "sec-file")).toBe(false);
  });
});
