// What needs no PostgreSQL: options, redaction, jsonb text, and a server that is not there.
import net from "node:net";
import { describe, expect, it } from "vitest";
import { KilnError, isKilnError } from "@kilnjs/core";
import { toStateError } from "./errors.js";
import { createPostgresBackend, createPostgresDeploymentQueue, createPostgresStateStore, redactConnectionString } from "./index.js";
import { migrationLockKey } from "./migrations.js";
import { isValidSchemaName, toJsonbText } from "./sql.js";

/** A port on 127.0.0.1 where nothing listens (one the OS just gave out and took back). */
async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

describe("redactConnectionString", () => {
  it.each([
    ["postgres://kiln:s3cret@db.internal:5432/kiln", "postgres://kiln:***@db.internal:5432/kiln"],
    ["postgresql://kiln:p%40ss@127.0.0.1/kiln?sslmode=require", "postgresql://kiln:***@127.0.0.1/kiln?sslmode=require"],
    ["postgres://kiln@127.0.0.1:5433/kiln", "postgres://kiln@127.0.0.1:5433/kiln"],
    ["postgres://kiln@127.0.0.1/kiln?password=s3cret&application_name=x", "postgres://kiln@127.0.0.1/kiln?password=***&application_name=x"],
    ["host=db port=5432 user=kiln password=s3cret dbname=kiln", "host=db port=5432 user=kiln password=*** dbname=kiln"],
    ["host=db password='it is s3cret' dbname=kiln", "host=db password=*** dbname=kiln"],
  ])("%s", (input, expected) => {
    expect(redactConnectionString(input)).toBe(expected);
    expect(redactConnectionString(input)).not.toMatch(/s3cret|p%40ss/);
  });
});

