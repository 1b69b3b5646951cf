// The aws provider's secret store against moto: secrets and parameters made through the AWS SDK,
// read back through `provider.secrets.read`, and every way a read fails, each with a code and a
// message that says what to do and never holds a value. moto is shared: every name carries this
// run's suffix, and the file removes what it made.
import { randomBytes } from "node:crypto";
import { CreateSecretCommand, DeleteSecretCommand, PutSecretValueCommand, SecretsManagerClient } from "@aws-sdk/client-secrets-manager";
import { DeleteParametersCommand, PutParameterCommand, SSMClient } from "@aws-sdk/client-ssm";
import { isKilnError, silentLogger, type KilnError, type Provider, type ProviderContext } from "@kilnjs/core";
import { motoEndpoint, requireMoto } from "@kilnjs/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createAwsProvider } from "./index.js";
import { MOTO_REGION } from "./test-support.js";

const moto = await requireMoto();

const credentials = { accessKeyId: "testing", secretAccessKey: "testing" };
const ctx: ProviderContext = { signal: new AbortController().signal, logger: silentLogger, emit: () => undefined };

describe.skipIf(!moto)("aws secret store (moto)", () => {
  const endpoint = motoEndpoint();
  const secretsManager = new SecretsManagerClient({ endpoint, region: MOTO_REGION, credentials });
  const ssm = new SSMClient({ endpoint, region: MOTO_REGION, credentials });
  const run = randomBytes(4).toString("hex");
  const prefix = `kiln-itest/${run}`;
  /** Every value this file stores: none may show in an error. */
  const values = {
    plain: `plain-${run}-Zq9!`,
    password: `pw-${run}-"quoted"\\slash`,
    previous: `previous-${run}`,
    secure: `secure-${run}-éà`,
    notJson: `not json ${run}`,
  };
  const json = JSON.stringify({ username: "app", password: values.password, port: 5432, nothing: null });
  const secretNames: string[] = [];
  let provider: Provider;

  async function createSecret(name: string, value: { SecretString?: string; SecretBinary?: Uint8Array }): Promise<string> {
    const id = `${prefix}/${name}`;
    secretNames.push(id);
    const created = await secretsManager.send(new CreateSecretCommand({ Name: id, ...value }));
    return created.ARN!;
  }

  beforeAll(async () => {
    provider = createAwsProvider({ endpoint, secretsManagerEndpoint: endpoint, ssmEndpoint: endpoint, region: MOTO_REGION, credentials, maxAttempts: 2 });
    await createSecret("plain", { SecretString: values.previous });
    // A second version: AWSCURRENT moves to it, AWSPREVIOUS keeps the first.
    await secretsManager.send(new PutSecretValueCommand({ SecretId: `${prefix}/plain`, SecretString: values.plain }));
    await createSecret("json", { SecretString: json });
    await createSecret("binary", { SecretBinary: Buffer.from(values.plain) });
    await createSecret("not-json", { SecretString: values.notJson });
    await createSecret("deleted", { SecretString: values.plain });
    await secretsManager.send(new DeleteSecretCommand({ SecretId: `${prefix}/deleted`, RecoveryWindowInDays: 7 }));
    await ssm.send(new PutParameterCommand({ Name: `/${prefix}/secure`, Type: "SecureString", Value: values.secure }));
    await ssm.send(new PutParameterCommand({ Name: `/${prefix}/string`, Type: "String", Value: values.plain }));
  });

  afterAll(async () => {
    for (const id of secretNames) await secretsManager.send(new DeleteSecretCommand({ SecretId: id, ForceDeleteWithoutRecovery: true })).catch(() => undefined);
    await ssm.send(new DeleteParametersCommand({ Names: [`/${prefix}/secure`, `/${prefix}/string`] }));
    await provider?.close?.();
    secretsManager.destroy();
    ssm.destroy();
  });

  const read = (reference: unknown, via: Provider = provider) => via.secrets!.read(reference, ctx);

  /** The error a read throws; fails the test when the read succeeds or throws something that is not a KilnError. */
  async function failure(reference: unknown, via: Provider = provider): Promise<KilnError> {
    const error = await read(reference, via).then(
      () => new Error("expected the read to fail"),
      (caught: unknown) => caught,
    );
    if (!isKilnError(error)) throw error;
    const shown = `${error.message}\n${JSON.stringify(error.details ?? {})}`;
    for (const value of [...Object.values(values), json]) {
      for (const form of [value, JSON.stringify(value).slice(1, -1), Buffer.from(value).toString("base64")]) expect(shown).not.toContain(form);
    }
    return error;
  }

  it("reads a secret's SecretString, by name and by ARN, and an earlier version by its stage", async () => {
    expect(await read({ secretsManager: { id: `${prefix}/plain` } })).toBe(values.plain);
    expect(await read({ secretsManager: { id: `${prefix}/plain`, versionStage: "AWSPREVIOUS" } })).toBe(values.previous);
    const arn = await createSecret("by-arn", { SecretString: values.plain });
    expect(await read({ secretsManager: { id: arn } })).toBe(values.plain);
  });

  it("reads one key of a JSON secret: a string as it is, a number as its JSON text", async () => {
    expect(await read({ secretsManager: { id: `${prefix}/json`, key: "password" } })).toBe(values.password);
    expect(await read({ secretsManager: { id: `${prefix}/json`, key: "port" } })).toBe("5432");
    expect(await read({ secretsManager: { id: `${prefix}/json` } })).toBe(json);
  });

  it("reads Parameter Store parameters, a SecureString decrypted", async () => {
    expect(await read({ parameter: { name: `/${prefix}/secure` } })).toBe(values.secure);
    expect(await read({ parameter: { name: `/${prefix}/string` } })).toBe(values.plain);
  });

  it("says how to create a secret or parameter that does not exist", async () => {
    const secret = await failure({ secretsManager: { id: `${prefix}/missing` } });
    expect(secret.code).toBe("SECRET_UNAVAILABLE");
    expect(secret.message).toMatch(new RegExp(`Secrets Manager secret ${prefix}/missing was not found \\(ResourceNotFoundException\\); create it \\(aws secretsmanager create-secret`));
    const stage = await failure({ secretsManager: { id: `${prefix}/plain`, versionStage: "NOPE" } });
    expect(stage.code).toBe("SECRET_UNAVAILABLE");
    expect(stage.message).toMatch(/version stage NOPE/);
    const parameter = await failure({ parameter: { name: `/${prefix}/missing` } });
    expect(parameter.code).toBe("SECRET_UNAVAILABLE");
    expect(parameter.message).toMatch(/was not found \(ParameterNotFound\); create it \(aws ssm put-parameter/);
  });

  it("refuses a binary secret, a missing key, a key of a secret that is not JSON, a null, and a secret marked for deletion", async () => {
    const binary = await failure({ secretsManager: { id: `${prefix}/binary` } });
    expect([binary.code, binary.message]).toEqual(["SECRET_UNAVAILABLE", expect.stringMatching(/holds binary data \(SecretBinary\), which Kiln does not read; store the value as text/)]);
    const key = await failure({ secretsManager: { id: `${prefix}/json`, key: "Password" } });
    expect([key.code, key.message]).toEqual(["SECRET_UNAVAILABLE", expect.stringMatching(/has no key "Password" \(its JSON object has 4 keys; keys are case-sensitive\)/)]);
    const notJson = await failure({ secretsManager: { id: `${prefix}/not-json`, key: "password" } });
    expect([notJson.code, notJson.message]).toEqual(["SECRET_UNAVAILABLE", expect.stringMatching(/is not a JSON object, so it has no key "password"; drop `key`/)]);
    expect(notJson.cause).toBeUndefined(); // a JSON parse error would quote the text
    const nothing = await failure({ secretsManager: { id: `${prefix}/json`, key: "nothing" } });
    expect(nothing.message).toMatch(/holds null at key "nothing"/);
    const deleted = await failure({ secretsManager: { id: `${prefix}/deleted` } });
    expect([deleted.code, deleted.message]).toEqual(["SECRET_UNAVAILABLE", expect.stringMatching(/cannot be read \(InvalidRequestException: .*\); fix it in AWS \(a secret scheduled for deletion can be restored\)/)]);
  });

  it("is PROVIDER_UNAVAILABLE when the API cannot be reached, naming the endpoint variable", async () => {
    // The service endpoints too: the test setup's AWS_ENDPOINT_URL_SECRETS_MANAGER/_SSM would win over `endpoint`.
    const unreachable = createAwsProvider({ endpoint: "http://127.0.0.1:1", secretsManagerEndpoint: "http://127.0.0.1:1", ssmEndpoint: "http://127.0.0.1:1", region: MOTO_REGION, credentials, maxAttempts: 1 });
    try {
      const secret = await failure({ secretsManager: { id: `${prefix}/plain` } }, unreachable);
      expect([secret.code, secret.retryable]).toEqual(["PROVIDER_UNAVAILABLE", true]);
      expect(secret.message).toMatch(/the Secrets Manager API at http:\/\/127\.0\.0\.1:1 could not be reached .*AWS_ENDPOINT_URL_SECRETS_MANAGER/);
      const parameter = await failure({ parameter: { name: `/${prefix}/secure` } }, unreachable);
      expect(parameter.code).toBe("PROVIDER_UNAVAILABLE");
      expect(parameter.message).toMatch(/AWS_ENDPOINT_URL_SSM/);
    } finally {
      await unreachable.close?.();
    }
  });

  it("stops at once when the deploy is cancelled", async () => {
    const controller = new AbortController();
    controller.abort();
    const error = await provider.secrets!.read({ secretsManager: { id: `${prefix}/plain` } }, { ...ctx, signal: controller.signal }).catch((caught: unknown) => caught);
    expect(isKilnError(error, "ABORTED")).toBe(true);
  });
});
