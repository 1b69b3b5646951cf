import { randomUUID } from "node:crypto";
import { createServer, request as httpRequest, type IncomingHttpHeaders, type IncomingMessage, type OutgoingHttpHeaders, type ServerResponse } from "node:http";
import { request as httpsRequest } from "node:https";
import type { AddressInfo } from "node:net";
import { KilnError } from "@kilnjs/core";
import { seededRandom } from "./faults.js";

/**
 * The faults {@link startFaultProxy} injects:
 *
 * - `throttle`: the service's throttling error. For EC2 (and requests whose signature names no
 *   service) HTTP 503 with EC2's error document,
 *   `<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message></Error></Errors><RequestID>…</RequestID></Response>`;
 *   for the other query-protocol services (ELBv2: `elasticloadbalancing`) HTTP 400 with
 *   `<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error><RequestId>…</RequestId></ErrorResponse>`.
 *   The AWS SDK classifies both codes as throttling (retried, with its throttling back-off).
 * - `unavailable`: a plain `503 Service Unavailable` with a text body, as a load balancer in front of
 *   the API answers; the SDK retries it as a transient server error.
 */
export type ProxyFaultKind = "throttle" | "unavailable";

/** Every {@link ProxyFaultKind}, in a stable order. */
export const PROXY_FAULT_KINDS: readonly ProxyFaultKind[] = ["throttle", "unavailable"];

/**
 * When a fault acts. `before`: the request never reaches the upstream, which changes nothing.
 * `after`: the request is forwarded and the upstream does the work, then the client gets the fault
 * instead of the answer, like a response lost on the way back; a client that retries must carry an
 * idempotency token (`ClientToken`) or it does the work twice.
 */
export type ProxyFaultPhase = "before" | "after";

/** One fault to inject: what and when. */
export interface ProxyFault {
  readonly kind: ProxyFaultKind;
  readonly phase: ProxyFaultPhase;
}

/** What {@link FaultProxyOptions.decide} knows about a request. */
export interface FaultProxyCall {
  /** The query-protocol `Action` (e.g. `RunInstances`). */
  readonly action: string;
  /** The service named in the request's SigV4 credential scope (`ec2`, `elasticloadbalancing`), or `""`. */
  readonly service: string;
  /** The form-encoded parameters of the request (`ClientToken`, `InstanceId.1`, …), Action and Version included. */
  readonly params: Readonly<Record<string, string>>;
  /** 1 for the first request of this action through this proxy, then 2, 3, … (retries count). */
  readonly callNumber: number;
}

/** Options of {@link startFaultProxy}. */
export interface FaultProxyOptions {
  /** The server to forward to, `http://host:port` (or https), e.g. moto's endpoint. A path is prefixed to each request's path. */
  readonly upstream: string;
  /**
   * The probability, from 0 to 1, that a request (with an `Action`, passing {@link actions}) gets
   * a fault. Drawn with a generator seeded by {@link seed}, so a run of sequential calls is
   * reproducible. Ignored when {@link decide} is given.
   * @defaultValue 0 (forward everything)
   */
  readonly faultRate?: number;
  /** The seed of the random generator ({@link seededRandom}) for rates, kinds and phases. @defaultValue 1 */
  readonly seed?: number;
  /** The kinds to choose from, uniformly, for each fault. Must not be empty. @defaultValue ["throttle", "unavailable"] */
  readonly faults?: readonly ProxyFaultKind[];
  /**
   * When faults act: always `before`, always `after`, or `mixed` (each fault draws one, half and
   * half).
   * @defaultValue "before"
   */
  readonly phase?: ProxyFaultPhase | "mixed";
  /** Inject faults only into these actions (e.g. `["RunInstances"]`); others are always forwarded. @defaultValue every action */
  readonly actions?: readonly string[];
  /**
   * Decides the fault of each request (that passes {@link actions}) instead of the rate: return a
   * {@link ProxyFault}, or undefined to forward the request untouched. For exact scenarios, e.g.
   * "the first RunInstances succeeds upstream but its answer is lost":
   * `decide: (call) => (call.action === "RunInstances" && call.callNumber === 1 ? { kind: "unavailable", phase: "after" } : undefined)`.
   */
  readonly decide?: (call: FaultProxyCall) => ProxyFault | undefined;
}

