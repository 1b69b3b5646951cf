import { KilnError, sleep, type ErrorCode } from "@kilnjs/core";

/** The operations of the in-memory provider that faults can target. */
export type MemoryOperation = "ping" | "build" | "find" | "listImages" | "removeImage" | "launch" | "list" | "terminate" | "probe";

/** Every {@link MemoryOperation}, in a stable order. */
export const MEMORY_OPERATIONS: readonly MemoryOperation[] = ["ping", "build", "find", "listImages", "removeImage", "launch", "list", "terminate", "probe"];

/**
 * How long an operation waits before it does anything, in milliseconds: a fixed delay, or a
 * delay drawn uniformly from `[minMs, maxMs]` with the provider's `random`.
 */
export type LatencyFault = number | { readonly minMs: number; readonly maxMs: number };

/** What a fault decision knows about the call it decides for. */
export interface FaultCall {
  readonly operation: MemoryOperation;
  /** 1 for the first call of this operation on this provider object, then 2, 3, … */
  readonly callNumber: number;
  /** The service the call is about, when it names one (every operation but `ping`). */
  readonly service?: string;
}

/** Makes calls fail with a {@link KilnError}. */
export interface ErrorFault {
  /**
   * Which calls fail: a probability from 0 to 1 per call (drawn with the provider's `random`), or
   * a function that returns true for a call that must fail.
   */
  readonly when: number | ((call: FaultCall) => boolean);
  /** The error's code. @defaultValue "PROVIDER_UNAVAILABLE" */
  readonly code?: ErrorCode;
  /** Whether the error says a retry may succeed. @defaultValue true for PROVIDER_UNAVAILABLE, else false */
  readonly retryable?: boolean;
  /** The error's message. @defaultValue "Injected fault: <operation> failed (<code>)." */
  readonly message?: string;
  /**
   * `before`: the call fails and changes nothing. `after`: the call takes effect (the image is
   * built, the instances are started, the image removed), then the caller sees the error, like a
   * response lost on the way back. For read-only operations both are the same.
   * @defaultValue "before"
   */
  readonly phase?: "before" | "after";
}

/**
 * Throttles calls: they fail before taking effect with a retryable `PROVIDER_UNAVAILABLE` whose
 * `details` are `{ reason: "throttled", operation, retryAfterMs }`. Core has no `THROTTLED` code.
 */
export interface ThrottleFault {
  /** Throttle every Nth call of the operation (N, 2N, 3N, …; counted per operation). */
  readonly everyNth?: number;
  /** Throttle each call with this probability (0 to 1), drawn with the provider's `random`. */
  readonly rate?: number;
  /** The delay the error suggests before a retry, in milliseconds (in `details.retryAfterMs`). @defaultValue 100 */
  readonly retryAfterMs?: number;
}

/** The faults of one operation. Each field is checked in this order: latency, throttle, error. */
export interface OperationFaults {
  readonly latencyMs?: LatencyFault;
  readonly throttle?: ThrottleFault;
  readonly error?: ErrorFault;
}

/**
 * Fault injection for the in-memory provider. A field set for one operation in `operations`
 * replaces the same field of `all` for that operation; other fields of `all` still apply.
 *
 * @example
 * ```ts
 * createMemoryProvider({
 *   faults: {
 *     random: seededRandom(42),
 *     all: { latencyMs: { minMs: 5, maxMs: 20 } },
 *     operations: { launch: { throttle: { everyNth: 3 } }, terminate: { error: { when: 0.1 } } },
 *   },
 * });
 * ```
 */
export interface FaultOptions {
  /** Faults of every operation (`ping` and `probe` included). */
  readonly all?: OperationFaults;
  /** Faults of single operations; they replace the same fields of `all`. */
  readonly operations?: Partial<Record<MemoryOperation, OperationFaults>>;
  /**
   * The random source for rates and latency ranges, returning numbers in `[0, 1)`.
   * @defaultValue `seededRandom(1)`: the same sequence on every run
   */
  readonly random?: () => number;
}

/**
 * A deterministic random source (mulberry32): the same seed gives the same sequence of numbers in
 * `[0, 1)`. Pass it as {@link FaultOptions.random} to make rate-based faults repeatable.
 * @param seed - any integer
 */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

