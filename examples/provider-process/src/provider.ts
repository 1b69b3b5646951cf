import { spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { once } from "node:events";
import { existsSync, readFileSync } from "node:fs";
import { access, constants, cp, link, mkdir, open, readFile, readdir, rename, rm, writeFile } from "node:fs/promises";
import net from "node:net";
import { homedir } from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";
import {
  KilnError, LABELS, assertLaunchCount, createErrorMapper, defineProvider, formatTarget, imageLabels, instanceLabels, isKilnError, readSection, resourceName, selectorLabels, throwIfAborted, waitFor,
  type ErrorCode, type ImageRecipe, type ImageRef, type Instance, type LaunchRequest, type MachineStep, type Provider, type ProviderContext,
} from "@kilnjs/core";
import { processProviderSpec } from "./spec.js";

/** The provider's name, equal to its package suffix (`@kilnjs/provider-process`). */
export const PROVIDER_NAME = "process";

/** Options of {@link createProcessProvider}. */
export interface ProcessProviderOptions {
  /** The folder of images and instances, shared by every provider object and process (like an engine's data root). @defaultValue `~/.kiln/process` */
  readonly dataDir?: string;
}

/** An image as stored: `<dataDir>/images/<id>/image.json` with Kiln's image labels; its files are in `root/` beside it. */
interface ImageRecord { readonly ref: ImageRef; readonly labels: Readonly<Record<string, string>> }
/** An instance as stored: `<dataDir>/instances/<slot>.json`, a slot per launch key and index; `pid` leads a process group. */
interface InstanceRecord { readonly instance: Omit<Instance, "state">; readonly pid: number }

/**
 * Creates the process provider: an image is a folder built by the spec's `image.machine` steps, an
 * instance a local process started in it (`instances.command`); health is core's probe of its endpoint.
 * Creating it does no I/O. Operations throw `PROVIDER_UNAVAILABLE` (the data folder cannot be used),
 * `BUILD_FAILED`, `BUILD_CONTEXT_INVALID`, `TIMEOUT`, `LAUNCH_FAILED`, `INVALID_ARGUMENT` (a count below 1),
 * `IMAGE_IN_USE`, `TERMINATE_FAILED`, and `ABORTED` when `ctx.signal` has fired.
 * @example `createKiln({ providers: { process: createProcessProvider({ dataDir: "/tmp/kiln-process" }) } })`
 */
export const createProcessProvider = defineProvider((options: ProcessProviderOptions = {}): Provider => {
  const dataDir = path.resolve(options.dataDir ?? path.join(homedir(), ".kiln", "process"));
  const imagesDir = path.join(dataDir, "images");
  const instancesDir = path.join(dataDir, "instances");
  const toKiln = createErrorMapper({
    unavailable: (error, what) =>
      new KilnError("PROVIDER_UNAVAILABLE", `${what}: the data folder ${dataDir} cannot be used (${(error as Error).message}); create it, or set dataDir to a folder this user may write.`, { cause: error }),
    // Any filesystem error on the data folder means the backend is unavailable; any other error is the operation's own.
    isConnectionError: (error) => String((error as { path?: unknown }).path).startsWith(dataDir),
  });
  /** Runs one operation: `ABORTED` for an aborted signal before anything, then every error through core's mapper. */
  const run = <T>(code: ErrorCode, what: string, signal: AbortSignal, operation: () => Promise<T>): Promise<T> =>
    Promise.resolve(signal).then(throwIfAborted).then(operation).catch((error: unknown) => Promise.reject(toKiln(error, code, what)));
  const prepare = async () => void (await Promise.all([mkdir(imagesDir, { recursive: true }), mkdir(instancesDir, { recursive: true })]));
  const readImage = (id: string) => (id === path.basename(id) && !id.startsWith(".") ? readJson<ImageRecord>(path.join(imagesDir, id, "image.json")) : Promise.resolve(undefined));
  const allInstances = async () => {
    const files = (await list(instancesDir)).filter((name) => name.endsWith(".json")).map((name) => path.join(instancesDir, name));
    return new Map((await Promise.all(files.map(async (file) => [file, await readJson<InstanceRecord>(file)] as const))).filter((entry): entry is [string, InstanceRecord] => entry[1] !== undefined));
  };
  const logFile = (id: string) => path.join(instancesDir, `${id}.log`);

  async function build(recipe: ImageRecipe, ctx: ProviderContext): Promise<ImageRef> {
    const { machine, target, fingerprint } = recipe;
    if (!machine) throw new KilnError("BUILD_CONTEXT_INVALID", "The process provider builds images from image.machine (provision steps); the recipe has none.");
    const base = readSection(processProviderSpec, "base", machine.base);
    if (base && process.versions.node.split(".")[0] !== base.node) throw new KilnError("BUILD_FAILED", `The image is for Node.js ${base.node}, but Kiln runs on ${process.version}: change image.machine.base.process.node, or the Node.js that runs Kiln.`);
    // Injective without a separator rule: the fingerprint part is always 16 hex digits at the end, so the service is the rest.
    // Kept as it is (not core's resourceName): images are found by this id, and those built before must still be found.
    const id = `${target.service}-${fingerprint.replace(/^sha256:/, "").slice(0, 16)}`;
    await prepare();
    const staging = path.join(imagesDir, `.build-${randomBytes(6).toString("hex")}`);
    const root = path.join(staging, "root");
    const signal = AbortSignal.any([ctx.signal, AbortSignal.timeout(machine.timeoutMs)]);
    try {
      await mkdir(root, { recursive: true });
      for (const [index, step] of machine.steps.entries()) {
        ctx.emit({ type: "image.build.step", step: index + 1, total: machine.steps.length, description: describeStep(step) });
        await runStep(root, step, signal, ctx);
      }
      // The id names the content: one image per service and fingerprint, never changed once published.
      const ref: ImageRef = { id, fingerprint, digest: id, names: [`process/${id}`], createdAt: new Date().toISOString() };
      await writeFile(path.join(staging, "image.json"), JSON.stringify({ ref, labels: imageLabels(recipe) } satisfies ImageRecord));
      // Published whole by one rename; when the image exists already (a concurrent build), that one is it.
      await rename(staging, path.join(imagesDir, id)).catch(() => undefined);
      return (await readImage(id))?.ref ?? Promise.reject(new Error(`the image folder ${path.join(imagesDir, id)} could not be created`));
    } catch (error) {
      if (signal.aborted && !ctx.signal.aborted) throw new KilnError("TIMEOUT", `The build took longer than image.machine.timeoutMs (${machine.timeoutMs} ms).`, { cause: error });
      throw error;
    } finally {
      await rm(staging, { recursive: true, force: true });
    }
  }

  /** Fills each slot (launch key and index) that holds no instance with a new process; returns the slots' instances. */
  async function launch(request: LaunchRequest): Promise<Instance[]> {
    assertLaunchCount(request.count);
    const image = await readImage(request.image.id);
    if (!image) throw new KilnError("LAUNCH_FAILED", `Image ${request.image.id} does not exist (it was removed); build it again.`);
    await prepare();
    const slot = createHash("sha256").update(request.idempotencyKey).digest("hex").slice(0, 16);
    const held = await allInstances();
    const launched: Instance[] = [];
    for (let index = 0; index < request.count; index++) {
      const file = path.join(instancesDir, `${slot}-${index}.json`);
      launched.push(current(held.get(file) ?? (await start(request, image, file))));
    }
    return launched;
  }

  async function start(request: LaunchRequest, image: ImageRecord, file: string): Promise<InstanceRecord> {
    const [program, ...args] = request.config.command ?? [];
    if (program === undefined) throw new KilnError("LAUNCH_FAILED", "The process provider needs instances.command: its images have no default command.");
    const id = randomBytes(6).toString("hex");
    const root = path.join(imagesDir, image.ref.id, "root");
    const { workingDirectory } = readSection(processProviderSpec, "instances", request.config.providerSettings);
    // Each named port gets a free port on 127.0.0.1, in PORT_<NAME>; the first one in PORT too.
    const ports = await Promise.all(request.config.ports.map(async (port) => [port.name, await freePort()] as const));
    const env: Record<string, string> = { PATH: process.env.PATH ?? "", ...request.config.env, KILN_INSTANCE_ID: id, ...(ports[0] ? { PORT: String(ports[0][1]) } : {}) };
    for (const [name, port] of ports) env[`PORT_${name.toUpperCase().replace(/-/g, "_")}`] = String(port);
    // `node` is the Node.js that runs Kiln; an absolute path is inside the image; any other program is found on PATH.
    const executable = program === "node" ? process.execPath : program.startsWith("/") ? path.join(root, program) : program;
    const log = await open(logFile(id), "a");
    const child = spawn(executable, args, { cwd: path.join(root, workingDirectory), env, detached: true, stdio: ["ignore", log.fd, log.fd] });
    try {
      await once(child, "spawn");
    } catch (error) {
      throw new KilnError("LAUNCH_FAILED", `Starting \`${[program, ...args].join(" ")}\` failed (${(error as Error).message}); check instances.command and instances.process.workingDirectory.`, { cause: error });
    } finally {
      await log.close();
    }
    child.unref();
    const { target, release, rolloutId } = request;
    const endpoints = Object.fromEntries(ports.map(([name, port]) => [name, { host: "127.0.0.1", port }]));
    const labels = { ...request.config.labels, ...instanceLabels(request) };
    const record = { instance: { id, name: resourceName(target, { parts: [`r${release}`, id] }), target, release, rolloutId, imageId: image.ref.id, restartCount: 0, endpoints, createdAt: new Date().toISOString(), labels }, pid: child.pid! };
    // The slot is claimed by hard-linking a complete file into place: if another launch with this key filled it first, its instance is the one.
    const temporary = `${file}.${id}.tmp`;
    await writeFile(temporary, JSON.stringify(record));
    const claimed = await unless("EEXIST", link(temporary, file).then(() => true), false);
    await rm(temporary, { force: true });
    if (claimed) return record;
    signalGroup(record, "SIGKILL");
    return (await readJson<InstanceRecord>(file)) ?? record;
  }

  /** SIGTERM to the instance's process group, SIGKILL when the grace period is over; then its record goes. */
  async function stop(file: string, record: InstanceRecord, gracePeriodMs: number): Promise<void> {
    const gone = (timeoutMs: number) =>
      waitFor(async () => (isRunning(record) ? { done: false } : { done: true, value: undefined }), { timeoutMs, minDelayMs: 10, maxDelayMs: 200, description: `${record.instance.name} (pid ${record.pid}) to stop` });
    signalGroup(record, "SIGTERM");
    await gone(gracePeriodMs).catch((error: unknown) => {
      if (!isKilnError(error, "TIMEOUT")) throw error;
      signalGroup(record, "SIGKILL");
      return gone(5_000);
    });
    await Promise.all([rm(file, { force: true }), rm(logFile(record.instance.id), { force: true })]);
  }

  return {
    name: PROVIDER_NAME,
    spec: processProviderSpec,
    images: {
      build: (recipe, ctx) => run("BUILD_FAILED", `Building the image of ${recipe.target.service}`, ctx.signal, () => build(recipe, ctx)),
      find: ({ service, fingerprint }, ctx) =>
        run("PROVIDER_UNAVAILABLE", "Reading images", ctx.signal, async () => {
          const image = await readImage(`${service}-${fingerprint.replace(/^sha256:/, "").slice(0, 16)}`);
          return image?.labels[LABELS.service] === service && image.ref.fingerprint === fingerprint ? image.ref : undefined;
        }),
      list: (service, ctx) =>
        run("PROVIDER_UNAVAILABLE", "Listing images", ctx.signal, async () => {
          const images = await Promise.all((await list(imagesDir)).map(readImage));
          return images.filter((image) => image?.labels[LABELS.service] === service).map((image) => image!.ref);
        }),
      remove: (image, ctx) =>
        run("PROVIDER_UNAVAILABLE", `Removing image ${image.id}`, ctx.signal, async () => {
          const user = [...(await allInstances()).values()].find((record) => record.instance.imageId === image.id);
          if (user) throw new KilnError("IMAGE_IN_USE", `Image ${image.id} is used by instance ${user.instance.name}; terminate it first.`, { details: { imageId: image.id, instanceId: user.instance.id } });
          if (!(await readImage(image.id))) return;
          await rm(path.join(imagesDir, image.id, "image.json"), { force: true }); // the image is gone from here on; its files follow
          await rm(path.join(imagesDir, image.id), { recursive: true, force: true });
        }),
    },
    instances: {
      launch: (request, ctx) => run("LAUNCH_FAILED", `Launching ${formatTarget(request.target)} release ${request.release}`, ctx.signal, () => launch(request)),
      list: (selector, ctx) =>
        run("PROVIDER_UNAVAILABLE", "Listing instances", ctx.signal, async () => {
          const wanted = Object.entries(selectorLabels(selector));
          return [...(await allInstances()).values()].filter((record) => wanted.every(([key, value]) => record.instance.labels[key] === value)).map(current);
        }),
      terminate: (instances, { gracePeriodMs }, ctx) =>
        run("TERMINATE_FAILED", "Terminating instances", ctx.signal, async () => {
          const ids = new Set(instances.map((instance) => instance.id));
          await Promise.all([...(await allInstances())].filter(([, record]) => ids.has(record.instance.id)).map(([file, record]) => stop(file, record, gracePeriodMs)));
        }),
    },
    limits: { maxInstancesPerTarget: 32 }, // one machine's worth: a plan that needs more is refused before it starts
    ping: (ctx) => run("PROVIDER_UNAVAILABLE", "Opening the data folder", ctx.signal, () => prepare().then(() => access(dataDir, constants.W_OK))),
  };
});

const HAS_PROC = existsSync("/proc/self/environ");
/** Whether the instance's process runs: with /proc, a process that carries its `KILN_INSTANCE_ID` (not a reused pid, nor a zombie). */
function isRunning({ instance, pid }: InstanceRecord): boolean {
  try {
    return HAS_PROC ? readFileSync(`/proc/${pid}/environ`, "latin1").split("\0").includes(`KILN_INSTANCE_ID=${instance.id}`) : process.kill(pid, 0);
  } catch {
    return false;
  }
}

/** The instance with its state as of now: `stopped` once its process has exited (nothing restarts it). */
const current = (record: InstanceRecord): Instance => ({ ...record.instance, state: isRunning(record) ? "running" : "stopped" });
function signalGroup(record: InstanceRecord, signal: NodeJS.Signals): void {
  if (!isRunning(record)) return;
  try { process.kill(-record.pid, signal); } catch (error) { if ((error as NodeJS.ErrnoException).code !== "ESRCH") throw error; } // ESRCH: it has just exited
}
const describeStep = (step: MachineStep) => (step.kind === "file" ? `file ${step.from} → ${step.to}` : step.kind === "shell" ? `shell ${step.script}` : `run ${step.command}`);

/** A file step copies exactly the files the fingerprint covered; `shell` and `run` steps run `sh` in the image folder (`KILN_IMAGE_ROOT`). */
async function runStep(root: string, step: MachineStep, signal: AbortSignal, ctx: ProviderContext): Promise<void> {
  if (step.kind === "file") {
    const to = path.join(root, step.to);
    if (path.relative(root, to).startsWith("..")) throw new KilnError("BUILD_CONTEXT_INVALID", `${step.to} is outside the image; give a path such as /app.`);
    for (const file of step.files) {
      await cp(path.join(step.from, file), path.join(to, file)).catch((error: unknown) => {
        throw new KilnError("BUILD_CONTEXT_INVALID", `Copying ${path.join(step.from, file)} into the image failed (${(error as Error).message}); check that it exists and can be read.`, { cause: error });
      });
    }
    return;
  }
  const child = spawn("sh", step.kind === "shell" ? [step.script] : ["-c", step.command], { cwd: root, env: { ...process.env, KILN_IMAGE_ROOT: root }, signal, stdio: ["ignore", "pipe", "pipe"] });
  for (const stream of [child.stdout, child.stderr]) createInterface({ input: stream }).on("line", (message) => ctx.emit({ type: "image.build.log", message }));
  const [code] = (await once(child, "close")) as [number | null];
  if (code !== 0) throw new KilnError("BUILD_FAILED", `The step \`${describeStep(step)}\` exited with ${code ?? "a signal"}; its output is in the build log.`);
}

/** `promise`'s value, or `fallback` when it failed with the filesystem error `code` (`ENOENT`: there is nothing there). */
async function unless<T>(code: string, promise: Promise<T>, fallback: T): Promise<T> {
  try {
    return await promise;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== code) throw error;
    return fallback;
  }
}
const readJson = async <T>(file: string) => (JSON.parse(await unless("ENOENT", readFile(file, "utf8"), "null")) as T | null) ?? undefined;
const list = (dir: string) => unless("ENOENT", readdir(dir), []);

/** A port on 127.0.0.1 that nothing listens on now. */
async function freePort(): Promise<number> {
  const server = net.createServer().listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as net.AddressInfo;
  server.close();
  return port;
}
