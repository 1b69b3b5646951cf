import path from "node:path";
import { closest, distance } from "fastest-levenshtein";
import { KilnError } from "../errors.js";
import type { InstanceConfig } from "../provider/contract.js";
import type { SecretDelivery, SecretSource } from "../secrets/types.js";
import { DEFAULT_ENVIRONMENT, type Target } from "../target.js";
import { MEMORY_PATTERN, instancesSchema, type Spec } from "./schema.js";
import type { ValidatedSpec } from "./validate.js";
import { defaultHealthDeadline, resolveStepSize, resolveSurge, resolveUnavailable, type HealthTiming } from "./arithmetic.js";

/** A port a check probes, resolved to a name in the instance's ports. */
interface PortCheck {
  /** The port name in `instances.ports` (a port number in the spec is matched, or added as `health`). */
  readonly portName: string;
}

/** The HTTP health check of a target, with the port resolved to a name. */
export interface ResolvedHttpCheck extends PortCheck {
  readonly kind: "http";
  readonly path: string;
  /** Inclusive range of statuses that count as healthy. */
  readonly expectStatus: readonly [number, number];
}

/** A TCP check: the port accepts a connection. */
export interface ResolvedTcpCheck extends PortCheck {
  readonly kind: "tcp";
}

/** A command run inside the instance: exit code 0 is healthy. */
export interface ResolvedCommandCheck {
  readonly kind: "command";
  readonly command: readonly string[];
}

/** One of the health checks. */
export type ResolvedCheck = ResolvedHttpCheck | ResolvedTcpCheck | ResolvedCommandCheck;

/** Health-check settings of a target, with the deadline derived. */
export interface ResolvedHealth {
  /** The check; without one, a running instance counts as healthy. */
  readonly check?: ResolvedCheck;
  readonly intervalMs: number;
  readonly timeoutMs: number;
  readonly healthyThreshold: number;
  readonly unhealthyThreshold: number;
  readonly startPeriodMs: number;
  /** After the healthy threshold, how long an instance must keep passing without a restart (milliseconds). */
  readonly stabilityWindowMs: number;
  /** How long one instance may take to become healthy, from launch (milliseconds). */
  readonly deadlineMs: number;
  /** How `deadlineMs` was arrived at, for plans: the spec's value, or the default formula with numbers. */
  readonly deadlineArithmetic: string;
}

/** A resolved canary step. */
export interface ResolvedCanaryStep {
  /** New instances at this step. */
  readonly instances: number;
  /** How long the step is held (milliseconds). */
  readonly holdMs: number;
}

/** A front proxy's settings, resolved. */
export interface ResolvedProxy {
  /** The host address the proxy's port is published on. */
  readonly host: string;
  /** The host port where the service is reached. */
  readonly port: number;
  /** The instance port (by name) that receives traffic. */
  readonly portName: string;
  /** Retries of a request that failed to connect, on another instance. */
  readonly retries: number;
}

/** How requests reach a target's instances. */
export interface ResolvedTraffic {
  /** A front proxy Kiln runs and drives; without one, clients reach instances directly. */
  readonly proxy?: ResolvedProxy;
  /**
   * The target's provider's `traffic.loadBalancer.<provider>` section (a cloud load balancer the
   * instances join), as the provider's schema produced it; undefined without one.
   */
  readonly loadBalancer?: unknown;
}

/** One provisioning step of a machine image, with paths absolute. */
export type ResolvedProvisionStep =
  /** Copy a file, or a folder's contents, into the image. */
  | { readonly kind: "file"; readonly from: string; readonly to: string }
  /** Run a script file with `sh`. */
  | { readonly kind: "shell"; readonly script: string }
  /** Run one command line with `sh -c`. */
  | { readonly kind: "run"; readonly command: string };

/** How a machine image is baked. */
export interface ResolvedMachine {
  readonly provision: readonly ResolvedProvisionStep[];
  /** The target's provider's `image.machine.base.<provider>` section, as its schema produced it; undefined without one. */
  readonly base: unknown;
  /** The target's provider's `image.machine.builder.<provider>` section, as its schema produced it; undefined without one. */
  readonly builder: unknown;
  /** How long a bake may take in all (milliseconds). */
  readonly timeoutMs: number;
}

