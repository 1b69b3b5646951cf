import { describe, expect, it } from "vitest";
import type { LaunchRequest } from "./contract.js";
import { LABELS, decodeInstanceLabels, formatPortsLabel, imageLabels, instanceLabels, parsePortsLabel, selectorLabels } from "./labels.js";

const request: LaunchRequest = {
  target: { service: "web", environment: "prod" },
  release: 7,
  rolloutId: "ro-1",
  idempotencyKey: "ro-1:launch:2",
  image: { id: "img-1", fingerprint: `sha256:${"b".repeat(64)}`, digest: "img-1", names: [] },
  config: {
    ports: [
      { name: "http", port: 8080, protocol: "tcp", hostPort: 80 },
      { name: "dns", port: 53, protocol: "udp" },
    ],
    env: {},
    labels: {},
    stopGracePeriodMs: 1000,
  },
  count: 2,
};

describe("the label codec", () => {
  it("writes every label an instance carries, and reads them back", () => {
    const labels = instanceLabels(request);
    expect(labels).toEqual({
      [LABELS.managed]: "true",
      [LABELS.service]: "web",
      [LABELS.environment]: "prod",
      [LABELS.release]: "7",
      [LABELS.rollout]: "ro-1",
      [LABELS.fingerprint]: `sha256:${"b".repeat(64)}`,
      [LABELS.launchKey]: "ro-1:launch:2",
      [LABELS.ports]: "http:8080/tcp,dns:53/udp",
    });
    expect(decodeInstanceLabels(labels)).toEqual({
      target: { service: "web", environment: "prod" },
      release: 7,
      rolloutId: "ro-1",
      fingerprint: `sha256:${"b".repeat(64)}`,
      launchKey: "ro-1:launch:2",
      // Host ports are the engine's business, not a label's.
      ports: [
        { name: "http", port: 8080, protocol: "tcp" },
        { name: "dns", port: 53, protocol: "udp" },
      ],
    });
  });

  it("reads what is missing or malformed as absent", () => {
    expect(decodeInstanceLabels({ [LABELS.service]: "web", [LABELS.release]: "seven" })).toEqual({
      target: undefined,
      release: undefined,
      rolloutId: undefined,
      fingerprint: undefined,
      launchKey: undefined,
      ports: [],
    });
    expect(parsePortsLabel("http:8080/tcp, dns:53/udp,junk,x:y/tcp,a:1/sctp")).toEqual([
      { name: "http", port: 8080, protocol: "tcp" },
      { name: "dns", port: 53, protocol: "udp" },
    ]);
    expect(parsePortsLabel(formatPortsLabel([]))).toEqual([]);
  });

  it("reads the spellings an earlier Kiln wrote: ports as name=port/protocol, the launch key as dev.kiln.launch", () => {
    expect(parsePortsLabel("http=8080/tcp,dns=53/udp")).toEqual([
      { name: "http", port: 8080, protocol: "tcp" },
      { name: "dns", port: 53, protocol: "udp" },
    ]);
    const earlier = decodeInstanceLabels({ [LABELS.service]: "web", [LABELS.environment]: "prod", "dev.kiln.launch": "ro-0:launch:1", [LABELS.ports]: "http=8080/tcp" });
    expect(earlier.launchKey).toBe("ro-0:launch:1");
    expect(earlier.ports).toEqual([{ name: "http", port: 8080, protocol: "tcp" }]);
    // The current label wins when both are there.
    expect(decodeInstanceLabels({ "dev.kiln.launch": "old", [LABELS.launchKey]: "new" }).launchKey).toBe("new");
  });

  it("labels images by service and fingerprint, and selects instances by target, release or rollout", () => {
    expect(imageLabels({ target: request.target, fingerprint: "sha256:f" })).toEqual({ [LABELS.managed]: "true", [LABELS.service]: "web", [LABELS.fingerprint]: "sha256:f" });
    expect(imageLabels({ target: request.target, fingerprint: "sha256:f", release: 3, rolloutId: "ro-9" })).toMatchObject({ [LABELS.release]: "3", [LABELS.rollout]: "ro-9" });
    expect(selectorLabels({ target: request.target })).toEqual({ [LABELS.managed]: "true", [LABELS.service]: "web", [LABELS.environment]: "prod" });
    expect(selectorLabels({ target: request.target, release: 4, rolloutId: "ro-2" })).toMatchObject({ [LABELS.release]: "4", [LABELS.rollout]: "ro-2" });
  });
});
