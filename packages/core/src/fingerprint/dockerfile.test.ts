import { describe, expect, it } from "vitest";
import { expandVariables, parseInstructions, resolveBaseImages } from "./dockerfile.js";

describe("parseInstructions", () => {
  it("joins continuations, drops comments and reads the escape directive", () => {
    expect(parseInstructions("# syntax=docker/dockerfile:1\nFROM a \\\n  # a comment\n  AS b\nRUN x\n")).toEqual([
      { keyword: "FROM", rest: "a    AS b" },
      { keyword: "RUN", rest: "x" },
    ]);
    expect(parseInstructions("# escape=`\r\nfrom c:\\base `\r\n AS win\r\n")).toEqual([{ keyword: "FROM", rest: "c:\\base   AS win" }]);
  });
});

describe("expandVariables", () => {
  const vars: Record<string, string> = { SET: "v", EMPTY: "" };
  const lookup = (name: string): string | undefined => vars[name];
  it.each([
    ["$SET/${SET}", "v/v"],
    ["${UNSET:-d}|${EMPTY:-d}|${SET:-d}", "d|d|v"],
    ["${UNSET-d}|${EMPTY-d}", "d|"],
    ["${UNSET:+a}|${EMPTY:+a}|${SET:+a}", "||a"],
    ["${UNSET+a}|${EMPTY+a}", "|a"],
    ["${UNSET:-${SET}}", "v"],
    ["\\$SET", "$SET"],
  ])("%s → %s", (input, expected) => {
    expect(expandVariables(input, lookup)).toBe(expected);
  });
});

describe("resolveBaseImages", () => {
  it("substitutes ARG defaults and given build args", () => {
    const dockerfile = "ARG BASE_IMAGE=kiln-local/busybox\nARG TAG\nFROM ${BASE_IMAGE}\nFROM kiln-local/node:${TAG:-20}\n";
    expect(resolveBaseImages(dockerfile)).toEqual(["kiln-local/busybox", "kiln-local/node:20"]);
    expect(resolveBaseImages(dockerfile, { BASE_IMAGE: "kiln-local/node:20", TAG: "22" })).toEqual(["kiln-local/node:20", "kiln-local/node:22"]);
  });

  it("uses only ARGs declared before the first FROM, as Docker does", () => {
    expect(resolveBaseImages("FROM a\nARG LATE=x\nFROM b${LATE}\n", { LATE: "y" })).toEqual(["a", "b"]);
    expect(resolveBaseImages("FROM img:${UNDECLARED:-1}\n", { UNDECLARED: "2" })).toEqual(["img:1"]);
  });

  it("lets an ARG default use an earlier ARG, and quotes", () => {
    expect(resolveBaseImages('ARG REG="kiln-local"\nARG IMG=${REG}/node\nFROM $IMG:20\n')).toEqual(["kiln-local/node:20"]);
  });

  it("skips scratch and earlier stages, keeps flags out, removes duplicates", () => {
    const dockerfile = [
      "FROM --platform=$BUILDPLATFORM kiln-local/node:20 AS Build",
      "FROM build AS test",
      "from scratch",
      "FROM kiln-local/node:20",
      "FROM kiln-local/busybox as final",
      "COPY --from=build /a /a",
    ].join("\n");
    expect(resolveBaseImages(dockerfile)).toEqual(["kiln-local/node:20", "kiln-local/busybox"]);
  });

  it("keeps automatic platform arguments as written", () => {
    expect(resolveBaseImages("FROM kiln-local/base-${TARGETARCH}\n")).toEqual(["kiln-local/base-${TARGETARCH}"]);
    expect(resolveBaseImages("ARG TARGETARCH\nFROM kiln-local/base-${TARGETARCH}\n", { TARGETARCH: "arm64" })).toEqual(["kiln-local/base-arm64"]);
  });

  it("names an image the same as a later stage", () => {
    expect(resolveBaseImages("FROM deps\nFROM kiln-local/busybox AS deps\n")).toEqual(["deps", "kiln-local/busybox"]);
  });
});
