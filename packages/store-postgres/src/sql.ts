/** A double-quoted SQL identifier (`"name"`, inner quotes doubled). */
export function quoteIdentifier(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}

/**
 * A schema name the store accepts: lowercase letters, digits and `_`, starting with a letter or `_`,
 * at most 63 bytes (PostgreSQL's identifier limit), and not `pg_…` (reserved for the system).
 */
export function isValidSchemaName(name: string): boolean {
  return /^[a-z_][a-z0-9_]{0,62}$/.test(name) && !name.startsWith("pg_");
}

/**
 * JSON text for a `jsonb` value. PostgreSQL's jsonb cannot hold the NUL character (`\u0000`) in a
 * string, so each one becomes U+FFFD (the replacement character) rather than failing the write: a
 * NUL can only come from outside (a build log line, a provider's error message), never from Kiln.
 */
export function toJsonbText(value: unknown): string {
  const text = JSON.stringify(value);
  if (!text.includes("\\u0000")) return text;
  // An escaped NUL is `\u0000` preceded by an even number of backslashes (`\\u0000` is a backslash and "u0000").
  return text.replace(/(?<!\\)((?:\\\\)*)\\u0000/g, "$1\\ufffd");
}
