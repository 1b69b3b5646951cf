// Kiln's labels in Compute Engine's alphabet: every encoded value is a valid label value, and
// reads back to the text (or, past 63 characters, stays distinct and filterable).
import { LABELS } from "@kilnjs/core";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { GCE_KILN_INSTANCE_LABEL_COUNT, GCE_LABEL_KEYS, decodeLabelValue, encodeLabelValue, expiryLabelValue, fromGceLabels, parseExpiryLabelValue, toGceLabels } from "./labels.js";
import { gceLabelProblems } from "./rules.js";

const FINGERPRINT = `sha256:${"0123456789abcdef".repeat(4)}`;

describe("label values", () => {
  it("keeps lowercase values as they are and escapes the rest", () => {
    expect(encodeLabelValue("web")).toBe("web");
    expect(encodeLabelValue("20261207041400-1a2b3c4d:b1")).toBe("20261207041400-1a2b3c4d_3ab1");
    expect(encodeLabelValue("a_B")).toBe("a_5f_42");
    expect(encodeLabelValue("")).toBe("");
    const fingerprint = encodeLabelValue(FINGERPRINT);
    expect(fingerprint).toMatch(/^_s[0-9a-z]{50}$/);
    expect(decodeLabelValue(fingerprint)).toBe(FINGERPRINT);
    expect(decodeLabelValue(encodeLabelValue(`sha256:${"0".repeat(64)}`))).toBe(`sha256:${"0".repeat(64)}`);
  });

  it("reads back every value that fits, and keeps every value valid", () => {
    fc.assert(
      fc.property(fc.string({ unit: "binary", maxLength: 80 }), (text) => {
        const value = encodeLabelValue(text);
        expect(gceLabelProblems({ key: value }, 0)).toEqual([]);
        const decoded = decodeLabelValue(value);
        if (decoded !== undefined) expect(decoded).toBe(text);
        else expect(value).toMatch(/_h[0-9a-f]{16}$/);
      }),
      { numRuns: 500 },
    );
  });

  it("gives different texts different values, hashed ones included", () => {
    fc.assert(
      fc.property(fc.uniqueArray(fc.oneof(fc.string({ maxLength: 120 }), fc.stringMatching(/^sha256:[0-9a-f]{64}$/)), { minLength: 2, maxLength: 100 }), (texts) => {
        expect(new Set(texts.map(encodeLabelValue)).size).toBe(texts.length);
      }),
      { numRuns: 200 },
    );
    // A long value keeps its readable start before the hash.
    expect(encodeLabelValue("http:8080/tcp,".repeat(10))).toMatch(/^(http_3a8080_2ftcp_2c){2}http_h[0-9a-f]{16}$/);
    expect(decodeLabelValue("not_valid")).toBeUndefined();
  });
});

describe("Kiln's labels on Compute Engine", () => {
  it("maps core's keys to kiln- keys and back, leaving other labels alone", () => {
    const core = {
      [LABELS.managed]: "true",
      [LABELS.service]: "web",
      [LABELS.environment]: "prod",
      [LABELS.release]: "12",
      [LABELS.rollout]: "20261207041400-1a2b3c4d",
      [LABELS.fingerprint]: FINGERPRINT,
      [LABELS.launchKey]: "20261207041400-1a2b3c4d:b1",
      [LABELS.ports]: "http:8080/tcp",
      team: "payments",
    };
    const gce = toGceLabels(core);
    expect(Object.keys(gce).sort()).toEqual([...Object.values(GCE_LABEL_KEYS), "team"].sort());
    expect(gceLabelProblems(gce, 0)).toEqual([]);
    expect(gce["kiln-launch-key"]).toBe("20261207041400-1a2b3c4d_3ab1");
    expect(fromGceLabels(gce)).toEqual(core);
    expect(GCE_KILN_INSTANCE_LABEL_COUNT).toBe(Object.keys(LABELS).length);
    // A hashed value is left out when read back, rather than shown wrong.
    expect(fromGceLabels(toGceLabels({ [LABELS.ports]: "http:8080/tcp,".repeat(10) }))).toEqual({});
  });

  it("writes an expiry as seconds since 1970, a valid label value that reads back", () => {
    const at = new Date("2026-12-07T05:00:00.000Z");
    expect(expiryLabelValue(at)).toBe("1796619600");
    expect(gceLabelProblems({ "kiln-expires": expiryLabelValue(at) }, 0)).toEqual([]);
    expect(parseExpiryLabelValue(expiryLabelValue(at))).toEqual(at);
    expect(parseExpiryLabelValue("soon")).toBeUndefined();
  });
});
