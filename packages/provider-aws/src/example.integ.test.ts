// examples/aws/demo.ts as its README runs it, against moto: validate, bake and deploy 4 instances,
// change the version (a new AMI, 4 replaced), deploy unchanged (nothing happens), status, history.
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { motoEndpoint, requireMoto } from "@kilnjs/testkit";
import { motoEnvironment } from "./test-support.js";

const moto = await requireMoto();
const REPO_ROOT = fileURLToPath(new URL("../../../", import.meta.url));

describe.skipIf(!moto)("examples/aws/demo.ts (moto)", () => {
  it("runs the example end to end", async () => {
    const child = spawn(process.execPath, ["--import", "tsx", "examples/aws/demo.ts"], {
      cwd: REPO_ROOT,
      env: { ...process.env, ...motoEnvironment(motoEndpoint()), NO_COLOR: "1" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => (output += chunk));
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => (output += chunk));
    const code = await new Promise<number | null>((resolve) => child.on("close", resolve));
    expect(code, output).toBe(0);
    expect(output).toContain("release 1 of hello-web@moto serves");
    expect(output).toMatch(/release 2 of hello-web@moto serves/);
    expect(output).toMatch(/hello-web@moto is up to date \(release 2\): nothing built, nothing launched, nothing retired/);
    expect(output.match(/^\s+- \S+ retired$/gm)).toHaveLength(4);
  });
});
