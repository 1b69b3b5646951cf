// Methods the API does not have on paths it has: 405 with Allow (RFC 9110 §15.5.6) and a problem
// document, OPTIONS with Allow, HEAD as GET without a body; a path it does not have stays 404.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { silentLogger } from "@kilnjs/core";
import { createMemoryProvider } from "@kilnjs/testkit";
import { hashToken } from "./auth.js";
import { createKilnServer, type KilnServer } from "./server.js";

const TOKEN = "t-methods";

describe("methods a path does not take", () => {
  let dir: string;
  let server: KilnServer;

  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "kiln-methods-"));
    server = createKilnServer({
      providers: { memory: createMemoryProvider() },
      tokens: [{ name: "reader", sha256: hashToken(TOKEN), scopes: ["read"], environments: ["*"] }],
      dataDir: path.join(dir, ".kiln"),
      specRoot: dir,
      logger: silentLogger,
    });
  });
  afterAll(async () => {
    await server.close();
    await rm(dir, { recursive: true, force: true });
  });

  const call = (method: string, route: string, token: string | null = TOKEN) =>
    server.fetch(new Request(`http://127.0.0.1${route}`, { method, headers: token ? { authorization: `Bearer ${token}` } : {} }));

  it.each([
    ["DELETE", "/v1/targets", "GET, HEAD, OPTIONS"],
    ["PUT", "/v1/targets/web@prod", "GET, HEAD, OPTIONS"],
    ["PATCH", "/v1/deployments", "GET, HEAD, POST, OPTIONS"],
    ["GET", "/v1/plan", "POST, OPTIONS"],
    ["DELETE", "/v1/deployments/dep_0123456789abcdef0123456789abcdef/cancel", "POST, OPTIONS"],
    ["POST", "/v1/openapi.json", "GET, HEAD, OPTIONS"],
  ])("%s %s is 405 with Allow: %s and a problem document", async (method, route, allow) => {
    const answer = await call(method, route);
    expect(answer.status).toBe(405);
    expect(answer.headers.get("allow")).toBe(allow);
    expect(answer.headers.get("content-type")).toBe("application/problem+json");
    const body = (await answer.json()) as { status: number; code: string; detail: string; details: { allow: string[] } };
    expect(body).toMatchObject({ status: 405, code: "METHOD_NOT_ALLOWED", details: { allow: allow.split(", ") } });
    expect(body.detail).toContain(method);
  });

  it("answers OPTIONS with the path's methods, and HEAD as GET without a body", async () => {
    const options = await call("OPTIONS", "/v1/deployments");
    expect(options.status).toBe(204);
    expect(options.headers.get("allow")).toBe("GET, HEAD, POST, OPTIONS");
    expect(await options.text()).toBe("");

    const head = await call("HEAD", "/v1/targets");
    expect(head.status).toBe(200);
    expect(head.headers.get("content-type")).toContain("application/json");
    expect(await head.text()).toBe("");
    // HEAD of a path that only takes POST is refused like any other method.
    const headOfPost = await call("HEAD", "/v1/plan");
    expect(headOfPost.status).toBe(405);
    expect(headOfPost.headers.get("allow")).toBe("POST, OPTIONS");
  });

  it("keeps 404 for a path the API does not have (an empty path parameter too), and 401 before either without a token", async () => {
    for (const route of ["/v1/nothing", "/v1/targets//history", "/v1/targets/web@prod/nothing"]) {
      const answer = await call("DELETE", route);
      expect(answer.status, route).toBe(404);
      expect(answer.headers.get("allow"), route).toBeNull();
      expect(((await answer.json()) as { code: string }).code, route).toBe("NOT_FOUND");
    }
    expect((await call("DELETE", "/v1/targets", null)).status).toBe(401);
    // Health needs no token, so its 405 does not either.
    const health = await call("POST", "/v1/health", null);
    expect(health.status).toBe(405);
    expect(health.headers.get("allow")).toBe("GET, HEAD, OPTIONS");
  });
});
