import type * as Ec2Sdk from "@aws-sdk/client-ec2";
import type { EC2Client } from "@aws-sdk/client-ec2";
import type * as LoadBalancingSdk from "@aws-sdk/client-elastic-load-balancing-v2";
import type { ElasticLoadBalancingV2Client } from "@aws-sdk/client-elastic-load-balancing-v2";
import { KilnError, createErrorMapper, isConnectionError as isUnreachable, type ErrorCode } from "@kilnjs/core";
import type { ResolvedAwsOptions } from "./options.js";

/** The EC2 SDK module, loaded on first use. */
export type Ec2Module = typeof Ec2Sdk;
/** The ELBv2 SDK module, loaded on first use. */
export type LoadBalancingModule = typeof LoadBalancingSdk;

/**
 * Loads the AWS SDK clients on first use and keeps one of each: importing the provider costs
 * almost nothing, and every operation of a provider shares one client, so the SDK's adaptive
 * retry mode has one client-side rate limiter for all of them.
 */
export class AwsClients {
  #ec2: Promise<{ sdk: Ec2Module; client: EC2Client }> | undefined;
  #elb: Promise<{ sdk: LoadBalancingModule; client: ElasticLoadBalancingV2Client }> | undefined;

  constructor(readonly options: ResolvedAwsOptions) {}

  /** The EC2 module and client. */
  ec2(): Promise<{ sdk: Ec2Module; client: EC2Client }> {
    this.#ec2 ??= import("@aws-sdk/client-ec2").then(
      (sdk) => ({ sdk, client: new sdk.EC2Client(this.#config(this.options.endpoint)) }),
      (error: unknown) => {
        this.#ec2 = undefined;
        throw new KilnError("INTERNAL", `Loading @aws-sdk/client-ec2 failed: ${messageOf(error)}`, { cause: error });
      },
    );
    return this.#ec2;
  }

  /** The ELBv2 module and client. */
  loadBalancing(): Promise<{ sdk: LoadBalancingModule; client: ElasticLoadBalancingV2Client }> {
    this.#elb ??= import("@aws-sdk/client-elastic-load-balancing-v2").then(
      (sdk) => ({ sdk, client: new sdk.ElasticLoadBalancingV2Client(this.#config(this.options.loadBalancingEndpoint)) }),
      (error: unknown) => {
        this.#elb = undefined;
        throw new KilnError("INTERNAL", `Loading @aws-sdk/client-elastic-load-balancing-v2 failed: ${messageOf(error)}`, { cause: error });
      },
    );
    return this.#elb;
  }

  /** Closes the clients' connections. */
  async close(): Promise<void> {
    const [ec2, elb] = await Promise.allSettled([this.#ec2, this.#elb]);
    if (ec2.status === "fulfilled") ec2.value?.client.destroy();
    if (elb.status === "fulfilled") elb.value?.client.destroy();
    this.#ec2 = undefined;
    this.#elb = undefined;
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

/**
 * Turns an SDK error into a {@link KilnError} with core's error-mapping skeleton, its message saying
 * what to do next (`api` names the API in it: `EC2`, the default, or `ELBv2`): `ABORTED` for a
 * cancelled call, `THROTTLED` (retryable) when AWS still throttled after the SDK's retries,
 * `PROVIDER_UNAVAILABLE` when the endpoint could not be reached or the credentials were refused,
 * else `code` with AWS's own error code and message. A KilnError passes through unchanged.
 * Messages never hold credentials: the SDK's errors do not carry them.
 */
export function awsError(error: unknown, code: ErrorCode, what: string, endpoint?: string, api = "EC2"): KilnError {
  const map = createErrorMapper({
    unavailable: (cause, doing) =>
      new KilnError(
        "PROVIDER_UNAVAILABLE",
        `${doing}: the ${api} API at ${endpoint ?? "AWS"} could not be reached (${detailOf(cause)}); check the network, AWS_REGION, and ${api === "EC2" ? "AWS_ENDPOINT_URL_EC2" : "AWS_ENDPOINT_URL_ELASTIC_LOAD_BALANCING_V2"} when you use an emulator.`,
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
