import { z } from "@kilnjs/core/spec";

/**
 * AWS's rules for the names this provider's secret store reads, checked before any call (pure,
 * no SDK). From the AWS Secrets Manager API reference (CreateSecret `Name`, GetSecretValue
 * `SecretId` and `VersionStage`) and the AWS Systems Manager API reference (PutParameter and
 * GetParameter `Name`), and the Parameter Store user guide's naming constraints.
 * @see https://docs.aws.amazon.com/secretsmanager/latest/apireference/API_CreateSecret.html
 * @see https://docs.aws.amazon.com/secretsmanager/latest/apireference/API_GetSecretValue.html
 * @see https://docs.aws.amazon.com/systems-manager/latest/APIReference/API_PutParameter.html
 * @see https://docs.aws.amazon.com/systems-manager/latest/APIReference/API_GetParameter.html
 * @see https://docs.aws.amazon.com/systems-manager/latest/userguide/sysman-paramstore-su-create.html
 */
export const AWS_SECRET_STORE_RULES = {
  /** Characters in a secret's name (CreateSecret `Name`). */
  maxSecretNameLength: 512,
  /** Characters in a `SecretId`, a name or an ARN (GetSecretValue). */
  maxSecretIdLength: 2048,
  /** Characters in a staging label (GetSecretValue `VersionStage`). */
  maxVersionStageLength: 256,
  /**
   * Characters in a parameter's name as created (PutParameter: 1011, a bound that also counts the
   * ARN's prefix `arn:aws:ssm:REGION:ACCOUNT:parameter/`, which AWS checks itself).
   */
  maxParameterNameLength: 1011,
  /** Characters in a GetParameter `Name`, a name or an ARN. */
  maxParameterReferenceLength: 2048,
  /** Levels of a parameter hierarchy (`/a/b/c` has 3). */
  maxParameterDepth: 15,
} as const;

/** A character a secret's name may hold: ASCII letters, digits and `/ _ + = . @ -` (CreateSecret `Name`). */
const SECRET_NAME_CHARACTER = /[A-Za-z0-9/_+=.@-]/;
/** A secret's ARN: `arn:PARTITION:secretsmanager:REGION:ACCOUNT:secret:NAME-SUFFIX` (the suffix is the 6 characters Secrets Manager adds). */
const SECRET_ARN = /^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:(.+)$/;
/** A character a parameter name may hold: letters, digits and `_ . -`, and `/` between levels (PutParameter `Name`). */
const PARAMETER_NAME_CHARACTER = /[A-Za-z0-9_./-]/;
/** A parameter's ARN: `arn:PARTITION:ssm:REGION:ACCOUNT:parameter/NAME` (for one shared from another account). */
const PARAMETER_ARN = /^arn:aws[a-z-]*:ssm:[a-z0-9-]+:\d{12}:parameter\/(.+)$/;

/** The first character of `text` that `allowed` refuses, in quotes and with its position, or undefined. */
function badCharacter(text: string, allowed: RegExp): string | undefined {
  const chars = [...text];
  const index = chars.findIndex((char) => !allowed.test(char));
  return index < 0 ? undefined : `${JSON.stringify(chars[index])} (character ${index + 1})`;
}

/**
 * Why `id` is not a Secrets Manager `SecretId`, or undefined when it is one: a secret's name (1 to
 * 512 ASCII letters, digits and `/ _ + = . @ -`) or its ARN
 * (`arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME-AbCdEf`, at most 2048 characters; the way to
 * read a secret of another account).
 * @see {@link AWS_SECRET_STORE_RULES} for the AWS documents these rules come from
 */
export function secretIdProblem(id: string): string | undefined {
  const arn = SECRET_ARN.exec(id);
  if (id.startsWith("arn:") && !arn) return "a secret's ARN reads arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME-AbCdEf (Secrets Manager GetSecretValue)";
  const name = arn ? arn[1]! : id;
  const limit = arn ? AWS_SECRET_STORE_RULES.maxSecretIdLength : AWS_SECRET_STORE_RULES.maxSecretNameLength;
  const length = arn ? id.length : name.length;
  if (length > limit) return `a secret's ${arn ? "ARN" : "name"} is at most ${limit} characters (Secrets Manager ${arn ? "GetSecretValue" : "CreateSecret"}); this one has ${length}`;
  const bad = badCharacter(name, SECRET_NAME_CHARACTER);
  if (bad) return `a secret's name holds ASCII letters, digits and / _ + = . @ - only (Secrets Manager CreateSecret); ${bad} is not allowed`;
  return undefined;
}

/**
 * Why `name` is not a Parameter Store parameter name, or undefined when it is one: a name of
 * letters, digits and `_ . -` (`db-password`), or a hierarchy of such names, each after a `/`
 * (`/prod/web/db-password`, at most 15 levels), at most 1011 characters; or the parameter's ARN
 * (`arn:aws:ssm:REGION:ACCOUNT:parameter/prod/web/db-password`, at most 2048 characters; the way
 * to read a parameter shared by another account). No spaces, no `:` (Kiln reads the current
 * version; AWS's `name:version` selectors are not taken here).
 * @see {@link AWS_SECRET_STORE_RULES} for the AWS documents these rules come from
 */
