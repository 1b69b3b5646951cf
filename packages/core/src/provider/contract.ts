import type { SecretValue } from "../secrets/value.js";
import type { SecretMount, SecretStoreCapability } from "../secrets/types.js";
import type { Logger } from "../logger.js";
import type { ResolvedCheck } from "../spec/resolve.js";
import type { Target } from "../target.js";
import type { ProviderSpec } from "./spec.js";
import type { TrafficCapability } from "./traffic.js";

/** A provider's progress report, emitted through {@link ProviderContext.emit}; core adds time and target. */
export type ProviderProgress =
  /** One line of build output (a Dockerfile step's output, a provisioning script's output). */
  | { type: "image.build.log"; message: string }
  /** The build started a numbered step (`Step 3/7 : RUN npm ci`). */
  | { type: "image.build.step"; step: number; total: number; description: string };

/** What every provider operation receives. */
export interface ProviderContext {
  /** Cancels the operation; a provider stops waiting and throws `ABORTED`, leaving state consistent. */
  readonly signal: AbortSignal;
  /** Diagnostics; never receives secrets. */
  readonly logger: Logger;
  /** Progress for the user (build output); never receives secrets. */
  emit(progress: ProviderProgress): void;
}

/** How to build a container image from a Dockerfile. */
export interface DockerfileRecipe {
  readonly kind: "dockerfile";
  /** Absolute path of the build context folder. */
  readonly contextDir: string;
  /** Absolute path of the Dockerfile; it may lie outside the context. */
  readonly dockerfilePath: string;
  /**
   * The context's files after `.dockerignore` rules, as sorted POSIX paths relative to
   * `contextDir`; exactly what the fingerprint covered and what the build may see. The Dockerfile
   * and `.dockerignore` are included when they lie in the context, whatever the ignore rules say.
   */
  readonly files: readonly string[];
  /** Build arguments (`--build-arg`). */
  readonly args: Readonly<Record<string, string>>;
  /** The build stage to stop at (`--target`). */
  readonly stage?: string;
  /**
   * Build secrets by id (`image.dockerfile.secrets`), for `RUN --mount=type=secret,id=<id>`: the
   * provider must hand them to the build without writing them into any layer, the image's history
   * or its build arguments (BuildKit secret mounts). Absent or empty: the build has none.
   */
  readonly secrets?: ReadonlyMap<string, SecretValue>;
}

/** A file step of a machine recipe: what to copy into the image. */
export interface MachineFileStep {
  readonly kind: "file";
  /** Absolute path of the file or folder copied. */
  readonly from: string;
  /** Absolute path inside the image: the folder's contents land in it; a file lands at it. */
  readonly to: string;
  /** Whether `from` is a folder. */
  readonly directory: boolean;
  /**
   * The files copied, as sorted POSIX paths relative to `from` (`""` when `from` is one file);
   * exactly what the fingerprint covered.
   */
  readonly files: readonly string[];
}

/** One provisioning step of a machine recipe, in order. */
export type MachineStep =
  | MachineFileStep
  /** Run a script file (absolute path) with `sh`, as root. */
  | { readonly kind: "shell"; readonly script: string }
  /** Run one command line with `sh -c`, as root. */
  | { readonly kind: "run"; readonly command: string };

/**
 * How to bake a machine image (an AMI, a Compute Engine image, an Azure image): a base image,
 * steps run once in a builder VM, a deadline.
 */
export interface MachineRecipe {
  readonly kind: "machine";
  readonly steps: readonly MachineStep[];
  /**
   * The provider's `image.machine.base.<provider>` section, as its own schema produced it
   * (see `ProviderSpec.sections.base`); undefined when the spec has none.
   */
  readonly base: unknown;
  /** The provider's `image.machine.builder.<provider>` section, as its own schema produced it; undefined when absent. */
  readonly builder: unknown;
  /** How long the whole bake may take (milliseconds); past it the bake fails with `TIMEOUT` and cleans up. */
  readonly timeoutMs: number;
}

