import { describe, expect, it } from "vitest";
import { isKilnError, type KilnError } from "../errors.js";
import { formatPath, formatSpecIssue, type SpecIssue } from "./issues.js";
import { assertValidSpec, mergeOverrides, stripExtensionKeys, validateSpec, type SpecValidation } from "./validate.js";

function issuesOf(result: SpecValidation): SpecIssue[] {
  if (result.ok) throw new Error("expected issues, the spec was valid");
  return result.issues;
}

describe("validateSpec", () => {
  it("fills every default for a minimal spec", () => {
    const result = validateSpec({ service: "web" });
    expect(result.ok).toBe(true);
    if (!result.ok) return;
    expect(result.value.spec).toEqual({
      service: "web",
      provider: "docker",
      image: { dockerfile: { context: ".", file: "Dockerfile", args: {}, secrets: {} } },
      instances: { count: 1, ports: [], env: {}, labels: {}, resources: {}, stopGracePeriodMs: 10_000 },
      health: { intervalMs: 1000, timeoutMs: 2000, healthyThreshold: 2, unhealthyThreshold: 3, startPeriodMs: 0, stabilityWindowMs: 0 },
      rollout: { strategy: "rolling", maxSurge: 1, maxUnavailable: 0, pauseBetweenBatchesMs: 0, bakeTimeMs: 0, autoRollback: true, order: "start-first" },
      traffic: {},
      secrets: {},
      environments: {},
    });
    expect(result.value.environments).toEqual({});
  });

  it("ignores x- keys everywhere except in free-form maps", () => {
    const result = validateSpec({
      service: "web",
      "x-anchor": { anything: true },
      instances: { "x-note": 1, labels: { "x-team": "a" }, ports: [{ name: "http", port: 80, "x-why": "legacy" }] },
      environments: { "x-shared": { nonsense: 1 }, prod: { "x-a": 1, instances: { count: 2 } } },
    });
    expect(result.ok).toBe(true);
    if (!result.ok) return;
    expect(result.value.spec.instances.labels).toEqual({ "x-team": "a" });
    expect(Object.keys(result.value.environments)).toEqual(["prod"]);
  });

  it("reports an unknown key with its path, the key and the known key it resembles", () => {
    expect(issuesOf(validateSpec({ service: "web", instances: { cuont: 1 } }))).toEqual([
      { path: ["instances", "cuont"], kind: "unknown-key", key: "cuont", message: 'unknown key "cuont"', suggestion: "count" },
    ]);
  });

  it("reports a wrong type and a missing key", () => {
    const issues = issuesOf(validateSpec({ instances: { count: "three" } }));
    expect(issues).toEqual(
      expect.arrayContaining([
        { path: ["service"], kind: "invalid-type", message: "required: expected a string" },
        expect.objectContaining({ path: ["instances", "count"], kind: "invalid-type" }),
      ]),
    );
  });

  it("merges environments: objects merge, arrays replace", () => {
    const result = validateSpec({
      service: "web",
      instances: { count: 3, env: { A: "1", B: "2" }, ports: [{ name: "http", port: 80 }, { name: "admin", port: 81 }], command: ["a", "b"] },
      environments: { prod: { instances: { env: { B: "two", C: "3" }, ports: [{ name: "http", port: 8080 }], command: ["c"] } } },
    });
    expect(result.ok).toBe(true);
    if (!result.ok) return;
    const prod = result.value.environments.prod!;
    expect(prod.instances.count).toBe(3);
    expect(prod.instances.env).toEqual({ A: "1", B: "two", C: "3" });
    expect(prod.instances.ports).toEqual([{ name: "http", port: 8080, protocol: "tcp" }]);
    expect(prod.instances.command).toEqual(["c"]);
    expect(result.value.spec.instances.env).toEqual({ A: "1", B: "2" }); // the top level is untouched
  });

  it("reports a health port name that is not declared as a reference issue", () => {
    expect(issuesOf(validateSpec({ service: "web", instances: { ports: [{ name: "http", port: 80 }] }, health: { http: { port: "htp" } } }))).toEqual([
      expect.objectContaining({ path: ["health", "http", "port"], kind: "reference", message: expect.stringContaining('"htp"') }),
    ]);
  });

  it("accepts a health port number without a declared port", () => {
    expect(validateSpec({ service: "web", health: { http: { port: 8080 } } }).ok).toBe(true);
  });

  it("reports ports with the same name", () => {
    const issues = issuesOf(validateSpec({ service: "web", instances: { ports: [{ name: "http", port: 80 }, { name: "http", port: 81 }] } }));
    expect(issues).toEqual([expect.objectContaining({ path: ["instances", "ports", 1, "name"], kind: "invalid-value" })]);
  });

  it("reports maxSurge = 0 with maxUnavailable = 0, at the top level and in an environment", () => {
    expect(issuesOf(validateSpec({ service: "web", rollout: { maxSurge: 0 } }))).toEqual([
      expect.objectContaining({ path: ["rollout"], kind: "invalid-value", message: expect.stringContaining("both come to 0") }),
    ]);
    expect(issuesOf(validateSpec({ service: "web", environments: { prod: { rollout: { maxSurge: 0 } } } }))).toEqual([
      expect.objectContaining({ path: ["environments", "prod", "rollout"], kind: "invalid-value" }),
    ]);
  });

  it("reports an expectStatus range that is upside down", () => {
    expect(issuesOf(validateSpec({ service: "web", health: { http: { port: 80, expectStatus: [399, 200] } } }))).toEqual([
      expect.objectContaining({ path: ["health", "http", "expectStatus"], kind: "invalid-value" }),
    ]);
  });

  it("reports problems inside an environment with the environment's path", () => {
    const issues = issuesOf(validateSpec({ service: "web", environments: { prod: { instances: { count: 0, cuont: 1 } }, Bad_Name: {} } }));
    expect(issues.map((issue) => formatPath(issue.path)).sort()).toEqual(["environments.Bad_Name", "environments.prod.instances.count", "environments.prod.instances.cuont"]);
  });

  it("rejects a top level that is not an object", () => {
    expect(issuesOf(validateSpec("service: web"))).toEqual([expect.objectContaining({ path: [], kind: "invalid-type" })]);
  });
});

