import { describe, expect, it } from "vitest";
import { NAME_MAX_LENGTH, NAME_PATTERN } from "./spec/names.js";
import { resourceName, type Target } from "./target.js";

/** Every valid name of up to `length` characters over `alphabet` (dashes included), in order. */
function namesOver(alphabet: string, length: number): string[] {
  const found: string[] = [];
  let level = [""];
  for (let size = 1; size <= length; size++) {
    level = level.flatMap((stem) => [...alphabet].map((character) => stem + character));
    found.push(...level.filter((name) => NAME_PATTERN.test(name)));
  }
  return found;
}

/** A small deterministic generator (mulberry32), so a failure can be replayed. */
function random(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A valid name of 1 to {@link NAME_MAX_LENGTH} characters, dense in dashes. */
function randomName(next: () => number): string {
  const length = 1 + Math.floor(next() * NAME_MAX_LENGTH);
  const letters = "ab-";
  let name = "a";
  while (name.length < length) name += letters[Math.floor(next() * letters.length)];
  return name.replace(/-+$/, "") || "a";
}

/** Asserts that `name` gives each distinct input a distinct name (reports the first collision). */
function expectInjective<T>(inputs: readonly T[], name: (input: T) => string, key: (input: T) => string): void {
  const seen = new Map<string, string>();
  for (const input of inputs) {
    const given = name(input);
    const earlier = seen.get(given);
    if (earlier !== undefined && earlier !== key(input)) expect.fail(`${earlier} and ${key(input)} both get the name ${given}`);
    seen.set(given, key(input));
  }
}

const DOCKER_NAME = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;
/** AMI names: 3-128 characters of letters, digits, ( ) [ ] space . / - ' @ _ (EC2 CreateImage). */
const AMI_NAME = /^[a-zA-Z0-9()[\] ./\-'@_]{3,128}$/;

describe("resourceName", () => {
  it("joins prefix, service, environment and parts with dots", () => {
    expect(resourceName({ service: "web", environment: "prod" }, { prefix: "kiln-proxy" })).toBe("kiln-proxy.web.prod");
    expect(resourceName({ service: "web", environment: "prod" }, { parts: ["r3", "1a2b3c"] })).toBe("web.prod.r3.1a2b3c");
  });

  it("tells a-b@c from a@b-c, the pair that shared one front proxy", () => {
    const first: Target = { service: "a-b", environment: "c" };
    const second: Target = { service: "a", environment: "b-c" };
    for (const options of [{}, { prefix: "kiln-proxy" }, { prefix: "kiln" }, { parts: ["r1", "abcdef"] }]) {
      expect(resourceName(first, options)).not.toBe(resourceName(second, options));
    }
  });

  it("never gives two targets of short dashed names the same name (every pair over a, b and -)", () => {
    const names = namesOver("ab-", 5);
    expect(names.length).toBeGreaterThan(50);
    const targets = names.flatMap((service) => names.map((environment) => ({ service, environment })));
    const key = (target: Target) => `${target.service}@${target.environment}`;
    expectInjective(targets, (target) => resourceName(target, { prefix: "kiln-proxy" }), key);
    expectInjective(targets, (target) => resourceName(target), key);
    // With parts too: the target and the parts are read back apart.
    const withParts = targets.slice(0, 400).flatMap((target) => ["r1", "r1-2", "r12"].map((release) => ({ target, parts: [release, "ab"] })));
    expectInjective(withParts, (input) => resourceName(input.target, { parts: input.parts }), (input) => `${key(input.target)} ${input.parts.join(" ")}`);
  });

  it("keeps long names within the limit, distinct, and valid for Docker, AMI names and EC2 tags", () => {
    const next = random(11);
    const targets: Target[] = [];
    for (let i = 0; i < 3000; i++) targets.push({ service: randomName(next), environment: randomName(next) });
    const key = (target: Target) => `${target.service}@${target.environment}`;
    for (const maxLength of [32, 63, 128, 256]) {
      const options = { prefix: "kiln-proxy", parts: ["r123456", "0123456789abcdef"], maxLength };
      expectInjective(targets, (target) => resourceName(target, options), key);
      for (const target of targets) {
        const name = resourceName(target, options);
        expect(name.length).toBeLessThanOrEqual(maxLength);
        expect(name).toMatch(DOCKER_NAME);
        if (maxLength <= 128) expect(name).toMatch(AMI_NAME);
      }
    }
  });

  it("cuts a name that is too long with a digest of the whole, never matching an uncut name", () => {
    const target: Target = { service: "s".repeat(40), environment: "e".repeat(40) };
    const cut = resourceName(target, { prefix: "kiln-proxy", maxLength: 64 });
    expect(cut).toHaveLength(64);
    expect(cut).toMatch(/^kiln-proxy\.s+_[0-9a-f]{12}$/);
    // The same cut prefix, another environment: another digest.
    expect(resourceName({ ...target, environment: `${"e".repeat(39)}f` }, { prefix: "kiln-proxy", maxLength: 64 })).not.toBe(cut);
    expect(resourceName({ service: "web", environment: "prod" }, { maxLength: 64 })).not.toContain("_");
  });

  it("refuses characters that would break injectivity", () => {
    expect(() => resourceName({ service: "a.b", environment: "c" })).toThrow(expect.objectContaining({ code: "INVALID_ARGUMENT" }));
    expect(() => resourceName({ service: "a", environment: "c" }, { parts: ["x.y"] })).toThrow(expect.objectContaining({ code: "INVALID_ARGUMENT" }));
    expect(() => resourceName({ service: "a", environment: "c" }, { prefix: "kiln_proxy" })).toThrow(expect.objectContaining({ code: "INVALID_ARGUMENT" }));
    expect(() => resourceName({ service: "a", environment: "c" }, { maxLength: 10 })).toThrow(expect.objectContaining({ code: "INVALID_ARGUMENT" }));
  });
});