/** Everything a provider needs to build one image. */
export interface ImageRecipe {
  readonly target: Target;
  /** The fingerprint of every input; the provider labels the image with it. */
  readonly fingerprint: string;
  /** Present for providers whose {@link Provider.imageFormat} is `dockerfile` (the default). */
  readonly dockerfile?: DockerfileRecipe;
  /** Present for providers whose {@link Provider.imageFormat} is `machine`. */
  readonly machine?: MachineRecipe;
  /** The rollout the build belongs to, when a deploy builds (`kiln build` alone has none); for tags on what the build creates. */
  readonly rolloutId?: string;
  /** The release the image is built for, when a deploy builds; for tags (an image may serve later releases too). */
  readonly release?: number;
}

/** An image a provider built or found. */
export interface ImageRef {
  /** The provider's id: a Docker image id, an AMI id, a Compute Engine image name. */
  readonly id: string;
  /** The fingerprint the image was built from (`sha256:` + 64 hex digits). */
  readonly fingerprint: string;
  /** The content digest of the image (Docker: the image id, or a registry digest when pushed). */
  readonly digest: string;
  /** Names the image can be referred to by (Docker tags, an AMI name). */
  readonly names: readonly string[];
  /** When the image was created (ISO 8601). */
  readonly createdAt?: string;
  /** Size of the image in bytes, when the provider knows it. */
  readonly sizeBytes?: number;
}

/** A port an instance listens on. */
export interface PortConfig {
  /** The name health checks and traffic refer to (`http`). */
  readonly name: string;
  /** The port inside the instance. */
  readonly port: number;
  readonly protocol: "tcp" | "udp";
  /** A fixed host port to publish it on (one instance at a time can hold it). */
  readonly hostPort?: number;
}

/** How each instance of a release runs: the provider-neutral part of a release. */
export interface InstanceConfig {
  readonly ports: readonly PortConfig[];
  /** Environment variables; recorded in state, so never put secrets here: they go in {@link InstanceConfig.secrets}. */
  readonly env: Readonly<Record<string, string>>;
  /**
   * The secrets each instance receives, by reference and digest; their values come with the
   * launch ({@link LaunchRequest.secrets}). Absent or empty: none. Part of the release: a changed
   * value (digest) makes a new release.
   */
  readonly secrets?: readonly SecretMount[];
  /** Extra labels (tags) for each instance, beside Kiln's own {@link LABELS}. */
  readonly labels: Readonly<Record<string, string>>;
  /** The command to run instead of the image's default, as an argument list. */
  readonly command?: readonly string[];
  /** Memory limit in bytes. */
  readonly memoryBytes?: number;
  /** CPU limit in cores (0.5 = half a core). */
  readonly cpus?: number;
  /** How long an instance may take to stop after SIGTERM before it is killed, in milliseconds. */
  readonly stopGracePeriodMs: number;
  /**
   * Whether ports are published where Kiln runs (Docker: on 127.0.0.1, a random host port unless
   * `hostPort` is set). False behind a front proxy: instances are then reached on the provider's
   * own network (endpoints hold those addresses). @defaultValue true
   */
  readonly publishPorts?: boolean;
  /**
   * The provider's own `instances.<provider>` section (machine type, network, …), as the
   * provider's schema produced it (see `ProviderSpec.sections.instances`); undefined when the spec
   * has none. Part of the release: changing it makes a new release.
   */
  readonly providerSettings?: unknown;
}

/** What `instances.launch` is asked to start. */
export interface LaunchRequest {
  readonly target: Target;
  /** The release number the instances belong to. */
  readonly release: number;
  /** The rollout that launches them. */
  readonly rolloutId: string;
  /**
   * Unique per launch step of a rollout. Launching twice with the same key must not start more
   * instances than the first call did: the provider returns those instead.
   */
  readonly idempotencyKey: string;
  readonly image: ImageRef;
  readonly config: InstanceConfig;
  /** How many instances to start (1 or more). */
  readonly count: number;
  /**
   * The values of `config.secrets`, by {@link SecretMount.name}, read just before the launch. A
   * provider hands each to the instance as its `to` says (an environment variable, a file on a
   * memory-backed mount) and writes it nowhere else: not in labels, tags, logs or errors.
   */
  readonly secrets?: ReadonlyMap<string, SecretValue>;
}

/** Where a port of an instance can be reached from where Kiln runs. */
export interface Endpoint {
  readonly host: string;
  readonly port: number;
}

