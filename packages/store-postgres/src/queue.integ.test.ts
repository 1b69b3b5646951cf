// The PostgreSQL deployment queue against a real PostgreSQL (scripts/postgres.sh start, or
// KILN_PG_URL): the deployment queue conformance suite on a new schema and on one made by
// `kiln serve` before the queue moved here, the adoption of that schema's rows, and the backend's
// one pool. Each run works in schemas of its own, dropped afterwards.
import { randomBytes } from "node:crypto";
import pg from "pg";
import { afterAll, describe, expect, it } from "vitest";
import { waitFor, type KilnEvent, type Target } from "@kilnjs/core";
import { postgresUrl, requirePostgres, runDeploymentQueueConformance } from "@kilnjs/testkit";
import { MIGRATIONS, createPostgresBackend, createPostgresDeploymentQueue, type PostgresBackend } from "./index.js";

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

/**
 * Makes `schema` as Kiln made it before the deployment queue moved into this package: the state
 * store at schema version 1, and the tables `@kilnjs/server`'s `createPostgresDeploymentStore`
 * made with its own migration list (its SQL, verbatim).
 */
async function oldServerSchema(schema: string): Promise<void> {
  await sql(`CREATE SCHEMA "${schema}"`);
  await sql(`CREATE TABLE "${schema}".kiln_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`);
  for (const statement of MIGRATIONS[0]!.statements(`"${schema}"`)) await sql(statement);
  await sql(`INSERT INTO "${schema}".kiln_migrations (version, name) VALUES (1, 'target state')`);
  const s = schema;
  await sql(`CREATE TABLE IF NOT EXISTS ${s}.deployment_migrations (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())`);
  await sql(`
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
      );`);
  await sql(`INSERT INTO ${s}.deployment_migrations (version) VALUES (1)`);
}

const event = (target: string, message: string) => ({ type: "image.build.log", time: "2026-11-30T10:00:00.000Z", target, message }) as KilnEvent;

describe.skipIf(!postgres)("postgres", () => {
  const fresh = schemaName("queue");
  runDeploymentQueueConformance({
    name: "postgres",
    // Two queue objects, two pools: as two replicas have.
    createQueue: () => createPostgresDeploymentQueue({ connectionString: url, schema: fresh }),
    cleanup: () => dropSchema(fresh),
  });

  const adopted = schemaName("adopted");
  let made = false;
  runDeploymentQueueConformance({
    name: "postgres, on the tables kiln serve made before the queue moved",
    createQueue: async () => {
      if (!made) {
        made = true;
        await oldServerSchema(adopted);
      }
      return createPostgresBackend({ connectionString: url, schema: adopted }).queue;
    },
    cleanup: () => dropSchema(adopted),
  });
});

