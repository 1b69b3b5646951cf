// The classifier on errors the real SDK throws: @google-cloud/compute 6.15.0 with google-gax 5.0.8
// and google-auth-library's OAuth2Client (gaxios errors), answering from canned bodies instead of
// the network; the same bodies decoded by google-gax itself (GoogleError, as google-gax 6 throws
// them); and google-gax 6's raw-payload symbol.
import { describe, expect, it } from "vitest";
import { gceError, operationError, readGceError, type GceErrorKind } from "./errors.js";
import { cannedClients, errorBody, plainFetchClients, type CannedAnswer } from "./test-support.js";

/**
 * What the real SDK throws for one canned answer to `instances.delete` (a call the SDK never
 * retries; google-gax retries a GET's 503 itself when it decodes the error, see below).
 */
async function sdkError(answer: CannedAnswer, plain = false): Promise<unknown> {
  const { clients } = plain ? plainFetchClients([answer]) : cannedClients([answer]);
  const { instances } = await clients.clients();
  try {
    await instances.delete({ project: "p", zone: "europe-west1-b", instance: "web-prod-r1-k-0", requestId: "8d6a1f5c-3c1b-5f0e-9a57-1b2c3d4e5f60" });
  } catch (error) {
    return error;
  } finally {
    await clients.close();
  }
  throw new Error("the call succeeded");
}

/** The answers Compute Engine gives, each with the kind Kiln must read from it. */
const CASES: Array<[string, CannedAnswer, GceErrorKind, string | undefined]> = [
  ["403 rateLimitExceeded", { status: 403, body: errorBody(403, "rateLimitExceeded", "Rate Limit Exceeded", "usageLimits"), headers: { "retry-after": "7" } }, "rate-limited", "rateLimitExceeded"],
  [
    "429 RESOURCE_EXHAUSTED with an ErrorInfo",
    {
      status: 429,
      body: { error: { code: 429, message: "Quota exceeded for quota metric 'Queries'", status: "RESOURCE_EXHAUSTED", details: [{ "@type": "type.googleapis.com/google.rpc.ErrorInfo", reason: "RATE_LIMIT_EXCEEDED", domain: "googleapis.com" }] } },
    },
    "rate-limited",
    "RATE_LIMIT_EXCEEDED",
  ],
  ["403 quotaExceeded", { status: 403, body: errorBody(403, "quotaExceeded", "Quota 'CPUS' exceeded. Limit: 24.0 in region europe-west1.", "usageLimits") }, "quota-exceeded", "quotaExceeded"],
  ["404 notFound", { status: 404, body: errorBody(404, "notFound", "The resource 'projects/p/zones/europe-west1-b/instances/x' was not found") }, "not-found", "notFound"],
  ["409 alreadyExists", { status: 409, body: errorBody(409, "alreadyExists", "The resource 'projects/p/global/images/web-1' already exists") }, "already-exists", "alreadyExists"],
  ["400 resourceInUseByAnotherResource", { status: 400, body: errorBody(400, "resourceInUseByAnotherResource", "The disk resource is already being used") }, "in-use", "resourceInUseByAnotherResource"],
  ["412 conditionNotMet", { status: 412, body: errorBody(412, "conditionNotMet", "Supplied fingerprint does not match current metadata fingerprint.") }, "precondition-failed", "conditionNotMet"],
  ["403 forbidden", { status: 403, body: errorBody(403, "forbidden", "Required 'compute.instances.get' permission") }, "permission-denied", "forbidden"],
  ["503 backendError", { status: 503, body: errorBody(503, "backendError", "Backend Error") }, "server-error", "backendError"],
];

describe("readGceError on the pinned SDK's errors (gaxios, body in the message)", () => {
  it.each(CASES)("reads %s", async (_name, answer, kind, reason) => {
    const error = await sdkError(answer);
    // What the pinned SDK really throws: a gaxios error carrying the HTTP status.
    expect((error as object).constructor.name).toBe("GaxiosError");
    expect(error).toMatchObject({ status: answer.status });
    expect(readGceError(error)).toMatchObject({ kind, reason, httpStatus: answer.status });
  });

  it("reads Retry-After in seconds from the answer's headers", async () => {
    const error = await sdkError(CASES[0]![1]);
    expect(readGceError(error)?.retryAfterMs).toBe(7_000);
  });
});

describe("readGceError on google-gax's own decoding (GoogleError, as google-gax 6 throws)", () => {
  it.each(CASES)("reads %s", async (_name, answer, kind) => {
    const error = await sdkError(answer, true);
    expect((error as object).constructor.name).toBe("GoogleError");
    // google-gax drops the legacy errors[].reason; the gRPC code alone cannot tell rateLimitExceeded
    // from quotaExceeded or forbidden (all 403: PERMISSION_DENIED), nor a 400's reason.
    const ambiguous = answer.status === 403 || answer.status === 400;
    if (!ambiguous) expect(readGceError(error)?.kind).toBe(kind);
    else expect(readGceError(error)?.kind).toBe(answer.status === 403 ? "permission-denied" : "invalid");
  });

  it("counts google-gax's UNAVAILABLE and DEADLINE_EXCEEDED (a client time-out) as server errors, retryable", () => {
    for (const code of [14, 4]) expect(readGceError(Object.assign(new Error("no answer"), { code }))).toMatchObject({ kind: "server-error" });
    // Not an API answer at all: left to the connection and abort checks.
    expect(readGceError(Object.assign(new Error("connect ECONNREFUSED"), { code: "ECONNREFUSED" }))).toBeUndefined();
  });

  it("reads the legacy reason from google-gax 6's raw payload when it is there", async () => {
    const error = await sdkError(CASES[0]![1], true);
    const raw = JSON.stringify(CASES[0]![1].body);
    Object.assign(error as object, { [Symbol.for("google-gax.rawHttpResponsePayload")]: raw });
    expect(readGceError(error)).toMatchObject({ kind: "rate-limited", reason: "rateLimitExceeded", httpStatus: 403 });
  });
});

