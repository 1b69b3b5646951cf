import { describe, expect, it } from "vitest";
import type { ImageRef, Instance } from "../provider/contract.js";
import type { ReleaseRecord, ReleaseStatus, TargetState } from "../state/types.js";
import type { Target } from "../target.js";
import { planCollection, retainedReleases } from "./select.js";

const DAY_MS = 86_400_000;
const now = Date.parse("2026-12-07T00:00:00Z");

function image(n: number, ageDays = 10): ImageRef {
  return { id: `img-${n}`, fingerprint: `sha256:${String(n).padStart(64, "0")}`, digest: `img-${n}`, names: [`web:${n}`], createdAt: new Date(now - ageDays * DAY_MS).toISOString(), sizeBytes: 1000 * n };
}

function release(target: Target, number: number, imageNumber: number, status: ReleaseStatus = "succeeded"): ReleaseRecord {
  const ref = image(imageNumber);
  return { number, target, provider: "memory", createdAt: ref.createdAt!, fingerprint: ref.fingerprint, image: ref, status } as unknown as ReleaseRecord;
}

function state(target: Target, releases: ReleaseRecord[], current: number | undefined): TargetState {
  return { target, releases, rollouts: [], currentRelease: current };
}

function instance(target: Target, imageNumber: number): Instance {
  return { id: `i-${target.environment}-${imageNumber}`, name: `web-${target.environment}-${imageNumber}`, target, release: undefined, rolloutId: undefined, imageId: `img-${imageNumber}`, state: "running", restartCount: 0, endpoints: {}, createdAt: "", labels: {} };
}

const staging = { service: "web", environment: "staging" };
const prod = { service: "web", environment: "prod" };

/** Releases 1..n of a target, release k on image k, the last one current. */
function history(target: Target, n: number, offset = 0): TargetState {
  const releases = Array.from({ length: n }, (_, index) => release(target, index + 1, index + 1 + offset));
  return state(target, releases, n);
}

const ids = (images: readonly { image: ImageRef }[]) => images.map((each) => each.image.id).sort();

describe("retainedReleases", () => {
  it("keeps the current release and the keep-1 successful releases before it, skipping failed ones and keeping pending ones", () => {
    const releases = [release(staging, 1, 1), release(staging, 2, 2), release(staging, 3, 3, "failed"), release(staging, 4, 4), release(staging, 5, 5, "failed"), release(staging, 6, 6, "pending")];
    const kept = retainedReleases(state(staging, releases, 4), 2);
    expect(kept.map((r) => r.number)).toEqual([6, 4, 2]);
    expect(retainedReleases(state(staging, releases, 4), 1).map((r) => r.number)).toEqual([6, 4]);
  });

  it("keeps only pending releases of a target that never succeeded", () => {
    expect(retainedReleases(state(staging, [release(staging, 1, 1, "failed")], undefined), 3)).toEqual([]);
  });
});

describe("planCollection", () => {
  it("removes the images of releases outside the window, oldest first, and keeps the window's", () => {
    const plan = planCollection({ target: staging, provider: "memory", keep: 2, now, images: [1, 2, 3, 4].map((n) => image(n, 10 - n)), states: [history(staging, 4)], instances: [] });
    expect(plan.retainedReleases).toEqual([4, 3]);
    expect(plan.remove.map((usage) => usage.image.id)).toEqual(["img-1", "img-2"]);
    expect(ids(plan.kept)).toEqual(["img-3", "img-4"]);
    expect(plan.reclaimableBytes).toBe(3000);
  });

  it("never removes an image an instance runs, whatever its release", () => {
    const plan = planCollection({ target: staging, provider: "memory", keep: 1, now, images: [1, 2, 3].map((n) => image(n)), states: [history(staging, 3)], instances: [instance(staging, 1)] });
    expect(ids(plan.remove)).toEqual(["img-2"]);
    expect(plan.kept.find((kept) => kept.image.id === "img-1")?.reasons.join()).toMatch(/runs it/);
  });

  it("with older-than, keeps images younger than the limit and images of unknown age", () => {
    const images = [image(1, 30), image(2, 3), { ...image(3), createdAt: undefined }, image(4, 1)];
    const plan = planCollection({ target: staging, provider: "memory", keep: 1, olderThanMs: 7 * DAY_MS, now, images, states: [history(staging, 4)], instances: [] });
    expect(ids(plan.remove)).toEqual(["img-1"]);
    expect(plan.kept.find((kept) => kept.image.id === "img-3")?.reasons.join()).toMatch(/unknown/);
  });

  it("two environments: a collection of one keeps every image the other's releases reference, and the other's window stands", () => {
    // staging ran images 1..4; prod ran images 2 and 5 (release 1 on image 2, release 2 on image 5).
    const prodState = state(prod, [release(prod, 1, 2), release(prod, 2, 5)], 2);
    const images = [1, 2, 3, 4, 5].map((n) => image(n));
    const ofStaging = planCollection({ target: staging, provider: "memory", keep: 1, now, images, states: [history(staging, 4), prodState], instances: [] });
    expect(ids(ofStaging.remove)).toEqual(["img-1", "img-3"]);
    expect(ofStaging.kept.find((kept) => kept.image.id === "img-2")?.reasons.join()).toMatch(/web@prod/);
    const ofProd = planCollection({ target: prod, provider: "memory", keep: 1, now, images, states: [history(staging, 4), prodState], instances: [] });
    expect(ids(ofProd.remove)).toEqual([]);
  });

  it("two environments: another environment's declared window (its spec's retention.keep) lets a shared old image go", () => {
    const prodState = state(prod, [release(prod, 1, 2), release(prod, 2, 5)], 2);
    const images = [1, 2, 3, 4, 5].map((n) => image(n));
    const plan = planCollection({ target: staging, provider: "memory", keep: 1, now, images, states: [history(staging, 4), prodState], instances: [], otherWindows: { prod: 1 } });
    expect(ids(plan.remove)).toEqual(["img-1", "img-2", "img-3"]);
    expect(plan.kept.find((kept) => kept.image.id === "img-5")?.reasons.join()).toMatch(/window of 1/);
    // With a window of 2, prod's release 1 is kept, and its image with it.
    const wider = planCollection({ target: staging, provider: "memory", keep: 1, now, images, states: [history(staging, 4), prodState], instances: [], otherWindows: { prod: 2 } });
    expect(ids(wider.remove)).toEqual(["img-1", "img-3"]);
  });

  it("removes images no release references (a build never deployed)", () => {
    const plan = planCollection({ target: staging, provider: "memory", keep: 5, now, images: [image(1), image(9)], states: [history(staging, 1)], instances: [] });
    expect(ids(plan.remove)).toEqual(["img-9"]);
  });

  it("refuses a keep below 1 or not whole, and a negative older-than", () => {
    const input = { target: staging, provider: "memory", now, images: [], states: [], instances: [] };
    expect(() => planCollection({ ...input, keep: 0 })).toThrow(expect.objectContaining({ code: "INVALID_ARGUMENT" }));
    expect(() => planCollection({ ...input, keep: 1.5 })).toThrow(expect.objectContaining({ code: "INVALID_ARGUMENT" }));
    expect(() => planCollection({ ...input, keep: 1, olderThanMs: -1 })).toThrow(expect.objectContaining({ code: "INVALID_ARGUMENT" }));
  });
});
