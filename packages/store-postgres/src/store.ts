import type { PoolClient } from "pg";
import {
  DEFAULT_LEASE_TTL_MS,
  KilnError,
  acquireLease,
  assertLeaseToken,
  describeLease,
  emptyTargetState,
  formatTarget,
  holdLease,
  releaseLease,
  renewLease,
  type Logger,
  type StateStore,
  type Target,
  type TargetLock,
  type TargetState,
  compactHistory,
  foldJournal,
  lastJournalSeq,
  type AppendedJournalEntry,
  type JournalEntry,
  type Lease,
} from "@kilnjs/core";
import { Passthrough, openDatabase, type Database, type PostgresConnectionOptions } from "./database.js";
import { quoteIdentifier, toJsonbText } from "./sql.js";

/** The format of the state document in `target_state.document` (the file store's format 1, without its envelope). */
export const DOCUMENT_FORMAT = 1;

/** Options of {@link createPostgresStateStore} shared by both ways to name the database. */
export interface PostgresStateStoreCommonOptions {
  /**
   * The PostgreSQL schema Kiln's tables live in: lowercase letters, digits and `_`. Created, with
   * its tables, on start when missing. Several Kiln installations can share a database with one
   * schema each. @defaultValue "kiln"
   */
  readonly schema?: string;
  /**
   * How long a rollout lock's lease lasts without a renewal when `lock` is given no `ttlMs`
   * (milliseconds). The holder renews it every third of this. @defaultValue 30000
   */
  readonly leaseTtlMs?: number;
  /** Diagnostics: migrations applied, connections that failed while idle. */
  readonly logger?: Logger;
}

/** Options of {@link createPostgresStateStore}: a connection string, or a pool of your own. */
export type PostgresStateStoreOptions = PostgresStateStoreCommonOptions & PostgresConnectionOptions;

/** The PostgreSQL {@link StateStore}, with a way to connect and migrate before first use. */
export interface PostgresStateStore extends StateStore {
  /** The schema the store's tables are in. */
  readonly schema: string;
  /**
   * Connects and brings the schema up to date (creates it, applies missing migrations). Every other
   * method does this first anyway; call it at start-up to fail early.
   * @throws KilnError STATE_UNAVAILABLE when the database cannot be reached or migrated
   */
  ready(): Promise<void>;
  /**
   * Closes the store; it is not used afterwards. The package's own pool ends once nothing else
   * uses it (with {@link createPostgresBackend}: once the deployment queue is closed too); a pool
   * passed in stays open.
   */
  close(): Promise<void>;
}

/** The lease columns of a `target_state` row, with the database's clock. */
interface LeaseRow {
  lease: Lease | null;
  fencing_token: number | null;
  now_ms: number;
}

/** What an append reads of `target_state`: the lease, and where each running rollout's journal stood at the last update. */
interface AppendRow extends LeaseRow {
  journal_last_seq: Record<string, number> | null;
}

/** Row of `target_state` as the store reads it, with the database's clock. */
interface StateRow extends LeaseRow {
  format: number;
  document: unknown;
}

/** A row of `rollout_journal` as the store reads it (the entry is kept without its seq). */
interface JournalRow {
  rollout_id: string;
  seq: number;
  entry: Omit<JournalEntry, "seq">;
}

