// The aws provider's health probe against moto: the EC2 status checks come from moto (through
// testkit's fault proxy, to count calls), the HTTP/TCP part goes to a server on 127.0.0.1 (moto's
// instance addresses are fake: the instances' endpoints are pointed at the local server).
import { randomBytes } from "node:crypto";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { StopInstancesCommand } from "@aws-sdk/client-ec2";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { silentLogger, type Instance, type ProviderContext, type ResolvedHttpCheck } from "@kilnjs/core";
import { motoEndpoint, requireMoto, startFaultProxy, type FaultProxy } from "@kilnjs/testkit";
import { AwsClients } from "./client.js";
import { createHealthCapability } from "./health.js";
import { createInstanceOperations } from "./instances.js";
import { resolveAwsOptions } from "./options.js";
import { MOTO_REGION, motoBaseImage, motoClient, removeService } from "./test-support.js";

const moto = await requireMoto();

function ctx(signal: AbortSignal = new AbortController().signal): ProviderContext {
  return { signal, logger: silentLogger, emit: () => undefined };
}

describe.skipIf(!moto)("aws health probe (moto)", () => {
  const endpoint = motoEndpoint();
  const ec2 = motoClient(endpoint);
  const service = `khealth-${randomBytes(3).toString("hex")}`;
  let proxy: FaultProxy;
  let clients: AwsClients;
  let server: http.Server;
  let port: number;
  let instances: Instance[];

  const check = (path: string): ResolvedHttpCheck => ({ kind: "http", portName: "http", path, expectStatus: [200, 299] });
  /** The instance with its endpoint on the local server instead of moto's fake address. */
  const local = (instance: Instance): Instance => ({ ...instance, endpoints: { http: { host: "127.0.0.1", port } } });

  beforeAll(async () => {
    server = http.createServer((request, response) => {
      response.statusCode = request.url === "/ok" ? 200 : 500;
      response.end();
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    port = (server.address() as AddressInfo).port;
    proxy = await startFaultProxy({ upstream: endpoint });
    clients = new AwsClients(resolveAwsOptions({ endpoint: proxy.url, region: MOTO_REGION, credentials: { accessKeyId: "testing", secretAccessKey: "testing" }, pollIntervalMs: 20 }));
    const imageId = (await motoBaseImage(ec2)).id;
    instances = await createInstanceOperations(clients).launch(
      {
        target: { service, environment: "test" },
        release: 1,
        rolloutId: "ro-health",
        idempotencyKey: `ro-health:launch:${randomBytes(4).toString("hex")}`,
        image: { id: imageId, fingerprint: `sha256:${"c".repeat(64)}`, digest: imageId, names: [] },
        config: { ports: [{ name: "http", port: 8080, protocol: "tcp" }], env: {}, labels: {}, stopGracePeriodMs: 1000 },
        count: 4,
      },
      ctx(),
    );
  });

  afterAll(async () => {
    await removeService(ec2, service);
    await clients.close();
    await proxy.close();
    ec2.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  it("reads the status checks of a round's probes in one call, then probes HTTP", async () => {
    const health = createHealthCapability(clients);
    const before = proxy.counts.received.DescribeInstanceStatus ?? 0;
    const context = ctx();
    const results = await Promise.all(instances.map((instance) => health.probe(local(instance), check("/ok"), 2000, context)));
    expect(results).toEqual(instances.map(() => ({ ok: true })));
    expect(proxy.counts.received.DescribeInstanceStatus! - before).toBe(1);
    const call = proxy.requests.findLast((request) => request.action === "DescribeInstanceStatus")!;
    expect(call.params.IncludeAllInstances).toBe("true");
    expect(Object.keys(call.params).filter((key) => key.startsWith("InstanceId."))).toHaveLength(4);

    const failing = await health.probe(local(instances[0]!), check("/broken"), 2000, context);
    expect(failing).toEqual({ ok: false, reason: "GET /broken answered 500, expected 200-299" });
  });

  it("fails a stopped instance and one EC2 does not know, without probing their ports", async () => {
    await ec2.send(new StopInstancesCommand({ InstanceIds: [instances[3]!.id] }));
    const health = createHealthCapability(clients);
    const context = ctx();
    const ghost = { ...instances[0]!, id: "i-0123456789abcdef0" };
    const [running, stopped, unknown] = await Promise.all([
      health.probe(local(instances[0]!), check("/ok"), 2000, context),
      health.probe(local(instances[3]!), check("/ok"), 2000, context),
      health.probe(local(ghost), check("/ok"), 2000, context),
    ]);
    expect(running).toEqual({ ok: true });
    expect(stopped).toEqual({ ok: false, reason: `EC2 instance ${instances[3]!.id} is stopped` });
    expect(unknown).toEqual({ ok: false, reason: expect.stringContaining("EC2 does not know instance i-0123456789abcdef0") as string });
  });
});
