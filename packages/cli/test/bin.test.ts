// The `kiln` bin (packages/cli/bin/kiln.js): it must exist before any build, so that `npm ci` links
// it and `npx kiln` works in a checkout, then run the built CLI with its arguments, exit code and
// clean stdout, and say what to do when there is no build it can make.
import { spawnSync } from "node:child_process";
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterEach, describe, expect, it } from "vitest";

const PACKAGE_DIR = fileURLToPath(new URL("..", import.meta.url));
const BIN = path.join(PACKAGE_DIR, "bin/kiln.js");

const folders: string[] = [];
afterEach(() => {
  for (const folder of folders.splice(0)) rmSync(folder, { recursive: true, force: true });
});

/** A copy of the bin at `<root>/packages/cli/bin/kiln.js`, with the files `layout` names (path → content). */
function copyOfBin(layout: Record<string, string>): { root: string; bin: string } {
  const root = mkdtempSync(path.join(tmpdir(), "kiln-bin-"));
  folders.push(root);
  const bin = path.join(root, "packages/cli/bin/kiln.js");
  mkdirSync(path.dirname(bin), { recursive: true });
  copyFileSync(BIN, bin);
  // As in the real package: its .js files are ES modules.
  for (const [file, content] of Object.entries({ "packages/cli/package.json": '{ "name": "@kilnjs/cli", "type": "module" }', ...layout })) {
    mkdirSync(path.dirname(path.join(root, file)), { recursive: true });
    writeFileSync(path.join(root, file), content);
  }
  return { root, bin };
}

function run(bin: string, args: string[]) {
  const result = spawnSync(process.execPath, [bin, ...args], { encoding: "utf8", timeout: 30_000 });
  return { code: result.status, stdout: result.stdout, stderr: result.stderr };
}

describe("the kiln bin", () => {
  it("is the file package.json names, and runs the built CLI: kiln --version", () => {
    const manifest = JSON.parse(readFileSync(path.join(PACKAGE_DIR, "package.json"), "utf8")) as { version: string; bin: Record<string, string>; files: string[] };
    expect(path.resolve(PACKAGE_DIR, manifest.bin.kiln!)).toBe(BIN);
    expect(manifest.files, "the bin is published").toContain("bin");
    // npm ci links bins from the lockfile's copy of the manifest: a stale one links nothing.
    const lock = JSON.parse(readFileSync(path.join(PACKAGE_DIR, "../../package-lock.json"), "utf8")) as { packages: Record<string, { bin?: Record<string, string> }> };
    expect(path.resolve(PACKAGE_DIR, lock.packages["packages/cli"]?.bin?.kiln ?? "?"), "package-lock.json's bin of packages/cli").toBe(BIN);
    const result = run(BIN, ["--version"]);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout.trim()).toBe(manifest.version);
  });

  it("passes arguments, stdout and the exit code of dist/bin.js through", () => {
    const { bin } = copyOfBin({
      "packages/cli/dist/bin.js": 'process.stdout.write(JSON.stringify(process.argv.slice(2)));\nprocess.exitCode = 3;\n',
    });
    const result = run(bin, ["status", "--json", "-C", "some dir"]);
    expect(result.code).toBe(3);
    expect(result.stdout).toBe(JSON.stringify(["status", "--json", "-C", "some dir"]));
    expect(result.stderr).toBe("");
  });

  it("outside a checkout, a missing build is an incomplete package: exit 70 and what to do", () => {
    const { bin } = copyOfBin({});
    const result = run(bin, ["--version"]);
    expect(result.code).toBe(70);
    expect(result.stdout).toBe("");
    expect(result.stderr).toContain(`${path.join(path.dirname(bin), "../dist/bin.js")} is missing: this copy of @kilnjs/cli is incomplete; install it again`);
  });

  it("in a checkout without its dependencies installed, says to run npm ci and build: exit 70", () => {
    const { root, bin } = copyOfBin({ "turbo.json": "{}", "package.json": '{ "name": "kiln-monorepo", "private": true }', "packages/cli/src/bin.ts": "" });
    const result = run(bin, ["--version"]);
    expect(result.code).toBe(70);
    expect(result.stderr).toContain(`kiln: this checkout is not built and turbo is not installed; run npm ci, then npm run build, in ${root}${path.sep}`);
  });
});
