/**
 * The read-only operations and the lock's administration: `Kiln.status` (what runs beside what
 * should, and the drift between them), `Kiln.history`, `Kiln.lockStatus`, `Kiln.forceReleaseLock`.
 * None of them takes the lock.
 * @module
 */
import { currentRelease } from "../plan/index.js";
import type { Instance, ProxyStatus } from "../provider/contract.js";
import type { LeaseStatus, ReleaseRecord, RolloutRecord, TargetState } from "../state/types.js";
import { formatTarget } from "../target.js";
import type { TargetOptions, TargetStatus } from "../kiln.js";
import type { OperationContext } from "./context.js";

/** `Kiln.status`; see its documentation. */
export async function status(context: OperationContext, options: TargetOptions): Promise<TargetStatus> {
  const { target, providerName } = await context.targetOf(options);
  const [state, lock] = await Promise.all([context.store.read(target), context.store.lockStatus(target)]);
  const release = currentRelease(state);
  const activeRollout = state.rollouts.findLast((r) => r.status === "running");
  if (!providerName) return { target, release, instances: [], proxies: [], drift: [], progress: [], activeRollout, lock };
  const ctx = context.providerContext(options.signal, context.emitterFor(target, options.onEvent));
  const provider = await context.provider(providerName);
  await provider.ping(ctx);
  const [instances, proxies] = await Promise.all([provider.instances.list({ target }, ctx), provider.traffic?.listProxies?.(target, ctx) ?? Promise.resolve([])]);
  // A rollout whose holder lives is moving the target between two releases: its new and old
  // instances are its progress, not drift. An interrupted one (no lock, or a stale one) moves
  // nothing: what it left is drift until a deploy finishes or undoes it.
  // A running gc moves no instance: it holds the lock, and drift is drift.
  const moving = activeRollout && activeRollout.kind !== "gc" && lock && !lock.stale ? activeRollout : undefined;
  if (moving) {
    const { progress, drift } = describeRolloutProgress(moving, state.releases.find((r) => r.number === moving.toRelease), instances);
    return { target, release, instances, proxies, drift, progress, activeRollout, lock };
  }
  const drift = [...describeDrift(release, instances), ...(provider.traffic?.listProxies ? describeProxyDrift(release, proxies) : [])];
  return { target, release, instances, proxies, drift, progress: [], activeRollout, lock };
}

/**
 * A running rollout's progress, one line per release it moves between (how many instances of the
 * new release run, of how many; how many of the old one still run), and as drift only the instances
 * that belong to neither.
 */
function describeRolloutProgress(
  rollout: RolloutRecord,
  toRelease: ReleaseRecord | undefined,
  instances: readonly Instance[],
): { progress: string[]; drift: string[] } {
  const running = (release: number | undefined) => instances.filter((i) => i.release === release && i.state === "running").length;
  const progress = [
    `rollout ${rollout.id} (${rollout.kind}) to release ${rollout.toRelease}: ${running(rollout.toRelease)}${toRelease ? ` of ${toRelease.count}` : ""} new instance(s) running`,
  ];
  if (rollout.fromRelease !== undefined) progress.push(`release ${rollout.fromRelease}: ${running(rollout.fromRelease)} instance(s) still running, retired as the rollout goes`);
  const foreign = instances.filter((i) => i.release !== rollout.toRelease && i.release !== rollout.fromRelease);
  return { progress, drift: foreign.length > 0 ? [`${foreign.length} instance(s) belong to neither release of the rollout: ${foreign.map((i) => i.name).join(", ")}`] : [] };
}

/** `Kiln.history`: every release and rollout of the target, newest first; never the secret digest key. */
export async function history(context: OperationContext, options: TargetOptions): Promise<TargetState> {
  const { target } = await context.targetOf(options);
  // The key of the secret digests stays in the store: with it, a digest could be checked against guesses.
  const { secretDigestKey: _key, ...state } = await context.store.read(target);
  return { ...state, releases: [...state.releases].reverse(), rollouts: [...state.rollouts].reverse() };
}

/** `Kiln.lockStatus`: the target's lock, undefined when free. */
export async function lockStatus(context: OperationContext, options: TargetOptions): Promise<LeaseStatus | undefined> {
  const { target } = await context.targetOf(options);
  return context.store.lockStatus(target);
}

/** `Kiln.forceReleaseLock`: clears the target's lock whoever holds it (logged as a warning). */
export async function forceReleaseLock(context: OperationContext, options: TargetOptions): Promise<LeaseStatus | undefined> {
  const { target } = await context.targetOf(options);
  const cleared = await context.store.forceRelease(target);
  if (cleared) context.logger.warn("released the rollout lock by force", { target: formatTarget(target), holder: cleared.holder, token: cleared.token });
  return cleared;
}

/** The differences between what runs and `release` (missing, extra or foreign instances, another image), one line each. */
function describeDrift(release: ReleaseRecord | undefined, instances: readonly Instance[]): string[] {
  if (!release) return instances.length > 0 ? [`${instances.length} instance(s) run, but no release succeeded yet`] : [];
  const drift: string[] = [];
  const ofRelease = instances.filter((i) => i.release === release.number && i.state === "running");
  if (ofRelease.length < release.count) drift.push(`${release.count - ofRelease.length} of ${release.count} instance(s) of release ${release.number} are missing or not running`);
  if (ofRelease.length > release.count) drift.push(`${ofRelease.length - release.count} instance(s) of release ${release.number} more than its count`);
  const foreign = instances.filter((i) => i.release !== release.number);
  if (foreign.length > 0) drift.push(`${foreign.length} instance(s) belong to another release: ${foreign.map((i) => i.name).join(", ")}`);
  const wrongImage = ofRelease.filter((i) => i.imageId !== release.image.id);
  if (wrongImage.length > 0) drift.push(`${wrongImage.length} instance(s) run another image than release ${release.number}'s`);
  return drift;
}

/**
 * The differences between the target's front proxies and `release`'s `traffic.proxy`: a proxy it
 * does not declare (left by a release that had one), one missing or not running, or one publishing
 * another address, one line each.
 */
function describeProxyDrift(release: ReleaseRecord | undefined, proxies: readonly ProxyStatus[]): string[] {
  const declared = release?.traffic?.proxy;
  const named = (proxy: ProxyStatus) => `${proxy.name}${proxy.address ? ` (${proxy.address})` : ""}`;
  if (!declared) {
    if (proxies.length === 0) return [];
    const why = release ? `release ${release.number} has no traffic.proxy` : "no release succeeded yet";
    return [`front proxy ${proxies.map(named).join(", ")} runs, but ${why}: the next rollout of a release without traffic.proxy retires it`];
  }
  const address = `${declared.host}:${declared.port}`;
  const serving = proxies.filter((proxy) => proxy.state === "running");
  if (serving.length === 0) return [proxies.length === 0 ? `the front proxy at ${address} of release ${release.number} is missing` : `the front proxy ${proxies.map(named).join(", ")} is not running`];
  const elsewhere = proxies.filter((proxy) => proxy.address !== undefined && proxy.address !== address);
  return elsewhere.length > 0 ? [`front proxy ${elsewhere.map(named).join(", ")} does not publish release ${release.number}'s address ${address}`] : [];
}
