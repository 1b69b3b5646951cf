import { z } from "zod";

/**
 * A value of a free-form map (`env`, `labels`, `args`): text, or a number or boolean taken as its
 * text, since YAML reads `PORT: 8080` as a number and `DEBUG: true` as a boolean.
 */
export const scalarText = z
  .union([z.string(), z.number(), z.boolean()], { error: "expected text (a string), a number or true/false" })
  .transform((value) => String(value));

/** An environment variable's name, as POSIX shells accept it. */
export const ENV_NAME_PATTERN = /^[A-Za-z_][A-Za-z0-9_]*$/;

/**
 * Where a secret's value comes from: exactly one of `env`, `file`, or a provider's secret store
 * `<provider>` (composed in by `composeSpecSchemas` from each provider's `ProviderSpec.secretSource`).
 */
export const secretSourceSchema = z
  .strictObject({
    env: z
      .string()
      .regex(ENV_NAME_PATTERN, "an environment variable name: letters, digits and _")
      .optional()
      .describe("An environment variable of the process that runs Kiln (the shell of `kiln deploy`, the server's environment)."),
    file: z
      .string()
      .min(1)
      .optional()
      .describe("A file on the machine that runs Kiln, relative to the spec file's folder; its content, less one trailing newline. Keep it out of the build context."),
  })
  .describe("Where the secret's value comes from: exactly one of `env`, `file`, or a provider's secret store (`aws: { secretsManager: ... }`, as that provider's reference describes). Kiln reads it at each deploy and records only this reference and a keyed digest.");

/** A build secret: a value a `RUN --mount=type=secret,id=<id>` step reads, never stored in the image. */
export const buildSecretSchema = z
  .strictObject({ from: secretSourceSchema })
  .describe("A build secret: `RUN --mount=type=secret,id=<id>` reads it at /run/secrets/<id> (or `env=NAME`); it enters no layer, no history and no fingerprint (changing it alone rebuilds nothing).");

/** How each instance receives a secret: exactly one of `env` and `file`. */
export const secretDeliverySchema = z
  .strictObject({
    env: z.string().regex(ENV_NAME_PATTERN, "an environment variable name: letters, digits and _").optional().describe("As this environment variable."),
    file: z
      .string()
      .regex(/^\/[^\0]*[^/]$/, "an absolute file path, such as /run/secrets/db-password")
      .optional()
      .describe("As a file at this absolute path (Docker: on a memory-backed mount, read-only, never on disk)."),
  })
  .describe("How each instance receives the secret: exactly one of `env` and `file`. Default: an environment variable named as the secret.");

/** One secret of the instances: where its value comes from and how each instance receives it. */
export const secretSchema = z
  .strictObject({
    from: secretSourceSchema,
    to: secretDeliverySchema.optional(),
  })
  .describe("A secret each instance receives. State, history, plans, events and the HTTP API hold only its reference and a keyed digest: a changed value makes a new release without showing it.");

