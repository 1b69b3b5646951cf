import { afterEach, describe, expect, test } from "vitest";
import { type EngineWithClients, PROJECT, ZONE, insertInstance, rejectionOf, startWithClients, waitGlobalOperation, waitZoneOperation } from "./sdk-clients.js";

let clients: EngineWithClients | undefined;
afterEach(async () => {
  await clients?.close();
  clients = undefined;
});

async function insertImage(engine: EngineWithClients, name: string, options: { family?: string; sourceDisk: string; labels?: Record<string, string>; forceCreate?: boolean }) {
  const [operation] = await engine.images.insert({
    project: PROJECT,
    ...(options.forceCreate ? { forceCreate: true } : {}),
    imageResource: { name, sourceDisk: options.sourceDisk, labels: options.labels ?? {}, ...(options.family ? { family: options.family } : {}) },
  });
  return waitGlobalOperation(engine, operation.latestResponse.name);
}

describe("images through the official client", () => {
  test("an image from a running instance's disk is refused with 400 resourceInUseByAnotherResource; from a stopped one it is made", async () => {
    clients = await startWithClients({ instantaneous: true });
    await insertInstance(clients, "builder", { autoDelete: false });
    await expect.poll(async () => (await clients!.instances.get({ project: PROJECT, zone: ZONE, instance: "builder" }))[0].status, { timeout: 5_000 }).toBe("RUNNING");
    const { body } = await rejectionOf(clients.images.insert({ project: PROJECT, imageResource: { name: "web-v1", sourceDisk: `zones/${ZONE}/disks/builder` } }));
    expect(body).toMatchObject({ code: 400, errors: [{ domain: "global", reason: "resourceInUseByAnotherResource" }] });
    expect(body.message).toContain(`projects/${PROJECT}/zones/${ZONE}/disks/builder`);
    const [stop] = await clients.instances.stop({ project: PROJECT, zone: ZONE, instance: "builder" });
    await waitZoneOperation(clients, ZONE, stop.latestResponse.name);
    const done = await insertImage(clients, "web-v1", { family: "web", sourceDisk: `zones/${ZONE}/disks/builder`, labels: { fingerprint: "abc123" } });
    expect(done.error).toBeFalsy();
    const [image] = await clients.images.get({ project: PROJECT, image: "web-v1" });
    expect(image).toMatchObject({ status: "READY", family: "web", labels: { fingerprint: "abc123" }, sourceDisk: `https://www.googleapis.com/compute/v1/projects/${PROJECT}/zones/${ZONE}/disks/builder` });
    expect(image.labelFingerprint).toBeTruthy();
  });

  test("getFromFamily returns the newest image that is not deprecated; list filters, orders and pages", async () => {
    clients = await startWithClients({ instantaneous: true });
    await insertInstance(clients, "builder", { autoDelete: false });
    const [stop] = await clients.instances.stop({ project: PROJECT, zone: ZONE, instance: "builder" });
    await waitZoneOperation(clients, ZONE, stop.latestResponse.name);
    for (const name of ["web-v1", "web-v2", "web-v3"]) await insertImage(clients, name, { family: "web", sourceDisk: `zones/${ZONE}/disks/builder`, labels: { service: "web" } });
    await insertImage(clients, "api-v1", { family: "api", sourceDisk: `zones/${ZONE}/disks/builder`, labels: { service: "api" } });
    expect((await clients.images.getFromFamily({ project: PROJECT, family: "web" }))[0].name).toBe("web-v3");
    const [deprecation] = await clients.images.deprecate({ project: PROJECT, image: "web-v3", deprecationStatusResource: { state: "DEPRECATED", replacement: "global/images/web-v2" } });
    await waitGlobalOperation(clients, deprecation.latestResponse.name);
    expect((await clients.images.getFromFamily({ project: PROJECT, family: "web" }))[0].name).toBe("web-v2");
    const [newestFirst] = await clients.images.list({ project: PROJECT, filter: "labels.service = web", orderBy: "creationTimestamp desc" }, { autoPaginate: false });
    expect(newestFirst.map((image) => image.name)).toEqual(["web-v3", "web-v2", "web-v1"]);
    const [page, , response] = await clients.images.list({ project: PROJECT, filter: "name eq web-v[12]", maxResults: 1 }, { autoPaginate: false });
    expect(page.map((image) => image.name)).toEqual(["web-v1"]);
    expect(response?.nextPageToken).toBeTruthy();
    const [deletion] = await clients.images.delete({ project: PROJECT, image: "web-v1" });
    await waitGlobalOperation(clients, deletion.latestResponse.name);
    const [remaining] = await clients.images.list({ project: PROJECT, filter: "labels.service:*" });
    expect(remaining.map((image) => image.name)).toEqual(["api-v1", "web-v2", "web-v3"]);
    const { body } = await rejectionOf(clients.images.getFromFamily({ project: PROJECT, family: "nothing" }));
    expect(body.errors?.[0]?.reason).toBe("notFound");
  });

  test("seed images are served from their own project; an instance from an OBSOLETE image is refused", async () => {
    clients = await startWithClients({ instantaneous: true, images: [{ project: "debian-cloud", name: "debian-12-old", family: "debian-12" }] });
    const [debian] = await clients.images.getFromFamily({ project: "debian-cloud", family: "debian-12" });
    expect(debian.selfLink).toBe("https://www.googleapis.com/compute/v1/projects/debian-cloud/global/images/debian-12-old");
    const [deprecation] = await clients.images.deprecate({ project: "debian-cloud", image: "debian-12-old", deprecationStatusResource: { state: "OBSOLETE" } });
    const [done] = await clients.globalOperations.wait({ project: "debian-cloud", operation: deprecation.latestResponse.name });
    expect(done.status).toBe("DONE");
    const { body } = await rejectionOf(
      clients.instances.insert({ project: PROJECT, zone: ZONE, instanceResource: { name: "vm-1", machineType: "e2-small", disks: [{ boot: true, initializeParams: { sourceImage: "projects/debian-cloud/global/images/debian-12-old" } }] } }),
    );
    expect(body).toMatchObject({ code: 400, errors: [{ reason: "invalid" }] });
  });
});
