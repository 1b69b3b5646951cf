import { spawn } from "node:child_process";
import { mkdtemp, readFile, readdir, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { silentLogger, type ImageRef, type LaunchRequest, type ProviderContext } from "@kilnjs/core";
import { createMemoryProvider, type MemoryProvider } from "./memory-provider.js";

const ctx = (): ProviderContext => ({ signal: new AbortController().signal, logger: silentLogger, emit() {} });
const FINGERPRINT = `sha256:${"cd".repeat(32)}`;
const here = path.dirname(fileURLToPath(import.meta.url));
const repoRoot = path.resolve(here, "../../..");
const check = { kind: "http", portName: "http", path: "/", expectStatus: [200, 399] } as const;

let dir: string;
let stateFile: string;

beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "kiln-memory-state-"));
  stateFile = path.join(dir, "cloud.json");
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function build(provider: MemoryProvider): Promise<ImageRef> {
  return provider.images.build(
    {
      target: { service: "web", environment: "test" },
      fingerprint: FINGERPRINT,
      dockerfile: { kind: "dockerfile", contextDir: "/ctx", dockerfilePath: "/ctx/Dockerfile", files: ["Dockerfile"], args: {} },
    },
    ctx(),
  );
}

function request(image: ImageRef, key: string, release = 1, count = 1): LaunchRequest {
  return {
    target: { service: "web", environment: "test" },
    release,
    rolloutId: `ro-${release}`,
    idempotencyKey: key,
    image,
    config: { ports: [{ name: "http", port: 8080, protocol: "tcp" }], env: {}, labels: {}, stopGracePeriodMs: 0 },
    count,
  };
}

/** A pid no process has: one of a process that already exited. */
async function deadPid(): Promise<number> {
  const child = spawn(process.execPath, ["-e", ""], { stdio: "ignore" });
  await new Promise((resolve) => child.once("exit", resolve));
  return child.pid!;
}

