import { appendFile, mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { createFileStateStore } from "./file-store.js";
import type { Holder, NewJournalEntry, RolloutRecord, StateStore } from "./types.js";

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "kiln-store-"));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const target = { service: "web", environment: "prod" };
const holder: Holder = { user: "ci", host: "build-1", pid: 4242, command: "kiln deploy", since: "2026-01-01T00:00:00.000Z" };

describe("createFileStateStore", () => {
  it("reads an empty state for a target never deployed", async () => {
    const store = createFileStateStore({ directory: dir });
    expect(await store.read(target)).toEqual({ target, releases: [], rollouts: [], currentRelease: undefined });
    expect(await store.listTargets()).toEqual([]);
  });

  it("keeps updates, serialising concurrent ones", async () => {
    const store = createFileStateStore({ directory: dir });
    await Promise.all(
      Array.from({ length: 20 }, (_, index) =>
        store.update(target, (state) => {
          state.currentRelease = (state.currentRelease ?? 0) + 1;
          return index;
        }),
      ),
    );
    expect((await createFileStateStore({ directory: dir }).read(target)).currentRelease).toBe(20);
    expect(await store.listTargets()).toEqual([target]);
  });

  it("reports a corrupt state file with STATE_CORRUPT", async () => {
    await writeFile(path.join(dir, "web@prod.json"), "{ not json");
    await expect(createFileStateStore({ directory: dir }).read(target)).rejects.toMatchObject({ code: "STATE_CORRUPT" });
  });

  it("gives the rollout lock to one holder at a time, naming the holder to the other", async () => {
    const first = createFileStateStore({ directory: dir });
    const second = createFileStateStore({ directory: dir });
    const lock = await first.lock(target, holder);
    const error = await second.lock(target, { ...holder, pid: 1 }).catch((e: unknown) => e);
    expect(error).toMatchObject({ code: "TARGET_LOCKED" });
    expect((error as Error).message).toContain("ci@build-1 (pid 4242");
    await lock.release();
    await lock.release();
    const again = await second.lock(target, holder);
    await again.release();
  });
});

