import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { isKilnError, type KilnError } from "../errors.js";
import { formatSpecIssue, type SpecIssue } from "./issues.js";
import { OBJECT_SPEC_FILE, loadSpec, parseSpec, specFromObject } from "./load.js";
import type { SpecValidation } from "./validate.js";

const FULL_SPEC = `# a complete spec
x-defaults: &defaults
  count: 2
  env:
    LOG_FORMAT: json
  stopGracePeriodMs: 5000
x-tool: { anything: [1, 2, 3] }

service: hello-web
provider: docker
image:
  dockerfile:
    context: app
    args: { NODE_ENV: production }
  machine:
    provision:
      - file: { from: app/dist, to: /opt/app }
      - run: systemctl enable app
    base:
      aws: { name: "debian-12-amd64-*", owners: ["136693071363"] }
instances:
  <<: *defaults
  count: 3
  ports:
    - name: http
      port: 8080
  resources: { memory: 256Mi, cpus: 0.5 }
  x-note: ignored too
health:
  http: { port: http, path: /healthz }
  intervalMs: 2000
rollout: { maxSurge: 1, maxUnavailable: 0 }
environments:
  x-shared: &shared
    rollout: { maxSurge: 2 }
  staging:
    instances: { count: 1, env: { LOG_LEVEL: debug } }
  prod:
    <<: *shared
    provider: aws
    instances:
      ports: [{ name: http, port: 9090 }]
`;

function issuesOf(result: SpecValidation): SpecIssue[] {
  if (result.ok) throw new Error("expected issues, the spec was valid");
  return result.issues;
}

function valueOf(result: SpecValidation) {
  if (!result.ok) throw new Error(`expected a valid spec:\n${result.issues.map(formatSpecIssue).join("\n")}`);
  return result.value;
}

