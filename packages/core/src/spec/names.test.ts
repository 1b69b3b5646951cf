import { describe, expect, it } from "vitest";
import { NAME_PATTERN, nameMessage, nameProblems } from "./names.js";
import { validateSpec } from "./validate.js";

describe("names: which rule a name breaks, and where", () => {
  it("finds nothing wrong with a valid name, and agrees with the pattern", () => {
    for (const name of ["web", "hello-web", "a1", "w".repeat(40), "web--app"]) {
      expect(nameProblems(name), name).toEqual([]);
      expect(NAME_PATTERN.test(name), name).toBe(true);
    }
  });

  it("names each offending character with its position, uppercase with its fix", () => {
    expect(nameProblems("Web_App")).toEqual(['"W" at position 1 and "A" at 5 are uppercase (use "w", "a")', '"_" at position 4 is not allowed']);
    expect(nameProblems("café")).toEqual(['"é" at position 4 is not allowed (only ASCII letters)']);
    expect(nameProblems("a.b.c.d.e")).toEqual(['"." at position 2, "." at 4, "." at 6 and 1 more are not allowed']);
  });

  it("says what is wrong with the first and last character and by how much a name is too long", () => {
    expect(nameProblems("1web")).toEqual(['it starts with "1" (it must start with a letter)']);
    expect(nameProblems("-web")).toEqual(['it starts with "-" (it must start with a letter)']);
    expect(nameProblems("web-")).toEqual(['it ends with "-"']);
    expect(nameProblems("w".repeat(150))).toEqual(["it is 150 characters, 110 over the limit of 40"]);
    expect(nameProblems("")).toEqual(["it is empty"]);
  });

  it("flags every name the pattern refuses (so no invalid name gets a message without a reason)", () => {
    for (const name of ["Web", "we b", "wéb", "9", "w-", "-", "w".repeat(41), "web\u0000", "ab_c", "x".repeat(39) + "-"]) {
      expect(NAME_PATTERN.test(name), name).toBe(false);
      expect(nameProblems(name).length, name).toBeGreaterThan(0);
    }
  });

  it("reaches validation: the service and an environment's name each say what breaks the rule", () => {
    const result = validateSpec({ service: "Web_App", environments: { "Prod 1": {} } });
    expect(result.ok).toBe(false);
    const messages = Object.fromEntries(result.issues.map((issue) => [issue.path.join("."), issue.message]));
    expect(messages.service).toBe(nameMessage("a service name", "Web_App"));
    expect(messages.service).toContain('"_" at position 4 is not allowed');
    expect(messages["environments.Prod 1"]).toContain('an environment name: "Prod 1": "P" at position 1 is uppercase (use "p"); " " at position 5 is not allowed');
    expect(messages["environments.Prod 1"]).not.toContain("Invalid key");
  });
});
