import { KilnError } from "@kilnjs/core";

const MASK = "***";

/**
 * A connection string fit for a message or a log: the password, and any query parameter whose name
 * contains "pass" (`password`, `sslpassword`), become `***`. Works on URLs
 * (`postgres://user:secret@host:5432/db`) and on key-value strings (`host=… password=secret`).
 */
export function redactConnectionString(connectionString: string): string {
  if (/^postgres(?:ql)?:\/\//i.test(connectionString)) {
    try {
      const url = new URL(connectionString);
      if (url.password) url.password = MASK;
      for (const key of [...url.searchParams.keys()]) if (/pass/i.test(key)) url.searchParams.set(key, MASK);
      return url.toString();
    } catch {
      // Not a URL the WHATWG parser takes: mask by pattern below.
    }
    return connectionString.replace(/^([a-z]+:\/\/[^:/@]*:)[^@]*@/i, `$1${MASK}@`).replace(/([?&][^=&]*pass[^=&]*=)[^&]*/gi, `$1${MASK}`);
  }
  return connectionString.replace(/(\b\w*pass\w*\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)/gi, `$1${MASK}`);
}

/** The fields of an error from `pg` or from node's sockets that say what went wrong. */
interface DriverError {
  readonly message: string;
  /** A SQLSTATE (`28P01`) from the server, or a node error code (`ECONNREFUSED`). */
  readonly code?: string;
}

/** The driver's error code: the error's own, else the first of an AggregateError's (happy eyeballs). */
function errorCode(error: unknown): string | undefined {
  if (typeof error !== "object" || error === null) return undefined;
  const { code, errors } = error as { code?: unknown; errors?: unknown };
  if (typeof code === "string") return code;
  if (Array.isArray(errors)) for (const inner of errors) if (typeof (inner as DriverError)?.code === "string") return (inner as DriverError).code;
  return undefined;
}

function errorMessage(error: unknown): string {
  if (error instanceof Error) {
    if (error.message) return error.message;
    if (Array.isArray((error as { errors?: unknown }).errors)) return ((error as AggregateError).errors as unknown[]).map(errorMessage).join("; ");
  }
  return String(error);
}

/** Whether the error means the connection itself is gone (rather than a statement failing). */
export function isConnectionError(error: unknown): boolean {
  const code = errorCode(error) ?? "";
  if (["ECONNREFUSED", "ECONNRESET", "EPIPE", "ETIMEDOUT", "ENOTFOUND", "EAI_AGAIN", "EHOSTUNREACH", "ENETUNREACH"].includes(code)) return true;
  if (/^(08|57P)/.test(code)) return true; // connection_exception, operator_intervention (admin shutdown)
  return /Connection terminated|timeout expired|Client has encountered a connection error/i.test(errorMessage(error));
}

/**
 * Turns an error from `pg` into a `STATE_UNAVAILABLE` {@link KilnError} whose message names the
 * server (`server`, already redacted) and what to check; a KilnError passes through unchanged.
 * @param doing - what the store was doing, e.g. `updating the state of web@prod`
 */
export function toStateError(error: unknown, server: string, doing: string): KilnError {
  if (error instanceof KilnError) return error;
  const code = errorCode(error);
  const detail = errorMessage(error);
  const fail = (hint: string, retryable: boolean) =>
    new KilnError("STATE_UNAVAILABLE", `PostgreSQL at ${server} failed while ${doing} (${detail}): ${hint}`, {
      cause: error,
      retryable,
      details: { server, ...(code ? { code } : {}) },
    });
  switch (code) {
    case "ECONNREFUSED":
      return fail("nothing accepts connections there. Check that PostgreSQL runs, that it listens on that host and port (listen_addresses, port), and that the connection string names them.", true);
    case "ENOTFOUND":
    case "EAI_AGAIN":
      return fail("the host name does not resolve. Check the host in the connection string and this machine's DNS.", true);
    case "ETIMEDOUT":
    case "EHOSTUNREACH":
    case "ENETUNREACH":
      return fail("the server cannot be reached. Check the host and port, the network and any firewall between here and the database.", true);
    case "28P01":
    case "28000":
      return fail("the server refused the login. Check the user and password in the connection string (or PGUSER/PGPASSWORD) and the server's pg_hba.conf.", false);
    case "3D000":
      return fail("the database does not exist. Create it (CREATE DATABASE …) or fix its name in the connection string.", false);
    case "42501":
      return fail("the role lacks a privilege. Kiln needs CREATE on the database (or an existing schema it may use) the first time, then SELECT, INSERT and UPDATE on its tables.", false);
    case "53300":
      return fail("the server has no connection slot left. Raise max_connections, or lower the pool size of the processes sharing it.", true);
    case "57P01":
    case "57P02":
    case "57P03":
      return fail("the server is shutting down or starting up. Try again when it is up.", true);
    default:
      break;
  }
  if (/timeout exceeded when trying to connect/i.test(detail)) {
    return fail("no connection was free in time: every connection of the pool was busy (raise maxConnections, or look for slow transactions), or the server did not answer a new one.", true);
  }
  if (/timeout expired|connection timeout/i.test(detail)) {
    return fail("no answer in time. Check the host and port, the network and any firewall, and whether the server is overloaded.", true);
  }
  if (isConnectionError(error)) {
    return fail("the connection was lost. A write in progress was rolled back, unless the connection dropped while it was being committed; check the server's log and the network.", true);
  }
  return fail("see the server's log for more.", false);
}
