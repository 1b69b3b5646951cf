import path from "node:path";
import { KilnError } from "../errors.js";
import type { InstanceConfig } from "../provider.js";
import { DEFAULT_ENVIRONMENT, type Target } from "../target.js";
import { MEMORY_PATTERN, type Spec } from "./schema.js";
import type { ValidatedSpec } from "./validate.js";

/** The HTTP health check of a target, with the port resolved to a name. */
export interface ResolvedHttpCheck {
  /** The port name in `instances.ports` (a port number in the spec is matched or added as `health`). */
  readonly portName: string;
  readonly path: string;
  /** Inclusive range of statuses that count as healthy. */
  readonly expectStatus: readonly [number, number];
}

/** Health-check settings of a target, with the deadline derived. */
export interface ResolvedHealth {
  readonly http?: ResolvedHttpCheck;
  readonly intervalMs: number;
  readonly timeoutMs: number;
  readonly healthyThreshold: number;
  readonly unhealthyThreshold: number;
  readonly startPeriodMs: number;
  /** How long one instance may take to become healthy, from launch (milliseconds). */
  readonly deadlineMs: number;
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
  };
  readonly count: number;
  readonly instance: InstanceConfig;
  readonly health: ResolvedHealth;
  readonly rollout: { readonly strategy: "rolling"; readonly maxSurge: number; readonly maxUnavailable: number };
}

/**
 * The default deadline of a health check: the start period, then room for the unhealthy and
 * healthy thresholds' worth of probes, each taking at most one interval plus one timeout.
 * `startPeriodMs + (healthyThreshold + unhealthyThreshold) × (intervalMs + timeoutMs)`.
 */
export function defaultHealthDeadlineMs(health: Pick<ResolvedHealth, "startPeriodMs" | "healthyThreshold" | "unhealthyThreshold" | "intervalMs" | "timeoutMs">): number {
  return health.startPeriodMs + (health.healthyThreshold + health.unhealthyThreshold) * (health.intervalMs + health.timeoutMs);
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
      throw new KilnError(
        "ENVIRONMENT_NOT_FOUND",
        `The spec defines no environment "${environment}"; ${known.length > 0 ? `it defines ${known.map((n) => `"${n}"`).join(", ")}` : "it defines none (leave --environment out to use the top-level settings)"}.`,
      );
    }
    spec = found;
  }
  const contextDir = path.resolve(baseDir, spec.image.dockerfile.context);
  const ports = [...spec.instances.ports];
  let http: ResolvedHttpCheck | undefined;
  if (spec.health.http) {
    const { port, path: checkPath, expectStatus } = spec.health.http;
    let portName: string;
    if (typeof port === "string") portName = port;
    else {
      const existing = ports.find((p) => p.port === port && p.protocol === "tcp");
      if (existing) portName = existing.name;
      else {
        portName = "health";
        ports.push({ name: portName, port, protocol: "tcp" });
      }
    }
    http = { portName, path: checkPath, expectStatus: [expectStatus[0], expectStatus[1]] };
  }
  const healthBase = {
    intervalMs: spec.health.intervalMs,
    timeoutMs: spec.health.timeoutMs,
    healthyThreshold: spec.health.healthyThreshold,
    unhealthyThreshold: spec.health.unhealthyThreshold,
    startPeriodMs: spec.health.startPeriodMs,
  };
  return {
    target: { service: spec.service, environment },
    provider: spec.provider,
    build: {
      contextDir,
      dockerfilePath: path.resolve(contextDir, spec.image.dockerfile.file),
      args: { ...spec.image.dockerfile.args },
      ...(spec.image.dockerfile.target ? { stage: spec.image.dockerfile.target } : {}),
    },
    count: spec.instances.count,
    instance: {
      ports,
      env: { ...spec.instances.env },
      labels: { ...spec.instances.labels },
      ...(spec.instances.command ? { command: [...spec.instances.command] } : {}),
      ...(spec.instances.resources.memory !== undefined ? { memoryBytes: parseMemory(spec.instances.resources.memory) } : {}),
      ...(spec.instances.resources.cpus !== undefined ? { cpus: spec.instances.resources.cpus } : {}),
      stopGracePeriodMs: spec.instances.stopGracePeriodMs,
    },
    health: { ...(http ? { http } : {}), ...healthBase, deadlineMs: spec.health.deadlineMs ?? defaultHealthDeadlineMs(healthBase) },
    rollout: { ...spec.rollout },
  };
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
