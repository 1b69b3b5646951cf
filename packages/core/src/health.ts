import http from "node:http";
import type { Endpoint, ProbeResult } from "./provider.js";
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
