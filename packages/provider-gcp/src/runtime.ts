/**
 * What every operation of the gcp provider shares: the clients and their one backoff, the project
 * and zone, the label filter Kiln lists by, the one aggregated instance list, and the one wait loop
 * per Compute Engine operation.
 * @module
 */
import type * as ComputeSdk from "@google-cloud/compute";
import { bulkhead } from "cockatiel";
import { KilnError, throwIfAborted, waitFor, type ErrorCode } from "@kilnjs/core";
import { GceClients, type GceClientsOptions } from "./client.js";
import { gceError, operationError } from "./errors.js";
import { GCE_LABEL_KEYS, encodeLabelValue } from "./labels.js";
import { GCP_ENVIRONMENT_VARIABLES } from "./options.js";

/** A Compute Engine `Operation` as the SDK returns it. */
export type GceOperation = ComputeSdk.protos.google.cloud.compute.v1.IOperation;
/** A Compute Engine `Instance` as the SDK returns it. */
export type GceInstance = ComputeSdk.protos.google.cloud.compute.v1.IInstance;
/** A Compute Engine `Image` as the SDK returns it. */
export type GceImage = ComputeSdk.protos.google.cloud.compute.v1.IImage;

/** Options of the gcp provider: see `createGcpProvider`. */
export interface GcpProviderOptions extends GceClientsOptions {
  /**
   * The project the provider's instances and images live in.
   * @defaultValue `GCLOUD_PROJECT`, `GOOGLE_CLOUD_PROJECT` or `CLOUDSDK_CORE_PROJECT`, else the
   *   project of the Application Default Credentials
   */
  readonly project?: string;
  /**
   * The zone instances are launched in when the release's `instances.gcp.zone` names none.
   * @defaultValue `CLOUDSDK_COMPUTE_ZONE`
   */
  readonly zone?: string;
  /**
   * How long one Compute Engine operation (an insert, a delete) may take before Kiln stops waiting
   * for it (milliseconds); it then fails with `TIMEOUT`. @defaultValue 600000
   */
  readonly operationTimeoutMs?: number;
  /** How many instance inserts or deletes of one call run at the same time. @defaultValue 16 */
  readonly concurrency?: number;
}

/** {@link GcpProviderOptions.operationTimeoutMs}'s default (milliseconds). */
export const DEFAULT_OPERATION_TIMEOUT_MS = 600_000;
/** {@link GcpProviderOptions.concurrency}'s default. */
export const DEFAULT_CONCURRENCY = 16;

/** Where an operation runs: a zone, or global (images). */
export type OperationScope = { readonly zone: string } | { readonly global: true };

/**
 * The shared state of one provider object: made once by `createGcpProvider`, with no I/O.
 */
export class GcpRuntime {
  readonly clients: GceClients;
  readonly operationTimeoutMs: number;
  readonly concurrency: number;
  readonly #project: string | undefined;
  readonly #zone: string | undefined;
  #resolvedProject: Promise<string> | undefined;

  /**
   * @throws KilnError INVALID_ARGUMENT for an endpoint that is not an http(s) URL or a number out of range
   */
  constructor(options: GcpProviderOptions = {}, env: NodeJS.ProcessEnv = process.env) {
    this.clients = new GceClients(options, env);
    this.operationTimeoutMs = positive("operationTimeoutMs", options.operationTimeoutMs ?? DEFAULT_OPERATION_TIMEOUT_MS);
    this.concurrency = positive("concurrency", options.concurrency ?? DEFAULT_CONCURRENCY);
    this.#project = options.project ?? firstOf(GCP_ENVIRONMENT_VARIABLES.project, env);
    this.#zone = options.zone ?? firstOf(GCP_ENVIRONMENT_VARIABLES.zone, env);
  }

  /** The endpoint override's URL, for messages. */
  get endpointUrl(): string | undefined {
    return this.clients.endpoint?.url;
  }

