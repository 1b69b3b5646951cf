import { afterEach, describe, expect, test } from "vitest";
import { type EngineWithClients, PROJECT, ZONE, apiErrorOf, insertInstance, rejectionOf, startWithClients } from "./sdk-clients.js";

let clients: EngineWithClients | undefined;
afterEach(async () => {
  await clients?.close();
  clients = undefined;
});

async function post(path: string, body: string): Promise<{ status: number; json: { error: { code: number; message: string; status?: string; errors: { reason: string }[]; details?: { fieldViolations?: { field: string }[] }[] } } }> {
  const response = await fetch(`${clients!.engine.endpoint}${path}`, { method: "POST", headers: { "Content-Type": "application/json" }, body });
  return { status: response.status, json: (await response.json()) as never };
}

const instancesPath = `/compute/v1/projects/${PROJECT}/zones/${ZONE}/instances`;
const bootDisk = { boot: true, initializeParams: { sourceImage: "projects/debian-cloud/global/images/family/debian-12" } };

describe("held to the published API", () => {
  test("an unknown field is refused as Google's front end refuses it, naming the field", async () => {
    clients = await startWithClients({ instantaneous: true });
    // The SDK drops fields its messages do not define, so only raw HTTP can send one.
    const { status, json } = await post(instancesPath, JSON.stringify({ name: "vm-1", machineType: "e2-small", disks: [{ ...bootDisk, bootable: true }] }));
    expect(status).toBe(400);
    expect(json.error.status).toBe("INVALID_ARGUMENT");
    expect(json.error.errors[0]!.reason).toBe("invalid");
    expect(json.error.message).toContain('Unknown name "bootable"');
    expect(json.error.details?.[0]?.fieldViolations?.[0]?.field).toBe("resource.disks[0].bootable");
    const [listed] = await clients.instances.list({ project: PROJECT, zone: ZONE });
    expect(listed).toEqual([]);
  });

  test("a query parameter the request message lacks is refused", async () => {
    clients = await startWithClients({ instantaneous: true });
    const { status, json } = await post(`${instancesPath}?requestID=1`, JSON.stringify({ name: "vm-1" }));
    expect(status).toBe(400);
    expect(json.error.message).toContain('Unknown name "requestID": Cannot bind query parameter');
  });

  test("a value outside a field's enum is refused through the SDK, naming the field and the allowed values", async () => {
    clients = await startWithClients({ instantaneous: true });
    const { body } = await rejectionOf(clients.instances.insert({ project: PROJECT, zone: ZONE, instanceResource: { name: "vm-1", machineType: "e2-small", disks: [{ ...bootDisk, mode: "READ_SOMETIMES" }] } }));
    expect(body).toMatchObject({ code: 400, errors: [{ domain: "global", reason: "invalid" }] });
    expect(body.message).toBe("Invalid value for field 'resource.disks[0].mode': 'READ_SOMETIMES'. Value must be one of [ READ_ONLY, READ_WRITE ]");
    const { status, json } = await post(instancesPath, JSON.stringify({ name: "vm-1", machineType: "e2-small", canIpForward: "yes", disks: [bootDisk] }));
    expect(status).toBe(400);
    expect(json.error.message).toContain("resource.canIpForward");
  });

  test("error bodies are the real shape and the pinned SDK hands them over", async () => {
    clients = await startWithClients({ instantaneous: true });
    const { error, body } = await rejectionOf(clients.instances.get({ project: PROJECT, zone: ZONE, instance: "missing" }));
    expect(body).toEqual({
      code: 404,
      message: `The resource 'projects/${PROJECT}/zones/${ZONE}/instances/missing' was not found`,
      errors: [{ domain: "global", reason: "notFound", message: `The resource 'projects/${PROJECT}/zones/${ZONE}/instances/missing' was not found` }],
    });
    // What @google-cloud/compute 6.15.0 (google-gax 5.0.8, google-auth-library 10.5.0) offers: the
    // GaxiosError of authClient.fetch, with the HTTP status as `code` and the body as its message;
    // no raw-payload symbol (that came with later gax versions).
    expect((error as { code?: unknown }).code).toBe(404);
    expect((error as Record<symbol, unknown>)[Symbol.for("google-gax.rawHttpResponsePayload")]).toBeUndefined();
    expect(apiErrorOf(error).errors?.[0]?.reason).toBe("notFound");
  });

  test("throttling at a rate, drawn from a seeded generator: 403 rateLimitExceeded and 429 RESOURCE_EXHAUSTED, the same on every run", async () => {
    const outcomes = async () => {
      clients = await startWithClients({ instantaneous: true, faults: { seed: 7, throttle: { rate: 0.3, statuses: [403, 429], methods: ["Images.Get"] } } });
      const seen: string[] = [];
      for (let call = 0; call < 30; call++) {
        try {
          await clients.images.get({ project: "debian-cloud", image: "debian-12-bookworm-v20261201" });
          seen.push("ok");
        } catch (error) {
          const body = apiErrorOf(error);
          seen.push(`${body.code} ${body.errors?.[0]?.reason} ${body.status ?? ""}`.trim());
        }
      }
      await clients.close();
      clients = undefined;
      return seen;
    };
    const first = await outcomes();
    const second = await outcomes();
    expect(second).toEqual(first);
    const throttled = first.filter((outcome) => outcome !== "ok");
    expect(throttled.length).toBeGreaterThan(3);
    expect(throttled.length).toBeLessThan(20);
    expect(new Set(throttled)).toEqual(new Set(["403 rateLimitExceeded", "429 rateLimitExceeded RESOURCE_EXHAUSTED"]));
  });

  test("a 403 throttle names the usageLimits domain; a 429 carries a google.rpc.ErrorInfo; a throttled insert makes nothing", async () => {
    clients = await startWithClients({ instantaneous: true, faults: { throttle: { rate: 1, statuses: [403] } } });
    const { body: forbidden } = await rejectionOf(insertInstance(clients, "vm-1"));
    expect(forbidden).toEqual({ code: 403, message: "Rate Limit Exceeded", errors: [{ domain: "usageLimits", reason: "rateLimitExceeded", message: "Rate Limit Exceeded" }] });
    clients.engine.setFaults({ throttle: { rate: 1, statuses: [429] } });
    const { body: exhausted } = await rejectionOf(insertInstance(clients, "vm-1"));
    expect(exhausted.status).toBe("RESOURCE_EXHAUSTED");
    expect(exhausted.details?.[0]).toMatchObject({ "@type": "type.googleapis.com/google.rpc.ErrorInfo", reason: "RATE_LIMIT_EXCEEDED" });
    clients.engine.setFaults({});
    const [listed] = await clients.instances.list({ project: PROJECT, zone: ZONE });
    expect(listed).toEqual([]);
  });

  test("server errors are injected as 503 backendError, and this SDK version does not retry them", async () => {
    clients = await startWithClients({ instantaneous: true, faults: { serverError: { rate: 1, status: 503, methods: ["Images.Get"] } } });
    const { body } = await rejectionOf(clients.images.get({ project: "debian-cloud", image: "debian-12-bookworm-v20261201" }));
    expect(body).toMatchObject({ code: 503, errors: [{ reason: "backendError" }] });
    // gax 5.0.8 retries on gRPC code UNAVAILABLE (14) but the GaxiosError carries the HTTP 503 as
    // its code, so nothing is retried: Kiln must back off itself.
    expect(clients.engine.callCounts()["Images.Get"]).toBe(1);
  });

  test("faults are set and read through the control API, and bad ones are refused", async () => {
    clients = await startWithClients({ instantaneous: true });
    const put = (body: unknown) => fetch(`${clients!.engine.endpoint}/kiln/v1/faults`, { method: "PUT", body: JSON.stringify(body) });
    const accepted = await put({ seed: 3, operationErrors: [{ code: "QUOTA_EXCEEDED", count: 1 }] });
    expect(accepted.status).toBe(200);
    expect(clients.engine.faults.operationErrors?.[0]?.code).toBe("QUOTA_EXCEEDED");
    const done = await insertInstance(clients, "vm-1");
    expect(done.error?.errors?.[0]?.code).toBe("QUOTA_EXCEEDED");
    const refused = await put({ throttle: { rate: 2 } });
    expect(refused.status).toBe(400);
    expect(((await refused.json()) as { error: { message: string } }).error.message).toContain("throttle.rate must be between 0 and 1");
    const calls = (await (await fetch(`${clients.engine.endpoint}/kiln/v1/calls`)).json()) as Record<string, number>;
    expect(calls["Instances.Insert"]).toBe(1);
  });
});
