import type { PoolClient } from "pg";
import {
  CANCELLED_BEFORE_START,
  KilnError,
  assertDeploymentOutcome,
  formatTarget,
  newDeploymentId,
  type DeploymentQueue,
  type DeploymentRecord,
  type DeploymentState,
  type IdempotentResponse,
  type KilnEvent,
} from "@kilnjs/core";
import { Passthrough, openDatabase, type Database, type PostgresCommonOptions, type PostgresConnectionOptions } from "./database.js";
import { quoteIdentifier, toJsonbText } from "./sql.js";

/** Options of {@link createPostgresDeploymentQueue}: a connection string, or a pool of your own. */
export type PostgresDeploymentQueueOptions = PostgresCommonOptions & PostgresConnectionOptions;

/** The PostgreSQL {@link DeploymentQueue}, with a way to connect and migrate before first use. */
export interface PostgresDeploymentQueue extends DeploymentQueue {
  /** The schema the queue's tables are in. */
  readonly schema: string;
  /**
   * Connects and brings the schema up to date (the same migrations as the state store's). Every
   * other method does this first anyway; call it at start-up to fail early.
   * @throws KilnError STATE_UNAVAILABLE when the database cannot be reached or migrated
   */
  ready(): Promise<void>;
  /**
   * Closes the queue; it is not used afterwards. The package's own pool ends once nothing else
   * uses it (with {@link createPostgresBackend}: once the state store is closed too); a pool passed
   * in stays open.
   */
  close(): Promise<void>;
}

/** A row of `deployments` as the queue reads it. */
interface DeploymentRow {
  state: DeploymentState;
  claimed_by: string | null;
  claim_expires_at: Date | null;
  record: DeploymentRecord & { claimExpiresAt?: string };
}

/** The columns {@link recordOf} reads. */
const COLUMNS = "state, claimed_by, claim_expires_at, record";

/** SQL for a timestamptz expression as the ISO 8601 text records hold (UTC, milliseconds). */
const iso = (expression: string) => `to_char((${expression}) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')`;

/** How many times `enqueue` and `requestCancel` look again when the row changed under them. */
const RACE_RETRIES = 10;

/**
 * A deployment as the contract gives it: the record in the row's jsonb, with the state, the
 * claim's worker and its lease from the row's own columns, which are what every statement decides
 * on. (`claimExpiresAt` is how `kiln serve` named the lease before the queue moved here.)
 */
function recordOf(row: DeploymentRow): DeploymentRecord {
  const { claimExpiresAt: _old, leaseExpiresAt: _lease, claimedBy: _worker, state: _state, ...rest } = row.record;
  return {
    ...rest,
    state: row.state,
    ...(row.claimed_by !== null ? { claimedBy: row.claimed_by } : {}),
    ...(row.claim_expires_at !== null && row.state === "running" ? { leaseExpiresAt: row.claim_expires_at.toISOString() } : {}),
  };
}

/**
 * The {@link DeploymentQueue} in PostgreSQL, shared by every replica of `kiln serve` (or any
 * worker) that uses the same database and schema. Its tables (`deployments`,
 * `deployment_events`, `idempotent_responses`) are migrations of the same list as the state
 * store's, applied on first use under the same advisory lock.
 *
 * - **One active deployment per target** by a partial unique index on `(target)` where the state
 *   is `queued` or `running`: of two requests for one target, one insert wins and the other gets
 *   the conflict at once, whichever replica each reached.
 * - **Claims** with `SELECT … FOR UPDATE SKIP LOCKED`: workers looking for work at the same time
 *   take different rows, never the same one. A claim is a lease (`claim_expires_at`, by the
 *   database's clock), and a `running` row whose lease lapsed is claimable again.
 * - **Events** numbered per deployment under the deployment row's lock, so concurrent appends
 *   never collide and a stream from any replica can resume after `Last-Event-ID`.
 * - jsonb cannot hold the NUL character: a NUL in a string (a build log line in an event) is
 *   stored as U+FFFD.
 *
 * Failures of the database are `STATE_UNAVAILABLE`, naming the server without its password.
 *
 * @example
 * ```ts
 * const queue = createPostgresDeploymentQueue({ connectionString: process.env.KILN_PG_URL! });
 * await queue.ready();
 * ```
 * @throws KilnError INVALID_ARGUMENT when the options are invalid (checked at once, before connecting)
 */
