import { createHash } from "node:crypto";
import type { InstanceConfig, ProviderLimits } from "../provider/contract.js";
import type { SecretMount } from "../secrets/types.js";
import type { ResolvedTraffic } from "../spec/resolve.js";
import type { ReleaseRecord, TargetState } from "../state/types.js";
import { describeHealth } from "./format.js";
import { effectiveLimits, planReplacement } from "./replacement.js";
import type { DeployPlan, ImagePlan, PlanInput, ProgramRelease, ReplacementInput, ReplacementPlan } from "./types.js";

/**
 * The hash that decides whether a release changes: the fingerprint, the count, the instance
 * configuration and, when there is one, the traffic router (front proxy or load balancer); key
 * order does not matter.
 */
export function releaseConfigHash(fingerprint: string, count: number, instance: InstanceConfig, traffic?: ResolvedTraffic): string {
  // Traffic (the proxy or load balancer instances join) is part of what runs: changing it makes a
  // release. Without any, the hash is what it was before traffic counted, so no release changes.
  const routed = traffic && (traffic.proxy || traffic.loadBalancer !== undefined) ? { traffic } : {};
  return `sha256:${createHash("sha256").update(stableJson({ fingerprint, count, instance, ...routed })).digest("hex")}`;
}

/**
 * Plans a deploy: whether to build, whether a new release is needed, which instances to launch
 * and retire, and the program of steps the rollout engine runs. A repair of the current release
 * (same configuration, instances missing or foreign) runs with the release's recorded strategy;
 * a new release with the spec's. Pure: reads only its input, touches nothing.
 * @throws KilnError PLAN_INVALID when the strategy would exceed the provider's limits
 */
export function planDeploy(input: PlanInput): DeployPlan {
  const { resolved, fingerprint, existingImage, state } = input;
  const configHash = releaseConfigHash(fingerprint, resolved.count, resolved.instance, resolved.traffic);
  const image: ImagePlan = existingImage ? { action: "reuse", fingerprint, image: existingImage } : { action: "build", fingerprint };
  const current = currentRelease(state);
  const sameRelease = current !== undefined && current.configHash === configHash && existingImage !== undefined && existingImage.id === current.image.id;
  const toRelease = sameRelease ? current.number : nextReleaseNumber(state);
  const strategy = sameRelease ? current.rollout : resolved.rollout;
  const rollout = planReplacement({
    instances: input.instances,
    fromRelease: current?.number,
    toRelease,
    newRelease: !sameRelease,
    imageId: existingImage?.id,
    count: resolved.count,
    maxSurge: strategy.maxSurge,
    maxUnavailable: strategy.maxUnavailable,
    rollout: strategy,
    limits: effectiveLimits(input.limits, resolved.traffic),
    release: { stopGracePeriodMs: resolved.instance.stopGracePeriodMs, traffic: resolved.traffic },
    previous: current && programRelease(current),
  });
  const changes: string[] = [];
  changes.push(
    image.action === "build"
      ? `build image ${shortHash(fingerprint)} (${resolved.target.service} has no image with this fingerprint yet)`
      : `reuse image ${shortHash(fingerprint)} (${existingImage ? (existingImage.id.startsWith("sha256:") ? existingImage.id.slice(0, 19) : existingImage.id) : ""})`,
  );
  const buildSecrets = Object.keys(resolved.build.secrets ?? {});
  if (image.action === "build" && buildSecrets.length > 0) changes.push(`  build secrets: ${buildSecrets.join(", ")} (read when the image is built; never in the image or its fingerprint)`);
  if (rollout.action === "none") changes.push(rollout.reason);
  else {
    const why = rollout.newRelease && current ? releaseReason(current, { fingerprint, count: resolved.count, instance: resolved.instance, traffic: resolved.traffic }) : "";
    const what = rollout.newRelease ? `create release ${rollout.toRelease}${why}` : `repair release ${rollout.toRelease} (running instances differ from it)`;
    changes.push(`${what}: ${summary(rollout)}`);
    for (const step of rollout.steps) changes.push(`  ${step}`);
    changes.push(`  at most ${rollout.peakInstances} instance${rollout.peakInstances === 1 ? "" : "s"} run at once`);
    changes.push(`  health gate: ${describeHealth(resolved.health, input.providerHealth)}`);
    const proxy = resolved.traffic.proxy;
    if (proxy) changes.push(`  traffic: front proxy at ${proxy.host}:${proxy.port} → port ${proxy.portName}; new instances join after their gate, old ones are drained before they stop`);
    else if (resolved.traffic.loadBalancer === undefined) {
      const dropped = current?.traffic?.proxy;
      changes.push(
        dropped
          ? `  traffic: clients reach each instance at its own address (no proxy); the front proxy at ${dropped.host}:${dropped.port} is retired once this release serves (kept if the rollout fails)`
          : "  traffic: clients reach each instance at its own address (no proxy)",
      );
    }
    else if (!(input.providerLines ?? []).some((line) => line.startsWith("traffic:"))) {
      changes.push(`  traffic: the ${resolved.provider} provider's load balancer (traffic.loadBalancer.${resolved.provider}); new instances join after their gate, old ones are drained before they stop`);
    }
    for (const line of input.providerLines ?? []) changes.push(`  ${line}`);
    const secrets = secretsLine(resolved.instance.secrets ?? [], current?.instance.secrets);
    if (secrets) changes.push(`  ${secrets}`);
  }
  return { target: resolved.target, fingerprint, configHash, image, rollout, noop: image.action === "reuse" && rollout.action === "none", changes };
}

