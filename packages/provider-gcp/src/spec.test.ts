// The gcp provider's part of the spec, checked the way `kiln validate` checks a file: loadSpec,
// then checkSpec with the gcp provider's spec. Each problem must name its field, with the file,
// line and column, and cite the published rule.
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { checkSpec, isKilnError, loadSpec, resolveTarget, validateSpec, type SpecIssue } from "@kilnjs/core";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { GCE_KILN_INSTANCE_LABEL_COUNT } from "./labels.js";
import { GCE_LABEL_RULES, GCE_RULE_URLS } from "./rules.js";
import { GCP_MAX_INSTANCE_COUNT, gcpProviderSpec, type GcpInstanceSettings } from "./spec.js";

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(path.join(tmpdir(), "kiln-gcp-spec-"));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** What `kiln validate` reports for `yaml`: its issues, or [] when the spec is valid. */
async function validate(lines: string[]): Promise<SpecIssue[]> {
  const file = path.join(dir, "kiln.yaml");
  await writeFile(file, [...lines, ""].join("\n"));
  try {
    await checkSpec(await loadSpec(file), { providerSpec: () => Promise.resolve(gcpProviderSpec), references: false });
    return [];
  } catch (error) {
    if (isKilnError(error) && error.code === "SPEC_INVALID") return error.details.issues as SpecIssue[];
    throw error;
  }
}

/** `path @ line:column` of each issue, for compact expectations. */
const where = (issues: SpecIssue[]) => issues.map((issue) => `${issue.path.join(".")} @ ${issue.line}:${issue.column}`);

const HEAD = ["service: web", "provider: gcp", "image:", "  machine:", "    provision: [{ run: 'apt-get install -y nginx' }]", "    base:", "      gcp: { family: debian-12, project: debian-cloud }"];

