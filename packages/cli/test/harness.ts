/**
 * The harness of the CLI's black-box integration tests (`packages/cli/test/*.integ.test.ts`): run
 * the built `kiln` binary as a user would, make throwaway copies of examples/hello-web, inspect and
 * clean up what Kiln left in the Docker engine. Repository-specific (it spawns
 * `packages/cli/dist/bin.js` and copies `examples/hello-web`), so it lives under `test/`, which the
 * package neither builds nor ships; general test tools belong in `@kilnjs/testkit`.
 */
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { cp, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { get } from "node:http";
import { createServer as createNetServer } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { createRequire } from "node:module";
import { fileURLToPath, pathToFileURL } from "node:url";
import { createFileStateStore, type WaitOutcome } from "@kilnjs/core";
import Docker from "dockerode";

/** The monorepo's root folder. */
export const REPO_ROOT = fileURLToPath(new URL("../../../", import.meta.url));
/** The built CLI entry point (`npx turbo run build` makes it). */
export const KILN_BIN = path.join(REPO_ROOT, "packages/cli/dist/bin.js");
/** The test-only `kiln` that dies at a journal step: `kiln-crash-at.ts <point> <args...>`, run with tsx. */
export const KILN_CRASH_AT_SCRIPT = path.join(REPO_ROOT, "packages/cli/test/kiln-crash-at.ts");
/** tsx's loader, for `node --import` (resolved here: the commands run in folders outside the repository). */
const TSX_LOADER = pathToFileURL(createRequire(import.meta.url).resolve("tsx")).href;
/** The example app the tests deploy. */
export const HELLO_WEB = path.join(REPO_ROOT, "examples/hello-web");

export const LABEL_SERVICE = "dev.kiln.service";
export const LABEL_ENVIRONMENT = "dev.kiln.environment";
export const LABEL_RELEASE = "dev.kiln.release";
export const LABEL_FINGERPRINT = "dev.kiln.fingerprint";

/** A short random suffix, lowercase hex (valid in Kiln service and environment names). */
export const randomSuffix = (bytes = 3): string => randomBytes(bytes).toString("hex");

/** A Docker client for the engine the tests use (`DOCKER_HOST` unix socket or tcp, else the default socket). */
export function dockerClient(): Docker {
  const host = process.env.DOCKER_HOST;
  if (host?.startsWith("unix://")) return new Docker({ socketPath: host.slice("unix://".length) });
  const tcp = host ? /^(?:tcp|http):\/\/(\[[^\]]+\]|[^:/]+)(?::(\d+))?\/?$/.exec(host) : null;
  if (tcp) return new Docker({ host: tcp[1]!.replace(/^\[(.*)\]$/, "$1"), port: tcp[2] === undefined ? 2375 : Number(tcp[2]), protocol: "http" });
  return new Docker();
}

/** What one run of a command did. */
export interface CommandResult {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
  readonly elapsedMs: number;
}

/** Formats a result for assertion messages, so a failure shows what the CLI said. */
export function describeResult(result: CommandResult): string {
  return `exit ${result.code ?? result.signal} after ${result.elapsedMs} ms\n--- stdout ---\n${result.stdout}\n--- stderr ---\n${result.stderr}`;
}

/** Options of {@link runCommand} and {@link startCommand}. */
export interface CommandOptions {
  readonly cwd: string;
  /** Added to this process's environment (with NO_COLOR=1 and FORCE_COLOR=0). */
  readonly env?: NodeJS.ProcessEnv;
  /** The command is killed with SIGKILL (by its own pid) after this long; default 150 s. */
  readonly timeoutMs?: number;
}

/** A command started in the background: its output so far, signals, and its end. */
export interface RunningCommand {
  readonly pid: number;
  /** Everything it printed on stdout so far. */
  stdout(): string;
  stderr(): string;
  /** Sends `signal` to this process only (by its pid). */
  kill(signal: NodeJS.Signals): void;
  /** Whether it has exited. */
  exited(): boolean;
  /** Resolves when it exits (after `timeoutMs` it is killed with SIGKILL). */
  readonly done: Promise<CommandResult>;
}