/**
 * Request counts of a {@link FaultProxy}, per query `Action` (EC2 and ELBv2 share one table: their
 * `DescribeTags` count together; {@link FaultProxy.requests} tells them apart). A request without an
 * `Action` (e.g. `POST /moto-api/reset`) is counted under `"<METHOD> <path>"` and never faulted.
 * The records grow as requests arrive; an action never seen has no key.
 */
export interface FaultProxyCounts {
  /** Every request the proxy received. */
  readonly received: Readonly<Record<string, number>>;
  /** Requests forwarded to the upstream, `after`-phase faults included (the upstream did the work). */
  readonly forwarded: Readonly<Record<string, number>>;
  /** Faults injected, both phases. `received = forwarded + faults - faultsAfter` (plus upstream failures). */
  readonly faults: Readonly<Record<string, number>>;
  /** Faults injected after forwarding (a subset of {@link faults}). */
  readonly faultsAfter: Readonly<Record<string, number>>;
}

/** One request through a {@link FaultProxy}, in arrival order. */
export interface FaultProxyRequest {
  /** The `Action`, or `"<METHOD> <path>"` for a request without one. */
  readonly action: string;
  /** The service of the SigV4 credential scope, or `""`. */
  readonly service: string;
  /** The form-encoded parameters (empty for a request without a form body). */
  readonly params: Readonly<Record<string, string>>;
  /** The fault injected, if any. */
  readonly fault?: ProxyFault;
  /** The upstream's HTTP status, when the request was forwarded and answered. */
  readonly upstreamStatus?: number;
  /** The HTTP status the client got. */
  readonly status: number;
}

/** A running fault-injecting proxy; see {@link startFaultProxy}. */
export interface FaultProxy {
  /** The proxy's base URL, `http://127.0.0.1:<port>`: give it to the SDK client as `endpoint`. */
  readonly url: string;
  /** Live request counts per action. */
  readonly counts: FaultProxyCounts;
  /** Every request so far, in arrival order (live). */
  readonly requests: readonly FaultProxyRequest[];
  /** Stops listening and closes every connection (idle keep-alive ones too). Resolves once closed; safe to call twice. */
  close(): Promise<void>;
}

/** The largest request body the proxy accepts, in bytes (AWS query requests are far smaller). */
const MAX_BODY_BYTES = 16 * 1024 * 1024;

/** Headers that concern one connection, never forwarded in either direction. */
const HOP_BY_HOP = new Set(["connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"]);

/** Checks the options; every problem at once. @throws KilnError INVALID_ARGUMENT */
function validateOptions(options: FaultProxyOptions): URL {
  const problems: string[] = [];
  let upstream: URL | undefined;
  try {
    upstream = new URL(options.upstream);
    if (upstream.protocol !== "http:" && upstream.protocol !== "https:") problems.push(`upstream must be an http or https URL, not ${options.upstream}`);
  } catch {
    problems.push(`upstream must be a URL, not ${JSON.stringify(options.upstream)}`);
  }
  const rate = options.faultRate ?? 0;
  if (!(rate >= 0 && rate <= 1)) problems.push(`faultRate must be between 0 and 1, not ${rate}`);
  if (options.seed !== undefined && !Number.isInteger(options.seed)) problems.push(`seed must be an integer, not ${options.seed}`);
  const kinds = options.faults ?? PROXY_FAULT_KINDS;
  if (kinds.length === 0) problems.push("faults must name at least one kind");
  for (const kind of kinds) if (!PROXY_FAULT_KINDS.includes(kind)) problems.push(`faults: ${String(kind)} is not a fault kind (${PROXY_FAULT_KINDS.join(", ")})`);
  const phase = options.phase ?? "before";
  if (phase !== "before" && phase !== "after" && phase !== "mixed") problems.push(`phase must be before, after or mixed, not ${String(phase)}`);
  if (problems.length > 0 || !upstream) {
    throw new KilnError("INVALID_ARGUMENT", `Invalid fault proxy options: ${problems.join("; ")}.`, { details: { issues: problems } });
  }
  return upstream;
}

