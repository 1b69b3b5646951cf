// Snapshots of rollback and recovery programs, and of a plan as `kiln plan` prints it.
import { describe, expect, it } from "vitest";
import { formatPlan } from "./format.js";
import { planDeploy, resumeDeployPlan } from "./deploy.js";
import { planRecovery, recoveryCandidates } from "./recovery.js";
import { planRollback } from "./rollback.js";
import { imageOf, instancesOf, programLines, proxied, releaseOf, resolvedWith, stateOf, summaryOf } from "./test-fixtures.js";
import type { ReplacementPlan } from "./types.js";

describe("planRollback", () => {
  // Release 1 ran 2 instances blue-green; release 2 (rolling, 3 instances) serves now.
  const one = releaseOf(1, resolvedWith(2, { strategy: "blue-green", bakeTimeMs: 1000 }));
  const two = releaseOf(2, resolvedWith(3));
  const state = stateOf([one, two], 2);

  it("rolls release 1's copy out as release 3, with release 1's own strategy and count", () => {
    const plan = planRollback({ state, instances: instancesOf(2, 3), release: one, image: imageOf(1) });
    expect(plan).toMatchObject({ action: "replace", fromRelease: 2, toRelease: 3, newRelease: true, count: 2 });
    expect(programLines(plan)).toMatchInlineSnapshot(`
      [
        "new-set",
        "  {"action":"launch","key":"launch:1","release":3,"count":2}",
        "  {"action":"wait-until-healthy","launch":"launch:1"}",
        "bake",
        "  {"action":"hold","reason":"bake","durationMs":1000}",
        "retire-old-set",
        "  {"action":"retire","instances":["v2-a","v2-b","v2-c"],"drain":false,"gracePeriodMs":2000,"minServing":2}",
      ]
    `);
    expect(summaryOf(plan)).toMatchInlineSnapshot(`
      {
        "keep": [],
        "launch": 2,
        "peakInstances": 5,
        "retire": [
          "v2-a",
          "v2-b",
          "v2-c",
        ],
        "steps": [
          "blue-green: launch 2 instances (the new set) beside the 3 instances serving, wait until all are healthy",
          "bake 1000 ms with the old set still running (a failure now is undone at once)",
          "retire the old set (3 instances)",
        ],
      }
    `);
  });

  it("does nothing when what it goes back to already serves, intact; runs when recovering an interrupted rollout", () => {
    const intact = planRollback({ state, instances: instancesOf(2, 3), release: two, image: imageOf(2) });
    expect(intact).toEqual({ action: "none", reason: "release 2 already serves (as release 2): nothing to roll back" });
    const recovering = planRollback({ state, instances: instancesOf(2, 3), release: two, image: imageOf(2), recovering: true });
    expect(recovering).toMatchObject({ action: "replace", toRelease: 3, launch: 3 });
  });
});

