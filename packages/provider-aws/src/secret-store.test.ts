// The aws secret store's answers to what moto cannot play (moto enforces no IAM and never
// throttles): AWS's JSON-protocol error documents served on 127.0.0.1 to the real SDK clients.
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { isKilnError, silentLogger, type KilnError, type ProviderContext } from "@kilnjs/core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createAwsProvider } from "./index.js";

const ctx: ProviderContext = { signal: new AbortController().signal, logger: silentLogger, emit: () => undefined };

/** An AWS JSON-protocol error: its HTTP status, `__type` and message. */
interface Answer {
  readonly status: number;
  readonly type: string;
  readonly message: string;
}

describe("aws secret store errors", () => {
  let server: Server;
  let endpoint: string;
  /** What the next requests get, by the operation in `X-Amz-Target` (`secretsmanager.GetSecretValue`, `AmazonSSM.GetParameter`). */
  const answers = new Map<string, Answer>();
  const requests: string[] = [];

  beforeAll(async () => {
    server = createServer((request, response) => {
      const target = String(request.headers["x-amz-target"] ?? "");
      requests.push(target);
      request.resume();
      request.on("end", () => {
        const answer = answers.get(target) ?? { status: 500, type: "InternalFailure", message: `no answer for ${target}` };
        response.writeHead(answer.status, { "content-type": "application/x-amz-json-1.1", "x-amzn-errortype": answer.type, "x-amzn-requestid": "req-1" });
        response.end(JSON.stringify({ __type: answer.type, message: answer.message }));
      });
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  afterAll(async () => {
    await new Promise((resolve) => server.close(resolve));
  });

  async function failure(reference: unknown, answer: Answer, maxAttempts = 1): Promise<{ error: KilnError; calls: number }> {
    answers.clear();
    answers.set("secretsmanager.GetSecretValue", answer).set("AmazonSSM.GetParameter", answer);
    requests.length = 0;
    // Service endpoints too: the test setup exports AWS_ENDPOINT_URL_SECRETS_MANAGER/_SSM (moto), which would win over `endpoint`.
    const provider = createAwsProvider({ endpoint, secretsManagerEndpoint: endpoint, ssmEndpoint: endpoint, region: "us-east-1", credentials: { accessKeyId: "testing", secretAccessKey: "testing" }, maxAttempts });
    try {
      const error = await provider.secrets!.read(reference, ctx).then(
        () => new Error("expected the read to fail"),
        (caught: unknown) => caught,
      );
      if (!isKilnError(error)) throw error;
      return { error, calls: requests.length };
    } finally {
      await provider.close?.();
    }
  }

  it("says which permission to grant when AWS refuses a read", async () => {
    const denied = { status: 400, type: "AccessDeniedException", message: "User: arn:aws:iam::123456789012:user/ci is not authorized to perform: secretsmanager:GetSecretValue" };
    const secret = await failure({ secretsManager: { id: "prod/db" } }, denied);
    expect([secret.error.code, secret.error.details]).toEqual(["SECRET_UNAVAILABLE", { awsCode: "AccessDeniedException", store: "secretsManager" }]);
    expect(secret.error.message).toMatch(/AWS refused to read Secrets Manager secret prod\/db \(AccessDeniedException\); allow secretsmanager:GetSecretValue on it/);
    const parameter = await failure({ parameter: { name: "/prod/db" } }, { ...denied, message: "not authorized to perform: ssm:GetParameter" });
    expect(parameter.error.message).toMatch(/AWS refused to read Parameter Store parameter \/prod\/db \(AccessDeniedException\); allow ssm:GetParameter on it/);
    const kms = await failure({ parameter: { name: "/prod/db" } }, { status: 400, type: "InvalidKeyId", message: "The key is disabled" });
    expect([kms.error.code, kms.error.message]).toEqual(["SECRET_UNAVAILABLE", expect.stringMatching(/\(InvalidKeyId\); .*kms:Decrypt on the KMS key of a SecureString/)]);
  });

  it("is THROTTLED, retryable, when AWS still throttles after the SDK's retries", async () => {
    const { error, calls } = await failure({ secretsManager: { id: "prod/db" } }, { status: 400, type: "ThrottlingException", message: "Rate exceeded" }, 2);
    expect([error.code, error.retryable]).toEqual(["THROTTLED", true]);
    expect(error.message).toMatch(/AWS kept throttling the calls \(ThrottlingException: Rate exceeded\) after the SDK's retries/);
    expect(calls).toBe(2); // the SDK retried once before giving up
  });

  it("is PROVIDER_UNAVAILABLE, retryable, when the API keeps answering with a server error", async () => {
    const { error } = await failure({ parameter: { name: "/prod/db" } }, { status: 500, type: "InternalServerError", message: "oops" });
    expect([error.code, error.retryable]).toEqual(["PROVIDER_UNAVAILABLE", true]);
    expect(error.message).toMatch(/the SSM API answered with a server error \(InternalServerError\) after the SDK's retries; try again/);
  });

  it("is PROVIDER_UNAVAILABLE when AWS refuses the credentials", async () => {
    const { error } = await failure({ secretsManager: { id: "prod/db" } }, { status: 400, type: "UnrecognizedClientException", message: "The security token included in the request is invalid." });
    expect(error.code).toBe("PROVIDER_UNAVAILABLE");
    expect(error.message).toMatch(/AWS refused the credentials \(UnrecognizedClientException\)/);
  });

  it("refuses a reference its schema does not take, before any call", async () => {
    const { error, calls } = await failure({ secretsManager: { id: "prod db" } }, { status: 500, type: "InternalFailure", message: "unused" });
    expect(error.code).toBe("INVALID_ARGUMENT");
    expect(error.message).toMatch(/secretsManager: id: a secret's name holds ASCII letters/);
    expect(calls).toBe(0);
  });
});
