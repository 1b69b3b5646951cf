// Fixtures for the planner's tests (not exported from the package): releases, instances and a
// compact, lossless rendering of a program for snapshots.
import type { ImageRef, Instance } from "../provider/contract.js";
import type { ResolvedRollout, ResolvedTarget, ResolvedTraffic } from "../spec/resolve.js";
import { emptyTargetState, type ReleaseRecord, type TargetState } from "../state/types.js";
import { releaseConfigHash } from "./deploy.js";
import type { DeployPlan, RolloutPlan } from "./types.js";

export const target = { service: "web", environment: "default" };

/** The image of release `n` (`sha256:image-n`). */
export function imageOf(n: number): ImageRef {
  return { id: `sha256:image-${n}`, fingerprint: `sha256:${String(n).repeat(64)}`, digest: `sha256:image-${n}`, names: [`kiln/web:${n}`] };
}

const rolling: ResolvedRollout = { strategy: "rolling", maxSurge: 1, maxUnavailable: 0, pauseBetweenBatchesMs: 0, bakeTimeMs: 0, steps: [], autoRollback: true, order: "start-first" };

/** A proxy router, for programs with traffic steps. */
export const proxied: ResolvedTraffic = { proxy: { host: "127.0.0.1", port: 18080, portName: "http", retries: 2 } };

/** A resolved target of `count` instances with the given strategy settings (rolling 1/0 otherwise). */
export function resolvedWith(count: number, rollout: Partial<ResolvedRollout> = {}, traffic: ResolvedTraffic = {}): ResolvedTarget {
  return {
    target,
    provider: "memory",
    build: { contextDir: "/ctx", dockerfilePath: "/ctx/Dockerfile", args: {} },
    count,
    instance: { ports: [{ name: "http", port: 8080, protocol: "tcp" }], env: {}, labels: {}, stopGracePeriodMs: 2000 },
    health: { intervalMs: 100, timeoutMs: 100, healthyThreshold: 1, unhealthyThreshold: 1, startPeriodMs: 0, stabilityWindowMs: 0, deadlineMs: 1000, deadlineArithmetic: "health.deadlineMs" },
    rollout: { ...rolling, ...rollout },
    traffic,
  };
}

/** Release `n` of `resolved`, run from {@link imageOf}(n), succeeded unless said otherwise. */
export function releaseOf(n: number, resolved: ResolvedTarget, overrides: Partial<ReleaseRecord> = {}): ReleaseRecord {
  const image = imageOf(n);
  return {
    number: n,
    target,
    provider: "memory",
    createdAt: "2026-01-01T00:00:00.000Z",
    fingerprint: image.fingerprint,
    image,
    count: resolved.count,
    instance: resolved.instance,
    health: resolved.health,
    rollout: resolved.rollout,
    traffic: resolved.traffic,
    configHash: releaseConfigHash(image.fingerprint, resolved.count, resolved.instance, resolved.traffic),
    status: "succeeded",
    ...overrides,
  };
}

/** Target state with these releases, `current` serving. */
export function stateOf(releases: readonly ReleaseRecord[], current: number | undefined): TargetState {
  return { ...emptyTargetState(target), releases: [...releases], currentRelease: current };
}

/** `count` running instances of release `n` (ids `v<n>-a`, `v<n>-b`, …) with its image. */
export function instancesOf(n: number, count: number, state: Instance["state"] = "running"): Instance[] {
  return Array.from({ length: count }, (_, index) => {
    const id = `v${n}-${String.fromCharCode(97 + index)}`;
    return { id, name: `web-${id}`, target, release: n, rolloutId: `rollout-${n}`, imageId: imageOf(n).id, state, restartCount: 0, endpoints: {}, createdAt: "", labels: {} };
  });
}

/** A plan's program, one line per phase and one JSON line per step (every field, nothing left out). */
export function programLines(plan: RolloutPlan | DeployPlan): string[] {
  const rollout = "rollout" in plan ? plan.rollout : plan;
  if (rollout.action === "none") return [`none: ${rollout.reason}`];
  return rollout.program.flatMap((phase) => ["number" in phase ? `${phase.phase} ${phase.number}` : phase.phase, ...phase.steps.map((step) => `  ${JSON.stringify(step)}`)]);
}

/** A replacement plan's counts and words, for checking them beside the program. */
export function summaryOf(plan: RolloutPlan | DeployPlan) {
  const rollout = "rollout" in plan ? plan.rollout : plan;
  if (rollout.action === "none") return rollout;
  return { keep: rollout.keep.map((i) => i.id), retire: rollout.retire.map((i) => i.id), launch: rollout.launch, peakInstances: rollout.peakInstances, steps: rollout.steps };
}