/** The service of a SigV4 `Authorization` header (`Credential=AKID/date/region/service/aws4_request`), or "". */
function serviceOf(headers: IncomingHttpHeaders): string {
  const match = /Credential=[^/,\s]+\/[^/,\s]+\/[^/,\s]+\/([^/,\s]+)\/aws4_request/.exec(headers.authorization ?? "");
  return match ? match[1]! : "";
}

/** The form parameters of a request: its body when form-encoded, else its query string. */
function paramsOf(req: IncomingMessage, body: Buffer): Record<string, string> {
  const contentType = String(req.headers["content-type"] ?? "");
  const query = new URL(req.url ?? "/", "http://proxy.invalid").searchParams;
  const source = contentType.startsWith("application/x-www-form-urlencoded") ? new URLSearchParams(body.toString("utf8")) : query;
  return Object.fromEntries(source.entries());
}

function bump(record: Record<string, number>, key: string): void {
  record[key] = (record[key] ?? 0) + 1;
}

/** The status, headers and body of an injected fault for a request to `service`. */
function faultResponse(kind: ProxyFaultKind, service: string): { status: number; headers: OutgoingHttpHeaders; body: string } {
  const requestId = randomUUID();
  if (kind === "unavailable") {
    return { status: 503, headers: { "content-type": "text/plain; charset=utf-8" }, body: "Service Unavailable" };
  }
  const headers = { "content-type": "text/xml;charset=UTF-8", "x-amzn-requestid": requestId };
  if (service === "" || service === "ec2") {
    return {
      status: 503,
      headers,
      body: `<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message></Error></Errors><RequestID>${requestId}</RequestID></Response>`,
    };
  }
  return {
    status: 400,
    headers,
    body: `<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error><RequestId>${requestId}</RequestId></ErrorResponse>`,
  };
}

function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on("data", (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        reject(new Error(`request body over ${MAX_BODY_BYTES} bytes`));
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on("end", () => resolve(Buffer.concat(chunks)));
    req.on("error", reject);
  });
}

interface UpstreamAnswer {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  readonly body: Buffer;
}

/** Sends the request to the upstream and reads the whole answer. */
function forward(upstream: URL, req: IncomingMessage, body: Buffer): Promise<UpstreamAnswer> {
  const headers: OutgoingHttpHeaders = {};
  for (const [name, value] of Object.entries(req.headers)) if (!HOP_BY_HOP.has(name) && value !== undefined) headers[name] = value;
  headers["content-length"] = body.length;
  const basePath = upstream.pathname.replace(/\/+$/, "");
  const send = upstream.protocol === "https:" ? httpsRequest : httpRequest;
  return new Promise((resolve, reject) => {
    const out = send(
      { protocol: upstream.protocol, hostname: upstream.hostname, port: upstream.port, method: req.method, path: `${basePath}${req.url ?? "/"}`, headers },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (chunk: Buffer) => chunks.push(chunk));
        res.on("end", () => resolve({ status: res.statusCode ?? 502, headers: res.headers, body: Buffer.concat(chunks) }));
        res.on("error", reject);
      },
    );
    out.on("error", reject);
    out.end(body);
  });
}

function send(res: ServerResponse, status: number, headers: OutgoingHttpHeaders, body: Buffer | string): void {
  const payload = typeof body === "string" ? Buffer.from(body, "utf8") : body;
  res.writeHead(status, { ...headers, "content-length": payload.length });
  res.end(payload);
}

/**
 * Starts an HTTP proxy on 127.0.0.1 (a random free port) that forwards every request to
 * `options.upstream` and injects faults into AWS query-protocol calls (EC2, ELBv2: `POST /` with a
 * form-encoded `Action=…` body): throttling errors in the service's own wire format and plain 503s,
 * before the upstream sees the request or after it did the work (see {@link ProxyFaultKind},
 * {@link ProxyFaultPhase}). It counts requests and faults per `Action` ({@link FaultProxyCounts})
 * and logs each request with its parameters ({@link FaultProxyRequest}), so a test can check that a
 * retry carried the same `ClientToken`.
 *
 * Requests are buffered whole (bodies up to 16 MiB; larger ones get 413), headers are forwarded as
 * they came (`Host` included, so a signature still matches), hop-by-hop headers dropped. When the
 * upstream cannot be reached the client gets `502 Bad Gateway`.
 *
 * @example
 * ```ts
 * const proxy = await startFaultProxy({ upstream: motoEndpoint(), faultRate: 0.3, seed: 7 });
 * const ec2 = new EC2Client({ endpoint: proxy.url, region: "us-east-1", credentials, retryStrategy: new ConfiguredRetryStrategy(10, 0) });
 * // … proxy.counts.faults.RunInstances, proxy.counts.forwarded.RunInstances
 * await proxy.close();
 * ```
 * @throws KilnError INVALID_ARGUMENT for an upstream that is not an http(s) URL, a `faultRate`
 *   outside 0..1, a seed that is not an integer, an empty or unknown fault kind, or an unknown phase
 */