/** The rollout settings of a target, percentages resolved to counts. */
export interface ResolvedRollout {
  readonly strategy: "rolling" | "blue-green" | "canary";
  /** Instances above `count` allowed during a rolling rollout. */
  readonly maxSurge: number;
  /** Instances below `count` allowed during a rolling rollout. */
  readonly maxUnavailable: number;
  readonly pauseBetweenBatchesMs: number;
  readonly bakeTimeMs: number;
  /** Canary steps, ending with one of `count` instances. Empty for other strategies. */
  readonly steps: readonly ResolvedCanaryStep[];
  readonly autoRollback: boolean;
  /** `stop-first`: old instances stop before new ones start (downtime when count − maxUnavailable is 0). */
  readonly order: "start-first" | "stop-first";
}

/** A secret the instances receive, before its value is read: `SecretMount` without the digest. */
export interface ResolvedSecret {
  /** Its key under `secrets`. */
  readonly name: string;
  readonly source: SecretSource;
  readonly to: SecretDelivery;
}

/** Everything Kiln needs to deploy one target, with paths absolute and units in bytes and milliseconds. */
export interface ResolvedTarget {
  readonly target: Target;
  /** The provider's name (`docker`). */
  readonly provider: string;
  readonly build: {
    readonly contextDir: string;
    readonly dockerfilePath: string;
    readonly args: Readonly<Record<string, string>>;
    readonly stage?: string;
    /** Build secrets by id, where each value comes from (`image.dockerfile.secrets`); absent: none. */
    readonly secrets?: Readonly<Record<string, SecretSource>>;
  };
  /**
   * The secrets the instances receive (`secrets`), sorted by name; absent: none. Their values are
   * read, and their digests put in `instance.secrets`, when a deploy or plan prepares.
   */
  readonly secrets?: readonly ResolvedSecret[];
  /** How the machine image is baked, when the spec has `image.machine` (VM providers). */
  readonly machine?: ResolvedMachine;
  /**
   * The spec's `image.allowSecretFiles`: files that look like secrets and may be built anyway,
   * `.dockerignore`-syntax patterns relative to the build context (for a machine image: to the
   * spec's folder). @defaultValue none
   */
  readonly allowSecretFiles?: readonly string[];
  readonly count: number;
  readonly instance: InstanceConfig;
  readonly health: ResolvedHealth;
  readonly rollout: ResolvedRollout;
  readonly traffic: ResolvedTraffic;
  /** The spec's `retention`: releases kept per target after each successful deploy; absent: no clean-up. */
  readonly retention?: { readonly keep: number };
}

/**
 * The default deadline of a health check in milliseconds; see {@link defaultHealthDeadline}.
 */
export function defaultHealthDeadlineMs(health: HealthTiming): number {
  return defaultHealthDeadline(health).totalMs;
}

/**
 * Resolves one environment of a validated spec into a {@link ResolvedTarget}.
 * @param validated - from `validateSpec` / `loadSpec`
 * @param environment - an environment name from the spec, or `default` for the top-level settings
 * @param baseDir - the folder relative paths in the spec are resolved against (the spec file's folder)
 * @throws KilnError ENVIRONMENT_NOT_FOUND when the spec does not define the environment
 */
