import type * as Ec2Sdk from "@aws-sdk/client-ec2";
import type { EC2Client } from "@aws-sdk/client-ec2";
import type * as LoadBalancingSdk from "@aws-sdk/client-elastic-load-balancing-v2";
import type { ElasticLoadBalancingV2Client } from "@aws-sdk/client-elastic-load-balancing-v2";
import type * as SecretsManagerSdk from "@aws-sdk/client-secrets-manager";
import type { SecretsManagerClient } from "@aws-sdk/client-secrets-manager";
import type * as SsmSdk from "@aws-sdk/client-ssm";
import type { SSMClient } from "@aws-sdk/client-ssm";
import { KilnError, createErrorMapper, isConnectionError as isUnreachable, type ErrorCode } from "@kilnjs/core";
import type { ResolvedAwsOptions } from "./options.js";

/** The EC2 SDK module, loaded on first use. */
export type Ec2Module = typeof Ec2Sdk;
/** The ELBv2 SDK module, loaded on first use. */
export type LoadBalancingModule = typeof LoadBalancingSdk;
/** The Secrets Manager SDK module, loaded on first use. */
export type SecretsManagerModule = typeof SecretsManagerSdk;
/** The Systems Manager (Parameter Store) SDK module, loaded on first use. */
export type SsmModule = typeof SsmSdk;

/** One SDK module and the client made from it, loaded on first use and kept. */
class LazyClient<M, C extends { destroy(): void }> {
  #loaded: Promise<{ sdk: M; client: C }> | undefined;

  /**
   * @param packageName - the SDK package, for the error when it cannot be loaded
   * @param load - imports the module and makes the client
   */
  constructor(
    readonly packageName: string,
    readonly load: () => Promise<{ sdk: M; client: C }>,
  ) {}

  /** The module and client; a failed import is tried again on the next call. */
  get(): Promise<{ sdk: M; client: C }> {
    this.#loaded ??= this.load().catch((error: unknown) => {
      this.#loaded = undefined;
      throw new KilnError("INTERNAL", `Loading ${this.packageName} failed: ${messageOf(error)}`, { cause: error });
    });
    return this.#loaded;
  }

  /** Closes the client's connections, if it was made. */
  async close(): Promise<void> {
    const loaded = this.#loaded;
    this.#loaded = undefined;
    const settled = await loaded?.catch(() => undefined);
    settled?.client.destroy();
  }
}

/**
 * Loads the AWS SDK clients on first use and keeps one of each: importing the provider costs
 * almost nothing, and every operation of a provider shares one client, so the SDK's adaptive
 * retry mode has one client-side rate limiter for all of them.
 */
export class AwsClients {
  readonly #ec2 = new LazyClient<Ec2Module, EC2Client>("@aws-sdk/client-ec2", async () => {
    const sdk = await import("@aws-sdk/client-ec2");
    return { sdk, client: new sdk.EC2Client(this.#config(this.options.endpoint)) };
  });
  readonly #elb = new LazyClient<LoadBalancingModule, ElasticLoadBalancingV2Client>("@aws-sdk/client-elastic-load-balancing-v2", async () => {
    const sdk = await import("@aws-sdk/client-elastic-load-balancing-v2");
    return { sdk, client: new sdk.ElasticLoadBalancingV2Client(this.#config(this.options.loadBalancingEndpoint)) };
  });
  readonly #secretsManager = new LazyClient<SecretsManagerModule, SecretsManagerClient>("@aws-sdk/client-secrets-manager", async () => {
    const sdk = await import("@aws-sdk/client-secrets-manager");
    return { sdk, client: new sdk.SecretsManagerClient(this.#config(this.options.secretsManagerEndpoint)) };
  });
  readonly #ssm = new LazyClient<SsmModule, SSMClient>("@aws-sdk/client-ssm", async () => {
    const sdk = await import("@aws-sdk/client-ssm");
    return { sdk, client: new sdk.SSMClient(this.#config(this.options.ssmEndpoint)) };
  });

  constructor(readonly options: ResolvedAwsOptions) {}

  /** The EC2 module and client. */
  ec2(): Promise<{ sdk: Ec2Module; client: EC2Client }> {
    return this.#ec2.get();
  }

  /** The ELBv2 module and client. */
  loadBalancing(): Promise<{ sdk: LoadBalancingModule; client: ElasticLoadBalancingV2Client }> {
    return this.#elb.get();
  }

  /** The Secrets Manager module and client (the secret store's `secretsManager` sources). */
  secretsManager(): Promise<{ sdk: SecretsManagerModule; client: SecretsManagerClient }> {
    return this.#secretsManager.get();
  }

  /** The Systems Manager module and client (the secret store's Parameter Store sources). */
  ssm(): Promise<{ sdk: SsmModule; client: SSMClient }> {
    return this.#ssm.get();
  }