describe("parseSpec", () => {
  it("parses a full spec with anchors, merge keys, x- keys and environments", () => {
    const { spec, environments } = valueOf(parseSpec(FULL_SPEC, { file: "kiln.yaml" }));
    expect(spec.service).toBe("hello-web");
    expect(spec.instances.count).toBe(3); // the key beside `<<` wins
    expect(spec.instances.env).toEqual({ LOG_FORMAT: "json" }); // merged in from the anchor
    expect(spec.instances.stopGracePeriodMs).toBe(5000);
    expect(spec.image.dockerfile).toEqual({ context: "app", file: "Dockerfile", args: { NODE_ENV: "production" }, secrets: {} });
    expect(spec).not.toHaveProperty("x-defaults");
    expect(spec.instances).not.toHaveProperty("x-note");
    expect(Object.keys(environments).sort()).toEqual(["prod", "staging"]);
    // objects merge
    expect(environments.staging!.instances.env).toEqual({ LOG_FORMAT: "json", LOG_LEVEL: "debug" });
    expect(environments.staging!.instances.count).toBe(1);
    expect(environments.staging!.health.http?.path).toBe("/healthz");
    // arrays replace; a merge key inside an environment works
    expect(environments.prod!.instances.ports).toEqual([{ name: "http", port: 9090, protocol: "tcp" }]);
    expect(environments.prod!.rollout).toMatchObject({ strategy: "rolling", maxSurge: 2, maxUnavailable: 0 });
    expect(environments.prod!.provider).toBe("aws");
  });

  it("reads YAML 1.2: yes/no/on are strings", () => {
    const { spec } = valueOf(parseSpec("service: web\ninstances:\n  env: { A: yes, B: on, C: no }\n"));
    expect(spec.instances.env).toEqual({ A: "yes", B: "on", C: "no" });
  });

  it("reports an unknown key at the key, with a did-you-mean", () => {
    const issues = issuesOf(parseSpec("service: web\ninstances:\n  cuont: 3\n", { file: "kiln.yaml" }));
    expect(issues).toEqual([
      { path: ["instances", "cuont"], kind: "unknown-key", key: "cuont", message: 'unknown key "cuont"', suggestion: "count", file: "kiln.yaml", line: 3, column: 3 },
    ]);
    expect(formatSpecIssue(issues[0]!)).toBe('kiln.yaml:3:3: instances.cuont: unknown key "cuont" (did you mean "count"?)');
  });

  it("points an environment name that breaks the naming rule at its key, not at its first setting", () => {
    const issues = issuesOf(parseSpec("service: web\nenvironments:\n  Prod_1:\n    instances: { count: 1 }\n", { file: "kiln.yaml" }));
    expect(issues).toHaveLength(1);
    expect(issues[0]).toMatchObject({ path: ["environments", "Prod_1"], kind: "invalid-key", line: 3, column: 3 });
    expect(issues[0]!.message).toContain('an environment name: "Prod_1"');
  });

  it("suggests a top-level key and gives no suggestion for a key unlike any", () => {
    const issues = issuesOf(parseSpec("service: web\nhelth: {}\nzzzzzzzz: 1\n", { file: "kiln.yaml" }));
    expect(issues.map((i) => [formatSpecIssue(i), i.suggestion])).toEqual([
      ['kiln.yaml:2:1: helth: unknown key "helth" (did you mean "health"?)', "health"],
      ['kiln.yaml:3:1: zzzzzzzz: unknown key "zzzzzzzz"', undefined],
    ]);
  });

  it("points a wrong type at the value", () => {
    const issues = issuesOf(parseSpec("service: web\ninstances:\n  count: three\n", { file: "kiln.yaml" }));
    expect(issues).toHaveLength(1);
    expect(issues[0]).toMatchObject({ path: ["instances", "count"], kind: "invalid-type", file: "kiln.yaml", line: 3, column: 10 });
    expect(issues[0]!.message).toMatch(/expected a number, not "three" \(a string\)/);
  });

  it("points a missing required key at the mapping that lacks it", () => {
    const issues = issuesOf(parseSpec("service: web\ninstances:\n  ports:\n    - name: http\n      protocol: tcp\n", { file: "f.yaml" }));
    expect(issues).toEqual([
      expect.objectContaining({ path: ["instances", "ports", 0, "port"], kind: "invalid-type", message: "required: expected a number", line: 4, column: 7 }),
    ]);
    const nested = issuesOf(parseSpec("service: web\nhealth:\n  http:\n    path: /up\n", { file: "f.yaml" }));
    expect(nested).toEqual([expect.objectContaining({ path: ["health", "http", "port"], line: 3, column: 3 })]);
    const top = issuesOf(parseSpec("instances: {}\n", { file: "f.yaml" }));
    expect(top).toEqual([expect.objectContaining({ path: ["service"], line: 1, column: 1 })]);
  });

  it("reports every problem in one file, each with file:line:column, in file order", () => {
    const text = [
      "service: Web_App", // 1: bad name
      "instances:",
      "  count: 0", // 3: below minimum
      "  ports:",
      "    - { name: http, port: 99999 }", // 5: above maximum
      "  labells: {}", // 6: unknown key
      "health:",
      "  intervalMs: 1.5", // 8: not an integer
      "",
    ].join("\n");
    const issues = issuesOf(parseSpec(text, { file: "kiln.yaml" }));
    expect(issues.map(formatSpecIssue)).toEqual([
      expect.stringMatching(/^kiln\.yaml:1:10: service: /),
      expect.stringMatching(/^kiln\.yaml:3:10: instances\.count: /),
      expect.stringMatching(/^kiln\.yaml:5:27: instances\.ports\[0\]\.port: /),
      'kiln.yaml:6:3: instances.labells: unknown key "labells" (did you mean "labels"?)',
      expect.stringMatching(/^kiln\.yaml:8:15: health\.intervalMs: /),
    ]);
    for (const issue of issues) expect(issue).toMatchObject({ file: "kiln.yaml", line: expect.any(Number), column: expect.any(Number) });
  });

  it("locates problems inside an environment", () => {
    const text = "service: web\nenvironments:\n  prod:\n    instances:\n      count: three\n      cuont: 2\n";
    const issues = issuesOf(parseSpec(text, { file: "kiln.yaml" }));
    expect(issues).toEqual([
      expect.objectContaining({ path: ["environments", "prod", "instances", "count"], kind: "invalid-type", line: 5, column: 14 }),
      expect.objectContaining({ path: ["environments", "prod", "instances", "cuont"], kind: "unknown-key", suggestion: "count", line: 6, column: 7 }),
    ]);
  });

  it("locates a problem that only appears once an environment is merged", () => {
    // prod replaces the ports, so the health check's port name no longer exists there.
    const text = "service: web\ninstances:\n  ports: [{ name: http, port: 80 }]\nhealth:\n  http: { port: http }\nenvironments:\n  prod:\n    instances:\n      ports: [{ name: web, port: 80 }]\n";
    const issues = issuesOf(parseSpec(text, { file: "kiln.yaml" }));
    expect(issues).toEqual([
      expect.objectContaining({ path: ["environments", "prod", "health", "http", "port"], kind: "reference", line: 7, column: 3 }),
    ]);
  });

  it("refuses more instances than the target's provider allows, at instances.count, naming its maxInstanceCount", () => {
    const providers = {
      small: { imageFormat: "dockerfile" as const, maxInstanceCount: 500 },
      big: { imageFormat: "dockerfile" as const, maxInstanceCount: 10_000 },
      plain: { imageFormat: "dockerfile" as const },
    };
    const text = "service: web\nprovider: small\ninstances:\n  count: 600\nenvironments:\n  prod:\n    provider: big\n    instances:\n      count: 10000\n  dev:\n    provider: plain\n    instances:\n      count: 1001\n";
    expect(issuesOf(parseSpec(text, { file: "kiln.yaml", providers })).map(formatSpecIssue)).toEqual([
      "kiln.yaml:4:10: instances.count: 600 instances is more than the small provider runs for one target (its maxInstanceCount is 500); lower instances.count to 500 or fewer, or split the service into targets",
      // A provider that declares no limit allows 1000.
      "kiln.yaml:13:14: environments.dev.instances.count: 1001 instances is more than the plain provider runs for one target (its maxInstanceCount is 1000); lower instances.count to 1000 or fewer, or split the service into targets",
    ]);
    // Within the provider's limit, up to the spec's own ceiling of 10000.
    expect(parseSpec("service: web\nprovider: big\ninstances:\n  count: 10000\n", { providers }).ok).toBe(true);
    expect(issuesOf(parseSpec("service: web\nprovider: big\ninstances:\n  count: 10001\n", { file: "kiln.yaml", providers }))).toEqual([
      expect.objectContaining({ path: ["instances", "count"], kind: "invalid-value", line: 4, column: 10, message: expect.stringContaining("10000") }),
    ]);
  });

  it("locates a value that comes from an anchor at the anchor", () => {
    const text = "x-d: &d\n  count: many\nservice: web\ninstances:\n  <<: *d\n";
    const issues = issuesOf(parseSpec(text, { file: "kiln.yaml" }));
    expect(issues).toEqual([expect.objectContaining({ path: ["instances", "count"], line: 2, column: 10 })]);
  });

  it("reports invalid YAML as yaml-syntax with a position", () => {
    const issues = issuesOf(parseSpec("service: web\ninstances: [1, 2\n", { file: "kiln.yaml" }));
    expect(issues.length).toBeGreaterThanOrEqual(1);
    expect(issues[0]).toMatchObject({ kind: "yaml-syntax", path: [], file: "kiln.yaml", line: expect.any(Number), column: expect.any(Number) });
    expect(issues[0]!.message).not.toMatch(/at line/); // the position is in the fields, not repeated in the text
  });

  it.each([
    ["sequence", "service: web\ninstances:\n  ports: [ { name: http, port: 8080 }\n  env: {}\n", 3, 10, '"[" opened here is never closed with "]"'],
    ["mapping", "service: web\ninstances: { count: 3\n", 2, 12, '"{" opened here is never closed with "}"'],
  ])("points an unclosed flow %s at the line that opens it", (_kind, text, line, column, message) => {
    const issues = issuesOf(parseSpec(text, { file: "kiln.yaml" }));
    expect(issues[0]).toMatchObject({ kind: "yaml-syntax", line, column, message: expect.stringContaining(message) as string });
  });

  it("reports tab indentation once per line, with a hint", () => {
    const issues = issuesOf(parseSpec("service: web\ninstances:\n\tcount: 2\n", { file: "kiln.yaml" }));
    expect(issues).toEqual([
      { path: [], kind: "yaml-syntax", message: "tabs are not allowed for indentation in YAML; indent with spaces", file: "kiln.yaml", line: 3, column: 1 },
    ]);
  });

  it("reports a duplicate key with its name", () => {
    const issues = issuesOf(parseSpec("service: web\nservice: api\n", { file: "kiln.yaml" }));
    expect(issues).toEqual([expect.objectContaining({ kind: "yaml-syntax", line: 2, column: 1, message: expect.stringContaining('"service"') })]);
  });

  it("reports an alias without an anchor", () => {
    const issues = issuesOf(parseSpec("service: web\ninstances: *missing\n", { file: "kiln.yaml" }));
    expect(issues).toEqual([expect.objectContaining({ kind: "yaml-syntax", line: 2, column: 12, message: expect.stringContaining("*missing") })]);
  });

  it("reports an alias inside the value it names instead of looping", () => {
    const issues = issuesOf(parseSpec("service: web\ninstances:\n  command: &c [run, *c]\n", { file: "kiln.yaml" }));
    expect(issues).toEqual([expect.objectContaining({ kind: "yaml-syntax", line: 3, column: 21, message: expect.stringContaining("*c") })]);
  });

  it("reports an empty file or a top level that is not a mapping as one issue", () => {
    for (const text of ["", "# only a comment\n"]) {
      const issues = issuesOf(parseSpec(text, { file: "kiln.yaml" }));
      expect(issues).toEqual([expect.objectContaining({ path: [], message: expect.stringContaining("empty"), line: 1, column: 1 })]);
    }
    for (const text of ["- service: web\n", "web\n"]) {
      const issues = issuesOf(parseSpec(text));
      expect(issues).toHaveLength(1);
      expect(issues[0]!.message).toMatch(/must be a mapping/);
    }
  });

  it("leaves the file off issues when none is given", () => {
    const issues = issuesOf(parseSpec("service: web\nhelth: {}\n"));
    expect(issues[0]).toMatchObject({ line: 2, column: 1 });
    expect(issues[0]).not.toHaveProperty("file");
  });
});