describe("assertValidSpec", () => {
  it("throws SPEC_INVALID with every issue in details and message", () => {
    let caught: unknown;
    try {
      assertValidSpec({ service: "web", helth: {}, rollout: { maxSurge: -1 } }, "kiln.yaml");
    } catch (error) {
      caught = error;
    }
    expect(isKilnError(caught, "SPEC_INVALID")).toBe(true);
    const error = caught as KilnError;
    expect(error.details.issues).toHaveLength(2);
    expect(error.message).toMatch(/^kiln\.yaml has 2 problems; fix them and try again:\n {2}/);
    expect(error.message).toContain('\n  helth: unknown key "helth"');
    expect(error.message).toContain("\n  rollout.maxSurge: ");
  });
});

describe("formatSpecIssue", () => {
  it("writes file:line:col: path: message (did you mean \"x\"?)", () => {
    const issue: SpecIssue = { path: ["instances", "cuont"], kind: "unknown-key", key: "cuont", message: 'unknown key "cuont"', suggestion: "count", file: "kiln.yaml", line: 4, column: 3 };
    expect(formatSpecIssue(issue)).toBe('kiln.yaml:4:3: instances.cuont: unknown key "cuont" (did you mean "count"?)');
  });

  it("leaves out what is not known", () => {
    expect(formatSpecIssue({ path: ["instances", "ports", 0, "port"], kind: "invalid-type", message: "expected number" })).toBe("instances.ports[0].port: expected number");
    expect(formatSpecIssue({ path: [], kind: "yaml-syntax", message: "bad", file: "kiln.yaml", line: 2, column: 5 })).toBe("kiln.yaml:2:5: bad");
    expect(formatSpecIssue({ path: [], kind: "yaml-syntax", message: "bad", file: "kiln.yaml" })).toBe("kiln.yaml: bad");
  });
});

describe("mergeOverrides and stripExtensionKeys", () => {
  it("merge without changing their inputs", () => {
    const base = { a: { b: 1, c: [1, 2] }, d: 1 };
    const merged = mergeOverrides(base, { a: { c: [3] }, e: 2 });
    expect(merged).toEqual({ a: { b: 1, c: [3] }, d: 1, e: 2 });
    expect(base).toEqual({ a: { b: 1, c: [1, 2] }, d: 1 });
    expect(stripExtensionKeys({ "x-a": 1, b: [{ "x-c": 1, d: 2 }], env: { "x-e": "kept" } })).toEqual({ b: [{ d: 2 }], env: { "x-e": "kept" } });
  });
});

