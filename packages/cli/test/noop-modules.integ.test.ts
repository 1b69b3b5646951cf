/**
 * A deploy with nothing to do loads nothing it does not need (issue 13, cheaper no-op): against a
 * real Docker engine, after a first deploy of a copy of examples/hello-web, a second `kiln deploy`
 * finds the target up to date without loading dockerode or its transports (ssh2, @grpc/grpc-js,
 * protobufjs) or the live view's terminal library. A check of the modules loaded, not of time.
 */
import { afterAll, describe, expect, it } from "vitest";
import { requireDockerEngine, runTracingModules } from "@kilnjs/testkit";
import { KILN_BIN, Scratch, describeResult, dockerClient } from "./harness.js";

const engine = await requireDockerEngine();

/** What a no-op never needs: dockerode and what its import loads, tar-fs (build contexts), the live view. */
const NOT_ON_THE_NOOP_PATH = ["dockerode", "docker-modem", "ssh2", "@grpc/grpc-js", "@grpc/proto-loader", "protobufjs", "tar-fs", "log-update"];

describe.skipIf(!engine)("a no-op kiln deploy", () => {
  const docker = dockerClient();
  const scratch = new Scratch();

  afterAll(async () => {
    expect(await scratch.cleanUp(docker)).toEqual([]);
  });

  it("lists images and containers without loading dockerode, and a deploy that launches does load it", async () => {
    const app = await scratch.helloWeb(scratch.service("noop"));
    // The first deploy builds and launches: dockerode is needed, and the tracer sees it.
    const first = await runTracingModules([KILN_BIN, "deploy"], { cwd: app.dir, env: { ...process.env, NO_COLOR: "1" }, timeoutMs: 180_000 });
    expect(first.code, `${first.stdout}\n${first.stderr}`).toBe(0);
    expect(first.packages).toEqual(expect.arrayContaining(["dockerode", "ssh2", "@grpc/grpc-js", "protobufjs"]));

    const noop = await runTracingModules([KILN_BIN, "deploy"], { cwd: app.dir, env: { ...process.env, NO_COLOR: "1" }, timeoutMs: 60_000 });
    expect(noop.code, `${noop.stdout}\n${noop.stderr}`).toBe(0);
    expect(noop.stdout).toMatch(/is up to date \(release 1\): nothing built, nothing launched, nothing retired/);
    expect(noop.packages.filter((name) => NOT_ON_THE_NOOP_PATH.includes(name))).toEqual([]);

    // And the target is still what the first deploy made.
    const status = await app.kiln(["status", "--json"]);
    expect(status.code, describeResult(status)).toBe(0);
    expect(status.stdout).toContain('"release":{"number":1');
  });
});
