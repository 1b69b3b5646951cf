// `kiln init`'s .dockerignore keeps files that look like secrets out at any depth, so a freshly
// initialised project builds without tripping the context guard (issue 11).
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { PassThrough } from "node:stream";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { fingerprintBuild } from "@kilnjs/core";
import { INIT_DOCKERIGNORE } from "./init-template.js";
import { run } from "./main.js";

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "kiln-cli-init-"));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function write(files: Record<string, string>): Promise<void> {
  for (const [relPath, content] of Object.entries(files)) {
    const file = path.join(dir, ...relPath.split("/"));
    await mkdir(path.dirname(file), { recursive: true });
    await writeFile(file, content);
  }
}

describe("kiln init's .dockerignore", () => {
  it("keeps a nested .env, keys and credentials out of a freshly initialised project's build context", async () => {
    await write({
      Dockerfile: "FROM kiln-local/node:20\nCOPY . /app\n",
      "server.js": "console.log('hi')\n",
      "config/.env": "DB_PASSWORD=hunter2\n",
      "config/.env.production": "TOKEN=x\n",
      "config/.env.example": "DB_PASSWORD=\n",
      "deploy/keys/id_ed25519": "-----BEGIN OPENSSH PRIVATE KEY-----\n",
      "deploy/keys/id_ed25519.pub": "ssh-ed25519 AAAA\n",
      "certs/tls.key": "k",
      "certs/tls.pem": "k",
      "packages/app/.npmrc": "//registry.npmjs.org/:_authToken=npm_x\n",
      "vendor/lib/.git/HEAD": "ref: refs/heads/main\n",
      "home/.aws/credentials": "[default]\n",
      "logs/app.log": "x\n",
    });
    const stdout = new PassThrough();
    const code = await run(["init", "--service", "web", "-C", dir], { stdout, stderr: new PassThrough(), env: { NO_COLOR: "1" } });
    expect(code).toBe(0);
    expect(await readFile(path.join(dir, ".dockerignore"), "utf8")).toBe(INIT_DOCKERIGNORE);

    // The walk a build does: the guard passes, and only the application's files are sent.
    const { files } = await fingerprintBuild({ contextDir: dir, dockerfilePath: path.join(dir, "Dockerfile") });
    // `**/id_ed25519*` keeps the public key out too: harmless, and one line per key type.
    expect(files).toEqual([".dockerignore", "Dockerfile", "config/.env.example", "kiln.yaml", "server.js"]);
  });
});
