// The client factory: the SDK loads only when a call needs it; an endpoint override reaches a
// plain-HTTP server with a fixed token; the pinned SDK retries nothing itself, so Kiln's backoff
// does, repeating the same requestId.
import { createServer, type IncomingMessage } from "node:http";
import type { AddressInfo } from "node:net";
import { fileURLToPath } from "node:url";
import { requireBuildOutput, runTracingModules } from "@kilnjs/testkit";
import { describe, expect, it } from "vitest";
import { GceClients, LOCAL_ACCESS_TOKEN } from "./client.js";
import { requestIdFor } from "./request-id.js";
import { NO_ANSWER, cannedClients, errorBody } from "./test-support.js";

const SDK_PACKAGES = ["@google-cloud/compute", "google-gax", "google-auth-library", "gaxios", "protobufjs"];
const dist = (file: string) => fileURLToPath(new URL(`../dist/${file}`, import.meta.url));

describe("loading", () => {
  it.skipIf(!requireBuildOutput(dist("index.js")))("importing the package and making the clients object loads no SDK; the first call that needs one does", async () => {
    const script = `
      const { GceClients, gcpProviderSpec } = await import(${JSON.stringify(dist("index.js"))});
      const clients = new GceClients({ endpoint: "http://127.0.0.1:9" });
      if (!gcpProviderSpec.sections.instances) throw new Error("no spec");
      if (process.argv.includes("--load")) await clients.clients();
    `;
    const idle = await runTracingModules(["--input-type=module", "-e", script]);
    expect(idle.code, idle.stderr).toBe(0);
    for (const name of SDK_PACKAGES) expect(idle.packages).not.toContain(name);
    const loaded = await runTracingModules(["--input-type=module", "-e", script, "--", "--load"]);
    expect(loaded.code, loaded.stderr).toBe(0);
    for (const name of ["@google-cloud/compute", "google-gax", "google-auth-library"]) expect(loaded.packages).toContain(name);
  });

  it.skipIf(!requireBuildOutput(dist("spec.js")))("the /spec entry loads core's spec half, zod and the provider's spec only", async () => {
    const run = await runTracingModules(["--input-type=module", "-e", `const { providerSpec } = await import(${JSON.stringify(dist("spec.js"))}); if (providerSpec.imageFormat !== "machine") process.exit(2);`]);
    expect(run.code, run.stderr).toBe(0);
    for (const name of [...SDK_PACKAGES, "uuid", "cockatiel"]) expect(run.packages).not.toContain(name);
    // This repository's entry files the run loaded (the chunks they share with other entries left out).
    const entries = run.files.filter((file) => /[\\/]packages[\\/]/.test(file) && !/node_modules|[\\/]chunk-[^\\/]+\.js$/.test(file));
    expect(entries.map((file) => file.replace(/.*[\\/]packages[\\/]/, ""))).toEqual([
      "core/dist/spec.js",
      "provider-gcp/dist/spec.js",
    ]);
  });

  it("keeps the clients object cheap until asked, and closes what it made", async () => {
    const clients = new GceClients({ endpoint: "http://127.0.0.1:9" }, {});
    expect(clients.loaded).toBe(false);
    const set = await clients.clients();
    expect(clients.loaded).toBe(true);
    expect(Object.keys(set).sort()).toEqual(["backendServices", "disks", "globalOperations", "images", "instanceGroups", "instances", "regionBackendServices", "regionOperations", "zoneOperations"]);
    expect(await clients.clients()).toBe(set);
    await clients.close();
    expect(clients.loaded).toBe(false);
    await expect(clients.projectId()).rejects.toMatchObject({ code: "PROVIDER_UNAVAILABLE", message: expect.stringContaining("instances.gcp.project") as unknown });
  });
});

