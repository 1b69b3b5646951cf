import { describe, expect, it } from "vitest";
import { directoryCacheFileOf, formatDirectoryCache, isListingUsable, parseDirectoryCache, type DirectoryListing } from "./directory-cache.js";

const KEY = "a".repeat(64);
const listing = (overrides: Partial<DirectoryListing> = {}): DirectoryListing => ({
  stat: { mtimeMs: 1_000.5, ctimeMs: 1_000.5, ino: 42 },
  directories: ["src"],
  files: ["Dockerfile", "a file with spaces.txt"],
  unknown: ["odd"],
  ...overrides,
});

describe("directory cache", () => {
  it("reads back what it wrote, the root as '' and names with spaces", () => {
    const text = formatDirectoryCache(5_000, KEY, [
      ["", listing()],
      ["src/deep dir", listing({ directories: [], unknown: [] })],
    ]);
    const { cache, problem } = parseDirectoryCache(text);
    expect(problem).toBeUndefined();
    expect(cache?.startedAtMs).toBe(5_000);
    expect(cache?.rulesKey).toBe(KEY);
    expect(cache?.size).toBe(2);
    expect(cache?.get("")).toEqual(listing());
    expect(cache?.get("src/deep dir")).toEqual(listing({ directories: [], unknown: [] }));
    expect(cache?.get("src")).toBeUndefined();
  });

  it("leaves out a folder whose path or an entry's name holds a tab or a newline", () => {
    const text = formatDirectoryCache(5_000, KEY, [
      ["", listing({ files: ["tab\there"] })],
      ["new\nline", listing()],
      ["kept", listing()],
    ]);
    const { cache } = parseDirectoryCache(text);
    expect(cache?.size).toBe(1);
    expect(cache?.get("")).toBeUndefined();
    expect(cache?.get("kept")).toEqual(listing());
  });

  it("trusts a listing only with the same stat data and an mtime out of the racy window", () => {
    const cached = listing();
    expect(isListingUsable(cached, { mtimeMs: 1_000.5, ctimeMs: 1_000.5, ino: 42 }, 10_000)).toBe(true);
    expect(isListingUsable(cached, { mtimeMs: 1_000.6, ctimeMs: 1_000.5, ino: 42 }, 10_000)).toBe(false);
    expect(isListingUsable(cached, { mtimeMs: 1_000.5, ctimeMs: 2_000, ino: 42 }, 10_000)).toBe(false);
    expect(isListingUsable(cached, { mtimeMs: 1_000.5, ctimeMs: 1_000.5, ino: 43 }, 10_000)).toBe(false);
    // Listed within 2 s of the mtime: an entry added in the same clock tick would not show.
    expect(isListingUsable(cached, { mtimeMs: 1_000.5, ctimeMs: 1_000.5, ino: 42 }, 2_500)).toBe(false);
  });

  it("lives beside the stat cache", () => {
    expect(directoryCacheFileOf("/p/.kiln/cache/fingerprint-web@prod.stat-cache")).toBe("/p/.kiln/cache/fingerprint-web@prod.directory-cache");
    expect(directoryCacheFileOf("/tmp/cache.json")).toBe("/tmp/cache.json.directory-cache");
  });
});