describe("rollout strategies and health gates", () => {
  it("resolves percentages: surge rounds up, unavailable rounds down, and 0 of both is refused", () => {
    expect(issuesOf(validateSpec({ service: "web", instances: { count: 3 }, rollout: { maxSurge: "0%", maxUnavailable: "25%" } }))).toEqual([
      expect.objectContaining({ path: ["rollout"], message: expect.stringContaining("both come to 0 instances of 3") }),
    ]);
    expect(validateSpec({ service: "web", instances: { count: 4 }, rollout: { maxSurge: "0%", maxUnavailable: "25%" } }).ok).toBe(true);
  });

  it("needs steps for canary, growing steps, and steps only for canary", () => {
    expect(issuesOf(validateSpec({ service: "web", rollout: { strategy: "canary" } }))).toEqual([expect.objectContaining({ path: ["rollout", "steps"] })]);
    expect(issuesOf(validateSpec({ service: "web", instances: { count: 4 }, rollout: { strategy: "canary", steps: [{ instances: "50%" }, { instances: 2 }] } }))).toEqual([
      expect.objectContaining({ path: ["rollout", "steps", 1, "instances"], message: expect.stringContaining("larger than the one before (2)") }),
    ]);
    expect(issuesOf(validateSpec({ service: "web", rollout: { strategy: "rolling", steps: [{ instances: 1 }] } }))).toEqual([
      expect.objectContaining({ path: ["rollout", "steps"], message: expect.stringContaining("canary strategy only") }),
    ]);
  });

  it("fits the same canary steps to smaller environments, and lets an environment switch canary off", () => {
    const canary = { strategy: "canary" as const, steps: [{ instances: 1 }, { instances: "50%" }] };
    const result = validateSpec({
      service: "web",
      instances: { count: 4 },
      rollout: canary,
      environments: { staging: { instances: { count: 1 } }, dev: { rollout: { strategy: "rolling" } } },
    });
    expect(result.ok).toBe(true);
  });

  it("refuses a deadline shorter than the settings need, showing the arithmetic", () => {
    const issues = issuesOf(
      validateSpec({ service: "web", health: { tcp: { port: 80 }, startPeriodMs: 10_000, intervalMs: 1000, timeoutMs: 500, healthyThreshold: 3, stabilityWindowMs: 2000, deadlineMs: 12_000 } }),
    );
    expect(issues).toEqual([
      expect.objectContaining({
        path: ["health", "deadlineMs"],
        message: "12000 ms is shorter than these settings need: startPeriodMs 10000 + healthyThreshold 3 × (intervalMs 1000 + timeoutMs 500) + stabilityWindowMs 2000 = 16500 ms; raise deadlineMs or lower those settings",
      }),
    ]);
  });

  it("allows one health check kind and checks its port name", () => {
    expect(issuesOf(validateSpec({ service: "web", health: { http: { port: 80 }, tcp: { port: 80 } } }))).toEqual([expect.objectContaining({ path: ["health"], message: "give one health check, not http and tcp" })]);
    expect(issuesOf(validateSpec({ service: "web", health: { tcp: { port: "db" } } }))).toEqual([expect.objectContaining({ path: ["health", "tcp", "port"], kind: "reference" })]);
  });
});

describe("traffic and pinned host ports", () => {
  const ports = [{ name: "http", port: 8080, hostPort: 80 }];
  it("allows a pinned host port only with one instance and stop-first, and never behind a proxy", () => {
    expect(issuesOf(validateSpec({ service: "web", instances: { ports } }))).toEqual([
      expect.objectContaining({ path: ["instances", "ports", 0, "hostPort"], message: expect.stringContaining("rollout.order: stop-first") }),
    ]);
    expect(validateSpec({ service: "web", instances: { ports }, rollout: { order: "stop-first" } }).ok).toBe(true);
    expect(issuesOf(validateSpec({ service: "web", instances: { count: 2, ports }, rollout: { order: "stop-first" } }))).toEqual([
      expect.objectContaining({ message: expect.stringContaining("held by one instance only") }),
    ]);
    expect(issuesOf(validateSpec({ service: "web", instances: { ports }, traffic: { proxy: { port: 8080 } } }))).toEqual([
      expect.objectContaining({ message: expect.stringContaining("behind traffic.proxy") }),
    ]);
  });

  it("refuses stop-first on other strategies, and a proxy without a tcp port or with an unknown target port", () => {
    expect(issuesOf(validateSpec({ service: "web", rollout: { strategy: "blue-green", order: "stop-first" } }))).toEqual([expect.objectContaining({ path: ["rollout", "order"] })]);
    expect(issuesOf(validateSpec({ service: "web", traffic: { proxy: { port: 8080 } } }))).toEqual([expect.objectContaining({ path: ["traffic", "proxy"] })]);
    expect(issuesOf(validateSpec({ service: "web", instances: { ports: [{ name: "http", port: 8080 }] }, traffic: { proxy: { port: 8080, targetPort: "admin" } } }))).toEqual([
      expect.objectContaining({ path: ["traffic", "proxy", "targetPort"], kind: "reference" }),
    ]);
  });
});

