import { KilnError } from "@kilnjs/core";

/** Static AWS credentials; by default the standard AWS chain finds them (environment, profile, SSO, instance role). */
export interface AwsCredentials {
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
  readonly sessionToken?: string;
}

/** Options of {@link createAwsProvider}. Every field is optional. */
export interface AwsProviderOptions {
  /**
   * The AWS region.
   * @defaultValue `AWS_REGION`, else `AWS_DEFAULT_REGION`, else the shared config file's (the standard AWS chain)
   */
  readonly region?: string;
  /**
   * The EC2 endpoint, to point the provider at an emulator such as moto (`http://127.0.0.1:5000`).
   * @defaultValue `AWS_ENDPOINT_URL_EC2`, else `AWS_ENDPOINT_URL`, else AWS's own endpoint for the region
   */
  readonly endpoint?: string;
  /**
   * The Elastic Load Balancing v2 endpoint.
   * @defaultValue `AWS_ENDPOINT_URL_ELASTIC_LOAD_BALANCING_V2`, else {@link AwsProviderOptions.endpoint} when given, else AWS's own
   */
  readonly loadBalancingEndpoint?: string;
  /**
   * The Secrets Manager endpoint, for the secret store's `secretsManager` sources.
   * @defaultValue `AWS_ENDPOINT_URL_SECRETS_MANAGER`, else {@link AwsProviderOptions.endpoint} when given, else `AWS_ENDPOINT_URL`, else AWS's own
   */
  readonly secretsManagerEndpoint?: string;
  /**
   * The Systems Manager endpoint, for the secret store's `parameter` sources (Parameter Store).
   * @defaultValue `AWS_ENDPOINT_URL_SSM`, else {@link AwsProviderOptions.endpoint} when given, else `AWS_ENDPOINT_URL`, else AWS's own
   */
  readonly ssmEndpoint?: string;
  /** Credentials; never logged or recorded. @defaultValue the standard AWS credential chain */
  readonly credentials?: AwsCredentials;
  /**
   * How many times the SDK tries one API call in all, with its adaptive retry mode (exponential
   * backoff with jitter and a client-side rate limiter shared by every call of the provider), for
   * throttling (`RequestLimitExceeded`) and transient errors.
   * @defaultValue `KILN_AWS_MAX_ATTEMPTS`, else 8
   */
  readonly maxAttempts?: number;
  /**
   * Time between two describe calls while waiting for instances, images or targets (milliseconds);
   * waits back off from it up to 8 times it.
   * @defaultValue `KILN_AWS_POLL_INTERVAL_MS`, else 5000
   */
  readonly pollIntervalMs?: number;
  /**
   * How long the provider waits for launched instances to run, or terminated ones to be gone (milliseconds).
   * @defaultValue 600000 (10 minutes)
   */
  readonly instanceTimeoutMs?: number;
}

/** {@link AwsProviderOptions} with the environment and defaults applied. */
export interface ResolvedAwsOptions {
  readonly region: string | undefined;
  readonly endpoint: string | undefined;
  readonly loadBalancingEndpoint: string | undefined;
  readonly secretsManagerEndpoint: string | undefined;
  readonly ssmEndpoint: string | undefined;
  readonly credentials: AwsCredentials | undefined;
  readonly maxAttempts: number;
  readonly pollIntervalMs: number;
  readonly instanceTimeoutMs: number;
}

/** The default attempts per API call (first try included). */
export const DEFAULT_MAX_ATTEMPTS = 8;
/** The default time between describe calls while waiting (milliseconds). */
export const DEFAULT_POLL_INTERVAL_MS = 5_000;

/**
 * Applies environment variables and defaults to the options.
 * @throws KilnError INVALID_ARGUMENT for an endpoint (any of the four) that is not an http(s) URL, or a number option out of range
 */
export function resolveAwsOptions(options: AwsProviderOptions = {}, env: NodeJS.ProcessEnv = process.env): ResolvedAwsOptions {
  const endpoint = options.endpoint ?? nonEmpty(env.AWS_ENDPOINT_URL_EC2) ?? nonEmpty(env.AWS_ENDPOINT_URL);
  // Another API's endpoint: its own option, its own variable, else the EC2 endpoint given in code, else the common variable.
  const serviceEndpoint = (option: string | undefined, variable: string | undefined) => option ?? nonEmpty(variable) ?? options.endpoint ?? nonEmpty(env.AWS_ENDPOINT_URL);
  const loadBalancingEndpoint = serviceEndpoint(options.loadBalancingEndpoint, env.AWS_ENDPOINT_URL_ELASTIC_LOAD_BALANCING_V2);
  const secretsManagerEndpoint = serviceEndpoint(options.secretsManagerEndpoint, env.AWS_ENDPOINT_URL_SECRETS_MANAGER);
  const ssmEndpoint = serviceEndpoint(options.ssmEndpoint, env.AWS_ENDPOINT_URL_SSM);
  for (const [name, value] of [
    ["endpoint", endpoint],
    ["loadBalancingEndpoint", loadBalancingEndpoint],
    ["secretsManagerEndpoint", secretsManagerEndpoint],
    ["ssmEndpoint", ssmEndpoint],
  ] as const) {
    if (value !== undefined && !/^https?:\/\/[^\s/]+/.test(value)) {
      throw new KilnError("INVALID_ARGUMENT", `The aws provider's ${name} "${value}" is not an http(s) URL; write e.g. http://127.0.0.1:5000.`);
    }
  }
  const number = (name: string, value: number | undefined, envName: string, fallback: number, least: number): number => {
    const text = nonEmpty(env[envName]);
    const chosen = value ?? (text !== undefined ? Number(text) : fallback);
    if (!Number.isInteger(chosen) || chosen < least) {
      throw new KilnError("INVALID_ARGUMENT", `The aws provider's ${value !== undefined ? name : envName} must be a whole number of at least ${least} (got ${value ?? text}).`);
    }
    return chosen;
  };
  return {
    region: options.region ?? nonEmpty(env.AWS_REGION) ?? nonEmpty(env.AWS_DEFAULT_REGION),
    endpoint,
    loadBalancingEndpoint,
    secretsManagerEndpoint,
    ssmEndpoint,
    credentials: options.credentials,
    maxAttempts: number("maxAttempts", options.maxAttempts, "KILN_AWS_MAX_ATTEMPTS", DEFAULT_MAX_ATTEMPTS, 1),
    pollIntervalMs: number("pollIntervalMs", options.pollIntervalMs, "KILN_AWS_POLL_INTERVAL_MS", DEFAULT_POLL_INTERVAL_MS, 10),
    instanceTimeoutMs: number("instanceTimeoutMs", options.instanceTimeoutMs, "KILN_AWS_INSTANCE_TIMEOUT_MS", 600_000, 1_000),
  };
}

function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value.trim() === "" ? undefined : value.trim();
}
