// The local Compute Engine with VMs that really run: containers on the test's Docker engine, made
// from the boot image, their startup scripts run, guest attributes written through the metadata
// server, an image that is the builder's filesystem, an app that answers HTTP at the VM's address.
import { execFileSync } from "node:child_process";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { requireDockerEngine } from "../engines.js";
import { createDockerVmRunner } from "./docker-vm-runner.js";
import { httpHealthCheck } from "./state.js";
import { type EngineWithClients, PROJECT, ZONE, startWithClients, waitGlobalOperation, waitZoneOperation } from "./sdk-clients.js";

const BASE_IMAGE = "kiln-local/busybox:latest";
const hasEngine = await requireDockerEngine();

/** Writes a guest attribute from inside a busybox VM (no curl there: a PUT by hand through nc). */
const putGuestAttribute = (key: string, value: string) =>
  `printf 'PUT /computeMetadata/v1/instance/guest-attributes/kiln/${key} HTTP/1.0\\r\\nMetadata-Flavor: Google\\r\\nContent-Length: %d\\r\\n\\r\\n%s' "\${#${value}}" "$${value}" | nc "\${GCE_METADATA_HOST%:*}" "\${GCE_METADATA_HOST#*:}" > /dev/null`;

describe.runIf(hasEngine)("the Docker VM runner", () => {
  let clients: EngineWithClients;
  beforeAll(async () => {
    // Made by scripts/base-images.sh (npm test's setup); a clear failure if it is missing.
    execFileSync(process.env.KILN_DOCKER_CLI ?? "docker", ["image", "inspect", BASE_IMAGE], { stdio: "ignore" });
    clients = await startWithClients({
      instantaneous: true,
      vmRunner: createDockerVmRunner(),
      health: httpHealthCheck({ path: "/index.html" }),
      images: [{ project: "kiln-images", name: "busybox-base", family: "busybox", artifact: BASE_IMAGE }],
    });
  });
  afterAll(async () => {
    await clients?.close();
  });

  async function insertVm(name: string, sourceImage: string, script: string) {
    const [operation] = await clients.instances.insert({
      project: PROJECT,
      zone: ZONE,
      instanceResource: {
        name,
        machineType: "e2-small",
        disks: [{ boot: true, autoDelete: false, initializeParams: { sourceImage } }],
        metadata: { items: [{ key: "enable-guest-attributes", value: "TRUE" }, { key: "startup-script", value: script }] },
      },
    });
    return waitZoneOperation(clients, ZONE, operation.latestResponse.name);
  }

  async function guestAttribute(name: string, key: string): Promise<string | undefined> {
    try {
      return String((await clients.instances.getGuestAttributes({ project: PROJECT, zone: ZONE, instance: name, variableKey: `kiln/${key}` }))[0].variableValue);
    } catch {
      return undefined;
    }
  }

  test("bake: the builder's startup script runs, reports through guest attributes, and its filesystem becomes the image", async () => {
    const bake = ["mkdir -p /www", "echo 'hello from the baked image' > /www/index.html", "echo provisioning done", "STATUS=done", putGuestAttribute("status", "STATUS")].join("\n");
    await insertVm("builder", "projects/kiln-images/global/images/family/busybox", bake);
    await expect.poll(() => guestAttribute("builder", "status"), { timeout: 30_000, interval: 200 }).toBe("done");
    await expect
      .poll(async () => (await clients.instances.getSerialPortOutput({ project: PROJECT, zone: ZONE, instance: "builder" }))[0].contents, { timeout: 10_000 })
      .toContain("kiln-local-compute-engine: startup-script exit status 0");
    const [stop] = await clients.instances.stop({ project: PROJECT, zone: ZONE, instance: "builder" });
    await waitZoneOperation(clients, ZONE, stop.latestResponse.name, 30_000);
    const [image] = await clients.images.insert({ project: PROJECT, imageResource: { name: "web-v1", family: "web", sourceDisk: `zones/${ZONE}/disks/builder` } });
    expect((await waitGlobalOperation(clients, image.latestResponse.name, 30_000)).error).toBeFalsy();

    // deploy: a VM from the baked image serves its page over HTTP at its networkIP.
    await insertVm("web-1", "global/images/family/web", "httpd -p 8080 -h /www");
    await expect.poll(async () => (await clients.instances.get({ project: PROJECT, zone: ZONE, instance: "web-1" }))[0].status, { timeout: 30_000 }).toBe("RUNNING");
    const [web] = await clients.instances.get({ project: PROJECT, zone: ZONE, instance: "web-1" });
    const address = web.networkInterfaces?.[0]?.networkIP;
    expect(address).toMatch(/^\d+\.\d+\.\d+\.\d+$/);
    await expect
      .poll(async () => (await fetch(`http://${address}:8080/`).then((response) => response.text()).catch(() => "")).trim(), { timeout: 15_000, interval: 200 })
      .toBe("hello from the baked image");

    // Health through a backend service reaches the container: HEALTHY while httpd answers.
    const link = (path: string) => `https://www.googleapis.com/compute/v1/projects/${PROJECT}/${path}`;
    const [group] = await clients.instanceGroups.insert({ project: PROJECT, zone: ZONE, instanceGroupResource: { name: "web", namedPorts: [{ name: "http", port: 8080 }] } });
    await waitZoneOperation(clients, ZONE, group.latestResponse.name);
    const [service] = await clients.backendServices.insert({ project: PROJECT, backendServiceResource: { name: "web", portName: "http", backends: [{ group: `zones/${ZONE}/instanceGroups/web` }] } });
    await waitGlobalOperation(clients, service.latestResponse.name);
    const [add] = await clients.instanceGroups.addInstances({ project: PROJECT, zone: ZONE, instanceGroup: "web", instanceGroupsAddInstancesRequestResource: { instances: [{ instance: link(`zones/${ZONE}/instances/web-1`) }] } });
    await waitZoneOperation(clients, ZONE, add.latestResponse.name);
    const [health] = await clients.backendServices.getHealth({ project: PROJECT, backendService: "web", resourceGroupReferenceResource: { group: link(`zones/${ZONE}/instanceGroups/web`) } });
    expect(health.healthStatus?.map((entry) => [entry.ipAddress, entry.port, entry.healthState])).toEqual([[address, 8080, "HEALTHY"]]);
  }, 120_000);

  test("a startup script that fails shows its exit status on the serial port, and a restart runs it again", async () => {
    await insertVm("failing", "projects/kiln-images/global/images/family/busybox", "echo about to fail\nexit 3");
    const serial = async () => (await clients.instances.getSerialPortOutput({ project: PROJECT, zone: ZONE, instance: "failing" }))[0].contents ?? "";
    await expect.poll(serial, { timeout: 30_000 }).toContain("about to fail\nkiln-local-compute-engine: startup-script exit status 3\n");
    const [stop] = await clients.instances.stop({ project: PROJECT, zone: ZONE, instance: "failing" });
    await waitZoneOperation(clients, ZONE, stop.latestResponse.name, 30_000);
    const [start] = await clients.instances.start({ project: PROJECT, zone: ZONE, instance: "failing" });
    await waitZoneOperation(clients, ZONE, start.latestResponse.name, 30_000);
    await expect.poll(async () => (await serial()).split("startup-script exit status 3").length - 1, { timeout: 30_000 }).toBe(2);
  }, 120_000);
});
