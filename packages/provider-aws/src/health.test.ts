// Unit tests of the aws provider's health probe against a scripted EC2 client (moto's status checks
// are always "ok": impaired and initializing statuses are played here), with the HTTP/TCP part
// against servers on 127.0.0.1.
import http from "node:http";
import net from "node:net";
import type { AddressInfo } from "node:net";
import * as ec2Sdk from "@aws-sdk/client-ec2";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { silentLogger, type ProviderContext, type ResolvedHttpCheck } from "@kilnjs/core";
import type { AwsClients } from "./client.js";
import { COMMAND_CHECK_UNSUPPORTED, createHealthCapability, judgeInstanceStatus } from "./health.js";
import { fakeInstance } from "./test-support.js";

function ctx(signal: AbortSignal = new AbortController().signal): ProviderContext {
  return { signal, logger: silentLogger, emit: () => undefined };
}

type Status = ec2Sdk.InstanceStatus;

function status(id: string, state: string, system = "ok", instance = "ok"): Status {
  return {
    InstanceId: id,
    InstanceState: { Name: state as ec2Sdk.InstanceStateName, Code: 16 },
    SystemStatus: { Status: system as ec2Sdk.SummaryStatus, Details: [{ Name: "reachability", Status: system === "impaired" ? "failed" : "passed" }] },
    InstanceStatus: { Status: instance as ec2Sdk.SummaryStatus, Details: [{ Name: "reachability", Status: instance === "impaired" ? "failed" : "passed", ...(instance === "impaired" ? { ImpairedSince: new Date("2026-01-01T00:00:00Z") } : {}) }] },
  };
}

function fakeClients(statuses: Map<string, Status>, known: Set<string> = new Set(statuses.keys())) {
  const calls: Array<{ name: string; input: Record<string, unknown> }> = [];
  const client = {
    send: async (command: { input: Record<string, unknown> }, options?: { abortSignal?: AbortSignal }) => {
      const name = command.constructor.name.replace(/Command$/, "");
      calls.push({ name, input: command.input });
      if (options?.abortSignal?.aborted) throw Object.assign(new Error("Request aborted"), { name: "AbortError" });
      if (name === "DescribeInstanceStatus") {
        const ids = command.input.InstanceIds as string[];
        const missing = ids.filter((id) => !known.has(id));
        if (missing.length > 0) throw Object.assign(new Error(`The instance ID '${missing[0]}' does not exist`), { name: "InvalidInstanceID.NotFound", Code: "InvalidInstanceID.NotFound" });
        return { InstanceStatuses: ids.map((id) => statuses.get(id)).filter(Boolean) };
      }
      if (name === "DescribeInstances") {
        const ids = (command.input.Filters as Array<{ Values: string[] }>)[0]!.Values;
        return { Reservations: [{ Instances: ids.filter((id) => known.has(id)).map((id) => ({ InstanceId: id })) }] };
      }
      throw new Error(`unexpected call ${name}`);
    },
  };
  const clients = {
    options: { endpoint: "http://127.0.0.1:1", pollIntervalMs: 10, instanceTimeoutMs: 1000 },
    ec2: async () => ({ sdk: ec2Sdk, client }),
  } as unknown as AwsClients;
  return { clients, calls, count: (name: string) => calls.filter((call) => call.name === name).length };
}

const instance = fakeInstance;

const httpCheck = (path = "/health"): ResolvedHttpCheck => ({ kind: "http", portName: "http", path, expectStatus: [200, 299] });

let server: http.Server;
let port: number;
let closedPort: number;

