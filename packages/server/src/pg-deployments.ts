import { KilnError, formatTarget, type KilnEvent } from "@kilnjs/core";
import pg from "pg";
import { FINAL_STATES, newDeploymentId, type DeploymentRecord, type DeploymentState, type DeploymentStore, type StoredResponse } from "./deployments.js";

/** Options of {@link createPostgresDeploymentStore}. */
export interface PostgresDeploymentStoreOptions {
  /** A `postgres://` URL; never logged (its password is redacted in errors). */
  readonly connectionString?: string;
  /** A pool to use instead (the caller closes it). */
  readonly pool?: pg.Pool;
  /** The schema the tables live in. @defaultValue `kiln` */
  readonly schema?: string;
}

/** The schema's versioned, forward-only migrations of the deployment tables. */
const MIGRATIONS: ReadonlyArray<{ version: number; sql: (schema: string) => string }> = [
  {
    version: 1,
    sql: (s) => `
      CREATE TABLE IF NOT EXISTS ${s}.deployments (
        id text PRIMARY KEY,
        target text NOT NULL,
        state text NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        claimed_by text,
        claim_expires_at timestamptz,
        record jsonb NOT NULL
      );
      -- At most one queued or running deployment per target, decided by the database.
      CREATE UNIQUE INDEX IF NOT EXISTS deployments_one_active ON ${s}.deployments (target) WHERE state IN ('queued', 'running');
      CREATE INDEX IF NOT EXISTS deployments_claimable ON ${s}.deployments (created_at) WHERE state IN ('queued', 'running');
      CREATE TABLE IF NOT EXISTS ${s}.deployment_events (
        deployment_id text NOT NULL REFERENCES ${s}.deployments (id) ON DELETE CASCADE,
        seq integer NOT NULL,
        event jsonb NOT NULL,
        PRIMARY KEY (deployment_id, seq)
      );
      CREATE TABLE IF NOT EXISTS ${s}.idempotent_responses (
        key text PRIMARY KEY,
        response jsonb NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now()
      );`,
  },
];

/**
 * A {@link DeploymentStore} in PostgreSQL, shared by every replica of `kiln serve`:
 *
 * - **One active deployment per target** by a partial unique index on `(target)` where the state
 *   is `queued` or `running`: of two requests for one target, one insert wins and the other gets
 *   the conflict at once, whichever replica each reached.
 * - **Claims** with `SELECT … FOR UPDATE SKIP LOCKED`: replicas looking for work at the same time
 *   take different rows, never the same one; a claim is a lease (`claim_expires_at`) renewed by its
 *   runner, and a `running` row whose lease lapsed (its replica died) is claimable again.
 * - **Events** numbered per deployment, so a stream from any replica can resume after `Last-Event-ID`.
 * - Migrations in {@link MIGRATIONS}, applied once on first use under a transaction-scoped advisory
 *   lock (concurrent replicas starting together are safe).
 */
