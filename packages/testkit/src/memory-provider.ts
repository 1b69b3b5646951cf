import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { link, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import {
  KilnError,
  MAX_INSTANCE_COUNT,
  assertLaunchCount,
  instanceLabels,
  defineProvider,
  sleep,
  throwIfAborted,
  type HealthCapability,
  type ImageRecipe,
  type ImageRef,
  type Instance,
  type InstanceSelector,
  type LaunchRequest,
  type Provider,
} from "@kilnjs/core";
import { createFaultInjector, instanceCondition, type FaultOptions, type InstanceBehavior, type MemoryOperation } from "./faults.js";

export type { InstanceBehavior } from "./faults.js";

/** Options of {@link createMemoryProvider}. */
export interface MemoryProviderOptions {
  /**
   * Decides each new instance's behaviour from its launch request. The result is stored with the
   * instance (in the state file too), so it must be plain data.
   * @defaultValue always healthy at once
   */
  readonly behavior?: (request: LaunchRequest) => InstanceBehavior;
  /** Makes a build fail with BUILD_FAILED when it returns a message. */
  readonly failBuild?: (recipe: ImageRecipe) => string | undefined;
  /** The provider's name. @defaultValue "memory" */
  readonly name?: string;
  /** Latency, errors and throttling per operation; see {@link FaultOptions}. @defaultValue no faults */
  readonly faults?: FaultOptions;
  /**
   * Keeps the images and instances in this JSON file instead of in memory: read at every call and
   * written atomically (temporary file + rename) after every call that changes something, under a
   * lock file (`<stateFile>.lock`) whose holder, when it died, is detected by its pid. Several
   * processes (a CLI killed with SIGKILL, then a new one) see the same "cloud". Call counts and
   * fault counters stay per provider object.
   * @defaultValue in memory only
   */
  readonly stateFile?: string;
}

/** Counts of the calls made to a {@link MemoryProvider}, by operation. */
export type CallCounts = Record<"build" | "find" | "listImages" | "removeImage" | "launch" | "list" | "terminate" | "probe", number>;

/** The in-memory provider with its insides visible to tests. */
export interface MemoryProvider extends Provider {
  /** Every image built and not removed (read from the state file when there is one). */
  readonly images: Provider["images"] & { readonly all: ReadonlyMap<string, ImageRef> };
  /** The provider's own probe, answering from each instance's {@link InstanceBehavior}. */
  readonly health: HealthCapability;
  /** Every instance not terminated, with its state and restart count as of now. */
  readonly live: ReadonlyMap<string, Instance>;
  /** Calls made through this provider object so far (not through other processes). */
  readonly calls: CallCounts;
  /** Ids of every instance ever launched, in order (by any process, with a state file). */
  readonly launchedIds: readonly string[];
}

/** One image and the service that owns it. */
interface StoredImage {
  readonly ref: ImageRef;
  readonly service: string;
}

/** One instance with what is needed to derive its condition at any later time, in any process. */
interface StoredInstance {
  readonly instance: Instance;
  /** Epoch milliseconds. */
  readonly launchedAt: number;
  readonly behavior: InstanceBehavior;
  readonly idempotencyKey: string;
}

/** The whole fake cloud. */
interface Cloud {
  readonly images: Map<string, StoredImage>;
  readonly instances: Map<string, StoredInstance>;
  readonly launchedIds: string[];
}

/** The state file's JSON. */
interface CloudFile {
  readonly kind: "kiln-memory-provider";
  readonly version: 1;
  readonly images: StoredImage[];
  readonly instances: StoredInstance[];
  readonly launchedIds: string[];
}

/** Where the cloud lives: in this process, or in a file shared by processes. */
interface CloudStore {
  /** The current cloud, for a call that changes nothing. */
  read(): Promise<Cloud>;
  /** The current cloud, for the synchronous getters. */
  readSync(): Cloud;
  /** Runs `change` on the current cloud and keeps the result; serialised across processes. */
  mutate<T>(signal: AbortSignal, change: (cloud: Cloud) => T): Promise<T>;
}

function emptyCloud(): Cloud {
  return { images: new Map(), instances: new Map(), launchedIds: [] };
}

function memoryStore(): CloudStore {
  const cloud = emptyCloud();
  return {
    read: () => Promise.resolve(cloud),
    readSync: () => cloud,
    mutate: async (_signal, change) => change(cloud),
  };
}

/** How long a call waits for the state file's lock before it gives up, in milliseconds. */
const LOCK_TIMEOUT_MS = 10_000;
/** A lock older than this is taken over even when its holder's pid is alive (pid reuse), in milliseconds. */
const LOCK_STALE_MS = 30_000;

function parseCloud(text: string, file: string): Cloud {
  if (text.trim() === "") return emptyCloud();
  let data: CloudFile;
  try {
    data = JSON.parse(text) as CloudFile;
  } catch (error) {
    throw corrupt(file, error);
  }
  if (data?.kind !== "kiln-memory-provider" || data.version !== 1 || !Array.isArray(data.images) || !Array.isArray(data.instances)) {
    throw corrupt(file, new Error("not a memory provider state file of version 1"));
  }
  return {
    images: new Map(data.images.map((entry) => [entry.ref.id, entry])),
    instances: new Map(data.instances.map((entry) => [entry.instance.id, entry])),
    launchedIds: Array.isArray(data.launchedIds) ? data.launchedIds : [],
  };
}

function corrupt(file: string, cause: unknown): KilnError {
  return new KilnError("PROVIDER_UNAVAILABLE", `The memory provider's state file ${file} cannot be read: delete it to start from an empty cloud.`, {
    cause,
    details: { reason: "state-file-corrupt", stateFile: file },
  });
}

function serialise(cloud: Cloud): string {
  const data: CloudFile = {
    kind: "kiln-memory-provider",
    version: 1,
    images: [...cloud.images.values()],
    instances: [...cloud.instances.values()],
    launchedIds: cloud.launchedIds,
  };
  return `${JSON.stringify(data, null, 1)}\n`;
}

function isMissing(error: unknown): boolean {
  return (error as NodeJS.ErrnoException | undefined)?.code === "ENOENT";
}

/** Whether a process with this pid exists on this machine. */
function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

function fileStore(file: string): CloudStore {
  const lockFile = `${file}.lock`;

  async function read(): Promise<Cloud> {
    try {
      return parseCloud(await readFile(file, "utf8"), file);
    } catch (error) {
      if (isMissing(error)) return emptyCloud();
      throw error;
    }
  }

  /** Takes the lock file away from a dead or ancient holder; true when it is gone now. */
  async function breakStaleLock(): Promise<boolean> {
    let content: string;
    let ageMs: number;
    try {
      content = await readFile(lockFile, "utf8");
      ageMs = Date.now() - (await stat(lockFile)).mtimeMs;
    } catch (error) {
      if (isMissing(error)) return true;
      throw error;
    }
    // The lock file holds "<pid> <token>" from its first moment (it is hard-linked into place).
    const holder = Number.parseInt(content, 10);
    const dead = Number.isInteger(holder) && holder > 0 && !processAlive(holder);
    if (!dead && ageMs < LOCK_STALE_MS) return false;
    const aside = `${lockFile}.stale-${process.pid}-${randomBytes(4).toString("hex")}`;
    try {
      await rename(lockFile, aside);
    } catch (error) {
      if (isMissing(error)) return true;
      throw error;
    }
    // Another process may have broken the same stale lock and taken a fresh one in between: give it back.
    if ((await readFile(aside, "utf8").catch(() => content)) !== content) {
      await link(aside, lockFile).catch(() => undefined);
      await rm(aside, { force: true });
      return false;
    }
    await rm(aside, { force: true });
    return true;
  }

  /** Takes the lock file; the pid is in it from the first moment (written aside, then hard-linked). */
  async function lock(signal: AbortSignal): Promise<() => Promise<void>> {
    const deadline = Date.now() + LOCK_TIMEOUT_MS;
    const token = `${process.pid} ${randomBytes(8).toString("hex")}`;
    const candidate = `${lockFile}.${token.replace(" ", "-")}`;
    await writeFile(candidate, token);
    try {
      for (;;) {
        throwIfAborted(signal);
        try {
          await link(candidate, lockFile);
          return async () => {
            // Remove the lock only while it is still this call's (a lock broken as ancient is someone else's now).
            if ((await readFile(lockFile, "utf8").catch(() => undefined)) === token) await rm(lockFile, { force: true });
          };
        } catch (error) {
          if ((error as NodeJS.ErrnoException).code !== "EEXIST") {
            throw new KilnError("PROVIDER_UNAVAILABLE", `Cannot create the lock file ${lockFile}.`, { cause: error });
          }
        }
        if (await breakStaleLock()) continue;
        if (Date.now() > deadline) {
          throw new KilnError("PROVIDER_UNAVAILABLE", `The memory provider's state file ${file} stayed locked for ${LOCK_TIMEOUT_MS} ms (${lockFile}).`, {
            retryable: true,
            details: { reason: "state-file-locked", stateFile: file },
          });
        }
        await sleep(2 + Math.floor(Math.random() * 8), signal);
      }
    } finally {
      await rm(candidate, { force: true });
    }
  }

  /** One change at a time: in this process by a queue, across processes by the lock file. */
  async function locked<T>(signal: AbortSignal, change: (cloud: Cloud) => T): Promise<T> {
    const unlock = await lock(signal);
    try {
      const cloud = await read();
      const result = change(cloud);
      const temporary = `${file}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`;
      try {
        await writeFile(temporary, serialise(cloud));
        await rename(temporary, file);
      } catch (error) {
        await rm(temporary, { force: true });
        throw new KilnError("PROVIDER_UNAVAILABLE", `Writing the memory provider's state file ${file} failed.`, { cause: error });
      }
      return result;
    } finally {
      await unlock();
    }
  }

  let queue: Promise<unknown> = Promise.resolve();

  return {
    read,
    readSync() {
      try {
        return parseCloud(readFileSync(file, "utf8"), file);
      } catch (error) {
        if (isMissing(error)) return emptyCloud();
        throw error;
      }
    },
    mutate(signal, change) {
      const run = queue.then(() => locked(signal, change));
      queue = run.catch(() => undefined);
      return run;
    },
  };
}

/** The instance as it is now: state and restart count derived from its behaviour and age. */
function current(entry: StoredInstance, now: number): Instance {
  const condition = instanceCondition(entry.behavior, now - entry.launchedAt);
  if (condition.state === entry.instance.state && condition.restartCount === entry.instance.restartCount) return entry.instance;
  return { ...entry.instance, state: condition.state, restartCount: condition.restartCount };
}

function matches(instance: Instance, selector: InstanceSelector): boolean {
  return (
    instance.target.service === selector.target.service &&
    instance.target.environment === selector.target.environment &&
    (selector.release === undefined || instance.release === selector.release) &&
    (selector.rolloutId === undefined || instance.rolloutId === selector.rolloutId)
  );
}

/**
 * A provider that keeps images and instances in memory (or in a shared JSON file, see
 * {@link MemoryProviderOptions.stateFile}): for core's unit tests, crash tests and examples that
 * must run without any engine. Health comes from its own probe (see {@link InstanceBehavior}), not
 * from HTTP. Faults (latency, errors, throttling) are injected with {@link MemoryProviderOptions.faults}.
 *
 * @example
 * ```ts
 * const provider = createMemoryProvider({
 *   behavior: (request) => (request.release === 2 ? { flap: { healthyMs: 2000, unhealthyMs: 500 } } : {}),
 *   faults: { operations: { launch: { throttle: { everyNth: 2 } } } },
 * });
 * ```
 * @throws KilnError INVALID_ARGUMENT when the fault options are invalid (every problem listed)
 *
 * Its operations throw `ABORTED` for an aborted `ctx.signal`, `BUILD_FAILED` when `failBuild` says so,
 * `LAUNCH_FAILED` for an image that does not exist, `INVALID_ARGUMENT` for a launch count below 1,
 * `IMAGE_IN_USE` when removing an image an instance uses, and the injected faults.
 */
export const createMemoryProvider = defineProvider((options: MemoryProviderOptions = {}): MemoryProvider => {
  const store = options.stateFile === undefined ? memoryStore() : fileStore(options.stateFile);
  const faults = createFaultInjector(options.faults);
  const calls: CallCounts = { build: 0, find: 0, listImages: 0, removeImage: 0, launch: 0, list: 0, terminate: 0, probe: 0 };

  /** Counts the call, checks the signal, then applies the faults that act before the call. */
  async function enter(operation: MemoryOperation, service: string | undefined, signal: AbortSignal): Promise<() => void> {
    if (operation !== "ping") calls[operation] += 1;
    throwIfAborted(signal);
    return faults.before(operation, service, signal);
  }

  const provider: MemoryProvider = {
    name: options.name ?? "memory",
    // Instances "receive" secrets as environment variables or files: the launch request carries them.
    // Instances are entries in a map: a target may have as many as any spec allows (benchmarks run 10,000).
    spec: { imageFormat: "dockerfile", secretDelivery: ["env", "file"], maxInstanceCount: MAX_INSTANCE_COUNT },
    calls,
    get live() {
      const now = Date.now();
      return new Map([...store.readSync().instances].map(([id, entry]) => [id, current(entry, now)]));
    },
    get launchedIds() {
      return [...store.readSync().launchedIds];
    },
    images: {
      get all() {
        return new Map([...store.readSync().images].map(([id, entry]) => [id, entry.ref]));
      },
      async build(recipe, ctx) {
        const after = await enter("build", recipe.target.service, ctx.signal);
        const failure = options.failBuild?.(recipe);
        if (failure) throw new KilnError("BUILD_FAILED", `The build failed: ${failure}`);
        ctx.emit({ type: "image.build.log", message: `building ${recipe.dockerfile?.files.length ?? recipe.machine?.steps.length ?? 0} ${recipe.dockerfile ? "files" : "steps"}` });
        const id = `sha256:${randomBytes(32).toString("hex")}`;
        const image: ImageRef = {
          id,
          fingerprint: recipe.fingerprint,
          digest: id,
          names: [`memory/${recipe.target.service}:${recipe.fingerprint.slice(7, 19)}`],
          createdAt: new Date().toISOString(),
        };
        await store.mutate(ctx.signal, (cloud) => cloud.images.set(id, { ref: image, service: recipe.target.service }));
        after();
        return image;
      },
      async find({ service, fingerprint }, ctx) {
        const after = await enter("find", service, ctx.signal);
        const cloud = await store.read();
        after();
        return [...cloud.images.values()].find((entry) => entry.ref.fingerprint === fingerprint && entry.service === service)?.ref;
      },
      async list(service, ctx) {
        const after = await enter("listImages", service, ctx.signal);
        const cloud = await store.read();
        after();
        return [...cloud.images.values()].filter((entry) => entry.service === service).map((entry) => entry.ref);
      },
      async remove(image, ctx) {
        const after = await enter("removeImage", undefined, ctx.signal);
        await store.mutate(ctx.signal, (cloud) => {
          const user = [...cloud.instances.values()].find((entry) => entry.instance.imageId === image.id);
          if (user) {
            throw new KilnError("IMAGE_IN_USE", `Image ${image.id} is used by instance ${user.instance.name}.`, {
              details: { reason: "image-in-use", imageId: image.id, instanceId: user.instance.id },
            });
          }
          cloud.images.delete(image.id);
        });
        after();
      },
    },
    instances: {
      async launch(request, ctx) {
        const after = await enter("launch", request.target.service, ctx.signal);
        assertLaunchCount(request.count);
        const launched = await store.mutate(ctx.signal, (cloud) => {
          if (!cloud.images.has(request.image.id)) throw new KilnError("LAUNCH_FAILED", `Image ${request.image.id} does not exist.`);
          const existing = [...cloud.instances.values()].filter((entry) => entry.idempotencyKey === request.idempotencyKey).map((entry) => entry.instance);
          const started: Instance[] = [];
          const launchedAt = Date.now();
          for (let index = existing.length; index < request.count; index++) {
            const id = randomBytes(6).toString("hex");
            const instance: Instance = {
              id,
              name: `${request.target.service}-${request.target.environment}-r${request.release}-${id}`,
              target: request.target,
              release: request.release,
              rolloutId: request.rolloutId,
              imageId: request.image.id,
              state: "running",
              restartCount: 0,
              endpoints: Object.fromEntries(request.config.ports.map((port, i) => [port.name, { host: "memory", port: 10_000 + i }])),
              createdAt: new Date(launchedAt).toISOString(),
              labels: {
                ...request.config.labels,
                ...instanceLabels(request),
              },
            };
            cloud.instances.set(id, { instance, launchedAt, behavior: options.behavior?.(request) ?? {}, idempotencyKey: request.idempotencyKey });
            cloud.launchedIds.push(id);
            started.push(instance);
          }
          return [...existing, ...started];
        });
        after();
        return launched;
      },
      async list(selector, ctx) {
        const after = await enter("list", selector.target.service, ctx.signal);
        const cloud = await store.read();
        after();
        const now = Date.now();
        return [...cloud.instances.values()].map((entry) => current(entry, now)).filter((instance) => matches(instance, selector));
      },
      async terminate(toStop, _options, ctx) {
        const after = await enter("terminate", toStop[0]?.target.service, ctx.signal);
        await store.mutate(ctx.signal, (cloud) => {
          for (const instance of toStop) cloud.instances.delete(instance.id);
        });
        after();
      },
    },
    health: {
      async probe(instance, _check, _timeoutMs, ctx) {
        const after = await enter("probe", instance.target.service, ctx.signal);
        const entry = (await store.read()).instances.get(instance.id);
        after();
        if (!entry) return { ok: false, reason: "the instance does not exist" };
        const condition = instanceCondition(entry.behavior, Date.now() - entry.launchedAt);
        if (condition.state !== "running") return { ok: false, reason: `the instance is not running (${condition.state})` };
        if (condition.unhealthy !== undefined) return { ok: false, reason: condition.unhealthy };
        return { ok: true };
      },
    },
    async ping(ctx) {
      const after = await enter("ping", undefined, ctx.signal);
      after();
    },
  };
  return provider;
});