beforeAll(async () => {
  server = http.createServer((request, response) => {
    response.statusCode = request.url === "/health" ? 200 : 503;
    response.end("hi");
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  port = (server.address() as AddressInfo).port;
  // A port nothing listens on: take one, then free it.
  const probe = net.createServer();
  await new Promise<void>((resolve) => probe.listen(0, "127.0.0.1", resolve));
  closedPort = (probe.address() as AddressInfo).port;
  await new Promise<void>((resolve) => probe.close(() => resolve()));
});

afterAll(async () => {
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

describe("judgeInstanceStatus", () => {
  it("fails an instance that is not running, unknown or impaired, with EC2's details", () => {
    expect(judgeInstanceStatus("i-1", undefined)).toEqual({ ok: false, reason: expect.stringContaining("EC2 does not know instance i-1") as string });
    expect(judgeInstanceStatus("i-1", status("i-1", "pending", "not-applicable", "not-applicable"))).toEqual({ ok: false, reason: "EC2 instance i-1 is pending" });
    const impaired = judgeInstanceStatus("i-1", status("i-1", "running", "ok", "impaired"));
    expect(impaired).toEqual({ ok: false, reason: "EC2 instance status check impaired (reachability failed since 2026-01-01T00:00:00.000Z) on i-1" });
    expect(judgeInstanceStatus("i-1", { ...status("i-1", "running"), AttachedEbsStatus: { Status: "impaired" } })).toMatchObject({ ok: false, reason: expect.stringContaining("attached EBS status check impaired") as string });
  });

  it("passes ok and initializing statuses, saying which", () => {
    expect(judgeInstanceStatus("i-1", status("i-1", "running"))).toEqual({ ok: true, initializing: false });
    expect(judgeInstanceStatus("i-1", status("i-1", "running", "initializing", "initializing"))).toEqual({ ok: true, initializing: true });
    expect(judgeInstanceStatus("i-1", status("i-1", "running", "ok", "insufficient-data"))).toEqual({ ok: true, initializing: true });
  });
});

describe("probe", () => {
  it("coalesces concurrent probes into one DescribeInstanceStatus call", async () => {
    const ids = ["i-1", "i-2", "i-3", "i-4", "i-5"];
    const { clients, calls } = fakeClients(new Map(ids.map((id) => [id, status(id, "running")])));
    const health = createHealthCapability(clients);
    const context = ctx();
    const results = await Promise.all(ids.map((id) => health.probe(instance(id, port), httpCheck(), 2000, context)));
    expect(results).toEqual(ids.map(() => ({ ok: true })));
    expect(calls.map((call) => call.name)).toEqual(["DescribeInstanceStatus"]);
    expect(calls[0]!.input).toEqual({ InstanceIds: ids, IncludeAllInstances: true });
    // The next round makes its own call.
    await health.probe(instance("i-1", port), httpCheck(), 2000, context);
    expect(calls).toHaveLength(2);
  });

  it("leaves out instances EC2 does not know and still answers for the others", async () => {
    const { clients, calls } = fakeClients(new Map([["i-1", status("i-1", "running")]]));
    const health = createHealthCapability(clients);
    const context = ctx();
    const [known, gone] = await Promise.all([health.probe(instance("i-1", port), httpCheck(), 2000, context), health.probe(instance("i-gone", port), httpCheck(), 2000, context)]);
    expect(known).toEqual({ ok: true });
    expect(gone).toEqual({ ok: false, reason: expect.stringContaining("EC2 does not know instance i-gone") as string });
    expect(calls.map((call) => call.name)).toEqual(["DescribeInstanceStatus", "DescribeInstances", "DescribeInstanceStatus"]);
    expect(calls[2]!.input.InstanceIds).toEqual(["i-1"]);
  });

  it("fails an impaired instance without probing its port", async () => {
    const { clients } = fakeClients(new Map([["i-1", status("i-1", "running", "impaired", "ok")]]));
    const result = await createHealthCapability(clients).probe(instance("i-1", closedPort), httpCheck(), 2000, ctx());
    expect(result).toEqual({ ok: false, reason: expect.stringContaining("EC2 system status check impaired (reachability failed)") as string });
  });

  it("counts initializing status checks as passing when the HTTP check passes, and says so when it fails", async () => {
    const { clients } = fakeClients(new Map([["i-1", status("i-1", "running", "initializing", "initializing")]]));
    const health = createHealthCapability(clients);
    expect(await health.probe(instance("i-1", port), httpCheck(), 2000, ctx())).toEqual({ ok: true });
    const failing = await health.probe(instance("i-1", port), httpCheck("/broken"), 2000, ctx());
    expect(failing).toEqual({ ok: false, reason: "GET /broken answered 503, expected 200-299 (EC2 status checks are still initializing)" });
  });

  it("probes TCP, and fails a port without an address", async () => {
    const { clients } = fakeClients(new Map([["i-1", status("i-1", "running")]]));
    const health = createHealthCapability(clients);
    expect(await health.probe(instance("i-1", port), { kind: "tcp", portName: "http" }, 2000, ctx())).toEqual({ ok: true });
    expect(await health.probe(instance("i-1", closedPort), { kind: "tcp", portName: "http" }, 2000, ctx())).toMatchObject({ ok: false });
    expect(await health.probe(instance("i-1"), httpCheck(), 2000, ctx())).toEqual({ ok: false, reason: expect.stringContaining('port "http" has no address') as string });
  });

  it("fails a command check at once, without a call", async () => {
    const { clients, calls } = fakeClients(new Map());
    const result = await createHealthCapability(clients).probe(instance("i-1"), { kind: "command", command: ["true"] }, 2000, ctx());
    expect(result).toEqual({ ok: false, reason: COMMAND_CHECK_UNSUPPORTED });
    expect(calls).toEqual([]);
  });

  it("with no check, passes a running instance that is not impaired", async () => {
    const { clients } = fakeClients(new Map([["i-1", status("i-1", "running", "initializing", "ok")]]));
    const health = createHealthCapability(clients);
    expect(await health.probe(instance("i-1"), undefined, 2000, ctx())).toEqual({ ok: true });
    const impaired = fakeClients(new Map([["i-1", status("i-1", "running", "impaired", "ok")]]));
    expect(await createHealthCapability(impaired.clients).probe(instance("i-1"), undefined, 2000, ctx())).toMatchObject({ ok: false });
  });

  it("throws ABORTED for a cancelled probe, before any call", async () => {
    const { clients, calls } = fakeClients(new Map([["i-1", status("i-1", "running")]]));
    const controller = new AbortController();
    controller.abort();
    await expect(createHealthCapability(clients).probe(instance("i-1", port), httpCheck(), 2000, ctx(controller.signal))).rejects.toMatchObject({ code: "ABORTED" });
    // Cancelled while the probes wait for their window.
    const later = new AbortController();
    const pending = createHealthCapability(clients).probe(instance("i-1", port), httpCheck(), 2000, ctx(later.signal));
    later.abort();
    await expect(pending).rejects.toMatchObject({ code: "ABORTED" });
    expect(calls).toEqual([]);
  });
});
