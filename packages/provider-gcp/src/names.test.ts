// The names Kiln derives for Compute Engine: always valid under the published rule and never the
// same for different inputs, however long the inputs (property tests in the spirit of core's
// resourceName test: every short input exhaustively, then long random ones).
import { NAME_MAX_LENGTH, NAME_PATTERN, type Target } from "@kilnjs/core";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { builderDiskName, builderName, gceName, imageName, instanceName, textToken } from "./names.js";
import { GCE_NAME_MAX_LENGTH, GCE_NAME_PATTERN } from "./rules.js";

/** Every string of 1 to `length` characters over `alphabet` that is a valid service or environment name. */
function namesOver(alphabet: string, length: number): string[] {
  const grow = (stems: string[]): string[] => stems.flatMap((stem) => [...alphabet].map((character) => `${stem}${character}`));
  const levels = Array.from({ length }, () => [] as string[]).reduce<string[][]>((all) => [...all, grow(all.at(-1) ?? [""])], []);
  return levels.flat().filter((name) => NAME_PATTERN.test(name));
}

/** The first two inputs (by `key`) that `name` maps to the same name, if any. */
function firstCollision<T>(inputs: readonly T[], name: (input: T) => string, key: (input: T) => string): string | undefined {
  const owner = new Map<string, string>();
  return inputs
    .map((input) => {
      const earlier = owner.get(name(input));
      owner.set(name(input), key(input));
      return earlier !== undefined && earlier !== key(input) ? `${earlier} and ${key(input)} both get ${name(input)}` : undefined;
    })
    .find((found) => found !== undefined);
}

/** The parts of an uncut name: a run of one dash joins, a run of 2k dashes is k dashes of a part. */
function readBack(name: string): string[] {
  const parts = [""];
  for (const piece of name.split(/(-+)/)) {
    if (piece === "-") parts.push("");
    else if (piece.startsWith("-")) {
      expect(piece.length % 2, `run of ${piece.length} dashes in ${name}`).toBe(0);
      parts[parts.length - 1] += "-".repeat(piece.length / 2);
    } else parts[parts.length - 1] += piece;
  }
  return parts;
}

/** Fails with the first two inputs that get the same name. */
function expectInjective<T>(inputs: readonly T[], name: (input: T) => string, key: (input: T) => string): void {
  expect(firstCollision(inputs, name, key)).toBeUndefined();
}

/** A valid service or environment name, dense in dashes, up to core's 40 characters. */
const targetPart = fc
  .tuple(fc.constantFrom("a", "b"), fc.array(fc.constantFrom("a", "b", "1", "-"), { maxLength: NAME_MAX_LENGTH - 1 }))
  .map(([first, rest]) => `${first}${rest.join("")}`.replace(/-+$/, ""))
  .filter((name) => NAME_PATTERN.test(name));
const target = fc.record({ service: targetPart, environment: targetPart });
/** Launch keys as core writes them (`<rollout id>:<step>`) and any other text. */
const launchKey = fc.oneof(
  fc.tuple(fc.stringMatching(/^\d{14}-[0-9a-f]{8}$/), fc.stringMatching(/^[a-z0-9-]{1,12}$/)).map(([rollout, step]) => `${rollout}:${step}`),
  fc.string({ unit: "grapheme", minLength: 1, maxLength: 40 }),
);
const launch = fc.record({ target, release: fc.nat({ max: 100_000 }), launchKey, index: fc.nat({ max: 999 }) });
const keyOf = (input: { target: Target; release: number; launchKey: string; index: number }) => JSON.stringify([input.target.service, input.target.environment, input.release, input.launchKey, input.index]);

describe("gceName", () => {
  it("doubles dashes inside parts, so a-b@c and a@b-c differ", () => {
    expect(gceName(["a-b", "c"])).toBe("a--b-c");
    expect(gceName(["a", "b-c"])).toBe("a-b--c");
    expect(gceName(["web", "prod", "r3"])).toBe("web-prod-r3");
  });

  it("never gives two short part lists the same name (every pair of target names over a, b, 1 and -)", () => {
    const names = namesOver("ab1-", 4);
    expect(names.length).toBeGreaterThan(80);
    const pairs = names.flatMap((service) => names.map((environment) => [service, environment]));
    expectInjective(pairs, (parts) => gceName(parts), (parts) => parts.join("@"));
    // Lists of different lengths too: a name is never another list's name.
    const lists = [...pairs, ...names.map((name) => [name]), ...pairs.slice(0, 500).map((pair) => [...pair, "x"])];
    expectInjective(lists, (parts) => gceName(parts), (parts) => JSON.stringify(parts));
  });

  it("cuts a long name to the limit with a digest after exactly three dashes, which no uncut name holds", () => {
    const long = gceName(["s".repeat(40), "e".repeat(40), "r12"]);
    expect(long).toHaveLength(GCE_NAME_MAX_LENGTH);
    expect(long).toMatch(/^s+-e+---[0-9a-f]{16}$/);
    // A cut that would end in a dash drops it, so the marker stays exactly three dashes.
    const cutAtDash = gceName(["a".repeat(43), "b".repeat(30)]);
    expect(cutAtDash).toMatch(/^a{43}---[0-9a-f]{16}$/);
    expect(gceName(["web", "prod"], 58)).toBe("web-prod");
    fc.assert(
      fc.property(fc.array(targetPart, { minLength: 1, maxLength: 4 }), (parts) => {
        const name = gceName(parts);
        expect(name).toMatch(GCE_NAME_PATTERN);
        const cut = /(^|[^-])---[0-9a-f]{16}$/.test(name);
        // An uncut name reads back to its parts (the mapping is one-to-one); a cut one is at the limit.
        if (cut) expect(name).toHaveLength(GCE_NAME_MAX_LENGTH);
        else expect(readBack(name)).toEqual(parts);
      }),
      { numRuns: 500 },
    );
  });

  it("refuses parts that would break the mapping, and limits out of range", () => {
    expect(() => gceName(["a-", "b"])).toThrow(expect.objectContaining({ code: "INVALID_ARGUMENT" }));
    expect(() => gceName(["1a"])).toThrow(expect.objectContaining({ code: "INVALID_ARGUMENT" }));
    expect(() => gceName(["a", "B"])).toThrow(expect.objectContaining({ code: "INVALID_ARGUMENT" }));
    expect(() => gceName(["a"], 64)).toThrow(expect.objectContaining({ code: "INVALID_ARGUMENT" }));
    expect(() => gceName(["a"], 31)).toThrow(expect.objectContaining({ code: "INVALID_ARGUMENT" }));
  });
});

