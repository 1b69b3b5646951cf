import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { createServer as createHttpsServer } from "node:https";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { serve, type ServerType } from "@hono/node-server";
import {
  createFileStateStore,
  createFileDeploymentQueue,
  createKiln,
  loadSpec,
  specFromObject,
  type DeploymentQueue,
  type Kiln,
  type Logger,
  type ProviderSource,
  type StateStore,
} from "@kilnjs/core";
import { pino } from "pino";
import { createApp } from "./app.js";
import { createAuthenticator, type TokenConfig } from "./auth.js";
import { createMetrics, type Metrics } from "./metrics.js";
import { hidePaths, type HiddenFolder } from "./paths.js";
import { startRunner, type Runner } from "./runner.js";

/** Options of {@link createKilnServer}. */
export interface KilnServerOptions {
  /** The providers deployments may use, by name (as for `createKiln`). */
  readonly providers: Readonly<Record<string, ProviderSource>>;
  /** API tokens (hashed). With none, every request but health is refused: authentication is always on. */
  readonly tokens: readonly TokenConfig[];
  /** Where releases and rollouts are kept. @defaultValue the embedded file store under `dataDir/state` */
  readonly store?: StateStore;
  /**
   * Where deployments wait to be run, with their events and idempotent answers: core's
   * `DeploymentQueue`. For several replicas, the PostgreSQL queue of `@kilnjs/store-postgres`
   * (`createPostgresBackend(…).queue`, on the state store's pool). Closed by {@link KilnServer.close}.
   * @defaultValue `createFileDeploymentQueue({ directory: dataDir/queue })` (one replica): deployments,
   *   their events and idempotent answers survive a restart; one that was running when the server
   *   stopped is marked failed (`ROLLOUT_INTERRUPTED`) when it starts again
   */
  readonly deployments?: DeploymentQueue;
  /** Kiln's working folder (state, fingerprint caches, and the deployment queue unless `deployments` is given). @defaultValue `.kiln` in the current folder */
  readonly dataDir?: string;
  /** Registered services: name → path of its kiln.yaml (`POST /v1/deployments { service }`). @defaultValue none */
  readonly services?: Readonly<Record<string, string>>;
  /** The folder a posted spec's relative paths (build context) are resolved against. @defaultValue the current folder */
  readonly specRoot?: string;
  /** Largest request body (bytes). @defaultValue 1048576 (1 MiB) */
  readonly maxBodyBytes?: number;
  /** This replica's id, in claims and logs. @defaultValue `<hostname>-<pid>` */
  readonly replicaId?: string;
  /** How long a deployment claim lasts unless renewed (milliseconds). @defaultValue 15000 */
  readonly claimLeaseMs?: number;
  /** How long a state-store lock lasts unless renewed (milliseconds; `createKiln`'s `lockTtlMs`). @defaultValue 30000 */
  readonly lockTtlMs?: number;
  /** How many deployments this replica runs at once. @defaultValue 8 */
  readonly concurrency?: number;
  /** How often an idle replica looks for queued deployments (milliseconds). @defaultValue 1000 */
  readonly pollIntervalMs?: number;
  /** Structured JSON logs. @defaultValue pino to stdout at `info` */
  readonly logger?: Logger;
  /**
   * The variables that secrets written `from: { env: NAME }` are read from: the server's, never
   * the caller's (an HTTP request names a secret, it never carries one). @defaultValue process.env
   */
  readonly env?: Readonly<Record<string, string | undefined>>;
  /**
   * Secrets written `from: { env: NAME }` may name only variables that start with this prefix, so
   * a caller can never have the server's own settings (its database URL, cloud credentials) handed
   * to an instance. `""` allows every variable (only for a server whose every caller is trusted
   * with its whole environment). Posted specs' `from.file` must lie within `specRoot`.
   * @defaultValue {@link SERVER_SECRET_ENV_PREFIX}
   */
  readonly secretEnvPrefix?: string;
}

/** The prefix of the server's variables that secrets may be read from, unless `secretEnvPrefix` says otherwise. */
export const SERVER_SECRET_ENV_PREFIX = "KILN_SECRET_";

