import { afterEach, describe, expect, it, vi } from "vitest";
import { isKilnError, silentLogger, type ImageRef, type LaunchRequest, type ProviderContext } from "@kilnjs/core";
import { instanceCondition, seededRandom } from "./faults.js";
import { createMemoryProvider, type MemoryProvider, type MemoryProviderOptions } from "./memory-provider.js";

const ctx = (signal: AbortSignal = new AbortController().signal): ProviderContext => ({ signal, logger: silentLogger, emit() {} });
const FINGERPRINT = `sha256:${"ab".repeat(32)}`;

async function withImage(options: MemoryProviderOptions = {}): Promise<{ provider: MemoryProvider; image: ImageRef; request: (key: string, count?: number) => LaunchRequest }> {
  const provider = createMemoryProvider(options);
  const image = await provider.images.build(
    {
      target: { service: "web", environment: "test" },
      fingerprint: FINGERPRINT,
      dockerfile: { kind: "dockerfile", contextDir: "/ctx", dockerfilePath: "/ctx/Dockerfile", files: ["Dockerfile"], args: {} },
    },
    ctx(),
  );
  const request = (key: string, count = 1): LaunchRequest => ({
    target: { service: "web", environment: "test" },
    release: 1,
    rolloutId: "ro-1",
    idempotencyKey: key,
    image,
    config: { ports: [{ name: "http", port: 8080, protocol: "tcp" }], env: {}, labels: {}, stopGracePeriodMs: 0 },
    count,
  });
  return { provider, image, request };
}

/** Runs `call` n times and says which calls (1-based) failed, with their errors. */
async function failures(n: number, call: () => Promise<unknown>): Promise<Map<number, unknown>> {
  const failed = new Map<number, unknown>();
  for (let i = 1; i <= n; i++) {
    await call().catch((error: unknown) => failed.set(i, error));
  }
  return failed;
}

afterEach(() => {
  vi.useRealTimers();
});

describe("seededRandom", () => {
  it("repeats its sequence for a seed and stays in [0, 1)", () => {
    const a = seededRandom(42);
    const b = seededRandom(42);
    const first = Array.from({ length: 1000 }, () => a());
    expect(Array.from({ length: 1000 }, () => b())).toEqual(first);
    expect(first.every((x) => x >= 0 && x < 1)).toBe(true);
    expect(seededRandom(43)()).not.toBe(first[0]);
    const mean = first.reduce((sum, x) => sum + x, 0) / first.length;
    expect(mean).toBeGreaterThan(0.45);
    expect(mean).toBeLessThan(0.55);
  });
});

describe("fault options", () => {
  it("are validated with every problem listed", () => {
    let caught: unknown;
    try {
      createMemoryProvider({
        faults: {
          all: { latencyMs: { minMs: 10, maxMs: 5 }, error: { when: 1.5 } },
          operations: { launch: { throttle: { everyNth: 0, rate: -1 } }, nope: {} } as Record<string, object>,
        },
      });
    } catch (error) {
      caught = error;
    }
    expect(isKilnError(caught, "INVALID_ARGUMENT")).toBe(true);
    const issues = (caught as { details: { issues: string[] } }).details.issues;
    expect(issues).toHaveLength(5);
    expect(issues.join("\n")).toMatch(/latencyMs needs 0 <= minMs <= maxMs/);
    expect(issues.join("\n")).toMatch(/faults.operations.nope is not an operation/);
  });
});

describe("latency", () => {
  it("delays each call by a fixed time", async () => {
    const { provider } = await withImage({ faults: { operations: { list: { latencyMs: 60 } } } });
    const started = performance.now();
    await provider.instances.list({ target: { service: "web", environment: "test" } }, ctx());
    expect(performance.now() - started).toBeGreaterThanOrEqual(55);
  });

  it("draws a delay from a range with the given random source", async () => {
    vi.useFakeTimers();
    const provider = createMemoryProvider({ faults: { random: () => 0.5, all: { latencyMs: { minMs: 100, maxMs: 300 } } } });
    let done = false;
    const pinging = provider.ping(ctx()).then(() => (done = true));
    await vi.advanceTimersByTimeAsync(199);
    expect(done).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    await pinging;
    expect(done).toBe(true);
  });

  it("honours ctx.signal: an abort during the delay rejects with ABORTED at once and changes nothing", async () => {
    const { provider, request } = await withImage({ faults: { operations: { launch: { latencyMs: 10_000 } } } });
    const controller = new AbortController();
    const started = performance.now();
    const launching = provider.instances.launch(request("k1"), ctx(controller.signal));
    setTimeout(() => controller.abort(), 20);
    await expect(launching).rejects.toMatchObject({ code: "ABORTED" });
    expect(performance.now() - started).toBeLessThan(2_000);
    expect(provider.live.size).toBe(0);
  });
});

