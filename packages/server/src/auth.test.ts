// Tokens on every endpoint of the OpenAPI document: a missing or unknown token is refused (401), a
// token without the scope is refused (403), a token for another environment is refused (403, or 404
// for a deployment it may not see, so its existence does not leak).
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { silentLogger, waitFor } from "@kilnjs/core";
import { createMemoryProvider } from "@kilnjs/testkit";
import { createAuthenticator, hashToken, mayTouch, type TokenConfig } from "./auth.js";
import { createKilnServer, type KilnServer } from "./server.js";

const SECRETS = { admin: "s-admin", prodDeployer: "s-prod", stagingAdmin: "s-staging-admin", reader: "s-reader" } as const;
const tokens: TokenConfig[] = [
  { name: "admin", sha256: hashToken(SECRETS.admin), scopes: ["admin"], environments: ["*"] },
  { name: "prod-deployer", sha256: hashToken(SECRETS.prodDeployer), scopes: ["deploy"], environments: ["prod"] },
  { name: "staging-admin", sha256: hashToken(SECRETS.stagingAdmin), scopes: ["admin"], environments: ["staging"] },
  { name: "reader", sha256: hashToken(SECRETS.reader), scopes: ["read"], environments: ["*"] },
];

/** The scope each operation needs (the document says what exists; this says what each needs). */
const NEEDS: Record<string, "read" | "deploy" | "admin"> = {
  "get /v1/targets": "read",
  "get /v1/targets/{target}": "read",
  "get /v1/targets/{target}/history": "read",
  "get /v1/targets/{target}/lock": "read",
  "post /v1/targets/{target}/lock/release": "admin",
  "get /v1/targets/{target}/images": "read",
  "post /v1/targets/{target}/gc": "admin",
  "post /v1/plan": "deploy",
  "post /v1/deployments": "deploy",
  "post /v1/targets/{target}/rollback": "deploy",
  "get /v1/deployments": "read",
  "get /v1/deployments/{id}": "read",
  "get /v1/deployments/{id}/events": "read",
  "post /v1/deployments/{id}/cancel": "deploy",
  "get /v1/openapi.json": "read",
};

