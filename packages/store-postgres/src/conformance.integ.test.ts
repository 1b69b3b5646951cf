// The PostgreSQL store against a real PostgreSQL (scripts/postgres.sh start, or KILN_PG_URL): the
// state store conformance suite, then what only this store has (migrations, a dropped connection).
// Each run works in schemas of its own, dropped afterwards.
import { randomBytes } from "node:crypto";
import net from "node:net";
import pg from "pg";
import { afterAll, describe, expect, it } from "vitest";
import { isKilnError, type JournalEntry, type Logger, type ReleaseRecord, type Target } from "@kilnjs/core";
import { postgresUrl, requirePostgres, runStateStoreConformance } from "@kilnjs/testkit";
import { MIGRATIONS, SCHEMA_VERSION, createPostgresStateStore, type PostgresStateStore } from "./index.js";

const postgres = await requirePostgres();
const url = postgresUrl();

/** A schema name of this run's own. */
const schemaName = (purpose: string) => `kiln_test_${purpose}_${randomBytes(4).toString("hex")}`;

/** Runs one SQL statement on a connection of its own. */
async function sql<R extends pg.QueryResultRow = pg.QueryResultRow>(text: string, values: unknown[] = []): Promise<R[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query<R>(text, values)).rows;
  } finally {
    await client.end();
  }
}

