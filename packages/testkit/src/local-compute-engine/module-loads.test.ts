import { fileURLToPath, pathToFileURL } from "node:url";
import { expect, test } from "vitest";
import { requireBuildOutput, runTracingModules } from "../module-loads.js";

const built = fileURLToPath(new URL("../../dist/index.js", import.meta.url));

// The local Compute Engine loads @google-cloud/compute's protos (12 MB), protobufjs and dockerode
// only when an engine starts (or a Docker runner first calls the engine): importing testkit for
// the in-memory provider or a conformance suite must not pay for them.
test.runIf(requireBuildOutput(built))("importing testkit loads neither the Compute protos, protobufjs nor dockerode", async () => {
  const run = await runTracingModules(["--input-type=module", "-e", `await import(${JSON.stringify(pathToFileURL(built).href)}); console.log("imported");`]);
  expect(run.stdout).toContain("imported");
  expect(run.packages).toContain("vitest");
  for (const heavy of ["@google-cloud/compute", "google-gax", "protobufjs", "dockerode"]) expect(run.packages).not.toContain(heavy);
});
