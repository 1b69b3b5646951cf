import { chmod, mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SecretValue } from "@kilnjs/core";
import type { DockerImageRecipe } from "./build-context.js";
import { buildkitArguments, buildkitEnvironment, buildkitFailure, buildkitLineProgress, findBuildkitCli, probeBuildkitCli } from "./buildkit.js";
import { parseDockerHost } from "./options.js";

const recipe: DockerImageRecipe = {
  target: { service: "web", environment: "prod" },
  fingerprint: "sha256:" + "b".repeat(64),
  dockerfile: {
    kind: "dockerfile",
    contextDir: "/ctx",
    dockerfilePath: "/ctx/Dockerfile",
    files: ["Dockerfile"],
    args: { NODE_ENV: "production" },
    stage: "runtime",
    secrets: new Map([
      ["npm", new SecretValue("npm-value-1")],
      ["aws.creds", new SecretValue("aws-value-2")],
    ]),
  },
};

describe("BuildKit through the docker CLI", () => {
  it("names secrets by id and variable in argv, and puts their values only in the child's environment", () => {
    const args = buildkitArguments({ cli: { command: "docker", kind: "builtin" }, recipe, tag: "kiln/web:bbbbbbbbbbbb", dockerfile: "Dockerfile", labels: { "dev.kiln.managed": "true" }, secretIds: ["npm", "aws.creds"] });
    expect(args).toEqual([
      "build",
      "--progress=plain",
      "--file",
      "Dockerfile",
      "--tag",
      "kiln/web:bbbbbbbbbbbb",
      "--label",
      "dev.kiln.managed=true",
      "--build-arg",
      "NODE_ENV=production",
      "--target",
      "runtime",
      "--secret",
      "id=npm,env=KILN_BUILD_SECRET_0",
      "--secret",
      "id=aws.creds,env=KILN_BUILD_SECRET_1",
      "-",
    ]);
    expect(buildkitArguments({ cli: { command: "docker", kind: "buildx" }, recipe, tag: "t", dockerfile: "D", labels: {}, secretIds: [] }).slice(0, 3)).toEqual(["buildx", "build", "--load"]);
    const env = buildkitEnvironment(parseDockerHost("unix:///tmp/e.sock"), [...recipe.dockerfile.secrets!.values()], { PATH: "/bin", DOCKER_CONTEXT: "remote", DOCKER_HOST: "tcp://elsewhere:2375", DOCKER_TLS_VERIFY: "1" });
    expect(env).toEqual({ PATH: "/bin", DOCKER_HOST: "unix:///tmp/e.sock", DOCKER_BUILDKIT: "1", KILN_BUILD_SECRET_0: "npm-value-1", KILN_BUILD_SECRET_1: "aws-value-2" });
  });

  it("turns plain progress into steps and logs, and finds the build's error", () => {
    expect(buildkitLineProgress("#5 [2/3] RUN --mount=type=secret,id=npm npm ci")).toEqual({ type: "image.build.step", step: 2, total: 3, description: "RUN --mount=type=secret,id=npm npm ci" });
    expect(buildkitLineProgress("#7 [build 4/6] COPY . .")).toEqual({ type: "image.build.step", step: 4, total: 6, description: "COPY . ." });
    expect(buildkitLineProgress("#1 [internal] load build definition from Dockerfile")).toEqual({ type: "image.build.log", message: "#1 [internal] load build definition from Dockerfile" });
    const output = [
      "#5 [2/2] RUN exit 3",
      "#5 ERROR: executor failed running [/bin/sh -c exit 3]: exit code: 3",
      "------",
      " > [2/2] RUN exit 3:",
      "------",
      "error: failed to solve: rpc error: code = Unknown desc = executor failed running [/bin/sh -c exit 3]: exit code: 3",
    ];
    expect(buildkitFailure(output)).toBe("failed to solve: rpc error: code = Unknown desc = executor failed running [/bin/sh -c exit 3]: exit code: 3");
    expect(buildkitFailure(["something odd", ""])).toBe("something odd");
  });
});

describe("finding a BuildKit-capable docker CLI", () => {
  let dir: string;
  /** A fake `docker` that answers the probes as `kind` says. */
  async function fakeCli(name: string, kind: "buildx" | "builtin" | "none"): Promise<string> {
    const file = path.join(dir, name);
    const script = {
      buildx: 'if [ "$1" = buildx ]; then echo "github.com/docker/buildx v0.12.1"; exit 0; fi; exit 1',
      builtin: 'if [ "$1" = build ] && [ "$DOCKER_BUILDKIT" = 1 ]; then echo "      --secret stringArray      Secret file to expose to the build"; exit 0; fi; exit 1',
      none: "echo 'ERROR: BuildKit is enabled but the buildx component is missing or broken.' >&2; exit 1",
    }[kind];
    await writeFile(file, `#!/bin/sh\n${script}\n`);
    await chmod(file, 0o755);
    return file;
  }
  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "kiln-buildkit-cli-"));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("tells buildx from a CLI with BuildKit built in, and from one without either", async () => {
    expect(await probeBuildkitCli(await fakeCli("with-buildx", "buildx"))).toMatchObject({ kind: "buildx" });
    expect(await probeBuildkitCli(await fakeCli("builtin", "builtin"))).toMatchObject({ kind: "builtin" });
    expect(await probeBuildkitCli(await fakeCli("none", "none"))).toBeUndefined();
    expect(await probeBuildkitCli(path.join(dir, "missing"))).toBeUndefined();
  });

  it("says what to install or set, and names a CLI of this machine that would do", async () => {
    const none = await fakeCli("none", "none");
    const bin = path.join(dir, "bin");
    await mkdir(bin);
    const capable = path.join(bin, "docker");
    await writeFile(capable, `#!/bin/sh\nif [ "$1" = buildx ]; then exit 0; fi; exit 1\n`);
    await chmod(capable, 0o755);
    const error = await findBuildkitCli(none, true, { PATH: bin }).catch((caught: unknown) => caught);
    expect(error).toMatchObject({ code: "CAPABILITY_MISSING" });
    expect((error as Error).message).toMatch(/buildx plugin/);
    expect((error as Error).message).toContain(`set KILN_DOCKER_CLI=${capable}`);
    await expect(findBuildkitCli(capable, false, { PATH: bin })).resolves.toEqual({ command: capable, kind: "buildx" });
  });
});