describe("gceError", () => {
  it("makes throttling THROTTLED and retryable, credentials PROVIDER_UNAVAILABLE, the rest the caller's code", async () => {
    const throttled = gceError(await sdkError(CASES[0]![1]), "LAUNCH_FAILED", "Inserting instance x");
    expect(throttled).toMatchObject({ code: "THROTTLED", retryable: true, details: { gceKind: "rate-limited", gceReason: "rateLimitExceeded", httpStatus: 403 } });
    expect(throttled.message).toMatch(/^Inserting instance x: Compute Engine kept throttling the calls \(rateLimitExceeded: Rate Limit Exceeded\)/);
    expect((throttled.cause as object).constructor.name).toBe("GaxiosError");
    const quota = gceError(await sdkError(CASES[2]![1]), "LAUNCH_FAILED", "Inserting instance x");
    expect(quota).toMatchObject({ code: "LAUNCH_FAILED", retryable: false, details: { gceKind: "quota-exceeded" } });
    expect(quota.message).toContain("ask for a higher quota");
    const forbidden = gceError(await sdkError(CASES[7]![1]), "LAUNCH_FAILED", "Inserting instance x");
    expect(forbidden).toMatchObject({ code: "PROVIDER_UNAVAILABLE", details: { gceKind: "permission-denied" } });
    expect(forbidden.message).toContain("Application Default Credentials");
    const missing = gceError(await sdkError(CASES[3]![1]), "TERMINATE_FAILED", "Deleting instance x");
    expect(missing).toMatchObject({ code: "TERMINATE_FAILED", retryable: false, details: { gceKind: "not-found", httpStatus: 404 } });
    expect(gceError(await sdkError(CASES[8]![1]), "LAUNCH_FAILED", "x")).toMatchObject({ code: "LAUNCH_FAILED", retryable: true, details: { gceKind: "server-error" } });
  });

  it("says PROVIDER_UNAVAILABLE when the endpoint cannot be reached, and ABORTED when cancelled", async () => {
    const { GceClients } = await import("./client.js");
    const { OAuth2Client } = await import("google-auth-library");
    const authClient = new OAuth2Client();
    authClient.setCredentials({ access_token: "t" });
    // Port 9 (discard) is closed on a test machine: the connection is refused.
    const clients = new GceClients({ endpoint: "http://127.0.0.1:9", authClient }, {});
    const { instances } = await clients.clients();
    const refused = await instances.get({ project: "p", zone: "europe-west1-b", instance: "x" }).then(
      () => undefined,
      (error: unknown) => error,
    );
    await clients.close();
    const mapped = gceError(refused, "LAUNCH_FAILED", "Reading instance x", clients.endpoint?.url);
    expect(mapped).toMatchObject({ code: "PROVIDER_UNAVAILABLE", retryable: true });
    expect(mapped.message).toContain("http://127.0.0.1:9");
    const abort = Object.assign(new Error("The operation was aborted"), { name: "AbortError" });
    expect(gceError(abort, "LAUNCH_FAILED", "x").code).toBe("ABORTED");
  });
});

describe("operationError", () => {
  it("turns a DONE operation with errors into a KilnError carrying the codes, in the message and a field", async () => {
    const done = {
      kind: "compute#operation",
      name: "operation-1",
      operationType: "insert",
      status: "DONE",
      httpErrorStatusCode: 403,
      error: {
        errors: [
          { code: "QUOTA_EXCEEDED", message: "Quota 'CPUS' exceeded. Limit: 24.0 in region europe-west1." },
          { code: "ZONE_RESOURCE_POOL_EXHAUSTED", message: "The zone does not have enough resources." },
        ],
      },
    };
    // Through the SDK's own decoding of an operations.wait answer.
    const { clients } = cannedClients([{ status: 200, body: done }]);
    const { zoneOperations } = await clients.clients();
    const [operation] = await zoneOperations.wait({ project: "p", zone: "europe-west1-b", operation: "operation-1" });
    await clients.close();
    const error = operationError(operation, "LAUNCH_FAILED", "Inserting instance x");
    expect(error).toMatchObject({ code: "LAUNCH_FAILED", retryable: false, details: { operationErrors: ["QUOTA_EXCEEDED", "ZONE_RESOURCE_POOL_EXHAUSTED"], operation: "operation-1", httpStatus: 403 } });
    expect(error?.message).toContain("QUOTA_EXCEEDED: Quota 'CPUS' exceeded");
    expect(error?.message).toContain("ZONE_RESOURCE_POOL_EXHAUSTED: The zone does not have enough resources.");
    expect(error?.message).toContain("ask for a higher quota");
  });

  it("passes a clean operation, retries capacity and rate errors", () => {
    expect(operationError({ status: "DONE", name: "op" }, "LAUNCH_FAILED", "x")).toBeUndefined();
    expect(operationError({ status: "DONE", error: { errors: [] } }, "LAUNCH_FAILED", "x")).toBeUndefined();
    expect(operationError({ status: "DONE", error: { errors: [{ code: "ZONE_RESOURCE_POOL_EXHAUSTED", message: "m" }] } }, "LAUNCH_FAILED", "x")).toMatchObject({ code: "LAUNCH_FAILED", retryable: true });
    expect(operationError({ status: "DONE", error: { errors: [{ code: "RESOURCE_OPERATION_RATE_EXCEEDED", message: "m" }] } }, "LAUNCH_FAILED", "x")).toMatchObject({ code: "THROTTLED", retryable: true });
  });
});
