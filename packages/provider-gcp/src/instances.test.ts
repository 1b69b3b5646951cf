// The pure parts of the gcp provider's instances: status mapping, the insert body, labels and the
// way an instance is read back. The calls themselves are tested against the local Compute Engine
// (lifecycle.test.ts, conformance.test.ts).
import { describe, expect, it } from "vitest";
import { KilnError, LABELS, type LaunchRequest } from "@kilnjs/core";
import { GCE_INSTANCE_METADATA_KEYS, instanceFromGce, instanceResource, instanceState, launchLabels, launchSettings, parseInstanceId, instanceId } from "./instances.js";
import { labelFilter } from "./runtime.js";
import { gcpInstancesSchema } from "./spec.js";

const REQUEST: LaunchRequest = {
  target: { service: "web", environment: "prod" },
  release: 3,
  rolloutId: "20261207051100-1a2b3c4d",
  idempotencyKey: "20261207051100-1a2b3c4d:b1",
  image: { id: "web-abc", fingerprint: `sha256:${"ab".repeat(32)}`, digest: "1", names: ["web-abc"] },
  config: { ports: [{ name: "http", port: 8080, protocol: "tcp" }], env: {}, labels: { team: "platform" }, stopGracePeriodMs: 1_000 },
  count: 2,
};
const WHERE = { project: "kiln-test", zone: "europe-west1-b", region: "europe-west1" };

describe("instanceState", () => {
  it("maps every Compute Engine status to Kiln's states", () => {
    expect(["PROVISIONING", "STAGING", "RUNNING", "STOPPING", "SUSPENDING", "PENDING_STOP", "TERMINATED", "SUSPENDED", "REPAIRING", undefined].map(instanceState)).toEqual([
      "pending",
      "pending",
      "running",
      "stopping",
      "stopping",
      "stopping",
      "stopped",
      "stopped",
      "unknown",
      "unknown",
    ]);
  });
});

describe("instanceResource", () => {
  it("builds the insert body from the section's defaults: machine type, default network, boot disk from the image, labels and Kiln's metadata", () => {
    const body = instanceResource(REQUEST, launchSettings(REQUEST.config), WHERE, "web-prod-r3-x-0");
    expect(body.machineType).toBe("zones/europe-west1-b/machineTypes/e2-small");
    expect(body.networkInterfaces).toEqual([{ network: "global/networks/default" }]);
    expect(body.disks).toEqual([{ boot: true, autoDelete: true, initializeParams: { sourceImage: "projects/kiln-test/global/images/web-abc", diskType: "zones/europe-west1-b/diskTypes/pd-balanced" } }]);
    expect(body.labels).toMatchObject({ team: "platform", "kiln-service": "web", "kiln-release": "3" });
    const metadata = new Map((body.metadata?.items ?? []).map((item) => [item.key ?? "", item.value ?? ""]));
    expect(metadata.get(GCE_INSTANCE_METADATA_KEYS.image)).toBe("web-abc");
    expect(JSON.parse(metadata.get(GCE_INSTANCE_METADATA_KEYS.labels) ?? "{}")).toMatchObject({ [LABELS.launchKey]: REQUEST.idempotencyKey });
    expect(body.serviceAccounts).toBeUndefined();
  });

  it("takes the section's machine type, subnetwork by name (in the zone's region), service account, disk and metadata", () => {
    const settings = gcpInstancesSchema.parse({
      machineType: "n2-standard-2",
      subnetwork: "apps",
      serviceAccount: { email: "app@kiln-test.iam.gserviceaccount.com" },
      bootDisk: { sizeGb: 20, type: "pd-ssd" },
      metadata: { owner: "platform" },
    });
    const body = instanceResource(REQUEST, settings, WHERE, "web-prod-r3-x-0");
    expect(body.machineType).toBe("zones/europe-west1-b/machineTypes/n2-standard-2");
    expect(body.networkInterfaces).toEqual([{ subnetwork: "regions/europe-west1/subnetworks/apps" }]);
    expect(body.serviceAccounts).toEqual([{ email: "app@kiln-test.iam.gserviceaccount.com", scopes: ["https://www.googleapis.com/auth/cloud-platform"] }]);
    expect(body.disks?.[0]?.initializeParams).toMatchObject({ diskSizeGb: "20", diskType: "zones/europe-west1-b/diskTypes/pd-ssd" });
    expect(body.metadata?.items).toContainEqual({ key: "owner", value: "platform" });
  });

  it("keeps a network written as a path, and an image id written as a path", () => {
    const settings = gcpInstancesSchema.parse({ network: "projects/host/global/networks/shared" });
    const body = instanceResource({ ...REQUEST, image: { ...REQUEST.image, id: "projects/other/global/images/base" } }, settings, WHERE, "n");
    expect(body.networkInterfaces).toEqual([{ network: "projects/host/global/networks/shared" }]);
    expect(body.disks?.[0]?.initializeParams?.sourceImage).toBe("projects/other/global/images/base");
  });
});

describe("launchLabels", () => {
  it("refuses labels Compute Engine would refuse, naming the label, before any call", () => {
    const bad = { ...REQUEST, config: { ...REQUEST.config, labels: { Team: "x" } } };
    expect(() => launchLabels(bad)).toThrow(KilnError);
    expect(() => launchLabels(bad)).toThrow(/label "Team"/);
  });
});

describe("instanceFromGce", () => {
  it("reads Kiln's labels back, values too long for a label from the kiln-labels metadata item, and endpoints on the network IP", () => {
    const long = { ...REQUEST, rolloutId: `rollout-${"x".repeat(80)}` };
    const body = instanceResource(long, launchSettings(long.config), WHERE, "web-prod-r3-x-0");
    const instance = instanceFromGce(WHERE.project, WHERE.zone, { ...body, status: "RUNNING", creationTimestamp: "2026-12-07T05:11:00.000-08:00", networkInterfaces: [{ networkIP: "10.128.0.7" }] });
    expect(body.labels?.["kiln-rollout"], "the label holds a hash").toMatch(/_h[0-9a-f]{16}$/);
    expect(instance.rolloutId).toBe(long.rolloutId);
    expect(instance.release).toBe(3);
    expect(instance.target).toEqual(REQUEST.target);
    expect(instance.imageId).toBe("web-abc");
    expect(instance.state).toBe("running");
    expect(instance.endpoints).toEqual({ http: { host: "10.128.0.7", port: 8080 } });
    expect(instance.createdAt).toBe("2026-12-07T13:11:00.000Z");
    expect(instance.id).toBe(instanceId(WHERE.project, WHERE.zone, "web-prod-r3-x-0"));
    expect(parseInstanceId(instance.id)).toEqual({ project: WHERE.project, zone: WHERE.zone, name: "web-prod-r3-x-0" });
    expect(parseInstanceId("i-123")).toBeUndefined();
  });
});

describe("labelFilter", () => {
  it("matches every label by its Compute Engine key and encoded value", () => {
    expect(labelFilter({ [LABELS.service]: "web", [LABELS.launchKey]: "a:b" })).toBe('(labels.kiln-service = "web") AND (labels.kiln-launch-key = "a_3ab")');
  });
});
