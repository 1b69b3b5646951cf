import { afterEach, describe, expect, test } from "vitest";
import { type EngineWithClients, PROJECT, ZONE, insertInstance, rejectionOf, startWithClients } from "./sdk-clients.js";

let clients: EngineWithClients | undefined;
afterEach(async () => {
  await clients?.close();
  clients = undefined;
});

async function instanceId(name: string): Promise<string> {
  return String((await clients!.instances.get({ project: PROJECT, zone: ZONE, instance: name }))[0].id);
}

function metadata(path: string, init: { method?: string; body?: string; instance?: string; flavor?: boolean } = {}) {
  return fetch(`${clients!.engine.endpoint}/computeMetadata/v1/${path}`, {
    method: init.method ?? "GET",
    ...(init.body !== undefined ? { body: init.body } : {}),
    headers: { ...(init.flavor === false ? {} : { "Metadata-Flavor": "Google" }), ...(init.instance ? { "X-Kiln-Instance": init.instance } : {}) },
  });
}

describe("the metadata server", () => {
  test("a guest writes guest attributes that the SDK reads; 404 until written", async () => {
    clients = await startWithClients({ instantaneous: true });
    await insertInstance(clients, "builder", { metadata: { "enable-guest-attributes": "TRUE", "startup-script": "echo hi" } });
    const id = await instanceId("builder");
    const { body } = await rejectionOf(clients.instances.getGuestAttributes({ project: PROJECT, zone: ZONE, instance: "builder", variableKey: "kiln/status" }));
    expect(body).toMatchObject({ code: 404, errors: [{ reason: "notFound" }] });
    expect((await metadata("instance/guest-attributes/kiln/status", { method: "PUT", body: "done", instance: id })).status).toBe(200);
    expect((await metadata("instance/guest-attributes/kiln/exit-code", { method: "PUT", body: "0", instance: `zones/${ZONE}/instances/builder` })).status).toBe(200);
    const [one] = await clients.instances.getGuestAttributes({ project: PROJECT, zone: ZONE, instance: "builder", variableKey: "kiln/status" });
    expect(one.variableValue).toBe("done");
    const [all] = await clients.instances.getGuestAttributes({ project: PROJECT, zone: ZONE, instance: "builder", queryPath: "kiln/" });
    expect(all.queryValue?.items?.map((item) => [item.namespace, item.key, item.value])).toEqual([
      ["kiln", "status", "done"],
      ["kiln", "exit-code", "0"],
    ]);
    // The guest reads its own metadata too.
    expect(await (await metadata("instance/attributes/startup-script", { instance: id })).text()).toBe("echo hi");
    expect(await (await metadata("instance/name", { instance: id })).text()).toBe("builder");
  });

  test("the Metadata-Flavor header is required, and writes need enable-guest-attributes", async () => {
    clients = await startWithClients({ instantaneous: true });
    await insertInstance(clients, "plain");
    const id = await instanceId("plain");
    expect((await metadata("instance/id", { instance: id, flavor: false })).status).toBe(403);
    expect((await metadata("instance/guest-attributes/kiln/status", { method: "PUT", body: "done", instance: id })).status).toBe(403);
    expect((await metadata("instance/id", {})).status).toBe(404);
    expect(await (await metadata("instance/id", { instance: id })).text()).toBe(id);
  });
});