describe("the gcp provider's spec sections", () => {
  it("accepts a full spec and applies the documented defaults", async () => {
    const issues = await validate([
      ...HEAD,
      "instances:",
      "  count: 2",
      "  ports: [{ name: http, port: 8080 }]",
      "  labels: { team: payments, cost-centre: '42' }",
      "  gcp:",
      "    project: my-project-123",
      "    zone: europe-west1-b",
      "    subnetwork: projects/host-project/regions/europe-west1/subnetworks/apps",
      "    serviceAccount: { email: web@my-project-123.iam.gserviceaccount.com }",
      "    metadata: { app-mode: production }",
      "    bootDisk: { sizeGb: 20 }",
      "traffic:",
      "  loadBalancer:",
      "    gcp: { backendService: web-backend, instanceGroup: web-group }",
    ]);
    expect(issues).toEqual([]);
    const result = validateSpec(
      { service: "web", provider: "gcp", image: { machine: { provision: [{ run: "true" }], base: { gcp: { family: "debian-12", project: "debian-cloud" } } } }, instances: { gcp: { zone: "europe-west1-b" } } },
      { providers: { gcp: gcpProviderSpec } },
    );
    if (!result.ok) throw new Error(JSON.stringify(result.issues));
    const resolved = resolveTarget(result.value, "default", dir);
    expect(resolved.instance.providerSettings as GcpInstanceSettings).toEqual({ zone: "europe-west1-b", machineType: "e2-small", metadata: {}, bootDisk: { type: "pd-balanced" } });
    expect(resolved.machine?.builder).toEqual({ machineType: "e2-medium", bootDisk: { type: "pd-balanced" }, labels: {} });
  });

  it("requires image.machine and a base image that is an image or a family, not both", async () => {
    expect(where(await validate(["service: web", "provider: gcp"]))).toEqual(["image.machine @ 1:1"]);
    const both = await validate([...HEAD.slice(0, 6), "      gcp: { family: debian-12, image: my-image }"]);
    expect(where(both)).toEqual(["image.machine.base.gcp @ 7:12"]);
    expect(both[0]!.message).toContain("not both");
    const neither = await validate([...HEAD.slice(0, 6), "      gcp: { project: debian-cloud }"]);
    expect(neither[0]!.message).toContain("give the base image's name (image) or a family");
  });

  it("points at each Compute Engine name that breaks the published rule, citing it", async () => {
    const issues = await validate([
      ...HEAD.slice(0, 6),
      "      gcp: { family: Debian_12 }",
      "    builder:",
      "      gcp: { imageFamily: web-, machineType: 'e2 small' }",
      "instances:",
      "  ports: [{ name: http, port: 8080 }]",
      "  gcp:",
      "    network: 1-net",
      "    subnetwork: regions/europe-west1/subnets/x",
      "traffic:",
      "  loadBalancer:",
      `    gcp: { backendService: ${"b".repeat(64)}, instanceGroup: web-group, port: admin }`,
    ]);
    expect(where(issues)).toEqual([
      "image.machine.base.gcp.family @ 7:22",
      "image.machine.builder.gcp.imageFamily @ 9:27",
      "image.machine.builder.gcp.machineType @ 9:46",
      "instances.gcp.network @ 13:14",
      "instances.gcp.subnetwork @ 14:17",
      "traffic.loadBalancer.gcp.backendService @ 17:28",
      "traffic.loadBalancer.gcp.port @ 17:126",
    ]);
    const cited = issues.filter((issue) => !issue.path.includes("port") && !issue.path.includes("subnetwork"));
    for (const issue of cited) expect(issue.message).toContain(GCE_RULE_URLS.names);
    expect(issues.find((issue) => issue.path.at(-1) === "backendService")!.message).toContain("1 to 63 characters");
  });

  it("applies Compute Engine's label rules to instance and bake labels, counting Kiln's own", async () => {
    const bad = await validate([
      ...HEAD,
      "    builder:",
      "      gcp:",
      "        labels: { Team: x, kiln-owner: y, env: Prod }",
      "instances:",
      "  labels:",
      "    dev.team: x",
      `    long: ${"v".repeat(64)}`,
      "    ok: ''",
      "    ラベル: 値",
      `    ünicode: ${"ア".repeat(43)}`,
    ]);
    expect(where(bad)).toEqual([
      "image.machine.builder.gcp.labels.Team @ 10:25",
      "image.machine.builder.gcp.labels.kiln-owner @ 10:40",
      "image.machine.builder.gcp.labels.env @ 10:48",
      "instances.labels.dev.team @ 13:15",
      "instances.labels.long @ 14:11",
      "instances.labels.ünicode @ 17:14",
    ]);
    for (const issue of bad.filter((entry) => entry.path.at(-1) !== "kiln-owner")) expect(issue.message).toContain(GCE_RULE_URLS.labels);
    // ア is three bytes: 43 characters fit the length rule (63) but not the 128 bytes.
    expect(bad[5]!.message).toContain("at most 128 bytes");
    const room = GCE_LABEL_RULES.maxLabels - GCE_KILN_INSTANCE_LABEL_COUNT;
    const labels = (count: number) => Array.from({ length: count }, (_, index) => `    team-${index}: x`);
    expect(await validate([...HEAD, "instances:", "  labels:", ...labels(room)])).toEqual([]);
    const tooMany = await validate([...HEAD, "instances:", "  labels:", ...labels(room + 1)]);
    expect(where(tooMany)).toEqual(["instances.labels @ 10:5"]);
    expect(tooMany[0]!.message).toContain(`Kiln adds ${GCE_KILN_INSTANCE_LABEL_COUNT} of its own`);
  });

  it("checks metadata keys, sizes and Kiln's reserved keys, citing the Metadata reference", async () => {
    const big = "x".repeat(200 * 1024);
    const issues = await validate([
      ...HEAD,
      "instances:",
      "  gcp:",
      "    metadata:",
      "      startup-script: echo hi",
      "      kiln-state: x",
      "      'bad.key': x",
      `      huge: ${"y".repeat(256 * 1024 + 1)}`,
      `      a: ${big}`,
      `      b: ${big}`,
    ]);
    expect(where(issues)).toEqual([
      "instances.gcp.metadata @ 11:7",
      "instances.gcp.metadata.startup-script @ 11:23",
      "instances.gcp.metadata.kiln-state @ 12:19",
      "instances.gcp.metadata.bad.key @ 13:18",
      "instances.gcp.metadata.huge @ 14:13",
    ]);
    expect(issues[1]!.message).toContain("image.machine.provision");
    expect(issues[4]!.message).toContain("256 KiB");
    expect(issues[0]!.message).toMatch(/under 524288 bytes \(512 KiB\); these have \d+/);
    expect(issues[0]!.message).toContain(GCE_RULE_URLS.metadata);
  });

  it("refuses what the provider cannot do, and a zone outside the region", async () => {
    const issues = await validate([
      ...HEAD,
      "instances:",
      "  ports: [{ name: http, port: 80 }]",
      "  gcp: { zone: europe-west1-b, region: us-central1 }",
      "health: { command: { command: ['true'] } }",
      "traffic: { proxy: { port: 8080 } }",
    ]);
    expect(where(issues)).toEqual(["instances.gcp.region @ 10:40", "health.command @ 11:20", "traffic.proxy @ 12:19"]);
    expect(await validate([...HEAD, "instances:", "  gcp: { project: 'Not A Project' }"])).toEqual([expect.objectContaining({ path: ["instances", "gcp", "project"], message: expect.stringContaining("project id") })]);
  });

  it("allows GCP_MAX_INSTANCE_COUNT instances and refuses more at instances.count", async () => {
    expect(await validate([...HEAD, "instances:", `  count: ${GCP_MAX_INSTANCE_COUNT}`])).toEqual([]);
    const issues = await validate([...HEAD, "instances:", `  count: ${GCP_MAX_INSTANCE_COUNT + 1}`]);
    expect(where(issues)).toEqual(["instances.count @ 9:10"]);
    expect(issues[0]!.message).toContain(`maxInstanceCount is ${GCP_MAX_INSTANCE_COUNT}`);
  });

  it("says where traffic goes in a plan and what the base image is in words", () => {
    const result = validateSpec(
      {
        service: "web",
        provider: "gcp",
        image: { machine: { provision: [{ run: "true" }], base: { gcp: { image: "base-2026", project: "my-project-123" } } } },
        instances: { ports: [{ name: "http", port: 8080 }] },
        traffic: { loadBalancer: { gcp: { backendService: "web-backend", instanceGroup: "web-group", region: "europe-west1" } } },
      },
      { providers: { gcp: gcpProviderSpec } },
    );
    if (!result.ok) throw new Error(JSON.stringify(result.issues));
    const resolved = resolveTarget(result.value, "default", dir);
    const sections = { instances: undefined, builder: undefined, base: resolved.machine?.base as never, loadBalancer: resolved.traffic.loadBalancer as never };
    expect(gcpProviderSpec.planLines?.(resolved, sections)).toEqual([expect.stringMatching(/^traffic: regional backend service web-backend \(europe-west1\) → instance group web-group, port http;/)]);
    expect(gcpProviderSpec.fingerprint?.(resolved, sections)).toEqual({ baseImages: ["gcp: image base-2026 in my-project-123"] });
  });
});
