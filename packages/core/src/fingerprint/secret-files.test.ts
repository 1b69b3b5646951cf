import { describe, expect, it } from "vitest";
import { createSecretFileAllowList, findSecretFiles, netrcCredential, npmrcCredential, secretFileRuleFor, secretFilesError } from "./secret-files.js";

describe("secretFileRuleFor", () => {
  it.each([
    [".env", ".env"],
    ["config/.env", "config/.env"],
    ["deep/er/.env.production", "deep/er/.env.production"],
    [".env.local", ".env.local"],
    ["app/.envrc", "app/.envrc"],
    ["keys/id_rsa", "keys/id_rsa"],
    ["id_ed25519", "id_ed25519"],
    ["home/.ssh/id_ecdsa_deploy", "home/.ssh/id_ecdsa_deploy"],
    ["certs/server.key", "certs/server.key"],
    ["certs/SERVER.PEM", "certs/SERVER.PEM"],
    ["bundle.p12", "bundle.p12"],
    ["a/b.pfx", "a/b.pfx"],
    [".aws/credentials", ".aws/credentials"],
    ["home/.aws/credentials", "home/.aws/credentials"],
    ["home/.docker/config.json", "home/.docker/config.json"],
    [".kube/config", ".kube/config"],
    ["x/.azure/msal_token_cache.json", "x/.azure"],
    [".config/gcloud/credentials.db", ".config/gcloud"],
    ["application_default_credentials.json", "application_default_credentials.json"],
    ["svc/credentials.json", "svc/credentials.json"],
    [".git/HEAD", ".git"],
    ["vendor/lib/.git/objects/ab/cdef", "vendor/lib/.git"],
    [".git-credentials", ".git-credentials"],
    ["db/.pgpass", "db/.pgpass"],
  ])("%s looks like a secret, reported as %s", (relPath, reported) => {
    expect(secretFileRuleFor(relPath)?.path).toBe(reported);
  });

  it.each([
    ".env.example",
    "config/.env.sample",
    ".env.template",
    ".env.dist",
    "keys/id_rsa.pub",
    "src/id_utils.js",
    "src/keyboard.ts",
    "docs/env.md",
    "environment.ts",
    ".gitignore",
    ".github/workflows/ci.yml",
    "src/.gitkeep",
    "my.git/file",
    ".aws/config",
    "docker/config.json",
    "kube/config",
    "key",
    "pem",
  ])("%s does not", (relPath) => {
    expect(secretFileRuleFor(relPath)).toBeUndefined();
  });

  it("leaves .npmrc and .netrc to their content", () => {
    expect(secretFileRuleFor("app/.npmrc")?.rule.credentialIn).toBeTypeOf("function");
    expect(secretFileRuleFor(".netrc")?.rule.credentialIn).toBeTypeOf("function");
    expect(secretFileRuleFor("_netrc")?.rule.credentialIn).toBeTypeOf("function");
  });
});

describe("npmrcCredential and netrcCredential", () => {
  it.each([
    ["//registry.npmjs.org/:_authToken=npm_abc123", "_authToken"],
    ["registry=https://npm.example.com/\n//npm.example.com/:_auth = dXNlcjpwYXNz", "_auth"],
    ["//npm.example.com/:username=me\n//npm.example.com/:_password=cGFzcw==", "_password"],
    ["password=hunter2", "password"],
    ["//registry.npmjs.org/:_authToken=${NPM_TOKEN}", undefined],
    ["# //registry.npmjs.org/:_authToken=npm_old\n; _auth=x\nsave-exact=true", undefined],
    ["//registry.npmjs.org/:_authToken=", undefined],
  ])("npmrc %j → %s", (text, key) => {
    expect(npmrcCredential(text)).toBe(key);
  });

  it.each([
    ["machine api.example.com login me password s3cret", "password"],
    ["machine a\n  login me\n  password\ts3cret\n", "password"],
    ["machine api.example.com login me", undefined],
    ["default login anonymous", undefined],
  ])("netrc %j → %s", (text, key) => {
    expect(netrcCredential(text)).toBe(key);
  });
});

