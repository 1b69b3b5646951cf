/**
 * The cost of Kiln's front proxy on Docker: requests per second and latency through the proxy
 * against the same app reached directly, in one run.
 *
 *   proxy:  client → 127.0.0.1:<proxy port> (published by the proxy container) → HAProxy → hello-web
 *   direct: client → 127.0.0.1:<port> published by a plain container of the same image → hello-web
 *
 * Both paths go through Docker's port publishing once, so the difference is the proxy's hop. One
 * hello-web instance behind the proxy (deployed with the built CLI, `traffic.proxy`), one direct
 * container of the image Kiln built. Each side: a 1 s warm-up, then 10 s of closed-loop GET
 * /version at a fixed concurrency over keep-alive connections; the sides alternate (direct,
 * proxy, direct, proxy) so drift on a shared machine hits both alike. Needs a Docker engine
 * (DOCKER_HOST) and kiln-local/node:20 (scripts/base-images.sh); prints a notice and returns when no
 * engine answers or the Docker provider has no front proxy yet. Traffic goes only to 127.0.0.1.
 *
 * The client is one Node process on the same machine: at several thousand requests per second it
 * is itself near its ceiling, so the direct figure is a lower bound and the proxy's share of it an
 * upper bound of what the proxy costs.
 */
import { spawnSync } from "node:child_process";
import { cp, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { runClosedLoop, type LoadStats } from "@kilnjs/testkit";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const bin = path.join(root, "packages/cli/dist/bin.js");
const example = path.join(root, "examples/hello-web");
const SERVICE = "kiln-bench-proxy";
const DIRECT_LABEL = "dev.kiln.bench=proxy-direct";
const CONCURRENCY = 32;
const MEASURE_MS = 10_000;
const WARMUP_MS = 1_000;
const ROUNDS = 2;

function exec(command: string, args: string[], timeoutMs = 120_000): { code: number; stdout: string; stderr: string } {
  const result = spawnSync(command, args, { encoding: "utf8", timeout: timeoutMs, env: { ...process.env, NO_COLOR: "1" } });
  return { code: result.status ?? -1, stdout: (result.stdout ?? "").trim(), stderr: (result.stderr ?? "").trim() };
}
const docker = (args: string[]) => exec("docker", args, 60_000);
const lines = (text: string) => text.split("\n").map((line) => line.trim()).filter(Boolean);

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

async function waitForAnswer(port: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const stats = await runClosedLoop({ host: "127.0.0.1", port, concurrency: 1, durationMs: 200, maxRequests: 1, requestTimeoutMs: 1_000 });
    if (stats.ok === 1) return true;
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  return false;
}

function cleanup(proxyPort: number | undefined, dir: string | undefined): Promise<void> {
  const byLabel = (label: string) => lines(docker(["ps", "-aq", "--filter", `label=${label}`]).stdout);
  const containers = new Set([...byLabel(`dev.kiln.service=${SERVICE}`), ...byLabel(DIRECT_LABEL)]);
  if (proxyPort !== undefined) {
    // The proxy container, whatever its labels, if it is one of Kiln's (it publishes our port).
    for (const line of lines(docker(["ps", "-a", "--format", "{{.ID}} {{.Ports}} {{.Labels}}"]).stdout)) {
      if (line.includes(`:${proxyPort}->`) && line.includes("dev.kiln.")) containers.add(line.split(" ")[0]!);
    }
  }
  if (containers.size > 0) docker(["rm", "-f", ...containers]);
  const networks = lines(docker(["network", "ls", "-q", "--filter", `label=dev.kiln.service=${SERVICE}`]).stdout);
  if (networks.length > 0) docker(["network", "rm", ...networks]);
  const volumes = lines(docker(["volume", "ls", "-q", "--filter", `label=dev.kiln.service=${SERVICE}`]).stdout);
  if (volumes.length > 0) docker(["volume", "rm", ...volumes]);
  const images = lines(docker(["images", "-q", "--filter", `label=dev.kiln.service=${SERVICE}`]).stdout);
  if (images.length > 0) docker(["rmi", "-f", ...new Set(images)]);
  return dir ? rm(dir, { recursive: true, force: true }) : Promise.resolve();
}

function line(name: string, stats: LoadStats): string {
  return `${name.padEnd(8)} ${String(Math.round(stats.ok / (stats.elapsedMs / 1000))).padStart(7)} req/s   p50 ${stats.p50Ms.toFixed(2).padStart(6)} ms   p99 ${stats.p99Ms.toFixed(2).padStart(6)} ms   max ${stats.maxMs.toFixed(1).padStart(7)} ms   (${stats.ok} ok, ${stats.failed} failed)`;
}

/** Sums the rounds of one side: requests and time add up; percentiles are the rounds' worst. */
function combine(rounds: LoadStats[]): LoadStats {
  const first = rounds[0]!;
  return {
    ...first,
    sent: rounds.reduce((sum, r) => sum + r.sent, 0),
    completed: rounds.reduce((sum, r) => sum + r.completed, 0),
    ok: rounds.reduce((sum, r) => sum + r.ok, 0),
    failed: rounds.reduce((sum, r) => sum + r.failed, 0),
    elapsedMs: rounds.reduce((sum, r) => sum + r.elapsedMs, 0),
    p50Ms: Math.max(...rounds.map((r) => r.p50Ms)),
    p99Ms: Math.max(...rounds.map((r) => r.p99Ms)),
    maxMs: Math.max(...rounds.map((r) => r.maxMs)),
  };
}

export async function run(): Promise<void> {
  if (docker(["info"]).code !== 0) {
    process.stdout.write("skipped: no Docker engine answers (npm run engine:start, then export DOCKER_HOST)\n");
    return;
  }
  const proxyPort = await freePort();
  let dir: string | undefined;
  await cleanup(undefined, undefined);
  try {
    dir = await mkdtemp(path.join(os.tmpdir(), "kiln-bench-proxy-"));
    await cp(example, dir, { recursive: true, filter: (source) => !/[/\\](\.kiln|node_modules)$/.test(source) });
    let spec = await readFile(path.join(dir, "kiln.yaml"), "utf8");
    spec = spec.replace("service: hello-web", `service: ${SERVICE}`).replace("  count: 3\n", "  count: 1\n").replace(/\nenvironments:\n(?: .*\n?)*/, "\n");
    spec = `${spec.replace(/\n*$/, "\n")}\ntraffic:\n  proxy: { port: ${proxyPort} }\n`;
    await writeFile(path.join(dir, "kiln.yaml"), spec);

    const deploy = exec(process.execPath, [bin, "deploy", "--json", "-C", dir], 180_000);
    if (deploy.code !== 0) {
      if (/CAPABILITY_MISSING|traffic capability/.test(deploy.stdout + deploy.stderr)) {
        process.stdout.write("skipped: the Docker provider has no front proxy yet (kiln refused traffic.proxy: CAPABILITY_MISSING)\n");
        return;
      }
      throw new Error(`kiln deploy failed (exit ${deploy.code}):\n${(deploy.stdout + deploy.stderr).slice(-3000)}`);
    }
    const instance = lines(docker(["ps", "-q", "--no-trunc", "--filter", `label=dev.kiln.service=${SERVICE}`, "--filter", "label=dev.kiln.release"]).stdout);
    if (instance.length !== 1) throw new Error(`expected 1 instance of ${SERVICE}, found ${instance.length}`);
    const image = docker(["inspect", "--format", "{{.Image}}", instance[0]!]).stdout;
    const direct = docker(["run", "-d", "--label", DIRECT_LABEL, "-p", "127.0.0.1::8080", "--memory", "128m", image]);
    if (direct.code !== 0) throw new Error(`docker run (direct container) failed: ${direct.stderr}`);
    const mapped = docker(["port", direct.stdout, "8080/tcp"]).stdout.split("\n")[0] ?? "";
    const directPort = Number(mapped.slice(mapped.lastIndexOf(":") + 1));
    if (!(directPort > 0)) throw new Error(`the direct container publishes no port (${mapped})`);

    for (const [name, port] of [
      ["direct", directPort],
      ["proxy", proxyPort],
    ] as const) {
      if (!(await waitForAnswer(port, 20_000))) throw new Error(`${name} (127.0.0.1:${port}) does not answer GET /version`);
    }

    process.stdout.write(`GET /version, ${CONCURRENCY} connections, keep-alive, ${ROUNDS} × ${MEASURE_MS / 1000} s per side (alternating), after a ${WARMUP_MS / 1000} s warm-up each\n`);
    const results: Record<"direct" | "proxy", LoadStats[]> = { direct: [], proxy: [] };
    for (let round = 0; round < ROUNDS; round++) {
      for (const [name, port] of [
        ["direct", directPort],
        ["proxy", proxyPort],
      ] as const) {
        await runClosedLoop({ host: "127.0.0.1", port, concurrency: CONCURRENCY, durationMs: WARMUP_MS });
        const stats = await runClosedLoop({ host: "127.0.0.1", port, concurrency: CONCURRENCY, durationMs: MEASURE_MS });
        results[name].push(stats);
        process.stdout.write(`  round ${round + 1} ${line(name, stats)}\n`);
      }
    }
    const directStats = combine(results.direct);
    const proxyStats = combine(results.proxy);
    process.stdout.write(`${line("direct", directStats)}\n${line("proxy", proxyStats)}\n`);
    const rps = (s: LoadStats) => s.ok / (s.elapsedMs / 1000);
    process.stdout.write(
      `proxy vs direct: ${((rps(proxyStats) / rps(directStats)) * 100).toFixed(0)}% of the requests per second; ` +
        `added latency p50 ${(proxyStats.p50Ms - directStats.p50Ms).toFixed(2)} ms, p99 ${(proxyStats.p99Ms - directStats.p99Ms).toFixed(2)} ms\n`,
    );
    if (directStats.failed + proxyStats.failed > 0) process.stdout.write(`warning: failed requests: direct ${directStats.failed}, proxy ${proxyStats.failed}\n`);
  } finally {
    await cleanup(proxyPort, dir);
  }
}