describe("tokens on every endpoint", () => {
  let dir: string;
  let server: KilnServer;
  let base: string;
  let deploymentId: string;
  let operations: Array<{ method: string; path: string }>;

  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "kiln-server-auth-"));
    await writeFile(path.join(dir, "Dockerfile"), "FROM scratch\n");
    server = createKilnServer({ providers: { memory: createMemoryProvider() }, tokens, dataDir: path.join(dir, ".kiln"), specRoot: dir, logger: silentLogger, pollIntervalMs: 50 });
    base = (await server.listen(0)).url;
    const accepted = await fetch(`${base}/v1/deployments`, {
      method: "POST",
      headers: { authorization: `Bearer ${SECRETS.admin}`, "content-type": "application/json" },
      body: JSON.stringify({ spec: specFor(), environment: "prod" }),
    });
    deploymentId = ((await accepted.json()) as { id: string }).id;
    await waitFor(
      async () => {
        const record = (await (await fetch(`${base}/v1/deployments/${deploymentId}`, { headers: { authorization: `Bearer ${SECRETS.admin}` } })).json()) as { state: string };
        return record.state === "succeeded" ? { done: true, value: undefined } : { done: false, reason: record.state };
      },
      { timeoutMs: 20_000, minDelayMs: 20, maxDelayMs: 200, description: "the setup deployment" },
    );
    const document = (await (await fetch(`${base}/v1/openapi.json`, { headers: { authorization: `Bearer ${SECRETS.reader}` } })).json()) as { paths: Record<string, Record<string, unknown>> };
    operations = Object.entries(document.paths).flatMap(([route, methods]) => Object.keys(methods).map((method) => ({ method, path: route })));
    operations.push({ method: "get", path: "/v1/openapi.json" }, { method: "get", path: "/metrics" });
  });
  afterAll(async () => {
    await server.close();
    await rm(dir, { recursive: true, force: true });
  });

  function specFor() {
    return { service: "web", provider: "memory", instances: { count: 1 }, environments: { prod: {}, staging: {} } };
  }
  function urlOf(route: string): string {
    return `${base}${route.replace("{target}", "web@prod").replace("{id}", deploymentId)}`;
  }
  function bodyOf(route: string): string | undefined {
    if (route === "/v1/deployments" || route === "/v1/plan") return JSON.stringify({ spec: specFor(), environment: "prod" });
    if (route.endsWith("/rollback")) return "{}";
    if (route.endsWith("/gc")) return JSON.stringify({ keep: 5 });
    return undefined;
  }
  const send = (operation: { method: string; path: string }, secret: string | undefined) =>
    fetch(urlOf(operation.path), {
      method: operation.method.toUpperCase(),
      headers: { ...(secret ? { authorization: `Bearer ${secret}` } : {}), "content-type": "application/json" },
      ...(bodyOf(operation.path) !== undefined && operation.method !== "get" ? { body: bodyOf(operation.path) } : {}),
    });

  it("the document lists every operation this test knows the scope of", () => {
    const known = new Set(Object.keys(NEEDS));
    for (const operation of operations) if (operation.path !== "/metrics") expect(known.has(`${operation.method} ${operation.path}`), `${operation.method} ${operation.path}`).toBe(true);
  });

  it("refuses a missing and an unknown token on every endpoint but health, with a problem document", async () => {
    for (const operation of operations) {
      for (const secret of [undefined, "not-a-token"]) {
        const answer = await send(operation, secret);
        expect(answer.status, `${operation.method} ${operation.path} with ${secret ?? "no token"}`).toBe(401);
        expect(answer.headers.get("content-type")).toBe("application/problem+json");
        expect(((await answer.json()) as { code: string }).code).toBe("UNAUTHENTICATED");
      }
    }
    expect((await fetch(`${base}/v1/health`)).status).toBe(200);
  });

  it("refuses a token without the scope (403 FORBIDDEN)", async () => {
    for (const operation of operations) {
      const needs = NEEDS[`${operation.method} ${operation.path}`];
      if (needs === undefined || needs === "read") continue;
      const weaker = needs === "admin" ? SECRETS.prodDeployer : SECRETS.reader;
      const answer = await send(operation, weaker);
      expect(answer.status, `${operation.method} ${operation.path}`).toBe(403);
      expect(((await answer.json()) as { code: string }).code).toBe("FORBIDDEN");
    }
  });

  it("refuses a token for another environment on every target-scoped endpoint", async () => {
    for (const operation of operations) {
      if (!operation.path.includes("{target}") && !operation.path.includes("{id}") && operation.path !== "/v1/deployments" && operation.path !== "/v1/plan") continue;
      if (operation.path === "/v1/deployments" && operation.method === "get") continue;
      const answer = await send(operation, SECRETS.stagingAdmin);
      const expected = operation.path.includes("{id}") ? 404 : 403;
      expect(answer.status, `${operation.method} ${operation.path}`).toBe(expected);
    }
    const list = (await (await fetch(`${base}/v1/deployments`, { headers: { authorization: `Bearer ${SECRETS.stagingAdmin}` } })).json()) as { deployments: unknown[] };
    expect(list.deployments).toEqual([]);
  });

  it("compares tokens by hash, and a scope implies the ones below it", () => {
    const authenticator = createAuthenticator(tokens);
    const admin = authenticator.authenticate(SECRETS.stagingAdmin)!;
    expect([...admin.scopes].sort()).toEqual(["admin", "deploy", "read"]);
    expect(mayTouch(admin, "staging")).toBe(true);
    expect(mayTouch(admin, "prod")).toBe(false);
    expect(authenticator.authenticate(hashToken(SECRETS.admin))).toBeUndefined();
    expect(() => createAuthenticator([...tokens, tokens[0]!])).toThrow(/twice/);
  });
});
