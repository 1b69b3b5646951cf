// The aws secret store's references in the spec (`secrets.<name>.from.aws`): AWS's naming rules,
// one store per source, and what validation says to a target whose EC2 instances would receive one.
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { resolveTarget, validateSpec as validateCore, type SpecIssue, type SpecValidation } from "@kilnjs/core";
import { describe, expect, it } from "vitest";
import { AWS_SECRET_STORE_RULES, awsSecretSourceSchema, parameterNameProblem, secretIdProblem } from "./secret-source.js";
import { awsProviderSpec } from "./spec.js";

const validateSpec = (input: unknown): SpecValidation => validateCore(input, { providers: { aws: awsProviderSpec } });

function issuesOf(result: SpecValidation): SpecIssue[] {
  if (result.ok) throw new Error("expected issues, the spec was valid");
  return result.issues;
}

/** A Docker target (docker's spec not loaded: lenient) whose secret DB comes from `aws`. */
const dockerTarget = (aws: unknown) => ({ service: "web", secrets: { DB: { from: { aws } } } });

describe("Secrets Manager secret ids", () => {
  it("accepts names and ARNs as AWS documents them", () => {
    for (const id of ["prod/web/db", "a", "x+y=z.@_-/w", "n".repeat(AWS_SECRET_STORE_RULES.maxSecretNameLength), "arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/db-AbCdEf", "arn:aws-cn:secretsmanager:cn-north-1:123456789012:secret:db-a1b2c3"]) {
      expect(secretIdProblem(id), id).toBeUndefined();
    }
  });

  it("says which rule an id breaks: the character, the length, the ARN's shape", () => {
    expect(secretIdProblem("prod db")).toMatch(/" " \(character 5\) is not allowed/);
    expect(secretIdProblem("café")).toMatch(/"é" \(character 4\)/);
    expect(secretIdProblem("n".repeat(513))).toMatch(/at most 512 characters .*has 513/);
    expect(secretIdProblem("arn:aws:s3:::bucket")).toMatch(/arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME/);
    expect(secretIdProblem(`arn:aws:secretsmanager:us-east-1:123456789012:secret:${"n".repeat(2048)}`)).toMatch(/ARN is at most 2048/);
  });
});

