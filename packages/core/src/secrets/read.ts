import { createHmac, randomBytes } from "node:crypto";
import { readFile } from "node:fs/promises";
import { KilnError, isKilnError } from "../errors.js";
import type { Provider, ProviderContext } from "../provider/contract.js";
import type { SecretMount, SecretSource } from "./types.js";
import type { ResolvedSecret } from "../spec/resolve.js";
import { SecretValue } from "./value.js";

/** What {@link readSecret} reads sources with. */
export interface SecretSources {
  /** The variables `from.env` reads: the process's environment, or what an embedder gives. */
  readonly env: Readonly<Record<string, string | undefined>>;
  /**
   * When set, `from.env` may name only variables that start with it (a server, whose callers name
   * the variables, keeps its own configuration out of their reach). @defaultValue any variable
   */
  readonly envPrefix?: string;
  /** The provider whose secret store a `from.<provider>` source names. */
  provider(name: string): Promise<Provider>;
  readonly ctx: ProviderContext;
}

/** A source in words, for messages: `the environment variable DB_PASSWORD`. Never holds a value. */
export function describeSecretSource(source: SecretSource): string {
  switch (source.kind) {
    case "env":
      return `the environment variable ${source.name}`;
    case "file":
      return `the file ${source.path}`;
    case "store":
      return `the ${source.provider} provider's secret store`;
  }
}

/**
 * Reads one secret's value from its source: an environment variable of the process that runs
 * Kiln, a file (its content less one trailing newline), or a provider's secret store. An empty
 * value is refused: it is almost always an unset variable or an empty file by mistake.
 * @param what - how messages name the secret: `secrets.DB_PASSWORD`, `image.dockerfile.secrets.npm`
 * @throws KilnError SECRET_UNAVAILABLE naming the secret and its source (never the value);
 *   PROVIDER_NOT_FOUND, CAPABILITY_MISSING for a store no provider here has; the store's errors
 */
export async function readSecret(what: string, source: SecretSource, sources: SecretSources): Promise<SecretValue> {
  let value: string | undefined;
  switch (source.kind) {
    case "env":
      if (sources.envPrefix !== undefined && !source.name.startsWith(sources.envPrefix)) {
        throw new KilnError(
          "SECRET_UNAVAILABLE",
          `${what}: ${source.name} is not a variable secrets may be read from here: only variables whose names start with ${sources.envPrefix} are (the server's own settings stay out of a caller's reach); set ${sources.envPrefix}${source.name} in the server's environment and name that.`,
          { details: { secret: what, source: "env", variable: source.name } },
        );
      }
      value = sources.env[source.name];
      if (value === undefined) {
        throw new KilnError("SECRET_UNAVAILABLE", `${what}: the environment variable ${source.name} is not set in the process that runs Kiln; set it (export ${source.name}=...) or point ${what}.from elsewhere.`, {
          details: { secret: what, source: "env", variable: source.name },
        });
      }
      break;
    case "file":
      try {
        value = (await readFile(source.path, "utf8")).replace(/\r?\n$/, "");
      } catch (error) {
        const reason = (error as NodeJS.ErrnoException).code === "ENOENT" ? "does not exist" : `cannot be read (${(error as NodeJS.ErrnoException).code ?? "error"})`;
        throw new KilnError("SECRET_UNAVAILABLE", `${what}: the file ${source.path} ${reason}; create it (readable by the user that runs Kiln) or change ${what}.from.file.`, {
          details: { secret: what, source: "file" },
        });
      }
      break;
    case "store": {
      const provider = await sources.provider(source.provider);
      if (!provider.secrets) {
        throw new KilnError("CAPABILITY_MISSING", `${what}: the ${source.provider} provider has no secret store; read the secret from env or file instead.`, { details: { secret: what } });
      }
      try {
        value = await provider.secrets.read(source.reference, sources.ctx);
      } catch (error) {
        if (isKilnError(error)) throw new KilnError(error.code, `${what}: ${error.message}`, { cause: error, retryable: error.retryable, details: { ...error.details, secret: what } });
        throw new KilnError("SECRET_UNAVAILABLE", `${what}: the ${source.provider} provider's secret store failed: ${String(error)}`, { cause: error, details: { secret: what } });
      }
      break;
    }
  }
  if (value === "") {
    throw new KilnError("SECRET_UNAVAILABLE", `${what}: ${describeSecretSource(source)} is empty; give it the secret's value or point ${what}.from elsewhere.`, { details: { secret: what } });
  }
  return new SecretValue(value);
}

/** A new random key for {@link secretDigest}: 32 bytes, base64. */
export function newSecretDigestKey(): string {
  return randomBytes(32).toString("base64");
}

/**
 * A keyed digest of a secret's value: `hmac-sha256:` and 64 hex digits, an HMAC-SHA-256 with
 * `key` (base64, from {@link newSecretDigestKey}). Equal values give equal digests under one key;
 * without the key the digest cannot be checked against a guess.
 */
export function secretDigest(key: string, value: SecretValue): string {
  return `hmac-sha256:${createHmac("sha256", Buffer.from(key, "base64")).update(value.reveal()).digest("hex")}`;
}

/** The secrets of a target read at once: their mounts (reference and digest) and their values, by name. */
export interface ReadSecrets {
  readonly mounts: readonly SecretMount[];
  readonly values: ReadonlyMap<string, SecretValue>;
}

/**
 * Reads every secret of `secrets` (in parallel) and digests each with `key`.
 * @throws KilnError SECRET_UNAVAILABLE and what {@link readSecret} throws
 */
export async function readSecrets(secrets: readonly ResolvedSecret[], key: string, sources: SecretSources): Promise<ReadSecrets> {
  const values = await Promise.all(secrets.map((secret) => readSecret(`secrets.${secret.name}`, secret.source, sources)));
  return {
    mounts: secrets.map((secret, index) => ({ name: secret.name, source: secret.source, to: secret.to, digest: secretDigest(key, values[index]!) })),
    values: new Map(secrets.map((secret, index) => [secret.name, values[index]!])),
  };
}

/**
 * The values of a release's recorded secrets, read again from their sources (a rollback or the
 * restore of the previous release launches with today's values). A value whose digest differs
 * from the recorded one is still used; `changed` names those secrets, for a warning.
 * @throws KilnError SECRET_UNAVAILABLE and what {@link readSecret} throws
 */
export async function readRecordedSecrets(mounts: readonly SecretMount[], key: string | undefined, sources: SecretSources): Promise<{ values: ReadonlyMap<string, SecretValue>; changed: string[] }> {
  const values = await Promise.all(mounts.map((mount) => readSecret(`secrets.${mount.name}`, mount.source, sources)));
  const changed = key === undefined ? [] : mounts.filter((mount, index) => secretDigest(key, values[index]!) !== mount.digest).map((mount) => mount.name);
  return { values: new Map(mounts.map((mount, index) => [mount.name, values[index]!])), changed };
}