describe("planRecovery", () => {
  // Release 1 (3 instances) served; the rollout to release 2 died after its second launch:
  // release 1 has 1 instance left, release 2 has 2 running.
  const resolved = resolvedWith(3, {}, proxied);
  const one = releaseOf(1, resolved);
  const two = releaseOf(2, resolved, { status: "pending" });
  const left = [...instancesOf(1, 3).slice(2), ...instancesOf(2, 2)];

  it("resumes the interrupted release: adopts its healthy instances, routes them, launches the rest", () => {
    expect(recoveryCandidates(two, left).map((i) => i.id)).toEqual(["v2-a", "v2-b"]);
    const plan = planRecovery({ current: one, instances: left, release: two });
    expect(plan).toMatchObject({ action: "replace", fromRelease: 1, toRelease: 2, newRelease: true });
    expect(programLines(plan)).toMatchInlineSnapshot(`
      [
        "route-kept",
        "  {"action":"register","instances":{"ids":["v2-a","v2-b"],"launches":[]}}",
        "batch 1",
        "  {"action":"launch","key":"launch:1","release":2,"count":1}",
        "  {"action":"wait-until-healthy","launch":"launch:1"}",
        "  {"action":"register","instances":{"ids":[],"launches":["launch:1"]}}",
        "batch 2",
        "  {"action":"retire","instances":["v1-c"],"drain":true,"gracePeriodMs":2000,"minServing":3}",
      ]
    `);
    expect(summaryOf(plan)).toMatchInlineSnapshot(`
      {
        "keep": [
          "v2-a",
          "v2-b",
        ],
        "launch": 1,
        "peakInstances": 4,
        "retire": [
          "v1-c",
        ],
        "steps": [
          "rolling: maxSurge 1, maxUnavailable 0 (never fewer than 3 healthy, never more than 4 running)",
          "batch 1: launch 1 and wait until healthy",
          "batch 2: retire 1",
        ],
      }
    `);
  });

  it("replaces adopted instances that failed their check: retired first, fresh ones launched", () => {
    const plan = planRecovery({ current: one, instances: left, release: two, unhealthy: ["v2-a", "v2-b"] });
    expect(programLines(plan)).toMatchInlineSnapshot(`
      [
        "batch 1",
        "  {"action":"launch","key":"launch:1","release":2,"count":1}",
        "  {"action":"wait-until-healthy","launch":"launch:1"}",
        "  {"action":"register","instances":{"ids":[],"launches":["launch:1"]}}",
        "batch 2",
        "  {"action":"retire","instances":["v2-a"],"drain":true,"gracePeriodMs":2000,"minServing":3}",
        "  {"action":"launch","key":"launch:2","release":2,"count":1}",
        "  {"action":"wait-until-healthy","launch":"launch:2"}",
        "  {"action":"register","instances":{"ids":[],"launches":["launch:2"]}}",
        "batch 3",
        "  {"action":"retire","instances":["v2-b"],"drain":true,"gracePeriodMs":2000,"minServing":3}",
        "  {"action":"launch","key":"launch:3","release":2,"count":1}",
        "  {"action":"wait-until-healthy","launch":"launch:3"}",
        "  {"action":"register","instances":{"ids":[],"launches":["launch:3"]}}",
        "batch 4",
        "  {"action":"retire","instances":["v1-c"],"drain":true,"gracePeriodMs":2000,"minServing":3}",
      ]
    `);
    expect(summaryOf(plan)).toMatchInlineSnapshot(`
      {
        "keep": [],
        "launch": 3,
        "peakInstances": 4,
        "retire": [
          "v2-a",
          "v2-b",
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

  it("still runs when every instance is in place, to record the pending release's success", () => {
    const plan = planRecovery({ current: one, instances: instancesOf(2, 3), release: two });
    expect(programLines(plan)).toMatchInlineSnapshot(`
      [
        "route-kept",
        "  {"action":"register","instances":{"ids":["v2-a","v2-b","v2-c"],"launches":[]}}",
      ]
    `);
  });

  it("repairs the current release when the interrupted rollout is aborted; nothing when it is intact", () => {
    const plan = planRecovery({ current: one, instances: left, release: one });
    expect(plan).toMatchObject({ action: "replace", toRelease: 1, newRelease: false });
    expect(programLines(plan)).toMatchInlineSnapshot(`
      [
        "route-kept",
        "  {"action":"register","instances":{"ids":["v1-c"],"launches":[]}}",
        "batch 1",
        "  {"action":"launch","key":"launch:1","release":1,"count":1}",
        "  {"action":"wait-until-healthy","launch":"launch:1"}",
        "  {"action":"register","instances":{"ids":[],"launches":["launch:1"]}}",
        "batch 2",
        "  {"action":"retire","instances":["v2-a"],"drain":true,"gracePeriodMs":2000,"minServing":3}",
        "  {"action":"launch","key":"launch:2","release":1,"count":1}",
        "  {"action":"wait-until-healthy","launch":"launch:2"}",
        "  {"action":"register","instances":{"ids":[],"launches":["launch:2"]}}",
        "batch 3",
        "  {"action":"retire","instances":["v2-b"],"drain":true,"gracePeriodMs":2000,"minServing":3}",
      ]
    `);
    expect(planRecovery({ current: one, instances: instancesOf(1, 3), release: one })).toMatchObject({ action: "none" });
  });

  it("prints a deploy that resumes the interrupted release", () => {
    const planned = planDeploy({ resolved, fingerprint: imageOf(2).fingerprint, existingImage: imageOf(2), state: stateOf([one, two], 1), instances: left });
    const resumed = resumeDeployPlan(planned, { rolloutId: "20260101000000-deadbeef", rollout: planRecovery({ current: one, instances: left, release: two }) as ReplacementPlan });
    expect(formatPlan(resumed)).toMatchInlineSnapshot(`
      "Plan for web@default:
        reuse image 222222222222 (sha256:image-2)
        resume release 2 (rollout 20260101000000-deadbeef was interrupted): 3 instances, launch 1, retire 1, keep 2
          rolling: maxSurge 1, maxUnavailable 0 (never fewer than 3 healthy, never more than 4 running)
          batch 1: launch 1 and wait until healthy
          batch 2: retire 1"
    `);
  });
});

describe("formatPlan", () => {
  it("prints a rolling deploy behind a proxy as `kiln plan` shows it", () => {
    const resolved = resolvedWith(3, { maxSurge: 2 }, proxied);
    const plan = planDeploy({ resolved, fingerprint: imageOf(2).fingerprint, existingImage: undefined, state: stateOf([releaseOf(1, resolved)], 1), instances: instancesOf(1, 3) });
    expect(formatPlan(plan)).toMatchInlineSnapshot(`
      "Plan for web@default:
        build image 222222222222 (web has no image with this fingerprint yet)
        create release 2 (new image): 3 instances, launch 3, retire 3, keep 0
          rolling: maxSurge 2, maxUnavailable 0 (never fewer than 3 healthy, never more than 5 running)
          batch 1: launch 2 and wait until healthy
          batch 2: retire 2, then launch 1 and wait until healthy
          batch 3: retire 1
          at most 5 instances run at once
          health gate: running (no check), 1 time(s) in a row; deadline 1000 ms (health.deadlineMs)
          traffic: front proxy at 127.0.0.1:18080 → port http; new instances join after their gate, old ones are drained before they stop"
    `);
  });
});
