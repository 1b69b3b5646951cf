// A rollout of many instances adds no abort listener per instance to the run's signal: probing
// 12 instances at once used to put 12 listeners on it and print "MaxListenersExceededWarning:
// 11 abort listeners added". Each probe now gets a signal of its own, derived with AbortSignal.any
// (which adds no listener to its source).
import { getEventListeners } from "node:events";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, expect, it } from "vitest";
import { createKiln, type Provider, type SpecInput } from "../src/index.js";
import { createMemoryProvider } from "@kilnjs/testkit";

const COUNT = 12;

let dir: string;
const warnings: Error[] = [];
const onWarning = (warning: Error) => warnings.push(warning);
beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "kiln-abort-listeners-"));
  await writeFile(path.join(dir, "Dockerfile"), "FROM scratch\n");
  await writeFile(path.join(dir, "app.txt"), "1\n");
  warnings.length = 0;
  process.on("warning", onWarning);
});
afterEach(async () => {
  process.off("warning", onWarning);
  await rm(dir, { recursive: true, force: true });
});

/**
 * The in-memory provider with a little latency on every call (a call waiting on the signal adds a
 * listener to it, as an HTTP request does), recording how many abort listeners the run's signals
 * (those `list` is given: the operation's and the rollout engine's, both made by Kiln for this
 * run, so with no listener at first) carry whenever a call starts.
 */
function observedProvider() {
  const memory = createMemoryProvider({ faults: { all: { latencyMs: 5 } } });
  const signals = new Set<AbortSignal>();
  const samples: number[] = [];
  const sample = () => {
    for (const signal of signals) samples.push(getEventListeners(signal, "abort").length);
  };
  const provider: Provider = {
    ...memory,
    instances: {
      ...memory.instances,
      launch: (request, ctx) => (sample(), memory.instances.launch(request, ctx)),
      list: (selector, ctx) => {
        signals.add(ctx.signal);
        sample();
        return memory.instances.list(selector, ctx);
      },
      terminate: (instances, options, ctx) => (sample(), memory.instances.terminate(instances, options, ctx)),
    },
    health: { probe: (instance, check, timeoutMs, ctx) => (sample(), memory.health.probe(instance, check, timeoutMs, ctx)) },
  };
  /** The listeners left on the run's signals. */
  const left = () => [...signals].map((signal) => getEventListeners(signal, "abort").length);
  return { provider, samples, signals, left };
}

it(`deploys and replaces ${COUNT} instances without a MaxListenersExceededWarning, the run's signal back to its listeners at the start`, async () => {
  const observed = observedProvider();
  const kiln = createKiln({ providers: { memory: observed.provider }, dataDir: path.join(dir, ".kiln") });
  const spec: SpecInput = {
    service: "web",
    provider: "memory",
    instances: { count: COUNT, ports: [{ name: "http", port: 8080 }] },
    health: { http: { port: "http" }, intervalMs: 100, timeoutMs: 100, healthyThreshold: 2, unhealthyThreshold: 2 },
    rollout: { maxSurge: COUNT, maxUnavailable: 0 },
  };
  const controller = new AbortController();
  const baseline = getEventListeners(controller.signal, "abort").length;
  await kiln.deploy({ spec, baseDir: dir, signal: controller.signal });
  await writeFile(path.join(dir, "app.txt"), "2\n");
  await kiln.deploy({ spec, baseDir: dir, signal: controller.signal });
  // Warnings are emitted on the next tick.
  await new Promise((resolve) => setImmediate(resolve));

  expect(observed.signals.size).toBeGreaterThanOrEqual(2);
  expect(observed.samples.length).toBeGreaterThan(4 * COUNT);
  expect(warnings.filter((warning) => warning.name === "MaxListenersExceededWarning").map(String)).toEqual([]);
  // At most the one sleep or call waiting on the run's signal itself, never one per instance.
  expect(Math.max(...observed.samples)).toBeLessThanOrEqual(2);
  expect(observed.left()).toEqual([...observed.signals].map(() => 0));
  expect(getEventListeners(controller.signal, "abort")).toHaveLength(baseline);
});
