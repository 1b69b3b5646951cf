import { mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { RACY_MARGIN_MS, formatStatCache, isCacheEntryUsable, parseStatCache, readStatCache, writeStatCache, type StatCacheEntry } from "./stat-cache.js";

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

  const sha = (char: string) => char.repeat(64);
  const header = (startedAtMs: number, count: number) => `kiln-fingerprint-stat-cache 2 ${startedAtMs} ${count}\n`;

  it("round-trips, creating the folder, leaving no temporary file", async () => {
    const file = path.join(dir, "deep", "er", "cache");
    const fractional: StatCacheEntry = { ...entry, mtimeMs: 1_704_067_200_123.456, ctimeMs: 1_704_067_200_999.001 };
    await writeStatCache(file, 123, [
      ["a/b.txt", entry],
      ["with space/and\ttab .txt", fractional],
    ]);
    const { cache, problem } = await readStatCache(file);
    expect(problem).toBeUndefined();
    expect(cache?.startedAtMs).toBe(123);
    expect(cache?.size).toBe(2);
    expect(cache?.get("a/b.txt")).toEqual(entry);
    expect(cache?.get("with space/and\ttab .txt")).toEqual(fractional);
    expect(cache?.get("a")).toBeUndefined();
    expect(await readdir(path.dirname(file))).toEqual(["cache"]);
  });

  it("is one line per file after a versioned header", () => {
    expect(formatStatCache(5, [["src/a b.js", entry]])).toBe(`${header(5, 1)}10 1000000 1000000 42 33188 ${entry.sha256} src/a b.js\n`);
  });

  it("leaves out a path with a newline, which cannot be written on one line", async () => {
    const file = path.join(dir, "cache");
    await writeStatCache(file, 1, [
      ["odd\nname", entry],
      ["plain", entry],
    ]);
    const { cache } = await readStatCache(file);
    expect(cache?.size).toBe(1);
    expect(cache?.get("plain")).toEqual(entry);
  });

  it("treats a missing file as empty without a problem, junk as empty with one", async () => {
    expect(await readStatCache(path.join(dir, "none"))).toEqual({});
    const file = path.join(dir, "junk");
    const junk = [
      "{",
      // Version 1 was a JSON document.
      JSON.stringify({ format: "kiln-fingerprint-stat-cache", version: 1, startedAtMs: 1, entries: { a: [1, 2, 3, 4, 5, sha("b")] } }),
      "kiln-fingerprint-stat-cache 3 1 0\n",
      "kiln-fingerprint-stat-cache 2 soon 0\n",
      "kiln-fingerprint-stat-cache 2 1 0",
      "",
    ];
    for (const text of junk) {
      await writeFile(file, text);
      const read = await readStatCache(file);
      expect(read.cache, text).toBeUndefined();
      expect(read.problem, text).toMatch(/not a version 2 fingerprint stat cache/);
    }
  });

  it("refuses a cut-short or spliced file as a whole", async () => {
    const file = path.join(dir, "cache");
    await writeStatCache(file, 7, [
      ["a", entry],
      ["b", entry],
    ]);
    const whole = parseStatCache(formatStatCache(7, [["a", entry], ["b", entry]]));
    expect(whole.cache?.size).toBe(2);
    const text = formatStatCache(7, [["a", entry], ["b", entry]]);
    // The last line lost its end.
    expect(parseStatCache(text.slice(0, -1)).problem).toMatch(/cut short/);
    // A whole line lost: the header's count tells.
    expect(parseStatCache(text.slice(0, text.lastIndexOf("\n", text.length - 2) + 1)).problem).toMatch(/counts 2 entries but the file holds 1/);
    // A line without its fields.
    expect(parseStatCache(`${header(7, 1)}10 20 30\n`).problem).toMatch(/line 2 has fewer than 7 fields/);
  });

  it("drops malformed entries and keeps the rest", () => {
    const lines = [
      `1 2 3 4 5 ${sha("b")} good`,
      `1 2 x 4 5 ${sha("b")} bad-number`,
      `1 2 3 4 5 ${"B".repeat(64)} upper-case-digest`,
      `1 2 3 4 5 abc short-digest`,
      `1 2  4 5 ${sha("b")} empty-field`,
      `1 2 3 4 Infinity ${sha("b")} infinite`,
    ];
    const { cache, problem } = parseStatCache(`${header(5, lines.length)}${lines.join("\n")}\n`);
    expect(problem).toBeUndefined();
    expect(cache?.get("good")).toEqual({ size: 1, mtimeMs: 2, ctimeMs: 3, ino: 4, mode: 5, sha256: sha("b") });
    for (const name of ["bad-number", "upper-case-digest", "short-digest", "empty-field", "infinite"]) expect(cache?.get(name), name).toBeUndefined();
  });
});
