// The gcp provider's lifecycle against the local Compute Engine, through the official client:
// request ids that make a retried insert harmless, operations that end DONE with an error, and
// throttling that the shared backoff rides out. State-only VMs, instantaneous operations.
import { randomBytes } from "node:crypto";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { KilnError, LABELS, silentLogger, type InstanceConfig, type LaunchRequest, type ProviderContext } from "@kilnjs/core";
import { startLocalComputeEngine, type LocalComputeEngine } from "@kilnjs/testkit";
import { GceClients, createGcpProvider } from "./index.js";
import { makeImageInFake } from "./images-in-fake.js";
import { operationNameOf, recordingAuthClient } from "./test-support.js";

const PROJECT = "kiln-lifecycle";
const ZONE = "us-central1-a";
const FAST_BACKOFF = { initialDelayMs: 5, maxDelayMs: 50, maxAttempts: 12 };
const CONFIG: InstanceConfig = { ports: [{ name: "http", port: 8080, protocol: "tcp" }], env: {}, labels: { team: "platform" }, stopGracePeriodMs: 1_000 };

function context(): ProviderContext {
  return { signal: new AbortController().signal, logger: silentLogger, emit() {} };
}

const isInsert = (method: string, path: string) => method === "POST" && /\/zones\/[^/]+\/instances$/.test(path);