describe("textToken", () => {
  it("keeps readable text and escapes the rest one-to-one", () => {
    expect(textToken("20261207041400-1a2b3c4d:b1")).toBe("20261207041400-1a2b3c4dz3ab1");
    expect(textToken("zone")).toBe("zzone");
    expect(textToken("-a-")).toBe("z2daz2d");
    expect(textToken("a-b")).toBe("a-b");
    expect(() => textToken("")).toThrow(expect.objectContaining({ code: "INVALID_ARGUMENT" }));
  });

  it("gives different texts different tokens, each a valid name part", () => {
    fc.assert(
      fc.property(fc.uniqueArray(fc.string({ unit: "binary", minLength: 1, maxLength: 12 }), { minLength: 2, maxLength: 50 }), (texts) => {
        const tokens = texts.map(textToken);
        expect(new Set(tokens).size).toBe(texts.length);
        for (const token of tokens) expect(token).toMatch(/^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$/);
      }),
      { numRuns: 100 },
    );
  });
});

describe("the names Kiln gives instances, builders, disks and images", () => {
  it("writes readable names when they fit", () => {
    const web = { service: "web", environment: "prod" };
    expect(instanceName({ target: web, release: 3, launchKey: "20261207041400-1a2b3c4d:b1", index: 0 })).toBe("web-prod-r3-20261207041400--1a2b3c4dz3ab1-0");
    expect(builderName({ target: web, step: "20261207041400-1a2b3c4d:bake" })).toBe("web-prod-20261207041400--1a2b3c4dz3abake-bake");
    expect(builderDiskName({ target: web, step: "x" })).toBe("web-prod-x-bake-disk");
    expect(imageName({ service: "web", fingerprint: `sha256:${"0".repeat(63)}1` })).toBe(`web-${"0".repeat(49)}1`);
  });

  it("keeps every instance name valid and distinct, however long the inputs", () => {
    fc.assert(
      fc.property(fc.uniqueArray(launch, { minLength: 2, maxLength: 200, selector: keyOf }), (inputs) => {
        expectInjective(inputs, (input) => instanceName(input), keyOf);
        for (const input of inputs) {
          const name = instanceName(input);
          expect(name.length).toBeLessThanOrEqual(GCE_NAME_MAX_LENGTH);
          expect(name).toMatch(GCE_NAME_PATTERN);
          // A managed instance group's baseInstanceName takes 58 characters.
          expect(instanceName(input, 58).length).toBeLessThanOrEqual(58);
        }
      }),
      { numRuns: 200 },
    );
  });

  it("never gives a builder, its disk or an instance the same name, nor two images of different fingerprints", () => {
    fc.assert(
      fc.property(launch, fc.string({ minLength: 1, maxLength: 30 }), (input, step) => {
        const builder = { target: input.target, step };
        const names = [instanceName(input), builderName(builder), builderDiskName(builder)];
        expect(new Set(names).size).toBe(3);
        for (const name of names) expect(name).toMatch(GCE_NAME_PATTERN);
      }),
      { numRuns: 500 },
    );
    fc.assert(
      fc.property(targetPart, fc.uniqueArray(fc.stringMatching(/^[0-9a-f]{64}$/), { minLength: 2, maxLength: 20 }), (service, digests) => {
        const names = digests.map((digest) => imageName({ service, fingerprint: `sha256:${digest}` }));
        expect(new Set(names).size).toBe(digests.length);
        for (const name of names) expect(name).toMatch(GCE_NAME_PATTERN);
      }),
      { numRuns: 200 },
    );
    expect(() => imageName({ service: "web", fingerprint: "md5:abc" })).toThrow(expect.objectContaining({ code: "INVALID_ARGUMENT" }));
    expect(() => instanceName({ target: { service: "web", environment: "prod" }, release: -1, launchKey: "k", index: 0 })).toThrow(expect.objectContaining({ code: "INVALID_ARGUMENT" }));
  });
});
