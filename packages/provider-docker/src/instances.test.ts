import { describe, expect, it } from "vitest";
import { LABELS, SecretValue, type ImageRef, type LaunchRequest } from "@kilnjs/core";
import { containerCreateOptions, containerName, instanceState } from "./instances.js";
import { resolveOptions } from "./options.js";

const image: ImageRef = { id: "sha256:" + "a".repeat(64), fingerprint: "sha256:" + "b".repeat(64), digest: "sha256:" + "a".repeat(64), names: [] };
const request: LaunchRequest = {
  target: { service: "web", environment: "prod" },
  release: 7,
  rolloutId: "ro-1",
  idempotencyKey: "ro-1/launch-2",
  image,
  config: {
    ports: [
      { name: "http", port: 8080, protocol: "tcp" },
      { name: "dns", port: 53, protocol: "udp" },
    ],
    env: { A: "1", B: "x=y" },
    labels: { team: "core", [LABELS.service]: "spoofed" },
    command: ["node", "server.js"],
    memoryBytes: 268_435_456,
    cpus: 0.25,
    stopGracePeriodMs: 1_500,
  },
  count: 2,
};

describe("containerCreateOptions", () => {
  it("sets labels, env, limits, restart policy, stop timeout and published ports", () => {
    const options = containerCreateOptions(request, resolveOptions({ network: "kiln" }, {}), "web-prod-r7-abcdef");
    expect(options).toMatchObject({
      name: "web-prod-r7-abcdef",
      Image: image.id,
      Env: ["A=1", "B=x=y"],
      Cmd: ["node", "server.js"],
      StopTimeout: 2,
      ExposedPorts: { "8080/tcp": {}, "53/udp": {} },
      HostConfig: {
        Memory: 268_435_456,
        NanoCpus: 250_000_000,
        RestartPolicy: { Name: "unless-stopped" },
        NetworkMode: "kiln",
        PortBindings: { "8080/tcp": [{ HostIp: "127.0.0.1", HostPort: "" }], "53/udp": [{ HostIp: "127.0.0.1", HostPort: "" }] },
      },
    });
    expect(options.Labels).toEqual({
      team: "core",
      [LABELS.managed]: "true",
      [LABELS.service]: "web",
      [LABELS.environment]: "prod",
      [LABELS.release]: "7",
      [LABELS.rollout]: "ro-1",
      [LABELS.fingerprint]: image.fingerprint,
      "dev.kiln.launch-key": "ro-1/launch-2",
      "dev.kiln.ports": "http:8080/tcp,dns:53/udp",
    });
    expect(options.HostConfig?.Mounts).toBeUndefined();
  });

  it("adds env secrets to Env and file secrets' mounts, and no secret to any label", () => {
    const digest = `hmac-sha256:${"0".repeat(64)}`;
    const withSecrets: LaunchRequest = {
      ...request,
      config: {
        ...request.config,
        secrets: [
          { name: "DB_PASSWORD", source: { kind: "env", name: "DB_PASSWORD" }, to: { kind: "env", name: "DATABASE_PASSWORD" }, digest },
          { name: "TLS_KEY", source: { kind: "file", path: "/keys/tls.key" }, to: { kind: "file", path: "/run/secrets/tls.key" }, digest },
        ],
      },
      secrets: new Map([
        ["DB_PASSWORD", new SecretValue("db-value-1")],
        ["TLS_KEY", new SecretValue("tls-value-2")],
      ]),
    };
    const mounts = [{ Type: "bind" as const, Source: "/dev/shm/kiln-secrets/e/web-prod-r7-abcdef/0", Target: "/run/secrets", ReadOnly: true }];
    const options = containerCreateOptions(withSecrets, resolveOptions({}, {}), "web-prod-r7-abcdef", undefined, mounts);
    expect(options.Env).toEqual(["A=1", "B=x=y", "DATABASE_PASSWORD=db-value-1"]);
    expect(options.HostConfig?.Mounts).toEqual(mounts);
    expect(JSON.stringify(options.Labels)).not.toMatch(/db-value-1|tls-value-2/);
    expect(JSON.stringify(options)).not.toContain("tls-value-2");
  });
});

describe("names and states", () => {
  it("names containers uniquely", () => {
    const names = new Set(Array.from({ length: 50 }, () => containerName(request)));
    expect(names.size).toBe(50);
    for (const name of names) expect(name).toMatch(/^web\.prod\.r7\.[0-9a-f]{6}$/);
  });

  it("names the containers of a-b@c and a@b-c apart", () => {
    const first = containerName({ ...request, target: { service: "a-b", environment: "c" } });
    const second = containerName({ ...request, target: { service: "a", environment: "b-c" } });
    expect(first.replace(/\.[0-9a-f]{6}$/, "")).toBe("a-b.c.r7");
    expect(second.replace(/\.[0-9a-f]{6}$/, "")).toBe("a.b-c.r7");
  });

  it("maps Docker states", () => {
    expect(["created", "restarting", "running", "paused", "exited", "dead", "removing", "??"].map(instanceState)).toEqual([
      "pending",
      "pending",
      "running",
      "stopped",
      "stopped",
      "stopped",
      "terminated",
      "unknown",
    ]);
  });
});
