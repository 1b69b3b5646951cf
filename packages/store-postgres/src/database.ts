import type { Pool, PoolClient } from "pg";
import { KilnError, silentLogger, type Logger } from "@kilnjs/core";
import { redactConnectionString, toStateError } from "./errors.js";
import { migrate } from "./migrations.js";
import { isValidSchemaName } from "./sql.js";

// What the state store and the deployment queue share: one pool (made on first use, or the
// caller's), one migration run per schema, and the way a connection is used and its failures
// reported. Internal: the package exports the store, the queue and the backend made of both.

/** The options every part of this package takes: where the tables are, and what to tell. */
export interface PostgresCommonOptions {
  /**
   * The PostgreSQL schema Kiln's tables live in: lowercase letters, digits and `_`. Created, with
   * its tables, on start when missing. Several Kiln installations can share a database with one
   * schema each. @defaultValue "kiln"
   */
  readonly schema?: string;
  /** Diagnostics: migrations applied, connections that failed while idle. */
  readonly logger?: Logger;
}

/** How to reach PostgreSQL: a connection string (a pool of the package's own), or a pool of yours. */
export type PostgresConnectionOptions =
  | {
      /**
       * `postgres://user:password@host:5432/database` (or libpq's `host=… dbname=…` form). The
       * package makes its own pool (at most `maxConnections` connections) and ends it on `close()`.
       */
      readonly connectionString: string;
      /** Connections the package's own pool opens at most. @defaultValue 10 */
      readonly maxConnections?: number;
      /** How long to wait for a new connection before failing with STATE_UNAVAILABLE (milliseconds). @defaultValue 10000 */
      readonly connectTimeoutMs?: number;
      readonly pool?: undefined;
    }
  | {
      /**
       * A `pg` pool to use. It stays yours: `close()` does not end it, and it should have an
       * `error` listener (an idle connection that fails emits one).
       */
      readonly pool: Pool;
      readonly connectionString?: undefined;
      readonly maxConnections?: undefined;
      readonly connectTimeoutMs?: undefined;
    };

/**
 * Carries an error thrown by the caller's code (a state change, a Kiln check) through
 * {@link Database.withClient} untouched: it is the caller's to see, not a database failure, and
 * the connection is still good.
 */
export class Passthrough extends Error {
  /** @param rollbackError - why the ROLLBACK after it failed, if it did (then the connection is dropped) */
  constructor(
    readonly error: unknown,
    readonly rollbackError?: unknown,
  ) {
    super("a change's own error, passed through");
  }
}

/** How long a statement may wait or run on the package's own connections (milliseconds). */
const STATEMENT_TIMEOUT_MS = 30_000;
/** How long the package's own connections may sit idle inside a transaction before the server ends it. */
const IDLE_IN_TRANSACTION_TIMEOUT_MS = 60_000;

/** A database connection shared by the parts that use it. */
export interface Database {
  /** The schema the tables are in (valid, unquoted). */
  readonly schema: string;
  /** The server as messages name it: the connection string without its password. */
  readonly server: string;
  readonly logger: Logger;
  /** Connects and brings the schema up to date, once (tried again on the next call after a failure). */
  ready(): Promise<void>;
  /**
   * Runs `run` on a connection of the pool; a connection that failed is discarded, not reused.
   * A driver error becomes STATE_UNAVAILABLE saying what failed while `doing` (e.g. `claiming a
   * deployment`); a KilnError, or a {@link Passthrough}'s error, is thrown as it is.
   */
  withClient<T>(doing: string, run: (client: PoolClient) => Promise<T>): Promise<T>;
  /**
   * Registers one more part using the database (the state store, the queue).
   * @returns the function that part calls on its `close()`: the last one ends the package's own pool
   */
  use(): () => Promise<void>;
}

/**
 * Checks the options and makes a {@link Database} (nothing connects yet; `pg` is loaded on first use).
 * @param what - what the caller makes, for messages ("PostgreSQL store", "PostgreSQL deployment queue")
 * @throws KilnError INVALID_ARGUMENT when the options are invalid
 */
