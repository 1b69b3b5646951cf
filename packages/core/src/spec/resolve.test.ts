import path from "node:path";
import { describe, expect, it } from "vitest";
import { isKilnError } from "../errors.js";
import { parseSpec } from "./load.js";
import { defaultHealthDeadlineMs, parseMemory, resolveTarget } from "./resolve.js";
import type { ValidatedSpec } from "./validate.js";

const SPEC = `service: web
image:
  dockerfile: { context: app, file: ../docker/Dockerfile, args: { V: "1" }, target: runtime }
instances:
  count: 2
  ports: [{ name: http, port: 8080 }]
  resources: { memory: 256Mi, cpus: 0.5 }
health:
  http: { port: 9000, path: /healthz }
environments:
  staging:
    instances: { count: 1, resources: { memory: 1G } }
    health: { http: { port: http }, deadlineMs: 30000 }
`;

function validated(text: string): ValidatedSpec {
  const result = parseSpec(text);
  if (!result.ok) throw new Error(JSON.stringify(result.issues));
  return result.value;
}

describe("resolveTarget", () => {
  const spec = validated(SPEC);
  const baseDir = path.resolve("/srv/web");

  it("resolves the default environment with absolute paths and bytes", () => {
    const target = resolveTarget(spec, "default", baseDir);
    expect(target.target).toEqual({ service: "web", environment: "default" });
    expect(target.build).toEqual({
      contextDir: path.join(baseDir, "app"),
      dockerfilePath: path.join(baseDir, "docker", "Dockerfile"),
      args: { V: "1" },
      stage: "runtime",
    });
    expect(target.count).toBe(2);
    expect(target.instance.memoryBytes).toBe(256 * 1024 ** 2);
    expect(target.instance.cpus).toBe(0.5);
    // a health port number with no declared port is added as `health`
    expect(target.health.check).toEqual({ kind: "http", portName: "health", path: "/healthz", expectStatus: [200, 399] });
    expect(target.instance.ports).toEqual([
      { name: "http", port: 8080, protocol: "tcp" },
      { name: "health", port: 9000, protocol: "tcp" },
    ]);
    expect(target.health.deadlineMs).toBe(defaultHealthDeadlineMs(target.health));
  });

  it("resolves a named environment after merging", () => {
    const target = resolveTarget(spec, "staging", baseDir);
    expect(target.count).toBe(1);
    expect(target.instance.memoryBytes).toBe(1e9);
    expect(target.instance.cpus).toBe(0.5);
    expect(target.health.check).toEqual({ kind: "http", portName: "http", path: "/healthz", expectStatus: [200, 399] });
    expect(target.health.deadlineMs).toBe(30_000);
  });

  it("throws ENVIRONMENT_NOT_FOUND for an unknown environment, naming the known ones", () => {
    expect(() => resolveTarget(spec, "prod", baseDir)).toThrow(expect.objectContaining({ code: "ENVIRONMENT_NOT_FOUND", message: expect.stringContaining('"staging"') }));
    try {
      resolveTarget(validated("service: web\n"), "prod", baseDir);
    } catch (error) {
      expect(isKilnError(error, "ENVIRONMENT_NOT_FOUND")).toBe(true);
      expect((error as Error).message).toContain("defines none");
    }
  });
});

describe("parseMemory", () => {
  it.each([
    [1024, 1024],
    ["512", 512],
    ["1b", 1],
    ["1k", 1000],
    ["1Ki", 1024],
    ["256Mi", 256 * 1024 ** 2],
    ["256MiB", 256 * 1024 ** 2],
    ["512M", 512e6],
    ["512mb", 512e6],
    ["1G", 1e9],
    ["1Gi", 1024 ** 3],
    ["1.5Gi", 1.5 * 1024 ** 3],
    [" 2 Gi ", 2 * 1024 ** 3],
  ] as const)("%j is %d bytes", (input, bytes) => {
    expect(parseMemory(input)).toBe(bytes);
  });

  it("throws INVALID_ARGUMENT for text that is not a size", () => {
    for (const text of ["", "lots", "1Ti", "-1Mi", "1.Mi"]) {
      expect(() => parseMemory(text)).toThrow(expect.objectContaining({ code: "INVALID_ARGUMENT" }));
    }
  });
});
