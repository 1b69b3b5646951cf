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

/** Row of `target_state` as the store reads it, with the database's clock. */
interface StateRow {
  format: number;
  document: unknown;
  now_ms: number;
}

/**
 * The PostgreSQL state store, for servers and for several Kiln processes (replicas, hosts) sharing
 * one database. State lives in `<schema>.target_state`, one row per target holding the same state
 * document as the file store (jsonb) and a version counter. Each `update` is one transaction that
 * locks the target's row (`SELECT … FOR UPDATE`, inserting the row first when the target is new),
 * checks the fencing token, applies the change and writes the row back: updates of one target are
 * serialised by the row lock, those of different targets run in parallel.
 *
 * The rollout lock is a lease in the state document, exactly as in the file store (the same
 * functions from `@kilnjs/core` take, renew, check and release it), so a fenced write checks its
 * token in the transaction that writes. Lease times come from the database's clock, so replicas
 * whose clocks differ still agree on when a lease expires.
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
    return state;
  }

  async function selectRow(client: PoolClient, target: Target, forUpdate: boolean): Promise<StateRow | undefined> {
    // clock_timestamp(): the database's clock, the one every replica's leases are measured by.
    const { rows } = await client.query<StateRow>(
      `SELECT format, document, (extract(epoch FROM clock_timestamp()) * 1000)::float8 AS now_ms FROM ${table} WHERE service = $1 AND environment = $2${forUpdate ? " FOR UPDATE" : ""}`,
      [target.service, target.environment],
    );
    return rows[0];
  }

  async function databaseNow(client: PoolClient): Promise<number> {
    const { rows } = await client.query<{ now_ms: number }>("SELECT (extract(epoch FROM clock_timestamp()) * 1000)::float8 AS now_ms");
    return rows[0]!.now_ms;
  }

  /** Reads a target's state without locking, with the database's clock. */
  async function readState(target: Target, doing: string): Promise<{ state: TargetState; nowMs: number }> {
    await ready();
    return withClient(doing, async (client) => {
      const row = await selectRow(client, target, false);
      return { state: parseRow(target, row), nowMs: row ? row.now_ms : await databaseNow(client) };
    });
  }

  /**
   * One transaction: lock the target's row (inserting it first when the target is new), check the
   * token, apply `change` with the database's clock, write the row back. `change` throwing rolls
   * everything back, the insert included.
   */
  async function transact<T>(target: Target, doing: string, change: (state: TargetState, nowMs: number) => T, token?: number): Promise<T> {
    await ready();
    return withClient(doing, async (client) => {
      await client.query("BEGIN");
      try {
        let row = await selectRow(client, target, true);
        if (!row) {
          // A new target: make its row so there is one to lock. Two processes racing here both
          // insert; the second waits for the first to commit, then inserts nothing.
          await client.query(`INSERT INTO ${table} (service, environment, format, document) VALUES ($1, $2, $3, $4::jsonb) ON CONFLICT (service, environment) DO NOTHING`, [
            target.service,
            target.environment,
            DOCUMENT_FORMAT,
            toJsonbText(emptyTargetState(target)),
          ]);
          row = await selectRow(client, target, true);
          if (!row) throw new KilnError("INTERNAL", `The state row of ${formatTarget(target)} vanished right after it was made in ${table}.`);
        }
        const state = parseRow(target, row);
        let result: T;
        try {
          if (token !== undefined) assertLeaseToken(state, token);
          result = change(state, row.now_ms);
        } catch (error) {
          // Nothing was written: the transaction ends here, and the caller gets its own error.
          const rollbackError = await client.query("ROLLBACK").then(
            () => undefined,
            (failure: unknown) => failure ?? new Error("ROLLBACK failed"),
          );
          throw new Passthrough(error, rollbackError);
        }
        await client.query(`UPDATE ${table} SET format = $3, document = $4::jsonb, version = version + 1, updated_at = now() WHERE service = $1 AND environment = $2`, [
          target.service,
          target.environment,
          DOCUMENT_FORMAT,
          toJsonbText(compactHistory(state)),
        ]);
        await client.query("COMMIT");
        return result;
      } catch (error) {
        if (!(error instanceof Passthrough)) await client.query("ROLLBACK").catch(() => {});
        throw error;
      }
    });
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
      return transact(target, `updating the state of ${formatTarget(target)}`, (state) => change(state), updateOptions?.token);
    },

    async lock(target, holder, lockOptions = {}): Promise<TargetLock> {
      const ttlMs = lockOptions.ttlMs ?? leaseTtlMs;
      const name = formatTarget(target);
      const { lease, tookOver } = await transact(target, `taking the rollout lock of ${name}`, (state, nowMs) => acquireLease(state, holder, ttlMs, nowMs));
      if (tookOver) {
        lockOptions.logger?.warn("took over a stale rollout lock", { target: name, from: tookOver.holder, reason: tookOver.staleReason, token: lease.token });
      }
      return holdLease({
        target,
        lease,
        tookOver,
        ...(lockOptions.logger ? { logger: lockOptions.logger } : {}),
        renew: (token) => transact(target, `renewing the rollout lock of ${name}`, (state, nowMs) => renewLease(state, token, nowMs)),
        release: async (token) => {
          await transact(target, `releasing the rollout lock of ${name}`, (state) => releaseLease(state, token));
        },
      });
    },

    async lockStatus(target) {
      const { state, nowMs } = await readState(target, `reading the rollout lock of ${formatTarget(target)}`);
      return state.lease ? describeLease(state.lease, nowMs) : undefined;
    },

    async forceRelease(target) {
      return transact(target, `releasing the rollout lock of ${formatTarget(target)} by force`, (state, nowMs) => {
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
