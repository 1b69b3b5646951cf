import { spawn } from "node:child_process";
import { constants } from "node:fs";
import { access } from "node:fs/promises";
import path from "node:path";
import type { Readable } from "node:stream";
import { KilnError, redactSecrets, type ProviderContext, type ProviderProgress, type SecretValue } from "@kilnjs/core";
import type { DockerImageRecipe } from "./build-context.js";
import type { EngineAddress } from "./options.js";

/**
 * A docker CLI that serves build secrets to BuildKit: `buildx` (a CLI with the buildx plugin:
 * `docker buildx build --load`), or `builtin` (the BuildKit client built into the CLIs of Docker
 * 18.09 to 22.x: `DOCKER_BUILDKIT=1 docker build`).
 */
export interface BuildkitCli {
  /** The CLI as given: a path, or a name looked up on `PATH`. */
  readonly command: string;
  readonly kind: "buildx" | "builtin";
}

/** How long probing a CLI may take, in milliseconds. */
const PROBE_TIMEOUT_MS = 15_000;

/** Runs `command args` to its end; resolves with its exit code (-1 when it cannot start) and output. */
function run(command: string, args: readonly string[], env: NodeJS.ProcessEnv): Promise<{ exitCode: number; output: string }> {
  return new Promise((resolve) => {
    let output = "";
    const child = spawn(command, args, { env, stdio: ["ignore", "pipe", "pipe"], timeout: PROBE_TIMEOUT_MS });
    child.stdout.on("data", (chunk: Buffer) => (output += chunk.toString("utf8")));
    child.stderr.on("data", (chunk: Buffer) => (output += chunk.toString("utf8")));
    child.on("error", (error) => resolve({ exitCode: -1, output: error.message }));
    child.on("close", (code) => resolve({ exitCode: code ?? -1, output }));
  });
}

/**
 * How `command` builds with BuildKit secrets, or undefined when it cannot: `buildx` when
 * `<command> buildx version` succeeds, else `builtin` when `DOCKER_BUILDKIT=1 <command> build
 * --help` succeeds and lists `--secret` (a CLI of Docker 23 or later without buildx fails there:
 * "BuildKit is enabled but the buildx component is missing or broken").
 */
export async function probeBuildkitCli(command: string, env: NodeJS.ProcessEnv = process.env): Promise<BuildkitCli | undefined> {
  if ((await run(command, ["buildx", "version"], env)).exitCode === 0) return { command, kind: "buildx" };
  const help = await run(command, ["build", "--help"], { ...env, DOCKER_BUILDKIT: "1" });
  return help.exitCode === 0 && /--secret\b/.test(help.output) ? { command, kind: "builtin" } : undefined;
}

/** Every `docker` executable on `PATH`, then /usr/bin/docker (Debian's docker.io), without repeats. */
async function otherDockerClis(env: NodeJS.ProcessEnv): Promise<string[]> {
  const candidates = [...(env.PATH ?? "").split(path.delimiter).filter((dir) => dir !== "").map((dir) => path.join(dir, "docker")), "/usr/bin/docker"];
  const found: string[] = [];
  for (const candidate of new Set(candidates)) {
    if (await access(candidate, constants.X_OK).then(() => true, () => false)) found.push(candidate);
  }
  return found;
}

/**
 * Finds the CLI for builds with secrets: `configured` (the `dockerCli` option or `KILN_DOCKER_CLI`)
 * when `explicit`, else `docker` on `PATH`, checked with {@link probeBuildkitCli}. Kiln uses no
 * other CLI on its own (which docker runs must stay the user's choice), but when the one it tried
 * cannot serve secrets, the message names any other docker CLI on this machine that can.
 * @throws KilnError CAPABILITY_MISSING saying what to install (the buildx plugin) or which variable to set
 */
export async function findBuildkitCli(configured: string, explicit: boolean, env: NodeJS.ProcessEnv = process.env): Promise<BuildkitCli> {
  const found = await probeBuildkitCli(configured, env);
  if (found) return found;
  const others: string[] = [];
  for (const candidate of await otherDockerClis(env)) {
    if (candidate !== configured && (await probeBuildkitCli(candidate, env))) others.push(candidate);
  }
  const tried = explicit ? `${configured} (from the dockerCli option or KILN_DOCKER_CLI)` : `${configured} (on PATH)`;
  const hint = others.length > 0 ? ` This machine has one that can: set KILN_DOCKER_CLI=${others[0]} (or the provider's dockerCli option).` : "";
  throw new KilnError(
    "CAPABILITY_MISSING",
    `This build has build secrets (image.dockerfile.secrets), which reach RUN --mount=type=secret steps only through BuildKit, and the docker CLI ${tried} cannot run BuildKit builds. ` +
      `Install the docker buildx plugin (Debian: apt-get install docker-buildx; or docker-buildx-plugin from Docker's repository), or point KILN_DOCKER_CLI (or the provider's dockerCli option) at a docker CLI that has it, or at a CLI of Docker 18.09 to 22.x, whose BuildKit is built in.${hint}`,
    { details: { dockerCli: configured } },
  );
}

