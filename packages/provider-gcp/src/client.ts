import type * as ComputeSdk from "@google-cloud/compute";
import type { AuthClient, GoogleAuth } from "google-auth-library";
import { KilnError } from "@kilnjs/core";
import { GceBackoff, type GceBackoffOptions } from "./backoff.js";
import { GCP_ENVIRONMENT_VARIABLES, resolveGceEndpoint, type GceEndpoint } from "./options.js";

/** The `@google-cloud/compute` module, loaded on first use. */
export type ComputeModule = typeof ComputeSdk;

/** The options every client is made with. */
type ClientOptions = NonNullable<ConstructorParameters<ComputeModule["InstancesClient"]>[0]>;

/**
 * An auth object of this package's google-auth-library (10.9.1) as google-gax's types want it:
 * google-gax 5.0.8 pins google-auth-library 10.5.0, whose classes have other private members, so
 * TypeScript sees two types. google-gax uses the object by duck typing (`getClient`,
 * `getRequestHeaders`, `fetch`), which both versions have; client.test.ts proves the SDK sends
 * its token.
 */
function forGax<T>(auth: AuthClient | GoogleAuth): T {
  return auth as unknown as T;
}

/**
 * The auth object with a deadline on every request: google-gax sends each REST request through
 * the auth object's `fetch`, so this is where a request that gets no answer can be ended. The
 * request's own signal (google-gax's cancel) still works; past `timeoutMs` the request fails with
 * `TIMEOUT`, retryable. Everything else of the auth object is left as it is.
 */
function withCallDeadline<A extends AuthClient | GoogleAuth>(auth: A, timeoutMs: number): A {
  const fetchWithDeadline = async (input: unknown, init: { signal?: AbortSignal } = {}): Promise<unknown> => {
    const deadline = AbortSignal.timeout(timeoutMs);
    try {
      return await (auth.fetch as (input: unknown, init: object) => Promise<unknown>)(input, { ...init, signal: init.signal ? AbortSignal.any([init.signal, deadline]) : deadline });
    } catch (error) {
      if (!deadline.aborted || init.signal?.aborted) throw error;
      throw new KilnError("TIMEOUT", `A Compute Engine request got no answer within ${timeoutMs} ms and was ended; it is tried again with the same request id.`, { cause: error, retryable: true });
    }
  };
  return new Proxy(auth, {
    get(target, key) {
      if (key === "fetch") return fetchWithDeadline;
      const value: unknown = Reflect.get(target, key, target);
      return typeof value === "function" ? (value as (...args: unknown[]) => unknown).bind(target) : value;
    },
  });
}

/** The OAuth scope the clients ask Application Default Credentials for. */
export const GCE_AUTH_SCOPES: readonly string[] = ["https://www.googleapis.com/auth/cloud-platform"];
/** The access token sent to an endpoint override (a local Compute Engine checks none). */
export const LOCAL_ACCESS_TOKEN = "kiln-local-token";

/** Options of {@link GceClients}. */
export interface GceClientsOptions {
  /**
   * A Compute Engine endpoint to use instead of Google's, such as a local Compute Engine at
   * `http://127.0.0.1:8085`. With one, the clients speak plain HTTP/1.1 REST to it and send a fixed
   * access token, so no Google credentials are needed.
   * @defaultValue `CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE`, else Google's endpoint
   */
  readonly endpoint?: string;
  /**
   * The credentials: an auth client of google-auth-library (for example from a service account key
   * you hold in code). Never logged or recorded.
   * @defaultValue with an endpoint, a client holding {@link LOCAL_ACCESS_TOKEN}; else Application
   *   Default Credentials (GOOGLE_APPLICATION_CREDENTIALS, gcloud's application-default login, the
   *   metadata server), with the cloud-platform scope
   */
  readonly authClient?: AuthClient;
  /** The backoff every call shares; see {@link GceBackoff}. */
  readonly backoff?: GceBackoffOptions;
  /**
   * How long one HTTP request of the SDK may take before Kiln ends it (milliseconds): the pinned
   * SDK's own per-call `timeout` does not end a request that gets no answer. A request ended so
   * fails with `TIMEOUT` (retryable: a mutating call repeats its `requestId`). Above the ~2 minutes
   * an `operations.wait` call may hold. @defaultValue 150000
   */
  readonly callTimeoutMs?: number;
}

/** {@link GceClientsOptions.callTimeoutMs}'s default (milliseconds). */
export const DEFAULT_CALL_TIMEOUT_MS = 150_000;

/** The Compute Engine clients the provider uses, by what they manage. */
export interface GceClientSet {
  readonly instances: ComputeSdk.InstancesClient;
  readonly images: ComputeSdk.ImagesClient;
  readonly disks: ComputeSdk.DisksClient;
  readonly instanceGroups: ComputeSdk.InstanceGroupsClient;
  readonly backendServices: ComputeSdk.BackendServicesClient;
  readonly regionBackendServices: ComputeSdk.RegionBackendServicesClient;
  readonly zoneOperations: ComputeSdk.ZoneOperationsClient;
  readonly globalOperations: ComputeSdk.GlobalOperationsClient;
  readonly regionOperations: ComputeSdk.RegionOperationsClient;
}

