import { validate as isUuid, version } from "uuid";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { GCE_REQUEST_ID_NAMESPACE, requestIdFor } from "./request-id.js";

describe("requestIdFor", () => {
  it("gives the same id for the same journal step and call, so a retry after a time-out repeats it", () => {
    const input = { step: "20261207041400-1a2b3c4d:b1", call: "instances.insert", resource: "web-prod-r3-0" };
    const id = requestIdFor(input);
    expect(requestIdFor({ ...input })).toBe(id);
    expect(isUuid(id)).toBe(true);
    expect(version(id)).toBe(5);
    expect(id).not.toBe("00000000-0000-0000-0000-000000000000");
    expect(version(GCE_REQUEST_ID_NAMESPACE)).toBe(5);
  });

  it("gives different ids to different steps, calls and resources, whatever characters they hold", () => {
    fc.assert(
      fc.property(
        fc.uniqueArray(fc.tuple(fc.string({ minLength: 1, maxLength: 12 }), fc.constantFrom("instances.insert", "instances.delete", "images.insert"), fc.string({ minLength: 1, maxLength: 12 })), {
          minLength: 2,
          maxLength: 100,
          selector: (tuple) => JSON.stringify(tuple),
        }),
        (inputs) => {
          const ids = inputs.map(([step, call, resource]) => requestIdFor({ step, call, resource }));
          expect(new Set(ids).size).toBe(inputs.length);
        },
      ),
    );
    // Fields are kept apart: moving a character from one field to the next changes the id.
    expect(requestIdFor({ step: "a:b", call: "c", resource: "d" })).not.toBe(requestIdFor({ step: "a", call: "b:c", resource: "d" }));
  });

  it("refuses an empty field", () => {
    expect(() => requestIdFor({ step: "", call: "instances.insert", resource: "x" })).toThrow(expect.objectContaining({ code: "INVALID_ARGUMENT" }));
  });
});
