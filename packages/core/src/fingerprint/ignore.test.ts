import { describe, expect, it } from "vitest";
import { createContextFilter, exceptionMayMatchInside } from "./ignore.js";

describe("createContextFilter", () => {
  it("keeps everything without patterns", () => {
    const filter = createContextFilter("# only a comment\n\n", []);
    expect(filter.includesFile("a/b")).toBe(true);
    expect(filter.entersDirectory("a")).toBe(true);
  });

  it("follows Docker's rules: folders, globs, **, later lines win, leading slash", () => {
    const filter = createContextFilter("node_modules\n*.log\n**/*.tmp\n/dist/\n!dist/keep.js\n", []);
    expect(filter.includesFile("node_modules/a/index.js")).toBe(false);
    expect(filter.includesFile("debug.log")).toBe(false);
    expect(filter.includesFile("sub/debug.log")).toBe(true); // `*.log` matches the root only
    expect(filter.includesFile("a/b/c.tmp")).toBe(false);
    expect(filter.includesFile("dist/x.js")).toBe(false);
    expect(filter.includesFile("dist/keep.js")).toBe(true);
    expect(filter.includesFile("src/index.js")).toBe(true);
  });

  it("keeps always-included paths whatever the patterns say", () => {
    const filter = createContextFilter("*\n", [".dockerignore", "build/app.Dockerfile"]);
    expect(filter.includesFile(".dockerignore")).toBe(true);
    expect(filter.includesFile("build/app.Dockerfile")).toBe(true);
    expect(filter.includesFile("build/other")).toBe(false);
    expect(filter.entersDirectory("build")).toBe(true);
    expect(filter.entersDirectory("src")).toBe(false);
  });

  it("prunes an excluded folder unless a ! pattern could match inside it", () => {
    const filter = createContextFilter("node_modules\nvendor\n!vendor/keep\ncache\n!**/important.txt\n", []);
    expect(filter.entersDirectory("node_modules")).toBe(true); // `!**/…` could match anywhere
    const strict = createContextFilter("node_modules\nvendor\n!vendor/keep\nlib/*/tmp\n!lib/a*/tmp/x\n", []);
    expect(strict.entersDirectory("node_modules")).toBe(false);
    expect(strict.entersDirectory("vendor")).toBe(true);
    expect(strict.entersDirectory("vendor/drop")).toBe(false);
    expect(strict.entersDirectory("vendor/keep")).toBe(true);
    expect(strict.entersDirectory("lib/abc/tmp")).toBe(true);
    expect(strict.entersDirectory("lib/xyz/tmp")).toBe(false);
  });
});

describe("exceptionMayMatchInside", () => {
  it.each([
    [["a", "b"], ["a"], true],
    [["a", "b"], ["a", "b"], true],
    [["a"], ["a", "b", "c"], true],
    [["a", "b"], ["c"], false],
    [["*", "b"], ["x"], true],
    [["?x"], ["yy"], false],
    [["**", "z"], ["q", "r"], true],
    [["[ab]", "z"], ["c"], true],
    [["a.b"], ["axb"], false],
  ])("%j inside %j → %s", (pattern, dir, expected) => {
    expect(exceptionMayMatchInside(pattern, dir)).toBe(expected);
  });
});