describe("createFileStateStore's journal", () => {
  const here: Holder = { ...holder, host: "elsewhere.example" };
  const entry = (n: number): NewJournalEntry => ({ phase: "intent", step: `launch:${n}`, op: "instances.launch", idempotencyKey: `r:launch:${n}`, release: 1, count: 1, instanceIds: [], time: "2026-01-01T00:00:00.000Z" });
  const rollout = (id: string, status: RolloutRecord["status"], journal: RolloutRecord["journal"] = []): RolloutRecord => ({
    id,
    target,
    kind: "deploy",
    fromRelease: undefined,
    toRelease: 1,
    startedAt: "2026-01-01T00:00:00.000Z",
    holder: here,
    status,
    journal,
  });
  const file = (suffix: string) => path.join(dir, `web@prod${suffix}`);

  /** A target with `history` finished rollouts (each with a journal of 40 entries) and a running one, "r-run". */
  async function withHistory(history: number): Promise<{ store: StateStore; token: number }> {
    const store = createFileStateStore({ directory: dir });
    const { token } = await store.lock(target, here, { ttlMs: 600_000 });
    await store.update(
      target,
      (state) => {
        for (let index = 0; index < history; index++) {
          state.rollouts.push(rollout(`r-old-${index}`, "succeeded", Array.from({ length: 40 }, (_, seq) => ({ ...entry(seq + 1), seq: seq + 1, instanceIds: [`i-${index}-${seq}`] }))));
        }
        state.rollouts.push(rollout("r-run", "running"));
      },
      { token },
    );
    return { store, token };
  }

  it("appends without reading or writing the state file, one line per entry whatever the history (the update before left each running rollout's last seq in the journal file)", async () => {
    const bytesPerAppend: number[][] = [];
    for (const history of [0, 200]) {
      await rm(dir, { recursive: true, force: true });
      const { store, token } = await withHistory(history);
      const before = await stat(file(".json"));
      const text = await readFile(file(".json"), "utf8");
      // Unreadable from here on: an append that read (or rewrote) the state would fail or change it.
      await writeFile(file(".json"), "{ not json");
      const corrupted = await stat(file(".json"));
      const sizes: number[] = [];
      for (let n = 1; n <= 30; n++) {
        const sizeBefore = (await stat(file(".journal.jsonl"))).size;
        const stored = await store.appendJournal(target, "r-run", entry(n), { token });
        expect(stored.seq).toBe(n);
        sizes.push((await stat(file(".journal.jsonl"))).size - sizeBefore);
      }
      const after = await stat(file(".json"));
      expect([after.ino, after.mtimeMs, after.size]).toEqual([corrupted.ino, corrupted.mtimeMs, corrupted.size]);
      await writeFile(file(".json"), text);
      // Each append wrote its own line and nothing else.
      expect(sizes).toEqual(Array.from({ length: 30 }, (_, index) => Buffer.byteLength(`${JSON.stringify({ rolloutId: "r-run", entry: { ...entry(index + 1), seq: index + 1 } })}\n`)));
      bytesPerAppend.push(sizes);
      const journal = (await store.read(target)).rollouts.at(-1)!.journal;
      expect(journal.map((e) => e.seq)).toEqual(Array.from({ length: 30 }, (_, index) => index + 1));
      expect(before.size).toBeGreaterThan(history * 1000);
    }
    // The same entries cost the same bytes with no history and with 200 rollouts of it.
    expect(bytesPerAppend[1]).toEqual(bytesPerAppend[0]);
  });

  it("keeps each finished rollout's journal on a line of its own, which an update that does not touch it neither parses nor rewrites", async () => {
    const { store, token } = await withHistory(3);
    const lines = (await readFile(file(".json"), "utf8")).split("\n");
    expect(lines.slice(1, 4).map((line) => (JSON.parse(line) as { rolloutId: string }).rolloutId)).toEqual(["r-old-0", "r-old-1", "r-old-2"]);
    // Spoil the journal of r-old-1 after its line's start: only reading that journal can notice.
    const spoiled = `${lines[2]!.slice(0, lines[2]!.indexOf('"journal":') + '"journal":'.length)}[{"seq": oops`;
    await writeFile(file(".json"), [lines[0], lines[1], spoiled, ...lines.slice(3)].join("\n"));
    for (let n = 1; n <= 3; n++) await store.appendJournal(target, "r-run", entry(n), { token });
    await store.update(target, (state) => void (state.rollouts.at(-1)!.status = "succeeded"), { token });
    const after = (await readFile(file(".json"), "utf8")).split("\n");
    expect(after[2]).toBe(spoiled);
    expect((JSON.parse(after[4]!) as { rolloutId: string; journal: unknown[] }).journal).toHaveLength(3);
    const state = await store.read(target);
    expect(state.rollouts[0]!.journal).toHaveLength(40);
    expect(() => state.rollouts[1]!.journal).toThrow(expect.objectContaining({ code: "STATE_CORRUPT" }));
    expect(state.rollouts.at(-1)!.journal.map((e) => e.seq)).toEqual([1, 2, 3]);
  });

  it("ignores a torn last line (a writer killed in the middle), cuts it off at the next append, and reports any other bad line as STATE_CORRUPT", async () => {
    const { store, token } = await withHistory(0);
    await store.appendJournal(target, "r-run", entry(1), { token });
    await appendFile(file(".journal.jsonl"), '{"rolloutId":"r-run","entry":{"seq":2,"pha');
    expect((await store.read(target)).rollouts[0]!.journal.map((e) => e.seq)).toEqual([1]);
    expect((await store.appendJournal(target, "r-run", entry(2), { token })).seq).toBe(2);
    const lines = (await readFile(file(".journal.jsonl"), "utf8")).split("\n");
    expect(lines).toHaveLength(4); // header, two entries, and the empty text after the last newline
    expect(lines.every((line) => line === "" || JSON.parse(line))).toBe(true);
    // A complete line that is not an entry was not torn: the file is not one Kiln wrote.
    await appendFile(file(".journal.jsonl"), "not json\n");
    await expect(store.read(target)).rejects.toMatchObject({ code: "STATE_CORRUPT" });
    await expect(store.appendJournal(target, "r-run", entry(3), { token })).rejects.toMatchObject({ code: "STATE_CORRUPT" });
  });

  it("loses and duplicates nothing when an update dies between writing the state file and removing the journal file", async () => {
    const { store, token } = await withHistory(0);
    for (let n = 1; n <= 3; n++) await store.appendJournal(target, "r-run", entry(n), { token });
    const journalText = await readFile(file(".journal.jsonl"));
    await store.update(target, (state) => void (state.rollouts[0]!.status = "succeeded"), { token });
    await expect(stat(file(".journal.jsonl"))).rejects.toMatchObject({ code: "ENOENT" });
    // As if the process died before it removed the journal file.
    await writeFile(file(".journal.jsonl"), journalText);
    expect((await store.read(target)).rollouts[0]!.journal.map((e) => e.seq)).toEqual([1, 2, 3]);
    expect((await store.appendJournal(target, "r-run", entry(4), { token })).seq).toBe(4);
    expect((await store.read(target)).rollouts[0]!.journal.map((e) => e.seq)).toEqual([1, 2, 3, 4]);

    // Entries an update dropped on purpose do not come back either.
    const again = await readFile(file(".journal.jsonl"));
    await store.update(target, (state) => void (state.rollouts[0]!.journal = []), { token });
    await writeFile(file(".journal.jsonl"), again);
    expect((await store.read(target)).rollouts[0]!.journal).toEqual([]);
    await store.update(target, () => undefined, { token });
    expect((await store.read(target)).rollouts[0]!.journal).toEqual([]);
  });

  it("numbers on from the journal file's header after an update while the rollout runs, and from its entries when an update died before replacing it", async () => {
    const { store, token } = await withHistory(0);
    for (let n = 1; n <= 3; n++) await store.appendJournal(target, "r-run", entry(n), { token });
    await store.update(target, (state) => void (state.currentRelease = 1), { token });
    const header = JSON.parse((await readFile(file(".journal.jsonl"), "utf8")).trim()) as { lastSeq?: Record<string, number> };
    expect(header.lastSeq).toEqual({ "r-run": 3 });
    expect((await store.appendJournal(target, "r-run", entry(4), { token })).seq).toBe(4);
    // As if the next update had died before it replaced the journal file: nothing is read twice.
    const journalText = await readFile(file(".journal.jsonl"));
    await store.update(target, (state) => void (state.currentRelease = 2), { token });
    await writeFile(file(".journal.jsonl"), journalText);
    expect((await store.read(target)).rollouts[0]!.journal.map((e) => e.seq)).toEqual([1, 2, 3, 4]);
    expect((await store.appendJournal(target, "r-run", entry(5), { token })).seq).toBe(5);
    expect((await store.read(target)).rollouts[0]!.journal.map((e) => e.seq)).toEqual([1, 2, 3, 4, 5]);
  });

  it("reads a format 1 state file (lease and journal inside) and moves its lease to the lease file at the first lock", async () => {
    const expired = { holder: here, token: 7, expiresAt: "2026-01-01T00:00:00.000Z", ttlMs: 30_000 };
    const legacy = { version: 1, state: { target, releases: [], rollouts: [rollout("r-old", "running", [{ ...entry(1), seq: 1 }])], lease: expired, fencingToken: 7 } };
    await writeFile(file(".json"), JSON.stringify(legacy));
    const store = createFileStateStore({ directory: dir });
    const read = await store.read(target);
    expect(read.lease).toEqual(expired);
    expect(read.fencingToken).toBe(7);
    expect(read.rollouts[0]!.journal.map((e) => e.seq)).toEqual([1]);
    const lock = await store.lock(target, holder, { ttlMs: 600_000 });
    expect(lock.token).toBe(8);
    expect(lock.tookOver).toMatchObject({ token: 7, stale: true });
    const rewritten = JSON.parse(await readFile(file(".json"), "utf8")) as { version: number; state: Record<string, unknown> };
    expect(rewritten.version).toBe(2);
    expect(rewritten.state).not.toHaveProperty("lease");
    expect(rewritten.state).not.toHaveProperty("fencingToken");
    expect(JSON.parse(await readFile(file(".lease.json"), "utf8"))).toMatchObject({ fencingToken: 8, lease: { token: 8 } });
    // The recorded journal goes on.
    expect((await store.appendJournal(target, "r-old", entry(2), { token: lock.token })).seq).toBe(2);
    await lock.release();
    expect(await store.listTargets()).toEqual([target]);
  });
});