/**
 * A deploy plan that resumes an interrupted rollout's release instead (its release is what the
 * spec asks for): `rollout` from {@link planRecovery}, described as a resumption. Pure.
 */
export function resumeDeployPlan(plan: DeployPlan, resumed: { readonly rolloutId: string; readonly rollout: ReplacementPlan }): DeployPlan {
  const { rollout } = resumed;
  return {
    ...plan,
    rollout,
    noop: false,
    changes: [plan.changes[0]!, `resume release ${rollout.toRelease} (rollout ${resumed.rolloutId} was interrupted): ${summary(rollout)}`, ...rollout.steps.map((step) => `  ${step}`)],
  };
}

function summary(rollout: ReplacementPlan): string {
  return `${rollout.count} instance${rollout.count === 1 ? "" : "s"}, launch ${rollout.launch}, retire ${rollout.retire.length}, keep ${rollout.keep.length}`;
}

/**
 * The part of {@link planReplacement}'s input that a release record decides: its count, strategy,
 * grace period and traffic, and the provider's limits as they apply to its traffic.
 */
export function replacementSettings(release: ReleaseRecord, limits: ProviderLimits | undefined) {
  return {
    count: release.count,
    maxSurge: release.rollout.maxSurge,
    maxUnavailable: release.rollout.maxUnavailable,
    rollout: release.rollout,
    limits: effectiveLimits(limits, release.traffic),
    release: { stopGracePeriodMs: release.instance.stopGracePeriodMs, traffic: release.traffic },
  } satisfies Partial<ReplacementInput>;
}

/** A release record as a program depends on it. */
export function programRelease(release: ReleaseRecord): ProgramRelease {
  return { number: release.number, imageId: release.image.id, stopGracePeriodMs: release.instance.stopGracePeriodMs, traffic: release.traffic };
}

/** The release serving now, from state. */
export function currentRelease(state: TargetState): ReleaseRecord | undefined {
  return state.currentRelease === undefined ? undefined : state.releases.find((release) => release.number === state.currentRelease);
}

/** The number the next release of the target gets. */
export function nextReleaseNumber(state: TargetState): number {
  return state.releases.reduce((max, release) => Math.max(max, release.number), 0) + 1;
}

function shortHash(fingerprint: string): string {
  return fingerprint.replace(/^sha256:/, "").slice(0, 12);
}

function stableJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(stableJson).join(",")}]`;
  if (value && typeof value === "object") {
    return `{${Object.keys(value)
      .sort()
      .filter((key) => (value as Record<string, unknown>)[key] !== undefined)
      .map((key) => `${JSON.stringify(key)}:${stableJson((value as Record<string, unknown>)[key])}`)
      .join(",")}}`;
  }
  return JSON.stringify(value);
}

/**
 * `secrets: DB_PASSWORD (env, changed), TLS_KEY (file /run/secrets/tls.key, new)`: each secret of
 * the release and how it reaches instances, with what changed since the current release's
 * (`before`; undefined on a first release), by digest: the plan never sees a value. Undefined
 * without secrets.
 */
function secretsLine(secrets: readonly SecretMount[], before: readonly SecretMount[] | undefined): string | undefined {
  if (secrets.length === 0) return undefined;
  const previous = before === undefined ? undefined : new Map(before.map((mount) => [mount.name, mount.digest]));
  const parts = secrets.map((mount) => {
    const how = mount.to.kind === "env" ? (mount.to.name === mount.name ? "env" : `env ${mount.to.name}`) : `file ${mount.to.path}`;
    const was = previous?.get(mount.name);
    const change = previous === undefined ? "" : was === undefined ? ", new" : was === mount.digest ? "" : ", changed";
    return `${mount.name} (${how}${change})`;
  });
  return `secrets: ${parts.join(", ")}; values are read at deploy time, never recorded`;
}

/**
 * Why a new release differs from `current`, for the plan: ` (new image; secrets changed:
 * DB_PASSWORD)`, or empty when nothing recorded differs (a release made again after a rollback).
 * Compares what the release's hash covers: the image's fingerprint, the count, the instance
 * settings without secrets, the secrets by digest, and the traffic router.
 */
function releaseReason(current: ReleaseRecord, next: { fingerprint: string; count: number; instance: InstanceConfig; traffic: ResolvedTraffic }): string {
  const reasons: string[] = [];
  if (current.fingerprint !== next.fingerprint) reasons.push("new image");
  if (current.count !== next.count) reasons.push(`count ${current.count} → ${next.count}`);
  const { secrets: before = [], ...settingsBefore } = current.instance;
  const { secrets: after = [], ...settingsAfter } = next.instance;
  if (stableJson(settingsBefore) !== stableJson(settingsAfter)) reasons.push("instance settings changed");
  const digests = new Map(before.map((mount) => [mount.name, stableJson(mount)]));
  const changed = [...after.filter((mount) => digests.get(mount.name) !== stableJson(mount)).map((mount) => mount.name), ...before.filter((mount) => !after.some((other) => other.name === mount.name)).map((mount) => `${mount.name} (removed)`)];
  if (changed.length > 0) reasons.push(`secrets changed: ${changed.join(", ")}`);
  const routed = (traffic: ResolvedTraffic | undefined) => stableJson({ proxy: traffic?.proxy, loadBalancer: traffic?.loadBalancer });
  if (routed(current.traffic) !== routed(next.traffic)) reasons.push("traffic changed");
  return reasons.length > 0 ? ` (${reasons.join("; ")})` : "";
}