describe("errors", () => {
  it("fail every call at rate 1 with a retryable PROVIDER_UNAVAILABLE, and change nothing", async () => {
    const { provider, request } = await withImage({ faults: { operations: { launch: { error: { when: 1 } } } } });
    const error = await provider.instances.launch(request("k1"), ctx()).catch((caught: unknown) => caught);
    expect(error).toMatchObject({ name: "KilnError", code: "PROVIDER_UNAVAILABLE", retryable: true, details: { reason: "injected", operation: "launch", callNumber: 1 } });
    expect(provider.live.size).toBe(0);
  });

  it("never fail at rate 0", async () => {
    const { provider, request } = await withImage({ faults: { all: { error: { when: 0 } } } });
    expect((await failures(20, () => provider.instances.launch(request("k1"), ctx()))).size).toBe(0);
  });

  it("follow a rate deterministically with a seeded random source", async () => {
    const pattern = async () => {
      const { provider, request } = await withImage({ faults: { random: seededRandom(7), operations: { launch: { error: { when: 0.3 } } } } });
      return [...(await failures(200, () => provider.instances.launch(request("k1"), ctx()))).keys()];
    };
    const first = await pattern();
    expect(await pattern()).toEqual(first);
    expect(first.length).toBeGreaterThan(30);
    expect(first.length).toBeLessThan(90);
  });

  it("are decided per call by a function, with the configured code", async () => {
    const seen: unknown[] = [];
    const { provider } = await withImage({
      faults: {
        operations: {
          terminate: {
            error: {
              when: (call) => {
                seen.push(call);
                return call.callNumber === 2;
              },
              code: "TERMINATE_FAILED",
              message: "the API said no",
            },
          },
        },
      },
    });
    const failed = await failures(3, () => provider.instances.terminate([], { gracePeriodMs: 0 }, ctx()));
    expect([...failed.keys()]).toEqual([2]);
    expect(failed.get(2)).toMatchObject({ code: "TERMINATE_FAILED", retryable: false, message: "the API said no" });
    expect(seen[0]).toEqual({ operation: "terminate", callNumber: 1 });
  });

  it("in the after phase take effect first, like a lost response; a retry with the same key adopts the instances", async () => {
    let failNext = true;
    const { provider, request } = await withImage({
      faults: { operations: { launch: { error: { when: () => (failNext ? !(failNext = false) : false), phase: "after" } } } },
    });
    await expect(provider.instances.launch(request("k1", 2), ctx())).rejects.toMatchObject({ code: "PROVIDER_UNAVAILABLE" });
    expect(provider.live.size).toBe(2);
    const retried = await provider.instances.launch(request("k1", 2), ctx());
    expect(retried.map((instance) => instance.id).sort()).toEqual([...provider.live.keys()].sort());
    expect(provider.launchedIds).toHaveLength(2);
  });

  it("of one operation replace the same field of `all`", async () => {
    const provider = createMemoryProvider({ faults: { all: { error: { when: 1 } }, operations: { ping: { error: { when: 0 } } } } });
    await expect(provider.ping(ctx())).resolves.toBeUndefined();
    await expect(provider.images.list("web", ctx())).rejects.toMatchObject({ code: "PROVIDER_UNAVAILABLE" });
  });
});

