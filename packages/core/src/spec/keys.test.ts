import { describe, expect, it } from "vitest";
import { knownKeysAt } from "./keys.js";

describe("knownKeysAt", () => {
  it("derives the keys from the schema, through defaults, records and arrays", () => {
    expect(knownKeysAt([])).toEqual(expect.arrayContaining(["service", "provider", "image", "instances", "health", "rollout", "environments"]));
    expect(knownKeysAt(["instances"])).toEqual(expect.arrayContaining(["count", "ports", "resources"]));
    expect(knownKeysAt(["instances", "ports", 0]).sort()).toEqual(["hostPort", "name", "port", "protocol"]);
    expect(knownKeysAt(["environments", "prod"]).sort()).toEqual(["health", "image", "instances", "provider", "retention", "rollout", "secrets", "traffic"]);
    expect(knownKeysAt(["environments", "prod", "health", "http"]).sort()).toEqual(["expectStatus", "path", "port"]);
    expect(knownKeysAt(["instances", "env"])).toEqual([]);
    expect(knownKeysAt(["nope"])).toEqual([]);
  });
});
