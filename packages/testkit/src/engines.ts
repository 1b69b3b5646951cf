import { request } from "node:http";

/** How long {@link dockerEngineAvailable} waits for an answer, in milliseconds. */
const PING_TIMEOUT_MS = 2_000;

const DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock";

/** The engine address tests use: `DOCKER_HOST`, else the default socket. */
function dockerHost(): string {
  return process.env.DOCKER_HOST ? process.env.DOCKER_HOST : DEFAULT_DOCKER_HOST;
}

/**
 * Whether a Docker engine answers `GET /_ping` at `DOCKER_HOST` (`unix:///path` or `tcp://host:port`),
 * else at `unix:///var/run/docker.sock`. Never throws; gives up after 2 seconds. Uses node:http only
 * (no dockerode), so it is cheap to call at the top of a test file.
 * @returns true when the engine answered `200 OK`
 */
export function dockerEngineAvailable(): Promise<boolean> {
  const host = dockerHost();
  let target: { socketPath: string } | { host: string; port: number };
  if (host.startsWith("unix://")) {
    target = { socketPath: host.slice("unix://".length) };
  } else {
    const match = /^(?:tcp|http):\/\/(\[[^\]]+\]|[^:/]+)(?::(\d+))?\/?$/.exec(host);
    if (!match) return Promise.resolve(false);
    target = { host: match[1]!.replace(/^\[(.*)\]$/, "$1"), port: match[2] === undefined ? 2375 : Number(match[2]) };
  }
  return new Promise((resolve) => {
    const req = request({ ...target, path: "/_ping", method: "GET", timeout: PING_TIMEOUT_MS }, (res) => {
      res.resume();
      resolve(res.statusCode === 200);
    });
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.on("error", () => resolve(false));
    req.end();
  });
}

/**
 * Decides whether a test file that needs a Docker engine runs. When the engine answers it returns
 * true. When it does not: under CI (`CI=true`) it throws, because a skipped integration suite must
 * not pass silently there; elsewhere it prints a loud notice to stderr and returns false.
 *
 * @example
 * ```ts
 * const engine = await requireDockerEngine();
 * describe.skipIf(!engine)("docker provider", () => { ... });
 * ```
 * @throws Error under `CI=true` when no engine answers
 */
export async function requireDockerEngine(): Promise<boolean> {
  if (await dockerEngineAvailable()) return true;
  const host = dockerHost();
  if (process.env.CI === "true") {
    throw new Error(
      `A Docker engine is required under CI, but none answered at ${host}. Start one first: eval "$(bash scripts/docker-engine.sh start | tail -1)".`,
    );
  }
  process.stderr.write(`\n*** SKIPPED: no Docker engine answered at ${host}: npm test starts one when run as root; or: export DOCKER_HOST=<an engine you can use> (see "What npm test sets up" in Kiln's docs/development.md) ***\n\n`);
  return false;
}
