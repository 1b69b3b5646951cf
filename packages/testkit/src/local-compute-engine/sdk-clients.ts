import {
  BackendServicesClient,
  DisksClient,
  GlobalOperationsClient,
  ImagesClient,
  InstanceGroupsClient,
  InstancesClient,
  ZoneOperationsClient,
} from "@google-cloud/compute";
import { OAuth2Client } from "google-auth-library";
import { type LocalComputeEngine, type LocalComputeEngineOptions, startLocalComputeEngine } from "./server.js";

// Test support (not exported from the package): the official clients pointed at a local engine as
// ../shared/notes/cloud-sdk-endpoints.md says: { apiEndpoint: "127.0.0.1", port, protocol: "http",
// fallback: true, authClient } with an OAuth2Client holding a fake access token.

/** A local engine and one official client of each kind the tests use. */
export interface EngineWithClients {
  readonly engine: LocalComputeEngine;
  readonly instances: InstancesClient;
  readonly images: ImagesClient;
  readonly disks: DisksClient;
  readonly zoneOperations: ZoneOperationsClient;
  readonly globalOperations: GlobalOperationsClient;
  readonly instanceGroups: InstanceGroupsClient;
  readonly backendServices: BackendServicesClient;
  close(): Promise<void>;
}

/** The project the tests use. */
export const PROJECT = "kiln-test";
/** The zone most tests use, and a second one for cross-zone tests. */
export const ZONE = "us-central1-a";
/** The second zone the test engine serves. */
export const OTHER_ZONE = "us-central1-b";

/** Starts an engine (project {@link PROJECT}, zones {@link ZONE} and {@link OTHER_ZONE}) and the official clients pointed at it. */
export async function startWithClients(options: LocalComputeEngineOptions = {}): Promise<EngineWithClients> {
  const engine = await startLocalComputeEngine({ project: PROJECT, zones: [ZONE, OTHER_ZONE], ...options });
  const authClient = new OAuth2Client();
  authClient.setCredentials({ access_token: "fake-access-token", expiry_date: Date.now() + 3_600_000 });
  const clientOptions = { ...engine.clientOptions, authClient };
  const clients = {
    instances: new InstancesClient(clientOptions),
    images: new ImagesClient(clientOptions),
    disks: new DisksClient(clientOptions),
    zoneOperations: new ZoneOperationsClient(clientOptions),
    globalOperations: new GlobalOperationsClient(clientOptions),
    instanceGroups: new InstanceGroupsClient(clientOptions),
    backendServices: new BackendServicesClient(clientOptions),
  };
  return {
    engine,
    ...clients,
    async close() {
      await Promise.all(Object.values(clients).map((client) => client.close()));
      await engine.close();
    },
  };
}

/** The error body the server sent, read from an SDK error. */
export interface ApiErrorBody {
  code: number;
  message: string;
  status?: string;
  errors?: { domain: string; reason: string; message: string }[];
  details?: Record<string, unknown>[];
}

/**
 * Reads the server's error body from an error the SDK threw. gax 6.17+ keeps it at
 * `Symbol.for("google-gax.rawHttpResponsePayload")`; the version under @google-cloud/compute
 * 6.15.0 (google-gax 5.0.8) with a google-auth-library client rejects with the GaxiosError of
 * `authClient.fetch`, whose message is the body's text.
 */
export function apiErrorOf(error: unknown): ApiErrorBody {
  const raw = (error as Record<symbol, unknown>)[Symbol.for("google-gax.rawHttpResponsePayload")];
  const text = typeof raw === "string" ? raw : error instanceof Error ? error.message : String(error);
  return (JSON.parse(text) as { error: ApiErrorBody }).error;
}

/** Awaits a rejected promise and returns its error body. */
export async function rejectionOf(promise: Promise<unknown>): Promise<{ error: unknown; body: ApiErrorBody }> {
  try {
    await promise;
  } catch (error) {
    return { error, body: apiErrorOf(error) };
  }
  throw new Error("the call succeeded; the test expected an error");
}

/** A boot disk from the default Debian family, as a provider would send it. */
export const DEBIAN_BOOT_DISK = { boot: true, autoDelete: true, initializeParams: { sourceImage: "projects/debian-cloud/global/images/family/debian-12" } };

/** Calls `wait` until the operation is DONE (each `wait` answers within the engine's bound). */
export async function waitZoneOperation(clients: EngineWithClients, zone: string, operation: string | null | undefined, deadlineMs = 10_000) {
  const deadline = Date.now() + deadlineMs;
  for (;;) {
    const [done] = await clients.zoneOperations.wait({ project: PROJECT, zone, operation: operation! });
    if (done.status === "DONE") return done;
    if (Date.now() > deadline) throw new Error(`operation ${operation} still ${String(done.status)} after ${deadlineMs} ms`);
  }
}

/** Calls `wait` on a global operation until it is DONE. */
export async function waitGlobalOperation(clients: EngineWithClients, operation: string | null | undefined, deadlineMs = 10_000) {
  const deadline = Date.now() + deadlineMs;
  for (;;) {
    const [done] = await clients.globalOperations.wait({ project: PROJECT, operation: operation! });
    if (done.status === "DONE") return done;
    if (Date.now() > deadline) throw new Error(`operation ${operation} still ${String(done.status)} after ${deadlineMs} ms`);
  }
}

/** Inserts an instance and waits for its operation; returns the DONE operation. */
export async function insertInstance(clients: EngineWithClients, name: string, options: { zone?: string; labels?: Record<string, string>; requestId?: string; metadata?: Record<string, string>; autoDelete?: boolean } = {}) {
  const zone = options.zone ?? ZONE;
  const [operation] = await clients.instances.insert({
    project: PROJECT,
    zone,
    ...(options.requestId ? { requestId: options.requestId } : {}),
    instanceResource: {
      name,
      machineType: `zones/${zone}/machineTypes/e2-small`,
      labels: options.labels ?? {},
      disks: [{ ...DEBIAN_BOOT_DISK, autoDelete: options.autoDelete ?? true }],
      networkInterfaces: [{ subnetwork: "regions/us-central1/subnetworks/default" }],
      ...(options.metadata ? { metadata: { items: Object.entries(options.metadata).map(([key, value]) => ({ key, value })) } } : {}),
    },
  });
  return waitZoneOperation(clients, zone, operation.latestResponse.name);
}