describe("loadSpec", () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "kiln-spec-"));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("reads, validates and returns the file's folder as baseDir", async () => {
    const file = path.join(dir, "kiln.yaml");
    await writeFile(file, FULL_SPEC);
    const loaded = await loadSpec(file);
    expect(loaded.file).toBe(file);
    expect(loaded.baseDir).toBe(dir);
    expect(loaded.validated.spec.service).toBe("hello-web");
  });

  it("throws SPEC_NOT_FOUND for a missing file", async () => {
    const file = path.join(dir, "nope", "kiln.yaml");
    const error = await loadSpec(file).catch((e: unknown) => e);
    expect(isKilnError(error, "SPEC_NOT_FOUND")).toBe(true);
    expect((error as KilnError).message).toBe(`No kiln.yaml at ${file}; create one with \`kiln init\` or pass --config.`);
    expect((error as KilnError).cause).toBeDefined();
  });

  it("throws SPEC_INVALID listing every issue with its position", async () => {
    const file = path.join(dir, "bad.yaml");
    await writeFile(file, "service: web\ninstances:\n  cuont: 3\nrollout: { maxSurge: 0, maxUnavailable: 0 }\n");
    const error = await loadSpec(file).catch((e: unknown) => e);
    expect(isKilnError(error, "SPEC_INVALID")).toBe(true);
    const issues = (error as KilnError).details.issues as SpecIssue[];
    // The unknown key, and the rule the rollout breaks: every problem at once.
    expect(issues.map((issue) => [issue.path.join("."), issue.line])).toEqual([
      ["instances.cuont", 3],
      [expect.stringMatching(/^rollout/), 4],
    ]);
    expect((error as KilnError).message).toContain(`${file}:3:3: instances.cuont: unknown key "cuont" (did you mean "count"?)`);
  });
});

describe("specFromObject", () => {
  it("validates an object and resolves baseDir", () => {
    const loaded = specFromObject({ service: "web", "x-anything": 1, instances: { count: 2 } }, "relative/dir");
    expect(loaded.file).toBe(OBJECT_SPEC_FILE);
    expect(loaded.baseDir).toBe(path.resolve("relative/dir"));
    expect(loaded.validated.spec.instances.count).toBe(2);
  });

  it("throws SPEC_INVALID with paths and no positions", () => {
    let caught: unknown;
    try {
      specFromObject({ service: "web", instances: { count: "three" }, rolout: {} }, ".");
    } catch (error) {
      caught = error;
    }
    expect(isKilnError(caught, "SPEC_INVALID")).toBe(true);
    const issues = (caught as KilnError).details.issues as SpecIssue[];
    expect(issues).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ path: ["instances", "count"], kind: "invalid-type" }),
        expect.objectContaining({ path: ["rolout"], kind: "unknown-key", suggestion: "rollout" }),
      ]),
    );
    expect(issues).toHaveLength(2);
    for (const issue of issues) expect(issue).not.toHaveProperty("line");
    expect((caught as KilnError).message).toMatch(/^The spec object has 2 problems/);
  });
});
