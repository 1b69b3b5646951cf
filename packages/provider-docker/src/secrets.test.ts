import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { chmod, lstat, mkdir, readFile, readdir, rm, stat, statfs, utimes } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type Dockerode from "dockerode";
import { afterEach, describe, expect, it } from "vitest";
import { KilnError, SecretValue, redactSecrets, silentLogger, type ImageRef, type LaunchRequest, type ProviderContext, type SecretMount } from "@kilnjs/core";
import { parseDockerHost } from "./options.js";
import {
  SWEEP_MIN_AGE_MS,
  assertFileSecretsReachable,
  createSecretFileStore,
  isRemoteEngine,
  secretEnv,
  secretFolders,
  withoutSecrets,
} from "./secrets.js";

const mount = (name: string, to: SecretMount["to"]): SecretMount => ({ name, source: { kind: "env", name }, to, digest: `hmac-sha256:${"0".repeat(64)}` });
const image: ImageRef = { id: "sha256:" + "a".repeat(64), fingerprint: "sha256:" + "b".repeat(64), digest: "sha256:" + "a".repeat(64), names: [] };

function launchRequest(mounts: SecretMount[], values: Record<string, string>): LaunchRequest {
  return {
    target: { service: "web", environment: "prod" },
    release: 1,
    rolloutId: "ro-1",
    idempotencyKey: "ro-1/launch-1",
    image,
    config: { ports: [], env: {}, labels: {}, stopGracePeriodMs: 1_000, secrets: mounts },
    count: 1,
    secrets: new Map(Object.entries(values).map(([name, value]) => [name, new SecretValue(value)])),
  };
}

const ctx: ProviderContext = { signal: new AbortController().signal, logger: silentLogger, emit: () => {} };

describe("secret deliveries", () => {
  it("groups file secrets by folder and gives env secrets as NAME=value", () => {
    const mounts = [mount("A", { kind: "file", path: "/run/secrets/a" }), mount("B", { kind: "env", name: "B_VAR" }), mount("C", { kind: "file", path: "/etc/app/c" }), mount("D", { kind: "file", path: "/run/secrets/d" })];
    expect(secretFolders(mounts)).toEqual([
      { target: "/etc/app", files: [{ file: "c", secret: "C" }] },
      { target: "/run/secrets", files: [{ file: "a", secret: "A" }, { file: "d", secret: "D" }] },
    ]);
    expect(secretEnv(launchRequest(mounts, { A: "1", B: "two=2", C: "3", D: "4" }))).toEqual(["B_VAR=two=2"]);
    expect(() => secretEnv(launchRequest(mounts, {}))).toThrow(expect.objectContaining({ code: "INTERNAL" }) as Error);
  });

  it("redacts a value, its JSON-escaped form and the lines of a multi-line value", () => {
    const key = new SecretValue('-----BEGIN KEY-----\nMIIEabcdefgh\n"quoted"-----END KEY-----');
    const plain = new SecretValue("hunter2-value");
    const text = `got hunter2-value and ${JSON.stringify(key.reveal())} and line MIIEabcdefgh`;
    const redacted = redactSecrets(text, [key, plain]);
    expect(redacted).toBe('got [secret] and "[secret]" and line [secret]');
    const error = new KilnError("LAUNCH_FAILED", "engine said: invalid env hunter2-value", { cause: new Error("hunter2-value"), details: { statusCode: 400 } });
    const clean = withoutSecrets(error, [plain]);
    expect(clean).toMatchObject({ code: "LAUNCH_FAILED", message: "engine said: invalid env [secret]", details: { statusCode: 400 } });
    expect(clean.cause).toBeUndefined();
    const untouched = new KilnError("LAUNCH_FAILED", "no value here");
    expect(withoutSecrets(untouched, [plain])).toBe(untouched);
  });

  it("refuses file secrets on an engine that is certainly on another host, before any engine call", () => {
    const request = launchRequest([mount("A", { kind: "file", path: "/run/secrets/a" })], { A: "1" });
    expect(isRemoteEngine(parseDockerHost("tcp://10.1.2.3:2375"))).toBe(true);
    expect(isRemoteEngine(parseDockerHost("tcp://127.0.0.1:2375"))).toBe(false);
    expect(isRemoteEngine(parseDockerHost("unix:///var/run/docker.sock"))).toBe(false);
    expect(() => assertFileSecretsReachable(parseDockerHost("tcp://10.1.2.3:2375"), request)).toThrow(
      expect.objectContaining({ code: "CAPABILITY_MISSING", message: expect.stringMatching(/another host.*to: \{ env: NAME \}/) as string }) as Error,
    );
    expect(() => assertFileSecretsReachable(parseDockerHost("tcp://10.1.2.3:2375"), launchRequest([mount("B", { kind: "env", name: "B" })], { B: "1" }))).not.toThrow();
  });
});