/**
 * Starts a command without waiting for it; see {@link RunningCommand}. Kills it (by its own pid)
 * after `timeoutMs`, so a hung command fails the test instead of hanging the suite.
 */
export function startCommand(command: string, args: readonly string[], options: CommandOptions): RunningCommand {
  const startedAt = Date.now();
  const timeoutMs = options.timeoutMs ?? 150_000;
  const child = spawn(command, args, {
    cwd: options.cwd,
    env: { ...process.env, NO_COLOR: "1", FORCE_COLOR: "0", ...options.env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  let finished = false;
  child.stdout.setEncoding("utf8").on("data", (chunk: string) => (stdout += chunk));
  child.stderr.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk));
  const done = new Promise<CommandResult>((resolve, reject) => {
    const timer = setTimeout(() => {
      stderr += `\n[test] killed after ${timeoutMs} ms\n`;
      child.kill("SIGKILL");
    }, timeoutMs);
    child.on("error", (error) => {
      clearTimeout(timer);
      finished = true;
      reject(error);
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      finished = true;
      resolve({ code, signal, stdout, stderr, elapsedMs: Date.now() - startedAt });
    });
  });
  if (child.pid === undefined) {
    // spawn failed (ENOENT, …): `done` rejects with the reason.
    return { pid: -1, stdout: () => stdout, stderr: () => stderr, kill: () => undefined, exited: () => true, done };
  }
  const pid = child.pid;
  return {
    pid,
    stdout: () => stdout,
    stderr: () => stderr,
    kill: (signal) => {
      if (!finished) child.kill(signal);
    },
    exited: () => finished,
    done,
  };
}

/** Runs a command to its end and collects its output; see {@link startCommand}. */
export function runCommand(command: string, args: readonly string[], options: CommandOptions): Promise<CommandResult> {
  return startCommand(command, args, options).done;
}

/** Runs `kiln <args>` (the built binary, with this Node) in `cwd`. */
export function kiln(cwd: string, args: readonly string[], timeoutMs?: number): Promise<CommandResult> {
  return kilnWith(cwd, args, timeoutMs ? { timeoutMs } : {});
}

/** Parses NDJSON output (one JSON object a line; other lines are an error). */
export function jsonLines(text: string): Array<Record<string, unknown> & { type: string }> {
  return text
    .split("\n")
    .filter((line) => line.trim() !== "")
    .map((line) => {
      try {
        return JSON.parse(line) as Record<string, unknown> & { type: string };
      } catch {
        throw new Error(`not a JSON line: ${line}`);
      }
    });
}

/** Runs `kiln <args> --json` expecting one JSON document of `type` on stdout and exit 0. */
export async function kilnJson<T>(cwd: string, args: readonly string[], type: string): Promise<T> {
  const result = await kiln(cwd, [...args, "--json"]);
  if (result.code !== 0) throw new Error(`kiln ${args.join(" ")} failed: ${describeResult(result)}`);
  const document = jsonLines(result.stdout).find((line) => line.type === type);
  if (!document) throw new Error(`kiln ${args.join(" ")} printed no "${type}" document: ${describeResult(result)}`);
  return document as T;
}

/** Replaces exactly one occurrence of `from`; throws when it is missing, so a changed example fails loudly. */
export function replaceOnce(text: string, from: string, to: string): string {
  const index = text.indexOf(from);
  if (index < 0) throw new Error(`the text does not contain ${JSON.stringify(from)}`);
  return text.slice(0, index) + to + text.slice(index + from.length);
}

/** 1-based line number of the first line of `text` that contains `needle`. */
export function lineOf(text: string, needle: string): number {
  const index = text.split("\n").findIndex((line) => line.includes(needle));
  if (index < 0) throw new Error(`no line contains ${JSON.stringify(needle)}`);
  return index + 1;
}

/** Short health timings for copies of hello-web, so failing rollouts end in seconds. */
export const FAST_HEALTH = { intervalMs: 300, timeoutMs: 500, startPeriodMs: 1000, healthyThreshold: 2, unhealthyThreshold: 3 } as const;
/** The stop grace period of the copies (hello-web exits at once on SIGTERM). */
export const FAST_STOP_GRACE_MS = 1000;

/** The derived health deadline of {@link FAST_HEALTH}, as core computes it by default. */
export function fastHealthDeadlineMs(): number {
  const h = FAST_HEALTH;
  return h.startPeriodMs + (h.healthyThreshold + h.unhealthyThreshold) * (h.intervalMs + h.timeoutMs);
}

/** Keeps track of what the tests create, so `afterAll` can remove it whatever happened. */
export class Scratch {
  readonly dirs = new Set<string>();
  readonly services = new Set<string>();
  readonly environments = new Set<string>();

  /** A unique service name for one test. */
  service(prefix = "itest"): string {
    const name = `${prefix}-${randomSuffix()}`;
    this.services.add(name);
    return name;
  }

  /**
   * A temp copy of examples/hello-web whose kiln.yaml names `service`, with short health
   * timings; `edit` may change the spec text further.
   */
  async helloWeb(service: string, edit: (spec: string) => string = (spec) => spec): Promise<App> {
    const dir = await mkdtemp(path.join(tmpdir(), "kiln-cli-itest-"));
    this.dirs.add(dir);
    await cp(HELLO_WEB, dir, { recursive: true, filter: (source) => !/[/\\](\.kiln|node_modules)$/.test(source) });
    let spec = await readFile(path.join(dir, "kiln.yaml"), "utf8");
    spec = replaceOnce(spec, "service: hello-web", `service: ${service}`);
    spec = replaceOnce(spec, "intervalMs: 500", `intervalMs: ${FAST_HEALTH.intervalMs}`);
    spec = replaceOnce(spec, "timeoutMs: 1000", `timeoutMs: ${FAST_HEALTH.timeoutMs}`);
    spec = replaceOnce(spec, "healthyThreshold: 2", `healthyThreshold: ${FAST_HEALTH.healthyThreshold}`);
    spec = replaceOnce(spec, "unhealthyThreshold: 3", `unhealthyThreshold: ${FAST_HEALTH.unhealthyThreshold}`);
    spec = replaceOnce(spec, "startPeriodMs: 2000", `startPeriodMs: ${FAST_HEALTH.startPeriodMs}`);
    spec = replaceOnce(spec, "stopGracePeriodMs: 5000", `stopGracePeriodMs: ${FAST_STOP_GRACE_MS}`);
    await writeFile(path.join(dir, "kiln.yaml"), edit(spec));
    // A file of the build context unique to this copy: its fingerprint (and so its image) can
    // never be another test's or another run's, whatever the example's .dockerignore leaves out.
    await writeFile(path.join(dir, "itest-id.txt"), `${service}\n`);
    return new App(dir, service);
  }

  /** Removes every container and image labelled with a tracked service or environment, then the temp dirs. */
  async cleanUp(docker: Docker): Promise<string[]> {
    const problems: string[] = [];
    const labels = [...[...this.services].map((s) => `${LABEL_SERVICE}=${s}`), ...[...this.environments].map((e) => `${LABEL_ENVIRONMENT}=${e}`)];
    for (const label of labels) problems.push(...(await removeLabelled(docker, label)));
    for (const dir of this.dirs) await rm(dir, { recursive: true, force: true }).catch((error: unknown) => problems.push(`rm ${dir}: ${String(error)}`));
    return problems;
  }
}

/**
 * Force-removes the containers labelled `label`, then its images, networks and volumes. Images in use by someone
 * else's containers are left (a 409); errors are returned, never thrown.
 */
export async function removeLabelled(docker: Docker, label: string, options: { forceImages?: boolean } = {}): Promise<string[]> {
  const problems: string[] = [];
  try {
    for (const info of await docker.listContainers({ all: true, filters: { label: [label] } })) {
      await docker
        .getContainer(info.Id)
        .remove({ force: true })
        .catch((error: unknown) => {
          if ((error as { statusCode?: number }).statusCode !== 404) problems.push(`container ${info.Id}: ${String(error)}`);
        });
    }
    for (const info of await docker.listImages({ all: true, filters: { label: [label] } })) {
      await docker
        .getImage(info.Id)
        .remove({ force: options.forceImages ?? true })
        .catch((error: unknown) => {
          const status = (error as { statusCode?: number }).statusCode;
          if (status !== 404 && status !== 409) problems.push(`image ${info.Id}: ${String(error)}`);
        });
    }
    // A front proxy's network and volume carry the same labels: left behind, networks use up the
    // engine's address pools (about 30 on a default engine) over many test runs.
    for (const info of await docker.listNetworks({ filters: { label: [label] } })) {
      await docker
        .getNetwork(info.Id)
        .remove()
        .catch((error: unknown) => {
          if ((error as { statusCode?: number }).statusCode !== 404) problems.push(`network ${info.Id}: ${String(error)}`);
        });
    }
    const { Volumes: volumes } = await docker.listVolumes({ filters: { label: [label] } });
    for (const volume of volumes ?? []) {
      await docker
        .getVolume(volume.Name)
        .remove()
        .catch((error: unknown) => {
          if ((error as { statusCode?: number }).statusCode !== 404) problems.push(`volume ${volume.Name}: ${String(error)}`);
        });
    }
  } catch (error) {
    problems.push(`${label}: ${String(error)}`);
  }
  return problems;
}

/** A temp copy of hello-web. */
export class App {
  constructor(
    readonly dir: string,
    readonly service: string,
  ) {}

  file(name: string): string {
    return path.join(this.dir, name);
  }

  async read(name: string): Promise<string> {
    return readFile(this.file(name), "utf8");
  }

  async write(name: string, content: string): Promise<void> {
    await writeFile(this.file(name), content);
  }

  async editSpec(edit: (spec: string) => string): Promise<void> {
    await this.write("kiln.yaml", edit(await this.read("kiln.yaml")));
  }

  exists(name: string): boolean {
    return existsSync(this.file(name));
  }

  kiln(args: readonly string[], timeoutMs?: number): Promise<CommandResult> {
    return kiln(this.dir, args, timeoutMs);
  }

  json<T>(args: readonly string[], type: string): Promise<T> {
    return kilnJson<T>(this.dir, args, type);
  }
}

/** Containers (running or not) with all of `labels` (`key=value`). */
export function containersWith(docker: Docker, ...labels: string[]): Promise<Docker.ContainerInfo[]> {
  return docker.listContainers({ all: true, filters: { label: labels } });
}

/** Images with all of `labels` (`key=value`). */
export function imagesWith(docker: Docker, ...labels: string[]): Promise<Docker.ImageInfo[]> {
  return docker.listImages({ filters: { label: labels } });
}

/** GET `http://host:port/path`: status and body text. Rejects when there is no complete answer within `timeoutMs`. */
export function httpGet(host: string, port: number, pathname: string, timeoutMs = 3_000): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const request = get({ host, port, path: pathname, timeout: timeoutMs, agent: false }, (response) => {
      let body = "";
      response.setEncoding("utf8");
      response.on("data", (chunk: string) => (body += chunk));
      response.on("end", () => resolve({ status: response.statusCode ?? 0, body }));
      response.on("error", reject);
    });
    request.on("timeout", () => request.destroy(new Error(`GET ${pathname} on ${host}:${port}: no answer within ${timeoutMs} ms`)));
    request.on("error", reject);
  });
}

