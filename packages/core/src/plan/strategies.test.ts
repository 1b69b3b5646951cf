// Snapshots of the programs the planner writes for each strategy: what the rollout engine runs,
// step by step. A change to a snapshot is a change to what deploys do; review it as such.
import { describe, expect, it } from "vitest";
import type { Instance } from "../provider/contract.js";
import type { ResolvedRollout, ResolvedTarget, ResolvedTraffic } from "../spec/resolve.js";
import { planDeploy } from "./deploy.js";
import { imageOf, instancesOf, programLines, proxied, releaseOf, resolvedWith, stateOf, summaryOf } from "./test-fixtures.js";

/** Release 1 (`from` instances, as `running` says) serves; the spec asks for release 2 with `count` and `rollout`. */
function deploy(options: { from: number; count: number; rollout?: Partial<ResolvedRollout>; traffic?: ResolvedTraffic; running?: Instance[] }) {
  const resolved: ResolvedTarget = resolvedWith(options.count, options.rollout, options.traffic);
  const current = releaseOf(1, resolvedWith(options.from, options.rollout, options.traffic));
  return planDeploy({
    resolved,
    fingerprint: imageOf(2).fingerprint,
    existingImage: imageOf(2),
    state: stateOf([current], 1),
    instances: options.running ?? instancesOf(1, options.from),
  });
}

