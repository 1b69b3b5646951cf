import { mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { RACY_MARGIN_MS, isCacheEntryUsable, readStatCache, writeStatCache, type StatCacheEntry } from "./stat-cache.js";

const entry: StatCacheEntry = { size: 10, mtimeMs: 1_000_000, ctimeMs: 1_000_000, ino: 42, mode: 0o100644, sha256: "a".repeat(64) };
const { sha256: _sha256, ...stat } = entry;

describe("isCacheEntryUsable", () => {
  it("accepts an unchanged, old entry", () => {
    expect(isCacheEntryUsable(entry, stat, entry.mtimeMs + RACY_MARGIN_MS + 1)).toBe(true);
  });

  it("rejects a racy entry even when every stat field matches", () => {
    // The file was hashed less than the margin after its last write: a same-size rewrite within
    // the filesystem's timestamp granularity would leave the stat data unchanged.
    expect(isCacheEntryUsable(entry, stat, entry.mtimeMs + RACY_MARGIN_MS)).toBe(false);
    expect(isCacheEntryUsable(entry, stat, entry.mtimeMs + 1)).toBe(false);
    expect(isCacheEntryUsable(entry, stat, entry.mtimeMs - 5_000)).toBe(false);
  });

  it.each(["size", "mtimeMs", "ctimeMs", "ino", "mode"] as const)("rejects a changed %s", (field) => {
    expect(isCacheEntryUsable(entry, { ...stat, [field]: stat[field] + 1 }, 10_000_000)).toBe(false);
  });
});

describe("readStatCache / writeStatCache", () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "kiln-stat-cache-"));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("round-trips, creating the folder, leaving no temporary file", async () => {
    const file = path.join(dir, "deep", "er", "cache.json");
    await writeStatCache(file, 123, [["a/b.txt", entry]]);
    const { cache, problem } = await readStatCache(file);
    expect(problem).toBeUndefined();
    expect(cache?.startedAtMs).toBe(123);
    expect(cache?.entries.get("a/b.txt")).toEqual(entry);
    expect(await readdir(path.dirname(file))).toEqual(["cache.json"]);
  });

  it("treats a missing file as empty without a problem, junk as empty with one", async () => {
    expect(await readStatCache(path.join(dir, "none.json"))).toEqual({});
    const file = path.join(dir, "junk.json");
    await writeFile(file, "{");
    expect((await readStatCache(file)).cache).toBeUndefined();
    expect((await readStatCache(file)).problem).toMatch(/JSON/);
    await writeFile(file, JSON.stringify({ format: "kiln-fingerprint-stat-cache", version: 2, startedAtMs: 1, entries: {} }));
    expect((await readStatCache(file)).problem).toMatch(/version 1/);
  });

  it("drops malformed entries and keeps the rest", async () => {
    const file = path.join(dir, "cache.json");
    await writeFile(
      file,
      JSON.stringify({
        format: "kiln-fingerprint-stat-cache",
        version: 1,
        startedAtMs: 5,
        entries: { good: [1, 2, 3, 4, 5, "b".repeat(64)], bad: [1, 2, "x"], short: [1, 2, 3, 4, 5, "abc"] },
      }),
    );
    const { cache } = await readStatCache(file);
    expect([...(cache?.entries.keys() ?? [])]).toEqual(["good"]);
  });
});