/** `#5 [2/3] RUN npm ci` or `#7 [build 2/4] COPY . .`: a step of BuildKit's plain progress. */
const BUILDKIT_STEP = /^#\d+ \[(?:[^\]]*? )?(\d+)\/(\d+)\] (.*)$/;
/** `#6 writing image sha256:… done`: the id of the image built. */
const WRITING_IMAGE = /^#\d+ writing image (sha256:[0-9a-f]{64})/;

/** Turns one line of BuildKit's plain progress into progress: a step header or a log line. */
export function buildkitLineProgress(line: string): ProviderProgress {
  const step = BUILDKIT_STEP.exec(line);
  if (step) return { type: "image.build.step", step: Number(step[1]), total: Number(step[2]), description: step[3]! };
  return { type: "image.build.log", message: line };
}

/** The engine's own error of a failed BuildKit build: its last `error:` / `ERROR:` line, else the last line. */
export function buildkitFailure(lines: readonly string[]): string {
  const errors = lines.filter((line) => /^(error|ERROR)\b:?/.test(line) || /^#\d+ ERROR:/.test(line));
  const last = errors.at(-1) ?? lines.filter((line) => line.trim() !== "").at(-1) ?? "the docker CLI failed without a message";
  return last.replace(/^#\d+ /, "").replace(/^(error|ERROR):?\s*/, "");
}

/** What {@link buildkitArguments} needs. */
export interface BuildkitArguments {
  readonly cli: BuildkitCli;
  readonly recipe: DockerImageRecipe;
  readonly tag: string;
  /** The Dockerfile's path inside the context tar. */
  readonly dockerfile: string;
  readonly labels: Readonly<Record<string, string>>;
  /** The build secrets' ids, in order: the n-th one's value is in the child's `KILN_BUILD_SECRET_<n>`. */
  readonly secretIds: readonly string[];
}

/**
 * The CLI's arguments for a build of the context tar on stdin (`-`): tag, labels, build
 * arguments and stage as the dockerode build sets them, plain progress, and each secret as
 * `--secret id=<id>,env=KILN_BUILD_SECRET_<n>`: argv names variables, never values. Pure.
 */
export function buildkitArguments({ cli, recipe, tag, dockerfile, labels, secretIds }: BuildkitArguments): string[] {
  return [
    ...(cli.kind === "buildx" ? ["buildx", "build", "--load"] : ["build"]),
    "--progress=plain",
    "--file",
    dockerfile,
    "--tag",
    tag,
    ...Object.entries(labels).flatMap(([key, value]) => ["--label", `${key}=${value}`]),
    ...Object.entries(recipe.dockerfile.args).flatMap(([key, value]) => ["--build-arg", `${key}=${value}`]),
    ...(recipe.dockerfile.stage === undefined ? [] : ["--target", recipe.dockerfile.stage]),
    ...secretIds.flatMap((id, index) => ["--secret", `id=${id},env=${secretVariable(index)}`]),
    "-",
  ];
}

/** The child's variable that holds the n-th build secret. */
function secretVariable(index: number): string {
  return `KILN_BUILD_SECRET_${index}`;
}

/**
 * The child's environment: Kiln's own, pointed at the provider's engine (`DOCKER_HOST`, no
 * `DOCKER_CONTEXT` or TLS settings, which the provider does not use either), BuildKit on, and the
 * secrets' values. Only the child and its user (and root) can read a process's environment.
 */
export function buildkitEnvironment(address: EngineAddress, secrets: readonly SecretValue[], env: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  const { DOCKER_CONTEXT: _context, DOCKER_TLS_VERIFY: _verify, DOCKER_CERT_PATH: _certs, DOCKER_TLS: _tls, ...rest } = env;
  return {
    ...rest,
    DOCKER_HOST: address.url,
    DOCKER_BUILDKIT: "1",
    ...Object.fromEntries(secrets.map((value, index) => [secretVariable(index), value.reveal()])),
  };
}

/** What {@link runBuildkitBuild} needs. */
export interface BuildkitBuild {
  readonly cli: BuildkitCli;
  readonly address: EngineAddress;
  readonly recipe: DockerImageRecipe;
  readonly tag: string;
  readonly labels: Readonly<Record<string, string>>;
  /** The context tar and the Dockerfile's path in it (from `packBuildContext`). */
  readonly context: { readonly stream: Readable; readonly dockerfile: string };
}

/** How long a cancelled build's CLI has to stop after SIGTERM before it gets SIGKILL, in milliseconds. */
const KILL_GRACE_MS = 2_000;

/** How many of the last output lines a failed build keeps, for its message. */
const KEPT_LINES = 40;

/**
 * Builds with BuildKit through the docker CLI: the context tar goes to the child's stdin, the
 * secrets through its environment, and every line of its plain progress becomes progress
 * (`image.build.step` for step headers, `image.build.log` for the rest), with any secret value in
 * it redacted. Cancelling `ctx.signal` stops the child (SIGTERM, then SIGKILL after 2 s), which
 * cancels the build on the engine.
 * @returns the image id the build wrote, when its output says it, or the build's own error
 *   (secret values redacted) when it failed
 * @throws KilnError ABORTED, BUILD_CONTEXT_INVALID when a context file cannot be read,
 *   BUILD_FAILED when the CLI cannot be run
 */
export async function runBuildkitBuild({ cli, address, recipe, tag, labels, context }: BuildkitBuild, ctx: ProviderContext): Promise<{ imageId?: string; error?: string }> {
  const secrets = [...(recipe.dockerfile.secrets ?? new Map<string, SecretValue>())];
  const values = secrets.map(([, value]) => value);
  const args = buildkitArguments({ cli, recipe, tag, dockerfile: context.dockerfile, labels, secretIds: secrets.map(([id]) => id) });
  ctx.logger.debug("docker build with BuildKit", { cli: cli.command, kind: cli.kind, tag, secrets: secrets.map(([id]) => id) });

  return new Promise((resolve, reject) => {
    const child = spawn(cli.command, args, { env: buildkitEnvironment(address, values), stdio: ["pipe", "pipe", "pipe"] });
    const kept: string[] = [];
    let imageId: string | undefined;
    let contextError: unknown;
    let spawnError: unknown;
    const onLine = (raw: string) => {
      const line = redactSecrets(raw.replace(/\s+$/, ""), values);
      if (line === "") return;
      kept.push(line);
      if (kept.length > KEPT_LINES) kept.shift();
      imageId = WRITING_IMAGE.exec(line)?.[1] ?? imageId;
      ctx.emit(buildkitLineProgress(line));
    };
    for (const stream of [child.stdout, child.stderr]) {
      let partial = "";
      stream.setEncoding("utf8");
      stream.on("data", (text: string) => {
        const lines = (partial + text).split("\n");
        partial = lines.pop()!;
        lines.forEach(onLine);
      });
      stream.on("end", () => {
        if (partial !== "") onLine(partial);
        partial = "";
      });
    }
    // SIGTERM lets the CLI cancel the build itself; the 20.10 CLI does not always (with a context
    // on stdin it may go on to the end), so SIGKILL follows: the engine cancels the build when the
    // CLI's connection closes.
    let killTimer: NodeJS.Timeout | undefined;
    const kill = () => {
      child.kill("SIGTERM");
      killTimer ??= setTimeout(() => child.kill("SIGKILL"), KILL_GRACE_MS);
    };
    ctx.signal.addEventListener("abort", kill, { once: true });
    if (ctx.signal.aborted) kill();
    // The child may stop reading early (a failed build): its stdin then breaks, which says nothing more.
    child.stdin.on("error", () => {});
    context.stream.on("error", (error) => {
      contextError ??= error;
      kill();
    });
    context.stream.pipe(child.stdin);
    child.on("error", (error) => (spawnError = error));
    child.on("close", (code) => {
      clearTimeout(killTimer);
      ctx.signal.removeEventListener("abort", kill);
      context.stream.destroy();
      if (contextError !== undefined) {
        reject(new KilnError("BUILD_CONTEXT_INVALID", `Reading the build context ${recipe.dockerfile.contextDir} failed: ${(contextError as Error).message}`, { cause: contextError }));
      } else if (ctx.signal.aborted) {
        reject(new KilnError("ABORTED", "The operation was cancelled.", { cause: ctx.signal.reason }));
      } else if (spawnError !== undefined) {
        reject(new KilnError("BUILD_FAILED", `Running the docker CLI ${cli.command} for ${tag} failed: ${(spawnError as Error).message}`, { cause: spawnError, details: { tag } }));
      } else if (code !== 0) {
        resolve({ error: buildkitFailure(kept) });
      } else {
        resolve(imageId === undefined ? {} : { imageId });
      }
    });
  });
}
