import { connect } from "node:net";
import { KilnError } from "@kilnjs/core";
import { PROXY_BACKEND, serverName } from "./config.js";

/** Where HAProxy's runtime API answers, from where Kiln runs. */
export interface AdminAddress {
  readonly host: string;
  readonly port: number;
}

/** How long one runtime API command may take (milliseconds). */
const COMMAND_TIMEOUT_MS = 5_000;

/**
 * Sends one command to HAProxy's runtime API (non-interactive: HAProxy answers and closes) and
 * returns its output.
 * @throws KilnError PROVIDER_UNAVAILABLE when the socket cannot be reached or does not answer in time
 */
export function runtimeCommand(admin: AdminAddress, command: string, signal?: AbortSignal): Promise<string> {
  if (/[\n;]/.test(command)) throw new KilnError("INTERNAL", `A runtime API command must be one line without ';': ${command}`);
  return new Promise((resolve, reject) => {
    const socket = connect({ host: admin.host, port: admin.port });
    const chunks: Buffer[] = [];
    let settled = false;
    const finish = (error?: Error) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
      socket.destroy();
      if (error) {
        reject(
          error instanceof KilnError
            ? error
            : new KilnError("PROVIDER_UNAVAILABLE", `The front proxy's runtime API at ${admin.host}:${admin.port} did not answer "${command}": ${error.message}`, {
                cause: error,
                retryable: true,
              }),
        );
      } else {
        resolve(Buffer.concat(chunks).toString("utf8"));
      }
    };
    const onAbort = () => finish(new KilnError("ABORTED", "The operation was cancelled.", { cause: signal?.reason }));
    const timer = setTimeout(() => finish(new Error(`no answer within ${COMMAND_TIMEOUT_MS} ms`)), COMMAND_TIMEOUT_MS);
    signal?.addEventListener("abort", onAbort, { once: true });
    socket.on("connect", () => socket.write(`${command}\n`));
    socket.on("data", (chunk: Buffer) => chunks.push(chunk));
    socket.on("end", () => finish());
    socket.on("close", () => finish());
    socket.on("error", (error) => finish(error));
  });
}

/** Output of a `set ...` command that reports a failure (HAProxy answers success with nothing or a note). */
const COMMAND_FAILURE = /^(No such|Require|Permission denied|Unknown command|Invalid|Failed|Can't|cannot|.* is not|.*invalid)/im;

/**
 * Runs a command that changes state and checks its answer.
 * @throws KilnError INTERNAL with HAProxy's answer when it refused the command
 */
export async function runtimeChange(admin: AdminAddress, command: string, signal?: AbortSignal): Promise<void> {
  const output = (await runtimeCommand(admin, command, signal)).trim();
  if (output !== "" && COMMAND_FAILURE.test(output) && !/^IP changed|no need to change/i.test(output)) {
    throw new KilnError("INTERNAL", `The front proxy refused "${command}": ${output}`);
  }
}

/** Administrative state bits of `show servers state` (`srv_admin_state`). */
export const ADMIN = {
  /** Forced into maintenance (`state maint`, or `disabled` in the configuration). */
  forcedMaint: 0x01,
  /** Forced into drain (`state drain`). */
  forcedDrain: 0x08,
} as const;

/** One server line of `show servers state`. */
export interface RuntimeServer {
  readonly name: string;
  readonly address: string;
  readonly port: number;
  /** `srv_op_state`: 0 stopped (down), 1 starting, 2 running (up), 3 stopping. */
  readonly opState: number;
  /** `srv_admin_state` bit mask; see {@link ADMIN}. */
  readonly adminState: number;
}

/** Whether a server takes new requests by its administrative state (checks decide the rest). */
export function isReady(server: RuntimeServer): boolean {
  return (server.adminState & (ADMIN.forcedMaint | ADMIN.forcedDrain)) === 0;
}

/**
 * Parses `show servers state [<backend>]` (format version 1: a version line, a `#` header naming
 * the columns, then one server per line), for one backend.
 */
export function parseServersState(text: string, backend = PROXY_BACKEND): RuntimeServer[] {
  const lines = text.split("\n").map((line) => line.trim());
  const header = lines.find((line) => line.startsWith("# "));
  if (!header) return [];
  const columns = header.slice(2).split(/\s+/);
  const at = (name: string) => columns.indexOf(name);
  const [backendAt, nameAt, addressAt, portAt, opAt, adminAt] = ["be_name", "srv_name", "srv_addr", "srv_port", "srv_op_state", "srv_admin_state"].map(at);
  if ([backendAt, nameAt, addressAt, portAt, opAt, adminAt].some((index) => index === undefined || index < 0)) return [];
  const servers: RuntimeServer[] = [];
  for (const line of lines) {
    if (line === "" || line.startsWith("#") || /^\d+$/.test(line)) continue;
    const fields = line.split(/\s+/);
    if (fields[backendAt!] !== backend) continue;
    const port = Number(fields[portAt!]);
    const opState = Number(fields[opAt!]);
    const adminState = Number(fields[adminAt!]);
    if (![port, opState, adminState].every(Number.isFinite)) continue;
    servers.push({ name: fields[nameAt!] ?? "", address: fields[addressAt!] ?? "", port, opState, adminState });
  }
  return servers;
}

/** Live counters of one server from `show stat`. */
export interface ServerStat {
  readonly name: string;
  /** Current sessions (requests being served). */
  readonly current: number;
  /** Requests queued for it. */
  readonly queued: number;
  /** `UP`, `DOWN`, `MAINT`, `DRAIN`, `UP 1/3`... */
  readonly status: string;
  /** Sessions it served in total. */
  readonly total: number;
}

/** Parses the CSV of `show stat` for the servers of one backend. */
export function parseStat(csv: string, backend = PROXY_BACKEND): ServerStat[] {
  const lines = csv.split("\n");
  const header = lines.find((line) => line.startsWith("# "));
  if (!header) return [];
  const columns = header.slice(2).split(",");
  const index = (name: string) => columns.indexOf(name);
  const [px, sv, scur, qcur, status, stot] = ["pxname", "svname", "scur", "qcur", "status", "stot"].map(index);
  if ([px, sv, scur, qcur, status, stot].some((value) => value === undefined || value < 0)) return [];
  const stats: ServerStat[] = [];
  for (const line of lines) {
    if (line.trim() === "" || line.startsWith("#")) continue;
    const fields = line.split(",");
    const name = fields[sv!] ?? "";
    if (fields[px!] !== backend || name === "BACKEND" || name === "FRONTEND") continue;
    stats.push({
      name,
      current: Number(fields[scur!] || 0),
      queued: Number(fields[qcur!] || 0),
      status: fields[status!] ?? "",
      total: Number(fields[stot!] || 0),
    });
  }
  return stats;
}

/** The commands that point a slot at an address and give it traffic. */
export function enableCommands(slot: number, address: string, port: number): string[] {
  const server = `${PROXY_BACKEND}/${serverName(slot)}`;
  return [`set server ${server} addr ${address} port ${port}`, `set server ${server} state ready`];
}

/** The commands that take a slot out and point it at nothing. */
export function clearCommands(slot: number): string[] {
  const server = `${PROXY_BACKEND}/${serverName(slot)}`;
  return [`set server ${server} state maint`, `set server ${server} addr 127.0.0.1 port 1`];
}