  /** Closes the clients' connections. */
  async close(): Promise<void> {
    await Promise.all([this.#ec2.close(), this.#elb.close(), this.#secretsManager.close(), this.#ssm.close()]);
  }

  #config(endpoint: string | undefined) {
    const { region, credentials, maxAttempts } = this.options;
    return {
      ...(region ? { region } : {}),
      ...(endpoint ? { endpoint } : {}),
      ...(credentials ? { credentials } : {}),
      maxAttempts,
      // Exponential backoff with jitter, and a client-side token bucket that slows every call of
      // this client down when AWS throttles (RequestLimitExceeded).
      retryMode: "adaptive",
    };
  }
}

/**
 * Resolves a client's region, which AWS calls need.
 * @throws KilnError PROVIDER_UNAVAILABLE when no region is configured
 */
export async function requireRegion(client: { config: { region(): Promise<string> } }): Promise<string> {
  const noRegion = "The aws provider has no region: set AWS_REGION (or a region in your AWS profile).";
  const region = await client.config.region().catch((error: unknown) => {
    throw new KilnError("PROVIDER_UNAVAILABLE", noRegion, { cause: error });
  });
  if (!region) throw new KilnError("PROVIDER_UNAVAILABLE", noRegion);
  return region;
}

/** The AWS error code of an SDK error (`RequestLimitExceeded`, `InvalidAMIID.NotFound`), if any. */
export function awsErrorCode(error: unknown): string | undefined {
  const candidate = error as { name?: unknown; Code?: unknown; code?: unknown } | null;
  if (!candidate || typeof candidate !== "object") return undefined;
  if (typeof candidate.Code === "string") return candidate.Code;
  if (typeof candidate.name === "string" && candidate.name !== "Error" && candidate.name !== "TypeError") return candidate.name;
  return undefined;
}

/** The HTTP status of an SDK error, if it got an answer. */
export function httpStatusOf(error: unknown): number | undefined {
  const status = (error as { $metadata?: { httpStatusCode?: unknown } } | null)?.$metadata?.httpStatusCode;
  return typeof status === "number" ? status : undefined;
}

/** The message of anything thrown. */
export function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

const THROTTLING_CODES = new Set(["RequestLimitExceeded", "Throttling", "ThrottlingException", "TooManyRequestsException"]);
const CREDENTIAL_ERRORS = new Set(["CredentialsProviderError", "AuthFailure", "UnrecognizedClientException", "InvalidClientTokenId", "SignatureDoesNotMatch"]);

/** Whether an SDK error says the API was never reached. */
export function isConnectionError(error: unknown): boolean {
  return isUnreachable(error);
}

/** `RequestLimitExceeded: Request limit exceeded.`: AWS's code and message. */
function detailOf(error: unknown): string {
  const awsCode = awsErrorCode(error);
  return `${awsCode ? `${awsCode}: ` : ""}${messageOf(error)}`;
}

/** The AWS APIs the provider calls, as messages name them. */
export type AwsApi = "EC2" | "ELBv2" | "Secrets Manager" | "SSM";

/** The environment variable that sets each API's endpoint (the AWS SDKs' service-specific endpoint variables). */
const ENDPOINT_VARIABLES: Readonly<Record<AwsApi, string>> = {
  EC2: "AWS_ENDPOINT_URL_EC2",
  ELBv2: "AWS_ENDPOINT_URL_ELASTIC_LOAD_BALANCING_V2",
  "Secrets Manager": "AWS_ENDPOINT_URL_SECRETS_MANAGER",
  SSM: "AWS_ENDPOINT_URL_SSM",
};

/**
 * Turns an SDK error into a {@link KilnError} with core's error-mapping skeleton, its message saying
 * what to do next (`api` names the API in it: `EC2`, the default, `ELBv2`, `Secrets Manager` or `SSM`): `ABORTED` for a
 * cancelled call, `THROTTLED` (retryable) when AWS still throttled after the SDK's retries,
 * `PROVIDER_UNAVAILABLE` when the endpoint could not be reached or the credentials were refused,
 * else `code` with AWS's own error code and message. A KilnError passes through unchanged.
 * Messages never hold credentials: the SDK's errors do not carry them.
 */
export function awsError(error: unknown, code: ErrorCode, what: string, endpoint?: string, api: AwsApi = "EC2"): KilnError {
  const map = createErrorMapper({
    unavailable: (cause, doing) =>
      new KilnError(
        "PROVIDER_UNAVAILABLE",
        `${doing}: the ${api} API at ${endpoint ?? "AWS"} could not be reached (${detailOf(cause)}); check the network, AWS_REGION, and ${ENDPOINT_VARIABLES[api]} when you use an emulator.`,
        { cause, retryable: true },
      ),
    classify(cause, _code, doing) {
      const awsCode = awsErrorCode(cause);
      if (awsCode && THROTTLING_CODES.has(awsCode)) {
        return new KilnError("THROTTLED", `${doing}: AWS kept throttling the calls (${detailOf(cause)}) after the SDK's retries; wait a minute and try again, or raise KILN_AWS_MAX_ATTEMPTS.`, {
          cause,
          retryable: true,
        });
      }
      if (awsCode && CREDENTIAL_ERRORS.has(awsCode)) {
        return new KilnError("PROVIDER_UNAVAILABLE", `${doing}: AWS refused the credentials (${awsCode}); check the standard AWS credential chain (AWS_PROFILE, AWS_ACCESS_KEY_ID, SSO login).`, {
          cause,
        });
      }
      return undefined;
    },
    messageOf: detailOf,
    detailsOf: (cause) => {
      const awsCode = awsErrorCode(cause);
      return awsCode ? { awsCode } : {};
    },
    retryable: (cause) => {
      const status = httpStatusOf(cause);
      return status !== undefined && status >= 500;
    },
  });
  return map(error, code, what);
}
