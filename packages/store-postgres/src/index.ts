/**
 * Kiln state on PostgreSQL: the `StateStore` (from `@kilnjs/core`) for `kiln serve` and for several
 * Kiln processes (replicas, hosts) sharing one database. One row per target, updated in a
 * transaction that holds the row's lock; the rollout lock is a lease in the state, fenced by its
 * token, as in the file store.
 *
 * The `pg` driver is loaded on first use, so importing this package is cheap.
 * @module
 */
export { createPostgresStateStore, DOCUMENT_FORMAT } from "./store.js";
export type { PostgresStateStore, PostgresStateStoreCommonOptions, PostgresStateStoreOptions } from "./store.js";
export { MIGRATIONS, SCHEMA_VERSION } from "./migrations.js";
export type { Migration } from "./migrations.js";
export { redactConnectionString } from "./errors.js";
