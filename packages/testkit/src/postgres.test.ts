// postgresAvailable and requirePostgres against fake servers: no PostgreSQL needed.
import net from "node:net";
import { afterEach, describe, expect, it, vi } from "vitest";
import { DEFAULT_POSTGRES_URL, postgresAvailable, postgresUrl, requirePostgres } from "./postgres.js";

/** A TCP server on 127.0.0.1 that answers the first bytes it gets with `reply` (or never, when undefined). */
async function fakeServer(reply: string | undefined): Promise<{ url: string; received: Buffer[]; close(): Promise<void> }> {
  const received: Buffer[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on("error", () => {});
    socket.once("data", (data: Buffer) => {
      received.push(data);
      if (reply !== undefined) socket.write(reply);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as net.AddressInfo;
  return {
    url: `postgres://kiln:secret@127.0.0.1:${port}/kiln`,
    received,
    close: () => {
      for (const socket of sockets) socket.destroy();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

afterEach(() => {
  vi.unstubAllEnvs();
});

describe("postgresAvailable", () => {
  it("is true when the server answers the SSLRequest as PostgreSQL does (N or S)", async () => {
    for (const reply of ["N", "S"]) {
      const server = await fakeServer(reply);
      try {
        expect(await postgresAvailable(server.url)).toBe(true);
        expect(server.received[0]).toEqual(Buffer.from([0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]));
      } finally {
        await server.close();
      }
    }
  });

  it("is false for a server that is not PostgreSQL, for a closed port and for a URL of another kind", async () => {
    const http = await fakeServer("HTTP/1.1 400 Bad Request\r\n\r\n");
    try {
      expect(await postgresAvailable(http.url)).toBe(false);
    } finally {
      await http.close();
    }
    const closed = await fakeServer("N");
    await closed.close();
    expect(await postgresAvailable(closed.url)).toBe(false);
    expect(await postgresAvailable("mysql://127.0.0.1:3306/x")).toBe(false);
    expect(await postgresAvailable("not a url")).toBe(false);
  });

  it("gives up after 2 seconds on a server that never answers", async () => {
    const silent = await fakeServer(undefined);
    try {
      const started = Date.now();
      expect(await postgresAvailable(silent.url)).toBe(false);
      expect(Date.now() - started).toBeLessThan(5_000);
    } finally {
      await silent.close();
    }
  });
});

describe("postgresUrl and requirePostgres", () => {
  it("uses KILN_PG_URL, else scripts/postgres.sh's cluster", () => {
    vi.stubEnv("KILN_PG_URL", "");
    expect(postgresUrl()).toBe(DEFAULT_POSTGRES_URL);
    vi.stubEnv("KILN_PG_URL", "postgres://a:b@db:5432/c");
    expect(postgresUrl()).toBe("postgres://a:b@db:5432/c");
  });

  it("throws under CI=true when PostgreSQL does not answer, without printing the password", async () => {
    const closed = await fakeServer("N");
    await closed.close();
    vi.stubEnv("KILN_PG_URL", closed.url);
    vi.stubEnv("CI", "true");
    const error = await requirePostgres().catch((thrown: unknown) => thrown);
    expect(error).toBeInstanceOf(Error);
    expect((error as Error).message).toContain("scripts/postgres.sh start");
    expect((error as Error).message).toContain("kiln:***@127.0.0.1");
    expect((error as Error).message).not.toContain("secret");
  });

  it("skips loudly elsewhere", async () => {
    const closed = await fakeServer("N");
    await closed.close();
    vi.stubEnv("KILN_PG_URL", closed.url);
    vi.stubEnv("CI", "");
    const write = vi.spyOn(process.stderr, "write").mockImplementation(() => true);
    try {
      expect(await requirePostgres()).toBe(false);
      expect(String(write.mock.calls[0]?.[0])).toMatch(/\*\*\* SKIPPED: no PostgreSQL answered at postgres:\/\/kiln:\*\*\*@127\.0\.0\.1/);
      expect(String(write.mock.calls[0]?.[0]), "the notice says what to do, as npm test does").toContain("npm test starts one when run as root or with KILN_TEST_SETUP=start; or: npm run postgres:start");
    } finally {
      write.mockRestore();
    }
  });
});