export async function startFaultProxy(options: FaultProxyOptions): Promise<FaultProxy> {
  const upstream = validateOptions(options);
  const random = seededRandom(options.seed ?? 1);
  const rate = options.faultRate ?? 0;
  const kinds = options.faults ?? PROXY_FAULT_KINDS;
  const phase = options.phase ?? "before";
  const actions = options.actions ? new Set(options.actions) : undefined;
  const counts: { [K in keyof FaultProxyCounts]: Record<string, number> } = { received: {}, forwarded: {}, faults: {}, faultsAfter: {} };
  const requests: FaultProxyRequest[] = [];

  function decide(call: FaultProxyCall): ProxyFault | undefined {
    if (actions && !actions.has(call.action)) return undefined;
    if (options.decide) return options.decide(call);
    if (!(random() < rate)) return undefined;
    const kind = kinds[Math.min(kinds.length - 1, Math.floor(random() * kinds.length))]!;
    const chosen: ProxyFaultPhase = phase === "mixed" ? (random() < 0.5 ? "before" : "after") : phase;
    return { kind, phase: chosen };
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    let body: Buffer;
    try {
      body = await readBody(req);
    } catch (error) {
      if (!res.headersSent) send(res, 413, { "content-type": "text/plain; charset=utf-8" }, error instanceof Error ? error.message : "bad request body");
      return;
    }
    const params = paramsOf(req, body);
    const service = serviceOf(req.headers);
    const action = params.Action ?? `${req.method ?? "GET"} ${new URL(req.url ?? "/", "http://proxy.invalid").pathname}`;
    bump(counts.received, action);
    const callNumber = counts.received[action]!;
    const fault = params.Action === undefined ? undefined : decide({ action, service, params, callNumber });
    const record = (status: number, upstreamStatus?: number) => {
      requests.push({ action, service, params, ...(fault ? { fault } : {}), ...(upstreamStatus === undefined ? {} : { upstreamStatus }), status });
    };
    if (fault?.phase === "before") {
      bump(counts.faults, action);
      const injected = faultResponse(fault.kind, service);
      record(injected.status);
      send(res, injected.status, injected.headers, injected.body);
      return;
    }
    let answer: UpstreamAnswer;
    try {
      answer = await forward(upstream, req, body);
    } catch (error) {
      record(502);
      send(res, 502, { "content-type": "text/plain; charset=utf-8" }, `fault proxy: upstream ${upstream.origin} failed: ${error instanceof Error ? error.message : String(error)}`);
      return;
    }
    bump(counts.forwarded, action);
    if (fault) {
      bump(counts.faults, action);
      bump(counts.faultsAfter, action);
      const injected = faultResponse(fault.kind, service);
      record(injected.status, answer.status);
      send(res, injected.status, injected.headers, injected.body);
      return;
    }
    const headers: OutgoingHttpHeaders = {};
    for (const [name, value] of Object.entries(answer.headers)) if (!HOP_BY_HOP.has(name) && name !== "content-length" && value !== undefined) headers[name] = value;
    record(answer.status, answer.status);
    send(res, answer.status, headers, answer.body);
  }

  const server = createServer((req, res) => {
    handle(req, res).catch((error: unknown) => {
      if (!res.headersSent) send(res, 500, { "content-type": "text/plain; charset=utf-8" }, `fault proxy: ${error instanceof Error ? error.message : String(error)}`);
      else res.destroy();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      server.off("error", reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;
  let closing: Promise<void> | undefined;
  return {
    url: `http://127.0.0.1:${port}`,
    counts,
    requests,
    close() {
      closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      return closing;
    },
  };
}
