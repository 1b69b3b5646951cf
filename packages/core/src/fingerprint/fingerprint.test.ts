import { chmod, mkdir, mkdtemp, readFile, rename, rm, symlink, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { KilnError } from "../errors.js";
import { fingerprintBuild, shortFingerprint, type FingerprintOptions } from "./fingerprint.js";

type TreeSpec = Record<string, string | { content: string; mode?: number } | { symlink: string }>;

let root: string;

beforeEach(async () => {
  root = await mkdtemp(path.join(tmpdir(), "kiln-fingerprint-"));
});

afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

/** Creates `spec` under `dir` (POSIX paths; parents created). */
async function makeTree(dir: string, spec: TreeSpec): Promise<string> {
  for (const [relPath, value] of Object.entries(spec)) {
    const file = path.join(dir, ...relPath.split("/"));
    await mkdir(path.dirname(file), { recursive: true });
    if (typeof value === "string") await writeFile(file, value);
    else if ("symlink" in value) await symlink(value.symlink, file);
    else {
      await writeFile(file, value.content);
      if (value.mode !== undefined) await chmod(file, value.mode);
    }
  }
  return dir;
}

/** Sets the mtime of every given file an hour back, out of the racy window. */
async function age(dir: string, relPaths: string[]): Promise<void> {
  const past = new Date(Date.now() - 3_600_000);
  for (const relPath of relPaths) await utimes(path.join(dir, relPath), past, past);
}

const DOCKERFILE = "FROM kiln-local/busybox\nCOPY . /ctx\n";

const BASIC: TreeSpec = {
  Dockerfile: DOCKERFILE,
  "app/main.js": "console.log('hello');\n",
  "app/lib/util.js": "export const x = 1;\n",
  "README.md": "# app\n",
};

function optionsFor(contextDir: string, extra: Partial<FingerprintOptions> = {}): FingerprintOptions {
  return { contextDir, dockerfilePath: path.join(contextDir, "Dockerfile"), ...extra };
}

async function fingerprintOf(contextDir: string, extra: Partial<FingerprintOptions> = {}): Promise<string> {
  return (await fingerprintBuild(optionsFor(contextDir, extra))).fingerprint;
}

describe("fingerprintBuild", () => {
  it("gives the same fingerprint for the same inputs, in the sha256: format", async () => {
    const dir = await makeTree(path.join(root, "a"), BASIC);
    const first = await fingerprintBuild(optionsFor(dir));
    const second = await fingerprintBuild(optionsFor(dir));
    expect(first.fingerprint).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(second.fingerprint).toBe(first.fingerprint);
    expect(first.files).toEqual(["Dockerfile", "README.md", "app/lib/util.js", "app/main.js"]);
    expect(first.fileCount).toBe(4);
    expect(first.totalBytes).toBe(Object.values(BASIC).reduce((sum, value) => sum + Buffer.byteLength(value as string), 0));
    expect(first.bytesHashed).toBe(first.totalBytes);
    expect(first.cacheHits).toBe(0);
    expect(first.baseImages).toEqual(["kiln-local/busybox"]);
  });

  it("gives the same fingerprint for the same tree in two different folders", async () => {
    const a = await makeTree(path.join(root, "a"), BASIC);
    const b = await makeTree(path.join(root, "elsewhere", "b"), BASIC);
    expect(await fingerprintOf(b)).toBe(await fingerprintOf(a));
  });

  it("changes when one byte changes", async () => {
    const dir = await makeTree(path.join(root, "a"), BASIC);
    const before = await fingerprintOf(dir);
    await writeFile(path.join(dir, "app/lib/util.js"), "export const x = 2;\n");
    expect(await fingerprintOf(dir)).not.toBe(before);
  });

  it("changes when a file is added, removed or renamed", async () => {
    const dir = await makeTree(path.join(root, "a"), BASIC);
    const before = await fingerprintOf(dir);
    await writeFile(path.join(dir, "new.txt"), "");
    const added = await fingerprintOf(dir);
    expect(added).not.toBe(before);
    await rm(path.join(dir, "new.txt"));
    expect(await fingerprintOf(dir)).toBe(before);
    await rm(path.join(dir, "README.md"));
    await writeFile(path.join(dir, "README.txt"), "# app\n");
    expect(await fingerprintOf(dir)).not.toBe(before);
  });

  it("does not change when a file is touched with the same content", async () => {
    const dir = await makeTree(path.join(root, "a"), BASIC);
    const before = await fingerprintOf(dir);
    const later = new Date(Date.now() + 60_000);
    await utimes(path.join(dir, "README.md"), later, later);
    await writeFile(path.join(dir, "app/main.js"), "console.log('hello');\n");
    expect(await fingerprintOf(dir)).toBe(before);
  });

  it("ignores changes to a file that .dockerignore excludes", async () => {
    const dir = await makeTree(path.join(root, "a"), { ...BASIC, ".dockerignore": "*.log\nnode_modules\n", "debug.log": "1", "node_modules/x/index.js": "1" });
    const first = await fingerprintBuild(optionsFor(dir));
    expect(first.files).not.toContain("debug.log");
    expect(first.files).not.toContain("node_modules/x/index.js");
    expect(first.files).toContain(".dockerignore");
    await writeFile(path.join(dir, "debug.log"), "2");
    await writeFile(path.join(dir, "node_modules/x/index.js"), "2");
    expect(await fingerprintOf(dir)).toBe(first.fingerprint);
  });

  it("keeps excluded paths (Kiln's own data folder) out whatever .dockerignore says", async () => {
    const dir = await makeTree(path.join(root, "a"), { ...BASIC, ".kiln/state/web@default.json": "{}", ".kilnfile": "kept" });
    const excluded = { exclude: [path.join(dir, ".kiln"), path.join(root, "elsewhere")] };
    const first = await fingerprintBuild(optionsFor(dir, excluded));
    expect(first.files.filter((file) => file.startsWith(".kiln"))).toEqual([".kilnfile"]);
    await writeFile(path.join(dir, ".kiln/state/web@default.json"), '{"changed":true}');
    expect(await fingerprintOf(dir, excluded)).toBe(first.fingerprint);
    expect(await fingerprintOf(dir)).not.toBe(first.fingerprint);
  });

  it("matches .dockerignore patterns case-sensitively, like Docker on Linux", async () => {
    const dir = await makeTree(path.join(root, "a"), { ...BASIC, ".dockerignore": "secret.txt\n", "Secret.txt": "kept", "secret.txt": "dropped" });
    const result = await fingerprintBuild(optionsFor(dir));
    expect(result.files).toContain("Secret.txt");
    expect(result.files).not.toContain("secret.txt");
  });

  it("keeps the Dockerfile (at a custom path in the context) and .dockerignore even when they are excluded", async () => {
    const dir = await makeTree(path.join(root, "a"), {
      ".dockerignore": "Dockerfile\n.dockerignore\nsecret.txt\nbuild\n",
      "build/app.Dockerfile": DOCKERFILE,
      "build/other.txt": "excluded with its folder",
      "secret.txt": "s3cr3t",
      "src/index.js": "1",
    });
    const result = await fingerprintBuild({ contextDir: dir, dockerfilePath: path.join(dir, "build/app.Dockerfile") });
    expect(result.files).toEqual([".dockerignore", "build/app.Dockerfile", "src/index.js"]);
  });

  it("keeps .dockerignore, and no Dockerfile, when the Dockerfile lies outside the context", async () => {
    const dir = await makeTree(path.join(root, "ctx"), {
      ".dockerignore": "Dockerfile\n.dockerignore\nsecret.txt\n",
      Dockerfile: "FROM not-this-one\n",
      "secret.txt": "s3cr3t",
      "src/index.js": "1",
    });
    await makeTree(path.join(root, "docker"), { "app.Dockerfile": DOCKERFILE });
    const options = { contextDir: dir, dockerfilePath: path.join(root, "docker", "app.Dockerfile") };
    const result = await fingerprintBuild(options);
    expect(result.files).toEqual([".dockerignore", "src/index.js"]);
    expect(result.baseImages).toEqual(["kiln-local/busybox"]);

    await writeFile(path.join(root, "docker", "app.Dockerfile"), DOCKERFILE + "RUN true\n");
    expect((await fingerprintBuild(options)).fingerprint).not.toBe(result.fingerprint);
  });

  it("honours a ! exception inside an excluded folder", async () => {
    const dir = await makeTree(path.join(root, "a"), {
      ...BASIC,
      ".dockerignore": "vendor\n!vendor/keep/**\ndocs/\n!docs/README.md\n",
      "vendor/drop/a.js": "1",
      "vendor/keep/b.js": "2",
      "vendor/keep/deep/c.js": "3",
      "docs/README.md": "4",
      "docs/other.md": "5",
    });
    const result = await fingerprintBuild(optionsFor(dir));
    expect(result.files).toEqual([
      ".dockerignore",
      "Dockerfile",
      "README.md",
      "app/lib/util.js",
      "app/main.js",
      "docs/README.md",
      "vendor/keep/b.js",
      "vendor/keep/deep/c.js",
    ]);
  });

  it("changes with the build args, not with their order", async () => {
    const dir = await makeTree(path.join(root, "a"), BASIC);
    const one = await fingerprintOf(dir, { args: { A: "1", B: "2" } });
    expect(await fingerprintOf(dir, { args: { B: "2", A: "1" } })).toBe(one);
    expect(await fingerprintOf(dir, { args: { A: "1", B: "3" } })).not.toBe(one);
    expect(await fingerprintOf(dir)).not.toBe(one);
  });

  it("changes with the target stage", async () => {
    const dir = await makeTree(path.join(root, "a"), BASIC);
    expect(await fingerprintOf(dir, { stage: "test" })).not.toBe(await fingerprintOf(dir));
  });

  it("resolves ARG defaults and build args in FROM", async () => {
    const dir = await makeTree(path.join(root, "a"), {
      Dockerfile: "ARG BASE_IMAGE=kiln-local/busybox\nFROM ${BASE_IMAGE} AS build\nFROM build\nCOPY . /ctx\n",
    });
    expect((await fingerprintBuild(optionsFor(dir))).baseImages).toEqual(["kiln-local/busybox"]);
    const withArg = await fingerprintBuild(optionsFor(dir, { args: { BASE_IMAGE: "kiln-local/node:20" } }));
    expect(withArg.baseImages).toEqual(["kiln-local/node:20"]);
  });

  it("tells files with and without the executable bit apart", async () => {
    const dir = await makeTree(path.join(root, "a"), { ...BASIC, "run.sh": { content: "#!/bin/sh\n", mode: 0o644 } });
    const before = await fingerprintOf(dir);
    await chmod(path.join(dir, "run.sh"), 0o755);
    const executable = await fingerprintOf(dir);
    expect(executable).not.toBe(before);
    // Only the executable bit counts, not the other permission bits (umask differs between machines).
    await chmod(path.join(dir, "run.sh"), 0o700);
    expect(await fingerprintOf(dir)).toBe(executable);
    await chmod(path.join(dir, "run.sh"), 0o600);
    expect(await fingerprintOf(dir)).toBe(before);
  });

  it("hashes a symlink by its target text, without following it", async () => {
    const dir = await makeTree(path.join(root, "a"), { ...BASIC, "current": { symlink: "app/main.js" }, "dangling": { symlink: "/nowhere" } });
    const result = await fingerprintBuild(optionsFor(dir));
    expect(result.files).toContain("current");
    expect(result.files).toContain("dangling");
    // Changing the target's content changes the fingerprint through the target file only.
    await rm(path.join(dir, "current"));
    await symlink("app/lib/util.js", path.join(dir, "current"));
    expect(await fingerprintOf(dir)).not.toBe(result.fingerprint);
    // A regular file with the target's text is not the same as the symlink.
    await rm(path.join(dir, "current"));
    await writeFile(path.join(dir, "current"), "app/main.js");
    expect(await fingerprintOf(dir)).not.toBe(result.fingerprint);
  });

  it("does not enter a symlinked folder", async () => {
    const dir = await makeTree(path.join(root, "a"), { ...BASIC, "linked": { symlink: "app" } });
    const result = await fingerprintBuild(optionsFor(dir));
    expect(result.files.filter((file) => file.startsWith("linked"))).toEqual(["linked"]);
  });

  describe("stat cache", () => {
    it("serves every file from the cache on the second run", async () => {
      const dir = await makeTree(path.join(root, "a"), BASIC);
      await age(dir, Object.keys(BASIC));
      const cacheFile = path.join(root, "project", ".kiln", "cache", "fingerprint-web.stat-cache");
      const first = await fingerprintBuild(optionsFor(dir, { cacheFile }));
      expect(first.cacheHits).toBe(0);
      expect(first.bytesHashed).toBe(first.totalBytes);
      const second = await fingerprintBuild(optionsFor(dir, { cacheFile }));
      expect(second.fingerprint).toBe(first.fingerprint);
      expect(second.bytesHashed).toBe(0);
      expect(second.cacheHits).toBe(second.fileCount);
    });

    it("reads again a file whose stat data changed", async () => {
      const dir = await makeTree(path.join(root, "a"), BASIC);
      await age(dir, Object.keys(BASIC));
      const cacheFile = path.join(root, "cache.json");
      const first = await fingerprintBuild(optionsFor(dir, { cacheFile }));
      await writeFile(path.join(dir, "app/main.js"), "console.log('HELLO');\n");
      const second = await fingerprintBuild(optionsFor(dir, { cacheFile }));
      expect(second.fingerprint).not.toBe(first.fingerprint);
      expect(second.cacheHits).toBe(3);
      expect(second.bytesHashed).toBe(Buffer.byteLength("console.log('HELLO');\n"));
    });

    it("re-hashes fresh files (racy window) and so sees a same-size rewrite", async () => {
      const dir = await makeTree(path.join(root, "a"), BASIC);
      const cacheFile = path.join(root, "cache.json");
      const first = await fingerprintBuild(optionsFor(dir, { cacheFile }));
      // Same size, written right away: within the racy window the stat data may not tell.
      await writeFile(path.join(dir, "app/main.js"), "console.log('HELLO');\n");
      const second = await fingerprintBuild(optionsFor(dir, { cacheFile }));
      expect(second.fingerprint).not.toBe(first.fingerprint);
      // Nothing was old enough to be trusted: every file was read again.
      expect(second.cacheHits).toBe(0);
      expect(second.bytesHashed).toBe(second.totalBytes);
    });

    it("treats a corrupt or foreign cache file as empty", async () => {
      const dir = await makeTree(path.join(root, "a"), BASIC);
      await age(dir, Object.keys(BASIC));
      const cacheFile = path.join(root, "cache.json");
      const expected = await fingerprintOf(dir);
      await fingerprintBuild(optionsFor(dir, { cacheFile }));
      const good = await readFile(cacheFile, "utf8");
      const junkFiles = [
        "{not json",
        // A version 1 (JSON) cache of the same files: foreign now, so ignored and replaced.
        JSON.stringify({ format: "kiln-fingerprint-stat-cache", version: 1, startedAtMs: Date.now(), entries: { "app/main.js": [1, 2, 3, 4, 5, "a".repeat(64)] } }),
        good.replace(/^kiln-fingerprint-stat-cache 2 /, "kiln-fingerprint-stat-cache 999 "),
        good.slice(0, -10),
        "",
      ];
      for (const junk of junkFiles) {
        await writeFile(cacheFile, junk);
        const result = await fingerprintBuild(optionsFor(dir, { cacheFile }));
        expect(result.fingerprint).toBe(expected);
        expect(result.cacheHits).toBe(0);
      }
      // The last run rewrote the cache, so the next one uses it.
      expect(await readFile(cacheFile, "utf8")).toMatch(/^kiln-fingerprint-stat-cache 2 \d+ 4 [0-9a-f]{64}\n/);
      expect((await fingerprintBuild(optionsFor(dir, { cacheFile }))).cacheHits).toBe(4);
    });

    it("gives the same fingerprint with a deleted cache (a cold run)", async () => {
      const dir = await makeTree(path.join(root, "a"), BASIC);
      await age(dir, Object.keys(BASIC));
      const cacheFile = path.join(root, "cache.json");
      const first = await fingerprintBuild(optionsFor(dir, { cacheFile }));
      await rm(cacheFile);
      const cold = await fingerprintBuild(optionsFor(dir, { cacheFile }));
      expect(cold.fingerprint).toBe(first.fingerprint);
      expect(cold.cacheHits).toBe(0);
    });
  });

  describe("directory cache", () => {
    /** The folders of BASIC: the root, app and app/lib. */
    const FOLDERS = [".", "app", "app/lib"];
    const statCacheOf = () => path.join(root, "project", ".kiln", "cache", "fingerprint-web.stat-cache");
    const directoryCacheOf = () => path.join(root, "project", ".kiln", "cache", "fingerprint-web.directory-cache");

    /** BASIC under a/, with every file and folder an hour old (out of the racy window). */
    async function agedTree(extra: TreeSpec = {}): Promise<string> {
      const spec = { ...BASIC, ...extra };
      const dir = await makeTree(path.join(root, "a"), spec);
      await age(dir, [...Object.keys(spec), ...FOLDERS]);
      return dir;
    }

    it("lists no folder on the second run, beside the stat cache, and gives the same result", async () => {
      const dir = await agedTree();
      const first = await fingerprintBuild(optionsFor(dir, { cacheFile: statCacheOf() }));
      expect(first.directoryCacheHits).toBe(0);
      expect(await readFile(directoryCacheOf(), "utf8")).toMatch(/^kiln-fingerprint-directory-cache 1 \d+ [0-9a-f]{64} 3 [0-9a-f]{64}\n/);
      const second = await fingerprintBuild(optionsFor(dir, { cacheFile: statCacheOf() }));
      expect(second.directoryCacheHits).toBe(FOLDERS.length);
      expect(second.fingerprint).toBe(first.fingerprint);
      expect(second.files).toEqual(first.files);
    });

    it("lists again a folder an entry was added to, and only that one", async () => {
      const dir = await agedTree();
      const first = await fingerprintBuild(optionsFor(dir, { cacheFile: statCacheOf() }));
      await fingerprintBuild(optionsFor(dir, { cacheFile: statCacheOf() }));
      await writeFile(path.join(dir, "app/lib/added.js"), "export const y = 2;\n");
      const second = await fingerprintBuild(optionsFor(dir, { cacheFile: statCacheOf() }));
      expect(second.files).toContain("app/lib/added.js");
      expect(second.fingerprint).not.toBe(first.fingerprint);
      expect(second.fingerprint).toBe(await fingerprintOf(dir));
      expect(second.directoryCacheHits).toBe(FOLDERS.length - 1);
    });

    it("sees a removed file and a renamed folder", async () => {
      const dir = await agedTree({ "app/old/x.js": "x\n" });
      await age(dir, ["app/old"]);
      await fingerprintBuild(optionsFor(dir, { cacheFile: statCacheOf() }));
      await rm(path.join(dir, "README.md"));
      await rename(path.join(dir, "app/old"), path.join(dir, "app/new"));
      const second = await fingerprintBuild(optionsFor(dir, { cacheFile: statCacheOf() }));
      expect(second.files).not.toContain("README.md");
      expect(second.files).toContain("app/new/x.js");
      expect(second.files).not.toContain("app/old/x.js");
      expect(second.fingerprint).toBe(await fingerprintOf(dir));
    });

    it("uses no listing filtered with other ignore rules", async () => {
      const dir = await agedTree({ ".dockerignore": "README.md\n" });
      const first = await fingerprintBuild(optionsFor(dir, { cacheFile: statCacheOf() }));
      expect(first.files).not.toContain("README.md");
      // Same size and mtime for .dockerignore would not matter: the rules' text is the key.
      await writeFile(path.join(dir, ".dockerignore"), "app/lib\n");
      await age(dir, [".dockerignore", "."]);
      const second = await fingerprintBuild(optionsFor(dir, { cacheFile: statCacheOf() }));
      expect(second.directoryCacheHits).toBe(0);
      expect(second.files).toContain("README.md");
      expect(second.files).not.toContain("app/lib/util.js");
      expect(second.fingerprint).toBe(await fingerprintOf(dir));
    });

    it("lists again a folder changed within the racy window", async () => {
      // Folders as created: their mtime is now, too fresh to trust on the next run.
      const dir = await makeTree(path.join(root, "a"), BASIC);
      await age(dir, Object.keys(BASIC));
      await fingerprintBuild(optionsFor(dir, { cacheFile: statCacheOf() }));
      const second = await fingerprintBuild(optionsFor(dir, { cacheFile: statCacheOf() }));
      expect(second.directoryCacheHits).toBe(0);
    });

    it("treats a corrupt cache as none and rewrites it", async () => {
      const dir = await agedTree();
      const expected = await fingerprintOf(dir);
      await fingerprintBuild(optionsFor(dir, { cacheFile: statCacheOf() }));
      const good = await readFile(directoryCacheOf(), "utf8");
      for (const junk of ["", "junk\n", good.slice(0, -5), good.replace(/\tfDockerfile/, "\tfDockerfilf"), good.replace(/ 3 ([0-9a-f]{64})\n/, " 4 $1\n")]) {
        await writeFile(directoryCacheOf(), junk);
        const result = await fingerprintBuild(optionsFor(dir, { cacheFile: statCacheOf() }));
        expect(result.directoryCacheHits).toBe(0);
        expect(result.fingerprint).toBe(expected);
      }
      expect((await fingerprintBuild(optionsFor(dir, { cacheFile: statCacheOf() }))).directoryCacheHits).toBe(FOLDERS.length);
    });
  });

  describe("errors", () => {
    it("throws ABORTED when the signal aborts", async () => {
      const dir = await makeTree(path.join(root, "a"), BASIC);
      const controller = new AbortController();
      controller.abort();
      await expect(fingerprintBuild(optionsFor(dir, { signal: controller.signal }))).rejects.toMatchObject({ name: "KilnError", code: "ABORTED" });
    });

    it("throws ABORTED when aborted in the middle of the walk", async () => {
      const spec: TreeSpec = { Dockerfile: DOCKERFILE };
      for (let index = 0; index < 400; index++) spec[`d${index % 20}/f${index}.txt`] = "x".repeat(10_000);
      const dir = await makeTree(path.join(root, "a"), spec);
      const controller = new AbortController();
      const pending = fingerprintBuild(optionsFor(dir, { signal: controller.signal }));
      setImmediate(() => controller.abort());
      await expect(pending).rejects.toMatchObject({ code: "ABORTED" });
    });

    it("throws BUILD_CONTEXT_INVALID for a missing context folder", async () => {
      const error = await fingerprintBuild(optionsFor(path.join(root, "missing"))).catch((caught: unknown) => caught);
      expect(error).toBeInstanceOf(KilnError);
      expect(error).toMatchObject({ code: "BUILD_CONTEXT_INVALID" });
      expect((error as KilnError).message).toContain(path.join(root, "missing"));
    });

    it("throws BUILD_CONTEXT_INVALID for a missing Dockerfile", async () => {
      const dir = await makeTree(path.join(root, "a"), { "x.txt": "1" });
      await expect(fingerprintBuild(optionsFor(dir))).rejects.toMatchObject({ code: "BUILD_CONTEXT_INVALID", message: expect.stringContaining("Dockerfile") });
    });

    it("throws BUILD_CONTEXT_INVALID naming a file that cannot be read", async () => {
      if (process.getuid?.() === 0) return; // root reads everything
      const dir = await makeTree(path.join(root, "a"), { ...BASIC, "locked.txt": { content: "x", mode: 0o000 } });
      await expect(fingerprintBuild(optionsFor(dir))).rejects.toMatchObject({ code: "BUILD_CONTEXT_INVALID", message: expect.stringContaining("locked.txt") });
    });

    it("throws INVALID_ARGUMENT for a relative path", async () => {
      await expect(fingerprintBuild({ contextDir: "relative", dockerfilePath: "/Dockerfile" })).rejects.toMatchObject({ code: "INVALID_ARGUMENT" });
    });
  });
});

describe("shortFingerprint", () => {
  it("gives the first 12 hex digits", () => {
    expect(shortFingerprint(`sha256:${"0123456789abcdef".repeat(4)}`)).toBe("0123456789ab");
  });

  it("rejects what is not a fingerprint", () => {
    expect(() => shortFingerprint("sha256:xyz")).toThrow(KilnError);
  });
});
