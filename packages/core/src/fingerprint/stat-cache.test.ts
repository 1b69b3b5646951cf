import { createHash } from "node:crypto";
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
  /** A cache file's text with a correct header for `lines` (each without its newline). */
  const cacheText = (startedAtMs: number, lines: readonly string[]) => {
    const body = lines.map((line) => `${line}\n`).join("");
    return `kiln-fingerprint-stat-cache 2 ${startedAtMs} ${lines.length} ${createHash("sha256").update(body).digest("hex")}\n${body}`;
  };

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

  it("is one line per file after a versioned header with the lines' checksum", () => {
    expect(formatStatCache(5, [["src/a b.js", entry]])).toBe(cacheText(5, [`10 1000000 1000000 42 33188 ${entry.sha256} src/a b.js`]));
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
      cacheText(1, []).replace(" 2 ", " 3 "),
      cacheText(1, []).replace(" 1 0 ", " soon 0 "),
      // Version 2 without its checksum.
      "kiln-fingerprint-stat-cache 2 1 0\n",
      cacheText(1, []).slice(0, -1),
      "",
    ];
    for (const text of junk) {
      await writeFile(file, text);
      const read = await readStatCache(file);
      expect(read.cache, text).toBeUndefined();
      expect(read.problem, text).toMatch(/not a version 2 fingerprint stat cache/);
    }
  });

  it("refuses a changed, damaged, cut-short or spliced file as a whole", () => {
    const text = formatStatCache(7, [
      ["a", entry],
      ["b", entry],
    ]);
    expect(parseStatCache(text).cache?.size).toBe(2);
    // One digit of a number changed: every field still parses, the checksum tells.
    expect(parseStatCache(text.replace(" 42 ", " 43 ")).problem).toMatch(/checksum does not match/);
    // The last line lost its end, or a whole line lost.
    expect(parseStatCache(text.slice(0, -1)).problem).toMatch(/checksum does not match/);
    expect(parseStatCache(text.slice(0, text.lastIndexOf("\n", text.length - 2) + 1)).problem).toMatch(/checksum does not match/);
    // With a checksum that matches (a writer's mistake, not damage): the structure is checked too.
    const lines = text.split("\n").slice(1, -1);
    expect(parseStatCache(cacheText(7, lines).replace(" 7 2 ", " 7 3 ")).problem).toMatch(/counts 3 entries but the file holds 2/);
    expect(parseStatCache(cacheText(7, ["10 20 30"])).problem).toMatch(/line 2 has fewer than 7 fields/);
    const unended = `1 2 3 4 5 ${sha("c")} last`;
    expect(parseStatCache(`kiln-fingerprint-stat-cache 2 7 1 ${createHash("sha256").update(unended).digest("hex")}\n${unended}`).problem).toMatch(/cut short/);
  });

  it("drops malformed entries and keeps the rest", () => {
    const lines = [
      `1 2 3 4 5 ${sha("b")} good`,
      `1 2 x 4 5 ${sha("b")} bad-number`,
      `1 2 3 4 5 abc short-digest`,
      `1 2  4 5 ${sha("b")} empty-field`,
      `1 2 3 4 Infinity ${sha("b")} infinite`,
    ];
    const { cache, problem } = parseStatCache(cacheText(5, lines));
    expect(problem).toBeUndefined();
    expect(cache?.get("good")).toEqual({ size: 1, mtimeMs: 2, ctimeMs: 3, ino: 4, mode: 5, sha256: sha("b") });
    for (const name of ["bad-number", "short-digest", "empty-field", "infinite"]) expect(cache?.get(name), name).toBeUndefined();
  });
});
