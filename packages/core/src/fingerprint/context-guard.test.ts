// The context guard and the .dockerignore checks of fingerprintBuild (issue 11): files that look
// like secrets are refused unless the spec allows them, and a .dockerignore that cannot be used is
// an error, never "no rules".
import { mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { isKilnError } from "../errors.js";
import { fingerprintBuild, type FingerprintOptions } from "./fingerprint.js";

let root: string;
beforeEach(async () => {
  root = await mkdtemp(path.join(tmpdir(), "kiln-context-guard-"));
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

/** Writes `files` (POSIX paths → content) under a new context folder `name` and returns it. */
async function context(files: Record<string, string>, name = "ctx"): Promise<string> {
  const dir = path.join(root, name);
  for (const [relPath, content] of Object.entries({ Dockerfile: "FROM kiln-local/busybox\nCOPY . /ctx\n", ...files })) {
    const file = path.join(dir, ...relPath.split("/"));
    await mkdir(path.dirname(file), { recursive: true });
    await writeFile(file, content);
  }
  return dir;
}

const fingerprint = (dir: string, extra: Partial<FingerprintOptions> = {}) =>
  fingerprintBuild({ contextDir: dir, dockerfilePath: path.join(dir, "Dockerfile"), ...extra });
const failure = (dir: string, extra: Partial<FingerprintOptions> = {}) => fingerprint(dir, extra).then(() => undefined, (error: unknown) => error);

describe("the context guard", () => {
  it("refuses a nested .env that a misspelt .dockerignore rule misses, naming it, why, and what to do", async () => {
    const dir = await context({ ".dockerignore": "confg/.env\n", "config/.env": "DB_PASSWORD=hunter2\n", "src/index.js": "1" });
    const error = await failure(dir);
    expect(isKilnError(error, "SECRET_FILES_IN_CONTEXT")).toBe(true);
    const { message, details } = error as Error & { details: Record<string, unknown> };
    expect(details.files).toEqual([{ path: "config/.env", reason: expect.stringContaining(".env") as unknown }]);
    expect(message).toContain("config/.env");
    expect(message).toContain(`${dir}/.dockerignore`);
    expect(message).toContain("**/.env");
    expect(message).toContain('allowSecretFiles: ["config/.env"]');
    // The secret's value never appears.
    expect(message).not.toContain("hunter2");
    expect(JSON.stringify(details)).not.toContain("hunter2");
  });

  it("builds the file when the spec allows it by path, and when .dockerignore keeps it out", async () => {
    const dir = await context({ ".dockerignore": "confg/.env\n", "config/.env": "A=1\n", "src/index.js": "1" });
    expect((await fingerprint(dir, { allowSecretFiles: ["config/.env"] })).files).toContain("config/.env");
    await writeFile(path.join(dir, ".dockerignore"), "config/.env\n");
    expect((await fingerprint(dir)).files).not.toContain("config/.env");
  });

  it("lists every secret at once: keys, cloud credentials, .npmrc with a token, .git", async () => {
    const dir = await context({
      "deploy/id_ed25519": "-----BEGIN OPENSSH PRIVATE KEY-----\n",
      "deploy/id_ed25519.pub": "ssh-ed25519 AAAA\n",
      "certs/tls.key": "k",
      "home/.aws/credentials": "[default]\n",
      ".npmrc": "//registry.npmjs.org/:_authToken=npm_0123456789\n",
      "pkg/.npmrc": "//registry.npmjs.org/:_authToken=${NPM_TOKEN}\n",
      ".git/HEAD": "ref: refs/heads/main\n",
      ".git/config": "[core]\n",
      ".env.example": "DB_PASSWORD=\n",
    });
    const error = await failure(dir);
    expect(isKilnError(error, "SECRET_FILES_IN_CONTEXT")).toBe(true);
    const paths = ((error as { details: { files: Array<{ path: string }> } }).details.files).map((file) => file.path);
    expect(paths).toEqual([".git", ".npmrc", "certs/tls.key", "deploy/id_ed25519", "home/.aws/credentials"]);
    expect((error as Error).message).not.toContain("npm_0123456789");
  });

  it("refuses before reading the context's files into the stat cache", async () => {
    const dir = await context({ "a/.env": "A=1\n" });
    const cacheFile = path.join(root, "cache.json");
    expect(isKilnError(await failure(dir, { cacheFile }), "SECRET_FILES_IN_CONTEXT")).toBe(true);
    await expect(import("node:fs/promises").then(({ stat }) => stat(cacheFile))).rejects.toMatchObject({ code: "ENOENT" });
  });

  it("does not look at files .dockerignore keeps out, nor at symlinks (they reach the image as their target text)", async () => {
    const dir = await context({ ".dockerignore": "**/.env\nsecrets\n", "x/.env": "A=1\n", "secrets/id_rsa": "k" });
    await symlink("/run/secrets/app.env", path.join(dir, ".env.production"));
    expect((await fingerprint(dir)).files).toEqual([".dockerignore", ".env.production", "Dockerfile"]);
  });

  it("keeps the fingerprint of a context without secrets as it was before the guard", async () => {
    // Computed with the code before the context guard: the guard adds nothing to what is hashed.
    const dir = await context({
      ".dockerignore": ".kiln\nnode_modules\n",
      "src/index.js": "console.log('hi');\n",
      "src/env.ts": "export const env = process.env;\n",
      "keys/id_rsa.pub": "ssh-ed25519 AAAA test\n",
      ".env.example": "TOKEN=\n",
      "pkg/.npmrc": "//registry.npmjs.org/:_authToken=${NPM_TOKEN}\n",
      "README.md": "# app\n",
    });
    await symlink("src/index.js", path.join(dir, "current"));
    const result = await fingerprint(dir, { args: { A: "1" } });
    expect(result.fingerprint).toBe("sha256:4f1619ee86dfac6cdf66c7b22da71f9bebda12343238649f4b91f553181627f0");
  });
});

describe("reading .dockerignore", () => {
  it("refuses a dangling .dockerignore link instead of applying no rules", async () => {
    const dir = await context({ "config/.env.kept-out": "x", "big.bin": "x" });
    await symlink("ignore-rules.txt", path.join(dir, ".dockerignore"));
    const error = await failure(dir);
    expect(error).toMatchObject({ code: "BUILD_CONTEXT_INVALID", details: { path: ".dockerignore", linkTarget: "ignore-rules.txt" } });
    expect((error as Error).message).toContain("ignore-rules.txt");
    expect((error as Error).message).toContain("does not exist");
  });

  it("refuses a .dockerignore link that points outside the context", async () => {
    const dir = await context({ "big.bin": "x" });
    await writeFile(path.join(root, "shared.dockerignore"), "big.bin\n");
    await symlink(path.join(root, "shared.dockerignore"), path.join(dir, ".dockerignore"));
    const error = await failure(dir);
    expect(error).toMatchObject({ code: "BUILD_CONTEXT_INVALID", details: { path: ".dockerignore" } });
    expect((error as Error).message).toMatch(/outside the context/);
    expect((error as Error).message).toMatch(/Copy the rules into a regular \.dockerignore/);
  });

  it("follows a .dockerignore link to a file inside the context, as Docker does", async () => {
    const dir = await context({ "big.bin": "x", "build/ignore": "big.bin\n" });
    await symlink("build/ignore", path.join(dir, ".dockerignore"));
    expect((await fingerprint(dir)).files).toEqual([".dockerignore", "Dockerfile", "build/ignore"]);
  });

  it("says a .dockerignore link to a folder is a folder, without advising to exclude it in .dockerignore", async () => {
    const dir = await context({ "rules/a": "x" });
    await symlink("rules", path.join(dir, ".dockerignore"));
    const error = await failure(dir);
    expect(error).toMatchObject({ code: "BUILD_CONTEXT_INVALID", details: { path: ".dockerignore", errno: "EISDIR" } });
    expect((error as Error).message).toContain("is a folder");
    expect((error as Error).message).not.toMatch(/exclud\w* it in \.dockerignore/);
  });
});
