import http from "node:http";
import net from "node:net";
import type { Endpoint, ProbeResult } from "./provider/contract.js";
import type { ResolvedHttpCheck } from "./spec/resolve.js";

/**
 * Sends one HTTP GET to `endpoint` and reports whether the status is in the expected range.
 * Never throws: connection errors and timeouts are failed probes. The response body is discarded.
 * @param timeoutMs - how long the whole probe may take (milliseconds)
 */
export function probeHttp(endpoint: Endpoint, check: ResolvedHttpCheck, timeoutMs: number, signal?: AbortSignal): Promise<ProbeResult> {
  return new Promise((resolve) => {
    const request = http.get(
      { host: endpoint.host, port: endpoint.port, path: check.path, timeout: timeoutMs, agent: false, headers: { "user-agent": "kiln-health-check" }, ...(signal ? { signal } : {}) },
      (response) => {
        response.resume();
        const status = response.statusCode ?? 0;
        const [low, high] = check.expectStatus;
        resolve(status >= low && status <= high ? { ok: true } : { ok: false, reason: `GET ${check.path} answered ${status}, expected ${low}-${high}` });
      },
    );
    request.on("timeout", () => request.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    request.on("error", (error) => resolve({ ok: false, reason: `GET ${check.path} failed: ${error.message}` }));
  });
}

/**
 * Opens one TCP connection to `endpoint` and reports whether it was accepted within
 * `timeoutMs`. Never throws.
 */
export function probeTcp(endpoint: Endpoint, timeoutMs: number, signal?: AbortSignal): Promise<ProbeResult> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: endpoint.host, port: endpoint.port, ...(signal ? { signal } : {}) });
    const done = (result: ProbeResult) => {
      socket.destroy();
      resolve(result);
    };
    socket.setTimeout(timeoutMs, () => done({ ok: false, reason: `TCP connect to ${endpoint.host}:${endpoint.port}: no answer within ${timeoutMs} ms` }));
    socket.once("connect", () => done({ ok: true }));
    socket.once("error", (error) => done({ ok: false, reason: `TCP connect to ${endpoint.host}:${endpoint.port} failed: ${error.message}` }));
  });
}