export function createPostgresDeploymentStore(options: PostgresDeploymentStoreOptions): DeploymentStore {
  const schema = options.schema ?? "kiln";
  if (!/^[a-z_][a-z0-9_]{0,62}$/.test(schema)) throw new KilnError("INVALID_ARGUMENT", `The schema name "${schema}" is not a plain lowercase SQL identifier.`);
  if (!options.pool && !options.connectionString) throw new KilnError("INVALID_ARGUMENT", "Give the deployment store a connectionString or a pool.");
  const pool = options.pool ?? new pg.Pool({ connectionString: options.connectionString, max: 10 });
  const ownsPool = !options.pool;
  const table = (name: string) => `${schema}.${name}`;
  let ready: Promise<void> | undefined;

  async function migrate(): Promise<void> {
    const client = await pool.connect();
    try {
      await client.query("BEGIN");
      await client.query("SELECT pg_advisory_xact_lock(hashtext($1))", [`kiln-deployments-migrations:${schema}`]);
      await client.query(`CREATE SCHEMA IF NOT EXISTS ${schema}`);
      await client.query(`CREATE TABLE IF NOT EXISTS ${table("deployment_migrations")} (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())`);
      const applied = new Set((await client.query<{ version: number }>(`SELECT version FROM ${table("deployment_migrations")}`)).rows.map((row) => row.version));
      for (const migration of MIGRATIONS) {
        if (applied.has(migration.version)) continue;
        await client.query(migration.sql(schema));
        await client.query(`INSERT INTO ${table("deployment_migrations")} (version) VALUES ($1)`, [migration.version]);
      }
      await client.query("COMMIT");
    } catch (error) {
      await client.query("ROLLBACK").catch(() => undefined);
      throw error;
    } finally {
      client.release();
    }
  }

  async function query<R extends pg.QueryResultRow>(sql: string, values: unknown[] = []): Promise<pg.QueryResult<R>> {
    ready ??= migrate().catch((error: unknown) => {
      ready = undefined;
      throw error;
    });
    try {
      await ready;
      return await pool.query<R>(sql, values);
    } catch (error) {
      throw unavailable(error);
    }
  }

  function unavailable(error: unknown): KilnError {
    if (error instanceof KilnError) return error;
    const message = (error instanceof Error ? error.message : String(error)).replace(/postgres(ql)?:\/\/[^@\s]*@/g, "postgres://…@");
    return new KilnError("STATE_UNAVAILABLE", `The deployment store (PostgreSQL) failed: ${message}. Check that the database answers and KILN_PG_URL is right.`, { cause: error, retryable: true });
  }

  const recordOf = (row: { record: DeploymentRecord }) => row.record;


  return {
    async create(input) {
      const record: DeploymentRecord = { ...input, id: newDeploymentId(), state: "queued", createdAt: new Date().toISOString(), cancelRequested: false, attempts: 0 };
      const inserted = await query<{ id: string }>(
        `INSERT INTO ${table("deployments")} (id, target, state, created_at, record) VALUES ($1, $2, 'queued', $3, $4) ON CONFLICT DO NOTHING RETURNING id`,
        [record.id, formatTarget(record.target), record.createdAt, JSON.stringify(record)],
      );
      if (inserted.rowCount === 1) return { kind: "created", record };
      const active = await query<{ record: DeploymentRecord }>(`SELECT record FROM ${table("deployments")} WHERE target = $1 AND state IN ('queued', 'running')`, [formatTarget(record.target)]);
      const found = active.rows[0];
      // It finished between the insert and the look: try once more.
      if (!found) return this.create(input);
      return { kind: "conflict", active: recordOf(found) };
    },
    async get(id) {
      const result = await query<{ record: DeploymentRecord }>(`SELECT record FROM ${table("deployments")} WHERE id = $1`, [id]);
      return result.rows[0] ? recordOf(result.rows[0]) : undefined;
    },
    async list({ target, limit }) {
      const result = target
        ? await query<{ record: DeploymentRecord }>(`SELECT record FROM ${table("deployments")} WHERE target = $1 ORDER BY created_at DESC LIMIT $2`, [formatTarget(target), limit])
        : await query<{ record: DeploymentRecord }>(`SELECT record FROM ${table("deployments")} ORDER BY created_at DESC LIMIT $1`, [limit]);
      return result.rows.map(recordOf);
    },
    async claim(replicaId, leaseMs) {
      const result = await query<{ record: DeploymentRecord }>(
        `UPDATE ${table("deployments")} AS d
            SET state = 'running', claimed_by = $1, claim_expires_at = now() + ($2 || ' milliseconds')::interval,
                record = d.record || jsonb_build_object(
                  'state', 'running', 'claimedBy', $1::text,
                  'claimExpiresAt', to_char((now() + ($2 || ' milliseconds')::interval) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
                  'startedAt', coalesce(d.record->>'startedAt', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')),
                  'attempts', coalesce((d.record->>'attempts')::int, 0) + 1)
          WHERE d.id = (
            SELECT id FROM ${table("deployments")}
             WHERE state = 'queued' OR (state = 'running' AND claim_expires_at < now())
             ORDER BY created_at
             LIMIT 1
             FOR UPDATE SKIP LOCKED)
        RETURNING d.record`,
        [replicaId, String(leaseMs)],
      );
      return result.rows[0] ? recordOf(result.rows[0]) : undefined;
    },
    async renew(id, replicaId, leaseMs) {
      const result = await query(
        `UPDATE ${table("deployments")}
            SET claim_expires_at = now() + ($3 || ' milliseconds')::interval,
                record = record || jsonb_build_object('claimExpiresAt', to_char((now() + ($3 || ' milliseconds')::interval) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'))
          WHERE id = $1 AND claimed_by = $2 AND state = 'running'`,
        [id, replicaId, String(leaseMs)],
      );
      return result.rowCount === 1;
    },
    async finish(id, replicaId, outcome) {
      const current = await this.get(id);
      if (!current || current.claimedBy !== replicaId || FINAL_STATES.has(current.state)) return false;
      const { claimExpiresAt: _expires, ...rest } = current;
      const final: DeploymentRecord = {
        ...rest,
        state: outcome.state,
        finishedAt: new Date().toISOString(),
        ...(outcome.result ? { result: outcome.result } : {}),
        ...(outcome.error ? { error: outcome.error } : {}),
      };
      const result = await query(`UPDATE ${table("deployments")} SET state = $3, claim_expires_at = NULL, record = $4 WHERE id = $1 AND claimed_by = $2 AND state = 'running'`, [
        id,
        replicaId,
        final.state,
        JSON.stringify(final),
      ]);
      return result.rowCount === 1;
    },
    async requestCancel(id) {
      const current = await this.get(id);
      if (!current || FINAL_STATES.has(current.state)) return current;
      const cancelled: DeploymentState = "cancelled";
      if (current.state === "queued") {
        const updated: DeploymentRecord = { ...current, cancelRequested: true, state: cancelled, finishedAt: new Date().toISOString(), error: { code: "ABORTED", message: "Cancelled before it started." } };
        const result = await query(`UPDATE ${table("deployments")} SET state = 'cancelled', record = $2 WHERE id = $1 AND state = 'queued'`, [id, JSON.stringify(updated)]);
        if (result.rowCount === 1) return updated;
        return this.requestCancel(id);
      }
      await query(`UPDATE ${table("deployments")} SET record = record || '{"cancelRequested": true}'::jsonb WHERE id = $1`, [id]);
      return { ...current, cancelRequested: true };
    },
    async appendEvents(id, events: readonly KilnEvent[]) {
      if (events.length === 0) {
        const result = await query<{ seq: number | null }>(`SELECT max(seq) AS seq FROM ${table("deployment_events")} WHERE deployment_id = $1`, [id]);
        return result.rows[0]?.seq ?? 0;
      }
      // One statement: numbers follow the highest so far (one runner writes a deployment's events).
      const result = await query<{ seq: number }>(
        `INSERT INTO ${table("deployment_events")} (deployment_id, seq, event)
         SELECT $1, coalesce((SELECT max(seq) FROM ${table("deployment_events")} WHERE deployment_id = $1), 0) + ordinality, value
           FROM jsonb_array_elements($2::jsonb) WITH ORDINALITY
         RETURNING seq`,
        [id, JSON.stringify(events)],
      );
      return Math.max(...result.rows.map((row) => row.seq));
    },
    async readEvents(id, afterSeq, limit) {
      const result = await query<{ seq: number; event: KilnEvent }>(`SELECT seq, event FROM ${table("deployment_events")} WHERE deployment_id = $1 AND seq > $2 ORDER BY seq LIMIT $3`, [id, afterSeq, limit]);
      return result.rows.map((row) => ({ seq: row.seq, event: row.event }));
    },
    async getResponse(key) {
      const result = await query<{ response: StoredResponse }>(`SELECT response FROM ${table("idempotent_responses")} WHERE key = $1`, [key]);
      return result.rows[0]?.response;
    },
    async putResponse(key, response) {
      await query(`INSERT INTO ${table("idempotent_responses")} (key, response) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING`, [key, JSON.stringify(response)]);
      return (await this.getResponse(key)) ?? response;
    },
    async close() {
      if (ownsPool) await pool.end();
    },
  };
}