/**
 * The PostgreSQL state store, for servers and for several Kiln processes (replicas, hosts) sharing
 * one database. State lives in `<schema>.target_state`, one row per target holding the same state
 * document as the file store (jsonb), the rollout lock's lease (columns `lease` and
 * `fencing_token`) and a version counter. Each `update` is one transaction that locks the target's
 * row (`SELECT … FOR UPDATE`, inserting the row first when the target is new), checks the fencing
 * token, applies the change to the document with the journal folded in, writes the row back and
 * deletes the folded journal rows: updates of one target are serialised by the row lock, those of
 * different targets run in parallel.
 *
 * Journal entries are appended as rows of `<schema>.rollout_journal`, each in a transaction that
 * locks the target's row, checks the fencing token in the lease column and inserts the entry with
 * the rollout's next `seq` (from its rows, or from `journal_last_seq`, which each update leaves
 * for the running rollouts): it never reads or writes the document (except to journal on a
 * rollout that had finished, whose number it finds there), so its cost does not grow with the
 * fleet, the journal or the history. `read` returns the document with the journal rows folded in,
 * in one statement (one snapshot).
 *
 * The rollout lock is the same lease as in the file store (the same functions from `@kilnjs/core`
 * take, renew, check and release it), run in a transaction that locks the row and reads and
 * writes only the lease columns. Lease times come from the database's clock, so replicas whose
 * clocks differ still agree on when a lease expires.
 *
 * `pg` is loaded on first use, and the schema migrated then (see {@link PostgresStateStore.ready}).
 *
 * @example
 * ```ts
 * const store = createPostgresStateStore({ connectionString: process.env.KILN_PG_URL! });
 * await store.ready();
 * const kiln = createKiln({ store, providers: { docker } });
 * ```
 * @throws KilnError INVALID_ARGUMENT when the options are invalid (checked at once, before connecting)
 */
export function createPostgresStateStore(options: PostgresStateStoreOptions): PostgresStateStore {
  const database = openDatabase(options, "PostgreSQL store");
  return postgresStateStoreOn(database, checkLeaseTtlMs(options.leaseTtlMs));
}

/**
 * The default lease length, checked.
 * @throws KilnError INVALID_ARGUMENT when it is not a positive whole number of milliseconds
 */
export function checkLeaseTtlMs(leaseTtlMs: number = DEFAULT_LEASE_TTL_MS): number {
  if (!Number.isInteger(leaseTtlMs) || leaseTtlMs <= 0) throw new KilnError("INVALID_ARGUMENT", `leaseTtlMs must be a positive whole number of milliseconds, not ${String(leaseTtlMs)}.`);
  return leaseTtlMs;
}