describe("rolling", () => {
  it("start-first, maxSurge 1, maxUnavailable 0: launch one, then retire one, three times", () => {
    const plan = deploy({ from: 3, count: 3 });
    expect(programLines(plan)).toMatchInlineSnapshot(`
      [
        "batch 1",
        "  {"action":"launch","key":"launch:1","release":2,"count":1}",
        "  {"action":"wait-until-healthy","launch":"launch:1"}",
        "batch 2",
        "  {"action":"retire","instances":["v1-a"],"drain":false,"gracePeriodMs":2000,"minServing":3}",
        "  {"action":"launch","key":"launch:2","release":2,"count":1}",
        "  {"action":"wait-until-healthy","launch":"launch:2"}",
        "batch 3",
        "  {"action":"retire","instances":["v1-b"],"drain":false,"gracePeriodMs":2000,"minServing":3}",
        "  {"action":"launch","key":"launch:3","release":2,"count":1}",
        "  {"action":"wait-until-healthy","launch":"launch:3"}",
        "batch 4",
        "  {"action":"retire","instances":["v1-c"],"drain":false,"gracePeriodMs":2000,"minServing":3}",
      ]
    `);
    expect(summaryOf(plan)).toMatchInlineSnapshot(`
      {
        "keep": [],
        "launch": 3,
        "peakInstances": 4,
        "retire": [
          "v1-a",
          "v1-b",
          "v1-c",
        ],
        "steps": [
          "rolling: maxSurge 1, maxUnavailable 0 (never fewer than 3 healthy, never more than 4 running)",
          "batch 1: launch 1 and wait until healthy",
          "batch 2: retire 1, then launch 1 and wait until healthy",
          "batch 3: retire 1, then launch 1 and wait until healthy",
          "batch 4: retire 1",
        ],
      }
    `);
  });

  it("stop-first, maxSurge 0, maxUnavailable 1: retire one before each launch", () => {
    const plan = deploy({ from: 3, count: 3, rollout: { order: "stop-first", maxSurge: 0, maxUnavailable: 1 } });
    expect(programLines(plan)).toMatchInlineSnapshot(`
      [
        "batch 1",
        "  {"action":"retire","instances":["v1-a"],"drain":false,"gracePeriodMs":2000,"minServing":2}",
        "  {"action":"launch","key":"launch:1","release":2,"count":1}",
        "  {"action":"wait-until-healthy","launch":"launch:1"}",
        "batch 2",
        "  {"action":"retire","instances":["v1-b"],"drain":false,"gracePeriodMs":2000,"minServing":2}",
        "  {"action":"launch","key":"launch:2","release":2,"count":1}",
        "  {"action":"wait-until-healthy","launch":"launch:2"}",
        "batch 3",
        "  {"action":"retire","instances":["v1-c"],"drain":false,"gracePeriodMs":2000,"minServing":2}",
        "  {"action":"launch","key":"launch:3","release":2,"count":1}",
        "  {"action":"wait-until-healthy","launch":"launch:3"}",
      ]
    `);
    expect(plan.rollout.action === "replace" && plan.rollout.steps[0]).toMatchInlineSnapshot(`"rolling stop-first: maxSurge 0, maxUnavailable 1 (never fewer than 2 healthy, never more than 3 running)"`);
  });

  it("maxSurge 2, maxUnavailable 1 behind a proxy, with a pause: routes each batch, drains before retiring, pauses between batches", () => {
    const plan = deploy({ from: 4, count: 4, rollout: { maxSurge: 2, maxUnavailable: 1, pauseBetweenBatchesMs: 500 }, traffic: proxied });
    expect(programLines(plan)).toMatchInlineSnapshot(`
      [
        "batch 1",
        "  {"action":"retire","instances":["v1-a"],"drain":true,"gracePeriodMs":2000,"minServing":3}",
        "  {"action":"launch","key":"launch:1","release":2,"count":3}",
        "  {"action":"wait-until-healthy","launch":"launch:1"}",
        "  {"action":"register","instances":{"ids":[],"launches":["launch:1"]}}",
        "  {"action":"hold","reason":"pause","durationMs":500}",
        "batch 2",
        "  {"action":"retire","instances":["v1-b","v1-c","v1-d"],"drain":true,"gracePeriodMs":2000,"minServing":3}",
        "  {"action":"launch","key":"launch:2","release":2,"count":1}",
        "  {"action":"wait-until-healthy","launch":"launch:2"}",
        "  {"action":"register","instances":{"ids":[],"launches":["launch:2"]}}",
      ]
    `);
    expect(summaryOf(plan)).toMatchInlineSnapshot(`
      {
        "keep": [],
        "launch": 4,
        "peakInstances": 6,
        "retire": [
          "v1-a",
          "v1-b",
          "v1-c",
          "v1-d",
        ],
        "steps": [
          "rolling: maxSurge 2, maxUnavailable 1 (never fewer than 3 healthy, never more than 6 running)",
          "batch 1: retire 1, then launch 3 and wait until healthy, hold 500 ms",
          "batch 2: retire 3, then launch 1 and wait until healthy",
        ],
      }
    `);
  });

  it("count up from 2 to 4: surges to 5 at most, retires the old pair as capacity allows", () => {
    const plan = deploy({ from: 2, count: 4 });
    expect(programLines(plan)).toMatchInlineSnapshot(`
      [
        "batch 1",
        "  {"action":"launch","key":"launch:1","release":2,"count":3}",
        "  {"action":"wait-until-healthy","launch":"launch:1"}",
        "batch 2",
        "  {"action":"retire","instances":["v1-a"],"drain":false,"gracePeriodMs":2000,"minServing":4}",
        "  {"action":"launch","key":"launch:2","release":2,"count":1}",
        "  {"action":"wait-until-healthy","launch":"launch:2"}",
        "batch 3",
        "  {"action":"retire","instances":["v1-b"],"drain":false,"gracePeriodMs":2000,"minServing":4}",
      ]
    `);
    expect(summaryOf(plan)).toMatchInlineSnapshot(`
      {
        "keep": [],
        "launch": 4,
        "peakInstances": 5,
        "retire": [
          "v1-a",
          "v1-b",
        ],
        "steps": [
          "rolling: maxSurge 1, maxUnavailable 0 (never fewer than 4 healthy, never more than 5 running)",
          "batch 1: launch 3 and wait until healthy",
          "batch 2: retire 1, then launch 1 and wait until healthy",
          "batch 3: retire 1",
        ],
      }
    `);
  });

  it("count down from 4 to 2: retires the surplus first, then replaces the rest", () => {
    const plan = deploy({ from: 4, count: 2 });
    expect(programLines(plan)).toMatchInlineSnapshot(`
      [
        "batch 1",
        "  {"action":"retire","instances":["v1-a","v1-b"],"drain":false,"gracePeriodMs":2000,"minServing":2}",
        "  {"action":"launch","key":"launch:1","release":2,"count":1}",
        "  {"action":"wait-until-healthy","launch":"launch:1"}",
        "batch 2",
        "  {"action":"retire","instances":["v1-c"],"drain":false,"gracePeriodMs":2000,"minServing":2}",
        "  {"action":"launch","key":"launch:2","release":2,"count":1}",
        "  {"action":"wait-until-healthy","launch":"launch:2"}",
        "batch 3",
        "  {"action":"retire","instances":["v1-d"],"drain":false,"gracePeriodMs":2000,"minServing":2}",
      ]
    `);
    expect(summaryOf(plan)).toMatchInlineSnapshot(`
      {
        "keep": [],
        "launch": 2,
        "peakInstances": 4,
        "retire": [
          "v1-a",
          "v1-b",
          "v1-c",
          "v1-d",
        ],
        "steps": [
          "rolling: maxSurge 1, maxUnavailable 0 (never fewer than 2 healthy, never more than 3 running)",
          "batch 1: retire 2, then launch 1 and wait until healthy",
          "batch 2: retire 1, then launch 1 and wait until healthy",
          "batch 3: retire 1",
        ],
      }
    `);
  });

  it("a first deploy: one launch of the whole count when maxSurge allows it", () => {
    const resolved = resolvedWith(3, { maxSurge: 3 });
    const plan = planDeploy({ resolved, fingerprint: imageOf(1).fingerprint, existingImage: undefined, state: stateOf([], undefined), instances: [] });
    expect(programLines(plan)).toMatchInlineSnapshot(`
      [
        "batch 1",
        "  {"action":"launch","key":"launch:1","release":1,"count":3}",
        "  {"action":"wait-until-healthy","launch":"launch:1"}",
      ]
    `);
  });

  it("a repair of the current release: removes a stopped instance, routes the kept ones, relaunches the missing one", () => {
    const resolved = resolvedWith(3, {}, proxied);
    const current = releaseOf(1, resolved);
    const [a, b] = instancesOf(1, 2);
    const [, , stopped] = instancesOf(1, 3, "stopped");
    const plan = planDeploy({ resolved, fingerprint: imageOf(1).fingerprint, existingImage: imageOf(1), state: stateOf([current], 1), instances: [a!, b!, stopped!] });
    expect(programLines(plan)).toMatchInlineSnapshot(`
      [
        "remove-stopped",
        "  {"action":"retire","instances":["v1-c"],"drain":true,"gracePeriodMs":2000}",
        "route-kept",
        "  {"action":"register","instances":{"ids":["v1-a","v1-b"],"launches":[]}}",
        "batch 1",
        "  {"action":"launch","key":"launch:1","release":1,"count":1}",
        "  {"action":"wait-until-healthy","launch":"launch:1"}",
        "  {"action":"register","instances":{"ids":[],"launches":["launch:1"]}}",
      ]
    `);
    expect(summaryOf(plan)).toMatchInlineSnapshot(`
      {
        "keep": [
          "v1-a",
          "v1-b",
        ],
        "launch": 1,
        "peakInstances": 3,
        "retire": [
          "v1-c",
        ],
        "steps": [
          "remove 1 stopped instance",
          "rolling: maxSurge 1, maxUnavailable 0 (never fewer than 3 healthy, never more than 4 running)",
          "batch 1: launch 1 and wait until healthy",
        ],
      }
    `);
  });
});