/** The life state of an instance, mapped from the provider's own states. */
export type InstanceState = "pending" | "running" | "stopping" | "stopped" | "terminated" | "unknown";

/** One running (or recently running) copy of a release. */
export interface Instance {
  /** The provider's id (a container id, a cloud instance id). */
  readonly id: string;
  /** A human-readable unique name. */
  readonly name: string;
  readonly target: Target;
  /** The release number from the instance's labels; undefined for an instance Kiln did not label. */
  readonly release: number | undefined;
  readonly rolloutId: string | undefined;
  /** The id of the image the instance runs: equal to the launching `ImageRef.id`. */
  readonly imageId: string;
  readonly state: InstanceState;
  /** How often the provider restarted the instance since it was launched. */
  readonly restartCount: number;
  /** Reachable addresses, by port name (`PortConfig.name`). */
  readonly endpoints: Readonly<Record<string, Endpoint>>;
  /** ISO 8601. */
  readonly createdAt: string;
  /**
   * The instance's labels with Kiln's keys as in {@link LABELS} (a provider whose cloud restricts
   * key characters maps them back), plus the release's own labels.
   */
  readonly labels: Readonly<Record<string, string>>;
}

/** Selects instances by target; optionally narrowed to one release or rollout. */
export interface InstanceSelector {
  readonly target: Target;
  readonly release?: number;
  readonly rolloutId?: string;
  /**
   * Fill `restartCount` exactly even where that costs one extra call per instance (Docker's
   * container list has no restart counts). The rollout engine asks for it only while it gates
   * or holds a rollout, to catch instances that crash and are restarted between two probes.
   */
  readonly withRestartCounts?: boolean;
}

/** Building, finding and removing images. */
export interface ImageOperations {
  /**
   * Builds an image from the recipe, labels it with the fingerprint and target, and returns it.
   * @throws KilnError BUILD_FAILED, BUILD_CONTEXT_INVALID, PROVIDER_UNAVAILABLE, ABORTED
   */
  build(recipe: ImageRecipe, ctx: ProviderContext): Promise<ImageRef>;
  /**
   * The service's image built from this fingerprint, if one exists. Images are owned by one
   * service: two services with identical build inputs each get their own, so removing one
   * service's images never takes another's.
   */
  find(query: { readonly service: string; readonly fingerprint: string }, ctx: ProviderContext): Promise<ImageRef | undefined>;
  /** Every image Kiln built for this service. */
  list(service: string, ctx: ProviderContext): Promise<ImageRef[]>;
  /**
   * Removes an image; an image already gone counts as removed.
   * @throws KilnError IMAGE_IN_USE when an instance still uses it; PROVIDER_UNAVAILABLE
   */
  remove(image: ImageRef, ctx: ProviderContext): Promise<void>;
}

/** Launching, listing and terminating instances. */
export interface InstanceOperations {
  /**
   * Starts `count` instances of the release, labelled with {@link LABELS}; idempotent by
   * `idempotencyKey` across provider objects and processes (a resumed rollout relies on it): a
   * second call with the same key returns the instances the first started and starts only the
   * missing ones. Returns as soon as the instances are started; health is core's concern.
   * @throws KilnError LAUNCH_FAILED, INVALID_ARGUMENT (count below 1), PROVIDER_UNAVAILABLE, THROTTLED, ABORTED
   */
  launch(request: LaunchRequest, ctx: ProviderContext): Promise<Instance[]>;
  /** Every instance of the selector in any state but terminated, in one call to the backend. */
  list(selector: InstanceSelector, ctx: ProviderContext): Promise<Instance[]>;
  /**
   * Stops instances (SIGTERM, then a kill after `gracePeriodMs`) and removes them. An instance
   * already gone, or already being removed, counts as terminated.
   * @throws KilnError TERMINATE_FAILED, PROVIDER_UNAVAILABLE
   */
  terminate(instances: readonly Instance[], options: { gracePeriodMs: number }, ctx: ProviderContext): Promise<void>;
  /**
   * Optional: runs a command inside a running instance and waits for it, for command health
   * checks. Never throws for a non-zero exit code.
   * @param options.timeoutMs - how long the command may run (milliseconds)
   * @throws KilnError PROVIDER_UNAVAILABLE, TIMEOUT
   */
  exec?(instance: Instance, command: readonly string[], options: { timeoutMs: number }, ctx: ProviderContext): Promise<{ exitCode: number; output: string }>;
}

