import type { ProviderContext } from "../provider/contract.js";

/**
 * Where a secret's value comes from, as the spec says it: a reference, never the value.
 * - `env`: an environment variable of the process that runs Kiln (the CLI's, the server's);
 * - `file`: a file on the machine that runs Kiln (absolute path); its content, less one trailing newline;
 * - `store`: a provider's secret store (`secrets.<name>.from.<provider>`), read by that provider's
 *   {@link SecretStoreCapability} with `reference` as its schema produced it.
 */
export type SecretSource =
  | { readonly kind: "env"; readonly name: string }
  | { readonly kind: "file"; readonly path: string }
  | { readonly kind: "store"; readonly provider: string; readonly reference: unknown };

/** How an instance receives a secret: an environment variable, or a file at an absolute path. */
export type SecretDelivery = { readonly kind: "env"; readonly name: string } | { readonly kind: "file"; readonly path: string };

/**
 * A secret an instance receives (the spec's `secrets.<name>`), as a release records it: where the
 * value comes from, how the instance gets it and a keyed digest of the value, never the value.
 */
export interface SecretMount {
  /** The secret's name: its key under `secrets`. */
  readonly name: string;
  readonly source: SecretSource;
  readonly to: SecretDelivery;
  /**
   * `hmac-sha256:` and 64 hex digits: an HMAC of the value with the target's own random key,
   * kept in its state (see docs/secrets.md). A changed value changes it, so it makes a new
   * release; without the key it tells nothing about the value.
   */
  readonly digest: string;
}

/**
 * A platform's secret store (AWS Secrets Manager, Parameter Store, …), for secrets whose spec says
 * `from.<provider>`: the reference's shape is the provider's `ProviderSpec.sections.secretSource`.
 */
export interface SecretStoreCapability {
  /**
   * Reads one secret's current value. The error never holds the value.
   * @param reference - the `secrets.<name>.from.<provider>` section, as the provider's schema produced it
   * @throws KilnError SECRET_UNAVAILABLE (missing, refused), PROVIDER_UNAVAILABLE, THROTTLED, ABORTED
   */
  read(reference: unknown, ctx: ProviderContext): Promise<string>;
}