describe.skipIf(!postgres)("postgres deployment queue", () => {
  const schemas: string[] = [];
  const backends: PostgresBackend[] = [];
  const newSchema = (purpose: string) => {
    const schema = schemaName(purpose);
    schemas.push(schema);
    return schema;
  };
  afterAll(async () => {
    for (const backend of backends) await backend.close();
    for (const schema of schemas) await dropSchema(schema);
  });

  it("adopts a schema kiln serve made: migration 2 is recorded, the old migration table goes, and the old rows work as deployments", async () => {
    const schema = newSchema("adopt");
    await oldServerSchema(schema);
    const old = { service: "web", environment: "prod" };
    const record = (id: string, target: Target, extra: Record<string, unknown>) => ({
      id,
      kind: "deploy",
      target,
      requestedBy: "ci",
      request: { spec: { service: target.service }, environment: target.environment },
      cancelRequested: false,
      attempts: 0,
      ...extra,
    });
    const running = { service: "api", environment: "prod" };
    const done = { service: "worker", environment: "prod" };
    // As the old store wrote them: a running deployment whose replica died (its claim lapsed a
    // minute ago, named claimExpiresAt), a queued one, a finished one, events, a kept answer.
    await sql(`INSERT INTO "${schema}".deployments (id, target, state, created_at, claimed_by, claim_expires_at, record) VALUES ($1, 'api@prod', 'running', $2, 'replica-old', now() - interval '1 minute', $3)`, [
      "dep_old_running",
      "2026-11-30T10:00:00.000Z",
      JSON.stringify(record("dep_old_running", running, { state: "running", createdAt: "2026-11-30T10:00:00.000Z", claimedBy: "replica-old", claimExpiresAt: "2026-11-30T10:00:15.000Z", startedAt: "2026-11-30T10:00:01.000Z", attempts: 1 })),
    ]);
    await sql(`INSERT INTO "${schema}".deployments (id, target, state, created_at, record) VALUES ($1, 'web@prod', 'queued', $2, $3)`, [
      "dep_old_queued",
      "2026-11-30T10:01:00.000Z",
      JSON.stringify(record("dep_old_queued", old, { state: "queued", createdAt: "2026-11-30T10:01:00.000Z" })),
    ]);
    await sql(`INSERT INTO "${schema}".deployments (id, target, state, created_at, claimed_by, record) VALUES ($1, 'worker@prod', 'succeeded', $2, 'replica-old', $3)`, [
      "dep_old_done",
      "2026-11-30T09:00:00.000Z",
      JSON.stringify(record("dep_old_done", done, { state: "succeeded", createdAt: "2026-11-30T09:00:00.000Z", claimedBy: "replica-old", startedAt: "2026-11-30T09:00:01.000Z", finishedAt: "2026-11-30T09:01:00.000Z", attempts: 1, result: { release: 4, rolloutId: "r-4" } })),
    ]);
    await sql(`INSERT INTO "${schema}".deployment_events (deployment_id, seq, event) VALUES ('dep_old_running', 1, $1), ('dep_old_running', 2, $2)`, [
      JSON.stringify(event("api@prod", "one")),
      JSON.stringify(event("api@prod", "two")),
    ]);
    await sql(`INSERT INTO "${schema}".idempotent_responses (key, response) VALUES ('old-key', $1)`, [JSON.stringify({ status: 202, body: { id: "dep_old_queued" }, headers: { location: "/v1/deployments/dep_old_queued" } })]);

    const backend = createPostgresBackend({ connectionString: url, schema });
    backends.push(backend);
    await backend.ready();
    expect(await sql(`SELECT version, name FROM "${schema}".kiln_migrations ORDER BY version`)).toEqual(MIGRATIONS.map(({ version, name }) => ({ version, name })));
    expect(MIGRATIONS.map(({ version }) => version)).toContain(2);
    expect(await sql(`SELECT to_regclass($1)::text AS found`, [`"${schema}".deployment_migrations`])).toEqual([{ found: null }]);

    const queue = backend.queue;
    const lapsed = await queue.get("dep_old_running");
    expect(lapsed).toMatchObject({ state: "running", claimedBy: "replica-old", attempts: 1, startedAt: "2026-11-30T10:00:01.000Z", target: running });
    expect(lapsed).not.toHaveProperty("claimExpiresAt");
    expect(Date.parse(lapsed!.leaseExpiresAt!)).toBeLessThan(Date.now());
    expect(await queue.get("dep_old_done")).toMatchObject({ state: "succeeded", result: { release: 4, rolloutId: "r-4" }, finishedAt: "2026-11-30T09:01:00.000Z" });
    expect((await queue.list({ limit: 10 })).map((listed) => listed.id)).toEqual(["dep_old_queued", "dep_old_running", "dep_old_done"]);
    // The old rows still hold their targets.
    expect(await queue.enqueue({ kind: "deploy", target: old, request: { environment: "prod" }, requestedBy: "ci" })).toMatchObject({ kind: "conflict", active: { id: "dep_old_queued" } });
    expect(await queue.enqueue({ kind: "deploy", target: running, request: { environment: "prod" }, requestedBy: "ci" })).toMatchObject({ kind: "conflict", active: { id: "dep_old_running" } });
    expect(await queue.getResponse("old-key")).toEqual({ status: 202, body: { id: "dep_old_queued" }, headers: { location: "/v1/deployments/dep_old_queued" } });
    expect((await queue.readEvents("dep_old_running", 0, 10)).map((stored) => stored.seq)).toEqual([1, 2]);

    // The dead replica's deployment is taken over first (the oldest), numbered on from its events.
    const taken = await queue.claim("replica-new", 30_000);
    expect(taken).toMatchObject({ id: "dep_old_running", claimedBy: "replica-new", attempts: 2, startedAt: "2026-11-30T10:00:01.000Z" });
    const [raw] = await sql<{ old: boolean }>(`SELECT record ? 'claimExpiresAt' AS old FROM "${schema}".deployments WHERE id = 'dep_old_running'`);
    expect(raw).toEqual({ old: false });
    expect(await queue.appendEvents("dep_old_running", [event("api@prod", "three")])).toBe(3);
    expect(await queue.finish("dep_old_running", "replica-new", { state: "succeeded", result: { release: 5 } })).toBe(true);
    expect(await queue.claim("replica-new", 30_000)).toMatchObject({ id: "dep_old_queued", attempts: 1 });
    expect(await queue.claim("replica-new", 30_000)).toBeUndefined();

    // And the state store on the same backend works on the same schema.
    await backend.store.update(old, (state) => void (state.currentRelease = 7));
    expect((await backend.store.read(old)).currentRelease).toBe(7);
  });

  it("refuses to adopt a deployments table without the columns the queue uses, and changes nothing", async () => {
    const schema = newSchema("misshapen");
    await oldServerSchema(schema);
    await sql(`ALTER TABLE "${schema}".deployments DROP COLUMN claimed_by`);
    const queue = createPostgresDeploymentQueue({ connectionString: url, schema });
    try {
      const error = (await queue.ready().catch((thrown: unknown) => thrown)) as { code?: string; message?: string };
      expect(error.code).toBe("STATE_UNAVAILABLE");
      expect(error.message).toMatch(/claimed_by/);
      expect(await sql(`SELECT version FROM "${schema}".kiln_migrations ORDER BY version`)).toEqual([{ version: 1 }]);
      expect(await sql(`SELECT to_regclass($1)::text AS found`, [`"${schema}".deployment_migrations`])).toEqual([{ found: `"${schema}".deployment_migrations`.replaceAll('"', "") }]);
    } finally {
      await queue.close();
    }
  });

  it("shares one pool between the state store and the queue, and ends it when both are closed", async () => {
    const schema = newSchema("pool");
    const application = `kiln_test_${randomBytes(4).toString("hex")}`;
    const connections = async () => (await sql<{ count: number }>("SELECT count(*)::integer AS count FROM pg_stat_activity WHERE application_name = $1", [application]))[0]!.count;
    const named = new URL(url);
    named.searchParams.set("application_name", application);
    const backend = createPostgresBackend({ connectionString: named.toString(), schema, maxConnections: 1 });
    backends.push(backend);
    // With one connection for both, 5 updates and 5 enqueues at once all get through, in turn.
    const targets = Array.from({ length: 5 }, (_, index) => ({ service: `pool${index}`, environment: "test" }));
    const outcomes = await Promise.all([
      ...targets.map((target) => backend.store.update(target, (state) => void (state.currentRelease = 1))),
      ...targets.map((target) => backend.queue.enqueue({ kind: "deploy", target, request: { environment: "test" }, requestedBy: "test" })),
    ]);
    expect(outcomes.slice(5).map((outcome) => (outcome as { kind: string }).kind)).toEqual(Array(5).fill("queued"));
    expect(await connections()).toBe(1);

    // Closing the store leaves the queue working on the pool; closing the queue ends the pool.
    await backend.store.close();
    await expect(backend.store.read(targets[0]!)).rejects.toMatchObject({ code: "STATE_UNAVAILABLE" });
    expect(await backend.queue.list({ limit: 10 })).toHaveLength(5);
    expect(await connections()).toBe(1);
    await backend.queue.close();
    await expect(backend.queue.list({ limit: 10 })).rejects.toMatchObject({ code: "STATE_UNAVAILABLE", message: expect.stringMatching(/closed/) as unknown });
    await waitFor(async () => ((await connections()) === 0 ? { done: true, value: true } : { done: false }), { timeoutMs: 10_000, minDelayMs: 20, maxDelayMs: 200, description: "the pool's connection to close" });
    await backend.close();
  });

  it("uses a pool passed in for both, and leaves it open", async () => {
    const schema = newSchema("own_pool");
    const pool = new pg.Pool({ connectionString: url, max: 2 });
    pool.on("error", () => {});
    let checkouts = 0;
    const connect = pool.connect.bind(pool);
    pool.connect = ((...args: Parameters<typeof connect>) => {
      checkouts += 1;
      return (connect as (...given: unknown[]) => unknown)(...args);
    }) as typeof pool.connect;
    try {
      const backend = createPostgresBackend({ pool, schema });
      const target = { service: "own", environment: "test" };
      await backend.ready();
      const before = checkouts;
      await backend.queue.enqueue({ kind: "deploy", target, request: { environment: "test" }, requestedBy: "test" });
      const afterQueue = checkouts;
      await backend.store.update(target, (state) => void (state.currentRelease = 1));
      expect(afterQueue).toBeGreaterThan(before);
      expect(checkouts).toBeGreaterThan(afterQueue);
      await backend.close();
      expect((await pool.query<{ one: number }>("SELECT 1 AS one")).rows).toEqual([{ one: 1 }]);
    } finally {
      await pool.end();
    }
  });

  it("stores a NUL in an event or a spec as U+FFFD instead of failing the write", async () => {
    const schema = newSchema("nul");
    const backend = createPostgresBackend({ connectionString: url, schema });
    backends.push(backend);
    const target = { service: "nul", environment: "test" };
    const outcome = await backend.queue.enqueue({ kind: "deploy", target, request: { spec: { env: { NOTE: "a\u0000b" } }, environment: "test" }, requestedBy: "test" });
    expect(outcome.kind).toBe("queued");
    const id = (outcome as { record: { id: string } }).record.id;
    expect((await backend.queue.get(id))?.request.spec).toEqual({ env: { NOTE: "a\uFFFDb" } });
    expect(await backend.queue.appendEvents(id, [event("nul@test", "build log \u0000 line")])).toBe(1);
    expect(((await backend.queue.readEvents(id, 0, 10))[0]?.event as { message: string }).message).toBe("build log \uFFFD line");
  });
});
