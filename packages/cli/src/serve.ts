import { readFile } from "node:fs/promises";
import path from "node:path";
import type { TokenConfig } from "@kilnjs/server";
import type { Command } from "commander";
import { EXIT_CODES } from "./exit-codes.js";

/** The options of `kiln serve`, as commander gives them. */
export interface ServeOptions {
  readonly port: string;
  readonly host: string;
  readonly tokens?: string;
  readonly service: string[];
  readonly specRoot?: string;
  readonly secretEnvPrefix: string;
  readonly dataDir?: string;
  readonly postgres?: string;
  readonly postgresSchema: string;
  readonly claimLease: string;
  readonly lockTtl: string;
  readonly shutdownGrace: string;
  readonly replicaId?: string;
  readonly tlsCert?: string;
  readonly tlsKey?: string;
  readonly allowInsecureBind?: boolean;
  readonly hashToken?: boolean;
}

const LOOPBACK = new Set(["127.0.0.1", "::1", "localhost"]);

/** Registers `kiln serve` on the program; `run` wraps the action with the CLI's error reporting. */
export function registerServe(program: Command, run: (handler: (options: ServeOptions, stdout: NodeJS.WritableStream, stderr: NodeJS.WritableStream) => Promise<number>) => (...args: unknown[]) => Promise<void>): void {
  program
    .command("serve")
    .description("serve Kiln over HTTP for internal platforms (the same functions as this CLI; see docs/server.md)")
    .option("--port <port>", "the port to listen on", "8787")
    .option("--host <address>", "the address to listen on (anything but 127.0.0.1 needs TLS or --allow-insecure-bind)", "127.0.0.1")
    .option("--tokens <file>", "API tokens: a YAML or JSON list of { name, sha256, scopes, environments } (or KILN_SERVER_TOKENS as JSON)")
    .option("--service <name=path>", "register a service by its kiln.yaml, deployable as { service: name } (repeatable)", (value: string, previous: string[]) => [...previous, value], [])
    .option("--spec-root <dir>", "the folder a posted spec's relative paths (build context) start from (default: the current folder)")
    .option("--secret-env-prefix <prefix>", 'secrets "from: { env: NAME }" may name only the server\'s variables that start with this ("" for any)', "KILN_SECRET_")
    .option("--data-dir <dir>", "Kiln's working folder: embedded state, deployments (kept across restarts) and caches; one server at a time (default: .kiln)")
    .option("--postgres <url>", "keep state and deployments in PostgreSQL, for several replicas (or KILN_PG_URL)")
    .option("--postgres-schema <name>", "the PostgreSQL schema for Kiln's tables (one per installation sharing a database)", "kiln")
    .option("--claim-lease <duration>", "how long a replica's claim on a deployment lasts unless renewed; another replica takes over a dead one's deployment after it", "15s")
    .option("--lock-ttl <duration>", "how long a target's rollout lock lasts unless renewed (a dead replica's lock on another host lapses after it)", "30s")
    .option("--shutdown-grace <duration>", "on SIGINT/SIGTERM, how long running deployments may take to finish before they are cancelled (and roll back)", "60s")
    .option("--replica-id <id>", "this replica's name in claims and logs (default: host-pid)")
    .option("--tls-cert <file>", "serve HTTPS with this certificate (PEM)")
    .option("--tls-key <file>", "the TLS certificate's private key (PEM)")
    .option("--allow-insecure-bind", "bind to a non-loopback address without TLS, without the warning (e.g. behind a TLS-terminating load balancer)")
    .option("--hash-token", "print a new random token and the sha256 line to configure it, then exit")
    .addHelpText(
      "after",
      [
        "",
        "Authentication is always on: every endpoint but /v1/health and /v1/ready needs a bearer token.",
        "Tokens are stored hashed; each has scopes (read, deploy, admin) and the environments it may touch:",
        "",
        "  - name: ci-staging",
        "    sha256: sha256:…        # kiln serve --hash-token prints a token and its hash",
        "    scopes: [deploy]",
        "    environments: [staging]",
        "",
        "Endpoints: /v1/openapi.json (the API), / (a status page), /metrics (Prometheus).",
        "One machine: state and deployments (with their events) in files under --data-dir, kept across",
        "restarts; a deployment running when the server died is marked failed (ROLLOUT_INTERRUPTED) on",
        "restart, and the next deploy of its target recovers the rollout. Several replicas: --postgres.",
        "Answers: problem+json with a stable code; 405 with Allow for a method a path does not take;",
        "files are named relative to the spec's root (--spec-root, or a --service's folder), never by",
        "the server's own paths.",
        "Secrets: a spec's from.env names one of the server's variables starting with KILN_SECRET_",
        "(--secret-env-prefix), and a posted spec's from.file a file under --spec-root; a request never",
        "carries a value (docs/secrets.md).",
      ].join("\n"),
    )
    .action(
      run(async (options, stdout, stderr) => {
        // Loaded here, not at startup: `kiln --help` stays fast.
        const [server, { KilnError }] = await Promise.all([import("@kilnjs/server"), import("@kilnjs/core")]);
        if (options.hashToken) {
          const secret = server.newTokenSecret();
          stdout.write(`token:  ${secret}\nsha256: ${server.hashToken(secret)}\n(keep the token secret; put the sha256 line in the tokens file)\n`);
          return EXIT_CODES.success;
        }
        const port = Number(options.port);
        if (!Number.isInteger(port) || port < 0 || port > 65535) throw new KilnError("INVALID_ARGUMENT", `--port ${options.port} is not a port number (0-65535).`);
        const tokens = await readTokens(options.tokens);
        if (tokens.length === 0) stderr.write("warning: no API tokens configured (--tokens or KILN_SERVER_TOKENS): every request but health will be refused.\n");
        const tls = options.tlsCert || options.tlsKey ? await readTls(options) : undefined;
        if (!LOOPBACK.has(options.host) && !tls && !options.allowInsecureBind) {
          stderr.write(`warning: listening on ${options.host} without TLS: tokens cross the network in clear text. Give --tls-cert/--tls-key, or --allow-insecure-bind behind a TLS-terminating load balancer.\n`);
        }
        const services = Object.fromEntries(
          options.service.map((entry) => {
            const [name, file] = entry.split("=", 2);
            if (!name || !file) throw new KilnError("INVALID_ARGUMENT", `--service ${entry}: write NAME=PATH, e.g. --service hello-web=./examples/hello-web/kiln.yaml.`);
            return [name, path.resolve(file)];
          }),
        );
        const { importOptions, KNOWN_PROVIDERS } = await import("./providers.js");
        const { providerSources } = await import("@kilnjs/core");
        const providerNames = [...KNOWN_PROVIDERS, ...extraProviders()];
        const postgres = options.postgres ?? process.env.KILN_PG_URL;
        const { parseDuration } = await import("./duration.js");
        const durationOf = (text: string, flag: string) => {
          const ms = parseDuration(text);
          if (ms === undefined || ms < 1_000) throw new KilnError("INVALID_ARGUMENT", `${flag} ${text} is not a duration of at least 1s (e.g. 15s, 1m).`);
          return ms;
        };
        const claimLeaseMs = durationOf(options.claimLease, "--claim-lease");
        const lockTtlMs = durationOf(options.lockTtl, "--lock-ttl");
        const stores = postgres ? await postgresStores(postgres, options.postgresSchema, lockTtlMs) : undefined;
        const instance = server.createKilnServer({
          providers: providerSources(providerNames, importOptions(providerNames)),
          tokens: tokens as TokenConfig[],
          services,
          ...(options.specRoot ? { specRoot: options.specRoot } : {}),
          secretEnvPrefix: options.secretEnvPrefix,
          ...(options.dataDir ? { dataDir: options.dataDir } : {}),
          ...(options.replicaId ? { replicaId: options.replicaId } : {}),
          claimLeaseMs,
          lockTtlMs,
          ...(stores ? { store: stores.store, deployments: stores.deployments } : {}),
        });
        const address = await instance.listen(port, options.host, tls);
        stderr.write(`kiln serve: listening on ${address.url} (replica ${instance.replicaId}, ${stores ? "PostgreSQL" : "embedded"} state, ${tokens.length} token${tokens.length === 1 ? "" : "s"})\n`);
        await new Promise<void>((resolve) => {
          const stop = () => resolve();
          process.once("SIGINT", stop);
          process.once("SIGTERM", stop);
        });
        const graceMs = parseDuration(options.shutdownGrace) ?? 60_000;
        stderr.write(`kiln serve: shutting down (running deployments get ${Math.round(graceMs / 1000)} s to finish, then are cancelled and roll back)\n`);
        await instance.close(graceMs);
        await stores?.close();
        return EXIT_CODES.success;
      }),
    );
}