describe("throttling", () => {
  it("throttles every Nth call with a retryable error whose reason is throttled", async () => {
    const { provider } = await withImage({ faults: { operations: { find: { throttle: { everyNth: 3, retryAfterMs: 250 } } } } });
    const failed = await failures(9, () => provider.images.find({ service: "web", fingerprint: FINGERPRINT }, ctx()));
    expect([...failed.keys()]).toEqual([3, 6, 9]);
    expect(failed.get(3)).toMatchObject({
      code: "PROVIDER_UNAVAILABLE",
      retryable: true,
      details: { reason: "throttled", operation: "find", retryAfterMs: 250 },
    });
  });

  it("throttles at a rate, repeatably with a seed", async () => {
    const pattern = async () => {
      const provider = createMemoryProvider({ faults: { random: seededRandom(3), all: { throttle: { rate: 0.5 } } } });
      return [...(await failures(100, () => provider.ping(ctx()))).keys()];
    };
    const first = await pattern();
    expect(await pattern()).toEqual(first);
    expect(first.length).toBeGreaterThan(30);
    expect(first.length).toBeLessThan(70);
  });
});

describe("instance behaviour", () => {
  it("flaps: healthy for healthyMs, then restarts and is unhealthy for unhealthyMs, repeating", () => {
    const flap = { healthyAfterMs: 100, flap: { healthyMs: 1_000, unhealthyMs: 200 } };
    expect(instanceCondition(flap, 50)).toMatchObject({ state: "running", restartCount: 0, unhealthy: expect.stringMatching(/starting/) });
    expect(instanceCondition(flap, 100)).toEqual({ state: "running", restartCount: 0 });
    expect(instanceCondition(flap, 1_099)).toEqual({ state: "running", restartCount: 0 });
    expect(instanceCondition(flap, 1_100)).toMatchObject({ state: "running", restartCount: 1, unhealthy: expect.stringMatching(/restarted/) });
    expect(instanceCondition(flap, 1_299)).toMatchObject({ restartCount: 1, unhealthy: expect.any(String) });
    expect(instanceCondition(flap, 1_300)).toEqual({ state: "running", restartCount: 1 });
    expect(instanceCondition(flap, 2_300)).toMatchObject({ restartCount: 2, unhealthy: expect.any(String) });
  });

  it("loops restarting: never healthy, pending between runs, stopped after maxRestarts", () => {
    const loop = { restartLoop: { runMs: 100, restartDelayMs: 50, maxRestarts: 2 } };
    expect(instanceCondition(loop, 0)).toMatchObject({ state: "running", restartCount: 0, unhealthy: expect.any(String) });
    expect(instanceCondition(loop, 120)).toMatchObject({ state: "pending", restartCount: 0 });
    expect(instanceCondition(loop, 150)).toMatchObject({ state: "running", restartCount: 1 });
    expect(instanceCondition(loop, 300)).toMatchObject({ state: "running", restartCount: 2 });
    expect(instanceCondition(loop, 400)).toMatchObject({ state: "stopped", restartCount: 2 });
    expect(instanceCondition({ restartLoop: { runMs: 100 } }, 1_050)).toMatchObject({ state: "running", restartCount: 10 });
  });

  it("exits for good after exitAfterMs", () => {
    expect(instanceCondition({ exitAfterMs: 500 }, 499)).toEqual({ state: "running", restartCount: 0 });
    expect(instanceCondition({ exitAfterMs: 500 }, 500)).toMatchObject({ state: "stopped" });
  });

  it("shows through list and probe as time passes", async () => {
    vi.useFakeTimers({ toFake: ["Date"] });
    vi.setSystemTime(1_000_000);
    const { provider, request } = await withImage({ behavior: () => ({ flap: { healthyMs: 1_000, unhealthyMs: 500 } }) });
    const [instance] = await provider.instances.launch(request("k1"), ctx());
    const check = { kind: "http", portName: "http", path: "/", expectStatus: [200, 399] } as const;
    const observe = async () => ({
      restartCount: (await provider.instances.list({ target: instance!.target }, ctx()))[0]!.restartCount,
      probe: await provider.health.probe(instance!, check, 1_000, ctx()),
    });
    expect(await observe()).toEqual({ restartCount: 0, probe: { ok: true } });
    vi.setSystemTime(1_001_200);
    expect(await observe()).toEqual({ restartCount: 1, probe: { ok: false, reason: expect.stringMatching(/restarted/) } });
    vi.setSystemTime(1_001_600);
    expect(await observe()).toEqual({ restartCount: 1, probe: { ok: true } });
    expect(provider.live.get(instance!.id)?.restartCount).toBe(1);
  });
});
