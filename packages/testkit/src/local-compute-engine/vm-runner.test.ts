import { afterEach, describe, expect, test } from "vitest";
import { type EngineWithClients, PROJECT, ZONE, insertInstance, startWithClients, waitGlobalOperation, waitZoneOperation } from "./sdk-clients.js";
import type { VmDescription, VmRunner } from "./vm-runner.js";

let clients: EngineWithClients | undefined;
afterEach(async () => {
  await clients?.close();
  clients = undefined;
});

/** A runner that records what the engine asks of it, as a Docker-backed runner would be asked. */
function recordingRunner() {
  const calls: string[] = [];
  const started: VmDescription[] = [];
  const runner: VmRunner = {
    start: async (vm) => {
      calls.push(`start ${vm.name}`);
      started.push(vm);
      vm.writeSerialPort(`${vm.name} booted from ${vm.bootDisk.imageArtifact ?? "no artifact"}\n`);
      return { networkIP: "172.30.0.9" };
    },
    stop: async (vm) => void calls.push(`stop ${vm.name}`),
    delete: async (vm) => void calls.push(`delete ${vm.name}`),
    captureImage: async (disk, image) => {
      calls.push(`capture ${disk.name} as ${image.name}`);
      return `kiln-local/${image.name}:latest`;
    },
  };
  return { runner, calls, started };
}

describe("the VM runner interface", () => {
  test("the engine starts, stops, captures and deletes through the runner, and VMs from a captured image get its artifact", async () => {
    const { runner, calls, started } = recordingRunner();
    clients = await startWithClients({ instantaneous: true, vmRunner: runner, images: [{ project: "debian-cloud", name: "debian-12", family: "debian-12", artifact: "kiln-local/debian-12:latest" }] });
    await insertInstance(clients, "builder", { autoDelete: false, metadata: { "startup-script": "make install" } });
    await expect.poll(async () => (await clients!.instances.get({ project: PROJECT, zone: ZONE, instance: "builder" }))[0].status, { timeout: 5_000 }).toBe("RUNNING");
    const [builder] = await clients.instances.get({ project: PROJECT, zone: ZONE, instance: "builder" });
    expect(builder.networkInterfaces?.[0]?.networkIP).toBe("172.30.0.9");
    expect(started[0]).toMatchObject({ name: "builder", metadata: { "startup-script": "make install" }, bootDisk: { imageArtifact: "kiln-local/debian-12:latest" } });
    expect(started[0]!.metadataServer).toEqual({ url: clients.engine.endpoint, headers: { "Metadata-Flavor": "Google", "X-Kiln-Instance": builder.id } });
    const [serial] = await clients.instances.getSerialPortOutput({ project: PROJECT, zone: ZONE, instance: "builder" });
    expect(serial.contents).toBe("builder booted from kiln-local/debian-12:latest\n");
    const [stop] = await clients.instances.stop({ project: PROJECT, zone: ZONE, instance: "builder" });
    await waitZoneOperation(clients, ZONE, stop.latestResponse.name);
    const [image] = await clients.images.insert({ project: PROJECT, imageResource: { name: "web-v1", family: "web", sourceDisk: `zones/${ZONE}/disks/builder` } });
    await waitGlobalOperation(clients, image.latestResponse.name);
    const [removal] = await clients.instances.delete({ project: PROJECT, zone: ZONE, instance: "builder" });
    await waitZoneOperation(clients, ZONE, removal.latestResponse.name);
    const [vm] = await clients.instances.insert({ project: PROJECT, zone: ZONE, instanceResource: { name: "web-1", machineType: "e2-small", disks: [{ boot: true, initializeParams: { sourceImage: "global/images/family/web" } }] } });
    await waitZoneOperation(clients, ZONE, vm.latestResponse.name);
    await expect.poll(() => started.length, { timeout: 5_000 }).toBe(2);
    expect(started[1]!.bootDisk.imageArtifact).toBe("kiln-local/web-v1:latest");
    expect(calls).toEqual(["start builder", "stop builder", "capture builder as web-v1", "delete builder", "start web-1"]);
  });

  test("a VM that fails to start is TERMINATED with the error on its serial port", async () => {
    const runner: VmRunner = { start: () => Promise.reject(new Error("no such image")), stop: async () => {}, delete: async () => {} };
    clients = await startWithClients({ instantaneous: true, vmRunner: runner });
    await insertInstance(clients, "broken");
    await expect.poll(async () => (await clients!.instances.get({ project: PROJECT, zone: ZONE, instance: "broken" }))[0].status, { timeout: 5_000 }).toBe("TERMINATED");
    const [serial] = await clients.instances.getSerialPortOutput({ project: PROJECT, zone: ZONE, instance: "broken" });
    expect(serial.contents).toContain("no such image");
  });
});