describe("blue-green", () => {
  it("launches the new set, switches traffic, bakes, then retires the old set", () => {
    const plan = deploy({ from: 3, count: 3, rollout: { strategy: "blue-green", bakeTimeMs: 5000 }, traffic: proxied });
    expect(programLines(plan)).toMatchInlineSnapshot(`
      [
        "new-set",
        "  {"action":"launch","key":"launch:1","release":2,"count":3}",
        "  {"action":"wait-until-healthy","launch":"launch:1"}",
        "  {"action":"switch-traffic","register":{"ids":[],"launches":["launch:1"]},"deregister":["v1-a","v1-b","v1-c"],"drainMs":2000}",
        "bake",
        "  {"action":"hold","reason":"bake","durationMs":5000}",
        "retire-old-set",
        "  {"action":"retire","instances":["v1-a","v1-b","v1-c"],"drain":true,"gracePeriodMs":2000,"minServing":3}",
      ]
    `);
    expect(summaryOf(plan)).toMatchInlineSnapshot(`
      {
        "keep": [],
        "launch": 3,
        "peakInstances": 6,
        "retire": [
          "v1-a",
          "v1-b",
          "v1-c",
        ],
        "steps": [
          "blue-green: launch 3 instances (the new set) beside the 3 instances serving, wait until all are healthy",
          "bake 5000 ms with the old set still running (a failure now is undone at once)",
          "retire the old set (3 instances)",
        ],
      }
    `);
  });

  it("without a router there is no switch step; without a bake time no hold", () => {
    const plan = deploy({ from: 2, count: 2, rollout: { strategy: "blue-green" } });
    expect(programLines(plan)).toMatchInlineSnapshot(`
      [
        "new-set",
        "  {"action":"launch","key":"launch:1","release":2,"count":2}",
        "  {"action":"wait-until-healthy","launch":"launch:1"}",
        "retire-old-set",
        "  {"action":"retire","instances":["v1-a","v1-b"],"drain":false,"gracePeriodMs":2000,"minServing":2}",
      ]
    `);
  });
});