/** A stand-in for dockerode: an engine id and the containers that exist. */
function fakeDocker(containers: string[]): Dockerode {
  return {
    info: () => Promise.resolve({ ID: "ABCD:EFGH" }),
    listContainers: () => Promise.resolve(containers.map((name) => ({ Names: [`/${name}`] }))),
  } as unknown as Dockerode;
}

const shm = "/dev/shm";
const memoryBacked = existsSync(shm) && (await statfs(shm).then((info) => info.type === 0x01021994, () => false));
const unix = parseDockerHost("unix:///var/run/docker.sock");

describe.skipIf(!memoryBacked)("the file secret store (on /dev/shm)", () => {
  const dirs: string[] = [];
  const newDir = () => {
    const dir = path.join(shm, `kiln-test-${randomBytes(4).toString("hex")}`);
    dirs.push(dir);
    return dir;
  };
  afterEach(async () => {
    for (const dir of dirs.splice(0)) await rm(dir, { recursive: true, force: true });
  });

  it("writes each folder's files (0444) in private folders and mounts the folder read-only; remove takes them away", async () => {
    const dir = newDir();
    const store = createSecretFileStore(unix, dir);
    const request = launchRequest([mount("A", { kind: "file", path: "/run/secrets/a" }), mount("B", { kind: "file", path: "/run/secrets/b" }), mount("E", { kind: "env", name: "E" })], { A: "alpha", B: "beta", E: "e" });
    const mounts = await store.write(fakeDocker(["web-1"]), "web-1", request, ctx);
    const container = path.join(dir, "ABCD-EFGH", "web-1");
    expect(mounts).toEqual([{ Type: "bind", Source: path.join(container, "0"), Target: "/run/secrets", ReadOnly: true }]);
    expect(await readFile(path.join(container, "0", "a"), "utf8")).toBe("alpha");
    expect(await readdir(path.join(container, "0"))).toEqual(["a", "b"]);
    expect((await stat(path.join(container, "0", "b"))).mode & 0o777).toBe(0o444);
    expect((await stat(path.join(container, "0"))).mode & 0o777).toBe(0o755);
    for (const folder of [dir, path.join(dir, "ABCD-EFGH"), container]) expect((await stat(folder)).mode & 0o777).toBe(0o700);
    // Without file secrets nothing is written.
    expect(await store.write(fakeDocker([]), "web-2", launchRequest([mount("E", { kind: "env", name: "E" })], { E: "e" }), ctx)).toEqual([]);
    expect(await readdir(path.join(dir, "ABCD-EFGH"))).toEqual(["web-1"]);
    await store.remove(fakeDocker(["web-1"]), ["web-1"], ctx);
    expect(await readdir(path.join(dir, "ABCD-EFGH"))).toEqual([]);
  });

  it("sweeps the folders of containers that are gone once they are old enough, and keeps the rest", async () => {
    const dir = newDir();
    const store = createSecretFileStore(unix, dir);
    const request = launchRequest([mount("A", { kind: "file", path: "/run/secrets/a" })], { A: "alpha" });
    for (const name of ["gone-old", "gone-young", "alive-old"]) await store.write(fakeDocker([]), name, request, ctx);
    const engine = path.join(dir, "ABCD-EFGH");
    const old = new Date(Date.now() - SWEEP_MIN_AGE_MS - 60_000);
    for (const name of ["gone-old", "alive-old"]) await utimes(path.join(engine, name), old, old);
    await store.remove(fakeDocker(["alive-old"]), [], ctx);
    expect((await readdir(engine)).sort()).toEqual(["alive-old", "gone-young"]);
  });

  it("refuses a secrets folder that other users can open", async () => {
    const dir = newDir();
    await mkdir(dir, { mode: 0o700 });
    await chmod(dir, 0o755);
    const request = launchRequest([mount("A", { kind: "file", path: "/run/secrets/a" })], { A: "alpha" });
    await expect(createSecretFileStore(unix, dir).write(fakeDocker([]), "web-1", request, ctx)).rejects.toMatchObject({ code: "CAPABILITY_MISSING", message: expect.stringMatching(/closed to others/) as string });
    expect(await readdir(dir)).toEqual([]);
  });
});

describe("the file secret store on a disk", () => {
  // A folder beside this package: on the machine's disk, unless the checkout itself is on a tmpfs.
  const dir = fileURLToPath(new URL(`../.kiln-secrets-test-${randomBytes(4).toString("hex")}`, import.meta.url));
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("refuses to write a secret to a folder that is not memory-backed", async (test) => {
    const parent = path.dirname(dir);
    if ((await statfs(parent)).type === 0x01021994) test.skip();
    const request = launchRequest([mount("A", { kind: "file", path: "/run/secrets/a" })], { A: "alpha" });
    await expect(createSecretFileStore(unix, dir).write(fakeDocker([]), "web-1", request, ctx)).rejects.toMatchObject({ code: "CAPABILITY_MISSING", message: expect.stringMatching(/not on a memory-backed filesystem/) as string });
    expect((await lstat(dir)).isDirectory()).toBe(true);
    expect(await readdir(dir)).toEqual([]);
  });
});