const dropSchema = (schema: string) => sql(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`).then(() => undefined);

/** A logger that keeps what it was told. */
function recordingLogger(): Logger & { lines: { level: string; message: string; fields?: Record<string, unknown> }[] } {
  const lines: { level: string; message: string; fields?: Record<string, unknown> }[] = [];
  const at = (level: string) => (message: string, fields?: Record<string, unknown>) => void lines.push({ level, message, ...(fields ? { fields } : {}) });
  return { lines, debug: at("debug"), info: at("info"), warn: at("warn"), error: at("error") };
}

/** A release record small enough for these checks (the conformance suite writes complete ones). */
const release = (number: number, note = "") => ({ number, note }) as unknown as ReleaseRecord;

/** A TCP proxy to PostgreSQL on 127.0.0.1 that can cut every connection through it at once. */
async function startCuttingProxy(upstream: { host: string; port: number }) {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((downstream) => {
    const up = net.connect(upstream);
    for (const socket of [downstream, up]) {
      sockets.add(socket);
      socket.on("error", () => socket.destroy());
      socket.on("close", () => {
        sockets.delete(socket);
        downstream.destroy();
        up.destroy();
      });
    }
    downstream.pipe(up);
    up.pipe(downstream);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as net.AddressInfo;
  return {
    port,
    /** Destroys every connection through the proxy, both ways, now (synchronously). */
    cutAll() {
      for (const socket of sockets) socket.destroy();
    },
    async close() {
      this.cutAll();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

describe.skipIf(!postgres)("postgres", () => {
  const conformanceSchema = schemaName("conformance");
  runStateStoreConformance({
    name: "postgres",
    createStore: () => createPostgresStateStore({ connectionString: url, schema: conformanceSchema }),
    cleanup: () => dropSchema(conformanceSchema),
    // A process killed in the middle of an append: its row inserted, its transaction never committed.
    interruptAppend: async (target, rolloutId, { seq, ...entry }) => {
      const client = new pg.Client({ connectionString: url });
      await client.connect();
      await client.query("BEGIN");
      await client.query(`INSERT INTO "${conformanceSchema}".rollout_journal (service, environment, rollout_id, seq, entry) VALUES ($1, $2, $3, $4, $5::jsonb)`, [
        target.service,
        target.environment,
        rolloutId,
        seq,
        JSON.stringify(entry),
      ]);
      await client.end();
    },
  });
});

describe.skipIf(!postgres)("postgres store", () => {
  const schemas: string[] = [];
  const stores: PostgresStateStore[] = [];
  const newSchema = (purpose: string) => {
    const schema = schemaName(purpose);
    schemas.push(schema);
    return schema;
  };
  const newStore = (options: Parameters<typeof createPostgresStateStore>[0]) => {
    const store = createPostgresStateStore(options);
    stores.push(store);
    return store;
  };
  const target: Target = { service: "web", environment: "prod" };

  afterAll(async () => {
    for (const store of stores) await store.close();
    for (const schema of schemas) await dropSchema(schema);
  });

  it("applies each migration once when 5 stores start at once on an empty schema", async () => {
    const schema = newSchema("migrate");
    const loggers = Array.from({ length: 5 }, () => recordingLogger());
    const starting = loggers.map((logger) => newStore({ connectionString: url, schema, logger }));
    await Promise.all(starting.map((store) => store.ready()));

    const recorded = await sql<{ version: number; name: string }>(`SELECT version, name FROM "${schema}".kiln_migrations ORDER BY version`);
    expect(recorded).toEqual(MIGRATIONS.map(({ version, name }) => ({ version, name })));
    const applied = loggers.flatMap((logger) => logger.lines.filter((line) => line.message === "applied a state schema migration"));
    expect(applied.map((line) => line.fields?.version)).toEqual(MIGRATIONS.map(({ version }) => version));

    // Every store works, and a store started later finds the schema current and applies nothing.
    await Promise.all(starting.map((store, index) => store.update(target, (state) => void state.releases.push(release(index + 1)))));
    expect((await starting[0]!.read(target)).releases).toHaveLength(5);
    const later = recordingLogger();
    await newStore({ connectionString: url, schema, logger: later }).ready();
    expect(later.lines.filter((line) => line.level === "info")).toEqual([]);
    expect(await sql(`SELECT version FROM "${schema}".kiln_migrations`)).toHaveLength(MIGRATIONS.length);
  });

  it("migration 3 moves a lease from the state document into its columns, and the journal goes on", async () => {
    const schema = newSchema("lease");
    // The schema as Kiln before the append-only journal left it: migrations 1 and 2, a lease in the document.
    await sql(`CREATE SCHEMA "${schema}"`);
    await sql(`CREATE TABLE "${schema}".kiln_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`);
    for (const migration of MIGRATIONS.filter(({ version }) => version <= 2)) {
      for (const statement of migration.statements(`"${schema}"`)) await sql(statement);
      await sql(`INSERT INTO "${schema}".kiln_migrations (version, name) VALUES ($1, $2)`, [migration.version, migration.name]);
    }
    const lease = { holder: { user: "u", host: "elsewhere.invalid", pid: 1, command: "kiln deploy", since: "2026-01-01T00:00:00.000Z" }, token: 4, expiresAt: "2026-01-01T00:00:00.000Z", ttlMs: 30_000 };
    const journal: JournalEntry[] = [{ seq: 1, phase: "intent", step: "launch:1", op: "instances.launch", instanceIds: [], time: "2026-01-01T00:00:00.000Z" }];
    const rollout = { id: "r-1", target, kind: "deploy", toRelease: 1, startedAt: lease.holder.since, holder: lease.holder, token: 4, status: "running", journal };
    await sql(`INSERT INTO "${schema}".target_state (service, environment, format, document) VALUES ($1, $2, 1, $3::jsonb)`, [
      target.service,
      target.environment,
      JSON.stringify({ target, releases: [], rollouts: [rollout], lease, fencingToken: 4 }),
    ]);

    const store = newStore({ connectionString: url, schema });
    expect(await store.lockStatus(target)).toMatchObject({ token: 4, stale: true });
    const state = await store.read(target);
    expect(state.lease).toEqual(lease);
    expect(state.fencingToken).toBe(4);
    const [row] = await sql<{ document: Record<string, unknown>; fencing_token: string }>(`SELECT document, fencing_token FROM "${schema}".target_state`);
    expect(row!.document).not.toHaveProperty("lease");
    expect(row!.document).not.toHaveProperty("fencingToken");
    expect(row!.fencing_token).toBe("4");
    const lock = await store.lock(target, { ...lease.holder, host: "here.invalid", pid: process.pid }, { ttlMs: 30_000 });
    try {
      expect(lock.token).toBe(5);
      expect(lock.tookOver).toMatchObject({ token: 4 });
      const { seq: _seq, ...intent } = journal[0]!;
      expect((await store.appendJournal(target, "r-1", { ...intent, phase: "outcome", result: "ok" }, { token: lock.token })).seq).toBe(2);
    } finally {
      await lock.release();
    }
    expect((await store.read(target)).rollouts[0]!.journal.map((entry) => entry.seq)).toEqual([1, 2]);
  });

  it("appends a journal entry as one row, leaving the target's row (its document, its version) alone; an update folds the rows in", async () => {
    const schema = newSchema("append");
    const store = newStore({ connectionString: url, schema });
    const holder = { user: "u", host: "here.invalid", pid: process.pid, command: "kiln deploy", since: new Date().toISOString() };
    const lock = await store.lock(target, holder, { ttlMs: 30_000 });
    try {
      await store.update(
        target,
        (state) => {
          // Some history, so that the document is large enough to be stored out of line (TOAST).
          for (let number = 1; number <= 200; number++) state.releases.push(release(number, "x".repeat(100)));
          state.rollouts.push({ id: "r-1", target, kind: "deploy", fromRelease: undefined, toRelease: 1, startedAt: holder.since, holder, token: lock.token, status: "running", journal: [] });
        },
        { token: lock.token },
      );
      const rowOf = () => sql<{ version: string; digest: string }>(`SELECT version, md5(document::text) AS digest FROM "${schema}".target_state`);
      const before = await rowOf();
      for (let n = 1; n <= 5; n++) {
        const stored = await store.appendJournal(target, "r-1", { phase: "intent", step: `launch:${n}`, op: "instances.launch", instanceIds: [], time: new Date().toISOString() }, { token: lock.token });
        expect(stored.seq).toBe(n);
      }
      expect(await rowOf()).toEqual(before);
      expect(await sql(`SELECT rollout_id, seq FROM "${schema}".rollout_journal ORDER BY seq`)).toEqual([1, 2, 3, 4, 5].map((seq) => ({ rollout_id: "r-1", seq })));
      // An update while the rollout runs folds the rows in and leaves its last seq where appends read it.
      await store.update(target, (state) => void (state.currentRelease = 1), { token: lock.token });
      expect(await sql(`SELECT seq FROM "${schema}".rollout_journal`)).toEqual([]);
      expect(await sql(`SELECT journal_last_seq FROM "${schema}".target_state`)).toEqual([{ journal_last_seq: { "r-1": 5 } }]);
      const folded = await rowOf();
      const sixth = await store.appendJournal(target, "r-1", { phase: "outcome", step: "launch:5", op: "instances.launch", instanceIds: ["i-5"], result: "ok", time: new Date().toISOString() }, { token: lock.token });
      expect(sixth.seq).toBe(6);
      expect(await rowOf()).toEqual(folded);
      await store.update(target, (state) => void (state.rollouts[0]!.status = "succeeded"), { token: lock.token });
      expect(await sql(`SELECT seq FROM "${schema}".rollout_journal`)).toEqual([]);
      expect(await sql(`SELECT journal_last_seq FROM "${schema}".target_state`)).toEqual([{ journal_last_seq: {} }]);
      const [row] = await sql<{ journal: { seq: number }[] }>(`SELECT document->'rollouts'->0->'journal' AS journal FROM "${schema}".target_state`);
      expect(row!.journal.map((entry) => entry.seq)).toEqual([1, 2, 3, 4, 5, 6]);
    } finally {
      await lock.release();
    }
  });

  it("refuses a schema migrated by a newer Kiln", async () => {
    const schema = newSchema("newer");
    await newStore({ connectionString: url, schema }).ready();
    await sql(`INSERT INTO "${schema}".kiln_migrations (version, name) VALUES ($1, 'from the future')`, [SCHEMA_VERSION + 1]);
    const error = await newStore({ connectionString: url, schema })
      .read(target)
      .catch((thrown: unknown) => thrown);
    expect(isKilnError(error, "STATE_UNAVAILABLE")).toBe(true);
    expect((error as Error).message).toMatch(/newer than this Kiln knows/);
  });

  it("surfaces a connection dropped in the middle of an update as STATE_UNAVAILABLE, and writes nothing", async () => {
    const schema = newSchema("dropped");
    const upstream = new URL(url);
    const proxy = await startCuttingProxy({ host: upstream.hostname, port: Number(upstream.port || 5432) });
    try {
      const proxied = new URL(url);
      proxied.hostname = "127.0.0.1";
      proxied.port = String(proxy.port);
      const logger = recordingLogger();
      const throughProxy = newStore({ connectionString: proxied.toString(), schema, logger });
      const direct = newStore({ connectionString: url, schema });
      await throughProxy.update(target, (state) => void state.releases.push(release(1)));

      const error = await throughProxy
        .update(target, (state) => {
          // The row is locked and the transaction open: cut the connection before the write.
          proxy.cutAll();
          state.releases.push(release(2));
          state.currentRelease = 2;
        })
        .catch((thrown: unknown) => thrown);
      expect(isKilnError(error, "STATE_UNAVAILABLE"), String(error)).toBe(true);
      const message = (error as Error).message;
      expect(message).toContain(`127.0.0.1:${proxy.port}`);
      expect(message).toMatch(/connection/i);
      if (upstream.password) expect(message).not.toContain(`:${upstream.password}@`);
      expect((error as { retryable?: boolean }).retryable).toBe(true);

      // Nothing was written, and the server let go of the row lock (the update below would wait otherwise).
      const after = await direct.read(target);
      expect(after.releases.map((r) => r.number)).toEqual([1]);
      expect(after.currentRelease).toBeUndefined();
      await direct.update(target, (state) => void state.releases.push(release(2)));

      // The store recovers: the broken connection was discarded, a new one is made.
      await throughProxy.update(target, (state) => void state.releases.push(release(3)));
      expect((await direct.read(target)).releases.map((r) => r.number)).toEqual([1, 2, 3]);
      const rows = await sql<{ version: string }>(`SELECT version FROM "${schema}".target_state WHERE service = $1 AND environment = $2`, [target.service, target.environment]);
      expect(rows).toEqual([{ version: "3" }]);
    } finally {
      await proxy.close();
    }
  });

  it("keeps one jsonb row per target; a NUL in a string is stored as U+FFFD instead of failing the write", async () => {
    const schema = newSchema("rows");
    const store = newStore({ connectionString: url, schema });
    await store.update(target, (state) => void state.releases.push(release(1, "before\u0000after \\u0000 kept")));
    expect((await store.read(target)).releases[0]).toEqual({ number: 1, note: "before\uFFFDafter \\u0000 kept" });
    const rows = await sql<{ service: string; environment: string; format: number; kind: string }>(
      `SELECT service, environment, format, jsonb_typeof(document) AS kind FROM "${schema}".target_state`,
    );
    expect(rows).toEqual([{ service: "web", environment: "prod", format: 1, kind: "object" }]);
  });

  it("reports a row it did not write as STATE_CORRUPT", async () => {
    const schema = newSchema("corrupt");
    const store = newStore({ connectionString: url, schema });
    await store.update(target, (state) => void state.releases.push(release(1)));
    await sql(`UPDATE "${schema}".target_state SET document = '{"releases": 3}'`);
    const error = await store.read(target).catch((thrown: unknown) => thrown);
    expect(isKilnError(error, "STATE_CORRUPT"), String(error)).toBe(true);
    // And an update fails the same way, writing nothing.
    expect(isKilnError(await store.update(target, () => undefined).catch((thrown: unknown) => thrown), "STATE_CORRUPT")).toBe(true);
  });

  it("uses a pool passed in, and leaves it open on close", async () => {
    const schema = newSchema("pool");
    const pool = new pg.Pool({ connectionString: url, max: 2 });
    pool.on("error", () => {});
    try {
      const store = createPostgresStateStore({ pool, schema });
      await store.update(target, (state) => void state.releases.push(release(1)));
      await store.close();
      expect((await pool.query<{ one: number }>("SELECT 1 AS one")).rows).toEqual([{ one: 1 }]);
      await expect(store.read(target)).rejects.toMatchObject({ code: "STATE_UNAVAILABLE" });
    } finally {
      await pool.end();
    }
  });
});
