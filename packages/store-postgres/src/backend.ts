import { openDatabase, type PostgresConnectionOptions } from "./database.js";
import { postgresDeploymentQueueOn, type PostgresDeploymentQueue } from "./queue.js";
import { checkLeaseTtlMs, postgresStateStoreOn, type PostgresStateStore, type PostgresStateStoreCommonOptions } from "./store.js";

/** Options of {@link createPostgresBackend}: those of the state store, on a connection string or a pool of your own. */
export type PostgresBackendOptions = PostgresStateStoreCommonOptions & PostgresConnectionOptions;

/** The state store and the deployment queue on one pool and one schema. */
export interface PostgresBackend {
  /** The schema both use. */
  readonly schema: string;
  /** The state store (as `createPostgresStateStore` makes it): releases, rollouts and their journal, rollout locks. */
  readonly store: PostgresStateStore;
  /** The deployment queue (as `createPostgresDeploymentQueue` makes it): deployments, their events, idempotent answers. */
  readonly queue: PostgresDeploymentQueue;
  /**
   * Connects and brings the schema up to date, once for both. Every method does this first
   * anyway; call it at start-up to fail early.
   * @throws KilnError STATE_UNAVAILABLE when the database cannot be reached or migrated
   */
  ready(): Promise<void>;
  /**
   * Closes the store and the queue, and ends the package's own pool (a pool passed in stays
   * open). Closing both the store and the queue yourself (as `kiln.close()` and a server's
   * `close()` do) does the same; calling this as well is harmless.
   */
  close(): Promise<void>;
}

/**
 * Everything `kiln serve` keeps in PostgreSQL, on one pool: the state store and the deployment
 * queue, sharing the database connections (at most `maxConnections` for both) and one migration
 * run of the schema. Use it when a process needs both; `createPostgresStateStore` and
 * `createPostgresDeploymentQueue` alone make a pool each (or share one you pass as `pool`).
 *
 * @example
 * ```ts
 * const backend = createPostgresBackend({ connectionString: process.env.KILN_PG_URL! });
 * await backend.ready();
 * const server = createKilnServer({ providers, tokens, store: backend.store, deployments: backend.queue });
 * // … server.close() closes both, and with them the pool
 * ```
 * @throws KilnError INVALID_ARGUMENT when the options are invalid (checked at once, before connecting)
 */
export function createPostgresBackend(options: PostgresBackendOptions): PostgresBackend {
  const database = openDatabase(options, "PostgreSQL backend");
  const store = postgresStateStoreOn(database, checkLeaseTtlMs(options.leaseTtlMs));
  const queue = postgresDeploymentQueueOn(database);
  return {
    schema: database.schema,
    store,
    queue,
    ready: () => store.ready(),
    async close() {
      await store.close();
      await queue.close();
    },
  };
}
