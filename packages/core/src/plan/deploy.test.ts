import { describe, expect, it } from "vitest";
import { formatPlan, planDeploy, releaseConfigHash } from "./index.js";
import type { ImageRef, Instance } from "../provider/contract.js";
import type { ResolvedTarget } from "../spec/resolve.js";
import { emptyTargetState, type ReleaseRecord, type TargetState } from "../state/types.js";

const target = { service: "web", environment: "default" };
const fingerprint = `sha256:${"a".repeat(64)}`;
const image: ImageRef = { id: "sha256:img1", fingerprint, digest: "sha256:img1", names: ["kiln/web:aaaaaaaaaaaa"] };

const resolved: ResolvedTarget = {
  target,
  provider: "memory",
  build: { contextDir: "/ctx", dockerfilePath: "/ctx/Dockerfile", args: {} },
  count: 2,
  instance: { ports: [{ name: "http", port: 8080, protocol: "tcp" }], env: { A: "1" }, labels: {}, stopGracePeriodMs: 1000 },
  health: { intervalMs: 100, timeoutMs: 100, healthyThreshold: 1, unhealthyThreshold: 1, startPeriodMs: 0, stabilityWindowMs: 0, deadlineMs: 1000, deadlineArithmetic: "health.deadlineMs" },
  rollout: { strategy: "rolling", maxSurge: 1, maxUnavailable: 0, pauseBetweenBatchesMs: 0, bakeTimeMs: 0, steps: [], autoRollback: true, order: "start-first" },
  traffic: {},
};

function instance(id: string, release: number, state: Instance["state"] = "running"): Instance {
  return { id, name: `web-${id}`, target, release, rolloutId: "r", imageId: image.id, state, restartCount: 0, endpoints: {}, createdAt: "", labels: {} };
}

function stateWith(release: Partial<ReleaseRecord> & { number: number }): TargetState {
  const record: ReleaseRecord = {
    target,
    provider: "memory",
    createdAt: "",
    fingerprint,
    image,
    count: resolved.count,
    instance: resolved.instance,
    health: resolved.health,
    rollout: resolved.rollout,
    configHash: releaseConfigHash(fingerprint, resolved.count, resolved.instance),
    status: "succeeded",
    ...release,
  };
  return { ...emptyTargetState(target), releases: [record], currentRelease: record.number };
}

describe("planDeploy", () => {
  it("plans a build and a first release on an empty target", () => {
    const plan = planDeploy({ resolved, fingerprint, existingImage: undefined, state: emptyTargetState(target), instances: [] });
    expect(plan.image.action).toBe("build");
    expect(plan.rollout).toMatchObject({ action: "replace", toRelease: 1, newRelease: true, launch: 2, fromRelease: undefined });
    expect(plan.noop).toBe(false);
    expect(formatPlan(plan)).toMatch(/create release 1: 2 instances, launch 2, retire 0/);
  });

  it("is a no-op when the release and its instances match", () => {
    const plan = planDeploy({ resolved, fingerprint, existingImage: image, state: stateWith({ number: 1 }), instances: [instance("a", 1), instance("b", 1)] });
    expect(plan.noop).toBe(true);
    expect(formatPlan(plan)).toMatch(/nothing to do/);
  });

  it("repairs the current release when an instance is missing, without a new release", () => {
    const plan = planDeploy({ resolved, fingerprint, existingImage: image, state: stateWith({ number: 3 }), instances: [instance("a", 3)] });
    expect(plan.rollout).toMatchObject({ action: "replace", toRelease: 3, newRelease: false, launch: 1 });
  });

  it("retires instances of other releases and stopped ones", () => {
    const plan = planDeploy({ resolved, fingerprint, existingImage: image, state: stateWith({ number: 1 }), instances: [instance("a", 1), instance("b", 1, "stopped"), instance("c", 7)] });
    expect(plan.rollout.action).toBe("replace");
    if (plan.rollout.action !== "replace") return;
    expect(plan.rollout.retire.map((i) => i.id).sort()).toEqual(["b", "c"]);
    expect(plan.rollout.keep.map((i) => i.id)).toEqual(["a"]);
  });

  it("does not keep an instance with the right release number but another image", () => {
    const stray = { ...instance("x", 1), imageId: "sha256:other" };
    const plan = planDeploy({ resolved, fingerprint, existingImage: image, state: stateWith({ number: 1 }), instances: [instance("a", 1), stray] });
    expect(plan.rollout).toMatchObject({ action: "replace", newRelease: false, launch: 1 });
    if (plan.rollout.action === "replace") expect(plan.rollout.retire.map((i) => i.id)).toEqual(["x"]);
  });

  it("makes a new release when the instance configuration changes, reusing the image", () => {
    const plan = planDeploy({
      resolved: { ...resolved, instance: { ...resolved.instance, env: { A: "2" } } },
      fingerprint,
      existingImage: image,
      state: stateWith({ number: 4 }),
      instances: [instance("a", 4), instance("b", 4)],
    });
    expect(plan.image.action).toBe("reuse");
    expect(plan.rollout).toMatchObject({ action: "replace", toRelease: 5, newRelease: true, launch: 2 });
  });
});

