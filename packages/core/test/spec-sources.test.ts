// The same service deployed from its kiln.yaml and from a spec object (as `kiln serve` does for a
// posted spec) fingerprints the same: Kiln's own spec file is never part of the build.
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createKiln, loadSpec } from "../src/index.js";
import { createMemoryProvider } from "@kilnjs/testkit";

describe("a spec from its file and as an object", () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "kiln-spec-sources-"));
    await writeFile(path.join(dir, "Dockerfile"), "FROM scratch\n");
    await writeFile(path.join(dir, "app.txt"), "v1\n");
    await writeFile(path.join(dir, "kiln.yaml"), "service: same\nprovider: memory\ninstances: { count: 1 }\n");
  });
  afterAll(() => rm(dir, { recursive: true, force: true }));

  it("fingerprint the same, so switching between them deploys nothing", async () => {
    const kiln = createKiln({ providers: { memory: createMemoryProvider() }, dataDir: path.join(dir, ".kiln") });
    const fromObject = await kiln.deploy({ spec: { service: "same", provider: "memory", instances: { count: 1 } }, baseDir: dir });
    expect(fromObject.outcome).toBe("deployed");
    const plan = await kiln.plan({ spec: await loadSpec(path.join(dir, "kiln.yaml")) });
    expect(plan.noop).toBe(true);
    expect(plan.fingerprint).toBe(fromObject.release.fingerprint);
    await kiln.close();
  });
});
