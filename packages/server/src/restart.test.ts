// The single-machine server (no --postgres) keeps its deployments across a restart, as its
// embedded state store keeps releases: the list, a finished deployment's steps and events, and
// idempotent answers are still there for the next server on the same data folder.
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { silentLogger, waitFor } from "@kilnjs/core";
import { createMemoryProvider } from "@kilnjs/testkit";
import { hashToken } from "./auth.js";
import { createKilnServer, type KilnServer } from "./server.js";

const TOKEN = "t-restart";

describe("a restart of the single-machine server", () => {
  let dir: string;
  const provider = createMemoryProvider();
  const start = () =>
    createKilnServer({
      providers: { memory: provider },
      tokens: [{ name: "admin", sha256: hashToken(TOKEN), scopes: ["admin"], environments: ["*"] }],
      dataDir: path.join(dir, ".kiln"),
      specRoot: dir,
      logger: silentLogger,
      pollIntervalMs: 50,
    });
  const call = (server: KilnServer, method: string, route: string, body?: unknown, headers: Record<string, string> = {}) =>
    server.fetch(
      new Request(`http://127.0.0.1${route}`, {
        method,
        headers: { authorization: `Bearer ${TOKEN}`, ...(body !== undefined ? { "content-type": "application/json" } : {}), ...headers },
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      }),
    );

  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "kiln-restart-"));
    await writeFile(path.join(dir, "Dockerfile"), "FROM scratch\n");
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("keeps the deployments, a finished one's steps and events, and idempotent answers", async () => {
    const before = start();
    const spec = { service: "web", provider: "memory", instances: { count: 1, ports: [{ name: "http", port: 8080 }] }, health: { intervalMs: 100, healthyThreshold: 1 } };
    const accepted = await call(before, "POST", "/v1/deployments", { spec }, { "idempotency-key": "deploy-web-1" });
    expect(accepted.status).toBe(202);
    const { id } = (await accepted.json()) as { id: string };
    await waitFor(
      async () => {
        const { state } = (await (await call(before, "GET", `/v1/deployments/${id}`)).json()) as { state: string };
        return state === "succeeded" ? { done: true, value: undefined } : { done: false, reason: state };
      },
      { timeoutMs: 20_000, minDelayMs: 20, maxDelayMs: 100, description: "the deployment to succeed" },
    );
    const list = await (await call(before, "GET", "/v1/deployments")).json();
    const detail = (await (await call(before, "GET", `/v1/deployments/${id}`)).json()) as { steps: unknown[] };
    const events = await (await call(before, "GET", `/v1/deployments/${id}/events`, undefined, { accept: "application/x-ndjson" })).text();
    expect(detail.steps.length).toBeGreaterThan(3);
    await before.close();

    const after = start();
    try {
      await after.listen(0);
      expect(await (await call(after, "GET", "/v1/deployments")).json()).toEqual(list);
      expect(await (await call(after, "GET", `/v1/deployments/${id}`)).json()).toEqual(detail);
      expect(await (await call(after, "GET", `/v1/deployments/${id}/events`, undefined, { accept: "application/x-ndjson" })).text()).toBe(events);
      const replayed = await call(after, "POST", "/v1/deployments", { spec }, { "idempotency-key": "deploy-web-1" });
      expect(replayed.headers.get("idempotent-replayed")).toBe("true");
      expect(((await replayed.json()) as { id: string }).id).toBe(id);
    } finally {
      await after.close();
    }
  });
});