describe("the in-memory provider with a state file", () => {
  it("shares images and instances between provider objects, behaviour included", async () => {
    const first = createMemoryProvider({ stateFile, behavior: (r) => (r.release === 2 ? { neverHealthy: true } : { healthyAfterMs: 60_000 }) });
    const image = await build(first);
    const [slow] = await first.instances.launch(request(image, "k1"), ctx());
    const [broken] = await first.instances.launch(request(image, "k2", 2), ctx());

    // A second object without any behaviour option: the behaviour is stored with each instance.
    const second = createMemoryProvider({ stateFile });
    expect((await second.images.find({ service: "web", fingerprint: FINGERPRINT }, ctx()))?.id).toBe(image.id);
    expect([...second.live.keys()].sort()).toEqual([slow!.id, broken!.id].sort());
    expect(second.launchedIds).toEqual([slow!.id, broken!.id]);
    expect(await second.health.probe(slow!, check, 1_000, ctx())).toEqual({ ok: false, reason: expect.stringMatching(/starting/) });
    expect(await second.health.probe(broken!, check, 1_000, ctx())).toEqual({ ok: false, reason: "the app answers 500" });

    // Idempotency across objects: the same key returns the same instance.
    expect((await second.instances.launch(request(image, "k1"), ctx())).map((i) => i.id)).toEqual([slow!.id]);
    await expect(second.images.remove(image, ctx())).rejects.toMatchObject({ code: "IMAGE_IN_USE" });
    await second.instances.terminate([slow!, broken!], { gracePeriodMs: 0 }, ctx());
    expect(first.live.size).toBe(0);
    await first.images.remove(image, ctx());
    expect(second.images.all.size).toBe(0);

    const data = JSON.parse(await readFile(stateFile, "utf8")) as { kind: string; version: number };
    expect(data).toMatchObject({ kind: "kiln-memory-provider", version: 1, images: [], instances: [] });
    expect((await readdir(dir)).sort()).toEqual(["cloud.json"]);
  });

  it("loses no change when several provider objects write at once", async () => {
    const providers = Array.from({ length: 4 }, () => createMemoryProvider({ stateFile }));
    const image = await build(providers[0]!);
    await Promise.all(providers.flatMap((provider, p) => Array.from({ length: 10 }, (_, i) => provider.instances.launch(request(image, `k-${p}-${i}`), ctx()))));
    expect(providers[0]!.live.size).toBe(40);
    expect(new Set(providers[0]!.launchedIds).size).toBe(40);
  });

  it("takes over a lock whose holder died", async () => {
    const provider = createMemoryProvider({ stateFile });
    const image = await build(provider);
    await writeFile(`${stateFile}.lock`, `${await deadPid()} 0123456789abcdef`);
    const started = performance.now();
    await provider.instances.launch(request(image, "k1"), ctx());
    expect(performance.now() - started).toBeLessThan(1_000);
    expect(provider.live.size).toBe(1);
  });

  it("reports a state file it cannot read, naming it", async () => {
    await writeFile(stateFile, "{ not json");
    const provider = createMemoryProvider({ stateFile });
    const error = await provider.images.list("web", ctx()).catch((caught: unknown) => caught);
    expect(error).toMatchObject({ code: "PROVIDER_UNAVAILABLE", details: { reason: "state-file-corrupt", stateFile } });
    expect((error as Error).message).toContain(stateFile);
  });

  it("survives a process killed with SIGKILL in the middle of its calls", async () => {
    const script = path.join(dir, "child.mts");
    await writeFile(
      script,
      [
        `import { createMemoryProvider } from ${JSON.stringify(path.join(here, "memory-provider.ts"))};`,
        `const provider = createMemoryProvider({ stateFile: ${JSON.stringify(stateFile)}, behavior: () => ({ flap: { healthyMs: 100000, unhealthyMs: 1000 } }) });`,
        `const ctx = { signal: new AbortController().signal, logger: console, emit() {} };`,
        `const image = await provider.images.build({ target: { service: "web", environment: "test" }, fingerprint: ${JSON.stringify(FINGERPRINT)}, dockerfile: { kind: "dockerfile", contextDir: "/c", dockerfilePath: "/c/Dockerfile", files: [], args: {} } }, ctx);`,
        `const config = { ports: [{ name: "http", port: 8080, protocol: "tcp" }], env: {}, labels: {}, stopGracePeriodMs: 0 };`,
        `const launch = (i) => provider.instances.launch({ target: { service: "web", environment: "test" }, release: 1, rolloutId: "ro", idempotencyKey: "k" + i, image, config, count: 1 }, ctx);`,
        `const [first] = await launch(0);`,
        `process.stdout.write(JSON.stringify({ image: image.id, first: first.id }) + "\\n");`,
        `for (let i = 1; ; i++) await launch(i);`,
        "",
      ].join("\n"),
    );
    const child = spawn(process.execPath, ["--import", "tsx", script], { cwd: repoRoot, stdio: ["ignore", "pipe", "pipe"] });
    let stderr = "";
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    const ready = await new Promise<{ image: string; first: string }>((resolve, reject) => {
      let out = "";
      child.stdout.on("data", (chunk: Buffer) => {
        out += chunk.toString();
        if (out.includes("\n")) resolve(JSON.parse(out.slice(0, out.indexOf("\n"))) as { image: string; first: string });
      });
      child.once("exit", (code) => reject(new Error(`the child exited (${code}) before it was ready: ${stderr}`)));
    });
    // Let it write for a while, then kill it wherever it is (maybe holding the lock).
    await new Promise((resolve) => setTimeout(resolve, 300));
    const exited = new Promise((resolve) => child.once("exit", resolve));
    child.kill("SIGKILL");
    await exited;

    const after = createMemoryProvider({ stateFile });
    const live = after.live;
    expect(live.get(ready.first)).toMatchObject({ state: "running", release: 1 });
    expect(live.size).toBeGreaterThan(1);
    expect([...after.images.all.keys()]).toEqual([ready.image]);
    // The behaviour survived: a probe answers from the stored flap settings.
    expect(await after.health.probe(live.get(ready.first)!, check, 1_000, ctx())).toEqual({ ok: true });
    // And the next process can change the cloud at once, lock or no lock left behind.
    const started = performance.now();
    await after.instances.terminate([...live.values()], { gracePeriodMs: 0 }, ctx());
    expect(performance.now() - started).toBeLessThan(2_000);
    expect(after.live.size).toBe(0);
  });
});
