// `kiln serve` on one machine (no --postgres), killed with SIGKILL in the middle of a rollout and
// started again on the same data folder (separate processes, the CLI as users run it, with the
// in-memory provider kept in a state file): the deployments and a finished one's events are still
// there, the one that was running is failed with ROLLOUT_INTERRUPTED, and the next deploy of its
// target recovers the cut-off rollout from the journal and succeeds. A second server on the same
// data folder stops at start (STATE_UNAVAILABLE).
import type { ChildProcess } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { waitFor } from "@kilnjs/core";
import { startKilnServe, type KilnServeProcess } from "./kiln-serve-process.testing.js";

const TOKEN = "t-restart-integ";

type Server = KilnServeProcess;

describe("kiln serve killed with SIGKILL and started again on its data folder", () => {
  let dir: string;
  /** Outside the spec root: files changing inside it would change every fingerprint. */
  let work: string;
  const children: ChildProcess[] = [];

  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "kiln-restart-specs-"));
    work = await mkdtemp(path.join(tmpdir(), "kiln-restart-work-"));
    await writeFile(path.join(dir, "Dockerfile"), "FROM scratch\n");
  });
  afterAll(async () => {
    for (const child of children) child.kill("SIGKILL");
    await rm(dir, { recursive: true, force: true });
    await rm(work, { recursive: true, force: true });
  });

  async function startServer(): Promise<Server> {
    // Without --postgres and without KILN_PG_URL (which `npm test` exports): the embedded stores.
    const { KILN_PG_URL: _postgres, ...environment } = process.env;
    // A killed server's hold on the data folder lapses within 6 s: the next one waits for it.
    const started = await startKilnServe({ args: ["--spec-root", dir, "--data-dir", path.join(work, "kiln"), "--lock-ttl", "3s"], cwd: dir, token: TOKEN, memoryStateFile: path.join(work, "cloud.json"), environment });
    children.push(started.child);
    return started;
  }

  const call = (server: Server, method: string, route: string, body?: unknown, accept?: string) =>
    fetch(`${server.url}${route}`, {
      method,
      headers: { authorization: `Bearer ${TOKEN}`, ...(body !== undefined ? { "content-type": "application/json" } : {}), ...(accept ? { accept } : {}) },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
  const spec = (version: number, extra: Record<string, unknown> = {}) => ({
    service: "web",
    provider: "memory",
    instances: { count: 3, env: { VERSION: String(version) } },
    health: { intervalMs: 100, healthyThreshold: 1 },
    ...extra,
  });
  const finished = (server: Server, id: string) =>
    waitFor(
      async () => {
        const record = (await (await call(server, "GET", `/v1/deployments/${id}`)).json()) as { state: string; release?: number; error?: { code: string; message: string } };
        return ["succeeded", "unchanged", "failed", "cancelled"].includes(record.state) ? { done: true, value: record } : { done: false, reason: record.state };
      },
      { timeoutMs: 60_000, minDelayMs: 50, maxDelayMs: 300, description: `deployment ${id} to end` },
    );

  it("keeps every deployment and its events; the one cut off is failed ROLLOUT_INTERRUPTED and the next deploy recovers its rollout", async () => {
    const before = await startServer();
    const first = (await (await call(before, "POST", "/v1/deployments", { spec: spec(1) })).json()) as { id: string };
    expect(await finished(before, first.id)).toMatchObject({ state: "succeeded", release: 1 });
    const firstEvents = await (await call(before, "GET", `/v1/deployments/${first.id}/events`, undefined, "application/x-ndjson")).text();
    // A slow rollout, killed once it launched its first instance.
    const slow = spec(2, { rollout: { maxSurge: 1, pauseBetweenBatchesMs: 2_000 } });
    const second = (await (await call(before, "POST", "/v1/deployments", { spec: slow })).json()) as { id: string };
    await waitFor(
      async () => {
        const record = (await (await call(before, "GET", `/v1/deployments/${second.id}`)).json()) as { steps?: Array<{ type: string }> };
        return record.steps?.some((step) => step.type === "instance.launched") ? { done: true, value: undefined } : { done: false };
      },
      { timeoutMs: 20_000, minDelayMs: 50, maxDelayMs: 200, description: "the slow rollout to launch an instance" },
    );
    before.child.kill("SIGKILL");
    await new Promise((resolve) => before.child.once("exit", resolve));

    const after = await startServer();
    const listed = (await (await call(after, "GET", "/v1/deployments")).json()) as { deployments: Array<{ id: string; state: string }> };
    expect(listed.deployments.map((record) => record.id)).toEqual([second.id, first.id]);
    expect(await (await call(after, "GET", `/v1/deployments/${first.id}/events`, undefined, "application/x-ndjson")).text()).toBe(firstEvents);
    const cut = await finished(after, second.id);
    expect(cut).toMatchObject({ state: "failed", error: { code: "ROLLOUT_INTERRUPTED" } });
    const steps = ((await (await call(after, "GET", `/v1/deployments/${second.id}`)).json()) as { steps: Array<{ type: string }> }).steps;
    expect(steps.some((step) => step.type === "instance.launched")).toBe(true);

    // The next deploy of the target finishes or undoes the cut-off rollout first (the journal), then deploys.
    const third = (await (await call(after, "POST", "/v1/deployments", { spec: spec(2) })).json()) as { id: string };
    expect(await finished(after, third.id)).toMatchObject({ state: "succeeded" });
    const status = (await (await call(after, "GET", "/v1/targets/web@default")).json()) as { instances: Array<{ state: string }>; drift: string[] };
    expect(status.instances).toHaveLength(3);
    expect(status.drift).toEqual([]);

    // One server uses a data folder at a time: a second one on it stops at start, saying why.
    const { KILN_PG_URL: _unused, ...environment } = process.env;
    const rival = await startKilnServe({ args: ["--spec-root", dir, "--data-dir", path.join(work, "kiln")], cwd: dir, token: TOKEN, memoryStateFile: path.join(work, "cloud.json"), environment }).then(
      (started) => {
        children.push(started.child);
        return `it listened at ${started.url}`;
      },
      (error: unknown) => String(error),
    );
    expect(rival).toMatch(/exited [1-9]\d*: .*STATE_UNAVAILABLE.*Another process uses the deployment queue/s);
    after.child.kill("SIGTERM");
  }, 120_000);
});
