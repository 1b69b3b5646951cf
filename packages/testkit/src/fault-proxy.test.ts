import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { isKilnError } from "@kilnjs/core";
import { startFaultProxy, type FaultProxy, type FaultProxyOptions } from "./fault-proxy.js";

/** A stand-in upstream on 127.0.0.1: answers `<ActionResponse>` and records what reached it. */
let upstream: Server;
let upstreamUrl: string;
const seen: { action: string; host: string | undefined; authorization: string | undefined; path: string | undefined }[] = [];

beforeAll(async () => {
  upstream = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (chunk: Buffer) => chunks.push(chunk));
    req.on("end", () => {
      const action = new URLSearchParams(Buffer.concat(chunks).toString("utf8")).get("Action") ?? "";
      seen.push({ action, host: req.headers.host, authorization: req.headers.authorization, path: req.url });
      res.writeHead(200, { "content-type": "text/xml", "x-upstream": "yes" });
      res.end(`<${action}Response><ok>true</ok></${action}Response>`);
    });
  });
  await new Promise<void>((resolve) => upstream.listen(0, "127.0.0.1", resolve));
  upstreamUrl = `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`;
});
afterAll(() => new Promise<void>((resolve) => upstream.close(() => resolve())));

let proxy: FaultProxy | undefined;
afterEach(async () => {
  await proxy?.close();
  proxy = undefined;
  seen.length = 0;
});

async function start(options: Omit<FaultProxyOptions, "upstream">): Promise<FaultProxy> {
  proxy = await startFaultProxy({ upstream: upstreamUrl, ...options });
  return proxy;
}

const EC2_AUTH = "AWS4-HMAC-SHA256 Credential=AKID/20260101/us-east-1/ec2/aws4_request, SignedHeaders=host, Signature=abc";
const ELB_AUTH = "AWS4-HMAC-SHA256 Credential=AKID/20260101/us-east-1/elasticloadbalancing/aws4_request, SignedHeaders=host, Signature=abc";

function call(url: string, action: string, extra: Record<string, string> = {}, authorization = EC2_AUTH): Promise<Response> {
  return fetch(`${url}/`, {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded; charset=utf-8", authorization },
    body: new URLSearchParams({ Action: action, Version: "2016-11-15", ...extra }).toString(),
  });
}