/** Checks fault options; every problem at once. @throws KilnError INVALID_ARGUMENT */
export function validateFaults(faults: FaultOptions): void {
  const problems: string[] = [];
  const checkRate = (where: string, rate: number) => {
    if (!(rate >= 0 && rate <= 1)) problems.push(`${where} must be between 0 and 1, not ${rate}`);
  };
  const checkOne = (where: string, entry: OperationFaults | undefined) => {
    if (!entry) return;
    const { latencyMs, throttle, error } = entry;
    if (typeof latencyMs === "number") {
      if (!(latencyMs >= 0)) problems.push(`${where}.latencyMs must be 0 or more, not ${latencyMs}`);
    } else if (latencyMs) {
      if (!(latencyMs.minMs >= 0 && latencyMs.maxMs >= latencyMs.minMs)) {
        problems.push(`${where}.latencyMs needs 0 <= minMs <= maxMs, not ${latencyMs.minMs}..${latencyMs.maxMs}`);
      }
    }
    if (throttle?.everyNth !== undefined && !(Number.isInteger(throttle.everyNth) && throttle.everyNth >= 1)) {
      problems.push(`${where}.throttle.everyNth must be a whole number of 1 or more, not ${throttle.everyNth}`);
    }
    if (throttle?.rate !== undefined) checkRate(`${where}.throttle.rate`, throttle.rate);
    if (typeof error?.when === "number") checkRate(`${where}.error.when`, error.when);
  };
  checkOne("faults.all", faults.all);
  for (const [operation, entry] of Object.entries(faults.operations ?? {})) {
    if (!MEMORY_OPERATIONS.includes(operation as MemoryOperation)) problems.push(`faults.operations.${operation} is not an operation (${MEMORY_OPERATIONS.join(", ")})`);
    checkOne(`faults.operations.${operation}`, entry);
  }
  if (problems.length > 0) {
    throw new KilnError("INVALID_ARGUMENT", `Invalid fault options: ${problems.join("; ")}.`, { details: { issues: problems } });
  }
}

/** Applies {@link FaultOptions} to calls; one per provider object. */
export interface FaultInjector {
  /**
   * Runs the faults that act before an operation: waits its latency (honouring `signal`), then
   * throws a throttle or a `before` error. Returns the decision for the `after` phase.
   * @throws KilnError ABORTED, PROVIDER_UNAVAILABLE (throttled), or the configured error
   */
  before(operation: MemoryOperation, service: string | undefined, signal: AbortSignal): Promise<AfterFault>;
}

/** Throws the `after`-phase error of a call, if it drew one. */
export type AfterFault = () => void;

const NOTHING: AfterFault = () => undefined;

/** Creates the injector for one provider object; counts calls per operation. */
export function createFaultInjector(faults: FaultOptions | undefined): FaultInjector {
  if (faults) validateFaults(faults);
  const random = faults?.random ?? seededRandom(1);
  const counts = new Map<MemoryOperation, number>();

  function faultsOf(operation: MemoryOperation): OperationFaults {
    return { ...faults?.all, ...faults?.operations?.[operation] };
  }

  function latencyOf(latency: LatencyFault | undefined): number {
    if (latency === undefined) return 0;
    if (typeof latency === "number") return latency;
    return latency.minMs + random() * (latency.maxMs - latency.minMs);
  }

  return {
    async before(operation, service, signal) {
      const callNumber = (counts.get(operation) ?? 0) + 1;
      counts.set(operation, callNumber);
      if (!faults) return NOTHING;
      const { latencyMs, throttle, error } = faultsOf(operation);
      const delay = latencyOf(latencyMs);
      if (delay > 0) await sleep(delay, signal);
      if (throttle) {
        const nth = throttle.everyNth !== undefined && callNumber % throttle.everyNth === 0;
        if (nth || (throttle.rate !== undefined && random() < throttle.rate)) {
          const retryAfterMs = throttle.retryAfterMs ?? 100;
          throw new KilnError("PROVIDER_UNAVAILABLE", `Injected fault: ${operation} was throttled; retry after ${retryAfterMs} ms.`, {
            retryable: true,
            details: { reason: "throttled", operation, retryAfterMs },
          });
        }
      }
      if (!error) return NOTHING;
      const call: FaultCall = service === undefined ? { operation, callNumber } : { operation, callNumber, service };
      const fails = typeof error.when === "number" ? random() < error.when : error.when(call);
      if (!fails) return NOTHING;
      const code = error.code ?? "PROVIDER_UNAVAILABLE";
      const raise = () => {
        throw new KilnError(code, error.message ?? `Injected fault: ${operation} failed (${code}).`, {
          retryable: error.retryable ?? code === "PROVIDER_UNAVAILABLE",
          details: { reason: "injected", operation, callNumber },
        });
      };
      if ((error.phase ?? "before") === "before") raise();
      return raise;
    },
  };
}