/** The outcome of one health probe. */
export type ProbeResult = { readonly ok: true } | { readonly ok: false; readonly reason: string };

/** A provider-native health check; core probes the instance's endpoint itself when a provider has none. */
export interface HealthCapability {
  /** What the provider's own check looks at, for plans (`the platform's status checks pass`). */
  readonly description?: string;
  /**
   * Probes one instance once: the platform's own view of its health (a cloud's status checks), then the
   * spec's check when there is one. The rollout engine calls it for every instance of a probe
   * round at the same time, so a provider can answer a whole round with one API call. Never
   * throws for an unhealthy instance: it returns `ok: false`.
   * @param check - the spec's health check; undefined when the spec has none (then a running
   *   instance that the platform finds healthy is healthy)
   * @param timeoutMs - how long the probe may take (milliseconds)
   */
  probe(instance: Instance, check: ResolvedCheck | undefined, timeoutMs: number, ctx: ProviderContext): Promise<ProbeResult>;
}

export type { ProxyStatus, TrafficCapability, TrafficOptions } from "./traffic.js";

/** Limits a provider declares; plans that would exceed them are refused before anything starts. */
export interface ProviderLimits {
  /** The most instances one target may run at once (a quota, a host's capacity). */
  readonly maxInstancesPerTarget?: number;
  /** The most instances one target may run at once behind the provider's front proxy (its slots). */
  readonly maxInstancesBehindProxy?: number;
}

/**
 * A provider: the plugin that implements the image/instance lifecycle on one platform. Create one
 * with the provider package's factory (e.g. `createDockerProvider()`).
 */
export interface Provider {
  /** The provider's name, equal to its package suffix (`docker` for `@kilnjs/provider-docker`). */
  readonly name: string;
  /**
   * The provider's part of the spec: its image format (Dockerfile or machine recipe), the spec
   * sections it owns, its pre-flight rules, plan lines and fingerprint inputs.
   * @defaultValue {@link DEFAULT_PROVIDER_SPEC}: Dockerfile images, no sections
   */
  readonly spec?: ProviderSpec;
  readonly images: ImageOperations;
  readonly instances: InstanceOperations;
  /** Optional: shifts and drains traffic; see {@link TrafficCapability}. */
  readonly traffic?: TrafficCapability;
  /** Optional limits, checked at plan time. */
  readonly limits?: ProviderLimits;
  /** Optional provider-native health probe; without it core sends HTTP probes to instance endpoints. */
  readonly health?: HealthCapability;
  /** Optional: reads secrets from the platform's secret store; see {@link SecretStoreCapability}. */
  readonly secrets?: SecretStoreCapability;
  /**
   * Checks that the backend answers.
   * @throws KilnError PROVIDER_UNAVAILABLE with a message that says how to start or reach it
   */
  ping(ctx: ProviderContext): Promise<void>;
  /** Releases connections; the provider is not used afterwards. */
  close?(): Promise<void>;
}

/**
 * Identity helper that types a provider factory.
 * @example
 * ```ts
 * export const createMyProvider = defineProvider((options: MyOptions) => ({ name: "my", images, instances, ping }));
 * ```
 */
export function defineProvider<Args extends unknown[], P extends Provider = Provider>(factory: (...args: Args) => P): (...args: Args) => P {
  return factory;
}

/**
 * A provider context for one of many calls made at once (one per instance, one per probe): `ctx`
 * with a signal of its own that aborts when `ctx.signal` does. A request, socket or SDK call that
 * is given a signal adds an abort listener to it until it ends, so many calls at once on one
 * shared signal add one listener per call to it (Node warns past 10:
 * `MaxListenersExceededWarning: 11 abort listeners added`). `AbortSignal.any` follows its source
 * without adding a listener to it: the shared signal carries none, however many calls run.
 * @example
 * ```ts
 * await Promise.all(containers.map((container) => inspect(container, childContext(ctx))));
 * ```
 * @see https://nodejs.org/api/globals.html#static-method-abortsignalanysignals
 */
export function childContext(ctx: ProviderContext): ProviderContext {
  return { ...ctx, signal: AbortSignal.any([ctx.signal]) };
}
