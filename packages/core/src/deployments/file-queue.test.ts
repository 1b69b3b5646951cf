import { appendFile, mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { KilnEvent } from "../events.js";
import { createFileDeploymentQueue, INTERRUPTED_BY_RESTART } from "./file-queue.js";
import type { EnqueueInput } from "./queue.js";

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "kiln-file-queue-"));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const input = (service: string): EnqueueInput => ({ kind: "deploy", target: { service, environment: "prod" }, request: { spec: { service }, environment: "prod" }, requestedBy: "ci" });
const event = (message: string) => ({ type: "image.build.log", time: new Date().toISOString(), target: "web@prod", message }) as KilnEvent;

/** Enqueues, expecting it queued. */
async function enqueued(queue: ReturnType<typeof createFileDeploymentQueue>, service: string) {
  const outcome = await queue.enqueue(input(service));
  if (outcome.kind !== "queued") throw new Error(`expected ${service} queued`);
  return outcome.record;
}

describe("createFileDeploymentQueue", () => {
  it("keeps deployments, their events and kept answers across a restart, in order", async () => {
    const first = createFileDeploymentQueue({ directory: dir });
    const done = await enqueued(first, "done");
    const waiting = await enqueued(first, "waiting");
    expect((await first.claim("replica-1", 30_000))?.id).toBe(done.id);
    await first.appendEvents(done.id, [event("one"), event("two")]);
    expect(await first.appendEvents(done.id, [event("three")])).toBe(3);
    await first.finish(done.id, "replica-1", { state: "succeeded", result: { release: 1, rolloutId: "r-1" } });
    await first.keepResponse("key-1", { status: 202, body: { id: done.id }, headers: { location: `/v1/deployments/${done.id}` } });
    const before = await first.list({ limit: 10 });
    await first.close();

    const second = createFileDeploymentQueue({ directory: dir });
    expect(await second.list({ limit: 10 })).toEqual(before);
    expect(before.map((record) => record.id)).toEqual([waiting.id, done.id]);
    expect(await second.get(done.id)).toMatchObject({ state: "succeeded", result: { release: 1, rolloutId: "r-1" }, attempts: 1 });
    expect((await second.readEvents(done.id, 0, 10)).map((stored) => [stored.seq, (stored.event as { message: string }).message])).toEqual([
      [1, "one"],
      [2, "two"],
      [3, "three"],
    ]);
    expect(await second.getResponse("key-1")).toEqual({ status: 202, body: { id: done.id }, headers: { location: `/v1/deployments/${done.id}` } });
    // The one still queued runs after the restart, and the target stays busy until it does.
    expect((await second.enqueue(input("waiting"))).kind).toBe("conflict");
    expect((await second.claim("replica-2", 30_000))?.id).toBe(waiting.id);
    // New events go on from the last number.
    expect(await second.appendEvents(done.id, [event("four")])).toBe(4);
    await second.close();
  });

  it("marks a deployment that was running when the process stopped failed with ROLLOUT_INTERRUPTED, and frees its target", async () => {
    const first = createFileDeploymentQueue({ directory: dir });
    const running = await enqueued(first, "web");
    await first.claim("replica-1", 30_000);
    await first.appendEvents(running.id, [event("building")]);
    // The process dies: nothing finishes it (closing only lets the folder go, as a dead process's lock lapses).
    await first.close();

    const second = createFileDeploymentQueue({ directory: dir });
    const marked = await second.get(running.id);
    expect(marked).toMatchObject({ state: "failed", error: INTERRUPTED_BY_RESTART, claimedBy: "replica-1", attempts: 1 });
    expect(marked?.leaseExpiresAt).toBeUndefined();
    expect(Date.parse(marked!.finishedAt!)).toBeGreaterThanOrEqual(Date.parse(marked!.startedAt!));
    expect(await second.readEvents(running.id, 0, 10)).toHaveLength(1);
    expect(await second.claim("replica-2", 30_000)).toBeUndefined();
    expect((await second.enqueue(input("web"))).kind).toBe("queued");
    await second.close();
  });

  it("skips an event line cut short by a crash, and numbers the next events on from the last whole one", async () => {
    const first = createFileDeploymentQueue({ directory: dir });
    const record = await enqueued(first, "web");
    await first.appendEvents(record.id, [event("whole")]);
    await first.close();
    await appendFile(path.join(dir, "events", `${record.id}.ndjson`), '{"seq":2,"event":{"type":"image.bu');

    const second = createFileDeploymentQueue({ directory: dir });
    expect((await second.readEvents(record.id, 0, 10)).map((stored) => stored.seq)).toEqual([1]);
    expect(await second.appendEvents(record.id, [event("after the crash")])).toBe(2);
    expect((await second.readEvents(record.id, 0, 10)).map((stored) => (stored.event as { message: string }).message)).toEqual(["whole", "after the crash"]);
    await second.close();
  });

  it("keeps the newest finished deployments it is told to, with every unfinished one", async () => {
    const first = createFileDeploymentQueue({ directory: dir });
    const ids: string[] = [];
    for (const service of ["a", "b", "c"]) {
      const record = await enqueued(first, service);
      await first.appendEvents(record.id, [event(service)]);
      await first.requestCancel(record.id);
      ids.push(record.id);
    }
    const waiting = await enqueued(first, "d");
    await first.close();

    const second = createFileDeploymentQueue({ directory: dir, keepFinished: 1 });
    expect((await second.list({ limit: 10 })).map((record) => record.id)).toEqual([waiting.id, ids[2]]);
    expect(await second.get(ids[0]!)).toBeUndefined();
    expect((await readdir(path.join(dir, "events"))).sort()).toEqual([`${ids[2]}.ndjson`]);
    await second.close();
  });

  it("writes each deployment as a JSON file of its own, and refuses to be used once closed", async () => {
    const queue = createFileDeploymentQueue({ directory: path.join(dir, "nested", "deployments") });
    await queue.ready();
    const record = await enqueued(queue, "web");
    const file = JSON.parse(await readFile(path.join(dir, "nested", "deployments", "deployments", `${record.id}.json`), "utf8")) as { version: number; record: unknown };
    expect(file).toMatchObject({ version: 1, record });
    await queue.close();
    await expect(queue.list({ limit: 1 })).rejects.toMatchObject({ code: "STATE_UNAVAILABLE" });
  });
});