describe("createSecretFileAllowList", () => {
  it("matches .dockerignore-syntax patterns: paths, folders, ** and exceptions, case-sensitively", () => {
    const allowed = createSecretFileAllowList(["config/.env", "certs", "**/*.pem", "!certs/private.key"]);
    expect(allowed("config/.env")).toBe(true);
    expect(allowed("other/.env")).toBe(false);
    expect(allowed("certs/server.key")).toBe(true);
    expect(allowed("certs/private.key")).toBe(false);
    expect(allowed("a/b/ca.pem")).toBe(true);
    expect(allowed("Config/.env")).toBe(false);
    expect(createSecretFileAllowList([])("config/.env")).toBe(false);
  });
});

describe("findSecretFiles", () => {
  const candidates = (...paths: string[]) => paths.map((relPath) => ({ relPath, absPath: `/ctx/${relPath}` }));

  it("lists each secret once, a folder rule once for all its files, sorted, skipping allowed paths", async () => {
    const found = await findSecretFiles(candidates("src/app.js", "z/.env", ".git/HEAD", ".git/config", "a/id_rsa", "certs/ca.pem", "b/.env.production"), {
      allow: ["certs/ca.pem"],
    });
    expect(found.map((file) => file.path)).toEqual([".git", "a/id_rsa", "b/.env.production", "z/.env"]);
    expect(found.find((file) => file.path === "z/.env")).toMatchObject({ reason: expect.stringContaining(".env") as unknown, pattern: "**/.env" });
  });

  it("allows a folder rule's files with the folder's pattern", async () => {
    expect(await findSecretFiles(candidates(".git/HEAD", ".git/objects/ab/cd"), { allow: [".git"] })).toEqual([]);
  });

  it("reads only the .npmrc and .netrc candidates that are not allowed, and reports one only with a credential", async () => {
    const read: string[] = [];
    const texts: Record<string, string> = {
      "/ctx/.npmrc": "//registry.npmjs.org/:_authToken=npm_abc",
      "/ctx/pkg/.npmrc": "//registry.npmjs.org/:_authToken=${NPM_TOKEN}",
      "/ctx/allowed/.netrc": "machine x password y",
    };
    const found = await findSecretFiles(candidates("index.js", ".npmrc", "pkg/.npmrc", "allowed/.netrc", "README.md"), {
      allow: ["allowed"],
      readText: (candidate) => {
        read.push(candidate.relPath);
        return Promise.resolve(texts[candidate.absPath] ?? "");
      },
    });
    expect(read.sort()).toEqual([".npmrc", "pkg/.npmrc"]);
    expect(found).toEqual([{ path: ".npmrc", reason: expect.stringContaining("_authToken") as unknown, pattern: "**/.npmrc" }]);
  });
});

describe("secretFilesError", () => {
  const files = [
    { path: "config/.env", reason: "an environment file (.env), which holds passwords and tokens", pattern: "**/.env" },
    { path: "keys/deploy.key", reason: "a private key (*.key)", pattern: "**/*.key" },
  ];

  it("lists every file with its reason, the .dockerignore lines and the spec key, with code SECRET_FILES_IN_CONTEXT", () => {
    const error = secretFilesError(files, { kind: "context", contextDir: "/srv/app" });
    expect(error.code).toBe("SECRET_FILES_IN_CONTEXT");
    expect(error.message).toContain("2 files that look like a secret");
    expect(error.message).toContain("config/.env  (an environment file");
    expect(error.message).toContain("keys/deploy.key  (a private key");
    expect(error.message).toContain("/srv/app/.dockerignore");
    expect(error.message).toMatch(/^ {2}\*\*\/\.env$/m);
    expect(error.message).toMatch(/^ {2}\*\*\/\*\.key$/m);
    expect(error.message).toContain('allowSecretFiles: ["config/.env"]');
    expect(error.details).toEqual({ files: files.map(({ path, reason }) => ({ path, reason })), contextDir: "/srv/app" });
  });

  it("for a machine image, says to remove the files from the steps and that patterns are relative to the spec's folder", () => {
    const error = secretFilesError(files.slice(0, 1), { kind: "machine", specDir: "/srv/app" });
    expect(error.message).toContain("1 file that looks like a secret");
    expect(error.message).toContain("provision steps");
    expect(error.message).toContain("the spec's folder /srv/app");
    expect(error.message).not.toContain(".dockerignore");
  });
});