describe("toStateError", () => {
  const server = "postgres://kiln:***@db:5432/kiln";
  const driverError = (message: string, code?: string) => Object.assign(new Error(message), code ? { code } : {});
  it.each([
    [driverError('password authentication failed for user "kiln"', "28P01"), /user and password/, false],
    [driverError('database "kiln" does not exist', "3D000"), /does not exist\. Create it/, false],
    [driverError("permission denied for database kiln", "42501"), /lacks a privilege/, false],
    [driverError("sorry, too many clients already", "53300"), /max_connections/, true],
    [driverError("terminating connection due to administrator command", "57P01"), /shutting down/, true],
    [driverError("getaddrinfo ENOTFOUND db", "ENOTFOUND"), /does not resolve/, true],
    [driverError("timeout exceeded when trying to connect"), /maxConnections/, true],
    [driverError("Connection terminated due to connection timeout"), /no answer in time/, true],
    [driverError("Connection terminated unexpectedly"), /connection was lost/, true],
    [Object.assign(new AggregateError([driverError("connect ECONNREFUSED ::1:5432", "ECONNREFUSED")], ""), {}), /Check that PostgreSQL runs/, true],
    [driverError('relation "x" does not exist', "42P01"), /server's log/, false],
  ])("%s", (error, hint, retryable) => {
    const mapped = toStateError(error, server, "reading the state of web@prod");
    expect(mapped.code).toBe("STATE_UNAVAILABLE");
    expect(mapped.message).toContain(`PostgreSQL at ${server} failed while reading the state of web@prod`);
    expect(mapped.message).toMatch(hint);
    expect(mapped.retryable).toBe(retryable);
    expect(mapped.cause).toBe(error);
  });

  it("passes a KilnError through", () => {
    const error = new KilnError("LOCK_LOST", "lost");
    expect(toStateError(error, server, "x")).toBe(error);
  });
});

describe("toJsonbText", () => {
  it("replaces escaped NUL characters, and only those", () => {
    expect(toJsonbText({ a: "x\u0000y" })).toBe('{"a":"x\\ufffdy"}');
    // A backslash followed by the text "u0000" is not a NUL.
    expect(toJsonbText({ a: "x\\u0000y" })).toBe(JSON.stringify({ a: "x\\u0000y" }));
    expect(toJsonbText({ a: "\\\u0000" })).toBe('{"a":"\\\\\\ufffd"}');
    expect(JSON.parse(toJsonbText({ a: "\\\u0000" }))).toEqual({ a: "\\\uFFFD" });
    expect(toJsonbText({ a: 1, b: [true, null] })).toBe('{"a":1,"b":[true,null]}');
  });
});

describe("options", () => {
  it("accepts schema names PostgreSQL takes unquoted, and no others", () => {
    for (const name of ["kiln", "kiln_state", "_x", "a1"]) expect(isValidSchemaName(name)).toBe(true);
    for (const name of ["", "Kiln", "1kiln", "kiln-state", 'x"y', "pg_kiln", "a".repeat(64)]) expect(isValidSchemaName(name)).toBe(false);
  });

  it("refuses invalid options with INVALID_ARGUMENT before connecting", () => {
    const invalid = [
      () => createPostgresStateStore({ connectionString: "postgres://x@127.0.0.1/x", schema: "Bad-Name" }),
      () => createPostgresStateStore({} as never),
      () => createPostgresStateStore({ connectionString: "  " }),
      () => createPostgresStateStore({ connectionString: "postgres://x@127.0.0.1/x", leaseTtlMs: 0 }),
    ];
    for (const create of invalid) expect(() => create()).toThrow(expect.objectContaining({ code: "INVALID_ARGUMENT" }));
  });

  it("refuses invalid options of the deployment queue and the backend the same way", () => {
    const invalid = [
      () => createPostgresDeploymentQueue({ connectionString: "postgres://x@127.0.0.1/x", schema: "pg_kiln" }),
      () => createPostgresDeploymentQueue({} as never),
      () => createPostgresDeploymentQueue({ connectionString: "" }),
      () => createPostgresBackend({ connectionString: "postgres://x@127.0.0.1/x", schema: "Bad-Name" }),
      () => createPostgresBackend({ connectionString: "postgres://x@127.0.0.1/x", pool: {} } as never),
      () => createPostgresBackend({ connectionString: "postgres://x@127.0.0.1/x", leaseTtlMs: 1.5 }),
    ];
    for (const create of invalid) expect(() => create()).toThrow(expect.objectContaining({ code: "INVALID_ARGUMENT" }));
  });

  it("keeps the migration lock key stable: FNV-1a of the schema name (processes of different versions must take the same lock)", () => {
    expect(migrationLockKey("kiln")).toBe(-1_022_410_125);
    expect(Number.isInteger(migrationLockKey("x".repeat(63)))).toBe(true);
  });
});

describe("a server that is not there", () => {
  it("fails with STATE_UNAVAILABLE saying what to check, without the password, and tries again on the next call", async () => {
    const port = await closedPort();
    const store = createPostgresStateStore({ connectionString: `postgres://kiln:hunter2@127.0.0.1:${port}/kiln` });
    try {
      for (let attempt = 0; attempt < 2; attempt++) {
        const error = await store.read({ service: "web", environment: "prod" }).catch((thrown: unknown) => thrown);
        expect(isKilnError(error, "STATE_UNAVAILABLE"), String(error)).toBe(true);
        const { message, retryable, details } = error as { message: string; retryable: boolean; details: Record<string, unknown> };
        expect(message).toContain(`postgres://kiln:***@127.0.0.1:${port}/kiln`);
        expect(message).toMatch(/ECONNREFUSED/);
        expect(message).toMatch(/Check that PostgreSQL runs/);
        expect(message).not.toContain("hunter2");
        expect(JSON.stringify(details)).not.toContain("hunter2");
        expect(retryable).toBe(true);
      }
    } finally {
      await store.close();
    }
  });

  it("fails a deployment queue's calls with STATE_UNAVAILABLE the same way, without the password", async () => {
    const port = await closedPort();
    const queue = createPostgresDeploymentQueue({ connectionString: `postgres://kiln:hunter2@127.0.0.1:${port}/kiln` });
    try {
      const calls = [() => queue.claim("replica-a", 15_000), () => queue.enqueue({ kind: "deploy", target: { service: "web", environment: "prod" }, request: { environment: "prod" }, requestedBy: "ci" })];
      for (const call of calls) {
        const error = await call().catch((thrown: unknown) => thrown);
        expect(isKilnError(error, "STATE_UNAVAILABLE"), String(error)).toBe(true);
        const { message, retryable } = error as { message: string; retryable: boolean };
        expect(message).toContain(`postgres://kiln:***@127.0.0.1:${port}/kiln`);
        expect(message).toMatch(/Check that PostgreSQL runs/);
        expect(message).not.toContain("hunter2");
        expect(retryable).toBe(true);
      }
    } finally {
      await queue.close();
    }
  });

  it("closes a backend without ever having connected; its store and queue refuse calls afterwards", async () => {
    const backend = createPostgresBackend({ connectionString: "postgres://kiln:x@127.0.0.1:1/kiln" });
    await backend.close();
    await backend.close();
    await expect(backend.store.listTargets()).rejects.toMatchObject({ code: "STATE_UNAVAILABLE" });
    await expect(backend.queue.list({ limit: 1 })).rejects.toMatchObject({ code: "STATE_UNAVAILABLE", message: expect.stringMatching(/deployment queue .* is closed/) as unknown });
  });

  it("closes without ever having connected", async () => {
    const store = createPostgresStateStore({ connectionString: "postgres://kiln:x@127.0.0.1:1/kiln" });
    await store.close();
    await expect(store.listTargets()).rejects.toMatchObject({ code: "STATE_UNAVAILABLE" });
  });
});
