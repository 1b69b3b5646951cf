import { resourceName, type ResolvedHealth, type ResolvedProxy, type Target } from "@kilnjs/core";

/** How many servers (instances) one target's proxy can hold: the `server` slots of its backend. */
export const PROXY_SLOTS = 64;
/** The backend's name in the HAProxy configuration and runtime commands. */
export const PROXY_BACKEND = "be";
/** The port the proxy's frontend binds inside its container (not 8080, which apps often use); published on `proxy.host:proxy.port`. */
export const PROXY_FRONTEND_PORT = 10080;
/** The port of HAProxy's runtime API (the stats socket, level admin) inside the container; published on 127.0.0.1 only. */
export const PROXY_ADMIN_PORT = 10999;
/** Where the configuration lives, in the official image and in kiln-local/haproxy. */
export const PROXY_CONFIG_DIR = "/usr/local/etc/haproxy";
export const PROXY_CONFIG_FILE = "haproxy.cfg";
/** The address an empty slot points at (it is in maintenance, so never used). */
const EMPTY_ADDRESS = "127.0.0.1";
const EMPTY_PORT = 1;

/** Docker names (containers, networks, volumes) stay within this many characters; see `resourceName`. */
export const DOCKER_NAME_MAX_LENGTH = 128;

/**
 * `kiln.<service>.<environment>`: the name a new Docker network of a target's proxy and its
 * instances gets (core's `resourceName`, injective). An existing network is found by its labels,
 * whatever its name (see {@link legacyTargetNetworkName}).
 */
export function targetNetworkName(target: Target): string {
  return resourceName(target, { prefix: "kiln", maxLength: DOCKER_NAME_MAX_LENGTH });
}

/**
 * `kiln-proxy.<service>.<environment>`: the name a new proxy container, and the volume holding its
 * configuration, get (core's `resourceName`, injective). An existing proxy is found by its labels.
 */
export function proxyContainerName(target: Target): string {
  return resourceName(target, { prefix: "kiln-proxy", maxLength: DOCKER_NAME_MAX_LENGTH });
}

/**
 * `kiln-<service>-<environment>`: the network name Kiln used before names were injective (two
 * targets could share it). Only for recognising a container's address on such a network; the
 * network itself is found by labels.
 */
export function legacyTargetNetworkName(target: Target): string {
  return `kiln-${target.service}-${target.environment}`;
}

/** `s1` ... `s64`. */
export function serverName(slot: number): string {
  return `s${slot}`;
}

/** One filled slot: which instance (container) it sends requests to. */
export interface ProxySlot {
  /** 1 to {@link PROXY_SLOTS}. */
  readonly slot: number;
  readonly containerId: string;
  readonly containerName: string;
  /** The container's address on the target's network. */
  readonly address: string;
  readonly port: number;
}

/** The active health check the proxy runs on each server. */
export type ProxyCheck =
  | { readonly kind: "http"; readonly path: string; readonly expectStatus: readonly [number, number] }
  | { readonly kind: "tcp" };

/** Everything the configuration depends on besides the slots. */
export interface ProxySettings {
  /** Retries of a failed request, on another server (`retries`, with `option redispatch 1`). */
  readonly retries: number;
  readonly check: ProxyCheck;
  /** Between two checks of a server (milliseconds). */
  readonly checkIntervalMs: number;
  /** How long one check may take (milliseconds). */
  readonly checkTimeoutMs: number;
  /** Consecutive successes that bring a server that went down back up. */
  readonly rise: number;
  /** Consecutive failures that take a server out. */
  readonly fall: number;
}

/** A path HAProxy's configuration can hold unquoted: no spaces, quotes, `#` or backslashes. */
const SAFE_PATH = /^\/[A-Za-z0-9._~!$&()*+,;=:@%/?-]*$/;

/**
 * The proxy's settings for a release: an HTTP check when the release's health check is HTTP on the
 * port the proxy sends traffic to (and its path is safe to write into the configuration), else a
 * TCP connect check.
 */
