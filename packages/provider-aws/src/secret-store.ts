import { KilnError, throwIfAborted, type ProviderContext, type SecretStoreCapability } from "@kilnjs/core";
import { awsError, awsErrorCode, httpStatusOf, messageOf, requireRegion, type AwsApi, type AwsClients } from "./client.js";
import { awsSecretSourceSchema, type AwsSecretSource } from "./secret-source.js";

/** AWS error codes that say the secret or parameter (or the asked version of it) does not exist. */
const NOT_FOUND = new Set(["ResourceNotFoundException", "ParameterNotFound", "ParameterVersionNotFound"]);
/** AWS error codes that say the caller may not read it, or its KMS key could not decrypt it. */
const REFUSED = new Set(["AccessDeniedException", "DecryptionFailure", "InvalidKeyId"]);
/** AWS error codes that say the secret cannot be read as it stands (scheduled for deletion, a bad request). */
const NOT_READABLE = new Set(["InvalidRequestException", "InvalidParameterException", "ValidationException"]);

/**
 * Reads secrets from AWS Secrets Manager (GetSecretValue) and Systems Manager Parameter Store
 * (GetParameter with WithDecryption), one call per secret, each SDK loaded on the first read that
 * needs it. A value is returned to core and never put in an error, a log or an event.
 *
 * Not batched (BatchGetSecretValue, GetParameters): core reads a target's secrets in parallel,
 * a target has a handful, and one call per secret keeps each error about one secret.
 *
 * @throws KilnError (from `read`) INVALID_ARGUMENT for a reference its schema refuses;
 *   SECRET_UNAVAILABLE when the secret or parameter does not exist, AWS refuses to read or decrypt
 *   it, it holds only binary data (SecretBinary), or `key` is missing or its SecretString is not a
 *   JSON object; THROTTLED when AWS still throttles after the SDK's retries; PROVIDER_UNAVAILABLE
 *   when the API cannot be reached, answers with a server error, refuses the credentials or no
 *   region is set; ABORTED when `ctx.signal` fires
 */
export function createSecretStore(clients: AwsClients): SecretStoreCapability {
  return {
    async read(reference: unknown, ctx: ProviderContext): Promise<string> {
      throwIfAborted(ctx.signal);
      const source = parseReference(reference);
      if (source.secretsManager) return readSecretsManager(clients, source.secretsManager, ctx.signal);
      return readParameter(clients, source.parameter!, ctx.signal);
    },
  };
}

/** The reference as the schema produces it (core hands it over parsed; this checks it again, cheaply). */
function parseReference(reference: unknown): AwsSecretSource {
  const parsed = awsSecretSourceSchema.safeParse(reference);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0];
  throw new KilnError(
    "INVALID_ARGUMENT",
    `The aws secret reference does not match its schema (${[...(issue?.path ?? []).map(String), issue?.message ?? "invalid"].join(": ")}); a release recorded by another version of the aws provider may need a new deploy with today's spec.`,
  );
}

async function readSecretsManager(clients: AwsClients, source: NonNullable<AwsSecretSource["secretsManager"]>, signal: AbortSignal): Promise<string> {
  const what = `Secrets Manager secret ${source.id}${source.versionStage === "AWSCURRENT" ? "" : ` (version stage ${source.versionStage})`}`;
  const endpoint = clients.options.secretsManagerEndpoint;
  const { sdk, client } = await clients.secretsManager();
  let answer: { SecretString?: string | undefined; SecretBinary?: Uint8Array | undefined };
  try {
    await requireRegion(client);
    answer = await client.send(new sdk.GetSecretValueCommand({ SecretId: source.id, VersionStage: source.versionStage }), { abortSignal: signal });
  } catch (error) {
    throw storeError(error, what, endpoint, "Secrets Manager", {
      notFound: `create it (aws secretsmanager create-secret --name ${source.id} --secret-string ...), or check the id${source.versionStage === "AWSCURRENT" ? "" : ", the version stage"} and the region (AWS_REGION)`,
      refused: `allow secretsmanager:GetSecretValue on it to the identity Kiln runs as (and kms:Decrypt on its KMS key, if it has its own)`,
    });
  }
  if (answer.SecretString === undefined) {
    throw new KilnError(
      "SECRET_UNAVAILABLE",
      `${what} holds binary data (SecretBinary), which Kiln does not read; store the value as text (aws secretsmanager put-secret-value --secret-id ${source.id} --secret-string ...), or base64 it into a SecretString yourself.`,
      { details: { store: "secretsManager" } },
    );
  }
  return source.key === undefined ? answer.SecretString : valueAtKey(answer.SecretString, source.key, what);
}

