import { describe, expect, it } from "vitest";
import { EXAMPLE_SPEC_YAML, SPEC_SCHEMA_ID, renderSpecReference, specJsonSchema } from "./json-schema.js";
import { parseSpec } from "./load.js";
import { formatSpecIssue } from "./issues.js";

type Node = Record<string, unknown>;

/** The value at a key path inside the schema. */
function dig(node: unknown, ...keys: string[]): unknown {
  let current = node;
  for (const key of keys) current = typeof current === "object" && current !== null ? (current as Node)[key] : undefined;
  return current;
}

describe("specJsonSchema", () => {
  const schema = specJsonSchema();

  it("is a draft 2020-12 schema with an $id and a title", () => {
    expect(schema.$schema).toBe("https://json-schema.org/draft/2020-12/schema");
    expect(schema.$id).toBe(SPEC_SCHEMA_ID);
    expect(schema.title).toBe("kiln.yaml");
    expect(schema.required).toEqual(["service"]);
  });

  it("lets x- keys through every strict mapping and the environments map, not free-form maps", () => {
    const strict: string[] = [];
    const visit = (node: unknown, where: string) => {
      if (Array.isArray(node)) return node.forEach((child, index) => visit(child, `${where}[${index}]`));
      if (typeof node !== "object" || node === null) return;
      const n = node as Node;
      if (n.additionalProperties === false) {
        strict.push(where);
        expect(n.patternProperties, where).toEqual({ "^x-": {} });
      }
      for (const [key, child] of Object.entries(n)) visit(child, `${where}/${key}`);
    };
    visit(schema, "#");
    expect(strict.length).toBeGreaterThan(10);
    expect(dig(schema, "properties", "environments", "patternProperties")).toEqual({ "^x-": {} });
    expect(dig(schema, "properties", "instances", "properties", "env", "patternProperties")).toBeUndefined();
    expect(dig(schema, "properties", "instances", "properties", "labels", "patternProperties")).toBeUndefined();
  });

  it("keeps descriptions and top-level defaults, and drops defaults from environment overrides", () => {
    expect(dig(schema, "properties", "instances", "properties", "count")).toMatchObject({ default: 1, description: expect.stringMatching(/^How many instances run/) });
    const prod = dig(schema, "properties", "environments", "additionalProperties");
    expect(dig(prod, "properties", "instances", "properties", "count")).not.toHaveProperty("default");
    expect(dig(prod, "properties", "rollout", "properties", "maxSurge")).not.toHaveProperty("default");
    expect(JSON.stringify(schema)).not.toContain("starts_with");
  });
});

// The committed kiln.schema.json and kiln-yaml.md are composed with the first-party providers;
// their staleness is checked where those are known (packages/cli/src/spec-reference.test.ts).
describe("the reference", () => {
  it("the reference's example is a valid spec", () => {
    const result = parseSpec(EXAMPLE_SPEC_YAML, { file: "example.yaml" });
    expect(result.ok ? [] : result.issues.map(formatSpecIssue)).toEqual([]);
  });

  it("the reference has a table row for every key", () => {
    const markdown = renderSpecReference(specJsonSchema());
    for (const row of ["`service`", "`instances.ports[].port`", "`health.http.expectStatus`", "`rollout.maxUnavailable`", "`environments.<name>.instances`"]) {
      expect(markdown).toContain(`| ${row} |`);
    }
  });
});