export function proxySettings(proxy: ResolvedProxy, health: ResolvedHealth | undefined): ProxySettings {
  const check = health?.check;
  const http = check?.kind === "http" && check.portName === proxy.portName && SAFE_PATH.test(check.path);
  return {
    retries: proxy.retries,
    check: http ? { kind: "http", path: check.path, expectStatus: [check.expectStatus[0], check.expectStatus[1]] } : { kind: "tcp" },
    checkIntervalMs: clamp(health?.intervalMs ?? 2_000, 100, 60_000),
    checkTimeoutMs: clamp(health?.timeoutMs ?? 2_000, 100, 60_000),
    rise: clamp(health?.healthyThreshold ?? 2, 1, 100),
    fall: clamp(health?.unhealthyThreshold ?? 3, 1, 100),
  };
}

function clamp(value: number, min: number, max: number): number {
  return Math.min(max, Math.max(min, Math.round(value)));
}

/**
 * A regular expression matching exactly the statuses from `low` to `high` (three digits each),
 * compact: whole hundreds as `2..`, whole tens as `20.`.
 */
export function statusPattern(low: number, high: number): string {
  const lo = Math.max(100, Math.min(599, Math.floor(low)));
  const hi = Math.max(lo, Math.min(599, Math.floor(high)));
  const parts: string[] = [];
  let code = lo;
  while (code <= hi) {
    if (code % 100 === 0 && code + 99 <= hi) {
      parts.push(`${code / 100}..`);
      code += 100;
    } else if (code % 10 === 0 && code + 9 <= hi) {
      parts.push(`${code / 10}.`);
      code += 10;
    } else {
      parts.push(String(code));
      code += 1;
    }
  }
  return `^(${parts.join("|")})$`;
}

const SETTINGS_MARK = "# kiln-settings ";
const SLOT_MARK = "# kiln-slot ";

/**
 * The whole haproxy.cfg for a target: one frontend on {@link PROXY_FRONTEND_PORT}, one backend
 * with {@link PROXY_SLOTS} server slots (filled ones enabled, empty ones `disabled`), the runtime
 * API on {@link PROXY_ADMIN_PORT}. Comment lines record the settings and which container each slot
 * holds, so that any Kiln process can read the state back with {@link parseConfig}.
 */
export function renderConfig(target: Target, settings: ProxySettings, slots: readonly ProxySlot[]): string {
  const bySlot = new Map(slots.map((slot) => [slot.slot, slot]));
  const check = settings.check;
  const lines = [
    `# Written by Kiln (@kilnjs/provider-docker) for ${target.service}@${target.environment}.`,
    "# Kiln rewrites this file on every traffic change and changes servers through the runtime API;",
    "# a restarted proxy starts from it. Do not edit: your changes are overwritten.",
    `${SETTINGS_MARK}${JSON.stringify(settings)}`,
    "global",
    "    log stdout format raw daemon notice",
    `    stats socket ipv4@0.0.0.0:${PROXY_ADMIN_PORT} level admin`,
    "    stats timeout 30s",
    "    maxconn 4096",
    // A soft stop (SIGUSR1, the container's stop signal) lets requests in flight finish, this long at most.
    "    hard-stop-after 30s",
    "",
    "defaults",
    "    mode http",
    "    log global",
    "    option dontlognull",
    // On a reload (new settings), the old process keeps idle client connections until their next
    // response instead of closing them under the client (which saw ECONNRESET on reuse).
    "    option idle-close-on-response",
    "    timeout connect 5s",
    "    timeout client 60s",
    "    timeout server 60s",
    "    timeout http-request 10s",
    "    timeout http-keep-alive 10s",
    "    timeout queue 30s",
    `    timeout check ${settings.checkTimeoutMs}ms`,
    "",
    "frontend fe",
    `    bind :${PROXY_FRONTEND_PORT}`,
    `    default_backend ${PROXY_BACKEND}`,
    "",
    `backend ${PROXY_BACKEND}`,
    "    balance roundrobin",
    `    retries ${settings.retries}`,
    // Every retry goes to another server.
    "    option redispatch 1",
    // conn-failure: the request was never sent, so any method is safe to send again. empty-response
    // (the server closed without answering, e.g. while stopping) re-sends a request the server may
    // have seen: HAProxy does not check the method itself, so only idempotent methods are allowed.
    "    retry-on conn-failure empty-response",
    "    acl kiln_idempotent method GET HEAD OPTIONS PUT DELETE TRACE",
    "    http-request disable-l7-retry unless kiln_idempotent",
    ...(check.kind === "http"
      ? [`    option httpchk GET ${check.path}`, `    http-check expect rstatus ${statusPattern(check.expectStatus[0], check.expectStatus[1])}`]
      : []),
    `    default-server check inter ${settings.checkIntervalMs}ms fall ${settings.fall} rise ${settings.rise}`,
  ];
  for (let number = 1; number <= PROXY_SLOTS; number++) {
    const slot = bySlot.get(number);
    if (slot) {
      lines.push(`    ${SLOT_MARK}${JSON.stringify(slot)}`);
      lines.push(`    server ${serverName(number)} ${formatAddress(slot.address)}:${slot.port}`);
    } else {
      lines.push(`    server ${serverName(number)} ${EMPTY_ADDRESS}:${EMPTY_PORT} disabled`);
    }
  }
  return `${lines.join("\n")}\n`;
}

