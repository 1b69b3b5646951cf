import { describe, expect, it } from "vitest";
import { nextRollingBatch, planRollingBatches } from "./batches.js";

/** Replays batches and returns the fewest healthy and the most running instances seen. */
function simulate(options: { count: number; maxSurge: number; maxUnavailable: number; oldAlive: number; keep: number }) {
  let old = options.oldAlive;
  let healthy = options.keep;
  let lowest = old + healthy;
  let highest = old + healthy;
  for (const batch of planRollingBatches(options)) {
    old -= batch.retire;
    lowest = Math.min(lowest, old + healthy);
    highest = Math.max(highest, old + healthy + batch.launch);
    healthy += batch.launch;
  }
  return { lowest, highest, old, healthy };
}

describe("planRollingBatches", () => {
  it("replaces 3 instances one at a time with surge 1, unavailable 0", () => {
    expect(planRollingBatches({ count: 3, maxSurge: 1, maxUnavailable: 0, oldAlive: 3, keep: 0 })).toEqual([
      { retire: 0, launch: 1 },
      { retire: 1, launch: 1 },
      { retire: 1, launch: 1 },
      { retire: 1, launch: 0 },
    ]);
  });

  it("replaces a single instance surge-first", () => {
    expect(planRollingBatches({ count: 1, maxSurge: 1, maxUnavailable: 0, oldAlive: 1, keep: 0 })).toEqual([
      { retire: 0, launch: 1 },
      { retire: 1, launch: 0 },
    ]);
  });

  it("retires first when only maxUnavailable allows progress", () => {
    expect(planRollingBatches({ count: 2, maxSurge: 0, maxUnavailable: 1, oldAlive: 2, keep: 0 })).toEqual([
      { retire: 1, launch: 1 },
      { retire: 1, launch: 1 },
    ]);
  });

  it("launches everything at once when the surge allows it", () => {
    expect(planRollingBatches({ count: 3, maxSurge: 3, maxUnavailable: 0, oldAlive: 3, keep: 0 })).toEqual([
      { retire: 0, launch: 3 },
      { retire: 3, launch: 0 },
    ]);
  });

  it("plans every batch of the largest fleet a spec allows, one at a time (10,001 batches): no old instance is left", () => {
    const batches = planRollingBatches({ count: 10_000, maxSurge: 1, maxUnavailable: 0, oldAlive: 10_000, keep: 0 });
    expect(batches).toHaveLength(10_001);
    expect(simulate({ count: 10_000, maxSurge: 1, maxUnavailable: 0, oldAlive: 10_000, keep: 0 })).toMatchObject({ old: 0, healthy: 10_000, lowest: 10_000, highest: 10_001 });
  });

  it("launches every instance at once on a first deploy (nothing serves yet)", () => {
    expect(planRollingBatches({ count: 2, maxSurge: 1, maxUnavailable: 0, oldAlive: 0, keep: 0 })).toEqual([{ retire: 0, launch: 2 }]);
  });

  it.each([
    [5, 1, 0],
    [5, 2, 1],
    [10, 3, 2],
    [7, 0, 3],
    [4, 4, 4],
    [1, 0, 1],
  ])("count %i, surge %i, unavailable %i: keeps capacity within bounds and ends with all new", (count, maxSurge, maxUnavailable) => {
    const result = simulate({ count, maxSurge, maxUnavailable, oldAlive: count, keep: 0 });
    expect(result.lowest).toBeGreaterThanOrEqual(count - maxUnavailable);
    expect(result.highest).toBeLessThanOrEqual(count + maxSurge);
    expect(result).toMatchObject({ old: 0, healthy: count });
  });

  it("retires surplus old instances", () => {
    const result = simulate({ count: 2, maxSurge: 1, maxUnavailable: 0, oldAlive: 5, keep: 0 });
    expect(result).toMatchObject({ old: 0, healthy: 2 });
  });

  it("makes no progress when surge and unavailable are both 0", () => {
    expect(nextRollingBatch({ count: 3, maxSurge: 0, maxUnavailable: 0, oldAlive: 3, newHealthy: 0, toLaunch: 3 })).toBeUndefined();
  });
});
