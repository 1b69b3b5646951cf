// An interrupted bake: `kiln deploy` (the CLI, with the aws provider, against moto) is killed with
// SIGKILL once its builder instance runs, so nothing of Kiln gets to clean up. The next deploy of
// the target removes the builder it left, bakes, and deploys; nothing of the bake stays behind.
import { spawn } from "node:child_process";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { DescribeInstancesCommand } from "@aws-sdk/client-ec2";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LABELS, waitFor } from "@kilnjs/core";
import { motoEndpoint, requireMoto } from "@kilnjs/testkit";
import { AWS_TAGS } from "./tags.js";
import { liveInstances, motoBaseImage, motoClient, motoEnvironment, playBuilders, removeService, serviceImages } from "./test-support.js";

const moto = await requireMoto();
const KILN_BIN = fileURLToPath(new URL("../../cli/dist/bin.js", import.meta.url));

describe.skipIf(!moto)("an interrupted bake (moto)", () => {
  const endpoint = motoEndpoint();
  const client = motoClient(endpoint);
  const service = `bake-kill-${Date.now().toString(36)}`;
  let dir: string;

  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "kiln-aws-interrupt-"));
    await mkdir(path.join(dir, "dist"));
    await writeFile(path.join(dir, "dist", "server.js"), "console.log('hello')\n");
    const base = await motoBaseImage(client);
    await writeFile(
      path.join(dir, "kiln.yaml"),
      [
        `service: ${service}`,
        "provider: aws",
        "image:",
        "  machine:",
        "    provision:",
        "      - file: { from: dist, to: /opt/app }",
        `    base: { aws: { id: ${base.id} } }`,
        "    timeoutMs: 120000",
        "instances:",
        "  count: 1",
        "  ports: [{ name: http, port: 8080 }]",
        "health: { intervalMs: 100, healthyThreshold: 1 }",
        "",
      ].join("\n"),
    );
  });

  afterAll(async () => {
    await removeService(client, service);
    client.destroy();
    await rm(dir, { recursive: true, force: true });
  });

  function runKiln(args: string[]) {
    const child = spawn(process.execPath, [KILN_BIN, ...args], { cwd: dir, env: { ...process.env, ...motoEnvironment(endpoint), NO_COLOR: "1" }, stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => (output += chunk));
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => (output += chunk));
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on("close", (code, signal) => resolve({ code, signal })));
    return { child, exited, output: () => output };
  }

  it("leaves nothing behind after the next run", async () => {
    // No one plays the builder yet, so the bake waits for it to power off: kill it there.
    const first = runKiln(["deploy"]);
    const builder = await waitFor(
      async () => {
        const found = await liveInstances(client, { [LABELS.service]: service, [AWS_TAGS.role]: "builder" });
        return found[0] ? { done: true, value: found[0] } : { done: false, reason: `no builder yet; kiln said: ${first.output().slice(-300)}` };
      },
      { timeoutMs: 60_000, minDelayMs: 50, maxDelayMs: 200, description: "the bake's builder to start" },
    );
    expect(builder.tags[AWS_TAGS.expires]).toMatch(/^\d{4}-\d\d-\d\dT/);
    first.child.kill("SIGKILL");
    expect((await first.exited).signal).toBe("SIGKILL");
    expect((await liveInstances(client, { [LABELS.service]: service, [AWS_TAGS.role]: "builder" })).map((instance) => instance.id)).toEqual([builder.id]);

    const player = playBuilders(client, { owns: (name) => name === service });
    try {
      const second = runKiln(["deploy"]);
      const { code } = await second.exited;
      expect(code, second.output()).toBe(0);
    } finally {
      await player.stop();
    }

    expect(await liveInstances(client, { [LABELS.service]: service, [AWS_TAGS.role]: "builder" })).toEqual([]);
    const killed = await client.send(new DescribeInstancesCommand({ InstanceIds: [builder.id] }));
    expect(killed.Reservations?.[0]?.Instances?.[0]?.State?.Name).toBe("terminated");
    const images = await serviceImages(client, service);
    expect(images).toHaveLength(1);
    const running = (await liveInstances(client, { [LABELS.service]: service })).filter((instance) => instance.tags[AWS_TAGS.role] !== "builder");
    expect(running).toHaveLength(1);
    expect(running[0]!.imageId).toBe(images[0]!.id);
  });
});