describe("strategies in plans", () => {
  const running = [instance("a", 1), instance("b", 1)];
  const withRollout = (rollout: Partial<ResolvedTarget["rollout"]>): ResolvedTarget => ({ ...resolved, instance: { ...resolved.instance, env: { A: "2" } }, rollout: { ...resolved.rollout, ...rollout } });

  it("describes a blue-green rollout and its peak of twice the count", () => {
    const plan = planDeploy({ resolved: withRollout({ strategy: "blue-green", bakeTimeMs: 5000 }), fingerprint, existingImage: image, state: stateWith({ number: 1 }), instances: running });
    if (plan.rollout.action !== "replace") throw new Error("expected a replacement");
    expect(plan.rollout.peakInstances).toBe(4);
    expect(plan.rollout.steps.join("\n")).toMatch(/launch 2 instances \(the new set\)[^]*bake 5000 ms[^]*retire the old set/);
  });

  it("describes canary steps surge-first", () => {
    const steps = [{ instances: 1, holdMs: 1000 }, { instances: 2, holdMs: 0 }];
    const plan = planDeploy({ resolved: withRollout({ strategy: "canary", steps }), fingerprint, existingImage: image, state: stateWith({ number: 1 }), instances: running });
    if (plan.rollout.action !== "replace") throw new Error("expected a replacement");
    expect(plan.rollout.steps).toEqual(["canary step: 1 of 2 on the new release (launch 1, retire 1), hold 1000 ms", "canary step: 2 of 2 on the new release (launch 1, retire 1)"]);
    expect(plan.rollout.peakInstances).toBe(3);
  });

  it("refuses a strategy that exceeds the provider's limit, with the reason", () => {
    expect(() =>
      planDeploy({ resolved: withRollout({ strategy: "blue-green" }), fingerprint, existingImage: image, state: stateWith({ number: 1 }), instances: running, limits: { maxInstancesPerTarget: 3 } }),
    ).toThrow(expect.objectContaining({ code: "PLAN_INVALID", message: expect.stringMatching(/4 instances at once, but the provider allows 3/) as string }) as Error);
  });

  it("applies the proxy's slot limit only to targets behind a proxy", () => {
    const limits = { maxInstancesBehindProxy: 3 };
    const blueGreen = withRollout({ strategy: "blue-green" });
    expect(() => planDeploy({ resolved: blueGreen, fingerprint, existingImage: image, state: stateWith({ number: 1 }), instances: running, limits })).not.toThrow();
    const proxied = { ...blueGreen, traffic: { proxy: { host: "127.0.0.1", port: 8080, portName: "http", retries: 2 } } };
    expect(() => planDeploy({ resolved: proxied, fingerprint, existingImage: image, state: stateWith({ number: 1 }), instances: running, limits })).toThrow(
      expect.objectContaining({ code: "PLAN_INVALID" }) as Error,
    );
  });

  it("says a stop-first rollout of one instance has downtime", () => {
    const one = { ...withRollout({ maxSurge: 0, maxUnavailable: 1, order: "stop-first" }), count: 1 };
    const plan = planDeploy({ resolved: one, fingerprint, existingImage: image, state: stateWith({ number: 1 }), instances: [instance("a", 1)] });
    expect(formatPlan(plan)).toMatch(/this rollout has DOWNTIME/);
  });

  it("shows the health gate's deadline arithmetic", () => {
    const plan = planDeploy({ resolved, fingerprint, existingImage: undefined, state: emptyTargetState(target), instances: [] });
    expect(formatPlan(plan)).toMatch(/health gate: running \(no check\), 1 time\(s\) in a row; deadline 1000 ms \(health.deadlineMs\)/);
  });

  it("names the provider's own check in the health gate (EC2 status checks), before the spec's", () => {
    const plan = planDeploy({ resolved, fingerprint, existingImage: undefined, state: emptyTargetState(target), instances: [], providerHealth: "EC2 status checks not impaired" });
    expect(formatPlan(plan)).toMatch(/health gate: EC2 status checks not impaired, 1 time\(s\) in a row/);
    const http = { ...resolved, health: { ...resolved.health, check: { kind: "http" as const, portName: "http", path: "/healthz", expectStatus: [200, 399] as const } } };
    const withCheck = planDeploy({ resolved: http, fingerprint, existingImage: undefined, state: emptyTargetState(target), instances: [], providerHealth: "EC2 status checks not impaired" });
    expect(formatPlan(withCheck)).toMatch(/health gate: EC2 status checks not impaired \+ GET \/healthz on port http answers 200-399/);
  });
});

describe("releaseConfigHash", () => {
  it("ignores key order and changes with any value", () => {
    const a = releaseConfigHash(fingerprint, 2, { ...resolved.instance, env: { A: "1", B: "2" } });
    const b = releaseConfigHash(fingerprint, 2, { ...resolved.instance, env: { B: "2", A: "1" } });
    expect(a).toBe(b);
    expect(releaseConfigHash(fingerprint, 3, resolved.instance)).not.toBe(releaseConfigHash(fingerprint, 2, resolved.instance));
  });

  it("changes when the traffic router is added or changed, and not for a target without one", () => {
    const plain = releaseConfigHash(fingerprint, 2, resolved.instance);
    expect(releaseConfigHash(fingerprint, 2, resolved.instance, {})).toBe(plain);
    const group = (arn: string) => ({ loadBalancer: { aws: { targetGroupArn: arn, portName: "http" } } });
    const withGroup = releaseConfigHash(fingerprint, 2, resolved.instance, group("arn:a"));
    expect(withGroup).not.toBe(plain);
    expect(releaseConfigHash(fingerprint, 2, resolved.instance, group("arn:b"))).not.toBe(withGroup);
  });
});
