// `kiln --help` and `kiln validate` load only what they use (issue 13, start-up): no provider's
// operations or SDK, no dockerode, no lifecycle half of core, no live-view terminal library. A check
// of the modules the built CLI loads, not of time (timings are in scripts/bench/startup.ts).
import { cp, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { requireBuildOutput, runTracingModules, type TracedRun } from "@kilnjs/testkit";
import { describe, expect, it } from "vitest";

const REPO_ROOT = fileURLToPath(new URL("../../../", import.meta.url));
const BIN = path.join(REPO_ROOT, "packages/cli/dist/bin.js");

/** Packages no command that only reads a spec may load: SDKs, dockerode and its transports, the live view. */
const HEAVY_PACKAGES = /^(dockerode|docker-modem|ssh2|@grpc\/|protobufjs|tar-fs|@aws-sdk\/|@smithy\/|pg$|log-update|proper-lockfile|@balena\/dockerignore|fastify|hono)/;

/** The files of this repository's packages that the run loaded, as `<package>/dist/<file>` (chunks left out). */
function workspaceEntries(run: TracedRun): string[] {
  return run.files
    .map((file) => path.relative(path.join(REPO_ROOT, "packages"), file).split(path.sep).join("/"))
    .filter((file) => !file.startsWith("..") && !/\/chunk-[^/]+\.js$/.test(file))
    .sort();
}

/** Packages bundled into core's build (zod, yaml) and the command's (commander), never loaded as packages. */
const BUNDLED_PACKAGES = ["zod", "yaml", "commander"];

async function kiln(args: string[]): Promise<TracedRun> {
  const run = await runTracingModules([BIN, ...args], { env: { ...process.env, NO_COLOR: "1" } });
  expect(run.code, `kiln ${args.join(" ")}: ${run.stderr}`).toBe(0);
  return run;
}

/**
 * The most module files a command that only reads a spec may load. zod, yaml and commander are
 * bundled into core's and the command's builds (tsup.config.ts): as packages they were ~180 files,
 * and on Node 20 each ES module file costs start-up time.
 */
const MAX_FILES_READING_A_SPEC = 20;

describe.skipIf(!requireBuildOutput(BIN))("start-up of the built kiln", () => {
  it("kiln --help loads none of core, the providers or their SDKs, and commander as part of the command", async () => {
    const run = await kiln(["--help"]);
    expect(run.stdout).toContain("Usage: kiln");
    // commander parses the command line from inside dist/bin.js: the tracer sees no package of it.
    expect(run.packages.filter((name) => HEAVY_PACKAGES.test(name) || BUNDLED_PACKAGES.includes(name))).toEqual([]);
    expect(workspaceEntries(run).filter((file) => !file.startsWith("cli/"))).toEqual([]);
  });

  it("kiln validate on a docker spec loads the spec half of core and the docker provider's spec declaration only", async () => {
    const run = await kiln(["validate", "-C", path.join(REPO_ROOT, "examples/hello-web")]);
    expect(run.stdout).toContain("is valid");
    expect(run.packages.filter((name) => HEAVY_PACKAGES.test(name) || BUNDLED_PACKAGES.includes(name))).toEqual([]);
    expect(workspaceEntries(run).filter((file) => !file.startsWith("cli/"))).toEqual(["core/dist/spec.js", "provider-docker/dist/spec.js"]);
    expect(run.files.length).toBeLessThanOrEqual(MAX_FILES_READING_A_SPEC);
  });

  it("kiln validate on an aws spec loads the aws provider's spec declaration, not the AWS SDK", async () => {
    const run = await kiln(["validate", "-C", path.join(REPO_ROOT, "examples/aws")]);
    expect(run.stdout).toContain("is valid");
    // The aws provider's sections are built with core's `z`: no second zod is loaded.
    expect(run.packages.filter((name) => HEAVY_PACKAGES.test(name) || BUNDLED_PACKAGES.includes(name))).toEqual([]);
    expect(workspaceEntries(run).filter((file) => !file.startsWith("cli/"))).toEqual(["core/dist/spec.js", "provider-aws/dist/spec.js"]);
    expect(run.files.length).toBeLessThanOrEqual(MAX_FILES_READING_A_SPEC);
  });

  it("a command that runs a provider still loads it whole (the check above can fail)", async () => {
    // kiln plan on a spec whose engine is missing loads the provider and fails at its ping.
    const dir = await mkdtemp(path.join(tmpdir(), "kiln-startup-"));
    try {
      await cp(path.join(REPO_ROOT, "examples/hello-web"), dir, { recursive: true });
      const run = await runTracingModules([BIN, "plan", "-C", dir], {
        env: { ...process.env, NO_COLOR: "1", DOCKER_HOST: `unix://${path.join(dir, "no-engine-here.sock")}` },
      });
      expect(run.code, run.stderr).toBe(3);
      expect(workspaceEntries(run)).toEqual(expect.arrayContaining(["core/dist/index.js", "provider-docker/dist/index.js"]));
      expect(run.packages).toEqual(expect.arrayContaining(["proper-lockfile", "@balena/dockerignore"]));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
