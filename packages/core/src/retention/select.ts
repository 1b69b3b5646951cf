/**
 * Retention: which images a garbage collection removes and which it keeps, as pure functions of
 * the service's state, its images and its instances (plan is pure; `collectGarbage` applies it).
 * @module
 */
import { KilnError } from "../errors.js";
import type { ImageRef, Instance } from "../provider/contract.js";
import type { ReleaseRecord, TargetState } from "../state/types.js";
import { formatTarget, type Target } from "../target.js";

/** How many releases per target a collection keeps when none is given (Kamal's `retain_containers` default). */
export const DEFAULT_RETENTION_KEEP = 5;

/** A release that references an image, as listings and plans name it. */
export interface ImageReleaseRef {
  readonly environment: string;
  readonly release: number;
  readonly status: ReleaseRecord["status"];
  /** Whether it is the environment's current release (the one serving). */
  readonly current: boolean;
}

/** An instance that runs an image now. */
export interface ImageInstanceRef {
  readonly environment: string;
  readonly id: string;
  readonly name: string;
}

/** One image of a service, with who uses it: what `listImages` returns. */
export interface ImageUsage {
  /** The provider that holds the image. */
  readonly provider: string;
  readonly image: ImageRef;
  /** Every release, of any environment of the service, whose image this is (by fingerprint or id), newest first. */
  readonly releases: readonly ImageReleaseRef[];
  /** The environments those releases belong to, sorted. */
  readonly environments: readonly string[];
  /** The instances that run the image now, in any environment. */
  readonly instances: readonly ImageInstanceRef[];
  /** Whether an instance runs it now (`instances` is not empty). */
  readonly inUse: boolean;
}

/** What {@link planCollection} needs: everything is read before, nothing is read during. */
export interface CollectionInput {
  /** The target whose history is trimmed (`service@environment`). */
  readonly target: Target;
  /** The provider that holds `images`. */
  readonly provider: string;
  /** Releases kept per target: the current release and the `keep - 1` successful releases before it. A whole number of 1 or more. */
  readonly keep: number;
  /** Only images created at least this long ago (milliseconds) may go; undefined: any age. */
  readonly olderThanMs?: number;
  /** The time the age is measured from (milliseconds since the epoch). */
  readonly now: number;
  /** Every image of the service that `provider` holds (`images.list`). */
  readonly images: readonly ImageRef[];
  /** The state of every target of the service, `target` included. */
  readonly states: readonly TargetState[];
  /** Every instance of every target of the service that runs on `provider` (one `instances.list` per target). */
  readonly instances: readonly Instance[];
  /**
   * The windows of the service's other environments, by environment name: the `retention.keep`
   * their spec declares. An environment absent here keeps every release it has. @defaultValue none
   */
  readonly otherWindows?: Readonly<Record<string, number>>;
}

/** An image a collection keeps, and why. */
export interface KeptImage {
  readonly image: ImageRef;
  /** Why, in words (`runs on web-default-r3-1`, `release 4 of web@default is in the window of 2`). */
  readonly reasons: readonly string[];
}

/** What a garbage collection removes and keeps; pure data. */
export interface CollectionPlan {
  readonly target: Target;
  readonly provider: string;
  readonly keep: number;
  readonly olderThanMs: number | undefined;
  /** The numbers of the target's releases in its retention window, newest first. */
  readonly retainedReleases: readonly number[];
  /** The images to remove, oldest first, with who referenced them (releases outside every window). */
  readonly remove: readonly ImageUsage[];
  /** The images kept, with the reasons. */
  readonly kept: readonly KeptImage[];
  /** Bytes the removals free, summed over the images whose size the provider knows. */
  readonly reclaimableBytes: number;
}

/**
 * Checks a retention's `keep` and `olderThanMs`.
 * @throws KilnError INVALID_ARGUMENT when `keep` is not a whole number of 1 or more, or `olderThanMs` is negative
 */
export function assertRetention(keep: number, olderThanMs: number | undefined): void {
  if (!Number.isInteger(keep) || keep < 1) {
    throw new KilnError("INVALID_ARGUMENT", `keep must be a whole number of 1 or more (the current release counts as one), not ${String(keep)}.`);
  }
  if (olderThanMs !== undefined && (!Number.isFinite(olderThanMs) || olderThanMs < 0)) {
    throw new KilnError("INVALID_ARGUMENT", `olderThanMs must be 0 or more milliseconds, not ${String(olderThanMs)}.`);
  }
}

/**
 * The releases of a target that its retention window keeps: the current release and the
 * `keep - 1` newest successful releases numbered before it (the ones a rollback can go to), plus
 * every `pending` release (an unfinished rollout may still be resumed to it). Failed releases and
 * releases newer than the current one (a later deploy that failed) are outside the window. A
 * target that never succeeded keeps only its pending releases.
 * @param keep - a whole number of 1 or more
 * @returns the retained releases, newest first
 */