describe("messages in Kiln's words", () => {
  const issuesFor = (input: unknown) => {
    const result = validateSpec(input);
    return result.ok ? [] : result.issues;
  };

  it("says what is allowed instead of the schema library's wording", () => {
    const issues = issuesFor({ service: "web", instances: { count: 0, env: { "9BAD": "x" } }, health: { http: { port: 70000 } }, rollout: { steps: [] } });
    const messages = issues.map((issue) => issue.message).join("\n");
    expect(messages).not.toMatch(/Too small|Too big|Invalid input|Invalid key in record|Invalid option/);
    const byPath = Object.fromEntries(issues.map((issue) => [issue.path.join("."), issue.message]));
    expect(byPath["instances.count"]).toBe("must be at least 1");
    expect(byPath["instances.env.9BAD"]).toBe("an environment variable name: letters, digits and _");
    expect(byPath["health.http.port"]).toBe("must be at most 65535");
    expect(byPath["rollout.steps"]).toBe("needs at least 1 item");
  });

  it("suggests the enum value that was probably meant", () => {
    const [issue] = issuesFor({ service: "web", rollout: { strategy: "rollin" } });
    expect(issue).toMatchObject({ path: ["rollout", "strategy"], suggestion: "rolling" });
    expect(issue!.message).toBe('must be one of "rolling", "blue-green", "canary", not "rollin" (a string)');
    expect(issuesFor({ service: "web", rollout: { strategy: "zzz" } })[0]).not.toHaveProperty("suggestion");
  });

  it("takes numbers and booleans in env, labels and args as their text", () => {
    const result = validateSpec({ service: "web", instances: { env: { PORT: 8080, DEBUG: true }, labels: { tier: 2 } }, image: { dockerfile: { args: { VERSION: 3 } } } });
    expect(result.ok).toBe(true);
    if (!result.ok) return;
    expect(result.value.spec.instances.env).toEqual({ PORT: "8080", DEBUG: "true" });
    expect(result.value.spec.instances.labels).toEqual({ tier: "2" });
    expect(result.value.spec.image.dockerfile.args).toEqual({ VERSION: "3" });
    const [issue] = issuesFor({ service: "web", instances: { env: { LIST: [1] } } });
    expect(issue).toMatchObject({ path: ["instances", "env", "LIST"], message: "expected text (a string), a number or true/false" });
  });
});

describe("every problem at once", () => {
  it("reports a bad port reference beside the schema's problems", () => {
    const result = validateSpec({ service: "Web_App", instances: { count: 0, ports: [{ name: "http", port: 8080 }] }, health: { http: { port: "htp" } }, rollout: { strategy: "rollin" } });
    expect(result.ok).toBe(false);
    if (result.ok) return;
    const paths = result.issues.map((issue) => issue.path.join("."));
    expect(paths).toEqual(expect.arrayContaining(["service", "instances.count", "rollout.strategy", "health.http.port"]));
    expect(result.issues.find((issue) => issue.path.join(".") === "health.http.port")!.message).toMatch(/"htp" is not a port name from instances.ports \("http"\)/);
  });

  it("does not report a reference into ports that the schema refused", () => {
    const result = validateSpec({ service: "web", instances: { ports: [{ name: "http", port: "x" }] }, health: { http: { port: "http" } } });
    expect(result.ok).toBe(false);
    if (result.ok) return;
    expect(result.issues.map((issue) => issue.path.join("."))).toEqual(["instances.ports.0.port"]);
  });
});
