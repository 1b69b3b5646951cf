// The docker provider's spec rules for secrets, checked the way `kiln validate` checks a file:
// loadSpec, then checkSpec with the docker provider's spec.
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { checkSpec, isKilnError, loadSpec, type SpecIssue } from "@kilnjs/core";
import { DOCKER_MAX_INSTANCE_COUNT, dockerProviderSpec } from "./spec.js";

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(path.join(tmpdir(), "kiln-docker-spec-"));
  await writeFile(path.join(dir, "Dockerfile"), "FROM kiln-local/busybox\n");
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** What `kiln validate` reports for `yaml`: its issues, or [] when the spec is valid. */
async function validate(yaml: string): Promise<SpecIssue[]> {
  const file = path.join(dir, "kiln.yaml");
  await writeFile(file, yaml);
  try {
    await checkSpec(await loadSpec(file), { providerSpec: () => Promise.resolve(dockerProviderSpec) });
    return [];
  } catch (error) {
    if (isKilnError(error) && error.code === "SPEC_INVALID") return error.details.issues as SpecIssue[];
    throw error;
  }
}

const paths = (issues: SpecIssue[]) => issues.map((issue) => issue.path.join("."));

describe("docker provider: secrets in the spec", () => {
  it("accepts secrets delivered as env and as files in a folder of their own", async () => {
    const issues = await validate(
      ["service: web", "provider: docker", "secrets:", "  DB_PASSWORD: { from: { env: DB_PASSWORD } }", "  TLS_KEY: { from: { env: TLS_KEY }, to: { file: /run/secrets/tls.key } }", "  CA: { from: { env: CA }, to: { file: /run/secrets/ca.pem } }", ""].join("\n"),
    );
    expect(issues).toEqual([]);
  });

  it("refuses a build argument named like a secret, and points at build secrets", async () => {
    const issues = await validate(["service: web", "provider: docker", "image:", "  dockerfile:", "    args: { NPM_TOKEN: abc, NODE_ENV: production }", ""].join("\n"));
    expect(paths(issues)).toEqual(["image.dockerfile.args.NPM_TOKEN"]);
    expect(issues[0]!.message).toMatch(/image\.dockerfile\.secrets.*RUN --mount=type=secret,id=NPM_TOKEN/);
  });

  it("refuses a file secret whose folder is a shared system folder, is not written plainly, or nests in another's", async () => {
    const issues = await validate(
      [
        "service: web",
        "provider: docker",
        "secrets:",
        "  A: { from: { env: A }, to: { file: /etc/a.key } }",
        "  B: { from: { env: B }, to: { file: /run/b } }",
        "  C: { from: { env: C }, to: { file: /run/secrets/../c } }",
        "  D: { from: { env: D }, to: { file: /run/secrets/d } }",
        "  E: { from: { env: E }, to: { file: /run/secrets/more/e } }",
        "  F: { from: { env: F }, to: { file: /proc/self/f } }",
        "",
      ].join("\n"),
    );
    expect(paths(issues).sort()).toEqual(["secrets.A.to.file", "secrets.B.to.file", "secrets.C.to.file", "secrets.E.to.file", "secrets.F.to.file"]);
    const byPath = Object.fromEntries(issues.map((issue) => [issue.path.join("."), issue.message]));
    expect(byPath["secrets.A.to.file"]).toMatch(/hide the image's \/etc.*\/run\/secrets\/a\.key/);
    expect(byPath["secrets.C.to.file"]).toMatch(/as \/run\/c/);
    expect(byPath["secrets.E.to.file"]).toMatch(/\/run\/secrets\/more lies inside \/run\/secrets, the folder of secrets\.D/);
  });
});

describe("docker provider: how many containers a target runs", () => {
  it("allows 1000 and refuses more at instances.count, naming its limit", async () => {
    expect(await validate("service: web\nprovider: docker\ninstances:\n  count: 1000\n")).toEqual([]);
    const issues = await validate("service: web\nprovider: docker\ninstances:\n  count: 1001\n");
    expect(paths(issues)).toEqual(["instances.count"]);
    expect(issues[0]).toMatchObject({ line: 4, column: 10, message: expect.stringContaining(`maxInstanceCount is ${DOCKER_MAX_INSTANCE_COUNT}`) });
  });
});

describe("docker provider: files the spec names", () => {
  it("reports a missing Dockerfile once, where it is declared, not again for each environment that inherits it", async () => {
    const spec = "service: web\nprovider: docker\nimage:\n  dockerfile: { context: ., file: Missing.Dockerfile }\nenvironments:\n  staging: {}\n  prod:\n    instances: { count: 2 }\n";
    const issues = await validate(spec);
    expect(paths(issues)).toEqual(["image.dockerfile.file"]);
    expect(issues[0]).toMatchObject({ line: 4, message: expect.stringContaining("Missing.Dockerfile does not exist") });
  });

  it("still reports an environment's own missing Dockerfile at the environment", async () => {
    const spec = "service: web\nprovider: docker\nimage:\n  dockerfile: { context: ., file: Dockerfile }\nenvironments:\n  prod:\n    image:\n      dockerfile: { file: Prod.Dockerfile }\n";
    const issues = await validate(spec);
    expect(paths(issues)).toEqual(["environments.prod.image.dockerfile.file"]);
  });
});