/** A Kiln server: the HTTP app, the deployment runner, and their resources. */
export interface KilnServer {
  /** Handles one request (for tests and other servers: a fetch-style handler). */
  fetch(request: Request): Promise<Response>;
  /**
   * Starts listening (HTTPS when `tls` is given); resolves with the address. Opens the default
   * deployment queue first.
   * @throws KilnError STATE_UNAVAILABLE when another process uses the data folder's deployment queue
   * @param port - 0 for any free port
   * @param host - @defaultValue `127.0.0.1`
   */
  listen(port: number, host?: string, tls?: { cert: string; key: string }): Promise<{ host: string; port: number; url: string }>;
  /**
   * Stops listening and claiming; waits up to `graceMs` (milliseconds, default 0) for the
   * deployments it runs to finish, cancels the rest (they roll back, as on Ctrl-C), closes the stores.
   */
  close(graceMs?: number): Promise<void>;
  readonly kiln: Kiln;
  readonly metrics: Metrics;
  readonly replicaId: string;
}

/** A Logger over pino: JSON lines with `level`, `time`, `msg`, `service`, the given `fields` (the server adds `replica`) and each call's fields. */
export function jsonLogger(destination?: NodeJS.WritableStream, level = "info", fields: Record<string, string> = {}): Logger {
  const log = pino({ level, base: { service: "kiln-server", ...fields } }, destination as never);
  return {
    debug: (message, fields) => log.debug(fields ?? {}, message),
    info: (message, fields) => log.info(fields ?? {}, message),
    warn: (message, fields) => log.warn(fields ?? {}, message),
    error: (message, fields) => log.error(fields ?? {}, message),
  };
}

/**
 * Creates the Kiln HTTP server (`kiln serve`): the same core functions as the CLI under `/v1`
 * (targets, deployments with events over SSE and NDJSON, cancel, rollback, plan, locks), an
 * OpenAPI 3.1 document at `/v1/openapi.json`, `/v1/health`, `/v1/ready`, Prometheus `/metrics`,
 * and a status page at `/`. Deployments are queued in the {@link DeploymentQueue} and run by a
 * runner that claims them, so several replicas on one PostgreSQL share the work and take over
 * from one that dies. See docs/server.md.
 *
 * @throws KilnError INVALID_ARGUMENT for an invalid token list
 */
