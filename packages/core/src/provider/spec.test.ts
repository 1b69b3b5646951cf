import { describe, expect, expectTypeOf, it } from "vitest";
import { z } from "zod";
import { isKilnError } from "../errors.js";
import { defineProviderSpec, readSection } from "./spec.js";

const spec = defineProviderSpec({
  imageFormat: "machine",
  sections: {
    instances: z.strictObject({ machineType: z.string().default("e2-small"), diskGb: z.number().int().positive().optional() }).prefault({}),
    base: z.strictObject({ family: z.string() }),
  },
});

describe("readSection", () => {
  it("parses a handed-back section with the provider's schema, defaults applied", () => {
    expect(readSection(spec, "instances", { diskGb: 20 })).toEqual({ machineType: "e2-small", diskGb: 20 });
    expect(readSection(spec, "base", { family: "debian-12" })).toEqual({ family: "debian-12" });
  });

  it("gives the defaults of a schema that accepts an absent section, else undefined; undefined for a key without a schema", () => {
    expect(readSection(spec, "instances", undefined)).toEqual({ machineType: "e2-small" });
    expect(readSection(spec, "base", undefined)).toBeUndefined();
    expect(readSection(spec, "loadBalancer", { anything: true })).toBeUndefined();
    // Typed to match: a section with defaults never comes back undefined, one without may.
    expectTypeOf(readSection(spec, "instances", undefined)).not.toBeNullable();
    expectTypeOf(readSection(spec, "base", undefined)).toBeNullable();
  });

  it("refuses a value the schema does not accept, naming the section and the field", () => {
    let caught: unknown;
    try {
      readSection(spec, "instances", { diskGb: -1 });
    } catch (error) {
      caught = error;
    }
    expect(isKilnError(caught, "INVALID_ARGUMENT")).toBe(true);
    expect((caught as Error).message).toContain("instances.<provider>.diskGb");
  });
});
