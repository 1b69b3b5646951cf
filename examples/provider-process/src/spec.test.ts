// The process provider's part of the spec, through core's own validation, resolution and
// fingerprinting: what `kiln validate`, `kiln plan` and `kiln build` see of it, with no process started.
import { describe, expect, it } from "vitest";
import { fingerprintMachine, resolveTarget, sectionValues, validateSpec, type SpecIssue } from "@kilnjs/core";
import { processProviderSpec, type ProcessSections } from "./spec.js";

const providers = { process: processProviderSpec };

function spec(overrides: { instances?: object; health?: object; traffic?: object; base?: object } = {}) {
  return {
    service: "hello-web",
    provider: "process",
    image: { machine: { provision: [{ file: { from: "server.js", to: "/app/server.js" } }], ...(overrides.base ? { base: { process: overrides.base } } : {}) } },
    instances: { ports: [{ name: "http", port: 8080 }], command: ["node", "server.js"], ...overrides.instances },
    ...(overrides.health ? { health: overrides.health } : {}),
    ...(overrides.traffic ? { traffic: overrides.traffic } : {}),
  };
}

function issues(input: object): Array<Pick<SpecIssue, "path" | "message">> {
  const result = validateSpec(input, { providers });
  return result.ok ? [] : result.issues.map(({ path, message }) => ({ path, message }));
}

function resolved(input: object) {
  const result = validateSpec(input, { providers });
  if (!result.ok) throw new Error(`the spec is invalid: ${JSON.stringify(result.issues)}`);
  return resolveTarget(result.value, "default", "/srv/hello-web");
}

describe("the process provider's spec", () => {
  it("accepts a spec it can run and hands its sections back typed, defaults applied", () => {
    expect(issues(spec({ base: { node: "20" } }))).toEqual([]);
    const target = resolved(spec({ base: { node: "20" } }));
    const sections: ProcessSections = sectionValues(target);
    expect(sections).toEqual({ instances: { workingDirectory: "/" }, base: { node: "20" }, builder: undefined, loadBalancer: undefined });
    expect(resolved(spec({ instances: { process: { workingDirectory: "/app" } } })).instance.providerSettings).toEqual({ workingDirectory: "/app" });
  });

  it("reports each setting a local process cannot honour at its own path", () => {
    const found = issues(
      spec({
        instances: { command: undefined, ports: [{ name: "http", port: 8080, hostPort: 8080 }], resources: { memory: "128Mi" } },
        traffic: { proxy: { port: 8000 } },
        health: { command: { command: ["true"] } },
      }),
    ).map((issue) => issue.path.join("."));
    expect(found).toEqual(expect.arrayContaining(["instances.command", "instances.ports.0.hostPort", "instances.resources", "traffic.proxy", "health.command"]));
  });

  it("checks its sections with its own schemas, in environments too", () => {
    expect(issues(spec({ instances: { process: { workingDirectory: "app" } } }))).toEqual([
      { path: ["instances", "process", "workingDirectory"], message: expect.stringContaining("a folder inside the image") },
    ]);
    expect(issues({ ...spec(), environments: { staging: { image: { machine: { base: { process: { node: "twenty" } } } } } } })).toEqual([
      { path: ["environments", "staging", "image", "machine", "base", "process", "node"], message: expect.stringContaining("Node.js major version") },
    ]);
  });

  it("adds a plan line that names the command and the folder it runs in", () => {
    const target = resolved(spec({ instances: { process: { workingDirectory: "/app" } } }));
    expect(processProviderSpec.planLines!(target, sectionValues(target))).toEqual([
      "process: each instance runs `node server.js` in /app of the image, a local process on 127.0.0.1",
    ]);
  });

  it("puts the base in the fingerprint: another Node.js version is another image", async () => {
    const fingerprintFor = async (node: string) => {
      const target = resolved(spec({ base: { node }, instances: {} }));
      const steps = [{ kind: "run" as const, command: "true" }];
      return (await fingerprintMachine({ steps, provider: "process", contribution: processProviderSpec.fingerprint!(target, sectionValues(target)) })).fingerprint;
    };
    expect(await fingerprintFor("20")).toBe(await fingerprintFor("20"));
    expect(await fingerprintFor("20")).not.toBe(await fingerprintFor("22"));
  });
});