function formatAddress(address: string): string {
  return address.includes(":") ? `[${address}]` : address;
}

/** What {@link parseConfig} reads back from a configuration Kiln wrote. */
export interface ParsedConfig {
  /** The settings it was written with; undefined for a configuration Kiln did not write. */
  readonly settings: ProxySettings | undefined;
  readonly slots: ProxySlot[];
}

/** Reads the settings and filled slots from {@link renderConfig}'s comments; anything malformed is skipped. */
export function parseConfig(text: string): ParsedConfig {
  let settings: ProxySettings | undefined;
  const slots = new Map<number, ProxySlot>();
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line.startsWith(SETTINGS_MARK)) {
      settings = parseJson(line.slice(SETTINGS_MARK.length), isSettings) ?? settings;
    } else if (line.startsWith(SLOT_MARK)) {
      const slot = parseJson(line.slice(SLOT_MARK.length), isSlot);
      if (slot) slots.set(slot.slot, slot);
    }
  }
  return { settings, slots: [...slots.values()].sort((a, b) => a.slot - b.slot) };
}

function parseJson<T>(text: string, guard: (value: unknown) => value is T): T | undefined {
  try {
    const value: unknown = JSON.parse(text);
    return guard(value) ? value : undefined;
  } catch {
    return undefined;
  }
}

function isSlot(value: unknown): value is ProxySlot {
  const slot = value as Partial<ProxySlot> | null;
  return (
    typeof slot === "object" &&
    slot !== null &&
    Number.isInteger(slot.slot) &&
    slot.slot! >= 1 &&
    slot.slot! <= PROXY_SLOTS &&
    typeof slot.containerId === "string" &&
    typeof slot.containerName === "string" &&
    typeof slot.address === "string" &&
    /^[0-9a-fA-F.:]+$/.test(slot.address) &&
    Number.isInteger(slot.port) &&
    slot.port! >= 1 &&
    slot.port! <= 65535
  );
}

function isSettings(value: unknown): value is ProxySettings {
  const settings = value as Partial<ProxySettings> | null;
  return typeof settings === "object" && settings !== null && typeof settings.retries === "number" && typeof settings.check === "object" && settings.check !== null;
}

/** Whether two settings write the same configuration. */
export function sameSettings(a: ProxySettings | undefined, b: ProxySettings): boolean {
  return a !== undefined && JSON.stringify(a) === JSON.stringify(b);
}
