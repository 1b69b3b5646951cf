import type { Target } from "../target.js";
import type { ImageRecipe, InstanceSelector, LaunchRequest, PortConfig } from "./contract.js";

/**
 * The label (tag) keys Kiln puts on every image and instance it creates: one spelling for every
 * provider. Providers whose clouds restrict key characters or values (Compute Engine labels:
 * lowercase letters, digits, `_` and `-`) map these keys and values one-to-one to forms their
 * cloud accepts, and back, so that {@link decodeInstanceLabels} sees these keys.
 */
export const LABELS = {
  /** Marks a resource as created by Kiln; value `"true"`. */
  managed: "dev.kiln.managed",
  service: "dev.kiln.service",
  environment: "dev.kiln.environment",
  /** The release number, as decimal text. */
  release: "dev.kiln.release",
  /** The id of the rollout that created the resource. */
  rollout: "dev.kiln.rollout",
  /** The image fingerprint (`sha256:` + 64 hex digits). */
  fingerprint: "dev.kiln.fingerprint",
  /** The launch request's idempotency key, so that a repeated or resumed launch finds what it started. */
  launchKey: "dev.kiln.launch-key",
  /** The instance's named ports, written by {@link formatPortsLabel} (`http:8080/tcp,metrics:9090/tcp`). */
  ports: "dev.kiln.ports",
} as const;

/** A label key from {@link LABELS}. */
export type LabelKey = (typeof LABELS)[keyof typeof LABELS];

/** The labels that mark a resource as Kiln's and name its target: managed, service, environment. */
export function targetLabels(target: Target): Record<string, string> {
  return { [LABELS.managed]: "true", [LABELS.service]: target.service, [LABELS.environment]: target.environment };
}

/**
 * Kiln's own labels for the instances a launch starts: {@link targetLabels}, release, rollout,
 * fingerprint, launch key and ports. Providers put these (mapped to their cloud's rules where
 * needed) beside the release's own `config.labels`; Kiln's keys win over a label of the same key.
 */
export function instanceLabels(request: Pick<LaunchRequest, "target" | "release" | "rolloutId" | "image" | "idempotencyKey" | "config">): Record<LabelKey, string> {
  return {
    [LABELS.managed]: "true",
    [LABELS.service]: request.target.service,
    [LABELS.environment]: request.target.environment,
    [LABELS.release]: String(request.release),
    [LABELS.rollout]: request.rolloutId,
    [LABELS.fingerprint]: request.image.fingerprint,
    [LABELS.launchKey]: request.idempotencyKey,
    [LABELS.ports]: formatPortsLabel(request.config.ports),
  };
}

/**
 * Kiln's own labels for an image: managed, service and fingerprint, and the release and rollout
 * the build was made for when a deploy built it. Images belong to a service, not to one
 * environment: every environment of the service may run them.
 */
export function imageLabels(recipe: Pick<ImageRecipe, "target" | "fingerprint" | "release" | "rolloutId">): Record<string, string> {
  return {
    [LABELS.managed]: "true",
    [LABELS.service]: recipe.target.service,
    [LABELS.fingerprint]: recipe.fingerprint,
    ...(recipe.release !== undefined ? { [LABELS.release]: String(recipe.release) } : {}),
    ...(recipe.rolloutId !== undefined ? { [LABELS.rollout]: recipe.rolloutId } : {}),
  };
}

/**
 * The label values an instance list must match for a selector, as key/value pairs: managed,
 * service, environment, and release or rollout when the selector names them. A provider turns
 * them into its backend's filter (Docker label filters, a cloud API's tag or label filter).
 */
export function selectorLabels(selector: Pick<InstanceSelector, "target" | "release" | "rolloutId">): Record<string, string> {
  return {
    ...targetLabels(selector.target),
    ...(selector.release !== undefined ? { [LABELS.release]: String(selector.release) } : {}),
    ...(selector.rolloutId !== undefined ? { [LABELS.rollout]: selector.rolloutId } : {}),
  };
}

/** `http:8080/tcp,metrics:9090/tcp`: the value of the {@link LABELS}.ports label. Host ports are not part of it. */
export function formatPortsLabel(ports: readonly Pick<PortConfig, "name" | "port" | "protocol">[]): string {
  return ports.map((port) => `${port.name}:${port.port}/${port.protocol}`).join(",");
}

/** Parses {@link formatPortsLabel}'s output; malformed parts are skipped. */
export function parsePortsLabel(text: string | undefined): PortConfig[] {
  if (!text) return [];
  const ports: PortConfig[] = [];
  for (const part of text.split(",")) {
    const match = /^([^:]+):(\d+)\/(tcp|udp)$/.exec(part.trim());
    if (match) ports.push({ name: match[1]!, port: Number(match[2]), protocol: match[3] as "tcp" | "udp" });
  }
  return ports;
}

/** What Kiln's labels say about an instance; see {@link decodeInstanceLabels}. */
export interface DecodedLabels {
  /** The target, when both the service and environment labels are there. */
  readonly target: Target | undefined;
  /** The release number; undefined when the label is missing or not a number. */
  readonly release: number | undefined;
  readonly rolloutId: string | undefined;
  readonly fingerprint: string | undefined;
  readonly launchKey: string | undefined;
  /** The named ports, in the order they were written; empty without the label. */
  readonly ports: PortConfig[];
}

/** Reads Kiln's labels back from an instance's labels (with {@link LABELS} keys). */
export function decodeInstanceLabels(labels: Readonly<Record<string, string | undefined>>): DecodedLabels {
  const service = labels[LABELS.service];
  const environment = labels[LABELS.environment];
  const releaseText = labels[LABELS.release];
  const release = releaseText !== undefined && /^\d+$/.test(releaseText) ? Number(releaseText) : undefined;
  return {
    target: service !== undefined && environment !== undefined ? { service, environment } : undefined,
    release,
    rolloutId: labels[LABELS.rollout],
    fingerprint: labels[LABELS.fingerprint],
    launchKey: labels[LABELS.launchKey],
    ports: parsePortsLabel(labels[LABELS.ports]),
  };
}