export function openDatabase(options: PostgresCommonOptions & PostgresConnectionOptions, what: string): Database {
  const schema = options.schema ?? "kiln";
  if (!isValidSchemaName(schema)) {
    throw new KilnError("INVALID_ARGUMENT", `"${schema}" is not a schema name the ${what} accepts: use lowercase letters, digits and _, starting with a letter or _ (at most 63, not pg_…).`);
  }
  if ((options.connectionString === undefined) === (options.pool === undefined)) {
    throw new KilnError("INVALID_ARGUMENT", `The ${what} needs either connectionString or pool (exactly one of them).`);
  }
  if (options.connectionString !== undefined && options.connectionString.trim() === "") {
    throw new KilnError("INVALID_ARGUMENT", `The ${what}'s connectionString is empty: give postgres://user:password@host:5432/database.`);
  }
  const logger = options.logger ?? silentLogger;
  const server = describeServer(options);
  let pool: Pool | undefined = options.pool;
  let creating: Promise<Pool> | undefined;
  let migrated: Promise<void> | undefined;
  let users = 0;
  let ended = false;

  async function getPool(): Promise<Pool> {
    if (pool) return pool;
    creating ??= (async () => {
      const { default: pg } = await import("pg");
      const own = new pg.Pool({
        connectionString: options.connectionString,
        max: options.maxConnections ?? 10,
        connectionTimeoutMillis: options.connectTimeoutMs ?? 10_000,
        idleTimeoutMillis: 10_000,
        // An idle pool does not keep the process alive (like the lease timer, which is unref'd).
        allowExitOnIdle: true,
        keepAlive: true,
        application_name: "kiln",
        statement_timeout: STATEMENT_TIMEOUT_MS,
        idle_in_transaction_session_timeout: IDLE_IN_TRANSACTION_TIMEOUT_MS,
      });
      own.on("error", (error) => logger.warn("an idle PostgreSQL connection failed; the pool replaces it", { server, error: error.message }));
      pool = own;
      return own;
    })();
    return creating;
  }

  async function withClient<T>(doing: string, run: (client: PoolClient) => Promise<T>): Promise<T> {
    const source = await getPool();
    let client: PoolClient;
    try {
      client = await source.connect();
    } catch (error) {
      throw toStateError(error, server, doing);
    }
    // pg emits `error` on a checked-out client whose connection drops, even while a query is
    // running (the query rejects too): without a listener that would crash the process.
    let lost: Error | undefined;
    const onError = (error: Error) => {
      lost ??= error;
    };
    client.on("error", onError);
    let broken: unknown;
    try {
      return await run(client);
    } catch (error) {
      if (error instanceof Passthrough) {
        broken = error.rollbackError;
        throw error.error;
      }
      // A KilnError of our own (STATE_CORRUPT) leaves the connection fine; a driver error may not.
      if (!(error instanceof KilnError)) broken = error;
      throw toStateError(error, server, doing);
    } finally {
      broken = lost ?? broken;
      if (broken !== undefined) {
        // Destroyed by the pool; our listener stays so a late `error` cannot crash the process.
        client.release(broken instanceof Error ? broken : new Error("the connection failed", { cause: broken }));
      } else {
        client.removeListener("error", onError);
        client.release();
      }
    }
  }

  return {
    schema,
    server,
    logger,
    withClient,
    ready() {
      migrated ??= withClient(`migrating the schema "${schema}"`, async (client) => {
        await migrate(client, schema, logger);
      }).catch((error: unknown) => {
        migrated = undefined; // try again on the next call
        throw error;
      });
      return migrated;
    },
    use() {
      users += 1;
      let released = false;
      return async () => {
        if (released) return;
        released = true;
        users -= 1;
        if (users > 0 || ended || options.pool) return;
        ended = true;
        const own = pool ?? (creating ? await creating.catch(() => undefined) : undefined);
        await own?.end();
      };
    },
  };
}

/** The server as messages name it: the connection string without its password, or the pool's settings. */
function describeServer(options: PostgresConnectionOptions): string {
  if (options.connectionString !== undefined) return redactConnectionString(options.connectionString);
  const settings = (options.pool as { options?: { connectionString?: string; host?: string; port?: number; database?: string; user?: string } }).options ?? {};
  if (settings.connectionString) return redactConnectionString(settings.connectionString);
  const user = settings.user ?? process.env.PGUSER;
  const host = settings.host ?? process.env.PGHOST ?? "localhost";
  const port = settings.port ?? (process.env.PGPORT ? Number(process.env.PGPORT) : 5432);
  const database = settings.database ?? process.env.PGDATABASE ?? "";
  return `postgres://${user ? `${user}@` : ""}${host}:${port}/${database}`;
}
