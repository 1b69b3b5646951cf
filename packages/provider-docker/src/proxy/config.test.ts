import { describe, expect, it } from "vitest";
import type { ResolvedHealth, ResolvedProxy } from "@kilnjs/core";
import { PROXY_SLOTS, legacyTargetNetworkName, parseConfig, proxyContainerName, proxySettings, renderConfig, sameSettings, statusPattern, targetNetworkName, type ProxySlot } from "./config.js";
import { readFileFromTar, tarOneFile } from "./tar.js";
import { containerCreateOptions } from "../instances.js";
import { resolveOptions } from "../options.js";

const target = { service: "web", environment: "prod" };
const proxy: ResolvedProxy = { host: "127.0.0.1", port: 8080, portName: "http", retries: 2 };
const health: ResolvedHealth = {
  check: { kind: "http", portName: "http", path: "/healthz", expectStatus: [200, 399] },
  intervalMs: 2_000,
  timeoutMs: 1_500,
  healthyThreshold: 3,
  unhealthyThreshold: 2,
  startPeriodMs: 0,
  stabilityWindowMs: 0,
  deadlineMs: 60_000,
  deadlineArithmetic: "",
};
const slot: ProxySlot = { slot: 3, containerId: "c0ffee", containerName: "web-prod-r1-abc123", address: "172.18.0.5", port: 8080 };

describe("names", () => {
  it("names the network and the proxy after the target", () => {
    expect(targetNetworkName(target)).toBe("kiln.web.prod");
    expect(proxyContainerName(target)).toBe("kiln-proxy.web.prod");
    expect(legacyTargetNetworkName(target)).toBe("kiln-web-prod");
  });

  it("gives a-b@c and a@b-c their own proxy and network", () => {
    const first = { service: "a-b", environment: "c" };
    const second = { service: "a", environment: "b-c" };
    expect(proxyContainerName(first)).not.toBe(proxyContainerName(second));
    expect(targetNetworkName(first)).not.toBe(targetNetworkName(second));
  });
});

describe("proxySettings", () => {
  it("uses an HTTP check when the release checks HTTP on the proxied port", () => {
    expect(proxySettings(proxy, health)).toEqual({
      retries: 2,
      check: { kind: "http", path: "/healthz", expectStatus: [200, 399] },
      checkIntervalMs: 2_000,
      checkTimeoutMs: 1_500,
      rise: 3,
      fall: 2,
    });
  });

  it("falls back to a TCP check without health, for another port, or for a path it cannot write safely", () => {
    expect(proxySettings(proxy, undefined).check).toEqual({ kind: "tcp" });
    expect(proxySettings(proxy, { ...health, check: { kind: "http", portName: "admin", path: "/healthz", expectStatus: [200, 299] } }).check).toEqual({ kind: "tcp" });
    expect(proxySettings(proxy, { ...health, check: { kind: "http", portName: "http", path: "/a b#c", expectStatus: [200, 299] } }).check).toEqual({ kind: "tcp" });
    expect(proxySettings(proxy, { ...health, check: { kind: "command", command: ["true"] } }).check).toEqual({ kind: "tcp" });
  });
});

describe("statusPattern", () => {
  it("matches exactly the range", () => {
    expect(statusPattern(200, 399)).toBe("^(2..|3..)$");
    expect(statusPattern(200, 204)).toBe("^(200|201|202|203|204)$");
    expect(statusPattern(200, 219)).toBe("^(20.|21.)$");
    const pattern = new RegExp(statusPattern(204, 311));
    for (let code = 100; code < 600; code++) expect(pattern.test(String(code)), String(code)).toBe(code >= 204 && code <= 311);
  });
});