describe("gcp provider lifecycle (local Compute Engine)", () => {
  let engine: LocalComputeEngine;
  let request: LaunchRequest;

  beforeEach(async () => {
    engine = await startLocalComputeEngine({ project: PROJECT, zones: [ZONE, "us-central1-b"], instantaneous: true });
    const run = randomBytes(4).toString("hex");
    const target = { service: `web-${run}`, environment: "prod" };
    const fingerprint = `sha256:${randomBytes(32).toString("hex")}`;
    const image = await makeImageInFake({ endpoint: engine.endpoint, project: PROJECT, zone: ZONE }, { target, fingerprint });
    request = {
      target,
      release: 3,
      rolloutId: `ro-${run}`,
      idempotencyKey: `20261207051100-${run}:b1`,
      image: { id: image, fingerprint, digest: image, names: [image] },
      config: CONFIG,
      count: 1,
    };
  });

  afterEach(async () => {
    await engine.close();
  });

  it("launches labelled instances with endpoints on their network IP, lists them in one aggregated call, and deletes them", async () => {
    const provider = createGcpProvider({ endpoint: engine.endpoint, project: PROJECT, zone: ZONE, backoff: FAST_BACKOFF });
    try {
      const launched = await provider.instances.launch({ ...request, count: 3 }, context());
      expect(launched).toHaveLength(3);
      for (const instance of launched) {
        expect(instance.id).toBe(`projects/${PROJECT}/zones/${ZONE}/instances/${instance.name}`);
        expect(instance.imageId).toBe(request.image.id);
        expect(instance.labels).toMatchObject({ team: "platform", [LABELS.launchKey]: request.idempotencyKey, [LABELS.release]: "3" });
        expect(instance.endpoints.http?.port).toBe(8080);
        expect(instance.endpoints.http?.host).toMatch(/^10\.\d+\.\d+\.\d+$/);
      }
      const before = engine.callCounts()["Instances.AggregatedList"] ?? 0;
      const listed = await provider.instances.list({ target: request.target }, context());
      expect(listed.map((instance) => instance.id)).toEqual(launched.map((instance) => instance.id));
      expect(engine.callCounts()["Instances.AggregatedList"], "one aggregated list per list call").toBe(before + 1);
      expect(engine.callCounts()["Instances.List"] ?? 0, "never a per-zone list").toBe(0);
      expect(engine.callCounts()["Instances.Get"] ?? 0, "never a get per instance").toBe(0);

      const probe = await provider.health!.probe(launched[0]!, undefined, 1_000, context());
      expect(probe).toEqual({ ok: true });

      await provider.instances.terminate(launched, { gracePeriodMs: 0 }, context());
      expect(await provider.instances.list({ target: request.target }, context())).toEqual([]);
      const gone = await provider.health!.probe(launched[0]!, undefined, 1_000, context());
      expect(gone.ok).toBe(false);
    } finally {
      await provider.close?.();
    }
  });

  it("an insert whose answer is lost is sent again with the same requestId: the original operation comes back and no second VM is made", async () => {
    let dropped = 0;
    const { authClient, calls } = recordingAuthClient((method, path) => isInsert(method, path) && dropped++ === 0);
    const provider = createGcpProvider({ endpoint: engine.endpoint, authClient, project: PROJECT, zone: ZONE, backoff: FAST_BACKOFF, callTimeoutMs: 300 });
    try {
      const launched = await provider.instances.launch(request, context());
      expect(launched).toHaveLength(1);
      const inserts = calls.filter((call) => isInsert(call.method, call.path));
      expect(inserts, "the insert was sent twice: once lost, once answered").toHaveLength(2);
      expect(operationNameOf(inserts[1]!)).toBeDefined();
      expect(operationNameOf(inserts[1]!), "the retry got the original operation").toBe(operationNameOf(inserts[0]!));
      expect((inserts[1]!.body as { clientOperationId?: string }).clientOperationId).toBe((inserts[0]!.body as { clientOperationId?: string }).clientOperationId);
      expect((await provider.instances.list({ target: request.target }, context())).map((instance) => instance.id)).toEqual(launched.map((instance) => instance.id));
    } finally {
      await provider.close?.();
    }
  });

  it("an insert whose operation ends DONE with QUOTA_EXCEEDED fails the launch with LAUNCH_FAILED and that code", async () => {
    engine.setFaults({ operationErrors: [{ code: "QUOTA_EXCEEDED", methods: ["Instances.Insert"] }] });
    const provider = createGcpProvider({ endpoint: engine.endpoint, project: PROJECT, zone: ZONE, backoff: FAST_BACKOFF });
    try {
      const failure = await provider.instances.launch({ ...request, count: 2 }, context()).catch((error: unknown) => error);
      expect(failure).toBeInstanceOf(KilnError);
      expect((failure as KilnError).code).toBe("LAUNCH_FAILED");
      expect((failure as KilnError).retryable).toBe(false);
      expect((failure as KilnError).details?.operationErrors).toEqual(["QUOTA_EXCEEDED"]);
      expect((failure as KilnError).message).toContain("QUOTA_EXCEEDED");
      expect(await provider.instances.list({ target: request.target }, context()), "a failed operation makes nothing").toEqual([]);
    } finally {
      await provider.close?.();
    }
  });

  it("with 20% of calls throttled (403 and 429), a launch of N still makes exactly N instances", async () => {
    const count = 12;
    engine.setFaults({ seed: 7, throttle: { rate: 0.2, statuses: [403, 429] } });
    const { authClient, calls } = recordingAuthClient();
    const provider = createGcpProvider({ endpoint: engine.endpoint, authClient, project: PROJECT, zone: ZONE, backoff: FAST_BACKOFF });
    try {
      const launched = await provider.instances.launch({ ...request, count }, context());
      expect(launched).toHaveLength(count);
      expect(calls.filter((call) => call.status === 403 || call.status === 429).length, "some calls were throttled").toBeGreaterThan(0);
      engine.setFaults({});
      const listed = await provider.instances.list({ target: request.target }, context());
      expect(listed).toHaveLength(count);
      expect(new Set(listed.map((instance) => instance.name)).size).toBe(count);
    } finally {
      await provider.close?.();
    }
  });

  it("a launch repeated with the same key starts its instances found stopped instead of making new ones", async () => {
    const provider = createGcpProvider({ endpoint: engine.endpoint, project: PROJECT, zone: ZONE, backoff: FAST_BACKOFF });
    const clients = new GceClients({ endpoint: engine.endpoint }, {});
    try {
      const [first] = await provider.instances.launch(request, context());
      const { instances, zoneOperations } = await clients.clients();
      const [stopping] = await instances.stop({ project: PROJECT, zone: ZONE, instance: first!.name });
      await zoneOperations.wait({ project: PROJECT, zone: ZONE, operation: stopping.latestResponse.name });
      expect((await provider.instances.list({ target: request.target }, context()))[0]?.state).toBe("stopped");

      const again = await provider.instances.launch(request, context());
      expect(again.map((instance) => instance.id)).toEqual([first!.id]);
      expect(again[0]?.state).not.toBe("stopped");
      expect(engine.callCounts()["Instances.Start"]).toBe(1);
      expect(engine.callCounts()["Instances.Insert"], "the image's source VM and the first launch only").toBe(2);
    } finally {
      await clients.close();
      await provider.close?.();
    }
  });

  it("an operation that outlives a wait is awaited by looping on zoneOperations.wait, never by polling the instance", async () => {
    await engine.close();
    engine = await startLocalComputeEngine({ project: PROJECT, zones: [ZONE], instantaneous: true, timing: { waitTimeoutMs: 40 } });
    request = { ...request, image: { ...request.image, id: await makeImageInFake({ endpoint: engine.endpoint, project: PROJECT, zone: ZONE }, { target: request.target, fingerprint: request.image.fingerprint }) } };
    engine.setFaults({ slowOperations: { extraMs: 300, methods: ["Instances.Insert"] } });
    const provider = createGcpProvider({ endpoint: engine.endpoint, project: PROJECT, zone: ZONE, backoff: FAST_BACKOFF });
    try {
      const before = engine.callCounts();
      const launched = await provider.instances.launch({ ...request, count: 2 }, context());
      expect(launched).toHaveLength(2);
      const after = engine.callCounts();
      const waits = (after["ZoneOperations.Wait"] ?? 0) - (before["ZoneOperations.Wait"] ?? 0);
      expect(after["Instances.Insert"]! - (before["Instances.Insert"] ?? 0)).toBe(2);
      expect(waits, "each operation outlived several waits").toBeGreaterThan(2);
      expect((after["ZoneOperations.Get"] ?? 0) + (after["Instances.Get"] ?? 0), "no polling with get").toBe(0);
    } finally {
      await provider.close?.();
    }
  });

  it("an abort while an operation is awaited ends the launch with ABORTED", async () => {
    engine.setFaults({ slowOperations: { extraMs: 60_000, methods: ["Instances.Insert"] } });
    const provider = createGcpProvider({ endpoint: engine.endpoint, project: PROJECT, zone: ZONE, backoff: FAST_BACKOFF });
    const controller = new AbortController();
    try {
      const launching = provider.instances.launch(request, { ...context(), signal: controller.signal }).catch((error: unknown) => error);
      // Abort once the insert has been accepted (its operation is then being awaited).
      const deadline = Date.now() + 10_000;
      while ((engine.callCounts()["ZoneOperations.Wait"] ?? 0) === 0 && Date.now() < deadline) await new Promise((resolve) => setImmediate(resolve));
      expect(engine.callCounts()["ZoneOperations.Wait"] ?? 0, "the operation is being awaited").toBeGreaterThan(0);
      controller.abort(new Error("stopped by the test"));
      const failure = await launching;
      expect((failure as KilnError).code).toBe("ABORTED");
    } finally {
      await provider.close?.();
    }
  });

  it("images: find by fingerprint, list by service, and remove refuses an image in use with IMAGE_IN_USE", async () => {
    const provider = createGcpProvider({ endpoint: engine.endpoint, project: PROJECT, zone: ZONE, backoff: FAST_BACKOFF });
    try {
      const found = await provider.images.find({ service: request.target.service, fingerprint: request.image.fingerprint }, context());
      expect(found?.id).toBe(request.image.id);
      expect((await provider.images.list(request.target.service, context())).map((ref) => ref.id)).toEqual([request.image.id]);
      const launched = await provider.instances.launch(request, context());
      const refused = await provider.images.remove(found!, context()).catch((error: unknown) => error);
      expect((refused as KilnError).code).toBe("IMAGE_IN_USE");
      await provider.instances.terminate(launched, { gracePeriodMs: 0 }, context());
      await provider.images.remove(found!, context());
      expect(await provider.images.find({ service: request.target.service, fingerprint: request.image.fingerprint }, context())).toBeUndefined();
      const build = await provider.images.build({ target: request.target, fingerprint: request.image.fingerprint }, context()).catch((error: unknown) => error);
      expect((build as KilnError).code).toBe("CAPABILITY_MISSING");
    } finally {
      await provider.close?.();
    }
  });
});
