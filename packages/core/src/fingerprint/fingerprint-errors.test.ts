import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import type * as FsPromises from "node:fs/promises";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";

// A file that vanishes between the walk and the read: `open` fails with ENOENT for it.
vi.mock("node:fs/promises", async (importOriginal) => {
  const actual = await importOriginal<typeof FsPromises>();
  return {
    ...actual,
    open: (file: string, ...rest: unknown[]) => {
      if (String(file).endsWith("vanishing.txt")) {
        return Promise.reject(Object.assign(new Error(`ENOENT: no such file or directory, open '${file}'`), { code: "ENOENT" }));
      }
      return (actual.open as (...args: unknown[]) => Promise<unknown>)(file, ...rest);
    },
  };
});

const { fingerprintBuild } = await import("./fingerprint.js");

let root: string;
beforeEach(async () => {
  root = await mkdtemp(path.join(tmpdir(), "kiln-fingerprint-errors-"));
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

describe("fingerprintBuild with a file that vanishes", () => {
  it("throws BUILD_CONTEXT_INVALID naming the file and keeping the cause", async () => {
    await mkdir(path.join(root, "src"));
    await writeFile(path.join(root, "Dockerfile"), "FROM kiln-local/busybox\n");
    await writeFile(path.join(root, "src", "vanishing.txt"), "soon gone");
    for (let index = 0; index < 50; index++) await writeFile(path.join(root, "src", `f${index}.txt`), String(index));
    const error = await fingerprintBuild({ contextDir: root, dockerfilePath: path.join(root, "Dockerfile") }).catch((caught: unknown) => caught);
    expect(error).toMatchObject({ name: "KilnError", code: "BUILD_CONTEXT_INVALID", details: { path: "src/vanishing.txt", errno: "ENOENT" } });
    expect((error as Error).message).toContain("src/vanishing.txt");
    expect((error as Error).message).toMatch(/\.dockerignore/);
    expect((error as Error).cause).toMatchObject({ code: "ENOENT" });
  });
});