/**
 * `{ done: true, value }` when `value` is defined, else `{ done: false }`: the attempt of core's
 * `waitFor` for a check that finds something or not.
 */
export function foundOrNot<T>(value: T | undefined): WaitOutcome<T> {
  return value === undefined ? { done: false } : { done: true, value };
}

/**
 * Runs a one-off container from `image` with `cmd` (labelled `labels` so cleanup finds it), waits
 * for it to exit and returns its output (TTY mode: plain text) and exit code; removes it.
 */
export async function runOnce(docker: Docker, image: string, cmd: string[], labels: Record<string, string>): Promise<{ exitCode: number; output: string }> {
  const container = await docker.createContainer({ Image: image, Cmd: cmd, Entrypoint: [], Tty: true, Labels: labels, HostConfig: { NetworkMode: "none" } });
  try {
    await container.start();
    const { StatusCode } = (await container.wait()) as { StatusCode: number };
    // docker-modem parses a body that happens to be JSON: turn it back into text.
    const logs: unknown = await container.logs({ stdout: true, stderr: true, follow: false });
    const output = Buffer.isBuffer(logs) ? logs.toString("utf8") : typeof logs === "string" ? logs : JSON.stringify(logs);
    return { exitCode: StatusCode, output };
  } finally {
    await container.remove({ force: true }).catch(() => undefined);
  }
}

