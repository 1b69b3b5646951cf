// Secrets on a real engine, through core: a deploy whose image is built with a build secret and
// whose container receives one secret as an environment variable and one as a file. The values
// must reach the build step and the container, and nothing else: not the image's layers or
// history, the container's labels or writable layer, Kiln's state or its events.
import { createHash, randomBytes } from "node:crypto";
import { lstat, mkdir, mkdtemp, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import Docker from "dockerode";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LABELS, SecretValue, createKiln, silentLogger, type DockerfileRecipe, type ImageRecipe, type KilnEvent, type ProviderContext, type ProviderProgress, type SpecInput } from "@kilnjs/core";
import { requireDockerEngine } from "@kilnjs/testkit";
import { probeBuildkitCli } from "./buildkit.js";
import { createDockerProvider } from "./index.js";
import { resolveOptions } from "./options.js";

const engine = await requireDockerEngine();

/**
 * Whether the docker CLI the provider would run for builds with secrets can (KILN_DOCKER_CLI, else
 * `docker`): under CI=true it must; elsewhere the suite skips with a notice saying how to get one.
 */
async function requireBuildkitCli(): Promise<boolean> {
  const cli = resolveOptions(undefined).dockerCli;
  if (await probeBuildkitCli(cli)) return true;
  const how = `the docker CLI ${cli} cannot build with BuildKit secrets: eval "$(bash scripts/test.sh --setup)" exports KILN_DOCKER_CLI when this machine has one that can; or install the docker buildx plugin`;
  if (process.env.CI === "true") throw new Error(`A BuildKit-capable docker CLI is required under CI, but ${how}.`);
  process.stderr.write(`\n*** SKIPPED: docker build secrets: ${how} ***\n\n`);
  return false;
}

const buildkit = engine && (await requireBuildkitCli());

const BASE_IMAGE = "kiln-local/busybox:latest";
const hex = (bytes: number) => randomBytes(bytes).toString("hex");
const sha256 = (text: string) => createHash("sha256").update(text).digest("hex");

/** The forms a leaked value would take: plain, JSON-escaped, base64. */
function forms(value: string): string[] {
  return [value, JSON.stringify(value).slice(1, -1), Buffer.from(value).toString("base64")];
}

/** The forms of `values` found in `haystack` (a string or bytes). */
function leaks(haystack: string | Buffer, values: readonly string[]): string[] {
  const text = typeof haystack === "string" ? Buffer.from(haystack) : haystack;
  return values.flatMap(forms).filter((form) => text.includes(form));
}

/** Every file under `dir`, read whole. */
async function readTree(dir: string): Promise<Buffer> {
  const parts: Buffer[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (entry.isFile()) parts.push(await readFile(path.join(entry.parentPath, entry.name)));
  }
  return Buffer.concat(parts);
}

async function collect(stream: NodeJS.ReadableStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(Buffer.from(chunk as Buffer));
  return Buffer.concat(chunks);
}

