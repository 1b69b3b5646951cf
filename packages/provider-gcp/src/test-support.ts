// Test support, not exported from the package: the real SDK and auth clients, with canned HTTP
// answers in place of the network (a `fetch` that answers from a list). No server is started.
import { OAuth2Client } from "google-auth-library";
import { GceClients, type GceClientsOptions } from "./client.js";

/** One request the SDK made. */
export interface SeenRequest {
  readonly method: string;
  readonly url: URL;
  readonly authorization: string | null;
  readonly body: unknown;
}

/** A canned answer: a status, a JSON body and headers. */
export interface CannedAnswer {
  readonly status: number;
  readonly body: unknown;
  readonly headers?: Record<string, string>;
}

/** No answer at all, until the request is aborted. */
export const NO_ANSWER = { hang: true } as const;

/** A Compute Engine error body as the API sends it (legacy `errors[]`, no `status`). */
export function errorBody(code: number, reason: string, message: string, domain = "global"): { error: unknown } {
  return { error: { code, message, errors: [{ domain, reason, message }] } };
}

/** A `fetch` that answers each request with the next canned answer and records what it was asked. */
export function cannedFetch(answers: ReadonlyArray<CannedAnswer | typeof NO_ANSWER>): { fetch: typeof fetch; seen: SeenRequest[] } {
  const seen: SeenRequest[] = [];
  const queue = [...answers];
  const fake = async (input: string | URL | Request, init?: RequestInit): Promise<Response> => {
    const request = new Request(input, init);
    const text = await request.text();
    seen.push({ method: request.method, url: new URL(request.url), authorization: request.headers.get("authorization"), body: text ? (JSON.parse(text) as unknown) : undefined });
    const answer = queue.shift();
    if (!answer) throw new Error(`no canned answer left for ${request.method} ${request.url}`);
    if ("hang" in answer) {
      return new Promise((_resolve, reject) => {
        const signal = init?.signal;
        if (!signal) return reject(new Error("a request that may hang must carry a signal"));
        signal.addEventListener("abort", () => reject(signal.reason instanceof Error ? signal.reason : new Error(String(signal.reason))), { once: true });
      });
    }
    return new Response(JSON.stringify(answer.body), { status: answer.status, headers: { "content-type": "application/json", ...answer.headers } });
  };
  return { fetch: fake, seen };
}

/**
 * Clients of the pinned SDK with its real auth client (google-auth-library's OAuth2Client and its
 * gaxios transport, as in production), answering from `answers` instead of the network.
 */
export function cannedClients(answers: ReadonlyArray<CannedAnswer | typeof NO_ANSWER>, options: Omit<GceClientsOptions, "authClient" | "endpoint"> = {}): { clients: GceClients; seen: SeenRequest[] } {
  const { fetch, seen } = cannedFetch(answers);
  const authClient = new OAuth2Client({ transporterOptions: { fetchImplementation: fetch } });
  authClient.setCredentials({ access_token: "test-token" });
  return { clients: new GceClients({ ...options, endpoint: "http://127.0.0.1:8085", authClient }, {}), seen };
}

/**
 * The smallest auth client google-gax accepts, whose `fetch` is the platform's own (it does not
 * throw on an error status): the SDK then decodes error bodies itself, with google-gax's
 * `GoogleError.parseHttpError`, as google-gax does for every REST error from version 6 on.
 */
export function plainFetchClients(answers: CannedAnswer[]): { clients: GceClients; seen: SeenRequest[] } {
  const { fetch, seen } = cannedFetch(answers);
  const authClient = {
    getRequestHeaders: () => Promise.resolve(new Headers({ authorization: "Bearer test-token" })),
    fetch: (input: string, init: RequestInit) => fetch(input, { ...init, headers: { ...Object.fromEntries(new Headers(init.headers)), authorization: "Bearer test-token" } }),
  };
  return { clients: new GceClients({ endpoint: "http://127.0.0.1:8085", authClient: authClient as never }, {}), seen };
}

/** What a recording fetch saw of one Compute Engine call. */
export interface RecordedCall {
  readonly method: string;
  readonly path: string;
  readonly status: number | undefined;
  /** The answer's JSON body, when it had one. */
  readonly body: unknown;
}

/**
 * An auth client for a local Compute Engine whose transport is the platform's `fetch`, recording
 * every call and its answer. `dropAnswer(call)` may ask for one call's answer to be lost: the
 * request reaches the server and acts, then the client hears nothing until its deadline ends the
 * request (what a client time-out looks like).
 */
export function recordingAuthClient(dropAnswer: (method: string, path: string) => boolean = () => false): { authClient: OAuth2Client; calls: RecordedCall[] } {
  const calls: RecordedCall[] = [];
  const recording = async (input: string | URL | Request, init?: RequestInit): Promise<Response> => {
    const request = new Request(input, init);
    const path = new URL(request.url).pathname;
    const answer = await fetch(request);
    const text = await answer.text();
    let body: unknown;
    try {
      body = text ? (JSON.parse(text) as unknown) : undefined;
    } catch {
      body = text;
    }
    calls.push({ method: request.method, path, status: answer.status, body });
    if (dropAnswer(request.method, path)) {
      return new Promise((_resolve, reject) => {
        const signal = init?.signal;
        if (!signal) return reject(new Error("a request whose answer is dropped must carry a signal"));
        signal.addEventListener("abort", () => reject(signal.reason instanceof Error ? signal.reason : new Error(String(signal.reason))), { once: true });
      });
    }
    return new Response(text, { status: answer.status, headers: answer.headers });
  };
  const authClient = new OAuth2Client({ transporterOptions: { fetchImplementation: recording } });
  authClient.setCredentials({ access_token: "test-token" });
  return { authClient, calls };
}

/** The name of the operation an answer holds (an insert's or a wait's), if any. */
export function operationNameOf(call: RecordedCall): string | undefined {
  const body = call.body as { kind?: unknown; name?: unknown } | undefined;
  return body?.kind === "compute#operation" && typeof body.name === "string" ? body.name : undefined;
}
