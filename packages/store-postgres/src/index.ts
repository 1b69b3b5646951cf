/**
 * Kiln on PostgreSQL, for `kiln serve` and for several Kiln processes (replicas, hosts) sharing one
 * database: the `StateStore` and the `DeploymentQueue` (both contracts from `@kilnjs/core`), alone
 * or together on one pool (`createPostgresBackend`), with one forward-only list of migrations.
 * State is one row per target, updated in a transaction that holds the row's lock; the rollout
 * lock is a lease in the state, fenced by its token, as in the file store. Deployments are claimed
 * with `SELECT … FOR UPDATE SKIP LOCKED` under leases timed by the database's clock.
 *
 * The `pg` driver is loaded on first use, so importing this package is cheap.
 * @module
 */
export { createPostgresStateStore, DOCUMENT_FORMAT } from "./store.js";
export type { PostgresStateStore, PostgresStateStoreCommonOptions, PostgresStateStoreOptions } from "./store.js";
export { MIGRATIONS, SCHEMA_VERSION } from "./migrations.js";
export type { Migration } from "./migrations.js";
export { createPostgresDeploymentQueue } from "./queue.js";
export type { PostgresDeploymentQueue, PostgresDeploymentQueueOptions } from "./queue.js";
export { createPostgresBackend } from "./backend.js";
export type { PostgresBackend, PostgresBackendOptions } from "./backend.js";
export type { PostgresCommonOptions, PostgresConnectionOptions } from "./database.js";
export { redactConnectionString } from "./errors.js";
