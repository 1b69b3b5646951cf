import { describe, expect, it } from "vitest";
import { parseDockerHost, resolveOptions } from "./options.js";

describe("parseDockerHost", () => {
  it("reads unix sockets and tcp addresses", () => {
    expect(parseDockerHost("unix:///tmp/kiln-engine/docker.sock")).toEqual({
      kind: "unix",
      url: "unix:///tmp/kiln-engine/docker.sock",
      socketPath: "/tmp/kiln-engine/docker.sock",
    });
    expect(parseDockerHost("tcp://127.0.0.1:2375")).toEqual({ kind: "tcp", url: "tcp://127.0.0.1:2375", host: "127.0.0.1", port: 2375 });
    expect(parseDockerHost("tcp://docker")).toMatchObject({ host: "docker", port: 2375 });
    expect(parseDockerHost("tcp://[::1]:2376")).toMatchObject({ host: "::1", port: 2376 });
  });

  it("rejects other schemes and relative sockets", () => {
    for (const bad of ["ssh://user@host", "unix://relative.sock", "npipe:////./pipe/docker_engine", "tcp://host:99999", "/var/run/docker.sock"]) {
      expect(() => parseDockerHost(bad), bad).toThrow(expect.objectContaining({ code: "INVALID_ARGUMENT" }) as Error);
    }
  });
});

describe("resolveOptions", () => {
  it("defaults to DOCKER_HOST, then the default socket, and publishes on 127.0.0.1", () => {
    expect(resolveOptions(undefined, {})).toMatchObject({ address: { url: "unix:///var/run/docker.sock" }, publishHost: "127.0.0.1", endpointHost: "127.0.0.1" });
    expect(resolveOptions({}, { DOCKER_HOST: "tcp://10.0.0.1:2375" }).address.url).toBe("tcp://10.0.0.1:2375");
    expect(resolveOptions({ host: "unix:///x.sock" }, { DOCKER_HOST: "tcp://10.0.0.1:2375" }).address.url).toBe("unix:///x.sock");
  });

  it("reports wildcard publish addresses as loopback endpoints", () => {
    expect(resolveOptions({ publishHost: "0.0.0.0" }, {}).endpointHost).toBe("127.0.0.1");
  });

  it("rejects an invalid network name", () => {
    expect(() => resolveOptions({ network: "bad name" }, {})).toThrow(expect.objectContaining({ code: "INVALID_ARGUMENT" }) as Error);
  });
});
