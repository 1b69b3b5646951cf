import {
  KilnError,
  isKilnError,
  keepLease,
  toKilnError,
  type DeploymentQueue,
  type DeploymentRecord,
  type FinalDeploymentState,
  type Kiln,
  type KilnEvent,
  type LoadedSpec,
  type Logger,
} from "@kilnjs/core";
import type { Metrics } from "./metrics.js";
import type { PathHider } from "./paths.js";

/** Options of {@link startRunner}. */
export interface RunnerOptions {
  /** The queue deployments are claimed from (shared by every replica). */
  readonly store: DeploymentQueue;
  readonly kiln: Kiln;
  /** This replica's id: the worker in claims, and in logs. */
  readonly replicaId: string;
  /** How long a claim's lease lasts unless renewed (milliseconds); renewed every third of it (core's `keepLease`). */
  readonly claimLeaseMs: number;
  /** How often an idle runner looks for queued deployments (milliseconds); a new request wakes it at once. */
  readonly pollIntervalMs: number;
  /** How many deployments (of different targets) one replica runs at once. */
  readonly concurrency: number;
  /**
   * How long a taken-over deployment waits for the dead replica's target lock to lapse
   * (milliseconds): the state store's lease TTL and a margin.
   */
  readonly lockWaitMs: number;
  /** Turns a deployment's request into a loaded spec (a posted spec, or a registered service's file). */
  loadSpec(record: DeploymentRecord): Promise<LoadedSpec>;
  readonly logger: Logger;
  readonly metrics: Metrics;
  /**
   * What rewrites the server's own folders in a deployment's stored events and error (the spec's
   * root for its paths, the data folder): API callers read them. Logs keep the absolute paths.
   */
  pathsOf(record: DeploymentRecord): PathHider;
}

/** A running runner. */
export interface Runner {
  /** Looks for queued deployments now (after a request was accepted). */
  wake(): void;
  /**
   * Stops claiming, waits up to `graceMs` (milliseconds) for the deployments it runs to finish,
   * then cancels those still running (they roll back, as on Ctrl-C) and waits for them.
   */
  stop(graceMs?: number): Promise<void>;
  /** How many deployments it runs now. */
  readonly running: number;
}

/** How often buffered events are written to the store (milliseconds). */
const EVENT_FLUSH_MS = 100;

/**
 * Starts the loop that claims deployments from the shared {@link DeploymentQueue} and runs them
 * with core, one per target, up to `concurrency` at once. A claim is a lease kept alive by core's
 * `keepLease` (renewed every third of `claimLeaseMs`; a renewal also brings a cancel request); a
 * replica that dies stops renewing, and another replica's runner claims the
 * deployment again and first resumes the interrupted rollout from its journal (`resumeRollout`:
 * finishes it, or rolls it back when its health gate fails) before anything else.
 */
