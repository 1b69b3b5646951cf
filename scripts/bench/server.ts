/**
 * `kiln serve` (@kilnjs/server) on 127.0.0.1 with the in-memory provider, in this process:
 *
 * (a) target status: `GET /v1/targets/{target}` of a target with 3 instances, under autocannon
 *     (10 connections, 10 s, after a 2 s warm-up not reported): requests per second and the
 *     latency p50 / p99. Each request authenticates its token, reads the target's state and lock,
 *     lists its instances from the provider and computes drift. autocannon runs in a worker
 *     thread (its `workers` option) so the load generator does not share the server's event loop;
 *     the machines have 2 cores, so the two still compete for CPU.
 * (b) a burst of deploys: 100 `POST /v1/deployments` for 100 distinct targets (1 instance each),
 *     all sent at once on separate connections: the time until every one had its 202 (accepted,
 *     queued in the in-memory deployment store), then until all 100 had finished (run by the
 *     server's runner, 8 at a time, its default; health interval 100 ms, healthyThreshold 1).
 *
 * Bounded: autocannon stops after its duration; (b) fails after 60 s. About 25 s in all.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createRequire } from "node:module";
import { silentLogger } from "@kilnjs/core";
import { createKilnServer, hashToken, newTokenSecret } from "@kilnjs/server";
import { createMemoryProvider } from "@kilnjs/testkit";

/** What this bench uses of autocannon (CommonJS, `export =`; required, so no module interop is involved). */
interface Stats {
  average: number;
  p50: number;
  p99: number;
  total: number;
}
type Autocannon = (options: { url: string; headers: Record<string, string>; connections: number; duration: number; workers: number }) => Promise<{ requests: Stats; latency: Stats; errors: number; non2xx: number }>;
const autocannon = createRequire(import.meta.url)("autocannon") as Autocannon;

const CONNECTIONS = 10;
const DURATION_S = 10;
const WARMUP_S = 2;
const STATUS_INSTANCES = 3;
const BURST = 100;
/** The server's runner default: deployments run at once per replica. */
const RUNNER_CONCURRENCY = 8;
const FINISH_TIMEOUT_MS = 60_000;
const FINAL = new Set(["succeeded", "unchanged", "failed", "cancelled"]);

interface Deployment {
  id: string;
  state: string;
  target: string;
}

function spec(service: string, count: number) {
  return {
    service,
    provider: "memory",
    instances: { count, ports: [{ name: "http", port: 8080 }], stopGracePeriodMs: 0 },
    health: { intervalMs: 100, healthyThreshold: 1 },
    environments: { prod: {} },
  };
}

function percentile(sorted: readonly number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))] ?? Number.NaN;
}