export function resolveTarget(validated: ValidatedSpec, environment: string, baseDir: string): ResolvedTarget {
  let spec: Spec;
  if (environment === DEFAULT_ENVIRONMENT) spec = validated.spec;
  else {
    const found = validated.environments[environment];
    if (!found) {
      const known = Object.keys(validated.environments);
      const near = known.length > 0 ? closest(environment.toLowerCase(), known) : undefined;
      const hint = near !== undefined && distance(near, environment.toLowerCase()) <= 2 ? ` Did you mean "${near}"?` : "";
      throw new KilnError(
        "ENVIRONMENT_NOT_FOUND",
        `The spec defines no environment "${environment}"; ${known.length > 0 ? `it defines ${known.map((n) => `"${n}"`).join(", ")}` : "it defines none (leave --environment out to use the top-level settings)"}.${hint}`,
      );
    }
    spec = found;
  }
  const contextDir = path.resolve(baseDir, spec.image.dockerfile.context);
  const ports = [...spec.instances.ports];
  const portNameFor = (port: string | number): string => {
    if (typeof port === "string") return port;
    const existing = ports.find((p) => p.port === port && p.protocol === "tcp");
    if (existing) return existing.name;
    ports.push({ name: "health", port, protocol: "tcp" });
    return "health";
  };
  let check: ResolvedCheck | undefined;
  const { http, tcp, command } = spec.health;
  if (http) check = { kind: "http", portName: portNameFor(http.port), path: http.path, expectStatus: [http.expectStatus[0], http.expectStatus[1]] };
  else if (tcp) check = { kind: "tcp", portName: portNameFor(tcp.port) };
  else if (command) check = { kind: "command", command: [...command.command] };
  const timing: HealthTiming = {
    intervalMs: spec.health.intervalMs,
    timeoutMs: spec.health.timeoutMs,
    healthyThreshold: spec.health.healthyThreshold,
    unhealthyThreshold: spec.health.unhealthyThreshold,
    startPeriodMs: spec.health.startPeriodMs,
    stabilityWindowMs: spec.health.stabilityWindowMs,
  };
  const deadline =
    spec.health.deadlineMs !== undefined ? { totalMs: spec.health.deadlineMs, arithmetic: "health.deadlineMs" } : defaultHealthDeadline(timing);
  const count = spec.instances.count;
  const { rollout } = spec;
  // The target's provider's own sections, carried as its schema produced them.
  const providerSettings = spec.provider in instancesSchema.shape ? undefined : sectionOf(spec.instances, spec.provider);
  const loadBalancer = sectionOf(spec.traffic.loadBalancer, spec.provider);
  const steps =
    rollout.strategy === "canary"
      ? [
          ...(rollout.steps ?? []).map((step) => ({ instances: resolveStepSize(step.instances, count), holdMs: step.holdMs })).filter((step) => step.instances < count),
          { instances: count, holdMs: 0 },
        ]
      : [];
  return {
    target: { service: spec.service, environment },
    provider: spec.provider,
    build: {
      contextDir,
      dockerfilePath: path.resolve(contextDir, spec.image.dockerfile.file),
      args: { ...spec.image.dockerfile.args },
      ...(spec.image.dockerfile.target ? { stage: spec.image.dockerfile.target } : {}),
      ...(Object.keys(spec.image.dockerfile.secrets).length > 0
        ? { secrets: Object.fromEntries(Object.entries(spec.image.dockerfile.secrets).map(([id, secret]) => [id, secretSource(secret.from, baseDir)])) }
        : {}),
    },
    ...(Object.keys(spec.secrets).length > 0
      ? {
          secrets: Object.entries(spec.secrets)
            .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
            .map(([name, secret]): ResolvedSecret => ({
              name,
              source: secretSource(secret.from, baseDir),
              to: secret.to?.file !== undefined ? { kind: "file", path: secret.to.file } : { kind: "env", name: secret.to?.env ?? name },
            })),
        }
      : {}),
    ...(spec.image.machine ? { machine: resolveMachine(spec.image.machine, spec.provider, baseDir) } : {}),
    ...(spec.image.allowSecretFiles?.length ? { allowSecretFiles: [...spec.image.allowSecretFiles] } : {}),
    count,
    instance: {
      ports,
      env: { ...spec.instances.env },
      labels: { ...spec.instances.labels },
      ...(spec.instances.command ? { command: [...spec.instances.command] } : {}),
      ...(spec.instances.resources.memory !== undefined ? { memoryBytes: parseMemory(spec.instances.resources.memory) } : {}),
      ...(spec.instances.resources.cpus !== undefined ? { cpus: spec.instances.resources.cpus } : {}),
      stopGracePeriodMs: spec.instances.stopGracePeriodMs,
      // Behind a proxy, instances publish no host ports: the proxy reaches them on Kiln's network.
      publishPorts: spec.traffic.proxy === undefined,
      ...(providerSettings !== undefined ? { providerSettings } : {}),
    },
    health: { ...(check ? { check } : {}), ...timing, deadlineMs: deadline.totalMs, deadlineArithmetic: deadline.arithmetic },
    traffic: {
      ...(spec.traffic.proxy
        ? {
            proxy: {
              host: spec.traffic.proxy.host,
              port: spec.traffic.proxy.port,
              portName: spec.traffic.proxy.targetPort ?? ports.find((port) => port.protocol === "tcp")?.name ?? "",
              retries: spec.traffic.proxy.retries,
            },
          }
        : {}),
      ...(loadBalancer !== undefined ? { loadBalancer } : {}),
    },
    rollout: {
      strategy: rollout.strategy,
      // stop-first: never more than count; at least one may be missing, or nothing could move.
      maxSurge: rollout.order === "stop-first" ? 0 : resolveSurge(rollout.maxSurge, count),
      maxUnavailable: rollout.order === "stop-first" ? Math.max(1, resolveUnavailable(rollout.maxUnavailable, count)) : resolveUnavailable(rollout.maxUnavailable, count),
      order: rollout.order,
      pauseBetweenBatchesMs: rollout.pauseBetweenBatchesMs,
      bakeTimeMs: rollout.bakeTimeMs,
      steps,
      autoRollback: rollout.autoRollback,
    },
    ...(spec.retention ? { retention: { keep: spec.retention.keep } } : {}),
  };
}

