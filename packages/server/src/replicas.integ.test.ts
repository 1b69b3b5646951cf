// Two `kiln serve` replicas on one PostgreSQL (separate processes, the CLI as users run it), with
// the in-memory provider kept in a state file both share: 20 deploy requests spread over both
// replicas for 5 targets, every rollout runs exactly once; then a replica is killed with SIGKILL
// mid-rollout and the other finishes that rollout from the journal.
import { randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { waitFor } from "@kilnjs/core";
import { postgresUrl, requirePostgres } from "@kilnjs/testkit";
import { startKilnServe, type KilnServeProcess } from "./kiln-serve-process.testing.js";

const postgres = await requirePostgres();
const TOKEN = "t-replicas";

interface Replica extends KilnServeProcess {
  readonly name: string;
}

describe.skipIf(!postgres)("two server replicas on one PostgreSQL", () => {
  const schema = `kiln_replicas_${randomBytes(3).toString("hex")}`;
  let dir: string;
  /** Outside the spec root: a file that changes inside it would change every fingerprint. */
  let work: string;
  const replicas = new Map<string, Replica>();

  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "kiln-replicas-"));
    work = await mkdtemp(path.join(tmpdir(), "kiln-replicas-work-"));
    await writeFile(path.join(dir, "Dockerfile"), "FROM scratch\n");
    for (const name of ["a", "b"]) replicas.set(name, await startReplica(name));
  });

  afterAll(async () => {
    for (const replica of replicas.values()) replica.child.kill("SIGKILL");
    const client = new pg.Client({ connectionString: postgresUrl() });
    await client.connect();
    await client.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    await client.end();
    await rm(dir, { recursive: true, force: true });
    await rm(work, { recursive: true, force: true });
  });

  async function startReplica(name: string): Promise<Replica> {
    const started = await startKilnServe({
      args: ["--postgres", postgresUrl(), "--postgres-schema", schema, "--replica-id", `replica-${name}`, "--spec-root", dir, "--data-dir", path.join(work, `kiln-${name}`), "--claim-lease", "2s", "--lock-ttl", "3s"],
      cwd: dir,
      token: TOKEN,
      memoryStateFile: path.join(work, "cloud.json"),
    });
    return {
      name,
      url: started.url,
      child: started.child,
      get output() {
        return started.output;
      },
    };
  }

  const call = (replica: Replica, method: string, route: string, body?: unknown) =>
    fetch(`${replica.url}${route}`, {
      method,
      headers: { authorization: `Bearer ${TOKEN}`, ...(body !== undefined ? { "content-type": "application/json" } : {}) },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
  const spec = (service: string, version: number, extra: Record<string, unknown> = {}) => ({
    service,
    provider: "memory",
    instances: { count: 2, env: { VERSION: String(version) } },
    health: { intervalMs: 100, healthyThreshold: 1 },
    ...extra,
  });
  const finished = (replica: Replica, id: string, timeoutMs = 60_000) =>
    waitFor(
      async () => {
        const record = (await (await call(replica, "GET", `/v1/deployments/${id}`)).json()) as { state: string; attempts: number; release?: number; claimedBy?: string };
        return ["succeeded", "unchanged", "failed", "cancelled"].includes(record.state) ? { done: true, value: record } : { done: false, reason: record.state };
      },
      { timeoutMs, minDelayMs: 50, maxDelayMs: 300, description: `deployment ${id} to finish` },
    );

  it("20 deploy requests for 5 targets over both replicas: one per target is accepted at a time, and each accepted one runs exactly once", async () => {
    const [a, b] = [replicas.get("a")!, replicas.get("b")!];
    const services = Array.from({ length: 5 }, (_, index) => `svc${index}-${randomBytes(2).toString("hex")}`);
    const accepted: Array<{ id: string; service: string }> = [];
    let conflicts = 0;
    // Two waves of ten: each target gets two requests at the same moment, one through each replica;
    // the database lets exactly one of them in. Each wave waits for its deployments to end.
    for (let wave = 0; wave < 2; wave++) {
      const answers = await Promise.all(
        services.flatMap((service) =>
          [a, b].map(async (replica) => {
            // A canary hold keeps the accepted one running while the other request arrives.
            const answer = await call(replica, "POST", "/v1/deployments", { spec: spec(service, wave + 1, { rollout: { strategy: "canary", steps: [{ instances: 1, holdMs: 1_000 }] } }) });
            return { service, status: answer.status, body: (await answer.json()) as { id?: string; code?: string } };
          }),
        ),
      );
      for (const service of services) {
        const mine = answers.filter((answer) => answer.service === service);
        expect(mine.map((answer) => answer.status).sort()).toEqual([202, 409]);
      }
      for (const answer of answers) {
        if (answer.status === 202) accepted.push({ id: answer.body.id!, service: answer.service });
        else {
          expect(answer.body.code).toBe("TARGET_LOCKED");
          conflicts += 1;
        }
      }
      await Promise.all(answers.filter((answer) => answer.status === 202).map((answer) => finished(a, answer.body.id!)));
    }
    expect(accepted).toHaveLength(10);
    expect(conflicts).toBe(10);
    // Every accepted deployment ran once (one claim, by one replica), and made exactly one rollout.
    const records = await Promise.all(accepted.map(({ id }) => finished(b, id)));
    expect(records.filter((record) => record.state !== "succeeded" || record.attempts !== 1)).toEqual([]);
    for (const service of services) {
      const history = (await (await call(a, "GET", `/v1/targets/${service}@default/history`)).json()) as { releases: Array<{ number: number }>; rollouts: Array<{ status: string }> };
      expect(history.rollouts).toHaveLength(2);
      expect(history.rollouts.every((rollout) => rollout.status === "succeeded")).toBe(true);
      expect(history.releases.map((release) => release.number)).toEqual([2, 1]);
    }
    // Each was started by exactly one of the two replicas (their logs), once. Which replica is up
    // to the queue (whichever polls first; under CPU load that can be the same one every time, so
    // a split is not asserted): the next test shows the second replica taking work over.
    const started = (replica: Replica) => replica.output.split("\n").filter((line) => line.includes('"deployment started"'));
    for (const { id } of accepted) {
      const lines = [...started(a), ...started(b)].filter((line) => line.includes(id));
      expect(lines, `deployment ${id} started once`).toHaveLength(1);
    }
  });

  it("kill -9 of the replica running a rollout: the other takes it over and finishes it", async () => {
    const service = `takeover-${randomBytes(2).toString("hex")}`;
    const [a, b] = [replicas.get("a")!, replicas.get("b")!];
    const first = (await (await call(a, "POST", "/v1/deployments", { spec: spec(service, 1) })).json()) as { id: string };
    await finished(a, first.id);
    // A slow rollout: 3 instances, one at a time, a pause after each batch.
    const slow = spec(service, 2, { instances: { count: 3, env: { VERSION: "2" } }, rollout: { maxSurge: 1, pauseBetweenBatchesMs: 1_500 } });
    const { id } = (await (await call(b, "POST", "/v1/deployments", { spec: slow })).json()) as { id: string };
    const running = await waitFor(
      async () => {
        const record = (await (await call(b, "GET", `/v1/deployments/${id}`)).json()) as { claimedBy?: string; steps?: Array<{ type: string }> };
        const launched = record.steps?.some((step) => step.type === "instance.launched");
        return record.claimedBy && launched ? { done: true, value: record.claimedBy } : { done: false };
      },
      { timeoutMs: 20_000, minDelayMs: 50, maxDelayMs: 200, description: "the slow rollout to launch its first instance" },
    );
    const victim = running === "replica-a" ? a : b;
    const survivor = victim === a ? b : a;
    victim.child.kill("SIGKILL");
    await new Promise((resolve) => victim.child.once("exit", resolve));
    const record = await finished(survivor, id, 90_000);
    expect(record).toMatchObject({ state: "succeeded", release: 2 });
    expect(record.attempts).toBe(2);
    const status = (await (await call(survivor, "GET", `/v1/targets/${service}@default`)).json()) as { release: { number: number }; instances: Array<{ release: number; state: string }>; drift: string[] };
    expect(status.release.number).toBe(2);
    expect(status.instances).toHaveLength(3);
    expect(status.instances.every((instance) => instance.release === 2 && instance.state === "running")).toBe(true);
    expect(status.drift).toEqual([]);
    expect(survivor.output).toContain("deployment started");
  });
});