export function createPostgresDeploymentQueue(options: PostgresDeploymentQueueOptions): PostgresDeploymentQueue {
  return postgresDeploymentQueueOn(openDatabase(options, "PostgreSQL deployment queue"));
}

/** The deployment queue on a {@link Database} (its own, or one shared with the state store). */
export function postgresDeploymentQueueOn(database: Database): PostgresDeploymentQueue {
  const { schema, server } = database;
  const quoted = quoteIdentifier(schema);
  const deployments = `${quoted}.deployments`;
  const events = `${quoted}.deployment_events`;
  const responses = `${quoted}.idempotent_responses`;
  const release = database.use();
  let closed = false;

  async function ready(): Promise<void> {
    if (closed) throw new KilnError("STATE_UNAVAILABLE", `The PostgreSQL deployment queue (${server}) is closed.`);
    await database.ready();
  }

  /** Runs one statement (after migrating) and gives its rows. */
  async function query<R extends object>(doing: string, sql: string, values: unknown[] = []): Promise<R[]> {
    await ready();
    return database.withClient(doing, async (client) => (await client.query<R & Record<string, unknown>>(sql, values)).rows);
  }

  /** Runs `run` in a transaction: committed when it returns, rolled back when it throws (its error propagates). */
  async function transaction<T>(doing: string, run: (client: PoolClient) => Promise<T>): Promise<T> {
    await ready();
    return database.withClient(doing, async (client) => {
      await client.query("BEGIN");
      let result: T;
      try {
        result = await run(client);
      } catch (error) {
        const rollbackError = await client.query("ROLLBACK").then(
          () => undefined,
          (failure: unknown) => failure ?? new Error("ROLLBACK failed"),
        );
        // A Kiln check of our own: the caller's to see, the connection is fine (unless ROLLBACK
        // failed). A driver error: withClient reports it and drops the connection.
        if (error instanceof KilnError) throw new Passthrough(error, rollbackError);
        throw error;
      }
      await client.query("COMMIT");
      return result;
    });
  }

  async function get(id: string): Promise<DeploymentRecord | undefined> {
    const [row] = await query<DeploymentRow>(`reading deployment ${id}`, `SELECT ${COLUMNS} FROM ${deployments} WHERE id = $1`, [id]);
    return row && recordOf(row);
  }

  async function keptResponse(key: string): Promise<IdempotentResponse | undefined> {
    const [row] = await query<{ response: IdempotentResponse }>("reading an idempotent response", `SELECT response FROM ${responses} WHERE key = $1`, [key]);
    return row?.response;
  }

  return {
    schema,
    ready,

    async enqueue(input) {
      const target = formatTarget(input.target);
      for (let attempt = 0; attempt < RACE_RETRIES; attempt++) {
        const record: DeploymentRecord = {
          id: newDeploymentId(),
          kind: input.kind,
          target: { service: input.target.service, environment: input.target.environment },
          state: "queued",
          requestedBy: input.requestedBy,
          createdAt: "",
          request: input.request,
          cancelRequested: false,
          attempts: 0,
        };
        // createdAt is the database's clock, as are the lease times: queued order is its order.
        const [inserted] = await query<DeploymentRow>(
          `queueing a deployment of ${target}`,
          `INSERT INTO ${deployments} (id, target, state, created_at, record)
           SELECT $1, $2, 'queued', now.at, $3::jsonb || jsonb_build_object('createdAt', ${iso("now.at")})
             FROM (SELECT clock_timestamp() AS at) AS now
           ON CONFLICT DO NOTHING
           RETURNING ${COLUMNS}`,
          [record.id, target, toJsonbText(record)],
        );
        if (inserted) return { kind: "queued", record: recordOf(inserted) };
        const [active] = await query<DeploymentRow>(
          `reading the active deployment of ${target}`,
          `SELECT ${COLUMNS} FROM ${deployments} WHERE target = $1 AND state IN ('queued', 'running')`,
          [target],
        );
        // When it ended between the insert and this read, the next insert may get in.
        if (active) return { kind: "conflict", active: recordOf(active) };
      }
      throw new KilnError("STATE_UNAVAILABLE", `Deployments of ${formatTarget(input.target)} kept starting and ending while a new one was queued (${RACE_RETRIES} tries); try again.`, { retryable: true });
    },

    get,

    async list({ target, limit }) {
      const rows = target
        ? await query<DeploymentRow>(`listing the deployments of ${formatTarget(target)}`, `SELECT ${COLUMNS} FROM ${deployments} WHERE target = $1 ORDER BY created_at DESC, id DESC LIMIT $2`, [
            formatTarget(target),
            limit,
          ])
        : await query<DeploymentRow>("listing deployments", `SELECT ${COLUMNS} FROM ${deployments} ORDER BY created_at DESC, id DESC LIMIT $1`, [limit]);
      return rows.map(recordOf);
    },

    async claim(worker, leaseMs) {
      const lease = `now.at + ($2::float8 * interval '1 millisecond')`;
      const [row] = await query<DeploymentRow>(
        "claiming a deployment",
        `WITH now AS (SELECT clock_timestamp() AS at),
              next AS (
                SELECT d.id FROM ${deployments} AS d, now
                 WHERE d.state = 'queued' OR (d.state = 'running' AND d.claim_expires_at < now.at)
                 ORDER BY d.created_at, d.id
                 LIMIT 1
                 FOR UPDATE OF d SKIP LOCKED)
         UPDATE ${deployments} AS d
            SET state = 'running', claimed_by = $1, claim_expires_at = ${lease},
                record = (d.record - 'claimExpiresAt') || jsonb_build_object(
                  'state', 'running',
                  'claimedBy', $1::text,
                  'leaseExpiresAt', ${iso(lease)},
                  'startedAt', coalesce(d.record->>'startedAt', ${iso("now.at")}),
                  'attempts', coalesce((d.record->>'attempts')::int, 0) + 1)
           FROM next, now
          WHERE d.id = next.id
        RETURNING d.state, d.claimed_by, d.claim_expires_at, d.record`,
        [worker, leaseMs],
      );
      return row && recordOf(row);
    },

    async renew(id, worker, leaseMs) {
      const lease = `now.at + ($3::float8 * interval '1 millisecond')`;
      const [row] = await query<DeploymentRow>(
        `renewing the claim on deployment ${id}`,
        `WITH now AS (SELECT clock_timestamp() AS at)
         UPDATE ${deployments} AS d
            SET claim_expires_at = ${lease},
                record = (d.record - 'claimExpiresAt') || jsonb_build_object('leaseExpiresAt', ${iso(lease)})
           FROM now
          WHERE d.id = $1 AND d.claimed_by = $2 AND d.state = 'running'
        RETURNING d.state, d.claimed_by, d.claim_expires_at, d.record`,
        [id, worker, leaseMs],
      );
      return row && recordOf(row);
    },

    async finish(id, worker, outcome) {
      assertDeploymentOutcome(outcome);
      const ending = { ...(outcome.result ? { result: outcome.result } : {}), ...(outcome.error ? { error: outcome.error } : {}) };
      const rows = await query(
        `recording the end of deployment ${id}`,
        `UPDATE ${deployments}
            SET state = $3, claim_expires_at = NULL,
                record = (record - 'claimExpiresAt' - 'leaseExpiresAt')
                  || jsonb_build_object('state', $3::text, 'finishedAt', ${iso("clock_timestamp()")})
                  || $4::jsonb
          WHERE id = $1 AND claimed_by = $2 AND state = 'running'
        RETURNING id`,
        [id, worker, outcome.state, toJsonbText(ending)],
      );
      return rows.length === 1;
    },

    async requestCancel(id) {
      for (let attempt = 0; attempt < RACE_RETRIES; attempt++) {
        const [cancelled] = await query<DeploymentRow>(
          `cancelling deployment ${id}`,
          `UPDATE ${deployments}
              SET state = 'cancelled',
                  record = record || jsonb_build_object('state', 'cancelled', 'cancelRequested', true, 'finishedAt', ${iso("clock_timestamp()")}, 'error', $2::jsonb)
            WHERE id = $1 AND state = 'queued'
          RETURNING ${COLUMNS}`,
          [id, toJsonbText(CANCELLED_BEFORE_START)],
        );
        if (cancelled) return recordOf(cancelled);
        const [flagged] = await query<DeploymentRow>(
          `asking deployment ${id} to cancel`,
          `UPDATE ${deployments} SET record = record || '{"cancelRequested": true}'::jsonb WHERE id = $1 AND state = 'running' RETURNING ${COLUMNS}`,
          [id],
        );
        if (flagged) return recordOf(flagged);
        const current = await get(id);
        // Unknown, or final: nothing to do. Otherwise it was claimed in between: look again.
        if (!current || (current.state !== "queued" && current.state !== "running")) return current;
      }
      throw new KilnError("STATE_UNAVAILABLE", `Deployment ${id} kept changing while it was being cancelled (${RACE_RETRIES} tries); try again.`, { retryable: true });
    },

    async appendEvents(id, added: readonly KilnEvent[]) {
      return transaction(`appending events to deployment ${id}`, async (client) => {
        // The deployment's row lock serialises appends to it: numbers never collide.
        const found = await client.query(`SELECT id FROM ${deployments} WHERE id = $1 FOR NO KEY UPDATE`, [id]);
        if (found.rowCount !== 1) throw new KilnError("INVALID_ARGUMENT", `There is no deployment ${id} to append events to.`);
        if (added.length === 0) {
          const { rows } = await client.query<{ last: number }>(`SELECT coalesce(max(seq), 0)::integer AS last FROM ${events} WHERE deployment_id = $1`, [id]);
          return rows[0]!.last;
        }
        const { rows } = await client.query<{ seq: number }>(
          `INSERT INTO ${events} (deployment_id, seq, event)
           SELECT $1, coalesce((SELECT max(seq) FROM ${events} WHERE deployment_id = $1), 0) + ordinality, value
             FROM jsonb_array_elements($2::jsonb) WITH ORDINALITY
           RETURNING seq`,
          [id, toJsonbText(added)],
        );
        return Math.max(...rows.map((row) => row.seq));
      });
    },

    async readEvents(id, afterSeq, limit) {
      const rows = await query<{ seq: number; event: KilnEvent }>(
        `reading the events of deployment ${id}`,
        `SELECT seq, event FROM ${events} WHERE deployment_id = $1 AND seq > $2 ORDER BY seq LIMIT $3`,
        [id, afterSeq, limit],
      );
      return rows.map((row) => ({ seq: row.seq, event: row.event }));
    },

    getResponse: keptResponse,

    async keepResponse(key, response) {
      const [inserted] = await query<{ response: IdempotentResponse }>(
        "keeping an idempotent response",
        `INSERT INTO ${responses} (key, response) VALUES ($1, $2::jsonb) ON CONFLICT (key) DO NOTHING RETURNING response`,
        [key, toJsonbText(response)],
      );
      if (inserted) return inserted.response;
      // Kept first by another request; a new statement sees what it committed.
      const kept = await keptResponse(key);
      if (!kept) throw new KilnError("STATE_UNAVAILABLE", `The idempotent response kept under a key vanished from ${responses} (${server}) as it was read; try again.`, { retryable: true });
      return kept;
    },

    async close() {
      closed = true;
      await release();
    },
  };
}
