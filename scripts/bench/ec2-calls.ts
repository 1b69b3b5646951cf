/**
 * The EC2 API calls Kiln makes to replace 50 instances, counted by action, against moto (the EC2
 * emulator), and the wall time of that deploy.
 *
 * Release 1 (50 instances, rolling, maxSurge 10) is deployed first and not measured. Then the
 * recipe changes and release 2 replaces all 50: that deploy goes through a counting proxy
 * (testkit's fault proxy with no faults) and its calls are printed by action, with calls per
 * replaced instance. The bake of release 2 is part of it (one builder, one AMI); moto plays no
 * builder, so a player stops it through the API (its own calls are not counted: it talks to moto
 * directly). Health: the provider's EC2 status checks only (moto's instance addresses are not
 * reachable), one probe round per batch.
 *
 * Needs moto at AWS_ENDPOINT_URL_EC2 (bash scripts/moto.sh start); when none answers, prints a
 * notice and returns.
 */
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { createKiln, type SpecInput } from "@kilnjs/core";
import { createAwsProvider } from "@kilnjs/provider-aws";
import { motoAvailable, motoEndpoint, startFaultProxy } from "@kilnjs/testkit";
import { motoBaseImage, motoClient, playBuilders, removeService, MOTO_REGION } from "../../packages/provider-aws/src/test-support.js";

const COUNT = 50;
const SURGE = 10;

export async function run(): Promise<void> {
  const endpoint = motoEndpoint();
  if (!(await motoAvailable(endpoint))) {
    process.stdout.write(`no moto at ${endpoint}: skipped (bash scripts/moto.sh start, then export what it prints)\n`);
    return;
  }
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = "true";
  const client = motoClient(endpoint);
  const dir = await mkdtemp(path.join(os.tmpdir(), "kiln-bench-ec2-"));
  const service = `bench-ec2-${Date.now().toString(36)}`;
  const player = playBuilders(client, { intervalMs: 20 });
  const proxy = await startFaultProxy({ upstream: endpoint });
  try {
    await mkdir(path.join(dir, "dist"));
    const base = await motoBaseImage(client);
    const spec: SpecInput = {
      service,
      provider: "aws",
      image: { machine: { provision: [{ file: { from: "dist", to: "/opt/app" } }], base: { aws: { id: base.id } } } },
      instances: { count: COUNT, ports: [{ name: "http", port: 8080 }] },
      health: { intervalMs: 100, healthyThreshold: 1 },
      rollout: { strategy: "rolling", maxSurge: SURGE, maxUnavailable: 0 },
    };
    const kiln = createKiln({
      providers: { aws: () => createAwsProvider({ endpoint: proxy.url, region: MOTO_REGION, credentials: { accessKeyId: "testing", secretAccessKey: "testing" }, pollIntervalMs: 50 }) },
      dataDir: path.join(dir, ".kiln"),
    });
    await writeFile(path.join(dir, "dist", "app.js"), "v1\n");
    const first = await kiln.deploy({ spec, baseDir: dir });
    if (first.outcome !== "deployed") throw new Error(`release 1: ${first.outcome}`);

    await writeFile(path.join(dir, "dist", "app.js"), "v2\n");
    const before = { ...proxy.counts.forwarded };
    const started = performance.now();
    const second = await kiln.deploy({ spec, baseDir: dir });
    const ms = performance.now() - started;
    if (second.outcome !== "deployed") throw new Error(`release 2: ${second.outcome}`);

    const calls = Object.entries(proxy.counts.forwarded)
      .map(([action, total]) => [action, total - (before[action] ?? 0)] as const)
      .filter(([, count]) => count > 0)
      .sort((a, b) => b[1] - a[1]);
    const total = calls.reduce((sum, [, count]) => sum + count, 0);
    process.stdout.write(`replace ${COUNT} instances (rolling, maxSurge ${SURGE}), bake included, against moto: ${(ms / 1000).toFixed(1)} s wall\n`);
    for (const [action, count] of calls) process.stdout.write(`  ${action.padEnd(34)} ${String(count).padStart(5)}\n`);
    process.stdout.write(`  ${"total".padEnd(34)} ${String(total).padStart(5)}\n`);
    process.stdout.write(`calls per replaced instance: ${(total / COUNT).toFixed(2)}\n`);
  } finally {
    await player.stop();
    await proxy.close();
    await removeService(client, service).catch(() => undefined);
    client.destroy();
    await rm(dir, { recursive: true, force: true });
  }
}