describe("renderConfig", () => {
  const text = renderConfig(target, proxySettings(proxy, health), [slot]);

  it("writes one frontend, one backend with every slot, retries, checks and the runtime API", () => {
    expect(text).toContain("stats socket ipv4@0.0.0.0:10999 level admin");
    expect(text).toContain("bind :10080");
    expect(text).toContain("balance roundrobin");
    expect(text).toContain("retries 2");
    expect(text).toContain("option redispatch 1");
    expect(text).toContain("retry-on conn-failure empty-response");
    // A reload (new settings) must not reset clients' idle keep-alive connections.
    expect(text).toContain("option idle-close-on-response");
    expect(text).toContain("http-request disable-l7-retry unless kiln_idempotent");
    expect(text).toContain("option httpchk GET /healthz");
    expect(text).toContain("http-check expect rstatus ^(2..|3..)$");
    expect(text).toContain("default-server check inter 2000ms fall 2 rise 3");
    expect(text).toContain("server s3 172.18.0.5:8080\n");
    expect(text).toContain("server s1 127.0.0.1:1 disabled");
    expect(text.match(/^\s+server s\d+ /gm)).toHaveLength(PROXY_SLOTS);
  });

  it("writes no httpchk for a TCP check", () => {
    expect(renderConfig(target, proxySettings(proxy, undefined), [])).not.toContain("httpchk");
  });

  it("reads its own slots and settings back", () => {
    expect(parseConfig(text)).toEqual({ settings: proxySettings(proxy, health), slots: [slot] });
    expect(sameSettings(parseConfig(text).settings, proxySettings(proxy, health))).toBe(true);
    expect(sameSettings(parseConfig(text).settings, proxySettings({ ...proxy, retries: 3 }, health))).toBe(false);
  });

  it("reads nothing from a configuration it did not write, and skips malformed slots", () => {
    expect(parseConfig("global\n    maxconn 10\n")).toEqual({ settings: undefined, slots: [] });
    expect(parseConfig('    # kiln-slot {"slot":99,"containerId":"x","containerName":"x","address":"1.2.3.4","port":1}\n    # kiln-slot {bad\n').slots).toEqual([]);
    expect(parseConfig('    # kiln-slot {"slot":1,"containerId":"x","containerName":"x","address":"1.2.3.4; rm","port":1}\n').slots).toEqual([]);
  });
});

describe("tar", () => {
  it("round-trips one file", () => {
    const archive = tarOneFile("haproxy.cfg", "hello\n");
    expect(archive.length % 512).toBe(0);
    expect(readFileFromTar(archive, "haproxy.cfg")?.toString()).toBe("hello\n");
    expect(readFileFromTar(archive, "other")).toBeUndefined();
  });
});

describe("the proxy image option", () => {
  it("takes the option, then KILN_DOCKER_PROXY_IMAGE, else the official image (which a local build may stand in for)", () => {
    expect(resolveOptions(undefined, {})).toMatchObject({ proxyImage: "haproxy:2.6", proxyImageExplicit: false });
    expect(resolveOptions(undefined, { KILN_DOCKER_PROXY_IMAGE: "kiln-local/haproxy:2.6" })).toMatchObject({ proxyImage: "kiln-local/haproxy:2.6", proxyImageExplicit: true });
    expect(resolveOptions({ proxyImage: "haproxy:2.8" }, { KILN_DOCKER_PROXY_IMAGE: "x:1" })).toMatchObject({ proxyImage: "haproxy:2.8", proxyImageExplicit: true });
    expect(() => resolveOptions({ proxyImage: "bad image" }, {})).toThrow(expect.objectContaining({ code: "INVALID_ARGUMENT" }) as Error);
  });
});

describe("instances behind the proxy", () => {
  it("join the target's network and publish nothing", () => {
    const create = containerCreateOptions(
      {
        target,
        release: 1,
        rolloutId: "ro-1",
        idempotencyKey: "ro-1:launch:1",
        image: { id: "sha256:" + "a".repeat(64), fingerprint: "sha256:" + "b".repeat(64), digest: "sha256:" + "a".repeat(64), names: [] },
        config: { ports: [{ name: "http", port: 8080, protocol: "tcp" }], env: {}, labels: {}, stopGracePeriodMs: 1_000, publishPorts: false },
        count: 1,
      },
      resolveOptions({ network: "shared" }, {}),
      "web-prod-r1-abcdef",
    );
    expect(create.HostConfig?.NetworkMode).toBe("kiln.web.prod");
    expect(create.HostConfig?.PortBindings).toEqual({});
    expect(create.ExposedPorts).toEqual({ "8080/tcp": {} });
  });
});