/**
 * Instance behaviour under the in-memory provider's health probe, as time passes. Every field is
 * plain data (numbers, booleans), so a behaviour survives in a state file. Times count from launch.
 */
export interface InstanceBehavior {
  /** Probes fail until this long after launch (milliseconds). @defaultValue 0 */
  readonly healthyAfterMs?: number;
  /** Probes always fail. @defaultValue false */
  readonly neverHealthy?: boolean;
  /** The instance stops for good this long after launch (milliseconds), like a crashing app with no restart policy. */
  readonly exitAfterMs?: number;
  /**
   * Flapping: once healthy (after `healthyAfterMs`), the instance is healthy for `healthyMs`, then
   * restarts (`restartCount` + 1) and fails probes for `unhealthyMs` while it starts again; this
   * repeats. The state stays `running`, as a container restarted by its restart policy does.
   */
  readonly flap?: { readonly healthyMs: number; readonly unhealthyMs: number };
  /**
   * A restart loop (crash loop): the app runs `runMs` without ever answering, exits, and is
   * restarted after `restartDelayMs` (state `pending` meanwhile, like Docker's `restarting`), each
   * restart adding 1 to `restartCount`. After `maxRestarts` restarts it stays `stopped`.
   */
  readonly restartLoop?: { readonly runMs: number; readonly restartDelayMs?: number; readonly maxRestarts?: number };
}

/** What an instance is doing at one moment, derived from its {@link InstanceBehavior}. */
export interface InstanceCondition {
  readonly state: "running" | "pending" | "stopped";
  readonly restartCount: number;
  /** Undefined when a probe succeeds; otherwise why it fails. */
  readonly unhealthy?: string;
}

/**
 * The condition of an instance `elapsedMs` after its launch: a pure function of the behaviour and
 * the time, so it needs no timers and survives a restart of the process that launched it.
 */
export function instanceCondition(behavior: InstanceBehavior, elapsedMs: number): InstanceCondition {
  const condition = runningCondition(behavior, elapsedMs);
  if (behavior.exitAfterMs !== undefined && elapsedMs >= behavior.exitAfterMs) {
    return { state: "stopped", restartCount: condition.restartCount, unhealthy: "the instance is not running (it exited)" };
  }
  return condition;
}

/** {@link instanceCondition} without `exitAfterMs`. */
function runningCondition(behavior: InstanceBehavior, elapsedMs: number): InstanceCondition {
  const loop = behavior.restartLoop;
  if (loop) {
    const delay = loop.restartDelayMs ?? 0;
    const period = Math.max(1, loop.runMs + delay);
    const cycle = Math.floor(elapsedMs / period);
    const max = loop.maxRestarts ?? Number.POSITIVE_INFINITY;
    if (cycle > max || (cycle === max && elapsedMs - cycle * period >= loop.runMs)) {
      return { state: "stopped", restartCount: max, unhealthy: "the instance is not running (it exited and is not restarted again)" };
    }
    if (elapsedMs - cycle * period < loop.runMs) return { state: "running", restartCount: cycle, unhealthy: "connection refused (the app crashes during start)" };
    return { state: "pending", restartCount: cycle, unhealthy: "the instance is restarting" };
  }
  const healthyAfter = behavior.healthyAfterMs ?? 0;
  if (elapsedMs < healthyAfter) return { state: "running", restartCount: 0, unhealthy: "connection refused (still starting)" };
  let restartCount = 0;
  if (behavior.flap) {
    const { healthyMs, unhealthyMs } = behavior.flap;
    const period = Math.max(1, healthyMs + unhealthyMs);
    const sinceHealthy = elapsedMs - healthyAfter;
    const offset = sinceHealthy % period;
    restartCount = Math.floor(sinceHealthy / period) + (offset >= healthyMs ? 1 : 0);
    if (offset >= healthyMs) return { state: "running", restartCount, unhealthy: "connection refused (restarted, starting again)" };
  }
  if (behavior.neverHealthy) return { state: "running", restartCount, unhealthy: "the app answers 500" };
  return { state: "running", restartCount };
}