export function retainedReleases(state: TargetState, keep: number): ReleaseRecord[] {
  const current = state.releases.find((release) => release.number === state.currentRelease);
  const earlier = current
    ? state.releases.filter((release) => release.status === "succeeded" && release.number < current.number).sort((a, b) => b.number - a.number).slice(0, keep - 1)
    : [];
  const pending = state.releases.filter((release) => release.status === "pending");
  const kept = new Map<number, ReleaseRecord>();
  for (const release of [...(current ? [current] : []), ...earlier, ...pending]) kept.set(release.number, release);
  return [...kept.values()].sort((a, b) => b.number - a.number);
}

/**
 * Who uses each image: the releases of every environment that reference it (by fingerprint, as
 * `find` and rollback look images up, or by id) and the instances that run it (by image id).
 * @param images - the images of one provider
 */
export function imageUsage(provider: string, images: readonly ImageRef[], states: readonly TargetState[], instances: readonly Instance[]): ImageUsage[] {
  return images.map((image) => {
    const releases: ImageReleaseRef[] = [];
    for (const state of states) {
      for (const release of state.releases) {
        if (!references(release, image)) continue;
        releases.push({ environment: state.target.environment, release: release.number, status: release.status, current: release.number === state.currentRelease });
      }
    }
    releases.sort((a, b) => a.environment.localeCompare(b.environment) || b.release - a.release);
    const running = instances
      .filter((instance) => instance.imageId === image.id)
      .map((instance) => ({ environment: instance.target.environment, id: instance.id, name: instance.name }));
    return { provider, image, releases, environments: [...new Set(releases.map((ref) => ref.environment))].sort(), instances: running, inUse: running.length > 0 };
  });
}

/**
 * Plans a garbage collection of one target: which of the service's images go. An image is kept
 * when any of these holds, and removed otherwise:
 *
 * - an instance of any environment runs it;
 * - a release in the target's retention window ({@link retainedReleases}) references it;
 * - a release of another environment of the service references it, within that environment's
 *   own window when `otherWindows` gives one (its spec's `retention.keep`), else any release of
 *   it: a collection of one environment never takes what another may roll back to;
 * - `olderThanMs` is given and the image is younger, or its creation time is unknown.
 *
 * So what goes is an image referenced only by releases of this target outside its window, or by
 * no release at all (a build never deployed, the image of a deploy that failed before recording
 * its release). Pure: it reads nothing and changes nothing.
 * @throws KilnError INVALID_ARGUMENT (see {@link assertRetention})
 */
export function planCollection(input: CollectionInput): CollectionPlan {
  assertRetention(input.keep, input.olderThanMs);
  const own = input.states.find((state) => sameTarget(state.target, input.target));
  const window = own ? retainedReleases(own, input.keep) : [];
  const windowNumbers = new Set(window.map((release) => release.number));
  const otherRetained = new Map<string, ReadonlySet<number>>();
  for (const state of input.states) {
    const keep = input.otherWindows?.[state.target.environment];
    if (state.target.environment === input.target.environment || keep === undefined) continue;
    otherRetained.set(state.target.environment, new Set(retainedReleases(state, keep).map((release) => release.number)));
  }
  const remove: ImageUsage[] = [];
  const kept: KeptImage[] = [];
  for (const usage of imageUsage(input.provider, input.images, input.states, input.instances)) {
    const reasons: string[] = [];
    for (const instance of usage.instances) reasons.push(`instance ${instance.name} of ${input.target.service}@${instance.environment} runs it`);
    for (const ref of usage.releases) {
      if (ref.environment === input.target.environment) {
        if (windowNumbers.has(ref.release)) reasons.push(`release ${ref.release} of ${formatTarget(input.target)} is in its window of ${input.keep}`);
      } else {
        const retained = otherRetained.get(ref.environment);
        if (!retained) reasons.push(`release ${ref.release} of ${input.target.service}@${ref.environment} references it (another environment, whose spec sets no retention: all its releases are kept)`);
        else if (retained.has(ref.release)) reasons.push(`release ${ref.release} of ${input.target.service}@${ref.environment} is in that environment's window of ${input.otherWindows![ref.environment]}`);
      }
    }
    if (input.olderThanMs !== undefined) {
      const created = usage.image.createdAt === undefined ? Number.NaN : Date.parse(usage.image.createdAt);
      if (Number.isNaN(created)) reasons.push("its creation time is unknown, so it is not known to be older than the limit");
      else if (input.now - created < input.olderThanMs) reasons.push(`it is younger than ${Math.round(input.olderThanMs / 1000)} s`);
    }
    if (reasons.length > 0) kept.push({ image: usage.image, reasons });
    else remove.push(usage);
  }
  remove.sort((a, b) => (a.image.createdAt ?? "").localeCompare(b.image.createdAt ?? "") || a.image.id.localeCompare(b.image.id));
  return {
    target: input.target,
    provider: input.provider,
    keep: input.keep,
    olderThanMs: input.olderThanMs,
    retainedReleases: window.map((release) => release.number),
    remove,
    kept,
    reclaimableBytes: remove.reduce((sum, usage) => sum + (usage.image.sizeBytes ?? 0), 0),
  };
}

function references(release: ReleaseRecord, image: ImageRef): boolean {
  return release.fingerprint === image.fingerprint || release.image.id === image.id;
}

function sameTarget(a: Target, b: Target): boolean {
  return a.service === b.service && a.environment === b.environment;
}