describe("startFaultProxy", () => {
  it("forwards requests untouched and counts them per action", async () => {
    const p = await start({});
    const answer = await call(p.url, "DescribeInstances");
    expect(answer.status).toBe(200);
    expect(answer.headers.get("x-upstream")).toBe("yes");
    expect(await answer.text()).toBe("<DescribeInstancesResponse><ok>true</ok></DescribeInstancesResponse>");
    await (await call(p.url, "DescribeInstances")).text();
    await (await call(p.url, "RunInstances", { ClientToken: "tok-1" })).text();
    expect(p.counts.received).toEqual({ DescribeInstances: 2, RunInstances: 1 });
    expect(p.counts.forwarded).toEqual({ DescribeInstances: 2, RunInstances: 1 });
    expect(p.counts.faults).toEqual({});
    // Headers reach the upstream as they came: the Host the client signed, the signature.
    expect(seen[0]).toMatchObject({ action: "DescribeInstances", host: new URL(p.url).host, authorization: EC2_AUTH, path: "/" });
    expect(p.requests[2]).toMatchObject({ action: "RunInstances", service: "ec2", params: { ClientToken: "tok-1" }, status: 200, upstreamStatus: 200 });
  });

  it("throttles EC2 with a 503 and EC2's RequestLimitExceeded document, without reaching the upstream", async () => {
    const p = await start({ faultRate: 1, faults: ["throttle"] });
    const answer = await call(p.url, "RunInstances");
    expect(answer.status).toBe(503);
    const body = await answer.text();
    expect(body).toMatch(/^<\?xml version="1.0" encoding="UTF-8"\?>\n<Response><Errors><Error><Code>RequestLimitExceeded<\/Code><Message>Request limit exceeded.<\/Message><\/Error><\/Errors><RequestID>[0-9a-f-]{36}<\/RequestID><\/Response>$/);
    expect(answer.headers.get("x-amzn-requestid")).toMatch(/^[0-9a-f-]{36}$/);
    expect(seen).toEqual([]);
    expect(p.counts).toEqual({ received: { RunInstances: 1 }, forwarded: {}, faults: { RunInstances: 1 }, faultsAfter: {} });
    expect(p.requests[0]).toMatchObject({ fault: { kind: "throttle", phase: "before" }, status: 503 });
    expect(p.requests[0]!.upstreamStatus).toBeUndefined();
  });

  it("throttles ELBv2 with a 400 Throttling ErrorResponse", async () => {
    const p = await start({ faultRate: 1, faults: ["throttle"] });
    const answer = await call(p.url, "RegisterTargets", {}, ELB_AUTH);
    expect(answer.status).toBe(400);
    expect(await answer.text()).toMatch(/^<ErrorResponse><Error><Type>Sender<\/Type><Code>Throttling<\/Code><Message>Rate exceeded<\/Message><\/Error><RequestId>[0-9a-f-]{36}<\/RequestId><\/ErrorResponse>$/);
    expect(p.requests[0]).toMatchObject({ service: "elasticloadbalancing", action: "RegisterTargets" });
  });

  it("answers a plain 503 Service Unavailable", async () => {
    const p = await start({ faultRate: 1, faults: ["unavailable"] });
    const answer = await call(p.url, "DescribeImages");
    expect(answer.status).toBe(503);
    expect(answer.headers.get("content-type")).toMatch(/^text\/plain/);
    expect(await answer.text()).toBe("Service Unavailable");
  });

  it("after-phase faults let the upstream do the work, then lose its answer", async () => {
    const p = await start({ faultRate: 1, phase: "after", faults: ["unavailable"] });
    const answer = await call(p.url, "RunInstances", { ClientToken: "tok-9" });
    expect(answer.status).toBe(503);
    await answer.text();
    expect(seen.map((s) => s.action)).toEqual(["RunInstances"]);
    expect(p.counts).toEqual({ received: { RunInstances: 1 }, forwarded: { RunInstances: 1 }, faults: { RunInstances: 1 }, faultsAfter: { RunInstances: 1 } });
    expect(p.requests[0]).toMatchObject({ fault: { kind: "unavailable", phase: "after" }, upstreamStatus: 200, status: 503 });
  });

  it("injects only into the actions named, and never into requests without an Action", async () => {
    const p = await start({ faultRate: 1, actions: ["RunInstances"] });
    expect((await call(p.url, "DescribeInstances")).status).toBe(200);
    expect((await call(p.url, "RunInstances")).status).not.toBe(200);
    const reset = await fetch(`${p.url}/moto-api/reset`, { method: "POST" });
    expect(reset.status).toBe(200);
    await reset.text();
    expect(p.counts.faults).toEqual({ RunInstances: 1 });
    expect(p.counts.forwarded).toEqual({ DescribeInstances: 1, "POST /moto-api/reset": 1 });
  });

  it("decide() picks exact faults, with the call number per action", async () => {
    const p = await start({ decide: (c) => (c.action === "RunInstances" && c.callNumber === 2 ? { kind: "throttle", phase: "after" } : undefined) });
    const statuses: number[] = [];
    for (let i = 0; i < 3; i++) {
      const answer = await call(p.url, "RunInstances", { ClientToken: "same" });
      await answer.text();
      statuses.push(answer.status);
    }
    expect(statuses).toEqual([200, 503, 200]);
    expect(p.counts.forwarded).toEqual({ RunInstances: 3 });
    expect(p.counts.faultsAfter).toEqual({ RunInstances: 1 });
  });

  it("is reproducible for a seed, and the rate roughly holds", async () => {
    const run = async (seed: number) => {
      const p = await startFaultProxy({ upstream: upstreamUrl, faultRate: 0.3, seed, phase: "mixed" });
      const outcome: string[] = [];
      for (let i = 0; i < 60; i++) {
        const answer = await call(p.url, "DescribeInstances");
        await answer.text();
        const fault = p.requests[i]!.fault;
        outcome.push(fault ? `${fault.kind}/${fault.phase}` : "ok");
      }
      await p.close();
      return outcome;
    };
    const first = await run(42);
    expect(await run(42)).toEqual(first);
    expect(await run(43)).not.toEqual(first);
    const faults = first.filter((o) => o !== "ok");
    expect(faults.length).toBeGreaterThan(5);
    expect(faults.length).toBeLessThan(35);
    expect(new Set(faults).size).toBeGreaterThan(1);
  });

  it("answers 502 when the upstream cannot be reached", async () => {
    const dead = createServer();
    await new Promise<void>((resolve) => dead.listen(0, "127.0.0.1", resolve));
    const port = (dead.address() as AddressInfo).port;
    await new Promise<void>((resolve) => dead.close(() => resolve()));
    proxy = await startFaultProxy({ upstream: `http://127.0.0.1:${port}` });
    const answer = await call(proxy.url, "DescribeInstances");
    expect(answer.status).toBe(502);
    expect(await answer.text()).toMatch(/upstream/);
    expect(proxy.counts.forwarded).toEqual({});
  });

  it("rejects bad options with INVALID_ARGUMENT, naming every problem", async () => {
    const error: unknown = await startFaultProxy({ upstream: "ftp://x", faultRate: 2, faults: [], seed: 1.5 }).catch((e: unknown) => e);
    expect(isKilnError(error) && error.code).toBe("INVALID_ARGUMENT");
    expect(String((error as Error).message)).toMatch(/upstream.*faultRate.*seed.*faults/);
  });

  it("close() is idempotent and frees the port", async () => {
    const p = await start({});
    await (await call(p.url, "DescribeInstances")).text();
    await Promise.all([p.close(), p.close()]);
    await expect(call(p.url, "DescribeInstances")).rejects.toThrow();
  });
});
