import type { protos } from "@google-cloud/compute";
import { afterEach, describe, expect, test } from "vitest";
import { type EngineWithClients, OTHER_ZONE, PROJECT, ZONE, insertInstance, rejectionOf, startWithClients, waitZoneOperation } from "./sdk-clients.js";

let clients: EngineWithClients | undefined;
afterEach(async () => {
  await clients?.close();
  clients = undefined;
});

describe("instances through the official client", () => {
  test("the same requestId returns the original operation and never makes a second VM", async () => {
    clients = await startWithClients({ instantaneous: true });
    const requestId = "0f8fad5b-d9cb-469f-a165-70867728950e";
    const first = await insertInstance(clients, "web-1", { requestId });
    // A retry after a client time-out: same requestId, same body.
    const [retry] = await clients.instances.insert({
      project: PROJECT,
      zone: ZONE,
      requestId,
      instanceResource: { name: "web-1", machineType: "e2-small", disks: [{ boot: true, initializeParams: { sourceImage: "projects/debian-cloud/global/images/family/debian-12" } }] },
    });
    expect(retry.latestResponse.name).toBe(first.name);
    expect(first.clientOperationId).toBe(requestId);
    const [listed] = await clients.instances.list({ project: PROJECT, zone: ZONE });
    expect(listed.map((instance) => instance.name)).toEqual(["web-1"]);
    expect(clients.engine.callCounts()["Instances.Insert"]).toBe(2);
    // Without the requestId the same name is refused with 409 alreadyExists.
    const { body } = await rejectionOf(clients.instances.insert({ project: PROJECT, zone: ZONE, instanceResource: { name: "web-1", machineType: "e2-small", disks: [{ boot: true, initializeParams: { sourceImage: "projects/debian-cloud/global/images/family/debian-12" } }] } }));
    expect(body).toMatchObject({ code: 409, errors: [{ domain: "global", reason: "alreadyExists" }] });
    // A delete retried after it completed returns its operation too, not 404.
    const deleteId = "7c9e6679-7425-40de-944b-e07fc1f90ae7";
    const [removal] = await clients.instances.delete({ project: PROJECT, zone: ZONE, instance: "web-1", requestId: deleteId });
    await waitZoneOperation(clients, ZONE, removal.latestResponse.name);
    const [again] = await clients.instances.delete({ project: PROJECT, zone: ZONE, instance: "web-1", requestId: deleteId });
    expect(again.latestResponse.name).toBe(removal.latestResponse.name);
  });

  test("operations go PENDING → RUNNING → DONE over time, and wait returns at DONE", async () => {
    clients = await startWithClients({ timing: { operationPendingMs: 150, operationRunningMs: 150, instanceStepMs: 0 } });
    const [operation] = await clients.instances.insert({
      project: PROJECT,
      zone: ZONE,
      instanceResource: { name: "slow-1", machineType: "e2-small", disks: [{ boot: true, initializeParams: { sourceImage: "projects/debian-cloud/global/images/family/debian-12" } }] },
    });
    let latest = operation.latestResponse as protos.google.cloud.compute.v1.IOperation;
    expect(latest.status).toBe("PENDING");
    const seen = new Set<string>();
    const deadline = Date.now() + 5_000;
    while (latest.status !== "DONE" && Date.now() < deadline) {
      [latest] = await clients.zoneOperations.get({ project: PROJECT, zone: ZONE, operation: latest.name! });
      seen.add(String(latest.status));
    }
    expect(seen).toContain("RUNNING");
    expect(latest.status).toBe("DONE");
    expect(latest.progress).toBe(100);
    expect(latest.endTime).toBeTruthy();
    const [instance] = await clients.instances.get({ project: PROJECT, zone: ZONE, instance: "slow-1" });
    expect(instance.selfLink).toBe(`https://www.googleapis.com/compute/v1/projects/${PROJECT}/zones/${ZONE}/instances/slow-1`);
    expect(instance.id).toMatch(/^\d+$/);
    expect(instance.kind).toBe("compute#instance");
  });

  test("wait answers with a RUNNING operation after its bound when the operation outlives it", async () => {
    clients = await startWithClients({ instantaneous: true, timing: { waitTimeoutMs: 100 }, faults: { slowOperations: { extraMs: 60_000, methods: ["Instances.Insert"] } } });
    const [operation] = await clients.instances.insert({
      project: PROJECT,
      zone: ZONE,
      instanceResource: { name: "stuck-1", machineType: "e2-small", disks: [{ boot: true, initializeParams: { sourceImage: "projects/debian-cloud/global/images/family/debian-12" } }] },
    });
    const [waited] = await clients.zoneOperations.wait({ project: PROJECT, zone: ZONE, operation: operation.latestResponse.name });
    expect(waited.status).toBe("RUNNING");
  });

  test("an operation that ends DONE with an error surfaces its UPPER_SNAKE code and makes nothing", async () => {
    clients = await startWithClients({ instantaneous: true, faults: { operationErrors: [{ code: "ZONE_RESOURCE_POOL_EXHAUSTED", count: 1 }, { code: "QUOTA_EXCEEDED", methods: ["Instances.BulkInsert"] }] } });
    const done = await insertInstance(clients, "web-1");
    expect(done.status).toBe("DONE");
    expect(done.error?.errors?.map((error) => error.code)).toEqual(["ZONE_RESOURCE_POOL_EXHAUSTED"]);
    expect(done.httpErrorStatusCode).toBe(503);
    const { body } = await rejectionOf(clients.instances.get({ project: PROJECT, zone: ZONE, instance: "web-1" }));
    expect(body.errors?.[0]?.reason).toBe("notFound");
    // The fault was spent on the first operation: the next insert succeeds.
    expect((await insertInstance(clients, "web-1")).error).toBeFalsy();
    // bulkInsert: all or nothing.
    const [bulk] = await clients.instances.bulkInsert({
      project: PROJECT,
      zone: ZONE,
      bulkInsertInstanceResourceResource: { count: 3, namePattern: "batch-###", instanceProperties: { machineType: "e2-small", disks: [{ boot: true, initializeParams: { sourceImage: "projects/debian-cloud/global/images/family/debian-12" } }] } },
    });
    const bulkDone = await waitZoneOperation(clients, ZONE, bulk.latestResponse.name);
    expect(bulkDone.error?.errors?.[0]?.code).toBe("QUOTA_EXCEEDED");
    const [listed] = await clients.instances.list({ project: PROJECT, zone: ZONE });
    expect(listed.map((instance) => instance.name)).toEqual(["web-1"]);
  });

  test("two inserts of one name accepted before either ran: the second ends DONE with RESOURCE_ALREADY_EXISTS", async () => {
    // Both requests must arrive while the first is PENDING: 1.5 s leaves room on a loaded machine.
    clients = await startWithClients({ timing: { operationPendingMs: 1_500, operationRunningMs: 0, instanceStepMs: 0 } });
    const resource = { name: "twin", machineType: "e2-small", disks: [{ boot: true, initializeParams: { sourceImage: "projects/debian-cloud/global/images/family/debian-12" } }] };
    const [first] = await clients.instances.insert({ project: PROJECT, zone: ZONE, instanceResource: resource });
    const [second] = await clients.instances.insert({ project: PROJECT, zone: ZONE, instanceResource: resource });
    const firstDone = await waitZoneOperation(clients, ZONE, first.latestResponse.name);
    const secondDone = await waitZoneOperation(clients, ZONE, second.latestResponse.name);
    expect(firstDone.error).toBeFalsy();
    expect(secondDone.error?.errors?.[0]?.code).toBe("RESOURCE_ALREADY_EXISTS");
    expect(secondDone.httpErrorStatusCode).toBe(409);
    const [listed] = await clients.instances.list({ project: PROJECT, zone: ZONE });
    expect(listed.map((instance) => instance.id)).toEqual([firstDone.targetId]);
  });

  test("bulkInsert makes count instances from a name pattern in one operation", async () => {
    clients = await startWithClients({ instantaneous: true });
    const [bulk] = await clients.instances.bulkInsert({
      project: PROJECT,
      zone: ZONE,
      bulkInsertInstanceResourceResource: { count: 3, namePattern: "batch-##", instanceProperties: { machineType: "e2-small", labels: { app: "batch" }, disks: [{ boot: true, initializeParams: { sourceImage: "projects/debian-cloud/global/images/family/debian-12" } }] } },
    });
    const done = await waitZoneOperation(clients, ZONE, bulk.latestResponse.name);
    expect(done.instancesBulkInsertOperationMetadata?.perLocationStatus?.[`zones/${ZONE}`]?.createdVmCount).toBe(3);
    const [listed] = await clients.instances.list({ project: PROJECT, zone: ZONE, filter: "labels.app = batch" });
    expect(listed.map((instance) => instance.name)).toEqual(["batch-01", "batch-02", "batch-03"]);
  });

  test("aggregated list with a label filter across two zones, NO_RESULTS_ON_PAGE for an empty zone", async () => {
    clients = await startWithClients({ instantaneous: true });
    await insertInstance(clients, "web-a", { zone: ZONE, labels: { "kiln-service": "web", env: "prod" } });
    await insertInstance(clients, "web-b", { zone: OTHER_ZONE, labels: { "kiln-service": "web", env: "prod" } });
    await insertInstance(clients, "api-a", { zone: ZONE, labels: { "kiln-service": "api", env: "prod" } });
    const found: Record<string, string[]> = {};
    for await (const [scope, scoped] of clients.instances.aggregatedListAsync({ project: PROJECT, filter: "(labels.kiln-service = web) AND (labels.env = prod)" })) {
      if (scoped.instances?.length) found[scope] = scoped.instances.map((instance) => instance.name!);
    }
    expect(found).toEqual({ [`zones/${ZONE}`]: ["web-a"], [`zones/${OTHER_ZONE}`]: ["web-b"] });
    const warnings: Record<string, string> = {};
    for await (const [scope, scoped] of clients.instances.aggregatedListAsync({ project: PROJECT, filter: "labels.kiln-service = api" })) {
      if (scoped.warning) warnings[scope] = String(scoped.warning.code);
      else expect(scoped.instances?.map((instance) => instance.name)).toEqual(["api-a"]);
    }
    expect(warnings).toEqual({ [`zones/${OTHER_ZONE}`]: "NO_RESULTS_ON_PAGE" });
  });

  test("list pages with maxResults and pageToken, and refuses maxResults over 500", async () => {
    clients = await startWithClients({ instantaneous: true });
    for (const name of ["vm-c", "vm-a", "vm-e", "vm-b", "vm-d"]) await insertInstance(clients, name);
    const names: string[] = [];
    let pageToken: string | undefined;
    let pages = 0;
    do {
      const [items, , response] = await clients.instances.list({ project: PROJECT, zone: ZONE, maxResults: 2, ...(pageToken ? { pageToken } : {}) }, { autoPaginate: false });
      names.push(...items.map((instance) => instance.name!));
      pageToken = response?.nextPageToken ?? undefined;
      pages++;
    } while (pageToken);
    expect(pages).toBe(3);
    expect(names).toEqual(["vm-a", "vm-b", "vm-c", "vm-d", "vm-e"]);
    const { body } = await rejectionOf(clients.instances.list({ project: PROJECT, zone: ZONE, maxResults: 501 }, { autoPaginate: false }));
    expect(body).toMatchObject({ code: 400, errors: [{ reason: "invalid" }] });
  });

  test("stop goes STOPPING → TERMINATED, start boots again, delete honours the boot disk's autoDelete", async () => {
    clients = await startWithClients({ instantaneous: true });
    await insertInstance(clients, "keep-disk", { autoDelete: false });
    await insertInstance(clients, "drop-disk", { autoDelete: true });
    const [stop] = await clients.instances.stop({ project: PROJECT, zone: ZONE, instance: "keep-disk" });
    await waitZoneOperation(clients, ZONE, stop.latestResponse.name);
    expect((await clients.instances.get({ project: PROJECT, zone: ZONE, instance: "keep-disk" }))[0].status).toBe("TERMINATED");
    const [start] = await clients.instances.start({ project: PROJECT, zone: ZONE, instance: "keep-disk" });
    await waitZoneOperation(clients, ZONE, start.latestResponse.name);
    await expect.poll(async () => (await clients!.instances.get({ project: PROJECT, zone: ZONE, instance: "keep-disk" }))[0].status, { timeout: 5_000 }).toBe("RUNNING");
    const { body: inUse } = await rejectionOf(clients.disks.delete({ project: PROJECT, zone: ZONE, disk: "keep-disk" }));
    expect(inUse).toMatchObject({ code: 400, errors: [{ reason: "resourceInUseByAnotherResource" }] });
    for (const name of ["keep-disk", "drop-disk"]) {
      const [removal] = await clients.instances.delete({ project: PROJECT, zone: ZONE, instance: name });
      await waitZoneOperation(clients, ZONE, removal.latestResponse.name);
    }
    const [disks] = await clients.disks.list({ project: PROJECT, zone: ZONE });
    expect(disks.map((disk) => [disk.name, disk.users])).toEqual([["keep-disk", []]]);
    const [deletion] = await clients.disks.delete({ project: PROJECT, zone: ZONE, disk: "keep-disk" });
    await waitZoneOperation(clients, ZONE, deletion.latestResponse.name);
    expect((await clients.disks.list({ project: PROJECT, zone: ZONE }))[0]).toEqual([]);
  });

  test("instances go PROVISIONING → STAGING → RUNNING", async () => {
    clients = await startWithClients({ timing: { operationPendingMs: 0, operationRunningMs: 0, instanceStepMs: 50 } });
    await insertInstance(clients, "boot-1");
    const statuses: string[] = [];
    await expect
      .poll(
        async () => {
          const status = String((await clients!.instances.get({ project: PROJECT, zone: ZONE, instance: "boot-1" }))[0].status);
          if (statuses.at(-1) !== status) statuses.push(status);
          return status;
        },
        { timeout: 5_000, interval: 5 },
      )
      .toBe("RUNNING");
    expect(statuses.at(-2)).toBe("STAGING");
  });

  test("a slow boot keeps an instance STAGING after its insert operation is DONE", async () => {
    clients = await startWithClients({ instantaneous: true, faults: { slowBoot: { extraMs: 60_000 } } });
    await insertInstance(clients, "boot-slow");
    const [listed] = await clients.instances.list({ project: PROJECT, zone: ZONE });
    expect(listed.map((instance) => instance.status)).toEqual(["STAGING"]);
    clients.engine.setFaults({});
    await insertInstance(clients, "boot-fast");
    await expect.poll(async () => (await clients!.instances.get({ project: PROJECT, zone: ZONE, instance: "boot-fast" }))[0].status, { timeout: 5_000 }).toBe("RUNNING");
    expect((await clients.instances.get({ project: PROJECT, zone: ZONE, instance: "boot-slow" }))[0].status).toBe("STAGING");
  });

  test("serial port output appended by the engine is read with start and next", async () => {
    clients = await startWithClients({ instantaneous: true });
    await insertInstance(clients, "console-1");
    clients.engine.appendSerialPortOutput(ZONE, "console-1", "boot line 1\n", PROJECT);
    const [first] = await clients.instances.getSerialPortOutput({ project: PROJECT, zone: ZONE, instance: "console-1", port: 1 });
    expect(first.contents).toBe("boot line 1\n");
    clients.engine.appendSerialPortOutput(ZONE, "console-1", "startup-script exit status 0\n", PROJECT);
    const [second] = await clients.instances.getSerialPortOutput({ project: PROJECT, zone: ZONE, instance: "console-1", port: 1, start: Number(first.next) });
    expect(second.contents).toBe("startup-script exit status 0\n");
    expect(Number(second.start)).toBe(Number(first.next));
  });

  test("an unknown zone is 404 and a bad name is 400 invalid", async () => {
    clients = await startWithClients({ instantaneous: true });
    const { body: zone } = await rejectionOf(clients.instances.list({ project: PROJECT, zone: "mars-north1-a" }, { autoPaginate: false }));
    expect(zone).toMatchObject({ code: 404, errors: [{ reason: "notFound" }] });
    const { body: name } = await rejectionOf(insertInstance(clients, "Bad_Name"));
    expect(name.message).toContain("Invalid value for field 'resource.name'");
  });
});
