import { Counter, Histogram, Registry, collectDefaultMetrics } from "prom-client";

/** The server's Prometheus metrics, in a registry of its own (several servers in one process do not clash). */
export interface Metrics {
  readonly registry: Registry;
  /** `kiln_rollouts_total{kind, outcome}`: deployments finished, by kind (deploy, rollback) and final state. */
  readonly rollouts: Counter<"kind" | "outcome">;
  /** `kiln_rollout_duration_seconds{kind, outcome}`: how long deployments ran (seconds). */
  readonly rolloutSeconds: Histogram<"kind" | "outcome">;
  /** `kiln_provider_errors_total{code}`: deployments that failed on the provider's API, by error code. */
  readonly providerErrors: Counter<"code">;
  /** `kiln_http_requests_total{method, route, status}`: requests answered. */
  readonly requests: Counter<"method" | "route" | "status">;
}

/** Creates the metrics, with Node's default process metrics (`process_*`, `nodejs_*`). */
export function createMetrics(): Metrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  return {
    registry,
    rollouts: new Counter({ name: "kiln_rollouts_total", help: "Deployments finished, by kind and final state.", labelNames: ["kind", "outcome"], registers: [registry] }),
    rolloutSeconds: new Histogram({
      name: "kiln_rollout_duration_seconds",
      help: "How long deployments ran, in seconds.",
      labelNames: ["kind", "outcome"],
      buckets: [1, 5, 15, 30, 60, 120, 300, 600, 1800],
      registers: [registry],
    }),
    providerErrors: new Counter({ name: "kiln_provider_errors_total", help: "Deployments that failed on the provider's API, by error code.", labelNames: ["code"], registers: [registry] }),
    requests: new Counter({ name: "kiln_http_requests_total", help: "HTTP requests answered, by method, route and status.", labelNames: ["method", "route", "status"], registers: [registry] }),
  };
}
