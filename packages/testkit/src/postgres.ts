import { connect, type Socket } from "node:net";
import path from "node:path";

/** How long {@link postgresAvailable} waits for PostgreSQL to answer, in milliseconds. */
const PING_TIMEOUT_MS = 2_000;

/**
 * The URL tests use when `KILN_PG_URL` is unset: the cluster `scripts/postgres.sh start` runs
 * (role and database `kiln`, password `kiln`, on 127.0.0.1:5433, unless `KILN_PG_PORT` or
 * `KILN_PG_PASSWORD` said otherwise, in which case `KILN_PG_URL` must be exported).
 */
export const DEFAULT_POSTGRES_URL = "postgres://kiln:kiln@127.0.0.1:5433/kiln";

/**
 * The PostgreSQL URL tests use: `KILN_PG_URL` (which `scripts/postgres.sh start|env` and `npm test`
 * export), else {@link DEFAULT_POSTGRES_URL}. It may hold a password: never print it as it is.
 */
export function postgresUrl(): string {
  const configured = process.env.KILN_PG_URL;
  return configured ? configured : DEFAULT_POSTGRES_URL;
}

/** The URL without its password, for messages. */
function redacted(url: string): string {
  return url.replace(/^([a-z]+:\/\/[^:/@]*):[^@]*@/i, "$1:***@");
}

/** Where to connect for `url`: a TCP host and port, or the Unix socket of a `host=/dir` URL. */
function socketTarget(url: string): { host: string; port: number } | { path: string } | undefined {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return undefined;
  }
  if (parsed.protocol !== "postgres:" && parsed.protocol !== "postgresql:") return undefined;
  const port = parsed.port ? Number(parsed.port) : 5432;
  const hostParam = parsed.searchParams.get("host");
  const host = hostParam ?? decodeURIComponent(parsed.hostname);
  if (host.startsWith("/")) return { path: path.join(host, `.s.PGSQL.${port}`) };
  return { host: host === "" ? "localhost" : host.replace(/^\[(.*)\]$/, "$1"), port };
}

/** PostgreSQL's SSLRequest: length 8, then the request code 80877103 (1234 << 16 | 5679). */
const SSL_REQUEST = Buffer.from([0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]);

/**
 * Whether PostgreSQL answers at `url`: a TCP (or Unix socket) connection opens, and the server
 * answers PostgreSQL's SSLRequest with the single byte `S` or `N`, as only PostgreSQL (or a
 * PgBouncer in front of it) does; then the connection is closed. Neither logs in nor loads a
 * driver (so testkit needs no `pg`, and this is cheap at the top of a test file): a wrong password
 * or database makes the tests fail loudly rather than skip. Never throws; gives up after 2 seconds.
 * @param url - a `postgres://` URL; defaults to {@link postgresUrl}()
 * @returns true when a PostgreSQL server answered
 */
export function postgresAvailable(url: string = postgresUrl()): Promise<boolean> {
  const target = socketTarget(url);
  if (!target) return Promise.resolve(false);
  return new Promise((resolve) => {
    let settled = false;
    const socket: Socket = connect(target);
    const timer = setTimeout(() => finish(false), PING_TIMEOUT_MS);
    function finish(answer: boolean): void {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(answer);
    }
    socket.once("connect", () => socket.write(SSL_REQUEST));
    socket.once("data", (data: Buffer) => finish(data.length >= 1 && (data[0] === 0x53 || data[0] === 0x4e)));
    socket.once("error", () => finish(false));
    socket.once("close", () => finish(false));
  });
}

/**
 * Decides whether a test file that needs PostgreSQL runs. When PostgreSQL answers at
 * {@link postgresUrl}() it returns true. When it does not: under CI (`CI=true`) it throws, because a
 * skipped integration suite must not pass silently there; elsewhere it prints a loud notice to
 * stderr and returns false.
 *
 * @example
 * ```ts
 * const postgres = await requirePostgres();
 * describe.skipIf(!postgres)("postgres store", () => { ... });
 * ```
 * @throws Error under `CI=true` when PostgreSQL does not answer
 */
export async function requirePostgres(): Promise<boolean> {
  const url = postgresUrl();
  if (await postgresAvailable(url)) return true;
  if (process.env.CI === "true") {
    throw new Error(
      `PostgreSQL is required under CI, but none answered at ${redacted(url)}. Start one first: eval "$(bash scripts/postgres.sh start | tail -1)".`,
    );
  }
  process.stderr.write(`\n*** SKIPPED: no PostgreSQL answered at ${redacted(url)}: npm test starts one when run as root or with KILN_TEST_SETUP=start; or: npm run postgres:start (see "What npm test sets up" in Kiln's docs/development.md) ***\n\n`);
  return false;
}
