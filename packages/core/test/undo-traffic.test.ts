// The undo of a failed rollout drains from traffic only the instances that joined it: an instance
// that failed its health gate was never registered, so it is neither drained nor reported drained.
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, expect, it } from "vitest";
import { createKiln, isKilnError, type Instance, type KilnEvent, type Provider, type SpecInput } from "../src/index.js";
import { createMemoryProvider } from "@kilnjs/testkit";

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "kiln-undo-traffic-"));
  await writeFile(path.join(dir, "Dockerfile"), "FROM scratch\n");
  await writeFile(path.join(dir, "app.txt"), "1\n");
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

it("never drains, nor reports drained, a new instance that failed its gate before it joined", async () => {
  const memory = createMemoryProvider({ behavior: (request) => (request.release === 2 ? { neverHealthy: true } : {}) });
  const registered = new Set<string>();
  const deregistered: string[] = [];
  const provider: Provider = {
    ...memory,
    traffic: {
      register: async (instances: readonly Instance[]) => void instances.forEach((instance) => registered.add(instance.id)),
      deregister: async (instances: readonly Instance[]) => void deregistered.push(...instances.map((instance) => instance.id)),
    },
  };
  const events: KilnEvent[] = [];
  const kiln = createKiln({ providers: { memory: provider }, dataDir: path.join(dir, ".kiln"), onEvent: (event) => events.push(event) });
  const spec: SpecInput = {
    service: "web",
    provider: "memory",
    instances: { count: 2, ports: [{ name: "http", port: 8080 }] },
    health: { intervalMs: 100, timeoutMs: 100, healthyThreshold: 1, unhealthyThreshold: 1, deadlineMs: 1_000 },
    traffic: { proxy: { port: 18080 } },
  };
  await kiln.deploy({ spec, baseDir: dir });
  await writeFile(path.join(dir, "app.txt"), "2\n");
  events.length = 0;
  const error = await kiln.deploy({ spec, baseDir: dir }).catch((caught: unknown) => caught);
  expect(isKilnError(error, "HEALTH_CHECK_FAILED")).toBe(true);
  const launched = events.flatMap((event) => (event.type === "instance.launched" ? [event.instance.id] : []));
  expect(launched.length).toBeGreaterThan(0);
  for (const id of launched) expect(registered.has(id)).toBe(false);
  // Neither drained through the provider nor reported drained in an event.
  expect(deregistered.filter((id) => launched.includes(id))).toEqual([]);
  const reported = events.flatMap((event) => (event.type === "traffic.shifted" ? event.deregistered.map((instance) => instance.id) : []));
  expect(reported.filter((id) => launched.includes(id))).toEqual([]);
  // And they were removed all the same.
  const retired = events.flatMap((event) => (event.type === "instance.retired" ? [event.instance.id] : []));
  expect(retired).toEqual(expect.arrayContaining(launched));
});
