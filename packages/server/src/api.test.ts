// The HTTP API on the in-memory provider (core's lifecycle, no engine): deployments with events over
// SSE and NDJSON, idempotency keys, 409 for a busy target, tokens, scopes and environments.
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { silentLogger, waitFor } from "@kilnjs/core";
import { createMemoryProvider } from "@kilnjs/testkit";
import { hashToken, type TokenConfig } from "./auth.js";
import { createKilnServer, type KilnServer } from "./server.js";

const TOKENS = { admin: "t-admin", deployer: "t-deploy-staging", reader: "t-read" } as const;
const tokens: TokenConfig[] = [
  { name: "admin", sha256: hashToken(TOKENS.admin), scopes: ["admin"], environments: ["*"] },
  { name: "staging-deployer", sha256: hashToken(TOKENS.deployer), scopes: ["deploy"], environments: ["staging"] },
  { name: "reader", sha256: hashToken(TOKENS.reader), scopes: ["read"], environments: ["*"] },
];

describe("the HTTP API (memory provider)", () => {
  let dir: string;
  let server: KilnServer;
  let base: string;

  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "kiln-server-"));
    await writeFile(path.join(dir, "Dockerfile"), "FROM scratch\n");
    const provider = createMemoryProvider();
    server = createKilnServer({ providers: { memory: provider }, tokens, dataDir: path.join(dir, ".kiln"), specRoot: dir, logger: silentLogger, pollIntervalMs: 50 });
    base = (await server.listen(0)).url;
  });
  afterAll(async () => {
    await server.close();
    await rm(dir, { recursive: true, force: true });
  });

  const spec = (service: string, extra: Record<string, unknown> = {}) => ({
    service,
    provider: "memory",
    instances: { count: 2, ports: [{ name: "http", port: 8080 }] },
    health: { intervalMs: 100, healthyThreshold: 1 },
    environments: { staging: { instances: { count: 1 } }, prod: {} },
    ...extra,
  });
  const call = (method: string, route: string, token: string | undefined, body?: unknown, headers: Record<string, string> = {}) =>
    fetch(`${base}${route}`, {
      method,
      headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(body !== undefined ? { "content-type": "application/json" } : {}), ...headers },
      ...(body !== undefined ? { body: typeof body === "string" ? body : JSON.stringify(body) } : {}),
    });
  const finished = (id: string) =>
    waitFor(
      async () => {
        const body = (await (await call("GET", `/v1/deployments/${id}`, TOKENS.admin)).json()) as { state: string };
        return ["succeeded", "unchanged", "failed", "cancelled"].includes(body.state) ? { done: true, value: body } : { done: false, reason: body.state };
      },
      { timeoutMs: 20_000, minDelayMs: 20, maxDelayMs: 100, description: `deployment ${id} to finish` },
    );

  it("answers health without a token and refuses everything else without one", async () => {
    expect((await call("GET", "/v1/health", undefined)).status).toBe(200);
    const refused = await call("GET", "/v1/targets", undefined);
    expect(refused.status).toBe(401);
    expect(refused.headers.get("content-type")).toBe("application/problem+json");
    expect(((await refused.json()) as { code: string }).code).toBe("UNAUTHENTICATED");
    expect((await call("GET", "/v1/targets", "wrong")).status).toBe(401);
  });

  it("deploys a posted spec: 202 with Location, events over SSE to the end, the target's status", async () => {
    const accepted = await call("POST", "/v1/deployments", TOKENS.admin, { spec: spec("web"), environment: "prod" });
    expect(accepted.status).toBe(202);
    const location = accepted.headers.get("location")!;
    expect(location).toMatch(/^\/v1\/deployments\/dep_[0-9a-f]{32}$/);
    const events = await fetch(`${base}${location}/events`, { headers: { authorization: `Bearer ${TOKENS.admin}`, accept: "text/event-stream" } });
    expect(events.headers.get("content-type")).toContain("text/event-stream");
    const text = await events.text();
    expect(text).toContain("event: rollout.succeeded");
    expect(text).toContain("event: deployment.finished");
    const ids = [...text.matchAll(/^id: (\d+)$/gm)].map((match) => Number(match[1]));
    expect(ids).toEqual(ids.map((_, index) => index + 1));
    // Resumable: after the third event, the same stream from the fourth.
    const resumed = await (await fetch(`${base}${location}/events`, { headers: { authorization: `Bearer ${TOKENS.admin}`, "last-event-id": "3" } })).text();
    expect([...resumed.matchAll(/^id: (\d+)$/gm)].map((match) => Number(match[1]))[0]).toBe(4);
    const ndjson = await (await fetch(`${base}${location}/events`, { headers: { authorization: `Bearer ${TOKENS.admin}`, accept: "application/x-ndjson" } })).text();
    const lines = ndjson.trim().split("\n").map((line) => JSON.parse(line) as { type: string });
    expect(lines.at(-1)?.type).toBe("deployment.finished");
    const detail = (await (await call("GET", location, TOKENS.reader)).json()) as { state: string; release: number; steps: unknown[] };
    expect(detail).toMatchObject({ state: "succeeded", release: 1 });
    expect(detail.steps.length).toBe(ids.length);
    const status = (await (await call("GET", "/v1/targets/web@prod", TOKENS.reader)).json()) as { release: { number: number }; instances: unknown[] };
    expect(status.release.number).toBe(1);
    expect(status.instances).toHaveLength(2);
    const history = (await (await call("GET", "/v1/targets/web@prod/history", TOKENS.reader)).json()) as { releases: Array<{ number: number }> };
    expect(history.releases.map((release) => release.number)).toEqual([1]);
  });

  it("answers a retried POST with the same Idempotency-Key with the first answer, starting nothing new", async () => {
    const body = { spec: spec("idem"), environment: "prod" };
    const first = await call("POST", "/v1/deployments", TOKENS.admin, body, { "idempotency-key": "k-1" });
    const second = await call("POST", "/v1/deployments", TOKENS.admin, body, { "idempotency-key": "k-1" });
    expect(first.status).toBe(202);
    expect(second.status).toBe(202);
    expect(first.headers.get("idempotent-replayed")).toBeNull();
    expect(second.headers.get("idempotent-replayed")).toBe("true");
    const [a, b] = (await Promise.all([first.json(), second.json()])) as Array<{ id: string }>;
    expect(b!.id).toBe(a!.id);
    await finished(a!.id);
    const list = (await (await call("GET", "/v1/deployments?target=idem@prod", TOKENS.admin)).json()) as { deployments: unknown[] };
    expect(list.deployments).toHaveLength(1);
    const reused = await call("POST", "/v1/deployments", TOKENS.admin, { ...body, environment: "staging" }, { "idempotency-key": "k-1" });
    expect(reused.status).toBe(422);
    expect(((await reused.json()) as { code: string }).code).toBe("IDEMPOTENCY_KEY_REUSED");
  });

  it("keeps no 409 under an Idempotency-Key (a retry gets through once the target is free), and refuses what cannot be done at once", async () => {
    const slow = spec("retry", { rollout: { strategy: "canary", steps: [{ instances: 1, holdMs: 1500 }] } });
    const first = (await (await call("POST", "/v1/deployments", TOKENS.admin, { spec: slow, environment: "prod" })).json()) as { id: string };
    const busy = await call("POST", "/v1/targets/retry@prod/rollback", TOKENS.admin, {}, { "idempotency-key": "rb-1" });
    expect(busy.status).toBe(404); // never deployed yet: nothing to roll back to, said at once
    const conflict = await call("POST", "/v1/deployments", TOKENS.admin, { spec: slow, environment: "prod" }, { "idempotency-key": "dep-2" });
    expect(conflict.status).toBe(409);
    expect(await finished(first.id)).toMatchObject({ state: "succeeded" });
    const retried = await call("POST", "/v1/deployments", TOKENS.admin, { spec: slow, environment: "prod" }, { "idempotency-key": "dep-2" });
    expect(retried.status).toBe(202);
    expect(retried.headers.get("idempotent-replayed")).toBeNull();
    const { id } = (await retried.json()) as { id: string };
    await finished(id);
    const cancelEnded = await call("POST", `/v1/deployments/${id}/cancel`, TOKENS.admin);
    expect(cancelEnded.status).toBe(409);
    expect((await call("POST", "/v1/targets/retry@prod/rollback", TOKENS.admin, { release: 99 })).status).toBe(404);
    expect((await call("POST", "/v1/targets/nope@prod/rollback", TOKENS.admin, {})).status).toBe(404);
    const targets = (await (await call("GET", "/v1/targets", TOKENS.admin)).json()) as { targets: Array<{ target: string }> };
    expect(targets.targets.map((row) => row.target)).not.toContain("nope@prod");
    const unauthenticated = await call("GET", "/v1/targets", undefined);
    expect(unauthenticated.headers.get("www-authenticate")).toBe('Bearer realm="kiln"');
    const badTarget = (await (await call("GET", "/v1/targets/Not_A_Target", TOKENS.admin)).json()) as { detail: string };
    expect(badTarget.detail).toContain("service@environment");
  });

  it("answers 409 at once for a second deploy of a target with one queued or running", async () => {
    const slow = spec("busy", { rollout: { pauseBetweenBatchesMs: 1500, maxSurge: 1 } });
    const first = await call("POST", "/v1/deployments", TOKENS.admin, { spec: slow, environment: "prod" });
    const second = await call("POST", "/v1/deployments", TOKENS.admin, { spec: slow, environment: "prod" });
    expect(first.status).toBe(202);
    expect(second.status).toBe(409);
    const conflict = (await second.json()) as { code: string; details: { deployment: { id: string } } };
    expect(conflict.code).toBe("TARGET_LOCKED");
    const { id } = (await first.json()) as { id: string };
    expect(conflict.details.deployment.id).toBe(id);
    await finished(id);
  });

  it("cancels a running deployment as Ctrl-C would: the previous release keeps serving", async () => {
    const first = (await (await call("POST", "/v1/deployments", TOKENS.admin, { spec: spec("cancel"), environment: "prod" })).json()) as { id: string };
    await finished(first.id);
    const slow = spec("cancel", { instances: { count: 2, ports: [{ name: "http", port: 8080 }], env: { V: "2" } }, rollout: { pauseBetweenBatchesMs: 10_000, maxSurge: 1 } });
    const second = (await (await call("POST", "/v1/deployments", TOKENS.admin, { spec: slow, environment: "prod" })).json()) as { id: string };
    await waitFor(
      async () => {
        const detail = (await (await call("GET", `/v1/deployments/${second.id}`, TOKENS.admin)).json()) as { steps: Array<{ type: string }> };
        return detail.steps.some((step) => step.type === "rollout.holding") ? { done: true, value: undefined } : { done: false };
      },
      { timeoutMs: 10_000, minDelayMs: 20, maxDelayMs: 100, description: "the rollout to hold" },
    );
    expect((await call("POST", `/v1/deployments/${second.id}/cancel`, TOKENS.admin)).status).toBe(202);
    expect(await finished(second.id)).toMatchObject({ state: "cancelled" });
    const status = (await (await call("GET", "/v1/targets/cancel@prod", TOKENS.admin)).json()) as { release: { number: number } };
    expect(status.release.number).toBe(1);
  });

  it("rolls back through the API and plans without changing anything", async () => {
    const plan = await call("POST", "/v1/plan", TOKENS.admin, { spec: spec("web", { instances: { count: 3, ports: [{ name: "http", port: 8080 }] } }), environment: "prod" });
    expect(plan.status).toBe(200);
    const planned = (await plan.json()) as { noop: boolean; changes: string[] };
    expect(planned.noop).toBe(false);
    expect(((await (await call("GET", "/v1/targets/web@prod", TOKENS.admin)).json()) as { instances: unknown[] }).instances).toHaveLength(2);
    const v2 = (await (await call("POST", "/v1/deployments", TOKENS.admin, { spec: spec("web", { instances: { count: 2, ports: [{ name: "http", port: 8080 }], env: { V: "2" } } }), environment: "prod" })).json()) as { id: string };
    expect(await finished(v2.id)).toMatchObject({ state: "succeeded", release: 2 });
    const rollback = await call("POST", "/v1/targets/web@prod/rollback", TOKENS.admin, {});
    expect(rollback.status).toBe(202);
    // A rollback is a new release (3) that runs release 1's image.
    expect(await finished(((await rollback.json()) as { id: string }).id)).toMatchObject({ state: "succeeded", release: 3 });
    const history = (await (await call("GET", "/v1/targets/web@prod/history", TOKENS.reader)).json()) as { releases: Array<{ number: number; imageId: string }> };
    expect(history.releases.map((release) => release.number)).toEqual([3, 2, 1]);
    expect(history.releases[0]!.imageId).toBe(history.releases[2]!.imageId);
  });

  it("validates a spec from HTTP exactly as one from a file, in JSON and YAML", async () => {
    const bad = await call("POST", "/v1/deployments", TOKENS.admin, { spec: { service: "web", provider: "memory", instances: { cuont: 2 } } });
    expect(bad.status).toBe(422);
    const problem = (await bad.json()) as { code: string; detail: string; details: { issues: Array<{ path: string[]; suggestion?: string }> } };
    expect(problem.code).toBe("SPEC_INVALID");
    expect(problem.details.issues[0]).toMatchObject({ path: ["instances", "cuont"], suggestion: "count" });
    const yaml = await fetch(`${base}/v1/deployments?environment=prod`, {
      method: "POST",
      headers: { authorization: `Bearer ${TOKENS.admin}`, "content-type": "application/yaml" },
      body: "service: web\nprovider: memory\ninstances:\n  count: two\n",
    });
    expect(yaml.status).toBe(422);
    const yamlProblem = (await yaml.json()) as { details: { issues: Array<{ line: number; column: number }> } };
    expect(yamlProblem.details.issues[0]).toMatchObject({ line: 4, column: 10 });
    expect((await call("POST", "/v1/deployments", TOKENS.admin, "{not json")).status).toBe(400);
    // A posted spec may not reach files outside the spec root.
    const outside = await call("POST", "/v1/deployments", TOKENS.admin, { spec: { ...spec("web"), image: { dockerfile: { context: "/etc" } } } });
    expect(outside.status).toBe(422);
    expect(((await outside.json()) as { details: { issues: Array<{ path: string[] }> } }).details.issues[0]!.path).toEqual(["image", "dockerfile", "context"]);
    const huge = await call("POST", "/v1/deployments", TOKENS.admin, { spec: spec("big", { "x-pad": "x".repeat(2 * 1024 * 1024) }) });
    expect(huge.status).toBe(413);
  });

  it("lists a target's images and collects the old ones (admin only; a dry run unless apply)", async () => {
    for (const version of ["1", "2", "3"]) {
      const accepted = await call("POST", "/v1/deployments", TOKENS.admin, { spec: spec("gcweb", { image: { dockerfile: { args: { VERSION: version } } } }), environment: "prod" });
      expect(accepted.status).toBe(202);
      expect((await finished(((await accepted.json()) as { id: string }).id)).state).toBe("succeeded");
    }
    const listed = (await (await call("GET", "/v1/targets/gcweb@prod/images", TOKENS.reader)).json()) as { images: Array<{ inUse: boolean }> };
    expect(listed.images).toHaveLength(3);
    expect(listed.images.filter((image) => image.inUse)).toHaveLength(1);
    expect((await call("POST", "/v1/targets/gcweb@prod/gc", TOKENS.deployer, { keep: 1 })).status).toBe(403);
    expect((await call("POST", "/v1/targets/gcweb@prod/gc", TOKENS.admin, { keep: 0 })).status).toBe(400);
    const dry = (await (await call("POST", "/v1/targets/gcweb@prod/gc", TOKENS.admin, { keep: 2 })).json()) as { applied: boolean; plan: { remove: unknown[] } };
    expect(dry).toMatchObject({ applied: false });
    expect(dry.plan.remove).toHaveLength(1);
    expect(((await (await call("GET", "/v1/targets/gcweb@prod/images", TOKENS.reader)).json()) as { images: unknown[] }).images).toHaveLength(3);
    const applied = await call("POST", "/v1/targets/gcweb@prod/gc", TOKENS.admin, { keep: 2, apply: true });
    expect(applied.status).toBe(200);
    expect(((await applied.json()) as { removed: unknown[] }).removed).toHaveLength(1);
    expect(((await (await call("GET", "/v1/targets/gcweb@prod/images", TOKENS.reader)).json()) as { images: unknown[] }).images).toHaveLength(2);
  });

  it("refuses a wrong scope and a wrong environment with 403", async () => {
    const readOnly = await call("POST", "/v1/deployments", TOKENS.reader, { spec: spec("web"), environment: "prod" });
    expect(readOnly.status).toBe(403);
    const wrongEnvironment = await call("POST", "/v1/deployments", TOKENS.deployer, { spec: spec("web"), environment: "prod" });
    expect(wrongEnvironment.status).toBe(403);
    expect(((await wrongEnvironment.json()) as { detail: string }).detail).toContain("prod");
    expect((await call("GET", "/v1/targets/web@prod", TOKENS.deployer)).status).toBe(403);
    expect((await call("POST", "/v1/targets/web@prod/lock/release", TOKENS.deployer)).status).toBe(403);
    const list = (await (await call("GET", "/v1/targets", TOKENS.deployer)).json()) as { targets: Array<{ target: string }> };
    expect(list.targets.every((row) => row.target.endsWith("@staging"))).toBe(true);
  });

  it("serves the OpenAPI 3.1 document and Prometheus metrics", async () => {
    const document = (await (await call("GET", "/v1/openapi.json", TOKENS.reader)).json()) as { openapi: string; paths: Record<string, unknown> };
    expect(document.openapi).toBe("3.1.0");
    expect(Object.keys(document.paths)).toEqual(expect.arrayContaining(["/v1/deployments", "/v1/deployments/{id}/events", "/v1/targets/{target}"]));
    const metrics = await (await call("GET", "/metrics", TOKENS.reader)).text();
    expect(metrics).toMatch(/kiln_rollouts_total\{kind="deploy",outcome="succeeded"\} \d+/);
  });
});