/** Polls `check` until it returns a value other than undefined, or fails after `timeoutMs`. */
async function waitFor<T>(what: string, check: () => Promise<T | undefined>, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** How many processes of this machine run a build step marked `marker` (the engine runs here). */
async function runningSteps(marker: string): Promise<number> {
  let count = 0;
  for (const pid of await readdir("/proc").catch(() => [])) {
    if (!/^\d+$/.test(pid)) continue;
    const command = await readFile(`/proc/${pid}/cmdline`, "utf8").catch(() => "");
    if (command.includes(`echo ${marker} && sleep 90`)) count++;
  }
  return count;
}

describe.skipIf(!buildkit)("docker provider secrets against a real engine", () => {
  const docker = new Docker(
    process.env.DOCKER_HOST?.startsWith("unix://") ? { socketPath: process.env.DOCKER_HOST.slice("unix://".length) } : undefined,
  );
  const secretsDir = resolveOptions(undefined).secretsDir;
  const run = hex(3);
  const services: string[] = [];
  let workDir: string;

  /** Runs `command` in `containerId`; resolves with its output (stdout and stderr). */
  async function execIn(containerId: string, command: string[]): Promise<{ exitCode: number; output: string }> {
    const exec = await docker.getContainer(containerId).exec({ Cmd: command, AttachStdout: true, AttachStderr: true });
    const stream = await exec.start({ hijack: true, stdin: false });
    const chunks: Buffer[] = [];
    const sink = { write: (chunk: Buffer) => chunks.push(chunk) } as unknown as NodeJS.WritableStream;
    docker.modem.demuxStream(stream, sink, sink);
    await new Promise((resolve, reject) => stream.on("end", resolve).on("error", reject));
    return { exitCode: (await exec.inspect()).ExitCode ?? -1, output: Buffer.concat(chunks).toString("utf8") };
  }

  async function containersOf(service: string): Promise<Docker.ContainerInfo[]> {
    return docker.listContainers({ all: true, filters: { label: [`${LABELS.service}=${service}`] } });
  }

  beforeAll(async () => {
    await docker.getImage(BASE_IMAGE).inspect().catch((error: unknown) => {
      throw new Error(`${BASE_IMAGE} is missing: run bash scripts/base-images.sh first`, { cause: error });
    });
    workDir = await mkdtemp(path.join(tmpdir(), "kiln-docker-secrets-"));
  });

  afterAll(async () => {
    const provider = createDockerProvider();
    const ctx: ProviderContext = { signal: new AbortController().signal, logger: silentLogger, emit: () => {} };
    for (const service of services) {
      // Through the provider, so that the containers' secret folders go with them.
      const instances = await provider.instances.list({ target: { service, environment: "default" } }, ctx);
      await provider.instances.terminate(instances, { gracePeriodMs: 0 }, ctx);
      for (const info of await containersOf(service)) await docker.getContainer(info.Id).remove({ force: true }).catch(() => {});
      const images = await docker.listImages({ filters: { label: [`${LABELS.service}=${service}`] } });
      for (const image of images) await docker.getImage(image.Id).remove({ force: true }).catch(() => {});
    }
    if (workDir) await rm(workDir, { recursive: true, force: true });
  });

  it("builds with a build secret and hands secrets to the container as env and as a file, nowhere else", { timeout: 180_000 }, async () => {
    const service = `ksec-${run}`;
    services.push(service);
    const app = path.join(workDir, "app");
    await mkdir(app, { recursive: true });
    await writeFile(
      path.join(app, "Dockerfile"),
      [
        `FROM ${BASE_IMAGE}`,
        // Proves the step read the secret: its digest (never the value) goes into the image. BuildKit's
        // cache ignores secret values: the run id keeps an earlier run's step from being reused.
        `RUN --mount=type=secret,id=npm mkdir -p /www && sha256sum /run/secrets/npm | cut -d" " -f1 > /www/npm.sha256 && echo ${run} > /www/run`,
        'CMD ["httpd", "-f", "-p", "8080", "-h", "/www"]',
        "",
      ].join("\n"),
    );
    // The file secret's source lies beside the spec, outside the build context.
    const values = { npm: `npm-canary-${hex(12)}`, db: `db-canary-${hex(12)}`, tls: `tls-canary-${hex(12)}` };
    await writeFile(path.join(workDir, "tls.key"), `${values.tls}\n`);
    const spec: SpecInput = {
      service,
      provider: "docker",
      image: { dockerfile: { context: "app", file: "Dockerfile", secrets: { npm: { from: { env: "KT_NPM_TOKEN" } } } } },
      instances: { count: 1, ports: [{ name: "http", port: 8080 }], stopGracePeriodMs: 1_000 },
      health: { http: { port: "http", path: "/npm.sha256" }, intervalMs: 200, timeoutMs: 1_000, healthyThreshold: 1 },
      secrets: {
        DB_PASSWORD: { from: { env: "KT_DB_PASSWORD" } },
        TLS_KEY: { from: { file: "tls.key" }, to: { file: "/run/secrets/tls.key" } },
      },
    };
    const events: KilnEvent[] = [];
    const dataDir = path.join(workDir, ".kiln");
    const env: Record<string, string> = { KT_NPM_TOKEN: values.npm, KT_DB_PASSWORD: values.db };
    // Every log line, at every level, as the logger receives it (fields included).
    const logged: string[] = [];
    const record = (level: string) => (message: string, fields?: Record<string, unknown>) => void logged.push(`${level} ${message} ${JSON.stringify(fields ?? {})}`);
    const logger = { debug: record("debug"), info: record("info"), warn: record("warn"), error: record("error") };
    const kiln = createKiln({ providers: { docker: () => createDockerProvider() }, dataDir, env, logger, onEvent: (event) => events.push(event) });
    try {
      const first = await kiln.deploy({ spec, baseDir: workDir });
      expect(first.outcome).toBe("deployed");
      expect(events.some((event) => event.type === "image.build.step")).toBe(true);
      const [info] = await containersOf(service);
      expect(info?.State).toBe("running");

      // The container has both secrets, and the build step read the build secret.
      expect((await execIn(info!.Id, ["sh", "-c", 'printf %s "$DB_PASSWORD"'])).output).toBe(values.db);
      expect((await execIn(info!.Id, ["cat", "/run/secrets/tls.key"])).output).toBe(values.tls);
      expect((await execIn(info!.Id, ["cat", "/www/npm.sha256"])).output.trim()).toBe(sha256(values.npm));
      // The file is on a read-only tmpfs mount, and not in the container's writable layer.
      const mounts = (await execIn(info!.Id, ["cat", "/proc/mounts"])).output.split("\n").map((line) => line.split(" "));
      const secretMount = mounts.find((fields) => fields[1] === "/run/secrets");
      expect(secretMount?.[2]).toBe("tmpfs");
      expect(secretMount?.[3]?.split(",")).toContain("ro");
      expect((await execIn(info!.Id, ["sh", "-c", "echo x > /run/secrets/tls.key"])).exitCode).not.toBe(0);
      // GET /containers/{id}/changes answers `null` when nothing changed, which docker-modem hands back unparsed.
      const answer = (await docker.getContainer(info!.Id).changes()) as unknown;
      const changes = ((Buffer.isBuffer(answer) ? JSON.parse(answer.toString("utf8")) : answer) ?? []) as { Path: string }[];
      expect(changes.map((change) => change.Path).filter((changed) => changed.includes("tls.key"))).toEqual([]);
      const inspected = await docker.getContainer(info!.Id).inspect();
      expect(inspected.Mounts).toEqual([expect.objectContaining({ Type: "bind", Destination: "/run/secrets", RW: false })]);
      expect(leaks(JSON.stringify(inspected.Config.Labels), Object.values(values))).toEqual([]);
      // The env secret is in the container's configuration (docker inspect shows it), the file secret is not.
      expect(inspected.Config.Env).toContain(`DB_PASSWORD=${values.db}`);
      expect(leaks(JSON.stringify(inspected.Config), [values.npm, values.tls])).toEqual([]);

      // Not in the image: neither its history nor any of its layers.
      const history = await docker.getImage(inspected.Image).history();
      expect(leaks(JSON.stringify(history), Object.values(values))).toEqual([]);
      const saved = await collect(await docker.getImage(inspected.Image).get());
      expect(saved.length).toBeGreaterThan(1024);
      expect(leaks(saved, Object.values(values))).toEqual([]);
      // Not in Kiln's state, nor in its events.
      expect(leaks(await readTree(dataDir), Object.values(values))).toEqual([]);
      expect(leaks(JSON.stringify(events), Object.values(values))).toEqual([]);
      expect(logged.length).toBeGreaterThan(0);
      expect(leaks(logged.join("\n"), Object.values(values))).toEqual([]);

      // A changed value makes a new release: the new container gets it, the old one's secret folder goes with it.
      const folders = await readdir(secretsDir, { recursive: true });
      const oldName = info!.Names[0]!.replace(/^\//, "");
      expect(folders.some((entry) => entry.endsWith(`/${oldName}`))).toBe(true);
      env.KT_DB_PASSWORD = `db-canary-${hex(12)}`;
      const second = await kiln.deploy({ spec, baseDir: workDir });
      expect(second.outcome).toBe("deployed");
      const after = await containersOf(service);
      expect(after.map((container) => container.Id)).not.toContain(info!.Id);
      expect(after).toHaveLength(1);
      expect((await execIn(after[0]!.Id, ["sh", "-c", 'printf %s "$DB_PASSWORD"'])).output).toBe(env.KT_DB_PASSWORD);
      expect((await readdir(secretsDir, { recursive: true })).filter((entry) => entry.endsWith(`/${oldName}`))).toEqual([]);
      expect(leaks(await readTree(dataDir), [...Object.values(values), env.KT_DB_PASSWORD])).toEqual([]);
    } finally {
      await kiln.close();
    }
    // Kiln's secret folders are closed to other users of the host.
    expect((await lstat(secretsDir)).mode & 0o077).toBe(0);
  });

  it("cancelling a build with secrets stops the docker CLI and the build", { timeout: 120_000 }, async () => {
    const service = `ksecc-${run}`;
    services.push(service);
    const contextDir = path.join(workDir, "slow");
    await mkdir(contextDir, { recursive: true });
    await writeFile(path.join(contextDir, "Dockerfile"), `FROM ${BASE_IMAGE}\nRUN --mount=type=secret,id=token echo ${run} && sleep 90\n`);
    const recipe: ImageRecipe & { dockerfile: DockerfileRecipe } = {
      target: { service, environment: "test" },
      fingerprint: `sha256:${hex(32)}`,
      dockerfile: { kind: "dockerfile", contextDir, dockerfilePath: path.join(contextDir, "Dockerfile"), files: ["Dockerfile"], args: {}, secrets: new Map([["token", new SecretValue(`token-${hex(8)}`)]]) },
    };
    const controller = new AbortController();
    const startedAt = Date.now();
    const ctx: ProviderContext = {
      signal: controller.signal,
      logger: silentLogger,
      // Cancel once the slow step runs.
      emit: (event) => {
        if (event.type === "image.build.log" && event.message.includes(run) && !event.message.includes("RUN")) controller.abort(new Error("cancelled by the test"));
      },
    };
    const error = await createDockerProvider().images.build(recipe, ctx).catch((caught: unknown) => caught);
    expect(error).toMatchObject({ code: "ABORTED" });
    expect(controller.signal.aborted).toBe(true);
    // Well before the step's 90 s: the CLI was stopped, not waited for.
    expect(Date.now() - startedAt).toBeLessThan(60_000);
    expect(await docker.listImages({ filters: { label: [`${LABELS.service}=${service}`] } })).toEqual([]);
    // The step's process ends with the build: the engine cancelled it.
    await waitFor("the cancelled step's process to end", async () => ((await runningSteps(run)) === 0 ? true : undefined));
  });

  it("keeps a build secret out of progress and errors when a step prints it and fails", { timeout: 120_000 }, async () => {
    const service = `ksecf-${run}`;
    services.push(service);
    const contextDir = path.join(workDir, "failing");
    await mkdir(contextDir, { recursive: true });
    await writeFile(path.join(contextDir, "Dockerfile"), `FROM ${BASE_IMAGE}\nRUN --mount=type=secret,id=token cat /run/secrets/token && exit 3\n`);
    const value = `token-canary-${hex(12)}`;
    const recipe: ImageRecipe & { dockerfile: DockerfileRecipe } = {
      target: { service, environment: "test" },
      fingerprint: `sha256:${hex(32)}`,
      dockerfile: {
        kind: "dockerfile",
        contextDir,
        dockerfilePath: path.join(contextDir, "Dockerfile"),
        files: ["Dockerfile"],
        args: {},
        secrets: new Map([["token", new SecretValue(value)]]),
      },
    };
    const progress: ProviderProgress[] = [];
    const ctx: ProviderContext = { signal: new AbortController().signal, logger: silentLogger, emit: (event) => progress.push(event) };
    const error = await createDockerProvider().images.build(recipe, ctx).catch((caught: unknown) => caught);
    expect(error).toMatchObject({ code: "BUILD_FAILED" });
    expect((error as Error).message).toMatch(/exit code: 3/);
    expect(progress.some((event) => event.type === "image.build.log" && event.message.includes("[secret]"))).toBe(true);
    expect(leaks(JSON.stringify(progress), [value])).toEqual([]);
    expect(leaks(`${(error as Error).message} ${JSON.stringify(error)}`, [value])).toEqual([]);
  });
});
