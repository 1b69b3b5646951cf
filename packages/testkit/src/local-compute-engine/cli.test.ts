import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { describe, expect, test } from "vitest";
import { requireBuildOutput } from "../module-loads.js";
import { parseLocalComputeEngineArguments } from "./cli.js";

const bin = fileURLToPath(new URL("../../bin/kiln-local-compute-engine.js", import.meta.url));
const built = fileURLToPath(new URL("../../dist/local-compute-engine-bin.js", import.meta.url));

describe("kiln-local-compute-engine", () => {
  test("arguments become engine options; bad ones are refused with a hint", () => {
    expect(parseLocalComputeEngineArguments(["--port", "8089", "--project", "p1", "--zones", "europe-west1-b, europe-west1-c", "--instantaneous", "--faults", '{"throttle":{"rate":0.2}}'])).toEqual({
      port: 8089,
      project: "p1",
      zones: ["europe-west1-b", "europe-west1-c"],
      instantaneous: true,
      faults: { throttle: { rate: 0.2 } },
    });
    expect(parseLocalComputeEngineArguments(["--help"])).toBeUndefined();
    expect(() => parseLocalComputeEngineArguments(["--port", "http"])).toThrow(/--port must be a port number/);
    expect(() => parseLocalComputeEngineArguments(["--faults", "{"])).toThrow(/--faults must be JSON/);
    expect(() => parseLocalComputeEngineArguments(["--colour"])).toThrow(/kiln-local-compute-engine --help/);
  });

  test.runIf(requireBuildOutput(built))("the command prints the variables, serves the API there, and stops on SIGTERM", async () => {
    const child = spawn(process.execPath, [bin, "--project", "cli-test", "--instantaneous"], { stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    child.stdout.on("data", (chunk: Buffer) => (output += chunk.toString("utf8")));
    const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
    try {
      await expect.poll(() => output, { timeout: 15_000 }).toContain("KILN_GCE_ZONES=");
      const variables = Object.fromEntries(output.trim().split("\n").map((line) => line.split("=", 2) as [string, string]));
      expect(variables.KILN_GCE_ENDPOINT).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
      expect(variables).toMatchObject({ KILN_GCE_PROJECT: "cli-test", KILN_GCE_ZONE: "us-central1-a", KILN_GCE_ZONES: "us-central1-a,us-central1-b" });
      const response = await fetch(`${variables.KILN_GCE_ENDPOINT}/compute/v1/projects/cli-test/zones/us-central1-a/instances`);
      const list = (await response.json()) as Record<string, unknown>;
      expect(list).toMatchObject({ kind: "compute#instanceList", selfLink: "https://www.googleapis.com/compute/v1/projects/cli-test/zones/us-central1-a/instances" });
      expect(list).not.toHaveProperty("items");
    } finally {
      child.kill("SIGTERM");
    }
    expect(await exited).toBe(0);
  });
});
