// The builder's provisioning script, run for real: in a busybox container on the local Docker
// engine (the same POSIX tools a VM's cloud-init runs it with), with `poweroff` replaced by a
// shell function that leaves a marker, so the container survives to be inspected.
import { chmod, mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { PassThrough } from "node:stream";
import Docker from "dockerode";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fingerprintMachine, type MachineRecipe } from "@kilnjs/core";
import { requireDockerEngine } from "@kilnjs/testkit";
import { RESULT_MARKER, renderProvisionScript } from "./user-data.js";

const engine = await requireDockerEngine();
const BASE_IMAGE = "kiln-local/busybox:latest";

describe.skipIf(!engine)("the provisioning script in a container", () => {
  const docker = new Docker(process.env.DOCKER_HOST?.startsWith("unix://") ? { socketPath: process.env.DOCKER_HOST.slice("unix://".length) } : undefined);
  let dir: string;

  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "kiln-user-data-"));
    await mkdir(path.join(dir, "dist", "public"), { recursive: true });
    await writeFile(path.join(dir, "dist", "server.js"), "console.log('hello')\n");
    await writeFile(path.join(dir, "dist", "public", "index.html"), "<h1>it's here</h1>\n");
    await writeFile(path.join(dir, "dist", "start.sh"), "#!/bin/sh\nexec node server.js\n");
    await chmod(path.join(dir, "dist", "start.sh"), 0o755);
    await writeFile(path.join(dir, "app.conf"), "port=8080\n");
    await writeFile(path.join(dir, "install.sh"), "set -e\necho installing\nmkdir -p /etc/app && echo installed > /etc/app/installed\n");
  });
  afterAll(() => rm(dir, { recursive: true, force: true }));

  async function recipeOf(steps: Parameters<typeof fingerprintMachine>[0]["steps"]): Promise<MachineRecipe> {
    const fingerprinted = await fingerprintMachine({ steps, provider: "aws" });
    return { kind: "machine", steps: fingerprinted.steps, base: {}, builder: { instanceType: "t3.micro", securityGroupIds: [], amiName: "x-{fingerprint}" }, timeoutMs: 60_000 };
  }

  /** Runs the script with `sh` in a busybox container, then `inspect` there; returns everything printed. */
  async function runInContainer(script: string, inspect: string): Promise<{ output: string; exitCode: number }> {
    const file = path.join(dir, `script-${Date.now()}.sh`);
    await writeFile(file, script);
    // busybox's sh runs its own applets before PATH, so the stand-in is a shell function, which
    // wins over both; the script is sourced by that shell.
    const shim = "poweroff() { echo powered-off > /tmp/poweroff; }";
    const output = new PassThrough();
    const chunks: Buffer[] = [];
    output.on("data", (chunk: Buffer) => chunks.push(chunk));
    const [result] = (await docker.run(BASE_IMAGE, ["sh", "-c", `${shim}; . /kiln.sh; ${inspect}`], output, {
      HostConfig: { Binds: [`${file}:/kiln.sh:ro`], AutoRemove: true },
      Tty: true,
    })) as [{ StatusCode: number }];
    return { output: Buffer.concat(chunks).toString("utf8"), exitCode: result.StatusCode };
  }

  it("copies folders and files, runs scripts and commands in order, reports status 0 and powers off", async () => {
    const recipe = await recipeOf([
      { kind: "file", from: path.join(dir, "dist"), to: "/opt/app" },
      { kind: "file", from: path.join(dir, "app.conf"), to: "/etc/app/app.conf" },
      { kind: "shell", script: path.join(dir, "install.sh") },
      { kind: "run", command: "echo \"it's $(cat /etc/app/installed)\" > /opt/app/status" },
    ]);
    const { script, bytes } = await renderProvisionScript(recipe, { service: "web", fingerprint: "sha256:" + "a".repeat(64) });
    expect(bytes).toBeLessThan(16 * 1024);
    const { output } = await runInContainer(
      script,
      "cat /opt/app/public/index.html /etc/app/app.conf /opt/app/status /tmp/poweroff; ls -l /opt/app/start.sh; test -e /var/lib/kiln-bake && echo payload-left || echo payload-removed; grep -c 'kiln: step' /var/log/kiln-provision.log",
    );
    expect(output).toContain(`${RESULT_MARKER} status=0`);
    expect(output).toContain("<h1>it's here</h1>");
    expect(output).toContain("port=8080");
    expect(output).toContain("it's installed");
    expect(output).toContain("powered-off");
    expect(output).toMatch(/-rwxr-xr-x.*start\.sh/);
    expect(output).toContain("payload-removed");
    expect(output).toMatch(/^4\s*$/m);
  });

  it("stops at the first failing step and reports its exit status", async () => {
    const recipe = await recipeOf([
      { kind: "run", command: "exit 7" },
      { kind: "run", command: "echo never > /tmp/never" },
    ]);
    const { script } = await renderProvisionScript(recipe, { service: "web", fingerprint: "sha256:" + "b".repeat(64) });
    const { output } = await runInContainer(script, "cat /tmp/poweroff; test -e /tmp/never && echo ran-on || echo stopped");
    expect(output).toContain(`${RESULT_MARKER} status=7`);
    expect(output).toContain("stopped");
    expect(output).toContain("powered-off");
  });
});

describe("renderProvisionScript limits", () => {
  it("refuses steps that do not fit EC2's 16 KB of user data, saying what to do", async () => {
    const dir = await mkdtemp(path.join(tmpdir(), "kiln-user-data-big-"));
    try {
      const { randomBytes } = await import("node:crypto");
      await writeFile(path.join(dir, "blob.bin"), randomBytes(20_000));
      const fingerprinted = await fingerprintMachine({ steps: [{ kind: "file", from: path.join(dir, "blob.bin"), to: "/opt/blob" }], provider: "aws" });
      const recipe: MachineRecipe = { kind: "machine", steps: fingerprinted.steps, base: {}, builder: { instanceType: "t3.micro", securityGroupIds: [], amiName: "x-{fingerprint}" }, timeoutMs: 60_000 };
      await expect(renderProvisionScript(recipe, { service: "web", fingerprint: "sha256:" + "c".repeat(64) })).rejects.toMatchObject({
        code: "BUILD_CONTEXT_INVALID",
        message: expect.stringContaining("at most 16384") as unknown,
      });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
