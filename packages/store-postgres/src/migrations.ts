import type { PoolClient } from "pg";
import { KilnError, silentLogger, type Logger } from "@kilnjs/core";
import { quoteIdentifier } from "./sql.js";

/**
 * One step of the store's schema. Migrations are forward-only: once released, a migration never
 * changes and is never removed; a later change to the schema is a new migration with the next version.
 */
export interface Migration {
  /** 1, 2, 3, …: applied in this order, each once per schema. */
  readonly version: number;
  /** What it does, in a few words (recorded in `kiln_migrations.name`). */
  readonly name: string;
  /** The statements to run, given the quoted schema name; run in one transaction with the record of the migration. */
  statements(schema: string): readonly string[];
}

/**
 * Every migration of the store's schema, oldest first. Append only: never edit or reorder one that
 * has been released, since databases record which versions they have applied.
 */
export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: "target state",
    statements: (schema) => [
      `CREATE TABLE ${schema}.target_state (
        service text NOT NULL,
        environment text NOT NULL,
        format integer NOT NULL,
        document jsonb NOT NULL,
        version bigint NOT NULL DEFAULT 0,
        updated_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (service, environment)
      )`,
      `COMMENT ON TABLE ${schema}.target_state IS 'Kiln state, one row per target (service@environment): releases, rollouts with their journal, and the rollout lock''s lease. Written only by Kiln, in a transaction holding the row lock (SELECT ... FOR UPDATE).'`,
      `COMMENT ON COLUMN ${schema}.target_state.format IS 'The format of document (1).'`,
      `COMMENT ON COLUMN ${schema}.target_state.version IS 'How many times the row was written: one more on every update.'`,
    ],
  },
  {
    version: 2,
    name: "deployment queue",
    // The tables `kiln serve` (before this migration existed) made with its own migration list, in
    // the same schema: IF NOT EXISTS with exactly their shape adopts them, rows and all.
    statements: (schema) => [
      `CREATE TABLE IF NOT EXISTS ${schema}.deployments (
        id text PRIMARY KEY,
        target text NOT NULL,
        state text NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        claimed_by text,
        claim_expires_at timestamptz,
        record jsonb NOT NULL
      )`,
      // An adopted table must have the columns the queue uses: fail here, not on first use.
      `SELECT id, target, state, created_at, claimed_by, claim_expires_at, record FROM ${schema}.deployments LIMIT 0`,
      // At most one queued or running deployment per target, decided by the database.
      `CREATE UNIQUE INDEX IF NOT EXISTS deployments_one_active ON ${schema}.deployments (target) WHERE state IN ('queued', 'running')`,
      `CREATE INDEX IF NOT EXISTS deployments_claimable ON ${schema}.deployments (created_at) WHERE state IN ('queued', 'running')`,
      `CREATE INDEX IF NOT EXISTS deployments_created_at ON ${schema}.deployments (created_at)`,
      `CREATE INDEX IF NOT EXISTS deployments_target_created_at ON ${schema}.deployments (target, created_at)`,
      `CREATE TABLE IF NOT EXISTS ${schema}.deployment_events (
        deployment_id text NOT NULL REFERENCES ${schema}.deployments (id) ON DELETE CASCADE,
        seq integer NOT NULL,
        event jsonb NOT NULL,
        PRIMARY KEY (deployment_id, seq)
      )`,
      `SELECT deployment_id, seq, event FROM ${schema}.deployment_events LIMIT 0`,
      `CREATE TABLE IF NOT EXISTS ${schema}.idempotent_responses (
        key text PRIMARY KEY,
        response jsonb NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now()
      )`,
      `SELECT key, response, created_at FROM ${schema}.idempotent_responses LIMIT 0`,
      // The old list's record (version 1 of the tables above): this migration supersedes it.
      `DROP TABLE IF EXISTS ${schema}.deployment_migrations`,
      `COMMENT ON TABLE ${schema}.deployments IS 'Kiln deployments (the DeploymentQueue): state, claimed_by and claim_expires_at (the claim''s lease, by the database clock) are authoritative; record holds the rest of the deployment as JSON.'`,
      `COMMENT ON TABLE ${schema}.deployment_events IS 'Each deployment''s events, numbered from 1 (seq).'`,
      `COMMENT ON TABLE ${schema}.idempotent_responses IS 'Answers kept under an idempotency key (scoped by the caller); the first one kept stays.'`,
    ],
  },
  {
    version: 3,
    name: "append-only journal",
    // Journal entries are appended as rows (one INSERT each, whatever the size of the state
    // document), and folded into the document by the next update; the lease moves from the
    // document into columns of its own, so checking a fencing token reads a few bytes, not the
    // whole (TOASTed) document.
    statements: (schema) => [
      `ALTER TABLE ${schema}.target_state ADD COLUMN lease jsonb, ADD COLUMN fencing_token bigint, ADD COLUMN journal_last_seq jsonb`,
      `UPDATE ${schema}.target_state SET lease = document->'lease', fencing_token = (document->>'fencingToken')::bigint, document = document - 'lease' - 'fencingToken' WHERE document ? 'lease' OR document ? 'fencingToken'`,
      `CREATE TABLE ${schema}.rollout_journal (
        service text NOT NULL,
        environment text NOT NULL,
        rollout_id text NOT NULL,
        seq integer NOT NULL,
        entry jsonb NOT NULL,
        PRIMARY KEY (service, environment, rollout_id, seq),
        FOREIGN KEY (service, environment) REFERENCES ${schema}.target_state (service, environment) ON DELETE CASCADE
      )`,
      `COMMENT ON COLUMN ${schema}.target_state.lease IS 'The rollout lock''s lease (holder, fencing token, expiry, ttl), NULL when nobody holds it. Written in a transaction holding the row lock.'`,
      `COMMENT ON COLUMN ${schema}.target_state.fencing_token IS 'The last fencing token granted for the target (NULL: none yet); it never goes back.'`,
      `COMMENT ON COLUMN ${schema}.target_state.journal_last_seq IS 'The last journal seq of each rollout running at the last update ({"<rollout id>": seq}): appends number on from it without reading document.'`,
      `COMMENT ON TABLE ${schema}.rollout_journal IS 'Journal entries appended since the target''s last update (entry: the entry without its seq), each inserted under the target''s row lock after its fencing token was checked; an update folds them into document and deletes them in the same transaction.'`,
    ],
  },
];