describe("an endpoint override", () => {
  it("reaches a plain-HTTP server on 127.0.0.1 with the fixed token, no Google credentials needed", async () => {
    const seen: Array<{ method: string; url: string; authorization: string | undefined }> = [];
    const server = createServer((request: IncomingMessage, response) => {
      seen.push({ method: request.method ?? "", url: request.url ?? "", authorization: request.headers.authorization });
      response.writeHead(200, { "content-type": "application/json" });
      response.end(JSON.stringify({ kind: "compute#operation", name: "operation-1", status: "DONE" }));
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    try {
      const port = (server.address() as AddressInfo).port;
      // The environment variable gcloud reads, with the path gcloud writes.
      const clients = new GceClients({}, { CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE: `http://127.0.0.1:${port}/compute/v1/`, GOOGLE_APPLICATION_CREDENTIALS: "/nonexistent.json" });
      const { zoneOperations } = await clients.clients();
      const [operation] = await zoneOperations.wait({ project: "p", zone: "europe-west1-b", operation: "operation-1" });
      await clients.close();
      expect(operation.status).toBe("DONE");
      expect(seen).toEqual([{ method: "POST", url: "/compute/v1/projects/p/zones/europe-west1-b/operations/operation-1/wait?", authorization: `Bearer ${LOCAL_ACCESS_TOKEN}` }]);
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });
});

describe("retries", () => {
  it("the pinned SDK does not retry a 503 even on a GET: Kiln's backoff must", async () => {
    const { clients, seen } = cannedClients([{ status: 503, body: errorBody(503, "backendError", "Backend Error") }, { status: 200, body: { name: "x" } }]);
    const { instances } = await clients.clients();
    await expect(instances.get({ project: "p", zone: "europe-west1-b", instance: "x" })).rejects.toMatchObject({ status: 503 });
    await clients.close();
    expect(seen).toHaveLength(1);
  });

  it("ends a request that gets no answer with TIMEOUT, and the backoff tries it again with the same requestId", async () => {
    const { clients, seen } = cannedClients([NO_ANSWER, { status: 200, body: { kind: "compute#operation", name: "operation-1", status: "RUNNING" } }], {
      callTimeoutMs: 100,
      backoff: { initialDelayMs: 1, maxDelayMs: 5 },
    });
    const { instances } = await clients.clients();
    const requestId = requestIdFor({ step: "s", call: "instances.delete", resource: "web-prod-r1-0" });
    const del = () => instances.delete({ project: "p", zone: "europe-west1-b", instance: "web-prod-r1-0", requestId });
    await expect(del()).rejects.toMatchObject({ code: "TIMEOUT", retryable: true, message: expect.stringContaining("within 100 ms") as unknown });
    const [answer] = await clients.backoff.call(del);
    expect(answer.latestResponse).toMatchObject({ name: "operation-1" });
    await clients.close();
    // The ended request, then the retried one, both with the same id.
    expect(seen.map((request) => request.url.searchParams.get("requestId"))).toEqual([requestId, requestId]);
    expect(() => new GceClients({ callTimeoutMs: 0 }, {})).toThrow(expect.objectContaining({ code: "INVALID_ARGUMENT" }));
  });

  it("retries a throttled insert through the shared backoff with the same requestId, so it cannot run twice", async () => {
    const operation = { kind: "compute#operation", name: "operation-1", status: "RUNNING", clientOperationId: "x" };
    const { clients, seen } = cannedClients(
      [
        { status: 403, body: errorBody(403, "rateLimitExceeded", "Rate Limit Exceeded", "usageLimits"), headers: { "retry-after": "0" } },
        { status: 429, body: { error: { code: 429, message: "Too many requests", status: "RESOURCE_EXHAUSTED" } } },
        { status: 200, body: operation },
      ],
      { backoff: { initialDelayMs: 1, maxDelayMs: 5 } },
    );
    const { instances } = await clients.clients();
    const requestId = requestIdFor({ step: "20261207041400-1a2b3c4d:b1", call: "instances.insert", resource: "web-prod-r1-0" });
    const [answer] = await clients.backoff.call(() => instances.insert({ project: "p", zone: "europe-west1-b", requestId, instanceResource: { name: "web-prod-r1-0" } }));
    await clients.close();
    expect(answer.latestResponse).toMatchObject({ name: "operation-1" });
    expect(seen.map((request) => [request.method, request.url.pathname, request.url.searchParams.get("requestId")])).toEqual(
      Array.from({ length: 3 }, () => ["POST", "/compute/v1/projects/p/zones/europe-west1-b/instances", requestId]),
    );
    expect(seen[0]!.authorization).toBe("Bearer test-token");
  });
});