/** The state store on a {@link Database} (its own, or one shared with the deployment queue). */
export function postgresStateStoreOn(database: Database, leaseTtlMs: number): PostgresStateStore {
  const { schema, server } = database;
  const table = `${quoteIdentifier(schema)}.target_state`;
  const release = database.use();
  let closed = false;

  function withClient<T>(doing: string, run: (client: PoolClient) => Promise<T>): Promise<T> {
    if (closed) return Promise.reject(new KilnError("STATE_UNAVAILABLE", `The PostgreSQL state store (${server}) is closed.`));
    return database.withClient(doing, run);
  }

  function ready(): Promise<void> {
    if (closed) return Promise.reject(new KilnError("STATE_UNAVAILABLE", `The PostgreSQL state store (${server}) is closed.`));
    return database.ready();
  }

  const journalTable = `${quoteIdentifier(schema)}.rollout_journal`;

  function parseRow(target: Target, row: StateRow | undefined): TargetState {
    if (!row) return emptyTargetState(target);
    const state = row.document as TargetState | null;
    if (row.format !== DOCUMENT_FORMAT || !state || typeof state !== "object" || !Array.isArray(state.releases) || !Array.isArray(state.rollouts)) {
      throw new KilnError(
        "STATE_CORRUPT",
        `The state of ${formatTarget(target)} in ${table} (${server}) is not one Kiln wrote (format ${String(row.format)}); restore it from a backup.`,
        { details: { server, schema, format: row.format } },
      );
    }
    for (const rollout of state.rollouts) rollout.journal ??= [];
    // The lease is in its own columns (the document's, from before migration 3, was moved there).
    delete state.lease;
    delete state.fencingToken;
    return withLease(state, row);
  }

  /** `state` with the row's lease and fencing token. */
  function withLease(state: TargetState, row: Pick<LeaseRow, "lease" | "fencing_token"> | undefined): TargetState {
    if (row?.lease) state.lease = row.lease;
    if (row?.fencing_token !== null && row?.fencing_token !== undefined) state.fencingToken = row.fencing_token;
    return state;
  }

  const appended = (rows: readonly JournalRow[]): AppendedJournalEntry[] => rows.map((row) => ({ rolloutId: row.rollout_id, entry: { ...row.entry, seq: row.seq } }));

  const stateColumns = "format, document, lease, fencing_token::float8 AS fencing_token, (extract(epoch FROM clock_timestamp()) * 1000)::float8 AS now_ms";
  const leaseColumns = "lease, fencing_token::float8 AS fencing_token, (extract(epoch FROM clock_timestamp()) * 1000)::float8 AS now_ms";
  const appendColumns = `${leaseColumns}, journal_last_seq`;

  async function selectRow<R>(client: PoolClient, target: Target, columns: string, forUpdate: boolean): Promise<R | undefined> {
    // clock_timestamp(): the database's clock, the one every replica's leases are measured by.
    const { rows } = await client.query(`SELECT ${columns} FROM ${table} WHERE service = $1 AND environment = $2${forUpdate ? " FOR UPDATE" : ""}`, [target.service, target.environment]);
    return rows[0] as R | undefined;
  }

  async function databaseNow(client: PoolClient): Promise<number> {
    const { rows } = await client.query<{ now_ms: number }>("SELECT (extract(epoch FROM clock_timestamp()) * 1000)::float8 AS now_ms");
    return rows[0]!.now_ms;
  }

  /** Reads a target's state, its journal rows folded in, without locking (one statement: one snapshot), with the database's clock. */
  async function readState(target: Target, doing: string): Promise<{ state: TargetState; nowMs: number }> {
    await ready();
    return withClient(doing, async (client) => {
      const { rows } = await client.query<StateRow & { journal: JournalRow[] }>(
        `SELECT ${stateColumns}, (SELECT coalesce(jsonb_agg(jsonb_build_object('rollout_id', j.rollout_id, 'seq', j.seq, 'entry', j.entry) ORDER BY j.rollout_id, j.seq), '[]'::jsonb)
           FROM ${journalTable} j WHERE j.service = t.service AND j.environment = t.environment) AS journal
         FROM ${table} t WHERE service = $1 AND environment = $2`,
        [target.service, target.environment],
      );
      const row = rows[0];
      return { state: foldJournal(parseRow(target, row), appended(row?.journal ?? [])), nowMs: row ? row.now_ms : await databaseNow(client) };
    });
  }

  /** A database error met inside a transaction's work is not the caller's: it must not pass through as theirs. */
  class DatabaseFailure extends Error {
    constructor(readonly failure: unknown) {
      super("a database failure inside a transaction");
    }
  }

  /** Runs a query inside a transaction's work, so that its failure is reported as the database's. */
  async function query<R extends object>(client: PoolClient, text: string, values: unknown[]): Promise<R[]> {
    try {
      return (await client.query(text, values)).rows as R[];
    } catch (error) {
      throw new DatabaseFailure(error);
    }
  }

  /**
   * One transaction on the target's row: lock it (inserting it first when the target is new), run
   * `work`, commit. `work` throwing rolls everything back, the insert included, and its error is
   * the caller's.
   */
  async function transact<R, T>(target: Target, doing: string, columns: string, work: (client: PoolClient, row: R) => Promise<T>): Promise<T> {
    await ready();
    return withClient(doing, async (client) => {
      await client.query("BEGIN");
      try {
        let row = await selectRow<R>(client, target, columns, true);
        if (!row) {
          // A new target: make its row so there is one to lock. Two processes racing here both
          // insert; the second waits for the first to commit, then inserts nothing.
          await client.query(`INSERT INTO ${table} (service, environment, format, document) VALUES ($1, $2, $3, $4::jsonb) ON CONFLICT (service, environment) DO NOTHING`, [
            target.service,
            target.environment,
            DOCUMENT_FORMAT,
            toJsonbText(emptyTargetState(target)),
          ]);
          row = await selectRow<R>(client, target, columns, true);
          if (!row) throw new KilnError("INTERNAL", `The state row of ${formatTarget(target)} vanished right after it was made in ${table}.`);
        }
        let result: T;
        try {
          result = await work(client, row);
        } catch (error) {
          // A statement of the work failed: the database's failure (rolled back below, reported as STATE_UNAVAILABLE).
          if (error instanceof DatabaseFailure) throw error.failure;
          // Nothing was written: the transaction ends here, and the caller gets its own error.
          const rollbackError = await client.query("ROLLBACK").then(
            () => undefined,
            (failure: unknown) => failure ?? new Error("ROLLBACK failed"),
          );
          throw new Passthrough(error, rollbackError);
        }
        await client.query("COMMIT");
        return result;
      } catch (error) {
        if (!(error instanceof Passthrough)) await client.query("ROLLBACK").catch(() => {});
        throw error;
      }
    });
  }

  /**
   * `update`: the document with its journal rows folded in, the token checked, `change` applied,
   * the row written back (document and lease) and the folded journal rows deleted, in one transaction.
   */
  function transactState<T>(target: Target, doing: string, change: (state: TargetState, nowMs: number) => T, token?: number): Promise<T> {
    return transact<StateRow, T>(target, doing, stateColumns, async (client, row) => {
      const journal = await query<JournalRow>(client, `SELECT rollout_id, seq, entry FROM ${journalTable} WHERE service = $1 AND environment = $2 ORDER BY rollout_id, seq`, [target.service, target.environment]);
      const state = foldJournal(parseRow(target, row), appended(journal));
      if (token !== undefined) assertLeaseToken(state, token);
      const result = change(state, row.now_ms);
      const { lease, fencingToken, ...document } = compactHistory(state);
      const lastSeq = Object.fromEntries(document.rollouts.filter((rollout) => rollout.status === "running").map((rollout) => [rollout.id, lastJournalSeq(rollout)]));
      await query(
        client,
        `UPDATE ${table} SET format = $3, document = $4::jsonb, lease = $5::jsonb, fencing_token = $6, journal_last_seq = $7::jsonb, version = version + 1, updated_at = now() WHERE service = $1 AND environment = $2`,
        [target.service, target.environment, DOCUMENT_FORMAT, toJsonbText(document), lease ? toJsonbText(lease) : null, fencingToken ?? null, JSON.stringify(lastSeq)],
      );
      // Compaction: the entries are in the document now.
      if (journal.length > 0) await query(client, `DELETE FROM ${journalTable} WHERE service = $1 AND environment = $2`, [target.service, target.environment]);
      return result;
    });
  }

  /** The lease alone: `change` runs on a state holding only it; the lease columns are written when it changed. */
  function transactLease<T>(target: Target, doing: string, change: (state: TargetState, nowMs: number) => T): Promise<T> {
    return transact<LeaseRow, T>(target, doing, leaseColumns, async (client, row) => {
      const state = withLease(emptyTargetState(target), row);
      const before = JSON.stringify([state.lease, state.fencingToken]);
      const result = change(state, row.now_ms);
      if (JSON.stringify([state.lease, state.fencingToken]) !== before) {
        await query(client, `UPDATE ${table} SET lease = $3::jsonb, fencing_token = $4, version = version + 1, updated_at = now() WHERE service = $1 AND environment = $2`, [
          target.service,
          target.environment,
          state.lease ? toJsonbText(state.lease) : null,
          state.fencingToken ?? null,
        ]);
      }
      return result;
    });
  }

  /**
   * Appends one journal entry: the target's row locked, the token checked against the lease
   * column, the entry inserted with the rollout's next seq: from its rows, else from
   * `journal_last_seq` (its first entry since the last update), else (a rollout that had
   * finished) from the document.
   */
  function appendJournal(target: Target, rolloutId: string, entry: Omit<JournalEntry, "seq">, token: number): Promise<JournalEntry> {
    return transact<AppendRow, JournalEntry>(target, `appending to the journal of ${formatTarget(target)}`, appendColumns, async (client, row) => {
      assertLeaseToken(withLease(emptyTargetState(target), row), token);
      const text = toJsonbText(entry);
      const inserted = await query<{ seq: number }>(
        client,
        `INSERT INTO ${journalTable} (service, environment, rollout_id, seq, entry)
         SELECT $1, $2, $3, max(seq) + 1, $4::jsonb FROM ${journalTable} WHERE service = $1 AND environment = $2 AND rollout_id = $3 HAVING max(seq) IS NOT NULL
         RETURNING seq`,
        [target.service, target.environment, rolloutId, text],
      );
      if (inserted[0]) return { ...entry, seq: inserted[0].seq };
      const seq = (row.journal_last_seq?.[rolloutId] ?? (await recordedLastSeq(client, target, rolloutId))) + 1;
      await query(client, `INSERT INTO ${journalTable} (service, environment, rollout_id, seq, entry) VALUES ($1, $2, $3, $4, $5::jsonb)`, [target.service, target.environment, rolloutId, seq, text]);
      return { ...entry, seq };
    });
  }

  /**
   * The last seq of a rollout's journal in the document (a rollout that had finished).
   * @throws KilnError INTERNAL when the document holds no such rollout
   */
  async function recordedLastSeq(client: PoolClient, target: Target, rolloutId: string): Promise<number> {
    const recorded = await query<{ journal: JournalEntry[] | null }>(
      client,
      `SELECT r->'journal' AS journal FROM ${table} t CROSS JOIN LATERAL jsonb_array_elements(t.document->'rollouts') r WHERE t.service = $1 AND t.environment = $2 AND r->>'id' = $3`,
      [target.service, target.environment, rolloutId],
    );
    if (!recorded[0]) throw new KilnError("INTERNAL", `Rollout ${rolloutId} has no record to journal into.`);
    return lastJournalSeq({ journal: recorded[0].journal ?? [] });
  }

  return {
    schema,
    ready,

    async read(target) {
      return (await readState(target, `reading the state of ${formatTarget(target)}`)).state;
    },

    async listTargets() {
      await ready();
      return withClient("listing targets", async (client) => {
        // As core's isListedTarget: a row made only by a lock or a secret digest key (a deploy that
        // failed before it made a release) is not a target. A row whose document is not one Kiln
        // wrote is listed, so that reading it says why.
        const { rows } = await client.query<{ service: string; environment: string }>(
          `SELECT service, environment FROM ${table} WHERE (document->'releases' = '[]'::jsonb AND document->'rollouts' = '[]'::jsonb AND document->'currentRelease' IS NULL) IS NOT TRUE ORDER BY service, environment`,
        );
        return rows.map((row) => ({ service: row.service, environment: row.environment }));
      });
    },

    update(target, change, updateOptions) {
      return transactState(target, `updating the state of ${formatTarget(target)}`, (state) => change(state), updateOptions?.token);
    },

    appendJournal(target, rolloutId, entry, appendOptions) {
      return appendJournal(target, rolloutId, entry, appendOptions.token);
    },

    async lock(target, holder, lockOptions = {}): Promise<TargetLock> {
      const ttlMs = lockOptions.ttlMs ?? leaseTtlMs;
      const name = formatTarget(target);
      const { lease, tookOver } = await transactLease(target, `taking the rollout lock of ${name}`, (state, nowMs) => acquireLease(state, holder, ttlMs, nowMs));
      if (tookOver) {
        lockOptions.logger?.warn("took over a stale rollout lock", { target: name, from: tookOver.holder, reason: tookOver.staleReason, token: lease.token });
      }
      return holdLease({
        target,
        lease,
        tookOver,
        ...(lockOptions.logger ? { logger: lockOptions.logger } : {}),
        renew: (token) => transactLease(target, `renewing the rollout lock of ${name}`, (state, nowMs) => renewLease(state, token, nowMs)),
        release: async (token) => {
          await transactLease(target, `releasing the rollout lock of ${name}`, (state) => releaseLease(state, token));
        },
      });
    },

    async lockStatus(target) {
      await ready();
      return withClient(`reading the rollout lock of ${formatTarget(target)}`, async (client) => {
        const row = await selectRow<LeaseRow>(client, target, leaseColumns, false);
        return row?.lease ? describeLease(row.lease, row.now_ms) : undefined;
      });
    },

    async forceRelease(target) {
      return transactLease(target, `releasing the rollout lock of ${formatTarget(target)} by force`, (state, nowMs) => {
        const lease = state.lease;
        if (!lease) return undefined;
        delete state.lease;
        return describeLease(lease, nowMs);
      });
    },

    async close() {
      closed = true;
      await release();
    },
  };
}