/**
 * The value at `key` of a SecretString that is a JSON object: a string as it is, a number or a
 * boolean as its JSON text, an object or array as JSON. Errors never quote the text: a JSON
 * parse error would (V8 quotes the start of the input), so none is kept as a cause.
 */
function valueAtKey(text: string, key: string, what: string): string {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = undefined;
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    throw new KilnError("SECRET_UNAVAILABLE", `${what} is not a JSON object, so it has no key "${key}"; drop \`key\` to read the whole SecretString, or store the value as {"${key}": "..."}.`, {
      details: { store: "secretsManager" },
    });
  }
  const keys = Object.keys(parsed);
  if (!Object.hasOwn(parsed, key)) {
    throw new KilnError(
      "SECRET_UNAVAILABLE",
      `${what} has no key "${key}" (its JSON object has ${keys.length} key${keys.length === 1 ? "" : "s"}; keys are case-sensitive); fix \`key\`, or add "${key}" to the secret.`,
      { details: { store: "secretsManager" } },
    );
  }
  const value = (parsed as Record<string, unknown>)[key];
  if (value === null) {
    throw new KilnError("SECRET_UNAVAILABLE", `${what} holds null at key "${key}"; give it a value, or fix \`key\`.`, { details: { store: "secretsManager" } });
  }
  return typeof value === "string" ? value : JSON.stringify(value);
}

async function readParameter(clients: AwsClients, source: NonNullable<AwsSecretSource["parameter"]>, signal: AbortSignal): Promise<string> {
  const what = `Parameter Store parameter ${source.name}`;
  const endpoint = clients.options.ssmEndpoint;
  const { sdk, client } = await clients.ssm();
  let value: string | undefined;
  try {
    await requireRegion(client);
    // WithDecryption decrypts a SecureString; String and StringList come back as they are.
    const answer = await client.send(new sdk.GetParameterCommand({ Name: source.name, WithDecryption: true }), { abortSignal: signal });
    value = answer.Parameter?.Value;
  } catch (error) {
    throw storeError(error, what, endpoint, "SSM", {
      notFound: `create it (aws ssm put-parameter --name ${source.name} --type SecureString --value ...), or check the name and the region (AWS_REGION)`,
      refused: `allow ssm:GetParameter on it to the identity Kiln runs as (and kms:Decrypt on the KMS key of a SecureString)`,
    });
  }
  if (value === undefined) throw new KilnError("SECRET_UNAVAILABLE", `${what} came back without a value; check it with aws ssm get-parameter --name ${source.name}.`, { details: { store: "parameter" } });
  return value;
}

/**
 * An SDK error of a read as a KilnError: missing, refused or unreadable → `SECRET_UNAVAILABLE`
 * saying what to do; a server error after the SDK's retries → `PROVIDER_UNAVAILABLE` (retryable);
 * the rest (cancelled, unreachable, throttled, credentials refused) as {@link awsError} maps them.
 */
function storeError(error: unknown, what: string, endpoint: string | undefined, api: AwsApi, advice: { notFound: string; refused: string }): KilnError {
  const code = awsErrorCode(error);
  const details = { ...(code ? { awsCode: code } : {}), store: api === "SSM" ? "parameter" : "secretsManager" };
  if (code && NOT_FOUND.has(code)) return new KilnError("SECRET_UNAVAILABLE", `${what} was not found (${code}); ${advice.notFound}.`, { cause: error, details });
  if (code && REFUSED.has(code)) return new KilnError("SECRET_UNAVAILABLE", `AWS refused to read ${what} (${code}); ${advice.refused}.`, { cause: error, details });
  if (code && NOT_READABLE.has(code)) {
    return new KilnError("SECRET_UNAVAILABLE", `${what} cannot be read (${code}: ${messageOf(error)}); fix it in AWS (a secret scheduled for deletion can be restored), or read another.`, {
      cause: error,
      details,
    });
  }
  const status = httpStatusOf(error);
  if (status !== undefined && status >= 500 && !(code && /thrott/i.test(code))) {
    return new KilnError("PROVIDER_UNAVAILABLE", `Reading ${what}: the ${api} API answered with a server error (${code ?? `HTTP ${status}`}) after the SDK's retries; try again in a minute.`, {
      cause: error,
      retryable: true,
      details,
    });
  }
  return awsError(error, "SECRET_UNAVAILABLE", `Reading ${what}`, endpoint, api);
}