/** Providers named by `KILN_PROVIDER_MODULE_<NAME>` beyond the known ones (private providers, tests). */
function extraProviders(): string[] {
  return Object.keys(process.env)
    .filter((key) => key.startsWith("KILN_PROVIDER_MODULE_"))
    .map((key) => key.slice("KILN_PROVIDER_MODULE_".length).toLowerCase().replace(/_/g, "-"));
}

async function readTokens(file: string | undefined): Promise<unknown[]> {
  const { KilnError } = await import("@kilnjs/core");
  const text = file ? await readFile(file, "utf8").catch((error: unknown) => Promise.reject(new KilnError("INVALID_ARGUMENT", `--tokens ${file} cannot be read.`, { cause: error }))) : process.env.KILN_SERVER_TOKENS;
  if (!text) return [];
  const { parse } = await import("yaml");
  let value: unknown;
  try {
    value = parse(text);
  } catch (error) {
    throw new KilnError("INVALID_ARGUMENT", `${file ?? "KILN_SERVER_TOKENS"} is not valid YAML or JSON.`, { cause: error });
  }
  if (!Array.isArray(value)) throw new KilnError("INVALID_ARGUMENT", `${file ?? "KILN_SERVER_TOKENS"} must be a list of tokens; see kiln serve --help.`);
  return value as unknown[];
}

async function readTls(options: ServeOptions): Promise<{ cert: string; key: string }> {
  const { KilnError } = await import("@kilnjs/core");
  if (!options.tlsCert || !options.tlsKey) throw new KilnError("INVALID_ARGUMENT", "Give both --tls-cert and --tls-key.");
  return { cert: await readFile(options.tlsCert, "utf8"), key: await readFile(options.tlsKey, "utf8") };
}

/** The PostgreSQL state store and deployment queue (@kilnjs/store-postgres), on one pool of one database. */
async function postgresStores(connectionString: string, schema: string, leaseTtlMs: number) {
  const { createPostgresBackend } = await import("@kilnjs/store-postgres");
  const backend = createPostgresBackend({ connectionString, schema, leaseTtlMs });
  // Migrations run on start: a database that cannot be reached stops the server here.
  await backend.ready();
  return {
    store: backend.store,
    deployments: backend.queue,
    close: () => backend.close(),
  };
}
