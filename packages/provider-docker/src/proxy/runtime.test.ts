import { createServer, type Server } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { clearCommands, enableCommands, isReady, parseServersState, parseStat, runtimeChange, runtimeCommand } from "./runtime.js";

// Captured from HAProxy 2.6.12 (kiln-local/haproxy:2.6): s1 ready, s2 draining, s3 an empty slot.
const SERVERS_STATE = `1
# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port
3 be 1 s1 172.29.0.2 2 4 1 1 0 1 0 2 6 0 0 0 - 8080 - 0 0 - - 0
3 be 2 s2 172.29.0.3 2 12 1 1 0 1 0 2 6 0 0 0 - 8080 - 0 0 - - 0
3 be 3 s3 127.0.0.1 0 5 1 1 3 1 0 0 14 0 0 0 - 1 - 0 0 - - 0
4 other 1 s1 10.0.0.1 2 0 1 1 0 1 0 2 6 0 0 0 - 80 - 0 0 - - 0

`;

const STAT = `# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight
fe,FRONTEND,,,0,1,9984,4,328,724,0,0,0,,,,,OPEN,
be,s1,0,0,2,1,,7,164,362,,0,,0,0,0,0,UP,1
be,s2,1,0,0,1,,2,164,362,,0,,0,0,0,0,DRAIN,0
be,BACKEND,0,0,2,1,,9,164,362,,0,,0,0,0,0,UP,1
`;

describe("parseServersState", () => {
  it("reads the servers of one backend by the header's column names", () => {
    const servers = parseServersState(SERVERS_STATE);
    expect(servers).toEqual([
      { name: "s1", address: "172.29.0.2", port: 8080, opState: 2, adminState: 4 },
      { name: "s2", address: "172.29.0.3", port: 8080, opState: 2, adminState: 12 },
      { name: "s3", address: "127.0.0.1", port: 1, opState: 0, adminState: 5 },
    ]);
    // Configuration maintenance (0x04) stays set after `state ready`; only forced maint/drain count.
    expect(servers.map(isReady)).toEqual([true, false, false]);
  });

  it("returns nothing for an answer without a header", () => {
    expect(parseServersState("Unknown command.\n")).toEqual([]);
  });
});

describe("parseStat", () => {
  it("reads current, queued and total sessions of a backend's servers", () => {
    expect(parseStat(STAT)).toEqual([
      { name: "s1", current: 2, queued: 0, status: "UP", total: 7 },
      { name: "s2", current: 0, queued: 1, status: "DRAIN", total: 2 },
    ]);
  });
});

describe("commands", () => {
  it("points a slot at an address, and back at nothing", () => {
    expect(enableCommands(4, "172.18.0.9", 8080)).toEqual(["set server be/s4 addr 172.18.0.9 port 8080", "set server be/s4 state ready"]);
    expect(clearCommands(4)).toEqual(["set server be/s4 state maint", "set server be/s4 addr 127.0.0.1 port 1"]);
  });
});

describe("runtimeCommand", () => {
  let server: Server | undefined;
  afterEach(() => new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve())));

  /** A fake runtime API that answers each command line with `answer(command)` and closes. */
  function fake(answer: (command: string) => string): Promise<number> {
    return new Promise((resolve) => {
      server = createServer((socket) => {
        socket.once("data", (data) => socket.end(answer(data.toString().trim())));
      });
      server.listen(0, "127.0.0.1", () => resolve((server!.address() as { port: number }).port));
    });
  }

  it("sends one line and returns the answer", async () => {
    const port = await fake((command) => `got ${command}\n`);
    await expect(runtimeCommand({ host: "127.0.0.1", port }, "show stat")).resolves.toBe("got show stat\n");
  });

  it("refuses command injection and reports refused changes", async () => {
    const port = await fake((command) => (command.includes("s99") ? "No such server.\n" : command.includes("addr") ? "IP changed from 'a' to 'b'\n" : "\n"));
    const admin = { host: "127.0.0.1", port };
    expect(() => runtimeCommand(admin, "show stat; shutdown")).toThrow();
    await expect(runtimeChange(admin, "set server be/s1 addr 10.0.0.1 port 80")).resolves.toBeUndefined();
    await expect(runtimeChange(admin, "set server be/s1 state ready")).resolves.toBeUndefined();
    await expect(runtimeChange(admin, "set server be/s99 state ready")).rejects.toMatchObject({ code: "INTERNAL" });
  });

  it("says PROVIDER_UNAVAILABLE when nothing listens", async () => {
    const port = await fake(() => "");
    await new Promise<void>((resolve) => server!.close(() => resolve()));
    server = undefined;
    await expect(runtimeCommand({ host: "127.0.0.1", port }, "show stat")).rejects.toMatchObject({ code: "PROVIDER_UNAVAILABLE" });
  });
});