describe("canary", () => {
  // As resolved from steps [{ instances: 1, holdMs: 1000 }, { instances: "50%", holdMs: 2000 }]: the last step of `count` is implied.
  const steps = [
    { instances: 1, holdMs: 1000 },
    { instances: 2, holdMs: 2000 },
    { instances: 4, holdMs: 0 },
  ];

  it("grows 1, 2, 4 surge-first, holding each step but the last", () => {
    const plan = deploy({ from: 4, count: 4, rollout: { strategy: "canary", steps } });
    expect(programLines(plan)).toMatchInlineSnapshot(`
      [
        "canary-step 1",
        "  {"action":"launch","key":"launch:1","release":2,"count":1}",
        "  {"action":"wait-until-healthy","launch":"launch:1"}",
        "  {"action":"retire","instances":["v1-a"],"drain":false,"gracePeriodMs":2000,"minServing":4}",
        "  {"action":"hold","reason":"canary-step","durationMs":1000}",
        "canary-step 2",
        "  {"action":"launch","key":"launch:2","release":2,"count":1}",
        "  {"action":"wait-until-healthy","launch":"launch:2"}",
        "  {"action":"retire","instances":["v1-b"],"drain":false,"gracePeriodMs":2000,"minServing":4}",
        "  {"action":"hold","reason":"canary-step","durationMs":2000}",
        "canary-step 3",
        "  {"action":"launch","key":"launch:3","release":2,"count":2}",
        "  {"action":"wait-until-healthy","launch":"launch:3"}",
        "  {"action":"retire","instances":["v1-c","v1-d"],"drain":false,"gracePeriodMs":2000,"minServing":4}",
      ]
    `);
    expect(summaryOf(plan)).toMatchInlineSnapshot(`
      {
        "keep": [],
        "launch": 4,
        "peakInstances": 6,
        "retire": [
          "v1-a",
          "v1-b",
          "v1-c",
          "v1-d",
        ],
        "steps": [
          "canary step: 1 of 4 on the new release (launch 1, retire 1), hold 1000 ms",
          "canary step: 2 of 4 on the new release (launch 1, retire 1), hold 2000 ms",
          "canary step: 4 of 4 on the new release (launch 2, retire 2)",
        ],
      }
    `);
  });

  it("behind a proxy: each step's new instances are routed, each retirement drained", () => {
    const plan = deploy({ from: 2, count: 2, rollout: { strategy: "canary", steps: [{ instances: 1, holdMs: 1000 }, { instances: 2, holdMs: 0 }] }, traffic: proxied });
    expect(programLines(plan)).toMatchInlineSnapshot(`
      [
        "canary-step 1",
        "  {"action":"launch","key":"launch:1","release":2,"count":1}",
        "  {"action":"wait-until-healthy","launch":"launch:1"}",
        "  {"action":"register","instances":{"ids":[],"launches":["launch:1"]}}",
        "  {"action":"retire","instances":["v1-a"],"drain":true,"gracePeriodMs":2000,"minServing":2}",
        "  {"action":"hold","reason":"canary-step","durationMs":1000}",
        "canary-step 2",
        "  {"action":"launch","key":"launch:2","release":2,"count":1}",
        "  {"action":"wait-until-healthy","launch":"launch:2"}",
        "  {"action":"register","instances":{"ids":[],"launches":["launch:2"]}}",
        "  {"action":"retire","instances":["v1-b"],"drain":true,"gracePeriodMs":2000,"minServing":2}",
      ]
    `);
  });
});
