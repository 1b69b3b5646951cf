/**
 * The arithmetic of rollouts and health checks, shared by validation, resolution and plans so
 * that all three agree. Rounding follows Kubernetes Deployments: a percentage of `maxSurge` rounds
 * up, of `maxUnavailable` rounds down.
 * @see https://kubernetes.io/docs/concepts/workloads/controllers/deployment/#max-surge
 */

/** `"25%"` → 25; a number → undefined. */
function percentOf(value: number | string): number | undefined {
  return typeof value === "string" ? Number(value.slice(0, -1)) : undefined;
}

/** `maxSurge` in instances: a count as it is, a percentage of `count` rounded up. */
export function resolveSurge(value: number | string, count: number): number {
  const percent = percentOf(value);
  return percent === undefined ? (value as number) : Math.ceil((count * percent) / 100);
}

/** `maxUnavailable` in instances: a count as it is (at most `count`), a percentage of `count` rounded down. */
export function resolveUnavailable(value: number | string, count: number): number {
  const percent = percentOf(value);
  return Math.min(count, percent === undefined ? (value as number) : Math.floor((count * percent) / 100));
}

/** A canary step's size in instances: a count as it is, a percentage of `count` rounded up (at least 1). */
export function resolveStepSize(value: number | string, count: number): number {
  const percent = percentOf(value);
  return percent === undefined ? (value as number) : Math.max(1, Math.ceil((count * percent) / 100));
}

/** Health settings the deadline arithmetic uses (milliseconds and counts). */
export interface HealthTiming {
  readonly startPeriodMs: number;
  readonly intervalMs: number;
  readonly timeoutMs: number;
  readonly healthyThreshold: number;
  readonly unhealthyThreshold: number;
  readonly stabilityWindowMs: number;
}

/**
 * The least time an instance that uses its whole start period needs to be found healthy:
 * `startPeriodMs + healthyThreshold × (intervalMs + timeoutMs) + stabilityWindowMs`.
 * A user deadline below this is an error; the arithmetic is returned to show it.
 */
export function minimumHealthDeadline(health: HealthTiming): { totalMs: number; arithmetic: string } {
  const totalMs = health.startPeriodMs + health.healthyThreshold * (health.intervalMs + health.timeoutMs) + health.stabilityWindowMs;
  const arithmetic = `startPeriodMs ${health.startPeriodMs} + healthyThreshold ${health.healthyThreshold} × (intervalMs ${health.intervalMs} + timeoutMs ${health.timeoutMs}) + stabilityWindowMs ${health.stabilityWindowMs}`;
  return { totalMs, arithmetic };
}

/**
 * The default deadline: the start period, then room for the healthy and unhealthy thresholds'
 * worth of probes, each taking at most one interval plus one timeout, then the stability window:
 * `startPeriodMs + (healthyThreshold + unhealthyThreshold) × (intervalMs + timeoutMs) + stabilityWindowMs`.
 */
export function defaultHealthDeadline(health: HealthTiming): { totalMs: number; arithmetic: string } {
  const totalMs = health.startPeriodMs + (health.healthyThreshold + health.unhealthyThreshold) * (health.intervalMs + health.timeoutMs) + health.stabilityWindowMs;
  const arithmetic = `startPeriodMs ${health.startPeriodMs} + (healthyThreshold ${health.healthyThreshold} + unhealthyThreshold ${health.unhealthyThreshold}) × (intervalMs ${health.intervalMs} + timeoutMs ${health.timeoutMs}) + stabilityWindowMs ${health.stabilityWindowMs}`;
  return { totalMs, arithmetic };
}