export function parameterNameProblem(name: string): string | undefined {
  const arn = PARAMETER_ARN.exec(name);
  if (name.startsWith("arn:") && !arn) return "a parameter's ARN reads arn:aws:ssm:REGION:ACCOUNT:parameter/NAME (Systems Manager GetParameter)";
  const limit = arn ? AWS_SECRET_STORE_RULES.maxParameterReferenceLength : AWS_SECRET_STORE_RULES.maxParameterNameLength;
  if (name.length > limit) return `a parameter's ${arn ? "ARN" : "name"} is at most ${limit} characters (Systems Manager ${arn ? "GetParameter" : "PutParameter"}); this one has ${name.length}`;
  // In an ARN the name follows `parameter/`, without its leading slash.
  const path = arn ? `/${arn[1]!}` : name;
  const levels = path.startsWith("/") ? path.slice(1).split("/") : [path];
  if (!path.startsWith("/") && path.includes("/")) return "a parameter name in a hierarchy starts with / (/prod/web/db-password) (Systems Manager PutParameter)";
  if (levels.some((level) => level === "")) return "a parameter name has no empty level: no // and no / at its end (Systems Manager PutParameter)";
  if (levels.length > AWS_SECRET_STORE_RULES.maxParameterDepth) {
    return `a parameter hierarchy has at most ${AWS_SECRET_STORE_RULES.maxParameterDepth} levels (Parameter Store naming constraints); this one has ${levels.length}`;
  }
  const bad = badCharacter(arn ? arn[1]! : name, PARAMETER_NAME_CHARACTER);
  if (bad) return `a parameter name holds letters, digits and _ . - between its / only, no spaces (Systems Manager PutParameter); ${bad} is not allowed`;
  return undefined;
}

/** Adds the problem `check` finds in a string as a zod issue. */
function checked(check: (value: string) => string | undefined) {
  return (value: string, ctx: z.RefinementCtx): void => {
    const problem = check(value);
    if (problem !== undefined) ctx.addIssue({ code: "custom", message: problem });
  };
}

/** A secret in AWS Secrets Manager: `secrets.<name>.from.aws.secretsManager`. */
export const awsSecretsManagerSourceSchema = z
  .strictObject({
    id: z.string().min(1, "the secret's name or ARN").superRefine(checked(secretIdProblem)).describe("The secret's name (`prod/web/db`) or ARN (another account's secret needs its ARN)."),
    key: z
      .string()
      .min(1)
      .optional()
      .describe("A top-level key of the secret's JSON object (a `SecretString` such as `{\"username\":…,\"password\":…}`): its value is the secret. Absent: the whole `SecretString`."),
    versionStage: z
      .string()
      .min(1, "a staging label such as AWSCURRENT or AWSPREVIOUS")
      .max(AWS_SECRET_STORE_RULES.maxVersionStageLength, `a staging label is at most ${AWS_SECRET_STORE_RULES.maxVersionStageLength} characters (Secrets Manager GetSecretValue)`)
      .default("AWSCURRENT")
      .describe("The staging label of the version to read (`AWSPREVIOUS`, or your own)."),
  })
  .describe("A secret in AWS Secrets Manager (GetSecretValue), read at each deploy with the aws provider's credentials and region.");

/** A parameter in AWS Systems Manager Parameter Store: `secrets.<name>.from.aws.parameter`. */
export const awsParameterSourceSchema = z
  .strictObject({
    name: z.string().min(1, "the parameter's name").superRefine(checked(parameterNameProblem)).describe("The parameter's name (`/prod/web/db-password`), or its ARN for one shared by another account."),
  })
  .describe("A parameter in AWS Systems Manager Parameter Store (GetParameter); a SecureString is decrypted (WithDecryption), which needs kms:Decrypt on its key.");

/**
 * Where a secret's value comes from in AWS: `secrets.<name>.from.aws` (and
 * `image.dockerfile.secrets.<id>.from.aws`), exactly one of `secretsManager` and `parameter`.
 * Any target may read it, whatever its provider: a Docker target's secret can come from Secrets
 * Manager. The aws provider's `secrets.read` receives it as this schema produces it.
 *
 * @example
 * ```yaml
 * secrets:
 *   DB_PASSWORD: { from: { aws: { secretsManager: { id: prod/web/db, key: password } } } }
 *   API_TOKEN:   { from: { aws: { parameter: { name: /prod/web/api-token } } } }
 * ```
 */
export const awsSecretSourceSchema = z
  .strictObject({
    secretsManager: awsSecretsManagerSourceSchema.optional(),
    parameter: awsParameterSourceSchema.optional(),
  })
  .superRefine((source, ctx) => {
    const given = (["secretsManager", "parameter"] as const).filter((key) => source[key] !== undefined);
    if (given.length === 1) return;
    ctx.addIssue({
      code: "custom",
      message:
        given.length === 0
          ? "say which AWS store holds the secret: `secretsManager: { id: NAME_OR_ARN }` or `parameter: { name: /PATH/NAME }`"
          : "give one AWS store, not secretsManager and parameter",
    });
  })
  .describe("A secret in AWS: exactly one of `secretsManager` (Secrets Manager) and `parameter` (Systems Manager Parameter Store).");

/** A reference to a secret in AWS, defaults applied: what the aws provider's `secrets.read` receives. */
export type AwsSecretSource = z.output<typeof awsSecretSourceSchema>;