function resolveMachine(machine: NonNullable<Spec["image"]["machine"]>, provider: string, baseDir: string): ResolvedMachine {
  return {
    provision: machine.provision.map((step): ResolvedProvisionStep => {
      if (step.file) return { kind: "file", from: path.resolve(baseDir, step.file.from), to: step.file.to };
      if (step.shell !== undefined) return { kind: "shell", script: path.resolve(baseDir, step.shell) };
      return { kind: "run", command: step.run! };
    }),
    base: sectionOf(machine.base, provider),
    builder: sectionOf(machine.builder, provider),
    timeoutMs: machine.timeoutMs,
  };
}

/** A secret's source as a reference: a file's path made absolute, a provider's store by its name. */
function secretSource(from: Spec["secrets"][string]["from"], baseDir: string): SecretSource {
  if (from.env !== undefined) return { kind: "env", name: from.env };
  if (from.file !== undefined) return { kind: "file", path: path.resolve(baseDir, from.file) };
  const [provider, reference] = Object.entries(from).find(([key, value]) => key !== "env" && key !== "file" && value !== undefined) ?? ["", undefined];
  return { kind: "store", provider, reference };
}

/** A provider's section in a place of the spec that holds one per provider (`instances`, `image.machine.base`, …). */
function sectionOf(parent: object | undefined, provider: string): unknown {
  return parent === undefined ? undefined : (parent as Record<string, unknown>)[provider];
}

const UNIT_BYTES: Record<string, number> = {
  "": 1, b: 1, k: 1e3, kb: 1e3, m: 1e6, mb: 1e6, g: 1e9, gb: 1e9,
  ki: 1024, kib: 1024, mi: 1024 ** 2, mib: 1024 ** 2, gi: 1024 ** 3, gib: 1024 ** 3,
};

/**
 * Parses a memory size into bytes: a number of bytes, or text with a unit: binary `Ki`, `Mi`,
 * `Gi` (powers of 1024, as Kubernetes) or decimal `k`, `M`, `G` (powers of 1000).
 * @throws KilnError INVALID_ARGUMENT for text that is not a size
 */
export function parseMemory(value: number | string): number {
  if (typeof value === "number") return value;
  const match = MEMORY_PATTERN.exec(value.trim());
  if (!match) throw new KilnError("INVALID_ARGUMENT", `"${value}" is not a memory size; write e.g. 256Mi or 1Gi.`);
  return Math.round(Number(match[1]) * UNIT_BYTES[(match[2] ?? "").toLowerCase()]!);
}
