import { chmod, mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { ResolvedProvisionStep } from "../spec/resolve.js";
import { fingerprintMachine } from "./machine.js";

describe("fingerprintMachine", () => {
  let dir: string;
  let steps: ResolvedProvisionStep[];
  // What a VM provider's spec adds (`ProviderSpec.fingerprint`): its base image as written.
  const base = { provider: "vm", contribution: { inputs: { base: { family: "debian-12", project: "debian-cloud" } }, baseImages: ["vm: debian-12 (debian-cloud)"] } };

  beforeEach(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "kiln-machine-"));
    await mkdir(path.join(dir, "dist", "lib"), { recursive: true });
    await writeFile(path.join(dir, "dist", "server.js"), "console.log('v1')\n");
    await writeFile(path.join(dir, "dist", "lib", "util.js"), "export {}\n");
    await writeFile(path.join(dir, "install.sh"), "apt-get install -y nodejs\n");
    steps = [
      { kind: "file", from: path.join(dir, "dist"), to: "/opt/app" },
      { kind: "shell", script: path.join(dir, "install.sh") },
      { kind: "run", command: "systemctl enable app" },
    ];
  });
  afterEach(() => rm(dir, { recursive: true, force: true }));

  it("lists each file step's files and gives the same fingerprint for the same inputs", async () => {
    const first = await fingerprintMachine({ steps, ...base });
    expect(first.fingerprint).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(first.steps[0]).toEqual({ kind: "file", from: path.join(dir, "dist"), to: "/opt/app", directory: true, files: ["lib/util.js", "server.js"] });
    expect(first.fileCount).toBe(3);
    expect(first.baseImages).toEqual(["vm: debian-12 (debian-cloud)"]);
    // Key order of the provider's inputs does not matter.
    const reordered = { ...base, contribution: { inputs: { base: { project: "debian-cloud", family: "debian-12" } } } };
    expect((await fingerprintMachine({ steps, ...reordered })).fingerprint).toBe(first.fingerprint);
  });

  it("changes with a file's content, its executable bit, a script, a command, the destination, the base and the provider", async () => {
    const before = (await fingerprintMachine({ steps, ...base })).fingerprint;
    const seen = new Set([before]);
    const expectNew = async (label: string, run: () => Promise<unknown>, options: Parameters<typeof fingerprintMachine>[0] = { steps, ...base }) => {
      await run();
      const after = (await fingerprintMachine(options)).fingerprint;
      expect(seen.has(after), label).toBe(false);
      seen.add(after);
    };
    await expectNew("content", () => writeFile(path.join(dir, "dist", "server.js"), "console.log('v2')\n"));
    await expectNew("mode", () => chmod(path.join(dir, "dist", "server.js"), 0o755));
    await expectNew("script", () => writeFile(path.join(dir, "install.sh"), "apt-get install -y nodejs curl\n"));
    const moved: ResolvedProvisionStep[] = [{ ...steps[0]!, to: "/srv/app" } as ResolvedProvisionStep, steps[1]!, steps[2]!];
    await expectNew("destination", async () => undefined, { steps: moved, ...base });
    await expectNew("command", async () => undefined, { steps: [...steps.slice(0, 2), { kind: "run", command: "true" }], ...base });
    await expectNew("base", async () => undefined, { steps, provider: "vm", contribution: { inputs: { base: { image: "debian-12-v20261101" } } } });
    await expectNew("provider", async () => undefined, { steps, ...base, provider: "other-vm" });
    await expectNew("base section", async () => undefined, { steps, provider: "vm", base: { family: "debian-12" } });
    await expectNew("base section's value", async () => undefined, { steps, provider: "vm", base: { family: "debian-13" } });
  });

  it("keeps the fingerprints Kiln computed before providers owned their sections, so nothing is baked again after an upgrade", async () => {
    // Fingerprints computed by the release before (commit 3185eb5, core's own `base.aws`), for a
    // shell script with this content and one command; the base is the provider's section as written.
    await writeFile(path.join(dir, "setup.sh"), "#!/bin/sh\necho hi\n");
    const recipe: ResolvedProvisionStep[] = [
      { kind: "run", command: "apt-get install -y nginx" },
      { kind: "shell", script: path.join(dir, "setup.sh") },
    ];
    const earlier = async (base?: unknown) => (await fingerprintMachine({ steps: recipe, provider: "aws", ...(base === undefined ? {} : { base }) })).fingerprint;
    expect(await earlier({ id: "ami-0123456789abcdef0" })).toBe("sha256:95e41e5995883e840845a927a84383178aba0e82e8b4061fd956a5c3c370dfbd");
    expect(await earlier({ name: "debian-12-*", owners: ["136693071363"] })).toBe("sha256:b11096b745d6d3507b4cfc378a736c5240460ce7a0952300dc6159243c6a18fc");
    expect(await earlier()).toBe("sha256:51c1809672a5d21ef74b7b426aa822b0167884926a7ceb1e5f3a8cb32da677b3");
  });

  it("does not depend on where the spec's folder lies on this machine", async () => {
    const other = await mkdtemp(path.join(tmpdir(), "kiln-machine-other-"));
    try {
      await mkdir(path.join(other, "dist", "lib"), { recursive: true });
      await writeFile(path.join(other, "dist", "server.js"), "console.log('v1')\n");
      await writeFile(path.join(other, "dist", "lib", "util.js"), "export {}\n");
      await writeFile(path.join(other, "install.sh"), "apt-get install -y nodejs\n");
      const moved = steps.map((step) =>
        step.kind === "file" ? { ...step, from: path.join(other, "dist") } : step.kind === "shell" ? { ...step, script: path.join(other, "install.sh") } : step,
      );
      expect((await fingerprintMachine({ steps: moved, ...base })).fingerprint).toBe((await fingerprintMachine({ steps, ...base })).fingerprint);
    } finally {
      await rm(other, { recursive: true, force: true });
    }
  });

  it("keeps excluded paths out and reports a missing source as BUILD_CONTEXT_INVALID with the step", async () => {
    const withExcluded = await fingerprintMachine({ steps, ...base, exclude: [path.join(dir, "dist", "lib")] });
    expect(withExcluded.steps[0]).toMatchObject({ files: ["server.js"] });
    await expect(fingerprintMachine({ steps: [{ kind: "shell", script: path.join(dir, "missing.sh") }], ...base })).rejects.toMatchObject({
      code: "BUILD_CONTEXT_INVALID",
      message: expect.stringContaining("image.machine.provision[0]") as unknown,
    });
  });
});