export function createKilnServer(options: KilnServerOptions): KilnServer {
  const replicaId = options.replicaId ?? `${os.hostname()}-${process.pid}`;
  const logger = options.logger ?? jsonLogger(undefined, "info", { replica: replicaId });
  const dataDir = path.resolve(options.dataDir ?? path.join(process.cwd(), ".kiln"));
  const store = options.store ?? createFileStateStore({ directory: path.join(dataDir, "state") });
  const ownQueue = options.deployments ? undefined : createFileDeploymentQueue({ directory: path.join(dataDir, "queue"), logger });
  const deployments = options.deployments ?? ownQueue!;
  const lockTtlMs = options.lockTtlMs ?? 30_000;
  const metrics = createMetrics();
  const specRoot = path.resolve(options.specRoot ?? process.cwd());
  const services = Object.fromEntries(Object.entries(options.services ?? {}).map(([name, file]) => [name, path.resolve(file)]));
  const secretEnvPrefix = options.secretEnvPrefix ?? SERVER_SECRET_ENV_PREFIX;
  const kiln = createKiln({
    providers: options.providers,
    store,
    dataDir,
    logger,
    command: `kiln serve (${replicaId})`,
    lockTtlMs,
    ...(options.env ? { env: options.env } : {}),
    ...(secretEnvPrefix !== "" ? { secretEnvPrefix } : {}),
  });
  const authenticator = createAuthenticator(options.tokens);
  const page = statusPage();
  // What API callers see of the server's disk: paths relative to the spec's root, the data folder
  // by name. A registered service's spec root is its kiln.yaml's folder.
  const dataFolder: HiddenFolder = { dir: dataDir, as: "<data-dir>" };
  const serviceFolders = Object.values(services).map((file) => ({ dir: path.dirname(file) }));
  const apiPaths = hidePaths([dataFolder, { dir: specRoot }, ...serviceFolders]);
  const postedPaths = hidePaths([dataFolder, { dir: specRoot }]);
  const runner: Runner = startRunner({
    store: deployments,
    kiln,
    replicaId,
    claimLeaseMs: options.claimLeaseMs ?? 15_000,
    pollIntervalMs: options.pollIntervalMs ?? 1_000,
    concurrency: options.concurrency ?? 8,
    lockWaitMs: lockTtlMs + 5_000,
    logger,
    metrics,
    pathsOf: (record) => {
      const file = record.request.service !== undefined ? services[record.request.service] : undefined;
      return file ? hidePaths([dataFolder, { dir: path.dirname(file) }, { dir: specRoot }]) : postedPaths;
    },
    loadSpec: async (record) => {
      if (record.request.service !== undefined) {
        const file = services[record.request.service];
        if (!file) throw new Error(`The service ${record.request.service} is not registered on this replica.`);
        return loadSpec(file);
      }
      return specFromObject(record.request.spec, specRoot);
    },
  });
  const app = createApp({
    kiln,
    store,
    deployments,
    authenticate: (secret) => authenticator.authenticate(secret),
    services,
    specRoot,
    maxBodyBytes: options.maxBodyBytes ?? 1024 * 1024,
    logger,
    metrics,
    wake: () => runner.wake(),
    ready: async () => {
      try {
        await store.listTargets();
        return true;
      } catch {
        return false;
      }
    },
    page: page.html,
    pageCsp: page.csp,
    streamPollMs: 200,
    paths: apiPaths,
  });
  let server: ServerType | undefined;
  return {
    kiln,
    metrics,
    replicaId,
    fetch: async (request) => app.fetch(request),
    async listen(port, host = "127.0.0.1", tls) {
      // The data folder's queue is opened first: another server using it stops this one here.
      await ownQueue?.ready();
      return new Promise((resolve, reject) => {
        const scheme = tls ? "https" : "http";
        const started = serve(
          { fetch: app.fetch, port, hostname: host, ...(tls ? { createServer: createHttpsServer, serverOptions: { cert: tls.cert, key: tls.key } } : {}) },
          (info) => resolve({ host, port: info.port, url: `${scheme}://${host.includes(":") ? `[${host}]` : host}:${info.port}` }),
        );
        started.once("error", reject);
        server = started;
      });
    },
    async close(graceMs = 0) {
      const closing = new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
      // Open event streams keep connections: stop them so the server can close.
      (server as { closeAllConnections?: () => void } | undefined)?.closeAllConnections?.();
      await closing;
      await runner.stop(graceMs);
      await kiln.close();
      await deployments.close?.();
    },
  };
}

/** The status page's HTML, from the package's `public/index.html` (no build step), with its Content-Security-Policy. */
function statusPage(): { html: string; csp: string } {
  const here = path.dirname(fileURLToPath(import.meta.url));
  for (const candidate of [path.join(here, "../public/index.html"), path.join(here, "../../public/index.html")]) {
    try {
      const html = readFileSync(candidate, "utf8");
      return { html, csp: pageCsp(html) };
    } catch {
      // try the next
    }
  }
  const html = "<!doctype html><title>Kiln</title><p>The status page is missing from this install.</p>";
  return { html, csp: pageCsp(html) };
}

/**
 * A strict policy for the page: its one inline script and style allowed by hash, requests to this
 * server only, nothing else (no frames, forms, base or external anything).
 */
function pageCsp(html: string): string {
  const hash = (pattern: RegExp) => {
    const body = pattern.exec(html)?.[1];
    return body === undefined ? "'none'" : `'sha256-${createHash("sha256").update(body, "utf8").digest("base64")}'`;
  };
  return [
    "default-src 'none'",
    `script-src ${hash(/<script type="module">([\s\S]*?)<\/script>/)}`,
    `style-src ${hash(/<style>([\s\S]*?)<\/style>/)}`,
    "connect-src 'self'",
    "img-src 'self' data:",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
  ].join("; ");
}