  /**
   * The provider's project: the option, the environment, else the credentials' project.
   * @throws KilnError PROVIDER_UNAVAILABLE when none is found
   */
  project(): Promise<string> {
    if (this.#project !== undefined) return Promise.resolve(this.#project);
    this.#resolvedProject ??= this.clients.projectId().catch((error: unknown) => {
      this.#resolvedProject = undefined;
      throw error;
    });
    return this.#resolvedProject;
  }

  /**
   * The zone a launch goes to: the release's, else the provider's.
   * @throws KilnError INVALID_ARGUMENT when neither names one
   */
  zone(fromRelease: string | undefined): string {
    const zone = fromRelease ?? this.#zone;
    if (zone === undefined) {
      throw new KilnError("INVALID_ARGUMENT", `The gcp provider needs a zone: set instances.gcp.zone in the spec, the provider's zone option, or ${GCP_ENVIRONMENT_VARIABLES.zone[0]}.`);
    }
    return zone;
  }

  /**
   * Every instance of the project that matches `filter`, across all zones, in ONE aggregated list
   * (`instances.aggregatedList`, the SDK following `nextPageToken`), through the shared backoff. A
   * throttled page starts the list again: it changes nothing.
   * @param limit - stop after this many instances (a ping reads one) @defaultValue all
   */
  async listInstances(filter: string, signal: AbortSignal, limit = Number.POSITIVE_INFINITY): Promise<Array<{ zone: string; instance: GceInstance }>> {
    const project = await this.project();
    const { instances } = await this.clients.clients();
    return this.clients.backoff.call(async () => {
      const found: Array<{ zone: string; instance: GceInstance }> = [];
      for await (const [scope, scoped] of instances.aggregatedListAsync({ project, filter, maxResults: Math.min(500, limit) }, { autoPaginate: false })) {
        const zone = scope.replace(/^zones\//, "");
        for (const instance of scoped.instances ?? []) found.push({ zone, instance });
        if (found.length >= limit) break;
      }
      return found;
    }, signal);
  }

  /**
   * Waits for one operation to end: ONE loop of `zoneOperations.wait` (or `globalOperations.wait`)
   * calls, each answering at `DONE` or after about two minutes, until `DONE`, at most
   * {@link GcpProviderOptions.operationTimeoutMs}. An operation that ends `DONE` with errors is a
   * failure: it throws {@link operationError}'s KilnError (`code`, or `THROTTLED`).
   * @throws KilnError `code` (with `details.operationErrors`), THROTTLED, TIMEOUT, ABORTED
   */
  async waitForOperation(started: GceOperation, scope: OperationScope, code: ErrorCode, what: string, signal: AbortSignal): Promise<GceOperation> {
    const project = await this.project();
    const clients = await this.clients.clients();
    let operation = started;
    const name = started.name;
    if (!name) throw new KilnError("INTERNAL", `${what}: Compute Engine answered without an operation name.`);
    if (operation.status !== "DONE") {
      operation = await waitFor(
        async () => {
          const [latest] = await this.clients.backoff.call(
            () => ("zone" in scope ? clients.zoneOperations.wait({ project, zone: scope.zone, operation: name }) : clients.globalOperations.wait({ project, operation: name })),
            signal,
          );
          return latest.status === "DONE" ? { done: true, value: latest } : { done: false, reason: `operation ${name} is ${String(latest.status)}` };
        },
        { timeoutMs: this.operationTimeoutMs, minDelayMs: 100, maxDelayMs: 1_000, signal, description: `${what} (operation ${name})` },
      );
    }
    const failed = operationError(operation, code, what);
    if (failed) throw failed;
    return operation;
  }

  /** {@link gceError} with this provider's endpoint. */
  error(error: unknown, code: ErrorCode, what: string): KilnError {
    return gceError(error, code, what, this.endpointUrl);
  }

  /** Closes the clients. */
  close(): Promise<void> {
    return this.clients.close();
  }
}

/**
 * A Compute Engine list filter that matches every label of `labels` (core's keys, mapped and
 * encoded as the provider writes them): `(labels.kiln-service = "web") AND (…)`.
 */
export function labelFilter(labels: Readonly<Record<string, string>>): string {
  return Object.entries(labels)
    .map(([key, value]) => `(labels.${(GCE_LABEL_KEYS as Readonly<Record<string, string>>)[key] ?? key} = "${encodeLabelValue(value)}")`)
    .join(" AND ");
}

/**
 * Runs `task` for each item, at most `limit` at a time (cockatiel's bulkhead), and rejects with
 * the first error once all have settled, so no call is left running behind a failure.
 */
export async function forEachLimited<T, R>(items: readonly T[], limit: number, task: (item: T) => Promise<R>, signal: AbortSignal): Promise<R[]> {
  const pool = bulkhead(limit, Number.POSITIVE_INFINITY);
  const results = await Promise.allSettled(
    items.map((item) =>
      pool.execute(() => {
        throwIfAborted(signal);
        return task(item);
      }),
    ),
  );
  const failure = results.find((result): result is PromiseRejectedResult => result.status === "rejected");
  if (failure) throw failure.reason;
  return results.map((result) => (result as PromiseFulfilledResult<R>).value);
}

function positive(what: string, value: number): number {
  if (!Number.isInteger(value) || value < 1) throw new KilnError("INVALID_ARGUMENT", `The gcp provider's ${what} must be a whole number of at least 1, not ${value}.`);
  return value;
}

function firstOf(names: readonly string[], env: NodeJS.ProcessEnv): string | undefined {
  for (const name of names) {
    const value = env[name]?.trim();
    if (value) return value;
  }
  return undefined;
}
