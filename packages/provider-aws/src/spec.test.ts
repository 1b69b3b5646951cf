import { LABELS, resolveTarget, validateSpec as validateCore, type SpecIssue, type SpecValidation } from "@kilnjs/core";
import { describe, expect, it } from "vitest";
import { AWS_KILN_TAG_COUNT, AWS_MAX_INSTANCE_COUNT, AWS_TAG_RULES, amiNameProblem, awsProviderSpec, awsTagProblems, type AwsInstanceSettings } from "./spec.js";

/** Validates with the aws provider's spec, as the CLI and `createKiln` do once the provider is known. */
const validateSpec = (input: unknown): SpecValidation => validateCore(input, { providers: { aws: awsProviderSpec } });

function issuesOf(result: SpecValidation): SpecIssue[] {
  if (result.ok) throw new Error("expected issues, the spec was valid");
  return result.issues;
}

const machine = {
  provision: [{ file: { from: "dist", to: "/opt/app" } }, { run: "systemctl enable app" }],
  base: { aws: { name: "debian-12-amd64-*", owners: ["136693071363"] } },
};

describe("machine images and the aws provider in the spec", () => {
  it("accepts a VM spec and resolves the machine recipe, the instance settings and the target group", () => {
    const result = validateSpec({
      service: "web",
      provider: "aws",
      image: { machine },
      instances: { count: 2, ports: [{ name: "http", port: 8080 }], aws: { instanceType: "t3.small", subnetIds: ["subnet-a", "subnet-b"] } },
      traffic: { loadBalancer: { aws: { targetGroupArn: "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/web/0123456789abcdef" } } },
    });
    if (!result.ok) throw new Error(JSON.stringify(result.issues));
    const resolved = resolveTarget(result.value, "default", "/srv/web");
    expect(resolved.machine).toEqual({
      provision: [
        { kind: "file", from: "/srv/web/dist", to: "/opt/app" },
        { kind: "run", command: "systemctl enable app" },
      ],
      base: { name: "debian-12-amd64-*", owners: ["136693071363"] },
      builder: { instanceType: "t3.small", securityGroupIds: [], amiName: "kiln-{service}-{fingerprint}" },
      timeoutMs: 1_800_000,
    });
    expect(resolved.instance.providerSettings).toMatchObject({ instanceType: "t3.small", subnetIds: ["subnet-a", "subnet-b"], address: "private", blockDevices: [] });
    expect(resolved.traffic.loadBalancer).toEqual({ targetGroupArn: expect.stringContaining("targetgroup/web/") as unknown });
    // The plan names the target group and the port its targets are registered on.
    expect(awsProviderSpec.planLines?.(resolved, { instances: undefined, base: undefined, builder: undefined, loadBalancer: resolved.traffic.loadBalancer as never })).toEqual([
      expect.stringMatching(/^traffic: target group arn:aws:elasticloadbalancing:.* → port http;/),
    ]);
  });

  it("requires image.machine and a base AMI for aws, and one action per step", () => {
    expect(issuesOf(validateSpec({ service: "web", provider: "aws" })).map((issue) => issue.path.join("."))).toEqual(["image.machine"]);
    const issues = issuesOf(
      validateSpec({ service: "web", provider: "aws", image: { machine: { provision: [{ run: "a", shell: "b.sh" }, {}], base: {} } } }),
    );
    expect(issues.map((issue) => [issue.path.join("."), issue.message])).toEqual([
      ["image.machine.provision.0", expect.stringContaining("one of shell and run") as unknown],
      ["image.machine.provision.1", "a step needs one of file, shell and run"],
      ["image.machine.base.aws", expect.stringContaining("required") as unknown],
    ]);
  });

  it("checks the base: an id or a name, and owners with a name", () => {
    const base = (aws: object) => validateSpec({ service: "web", provider: "aws", image: { machine: { ...machine, base: { aws } } } });
    expect(issuesOf(base({ id: "ami-0123456789abcdef0", name: "x" }))[0]?.message).toContain("not both");
    expect(issuesOf(base({ name: "debian-*" }))[0]?.path.join(".")).toBe("image.machine.base.aws.owners");
    expect(issuesOf(base({ id: "ami-xyz" }))[0]?.message).toContain("an AMI id");
    expect(base({ id: "ami-0123456789abcdef0" }).ok).toBe(true);
  });

  it("applies AWS's tag rules to instance labels, counting Kiln's own tags", () => {
    const labels = Object.fromEntries(Array.from({ length: AWS_TAG_RULES.maxTags - AWS_KILN_TAG_COUNT + 1 }, (_, index) => [`team-${index}`, "x"]));
    const tooMany = issuesOf(validateSpec({ service: "web", provider: "aws", image: { machine }, instances: { labels } }));
    expect(tooMany[0]?.path.join(".")).toBe("instances.labels");
    expect(tooMany[0]?.message).toContain(`Kiln adds ${AWS_KILN_TAG_COUNT}`);
    const bad = issuesOf(validateSpec({ service: "web", provider: "aws", image: { machine }, instances: { labels: { "aws:owner": "me", ["k".repeat(129)]: "v", team: "v".repeat(257) } } }));
    expect(bad.map((issue) => issue.path.at(-1))).toEqual(["aws:owner", "k".repeat(129), "team"]);
    expect(bad.every((issue) => issue.message.includes("tag restrictions"))).toBe(true);
    // The same labels are fine for docker, which has no such limits.
    expect(validateSpec({ service: "web", instances: { labels: { "aws:owner": "me" } } }).ok).toBe(true);
    expect(Object.keys(LABELS).length).toBeLessThan(AWS_KILN_TAG_COUNT);
    expect(awsTagProblems({ fine: "yes" }, AWS_KILN_TAG_COUNT)).toEqual([]);
  });

  it("checks AMI names, user data size, launch templates and where a load balancer or proxy fits", () => {
    expect(amiNameProblem("ok-name (v1) [x] 1.0/2_@'")).toBeUndefined();
    expect(amiNameProblem("ab")).toContain("3 to 128");
    expect(amiNameProblem("name:with:colons")).toContain('":"');
    const name = issuesOf(validateSpec({ service: "web", provider: "aws", image: { machine: { ...machine, builder: { aws: { amiName: "kiln-{service}" } } } } }));
    expect(name.map((issue) => [issue.path.join("."), issue.message])).toEqual([["image.machine.builder.aws.amiName", expect.stringContaining("{fingerprint}") as unknown]]);
    const badChars = issuesOf(validateSpec({ service: "web", provider: "aws", image: { machine: { ...machine, builder: { aws: { amiName: "web:{fingerprint}" } } } } }));
    expect(badChars[0]?.message).toContain("EC2 CreateImage");
    const issues = issuesOf(
      validateSpec({
        service: "web",
        provider: "aws",
        image: { machine },
        instances: { ports: [{ name: "http", port: 80 }], aws: { userData: "x".repeat(16 * 1024 + 1), launchTemplate: { version: "1" } } },
        traffic: { proxy: { port: 8080 } },
      }),
    ).map((issue) => issue.path.join("."));
    expect(issues).toEqual(expect.arrayContaining(["instances.aws.userData", "instances.aws.launchTemplate", "traffic.proxy"]));
    const docker = issuesOf(
      validateSpec({ service: "web", instances: { ports: [{ name: "http", port: 80 }] }, traffic: { loadBalancer: { aws: { targetGroupArn: "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/web/0123abcd" } } } }),
    );
    expect(docker[0]?.message).toContain("needs the aws provider");
  });

  it("lets an environment switch to aws, and reports its problems under the environment", () => {
    const ok = validateSpec({ service: "web", image: { machine }, environments: { prod: { provider: "aws", instances: { aws: { instanceType: "m7g.large" } } } } });
    if (!ok.ok) throw new Error(JSON.stringify(ok.issues));
    expect((resolveTarget(ok.value, "prod", "/srv").instance.providerSettings as AwsInstanceSettings | undefined)?.instanceType).toBe("m7g.large");
    expect(resolveTarget(ok.value, "default", "/srv").provider).toBe("docker");
    const missing = issuesOf(validateSpec({ service: "web", environments: { prod: { provider: "aws" } } }));
    expect(missing.map((issue) => issue.path.join("."))).toEqual(["environments.prod.image.machine"]);
  });
});

describe("how many instances a target runs on EC2", () => {
  it("allows AWS_MAX_INSTANCE_COUNT and refuses more at instances.count, naming the limit", () => {
    const spec = (count: number) => ({ service: "web", provider: "aws", image: { machine }, instances: { count } });
    expect(validateSpec(spec(AWS_MAX_INSTANCE_COUNT)).ok).toBe(true);
    expect(issuesOf(validateSpec(spec(AWS_MAX_INSTANCE_COUNT + 1)))).toEqual([
      expect.objectContaining({ path: ["instances", "count"], message: expect.stringContaining(`the aws provider runs for one target (its maxInstanceCount is ${AWS_MAX_INSTANCE_COUNT})`) }),
    ]);
  });
});
