// Test support, not exported from the package: an image made in a local Compute Engine the way a
// bake ends (a VM's kept boot disk → images.insert with Kiln's labels), through the official
// clients, while the provider's own bake is not implemented.
import { randomBytes } from "node:crypto";
import { imageLabels, type ImageRecipe } from "@kilnjs/core";
import { GceClients } from "./client.js";
import { toGceLabels } from "./labels.js";
import { imageName } from "./names.js";

/** Where the image is made. */
export interface FakeImageSite {
  readonly endpoint: string;
  readonly project: string;
  readonly zone: string;
}

async function waitDone(clients: GceClients, site: FakeImageSite, name: string | null | undefined, global: boolean): Promise<void> {
  const { zoneOperations, globalOperations } = await clients.clients();
  for (let attempt = 0; attempt < 100; attempt += 1) {
    const [operation] = global ? await globalOperations.wait({ project: site.project, operation: name! }) : await zoneOperations.wait({ project: site.project, zone: site.zone, operation: name! });
    if (operation.status === "DONE") {
      if (operation.error?.errors?.length) throw new Error(`operation ${name} failed: ${JSON.stringify(operation.error.errors)}`);
      return;
    }
  }
  throw new Error(`operation ${name} did not end`);
}

/**
 * Makes the image a bake of `recipe` would leave (named by {@link imageName}, labelled with core's
 * image labels) from the Debian image the local Compute Engine starts with: a VM whose boot disk is
 * kept, the VM deleted, the image made from the disk, the disk deleted.
 */
export async function makeImageInFake(site: FakeImageSite, recipe: Pick<ImageRecipe, "target" | "fingerprint" | "release" | "rolloutId">): Promise<string> {
  const clients = new GceClients({ endpoint: site.endpoint }, {});
  try {
    const { instances, images, disks } = await clients.clients();
    const vm = `image-source-${randomBytes(4).toString("hex")}`;
    const [inserted] = await instances.insert({
      project: site.project,
      zone: site.zone,
      instanceResource: {
        name: vm,
        machineType: `zones/${site.zone}/machineTypes/e2-small`,
        disks: [{ boot: true, autoDelete: false, initializeParams: { sourceImage: "projects/debian-cloud/global/images/family/debian-12" } }],
        networkInterfaces: [{ network: "global/networks/default" }],
      },
    });
    await waitDone(clients, site, inserted.latestResponse.name, false);
    const [deleted] = await instances.delete({ project: site.project, zone: site.zone, instance: vm });
    await waitDone(clients, site, deleted.latestResponse.name, false);
    const name = imageName({ service: recipe.target.service, fingerprint: recipe.fingerprint });
    const [made] = await images.insert({ project: site.project, imageResource: { name, labels: toGceLabels(imageLabels(recipe)), sourceDisk: `zones/${site.zone}/disks/${vm}` } });
    await waitDone(clients, site, made.latestResponse.name, true);
    const [diskDeleted] = await disks.delete({ project: site.project, zone: site.zone, disk: vm });
    await waitDone(clients, site, diskDeleted.latestResponse.name, false);
    return name;
  } finally {
    await clients.close();
  }
}