describe("Parameter Store names", () => {
  it("accepts plain names, hierarchies up to 15 levels, and ARNs", () => {
    const fifteen = `/${Array.from({ length: 15 }, (_, index) => `l${index}`).join("/")}`;
    for (const name of ["db-password", "/prod/web/db_password.v2", fifteen, "arn:aws:ssm:us-east-1:123456789012:parameter/prod/web/token", "/aws/reference/secretsmanager/prod/db"]) {
      expect(parameterNameProblem(name), name).toBeUndefined();
    }
  });

  it("says which rule a name breaks", () => {
    expect(parameterNameProblem("prod/web")).toMatch(/starts with \//);
    expect(parameterNameProblem("/prod//web")).toMatch(/no empty level/);
    expect(parameterNameProblem("/prod/web/")).toMatch(/no empty level/);
    expect(parameterNameProblem(`/${Array.from({ length: 16 }, () => "l").join("/")}`)).toMatch(/at most 15 levels .*has 16/);
    expect(parameterNameProblem("/prod/db password")).toMatch(/" " \(character 9\) is not allowed/);
    expect(parameterNameProblem("/prod/db:3")).toMatch(/":"/);
    expect(parameterNameProblem(`/${"p".repeat(1011)}`)).toMatch(/at most 1011 characters .*has 1012/);
    expect(parameterNameProblem("arn:aws:ssm:us-east-1:parameter/x")).toMatch(/arn:aws:ssm:REGION:ACCOUNT:parameter\/NAME/);
  });
});

describe("secrets.<name>.from.aws in a spec", () => {
  it("takes exactly one store, with Secrets Manager's default version stage", () => {
    expect(awsSecretSourceSchema.parse({ secretsManager: { id: "prod/db", key: "password" } })).toEqual({ secretsManager: { id: "prod/db", key: "password", versionStage: "AWSCURRENT" } });
    expect(awsSecretSourceSchema.parse({ parameter: { name: "/prod/db" } })).toEqual({ parameter: { name: "/prod/db" } });
    const none = issuesOf(validateSpec(dockerTarget({})));
    expect(none.map((issue) => [issue.path.join("."), issue.message])).toEqual([["secrets.DB.from.aws", expect.stringMatching(/secretsManager: \{ id: NAME_OR_ARN \}` or `parameter/) as unknown]]);
    const both = issuesOf(validateSpec(dockerTarget({ secretsManager: { id: "a" }, parameter: { name: "/a" } })));
    expect(both[0]?.message).toMatch(/one AWS store, not secretsManager and parameter/);
  });

  it("reports a bad id or name where it is, with the AWS rule", () => {
    const secrets = { A: { from: { aws: { secretsManager: { id: "prod db", versionStage: "" } } } }, B: { from: { aws: { parameter: { name: "prod/b" } } } } };
    const issues = issuesOf(validateSpec({ service: "web", secrets }));
    expect(issues.map((issue) => [issue.path.join("."), issue.message])).toEqual([
      ["secrets.A.from.aws.secretsManager.id", expect.stringContaining("Secrets Manager CreateSecret") as unknown],
      ["secrets.A.from.aws.secretsManager.versionStage", expect.stringContaining("a staging label") as unknown],
      ["secrets.B.from.aws.parameter.name", expect.stringContaining("starts with /") as unknown],
    ]);
    expect(issuesOf(validateSpec(dockerTarget({ secretsManager: { id: "a", stage: "x" } })))[0]).toMatchObject({ kind: "unknown-key", path: ["secrets", "DB", "from", "aws", "secretsManager", "stage"] });
  });

  it("lets a Docker target read an AWS secret, as a store reference", () => {
    const result = validateSpec(dockerTarget({ parameter: { name: "/prod/db" } }));
    if (!result.ok) throw new Error(JSON.stringify(result.issues));
    expect(resolveTarget(result.value, "default", "/srv").secrets).toEqual([{ name: "DB", source: { kind: "store", provider: "aws", reference: { parameter: { name: "/prod/db" } } }, to: { kind: "env", name: "DB" } }]);
  });

  it("tells an aws target that its EC2 instances read their own secrets, and where to declare one instead", () => {
    const machine = { provision: [{ run: "true" }], base: { aws: { id: "ami-0123456789abcdef0" } } };
    const top = issuesOf(validateSpec({ service: "web", provider: "aws", image: { machine }, secrets: { DB: { from: { env: "DB" } } } }));
    expect(top.map((issue) => issue.path.join("."))).toEqual(["secrets.DB.to.env"]);
    expect(top[0]!.message).toMatch(/the aws provider cannot hand secrets to its instances: they read their own when they start/);
    expect(top[0]!.message).toMatch(/Remove secrets\.DB here/);
    // A Docker service whose prod runs on aws: the top-level secret reaches prod, and the message says where to move it.
    const prod = issuesOf(validateSpec({ service: "web", image: { machine }, secrets: { DB: { from: { aws: { parameter: { name: "/db" } } }, to: { file: "/run/db" } } }, environments: { prod: { provider: "aws" } } }));
    expect(prod.map((issue) => issue.path.join("."))).toEqual(["environments.prod.secrets.DB.to.file"]);
    expect(prod[0]!.message).toMatch(/declare it under environments\.<name>\.secrets of those whose provider can hand it over/);
  });
});

describe("lazy loading", () => {
  const dist = fileURLToPath(new URL("../dist/index.cjs", import.meta.url));
  it.skipIf(!existsSync(dist))("loads no AWS SDK to create the provider and validate a spec with aws secrets", () => {
    const script = `
      const aws = require(${JSON.stringify(dist)});
      const core = require("@kilnjs/core");
      const provider = aws.createAwsProvider({ region: "us-east-1" });
      const result = core.validateSpec({ service: "web", secrets: { A: { from: { aws: { secretsManager: { id: "prod/db" } } } }, B: { from: { aws: { parameter: { name: "/p" } } } } } }, { providers: { aws: provider.spec } });
      if (!result.ok || typeof provider.secrets.read !== "function") throw new Error("unexpected: " + JSON.stringify(result.issues));
      console.log(JSON.stringify(Object.keys(require.cache).filter((k) => /@aws-sdk|@smithy/.test(k))));`;
    const loaded = execFileSync(process.execPath, ["-e", script], { encoding: "utf8", cwd: fileURLToPath(new URL("..", import.meta.url)) });
    expect(JSON.parse(loaded)).toEqual([]);
  });
});
