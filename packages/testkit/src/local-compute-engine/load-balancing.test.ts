import { afterEach, describe, expect, test } from "vitest";
import { type EngineWithClients, PROJECT, ZONE, insertInstance, rejectionOf, startWithClients, waitGlobalOperation, waitZoneOperation } from "./sdk-clients.js";

let clients: EngineWithClients | undefined;
afterEach(async () => {
  await clients?.close();
  clients = undefined;
});

const link = (path: string) => `https://www.googleapis.com/compute/v1/projects/${PROJECT}/${path}`;

async function groupBehindService(engine: EngineWithClients, members: string[], drainingTimeoutSec: number) {
  for (const name of members) await insertInstance(engine, name);
  const [group] = await engine.instanceGroups.insert({ project: PROJECT, zone: ZONE, instanceGroupResource: { name: "web-group", namedPorts: [{ name: "http", port: 8080 }] } });
  await waitZoneOperation(engine, ZONE, group.latestResponse.name);
  const [service] = await engine.backendServices.insert({
    project: PROJECT,
    backendServiceResource: { name: "web-backend", portName: "http", connectionDraining: { drainingTimeoutSec }, backends: [{ group: `zones/${ZONE}/instanceGroups/web-group` }] },
  });
  await waitGlobalOperation(engine, service.latestResponse.name);
  const [add] = await engine.instanceGroups.addInstances({
    project: PROJECT,
    zone: ZONE,
    instanceGroup: "web-group",
    instanceGroupsAddInstancesRequestResource: { instances: members.map((name) => ({ instance: link(`zones/${ZONE}/instances/${name}`) })) },
  });
  await waitZoneOperation(engine, ZONE, add.latestResponse.name);
}

async function memberNames(engine: EngineWithClients): Promise<string[]> {
  const [items] = await engine.instanceGroups.listInstances({ project: PROJECT, zone: ZONE, instanceGroup: "web-group", instanceGroupsListInstancesRequestResource: { instanceState: "ALL" } });
  return items.map((item) => item.instance!.split("/").pop()!);
}

describe("instance groups and backend services through the official client", () => {
  test("add, duplicate add refused with 400 memberAlreadyExists, remove after the backend service's draining time", async () => {
    // One API second lasts 250 ms here, so 4 s of draining is 1 s.
    clients = await startWithClients({ instantaneous: true, timing: { secondMs: 250 } });
    await groupBehindService(clients, ["web-1", "web-2"], 4);
    expect(await memberNames(clients)).toEqual(["web-1", "web-2"]);
    expect((await clients.instanceGroups.get({ project: PROJECT, zone: ZONE, instanceGroup: "web-group" }))[0].size).toBe(2);
    const { body } = await rejectionOf(
      clients.instanceGroups.addInstances({ project: PROJECT, zone: ZONE, instanceGroup: "web-group", instanceGroupsAddInstancesRequestResource: { instances: [{ instance: link(`zones/${ZONE}/instances/web-1`) }] } }),
    );
    expect(body).toMatchObject({ code: 400, errors: [{ reason: "memberAlreadyExists" }] });
    const [removal] = await clients.instanceGroups.removeInstances({
      project: PROJECT,
      zone: ZONE,
      instanceGroup: "web-group",
      instanceGroupsRemoveInstancesRequestResource: { instances: [{ instance: link(`zones/${ZONE}/instances/web-1`) }] },
    });
    // Draining: the operation is still RUNNING and web-1 still a member.
    const [running] = await clients.zoneOperations.get({ project: PROJECT, zone: ZONE, operation: removal.latestResponse.name });
    expect(running.status).toBe("RUNNING");
    expect(await memberNames(clients)).toEqual(["web-1", "web-2"]);
    const done = await waitZoneOperation(clients, ZONE, removal.latestResponse.name);
    expect(Date.parse(done.endTime!) - Date.parse(done.startTime!)).toBeGreaterThanOrEqual(1_000);
    expect(await memberNames(clients)).toEqual(["web-2"]);
  });

  test("getHealth reports each member's health from its state, a callback or an override", async () => {
    clients = await startWithClients({ instantaneous: true, health: (instance) => (instance.labels.broken === "true" ? "UNHEALTHY" : instance.status === "RUNNING" ? "HEALTHY" : "UNHEALTHY") });
    await groupBehindService(clients, ["web-1", "web-2", "web-3"], 0);
    const health = async () => {
      const [answer] = await clients!.backendServices.getHealth({ project: PROJECT, backendService: "web-backend", resourceGroupReferenceResource: { group: link(`zones/${ZONE}/instanceGroups/web-group`) } });
      return Object.fromEntries((answer.healthStatus ?? []).map((status) => [status.instance!.split("/").pop()!, `${status.healthState} ${status.ipAddress}:${status.port}`] as const)) as Record<string, string>;
    };
    await expect.poll(async () => Object.values(await health()).every((state) => state.startsWith("HEALTHY")), { timeout: 5_000 }).toBe(true);
    const [stop] = await clients.instances.stop({ project: PROJECT, zone: ZONE, instance: "web-2" });
    await waitZoneOperation(clients, ZONE, stop.latestResponse.name);
    clients.engine.setInstanceHealth(ZONE, "web-3", "UNHEALTHY", PROJECT);
    const states = await health();
    expect(Object.keys(states)).toEqual(["web-1", "web-2", "web-3"]);
    expect(states["web-1"]).toMatch(/^HEALTHY 10\.128\.\d+\.\d+:8080$/);
    expect(states["web-2"]).toMatch(/^UNHEALTHY /);
    expect(states["web-3"]).toMatch(/^UNHEALTHY /);
  });

  test("patch with a stale fingerprint is refused with 412 conditionNotMet; with the current one it applies", async () => {
    clients = await startWithClients({ instantaneous: true });
    await groupBehindService(clients, ["web-1"], 0);
    const [before] = await clients.backendServices.get({ project: PROJECT, backendService: "web-backend" });
    const [patch] = await clients.backendServices.patch({ project: PROJECT, backendService: "web-backend", backendServiceResource: { fingerprint: before.fingerprint!, connectionDraining: { drainingTimeoutSec: 30 } } });
    await waitGlobalOperation(clients, patch.latestResponse.name);
    const [after] = await clients.backendServices.get({ project: PROJECT, backendService: "web-backend" });
    expect(after.connectionDraining?.drainingTimeoutSec).toBe(30);
    expect(after.fingerprint).not.toBe(before.fingerprint);
    const { body } = await rejectionOf(clients.backendServices.patch({ project: PROJECT, backendService: "web-backend", backendServiceResource: { fingerprint: before.fingerprint!, connectionDraining: { drainingTimeoutSec: 0 } } }));
    expect(body).toMatchObject({ code: 412, errors: [{ reason: "conditionNotMet" }] });
    expect((await clients.backendServices.get({ project: PROJECT, backendService: "web-backend" }))[0].connectionDraining?.drainingTimeoutSec).toBe(30);
  });
});
