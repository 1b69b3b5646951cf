import { describe, expect, test } from "vitest";
import { ComputeApiError } from "./errors.js";
import { matchesFilter, parseFilter } from "./filter.js";
import { pageOf } from "./listing.js";

const web = { name: "web-1", status: "RUNNING", labels: { "kiln-service": "web", env: "prod" }, scheduling: { automaticRestart: true }, networkInterfaces: [{ networkIP: "10.128.0.2" }] };
const api = { name: "api-1", status: "TERMINATED", labels: { "kiln-service": "api" }, scheduling: { automaticRestart: false }, networkInterfaces: [{ networkIP: "10.128.0.3" }] };
const names = (filter: string) => [web, api].filter((resource) => matchesFilter(parseFilter(filter), resource)).map((resource) => resource.name);

describe("the Compute list filter", () => {
  test.each([
    ["", ["web-1", "api-1"]],
    ["labels.kiln-service = web", ["web-1"]],
    ['name = "api-1"', ["api-1"]],
    ["status = RUNNING", ["web-1"]],
    ["status != RUNNING", ["api-1"]],
    ["name eq web-.*", ["web-1"]],
    ["name ne web-.*", ["api-1"]],
    ["name eq web", []],
    ["(labels.kiln-service = web) AND (labels.env = prod)", ["web-1"]],
    ["(labels.kiln-service = web) (status = RUNNING)", ["web-1"]],
    ["(labels.kiln-service = web) OR (labels.kiln-service = api)", ["web-1", "api-1"]],
    ["labels.env:*", ["web-1"]],
    ["NOT labels.env:*", ["api-1"]],
    ["-labels.env:*", ["api-1"]],
    ["labels.env != prod", ["api-1"]],
    ["scheduling.automaticRestart = true", ["web-1"]],
    ["networkInterfaces.networkIP = 10.128.0.3", ["api-1"]],
    ["name = web-*", ["web-1"]],
  ])("%s", (filter, expected) => {
    expect(names(filter)).toEqual(expected);
  });

  test.each(["labels.env =", "(status = RUNNING", "status ~ RUNNING", 'name = "open'])("a syntax error is 400 invalid: %s", (filter) => {
    expect(() => parseFilter(filter)).toThrow(ComputeApiError);
  });

  test("a field the resource does not have is refused", () => {
    expect(() => parseFilter("colour = blue", (field) => field in web)).toThrow(/'colour' is not a field/);
  });

  test("pages carry a token until the last, and a forged token is refused", () => {
    const resources = Array.from({ length: 5 }, (_, index) => ({ name: `vm-${index}` }));
    const first = pageOf(resources, { maxResults: "3" }, () => true);
    expect(first.items.map((item) => item.name)).toEqual(["vm-0", "vm-1", "vm-2"]);
    const second = pageOf(resources, { maxResults: "3", pageToken: first.nextPageToken! }, () => true);
    expect(second).toEqual({ items: [{ name: "vm-3" }, { name: "vm-4" }] });
    expect(() => pageOf(resources, { pageToken: "not-a-token" }, () => true)).toThrow(/pageToken/);
    expect(() => pageOf(resources, { orderBy: "status" }, () => true)).toThrow(/orderBy/);
  });
});
