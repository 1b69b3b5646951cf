// The committed JSON Schema and kiln.yaml reference are generated from core's schema composed with
// the first-party providers' sections (scripts/generate-spec-docs.ts); they must not go stale.
import { readFile } from "node:fs/promises";
import { renderSpecReference, specJsonSchema } from "@kilnjs/core";
import { describe, expect, it } from "vitest";
import { FIRST_PARTY_PROVIDER_SPECS } from "./first-party.js";

const REGENERATE = "run `node --import tsx scripts/generate-spec-docs.ts` and commit the result";

describe("generated spec files", () => {
  const schema = specJsonSchema({ providers: FIRST_PARTY_PROVIDER_SPECS });

  it("packages/core/schema/kiln.schema.json is up to date", async () => {
    const committed = await readFile(new URL("../../core/schema/kiln.schema.json", import.meta.url), "utf8");
    expect(committed, `kiln.schema.json is stale: ${REGENERATE}`).toBe(`${JSON.stringify(schema, null, 2)}\n`);
  });

  it("docs/reference/kiln-yaml.md is up to date", async () => {
    const committed = await readFile(new URL("../../../docs/reference/kiln-yaml.md", import.meta.url), "utf8");
    expect(committed, `kiln-yaml.md is stale: ${REGENERATE}`).toBe(renderSpecReference(schema));
  });

  it("describes every first-party provider's sections, and an environment may override them", () => {
    const markdown = renderSpecReference(schema);
    for (const row of ["`instances.aws`", "`instances.aws.instanceType`", "`image.machine.base.aws`", "`traffic.loadBalancer.aws.targetGroupArn`", "`environments.<name>.instances`"]) {
      expect(markdown).toContain(`| ${row} |`);
    }
    const properties = (node: unknown) => (node as { properties: Record<string, unknown> }).properties;
    const environment = (properties(schema).environments as { additionalProperties: unknown }).additionalProperties;
    expect(Object.keys(properties(properties(environment).instances))).toContain("aws");
  });
});