describe("fingerprintMachine's context guard", () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "kiln-machine-guard-"));
    await mkdir(path.join(dir, "dist", "config"), { recursive: true });
    await writeFile(path.join(dir, "dist", "server.js"), "console.log('v1')\n");
    await writeFile(path.join(dir, "dist", "config", ".env"), "DB_PASSWORD=hunter2\n");
    await writeFile(path.join(dir, "deploy.pem"), "-----BEGIN PRIVATE KEY-----\n");
  });
  afterEach(() => rm(dir, { recursive: true, force: true }));

  const steps = (): ResolvedProvisionStep[] => [
    { kind: "file", from: path.join(dir, "dist"), to: "/opt/app" },
    { kind: "file", from: path.join(dir, "deploy.pem"), to: "/etc/app/tls.pem" },
  ];

  it("refuses file steps that would copy files that look like secrets, with paths relative to the spec's folder", async () => {
    const error = await fingerprintMachine({ steps: steps(), provider: "vm", specDir: dir }).catch((caught: unknown) => caught);
    expect(error).toMatchObject({
      code: "SECRET_FILES_IN_CONTEXT",
      details: { files: [{ path: "deploy.pem" }, { path: "dist/config/.env" }], specDir: dir },
    });
    expect((error as Error).message).not.toContain("hunter2");
  });

  it("copies them when the spec allows them by path", async () => {
    const result = await fingerprintMachine({ steps: steps(), provider: "vm", specDir: dir, allowSecretFiles: ["dist/config/.env", "*.pem"] });
    expect(result.steps[0]).toMatchObject({ files: ["config/.env", "server.js"] });
  });
});
