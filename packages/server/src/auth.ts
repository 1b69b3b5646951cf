import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import { KilnError } from "@kilnjs/core";
import { z } from "zod";

/** What a token may do: `read` (GET), `deploy` (deployments, rollbacks, cancels, plans; implies read), `admin` (force-release locks; implies both). */
export type Scope = "read" | "deploy" | "admin";

/** One API token as configured: its name, the SHA-256 of its secret, its scopes and environments. */
export interface TokenConfig {
  /** A name for logs and audit (`ci`, `platform-team`); never the secret. */
  readonly name: string;
  /** `sha256:` and the hex SHA-256 of the token's secret; the secret itself is never stored. */
  readonly sha256: string;
  readonly scopes: readonly Scope[];
  /** Environments the token may touch (`staging`, `default`), or `["*"]` for all. */
  readonly environments: readonly string[];
}

/** The token of a request, once authenticated. */
export interface Principal {
  readonly name: string;
  readonly scopes: ReadonlySet<Scope>;
  readonly environments: ReadonlySet<string>;
}

/** The schema of the tokens file / `KILN_SERVER_TOKENS` (JSON or YAML): a list of {@link TokenConfig}. */
export const tokensSchema = z.array(
  z.strictObject({
    name: z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/, "a token name: letters, digits, _ . -, at most 64"),
    sha256: z.string().regex(/^sha256:[0-9a-f]{64}$/, "sha256: and 64 lowercase hex digits (kiln serve --hash-token prints it)"),
    scopes: z.array(z.enum(["read", "deploy", "admin"])).min(1),
    environments: z.array(z.string().min(1)).min(1),
  }),
);

/** The `sha256:` hash under which a token secret is configured. */
export function hashToken(secret: string): string {
  return `sha256:${createHash("sha256").update(secret, "utf8").digest("hex")}`;
}

/** A new random token secret (`kiln_` and 43 base64url characters: 256 bits). */
export function newTokenSecret(): string {
  return `kiln_${randomBytes(32).toString("base64url")}`;
}

/**
 * Checks tokens against a configured list, in constant time per entry.
 * @throws KilnError INVALID_ARGUMENT for a list that does not match {@link tokensSchema}, or repeats a name
 */
export function createAuthenticator(tokens: readonly TokenConfig[]): { authenticate(secret: string | undefined): Principal | undefined; readonly count: number } {
  const parsed = tokensSchema.safeParse(tokens);
  if (!parsed.success) {
    throw new KilnError("INVALID_ARGUMENT", `The server's token list is invalid: ${parsed.error.issues.map((issue) => `${issue.path.join(".")}: ${issue.message}`).join("; ")}.`);
  }
  const names = new Set<string>();
  for (const token of parsed.data) {
    if (names.has(token.name)) throw new KilnError("INVALID_ARGUMENT", `The server's token list names "${token.name}" twice; give each token its own name.`);
    names.add(token.name);
  }
  const entries = parsed.data.map((token) => ({
    digest: Buffer.from(token.sha256.slice("sha256:".length), "hex"),
    principal: { name: token.name, scopes: expandScopes(token.scopes), environments: new Set(token.environments) },
  }));
  return {
    count: entries.length,
    authenticate(secret) {
      if (!secret) return undefined;
      const digest = createHash("sha256").update(secret, "utf8").digest();
      let found: Principal | undefined;
      // Compare with every entry, so the time taken does not say which one matched.
      for (const entry of entries) if (timingSafeEqual(entry.digest, digest)) found = entry.principal;
      return found;
    },
  };
}

function expandScopes(scopes: readonly Scope[]): ReadonlySet<Scope> {
  const set = new Set<Scope>(scopes);
  if (set.has("admin")) set.add("deploy");
  if (set.has("deploy")) set.add("read");
  return set;
}

/** Whether the principal may touch `environment`. */
export function mayTouch(principal: Principal, environment: string): boolean {
  return principal.environments.has("*") || principal.environments.has(environment);
}