export function startRunner(options: RunnerOptions): Runner {
  const { store, kiln, replicaId, logger } = options;
  const active = new Map<string, AbortController>();
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let looking = false;
  const finished: Array<Promise<void>> = [];

  async function look(): Promise<void> {
    if (stopped || looking) return;
    looking = true;
    try {
      while (!stopped && active.size < options.concurrency) {
        const record = await store.claim(replicaId, options.claimLeaseMs);
        if (!record) break;
        const done = run(record).catch((error: unknown) => logger.error("deployment runner failed", { deploymentId: record.id, error: String(error) }));
        finished.push(done);
        void done.finally(() => {
          void finished.splice(finished.indexOf(done), 1);
          schedule(0);
        });
      }
    } catch (error) {
      logger.error("could not claim deployments", { error: String(error) });
    } finally {
      looking = false;
    }
  }

  function schedule(delayMs: number): void {
    if (stopped) return;
    if (timer) clearTimeout(timer);
    timer = setTimeout(() => {
      timer = undefined;
      void look().finally(() => schedule(options.pollIntervalMs));
    }, delayMs);
    timer.unref();
  }

  async function run(record: DeploymentRecord): Promise<void> {
    const controller = new AbortController();
    active.set(record.id, controller);
    const paths = options.pathsOf(record);
    const startedAt = Date.now();
    const buffer: KilnEvent[] = [];
    let flushing: Promise<unknown> = Promise.resolve();
    const flush = () => {
      if (buffer.length === 0) return flushing;
      const batch = buffer.splice(0, buffer.length).map((event) => paths.value(event));
      flushing = flushing.then(() => store.appendEvents(record.id, batch)).catch((error: unknown) => logger.error("could not store events", { deploymentId: record.id, error: String(error) }));
      return flushing;
    };
    const flusher = setInterval(() => void flush(), EVENT_FLUSH_MS);
    flusher.unref();
    // The claim is a lease: renewed by core's keepLease, whose signal aborts with LOCK_LOST when a
    // renewal finds the deployment taken over; each renewal also brings a cancel request.
    const claim = keepLease({
      ttlMs: options.claimLeaseMs,
      expiresAt: record.leaseExpiresAt ?? new Date(Date.now() + options.claimLeaseMs).toISOString(),
      minIntervalMs: 50,
      renew: async () => {
        const renewed = await store.renew(record.id, replicaId, options.claimLeaseMs);
        if (!renewed) throw new KilnError("LOCK_LOST", `Deployment ${record.id} was taken over by another replica.`);
        if (renewed.cancelRequested && !controller.signal.aborted) controller.abort(new KilnError("ABORTED", "Cancelled through the API."));
        return renewed.leaseExpiresAt ?? new Date(Date.now() + options.claimLeaseMs).toISOString();
      },
      onLost: (error) => controller.abort(error),
      onRenewalFailed: (error) => logger.warn("could not renew a deployment claim", { deploymentId: record.id, error: String(error) }),
    });
    const onEvent = (event: KilnEvent) => buffer.push(event);
    logger.info("deployment started", { deploymentId: record.id, target: `${record.target.service}@${record.target.environment}`, kind: record.kind, attempt: record.attempts });
    let state: FinalDeploymentState = "failed";
    let result: DeploymentRecord["result"];
    let error: DeploymentRecord["error"];
    /** The error's message as core gave it, for the log (the record's hides the server's folders). */
    let loggedMessage: string | undefined;
    try {
      if (record.cancelRequested) throw new KilnError("ABORTED", "Cancelled through the API.");
      const target = record.target;
      if (record.attempts > 1) {
        // Taken over: the replica that ran it died. Its rollout is journaled in the state store:
        // finish it (or roll it back) first, once the dead replica's lease lapses.
        const recovered = await kiln.resumeRollout({ target, signal: controller.signal, onEvent, waitForLockMs: options.lockWaitMs });
        if (recovered.result) {
          state = recovered.result.outcome === "deployed" ? "succeeded" : "unchanged";
          result = { release: recovered.result.release.number, ...(recovered.result.rollout ? { rolloutId: recovered.result.rollout.id } : {}) };
          return;
        }
      }
      const outcome =
        record.kind === "rollback"
          ? await kiln.rollback({ target, ...(record.request.release !== undefined ? { release: record.request.release } : {}), signal: controller.signal, onEvent, waitForLockMs: options.lockWaitMs })
          : await kiln.deploy({ spec: await options.loadSpec(record), environment: record.request.environment, signal: controller.signal, onEvent, waitForLockMs: options.lockWaitMs });
      state = outcome.outcome === "deployed" ? "succeeded" : "unchanged";
      result = { release: outcome.release.number, ...(outcome.rollout ? { rolloutId: outcome.rollout.id } : {}) };
    } catch (thrown) {
      const kilnError = isKilnError(thrown) ? thrown : toKilnError(thrown, "INTERNAL", "The deployment failed");
      state = kilnError.code === "ABORTED" && !claim.signal.aborted ? "cancelled" : "failed";
      error = { code: kilnError.code, message: paths.text(kilnError.message) };
      loggedMessage = kilnError.message;
      if (kilnError.code === "INTERNAL") logger.error("deployment failed with an internal error", { deploymentId: record.id, error: String(thrown) });
    } finally {
      const held = await claim.stop();
      clearInterval(flusher);
      await flush();
      active.delete(record.id);
      if (!held) {
        logger.warn("deployment taken over by another replica; this one stopped", { deploymentId: record.id });
      } else {
        await store.finish(record.id, replicaId, { state, ...(result ? { result } : {}), ...(error ? { error } : {}) });
        options.metrics.rollouts.inc({ kind: record.kind, outcome: state });
        options.metrics.rolloutSeconds.observe({ kind: record.kind, outcome: state }, (Date.now() - startedAt) / 1000);
        if (error && /PROVIDER_UNAVAILABLE|THROTTLED|LAUNCH_FAILED|TERMINATE_FAILED|BUILD_FAILED/.test(error.code)) options.metrics.providerErrors.inc({ code: error.code });
        logger.info("deployment finished", { deploymentId: record.id, state, ...(error ? { code: error.code, message: loggedMessage } : {}), durationMs: Date.now() - startedAt });
      }
    }
  }

  schedule(0);
  return {
    wake: () => schedule(0),
    get running() {
      return active.size;
    },
    async stop(graceMs = 0) {
      stopped = true;
      if (timer) clearTimeout(timer);
      if (graceMs > 0 && finished.length > 0) {
        logger.info("waiting for running deployments before shutting down", { running: active.size, graceMs });
        let expired: NodeJS.Timeout | undefined;
        await Promise.race([Promise.allSettled([...finished]), new Promise((resolve) => (expired = setTimeout(resolve, graceMs)))]);
        clearTimeout(expired);
      }
      for (const controller of active.values()) controller.abort(new KilnError("ABORTED", `The server replica ${replicaId} shut down before the deployment ended (raise --shutdown-grace to let it finish).`));
      await Promise.allSettled([...finished]);
    },
  };
}
