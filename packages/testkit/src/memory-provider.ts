import { randomBytes } from "node:crypto";
import {
  KilnError,
  LABELS,
  defineProvider,
  throwIfAborted,
  type ImageRecipe,
  type ImageRef,
  type Instance,
  type InstanceSelector,
  type LaunchRequest,
  type Provider,
} from "@kilnjs/core";

/** How an in-memory instance behaves under health probes. */
export interface InstanceBehavior {
  /** Probes fail until this long after launch (milliseconds). @defaultValue 0 */
  readonly healthyAfterMs?: number;
  /** Probes always fail. @defaultValue false */
  readonly neverHealthy?: boolean;
  /** The instance stops by itself this long after launch (milliseconds), like a crashing app. */
  readonly exitAfterMs?: number;
}

/** Options of {@link createMemoryProvider}. */
export interface MemoryProviderOptions {
  /** Decides each new instance's behavior from its launch request. @defaultValue always healthy at once */
  readonly behavior?: (request: LaunchRequest) => InstanceBehavior;
  /** Makes a build fail with BUILD_FAILED when it returns a message. */
  readonly failBuild?: (recipe: ImageRecipe) => string | undefined;
  /** The provider's name. @defaultValue "memory" */
  readonly name?: string;
}

/** Counts of the calls made to a {@link MemoryProvider}, by operation. */
export type CallCounts = Record<"build" | "find" | "listImages" | "removeImage" | "launch" | "list" | "terminate" | "probe", number>;

/** The in-memory provider with its insides visible to tests. */
export interface MemoryProvider extends Provider {
  /** Every image built and not removed. */
  readonly images: Provider["images"] & { readonly all: ReadonlyMap<string, ImageRef> };
  /** Every instance not terminated. */
  readonly live: ReadonlyMap<string, Instance>;
  /** Calls made so far. */
  readonly calls: CallCounts;
  /** Ids of every instance ever launched, in order. */
  readonly launchedIds: readonly string[];
}

interface LiveInstance {
  instance: Instance;
  launchedAt: number;
  behavior: InstanceBehavior;
  idempotencyKey: string;
}

/**
 * A provider that keeps images and instances in memory: for core's unit tests and examples that
 * must run without any engine. Health comes from its own probe (see {@link InstanceBehavior}),
 * not from HTTP.
 */
export const createMemoryProvider = defineProvider((options: MemoryProviderOptions = {}): MemoryProvider => {
  const images = new Map<string, ImageRef>();
  const instances = new Map<string, LiveInstance>();
  const launchedIds: string[] = [];
  const calls: CallCounts = { build: 0, find: 0, listImages: 0, removeImage: 0, launch: 0, list: 0, terminate: 0, probe: 0 };
  const imageService = new Map<string, string>();

  function currentState(entry: LiveInstance): Instance {
    const { exitAfterMs } = entry.behavior;
    if (exitAfterMs !== undefined && Date.now() - entry.launchedAt >= exitAfterMs && entry.instance.state === "running") {
      entry.instance = { ...entry.instance, state: "stopped" };
    }
    return entry.instance;
  }

  function matches(instance: Instance, selector: InstanceSelector): boolean {
    return (
      instance.target.service === selector.target.service &&
      instance.target.environment === selector.target.environment &&
      (selector.release === undefined || instance.release === selector.release) &&
      (selector.rolloutId === undefined || instance.rolloutId === selector.rolloutId)
    );
  }

  const provider: MemoryProvider = {
    name: options.name ?? "memory",
    calls,
    get live() {
      return new Map([...instances].map(([id, entry]) => [id, currentState(entry)]));
    },
    launchedIds,
    images: {
      all: images,
      async build(recipe, ctx) {
        calls.build += 1;
        throwIfAborted(ctx.signal);
        const failure = options.failBuild?.(recipe);
        if (failure) throw new KilnError("BUILD_FAILED", `The build failed: ${failure}`);
        ctx.emit({ type: "image.build.log", message: `building ${recipe.dockerfile.files.length} files` });
        const id = `sha256:${randomBytes(32).toString("hex")}`;
        const image: ImageRef = { id, fingerprint: recipe.fingerprint, digest: id, names: [`memory/${recipe.target.service}:${recipe.fingerprint.slice(7, 19)}`], createdAt: new Date().toISOString() };
        images.set(id, image);
        imageService.set(id, recipe.target.service);
        return image;
      },
      async find({ service, fingerprint }) {
        calls.find += 1;
        return [...images.values()].find((image) => image.fingerprint === fingerprint && imageService.get(image.id) === service);
      },
      async list(service) {
        calls.listImages += 1;
        return [...images.values()].filter((image) => imageService.get(image.id) === service);
      },
      async remove(image) {
        calls.removeImage += 1;
        const inUse = [...instances.values()].some((entry) => entry.instance.imageId === image.id);
        if (inUse) throw new KilnError("IMAGE_IN_USE", `Image ${image.id} is used by a running instance.`);
        images.delete(image.id);
      },
    },
    instances: {
      async launch(request, ctx) {
        calls.launch += 1;
        throwIfAborted(ctx.signal);
        if (!images.has(request.image.id)) throw new KilnError("LAUNCH_FAILED", `Image ${request.image.id} does not exist.`);
        const existing = [...instances.values()].filter((entry) => entry.idempotencyKey === request.idempotencyKey).map((entry) => entry.instance);
        const started: Instance[] = [];
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
            createdAt: new Date().toISOString(),
            labels: {
              ...request.config.labels,
              [LABELS.managed]: "true",
              [LABELS.service]: request.target.service,
              [LABELS.environment]: request.target.environment,
              [LABELS.release]: String(request.release),
              [LABELS.rollout]: request.rolloutId,
              [LABELS.fingerprint]: request.image.fingerprint,
            },
          };
          instances.set(id, { instance, launchedAt: Date.now(), behavior: options.behavior?.(request) ?? {}, idempotencyKey: request.idempotencyKey });
          launchedIds.push(id);
          started.push(instance);
        }
        return [...existing, ...started];
      },
      async list(selector) {
        calls.list += 1;
        return [...instances.values()].map(currentState).filter((instance) => matches(instance, selector));
      },
      async terminate(toStop) {
        calls.terminate += 1;
        for (const instance of toStop) instances.delete(instance.id);
      },
    },
    health: {
      async probe(instance) {
        calls.probe += 1;
        const entry = instances.get(instance.id);
        if (!entry) return { ok: false, reason: "the instance does not exist" };
        if (currentState(entry).state !== "running") return { ok: false, reason: "the instance is not running" };
        if (entry.behavior.neverHealthy) return { ok: false, reason: "the app answers 500" };
        if (Date.now() - entry.launchedAt < (entry.behavior.healthyAfterMs ?? 0)) return { ok: false, reason: "connection refused (still starting)" };
        return { ok: true };
      },
    },
    async ping() {},
  };
  return provider;
});