/** The newest schema version this code knows. */
export const SCHEMA_VERSION = MIGRATIONS[MIGRATIONS.length - 1]!.version;

/** The first key of the advisory lock migrations run under: "kiln" in ASCII. */
const MIGRATION_LOCK_CLASS = 0x6b696c6e;

/** FNV-1a (32 bits, as a signed int4): the second key of the migration lock, per schema. */
export function migrationLockKey(schema: string): number {
  let hash = 0x811c9dc5;
  for (const byte of Buffer.from(schema, "utf8")) {
    hash ^= byte;
    hash = Math.imul(hash, 0x01000193);
  }
  return hash | 0;
}

async function appliedVersion(client: PoolClient, schema: string): Promise<number | undefined> {
  const table = `${quoteIdentifier(schema)}.kiln_migrations`;
  const exists = await client.query<{ found: string | null }>("SELECT to_regclass($1)::text AS found", [table]);
  if (!exists.rows[0]?.found) return undefined;
  const { rows } = await client.query<{ version: number | null }>(`SELECT max(version)::integer AS version FROM ${table}`);
  return rows[0]?.version ?? 0;
}

function tooNew(schema: string, version: number): KilnError {
  return new KilnError(
    "STATE_UNAVAILABLE",
    `The PostgreSQL schema "${schema}" holds Kiln state at schema version ${version}, newer than this Kiln knows (${SCHEMA_VERSION}): a newer Kiln migrated it. Upgrade this Kiln to that version.`,
    { details: { schema, version, known: SCHEMA_VERSION } },
  );
}

/**
 * Brings `schema` to {@link SCHEMA_VERSION}: creates it and its `kiln_migrations` table when
 * missing, then applies each migration not yet recorded, each in its own transaction under a
 * transaction-level advisory lock (`pg_advisory_xact_lock`) on the schema, so several processes
 * starting at once apply each migration exactly once (the others wait, then find it recorded).
 * When the schema is already current, it only reads (no lock, no DDL: a role without CREATE works).
 * @returns the versions this call applied
 * @throws KilnError STATE_UNAVAILABLE when the schema is newer than this code
 */
export async function migrate(client: PoolClient, schema: string, logger: Logger = silentLogger): Promise<number[]> {
  const current = await appliedVersion(client, schema);
  if (current !== undefined && current > SCHEMA_VERSION) throw tooNew(schema, current);
  if (current === SCHEMA_VERSION) return [];
  const quoted = quoteIdentifier(schema);
  const applied: number[] = [];
  for (const migration of MIGRATIONS) {
    await client.query("BEGIN");
    try {
      await client.query("SELECT pg_advisory_xact_lock($1::integer, $2::integer)", [MIGRATION_LOCK_CLASS, migrationLockKey(schema)]);
      // Under the lock: another process may have done this while we waited.
      const namespace = await client.query<{ found: string | null }>("SELECT to_regnamespace($1)::text AS found", [quoted]);
      if (!namespace.rows[0]?.found) await client.query(`CREATE SCHEMA ${quoted}`);
      await client.query(
        `CREATE TABLE IF NOT EXISTS ${quoted}.kiln_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`,
      );
      const version = (await appliedVersion(client, schema)) ?? 0;
      if (version > SCHEMA_VERSION) throw tooNew(schema, version);
      if (version >= migration.version) {
        await client.query("COMMIT");
        continue;
      }
      for (const statement of migration.statements(quoted)) await client.query(statement);
      await client.query(`INSERT INTO ${quoted}.kiln_migrations (version, name) VALUES ($1, $2)`, [migration.version, migration.name]);
      await client.query("COMMIT");
      applied.push(migration.version);
      logger.info("applied a state schema migration", { schema, version: migration.version, name: migration.name });
    } catch (error) {
      await client.query("ROLLBACK").catch(() => {});
      throw error;
    }
  }
  return applied;
}
