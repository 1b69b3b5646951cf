// The provider conformance suite from @kilnjs/testkit, against the local Compute Engine (state-only
// VMs) through the official client: once with instantaneous operations, once with operations and
// boots that take time (PENDING → RUNNING → DONE, PROVISIONING → STAGING → RUNNING). Baking is not implemented yet, so
// the suite's images.build is played by the test: it makes the image a bake would leave (a kept
// boot disk → images.insert with Kiln's labels) and returns what the provider's images.find sees.
import { afterAll, beforeAll, describe } from "vitest";
import { throwIfAborted, type Provider } from "@kilnjs/core";
import { runProviderConformance, startLocalComputeEngine, type LocalComputeEngine } from "@kilnjs/testkit";
import { createGcpProvider } from "./index.js";
import { makeImageInFake } from "./images-in-fake.js";

const PROJECT = "kiln-conformance";
const ZONE = "us-central1-a";

describe.each([
  { mode: "instantaneous operations", instantaneous: true },
  { mode: "operations that take time", instantaneous: false },
])("gcp provider conformance (local Compute Engine, $mode)", ({ mode, instantaneous }) => {
  let engine: LocalComputeEngine;

  beforeAll(async () => {
    engine = await startLocalComputeEngine({ project: PROJECT, zones: [ZONE, "us-central1-b"], instantaneous });
  });

  afterAll(async () => {
    await engine.close();
  });

  runProviderConformance({
    name: `gcp, ${mode}`,
    createProvider(): Provider {
      const provider = createGcpProvider({ endpoint: engine.endpoint, project: PROJECT, zone: ZONE, backoff: { initialDelayMs: 10, maxDelayMs: 100 } });
      return {
        ...provider,
        images: {
          ...provider.images,
          async build(recipe, ctx) {
            throwIfAborted(ctx.signal);
            await makeImageInFake({ endpoint: engine.endpoint, project: PROJECT, zone: ZONE }, recipe);
            const found = await provider.images.find({ service: recipe.target.service, fingerprint: recipe.fingerprint }, ctx);
            if (!found) throw new Error("the image made in the local Compute Engine was not found by the provider");
            return found;
          },
        },
      };
    },
    makeRecipe: ({ service, fingerprint }) =>
      Promise.resolve({
        target: { service, environment: "conformance" },
        fingerprint,
        machine: { kind: "machine", steps: [], base: { family: "debian-12", project: "debian-cloud" }, builder: undefined, timeoutMs: 60_000 },
      }),
    timeoutMs: 30_000,
  });
});