/**
 * Loads `@google-cloud/compute` and google-auth-library on the first call that needs Compute
 * Engine, and keeps one of each client (REST transport, `fallback: true`) for every operation of
 * a provider, with one {@link GceBackoff} they all share. Importing the provider costs almost
 * nothing; the SDK costs about 1.2 s to load.
 *
 * Credentials: Application Default Credentials through google-auth-library's chain, unless an
 * `authClient` is given; with an endpoint override, a fixed token (a local Compute Engine).
 */
export class GceClients {
  /** Every Compute Engine call of the provider goes through this, so they share one retry budget. */
  readonly backoff: GceBackoff;
  /** The endpoint override, when there is one. */
  readonly endpoint: GceEndpoint | undefined;
  readonly #authClient: AuthClient | undefined;
  readonly #callTimeoutMs: number;
  #loaded: Promise<{ sdk: ComputeModule; clients: GceClientSet; auth: GoogleAuth | undefined }> | undefined;

  /**
   * Reads the options and the endpoint variable; loads nothing.
   * @throws KilnError INVALID_ARGUMENT for an endpoint that is not an http(s) URL
   */
  constructor(options: GceClientsOptions = {}, env: NodeJS.ProcessEnv = process.env) {
    this.endpoint = resolveGceEndpoint(options.endpoint, env);
    this.#authClient = options.authClient;
    this.backoff = new GceBackoff(options.backoff);
    const callTimeoutMs = options.callTimeoutMs ?? DEFAULT_CALL_TIMEOUT_MS;
    if (!Number.isInteger(callTimeoutMs) || callTimeoutMs < 1) throw new KilnError("INVALID_ARGUMENT", `callTimeoutMs must be a whole number of milliseconds of at least 1, not ${callTimeoutMs}.`);
    this.#callTimeoutMs = callTimeoutMs;
  }

  /** Whether the SDK has been asked for yet (for tests that prove it loads lazily). */
  get loaded(): boolean {
    return this.#loaded !== undefined;
  }

  /**
   * The clients, made on the first call; a failed load is tried again on the next call.
   * @throws KilnError INTERNAL when the SDK cannot be loaded
   */
  clients(): Promise<GceClientSet> {
    return this.#load().then((loaded) => loaded.clients);
  }

  /**
   * The project of the credentials (google-auth-library's `getProjectId()`: GCLOUD_PROJECT,
   * GOOGLE_CLOUD_PROJECT, the credentials file, gcloud's configuration, the metadata server), for
   * a spec and environment that name none.
   * @throws KilnError PROVIDER_UNAVAILABLE when none is found
   */
  async projectId(): Promise<string> {
    const { auth } = await this.#load();
    const found = await auth?.getProjectId().catch(() => undefined);
    if (found) return found;
    throw new KilnError(
      "PROVIDER_UNAVAILABLE",
      `The gcp provider has no project: set instances.gcp.project (and image.machine.builder.gcp.project) in the spec, or ${GCP_ENVIRONMENT_VARIABLES.project.join(" or ")}.`,
    );
  }

  /** Closes the clients' connections, if they were made. */
  async close(): Promise<void> {
    const loaded = this.#loaded;
    this.#loaded = undefined;
    const settled = await loaded?.catch(() => undefined);
    if (settled) await Promise.all(Object.values(settled.clients).map((client: { close(): Promise<void> }) => client.close()));
  }

  #load(): Promise<{ sdk: ComputeModule; clients: GceClientSet; auth: GoogleAuth | undefined }> {
    this.#loaded ??= this.#make().catch((error: unknown) => {
      this.#loaded = undefined;
      throw new KilnError("INTERNAL", `Loading @google-cloud/compute failed: ${error instanceof Error ? error.message : String(error)}`, { cause: error });
    });
    return this.#loaded;
  }

  async #make(): Promise<{ sdk: ComputeModule; clients: GceClientSet; auth: GoogleAuth | undefined }> {
    const [sdk, authLibrary] = await Promise.all([import("@google-cloud/compute"), import("google-auth-library")]);
    let auth: GoogleAuth | undefined;
    let options: ClientOptions;
    if (this.endpoint) {
      const local = this.#authClient ?? new authLibrary.OAuth2Client();
      if (!this.#authClient) local.setCredentials({ access_token: LOCAL_ACCESS_TOKEN });
      // What reaches a plain-HTTP server: host and port apart, http, the REST transport.
      options = { apiEndpoint: this.endpoint.apiEndpoint, port: this.endpoint.port, protocol: this.endpoint.protocol, fallback: true, authClient: forGax(withCallDeadline(local, this.#callTimeoutMs)) };
    } else if (this.#authClient) {
      options = { fallback: true, authClient: forGax(withCallDeadline(this.#authClient, this.#callTimeoutMs)) };
    } else {
      auth = new authLibrary.GoogleAuth({ scopes: [...GCE_AUTH_SCOPES] });
      options = { fallback: true, auth: forGax(withCallDeadline(auth, this.#callTimeoutMs)) };
    }
    const clients: GceClientSet = {
      instances: new sdk.InstancesClient(options),
      images: new sdk.ImagesClient(options),
      disks: new sdk.DisksClient(options),
      instanceGroups: new sdk.InstanceGroupsClient(options),
      backendServices: new sdk.BackendServicesClient(options),
      regionBackendServices: new sdk.RegionBackendServicesClient(options),
      zoneOperations: new sdk.ZoneOperationsClient(options),
      globalOperations: new sdk.GlobalOperationsClient(options),
      regionOperations: new sdk.RegionOperationsClient(options),
    };
    return { sdk, clients, auth };
  }
}