// ---- the JSON documents the CLI prints (only the fields the tests read) ----

export interface StatusDocument {
  type: "status";
  release?: { number: number };
  instances: Array<{ id: string; name: string; release?: number; state: string; imageId: string; endpoints: Record<string, { host: string; port: number }> }>;
  drift: string[];
}

export interface HistoryRelease {
  number: number;
  status: "pending" | "succeeded" | "failed";
  fingerprint: string;
  count: number;
  image: { id: string; digest: string; names: string[]; fingerprint: string };
  error?: { code: string; message: string };
}

export interface HistoryDocument {
  type: "history";
  currentRelease?: number;
  releases: HistoryRelease[];
}

export interface PlanDocument {
  type: "plan";
  plan: { fingerprint: string; noop: boolean; image: { action: string }; rollout: { action: string } };
}

// ---- rollouts and crash tests: environment, signals, state, capacity sampling ----

/** Runs `kiln <args>` with extra environment variables (and an optional time limit). */
export function kilnWith(cwd: string, args: readonly string[], options: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<CommandResult> {
  return startKiln(cwd, args, options).done;
}

/** A `kiln` process started in the background. */
export type RunningKiln = RunningCommand;

/** Starts `kiln <args>` without waiting for it; see {@link RunningCommand}. */
export function startKiln(cwd: string, args: readonly string[], options: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): RunningKiln {
  const running = startCommand(process.execPath, [KILN_BIN, ...args], { cwd, ...options });
  if (running.pid < 0) {
    running.done.catch(() => undefined); // the reason is in the error thrown here instead
    throw new Error(`could not start kiln ${args.join(" ")}`);
  }
  return running;
}

/**
 * Runs `kiln <args>` from the CLI's source with test-only `journalHooks.crashAt` set to `crashAt`
 * (`<phase>:<verb>:<n>`), so the process kills itself with SIGKILL right after writing that journal
 * entry; see packages/cli/test/kiln-crash-at.ts.
 */
export function kilnCrashingAt(cwd: string, crashAt: string, args: readonly string[], options: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<CommandResult> {
  return startCommand(process.execPath, ["--import", TSX_LOADER, KILN_CRASH_AT_SCRIPT, crashAt, ...args], { cwd, ...options }).done;
}

/** JSON lines printed so far, skipping an incomplete last line. */
export function completeJsonLines(text: string): Array<Record<string, unknown> & { type: string }> {
  const complete = text.slice(0, text.lastIndexOf("\n") + 1);
  return jsonLines(complete);
}

/**
 * The file store's state of `service@environment` under `dir/.kiln/state` (read through the store:
 * journal entries appended since its last update and the lease, kept in files of their own, are
 * in it), or undefined when there is none yet.
 */
export async function readTargetState(dir: string, service: string, environment = "default"): Promise<StateDocument | undefined> {
  const directory = path.join(dir, ".kiln", "state");
  const name = `${service}@${environment}`;
  if (![".json", ".lease.json"].some((suffix) => existsSync(path.join(directory, `${name}${suffix}`)))) return undefined;
  return (await createFileStateStore({ directory }).read({ service, environment })) as unknown as StateDocument;
}

/** A whole-block replacement in a kiln.yaml: the top-level `key:` and its indented lines become `block`. */
export function replaceTopLevelBlock(spec: string, key: string, block: string): string {
  const lines = spec.split("\n");
  const start = lines.findIndex((line) => line.startsWith(`${key}:`));
  if (start < 0) throw new Error(`the spec has no top-level ${key}:`);
  let end = start + 1;
  while (end < lines.length && (lines[end]!.startsWith(" ") || lines[end]!.startsWith("\t"))) end++;
  return [...lines.slice(0, start), ...block.replace(/\n$/, "").split("\n"), ...lines.slice(end)].join("\n");
}

/** Health settings for a hello-web copy, as the `health:` block of kiln.yaml (http check on /healthz). */
export interface HealthSettings {
  intervalMs: number;
  timeoutMs: number;
  healthyThreshold: number;
  unhealthyThreshold: number;
  startPeriodMs: number;
  stabilityWindowMs?: number;
  deadlineMs?: number;
}

/** Short health timings for the rollouts and crash tests. */
export const QUICK_HEALTH: HealthSettings = { intervalMs: 300, timeoutMs: 500, healthyThreshold: 2, unhealthyThreshold: 2, startPeriodMs: 500 };

/** The `health:` block of a hello-web spec with these settings. */
export function healthBlock(settings: HealthSettings): string {
  return [
    "health:",
    "  http: { port: http, path: /healthz }",
    ...Object.entries(settings)
      .filter(([, value]) => value !== undefined)
      .map(([key, value]) => `  ${key}: ${String(value)}`),
  ].join("\n");
}

/** Sets the hello-web spec's `instances.env` to LOG_LEVEL plus `env` (values as strings), replacing what was there. */
export function withEnv(spec: string, env: Record<string, string>): string {
  const lines = spec.split("\n");
  const start = lines.indexOf("  env:");
  if (start < 0) throw new Error("the spec has no instances.env block");
  let end = start + 1;
  while (end < lines.length && lines[end]!.startsWith("    ")) end++;
  const body = Object.entries({ LOG_LEVEL: "info", ...env }).map(([key, value]) => `    ${key}: ${JSON.stringify(value)}`);
  return [...lines.slice(0, start + 1), ...body, ...lines.slice(end)].join("\n");
}

/**
 * Samples a number (healthy capacity) every `intervalMs` until stopped: the lowest value seen, and
 * every sample with its time, for assertion messages. A sample that throws is recorded as an error
 * (not as a value), so a flaky read never counts as lost capacity, but errors are reported.
 */
export function startSampler(sample: () => Promise<number>, intervalMs = 200): { stop(): Promise<SamplerReport> } {
  const values: Array<{ at: number; value: number }> = [];
  const errors: string[] = [];
  const startedAt = Date.now();
  let running = true;
  const loop = (async () => {
    while (running) {
      const before = Date.now();
      try {
        values.push({ at: before - startedAt, value: await sample() });
      } catch (error) {
        errors.push(String(error));
      }
      const wait = intervalMs - (Date.now() - before);
      if (wait > 0 && running) await new Promise((resolve) => setTimeout(resolve, wait));
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      const min = values.length === 0 ? Number.NaN : Math.min(...values.map((v) => v.value));
      return { min, samples: values.length, errors, values };
    },
  };
}

export interface SamplerReport {
  readonly min: number;
  readonly samples: number;
  readonly errors: readonly string[];
  readonly values: ReadonlyArray<{ at: number; value: number }>;
}

/** GET `http://host:port/path` with a short timeout: the status, or 0 when it did not answer. */
export function httpStatus(host: string, port: number, pathname: string, timeoutMs = 1_000): Promise<number> {
  return httpGet(host, port, pathname, timeoutMs).then(
    (answer) => answer.status,
    () => 0,
  );
}

/** How many running containers of `service` answer GET /healthz with 200 on their published 8080/tcp port. */
export async function healthyContainers(docker: Docker, service: string): Promise<number> {
  const containers = await docker.listContainers({ filters: { label: [`${LABEL_SERVICE}=${service}`], status: ["running"] } });
  const answers = await Promise.all(
    containers.map(async (container) => {
      const port = container.Ports.find((p) => p.PrivatePort === 8080 && p.Type === "tcp" && p.PublicPort);
      if (!port) return false;
      return (await httpStatus("127.0.0.1", port.PublicPort, "/healthz")) === 200;
    }),
  );
  return answers.filter(Boolean).length;
}

/** Docker's State.StartedAt of each container, by id. */
export async function startedAtOf(docker: Docker, ids: readonly string[]): Promise<Map<string, string>> {
  return new Map(await Promise.all(ids.map(async (id) => [id, (await docker.getContainer(id).inspect()).State.StartedAt] as const)));
}

// ---- the in-memory provider driven through the CLI ----

/** The CLI's provider module for `provider: memory` (a test fixture). */
export const MEMORY_PROVIDER_MODULE = path.join(REPO_ROOT, "packages/cli/test/fixtures/memory-provider.mjs");

/** The memory provider's state file as the tests read it. */
export interface MemoryCloud {
  images: Array<{ ref: { id: string; fingerprint: string }; service: string }>;
  instances: Array<{ instance: { id: string; release?: number; state: string; target: { service: string; environment: string }; imageId: string } }>;
  launchedIds: string[];
}

/** Reads the memory provider's state file (empty when it does not exist yet). */
export async function readMemoryCloud(file: string): Promise<MemoryCloud> {
  try {
    const text = await readFile(file, "utf8");
    return text.trim() === "" ? { images: [], instances: [], launchedIds: [] } : (JSON.parse(text) as MemoryCloud);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return { images: [], instances: [], launchedIds: [] };
    throw error;
  }
}

/**
 * A throwaway service on the in-memory provider: a folder with kiln.yaml, a Dockerfile and an app
 * file, and the provider's state file outside the build context. Run `kiln` in it with {@link MemoryApp.kiln}.
 */
export class MemoryApp {
  constructor(
    readonly dir: string,
    readonly service: string,
    /** The memory provider's state file ("the cloud"). */
    readonly cloudFile: string,
  ) {}

  static async create(root: string, service: string, spec: (service: string) => string): Promise<MemoryApp> {
    const dir = path.join(root, service);
    await mkdir(dir, { recursive: true });
    await writeFile(path.join(dir, "Dockerfile"), "FROM scratch\nCOPY app.txt /app.txt\n");
    await writeFile(path.join(dir, "app.txt"), "v1\n");
    await writeFile(path.join(dir, "kiln.yaml"), spec(service));
    return new MemoryApp(dir, service, path.join(root, `${service}.cloud.json`));
  }

  get env(): NodeJS.ProcessEnv {
    return { KILN_PROVIDER_MODULE_MEMORY: MEMORY_PROVIDER_MODULE, KILN_MEMORY_STATE_FILE: this.cloudFile };
  }

  write(name: string, content: string): Promise<void> {
    return writeFile(path.join(this.dir, name), content);
  }

  kiln(args: readonly string[], env: NodeJS.ProcessEnv = {}, timeoutMs?: number): Promise<CommandResult> {
    return kilnWith(this.dir, args, { env: { ...this.env, ...env }, ...(timeoutMs ? { timeoutMs } : {}) });
  }

  cloud(): Promise<MemoryCloud> {
    return readMemoryCloud(this.cloudFile);
  }

  state(): Promise<StateDocument | undefined> {
    return readTargetState(this.dir, this.service);
  }
}

// ---- the state file (only the fields the tests read) ----

export interface StateJournalEntry {
  seq: number;
  phase: "intent" | "outcome";
  step: string;
  op: string;
}

export interface StateRollout {
  id: string;
  status: "running" | "succeeded" | "failed" | "aborted";
  kind: string;
  fromRelease?: number;
  toRelease: number;
  journal: StateJournalEntry[];
  error?: { code: string; message: string };
  restoredRelease?: number;
}

export interface StateRelease {
  number: number;
  status: "pending" | "succeeded" | "failed";
  fingerprint: string;
  configHash: string;
  count: number;
  image: { id: string; digest: string; names: string[]; fingerprint: string };
  rollbackOf?: number;
  error?: { code: string; message: string };
}

export interface StateDocument {
  target: { service: string; environment: string };
  releases: StateRelease[];
  rollouts: StateRollout[];
  currentRelease?: number;
  lease?: { holder: { user: string; host: string; pid: number; command: string; since: string }; token: number; expiresAt: string; ttlMs: number };
}

export interface LockDocument {
  type: "lock";
  target: string;
  lock: null | { holder: { pid: number }; token: number; stale: boolean };
}

// ---- the front proxy and traffic through it (zero-downtime tests, proxy bench) ----

/** A TCP port on 127.0.0.1 that nothing listens on right now (the kernel picks it; it is released at once). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createNetServer();
    server.unref();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      server.close(() => (port > 0 ? resolve(port) : reject(new Error("no free port"))));
    });
  });
}

/** The spec's `traffic:` block with a front proxy on `port` (127.0.0.1), appended to a kiln.yaml. */
export function withProxy(spec: string, port: number, extra = ""): string {
  return `${spec.replace(/\n*$/, "\n")}\ntraffic:\n  proxy: { port: ${port}${extra ? `, ${extra}` : ""} }\n`;
}

/** Runs `cmd` inside a running container (docker exec) and returns its exit code and output (stdout + stderr). */
export async function execIn(docker: Docker, id: string, cmd: string[], timeoutMs = 10_000): Promise<{ exitCode: number; output: string }> {
  const exec = await docker.getContainer(id).exec({ Cmd: cmd, AttachStdout: true, AttachStderr: true, Tty: true });
  const stream = await exec.start({ hijack: true, stdin: false, Tty: true });
  const output = await new Promise<string>((resolve, reject) => {
    let text = "";
    const timer = setTimeout(() => {
      stream.destroy();
      reject(new Error(`docker exec ${cmd.join(" ")} in ${id.slice(0, 12)}: no end within ${timeoutMs} ms`));
    }, timeoutMs);
    stream.on("data", (chunk: Buffer) => (text += chunk.toString("utf8")));
    stream.on("end", () => {
      clearTimeout(timer);
      resolve(text);
    });
    stream.on("error", (error) => {
      clearTimeout(timer);
      reject(error);
    });
  });
  const inspected = await exec.inspect();
  return { exitCode: inspected.ExitCode ?? -1, output };
}

/** What hello-web's `GET /stats` says. */
export interface HelloWebStats {
  requests: number;
  servedAfterStop: number;
  stopRequestedAt: number | null;
  instance: string;
  version: string;
}

/** Reads hello-web's /stats from inside its container (docker exec of node: no network address needed). */
export async function helloWebStats(docker: Docker, id: string): Promise<HelloWebStats> {
  const script = "fetch('http://127.0.0.1:8080/stats').then((r) => r.text()).then((t) => process.stdout.write(t), (e) => { console.error(String(e)); process.exit(1); })";
  const { exitCode, output } = await execIn(docker, id, ["node", "-e", script]);
  if (exitCode !== 0) throw new Error(`/stats of ${id.slice(0, 12)}: exit ${exitCode}: ${output}`);
  return JSON.parse(output) as HelloWebStats;
}

/** The host ports a container publishes (bound or asked for), as `container-port -> host:port` texts; empty when none. */
export function publishedPorts(inspected: Docker.ContainerInspectInfo): string[] {
  const found: string[] = [];
  for (const [containerPort, bindings] of Object.entries(inspected.NetworkSettings?.Ports ?? {})) {
    for (const binding of bindings ?? []) if (binding?.HostPort) found.push(`${containerPort} -> ${binding.HostIp || "*"}:${binding.HostPort}`);
  }
  const asked = (inspected.HostConfig?.PortBindings ?? {}) as Record<string, Array<{ HostIp?: string; HostPort?: string }> | null>;
  for (const [containerPort, bindings] of Object.entries(asked)) {
    for (const binding of bindings ?? []) {
      if (binding.HostPort) found.push(`${containerPort} -> ${binding.HostIp || "*"}:${binding.HostPort} (asked)`);
    }
  }
  if (inspected.HostConfig?.PublishAllPorts) found.push("PublishAllPorts");
  return found;
}

/** Running or stopped containers that publish host port `port` (the front proxy of a test's spec). */
export async function containersPublishing(docker: Docker, port: number): Promise<Docker.ContainerInfo[]> {
  const all = await docker.listContainers({ all: true });
  return all.filter((info) => info.Ports.some((p) => p.PublicPort === port));
}