export async function run(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), "kiln-bench-server-"));
  await writeFile(join(dir, "Dockerfile"), "FROM scratch\n");
  const token = newTokenSecret();
  const server = createKilnServer({
    providers: { memory: createMemoryProvider() },
    tokens: [{ name: "bench", sha256: hashToken(token), scopes: ["deploy"], environments: ["*"] }],
    dataDir: join(dir, ".kiln"),
    specRoot: dir,
    logger: silentLogger,
    concurrency: RUNNER_CONCURRENCY,
    pollIntervalMs: 50,
  });
  try {
    const { url } = await server.listen(0, "127.0.0.1");
    const authorization = `Bearer ${token}`;
    const api = async <T>(method: string, route: string, body?: unknown): Promise<{ status: number; body: T }> => {
      const response = await fetch(`${url}${route}`, {
        method,
        headers: { authorization, ...(body !== undefined ? { "content-type": "application/json" } : {}) },
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      });
      return { status: response.status, body: (await response.json()) as T };
    };
    /** Polls the deployment list until every id given has ended; returns when the last one did (ms since `since`). */
    const allFinished = async (ids: ReadonlySet<string>, since: number): Promise<{ ms: number; states: Map<string, string> }> => {
      const deadline = since + FINISH_TIMEOUT_MS;
      for (;;) {
        const { body } = await api<{ deployments: Deployment[] }>("GET", "/v1/deployments?limit=200");
        const states = new Map<string, string>();
        for (const deployment of body.deployments) if (ids.has(deployment.id)) states.set(deployment.id, deployment.state);
        if (states.size === ids.size && Array.from(states.values()).every((state) => FINAL.has(state))) return { ms: performance.now() - since, states };
        if (performance.now() > deadline) {
          const open = Array.from(ids).filter((id) => !FINAL.has(states.get(id) ?? "missing"));
          throw new Error(`${open.length} of ${ids.size} deployments had not finished after ${FINISH_TIMEOUT_MS / 1000} s`);
        }
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    };

    // (a) target status under load.
    const target = "bench-status@prod";
    const first = await api<Deployment>("POST", "/v1/deployments", { spec: spec("bench-status", STATUS_INSTANCES), environment: "prod" });
    if (first.status !== 202) throw new Error(`deploying ${target} answered ${first.status}: ${JSON.stringify(first.body)}`);
    const deployed = await allFinished(new Set([first.body.id]), performance.now());
    if (deployed.states.get(first.body.id) !== "succeeded") throw new Error(`deploying ${target} ended ${deployed.states.get(first.body.id)}`);
    const status = await api<{ instances: unknown[] }>("GET", `/v1/targets/${target}`);
    if (status.status !== 200 || status.body.instances.length !== STATUS_INSTANCES) throw new Error(`${target} status: ${status.status} ${JSON.stringify(status.body)}`);
    const load = { url: `${url}/v1/targets/${target}`, headers: { authorization }, connections: CONNECTIONS, workers: 1 };
    await autocannon({ ...load, duration: WARMUP_S });
    const result = await autocannon({ ...load, duration: DURATION_S });
    if (result.errors > 0 || result.non2xx > 0) throw new Error(`the status load had ${result.errors} errors and ${result.non2xx} non-2xx answers`);

    // (b) 100 deploys at once, on 100 connections (fetch opens one per request in flight).
    const started = performance.now();
    const accepted = await Promise.all(
      Array.from({ length: BURST }, async (_, index) => {
        const answer = await api<Deployment>("POST", "/v1/deployments", { spec: spec(`bench-burst-${index}`, 1), environment: "prod" });
        return { ...answer, ms: performance.now() - started };
      }),
    );
    const acceptedMs = performance.now() - started;
    const refused = accepted.filter((answer) => answer.status !== 202);
    const example = refused[0];
    if (example) throw new Error(`${refused.length} deploys were not accepted, e.g. ${example.status} ${JSON.stringify(example.body)}`);
    const finished = await allFinished(new Set(accepted.map((answer) => answer.body.id)), started);
    const succeeded = Array.from(finished.states.values()).filter((state) => state === "succeeded").length;
    const acceptTimes = accepted.map((answer) => answer.ms).sort((a, b) => a - b);

    const ms = (value: number) => `${value >= 100 ? value.toFixed(0) : Number(value.toFixed(1))} ms`;
    const rows: Array<[string, string]> = [
      [`GET /v1/targets/{target} (${STATUS_INSTANCES} instances), ${CONNECTIONS} connections, ${DURATION_S} s`, ""],
      ["  requests per second (mean)", result.requests.average.toFixed(0)],
      ["  latency p50", ms(result.latency.p50)],
      ["  latency p99", ms(result.latency.p99)],
      ["  requests (non-2xx, errors)", `${result.requests.total} (${result.non2xx}, ${result.errors})`],
      [`${BURST} concurrent deploys, ${BURST} targets (runner concurrency ${RUNNER_CONCURRENCY})`, ""],
      [`  all ${BURST} accepted (202)`, ms(acceptedMs)],
      ["  one accept, p50 / max", `${ms(percentile(acceptTimes, 50))} / ${ms(percentile(acceptTimes, 100))}`],
      [`  all ${BURST} finished`, ms(finished.ms)],
      ["  succeeded", `${succeeded} of ${BURST}`],
    ];
    const width = Math.max(...rows.map(([label]) => label.length));
    for (const [label, value] of rows) process.stdout.write(`${label.padEnd(width)}  ${value.padStart(14)}\n`);
    if (succeeded !== BURST) throw new Error(`${BURST - succeeded} of the ${BURST} deployments did not succeed`);
  } finally {
    await server.close();
    await rm(dir, { recursive: true, force: true });
  }
}
