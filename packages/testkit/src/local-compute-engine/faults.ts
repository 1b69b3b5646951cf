import { KilnError } from "@kilnjs/core";
import { seededRandom } from "../faults.js";

/**
 * Which calls a fault applies to: method names as `Service.Method` from the Compute v1 protos
 * (`Instances.Insert`, `Images.Get`, `ZoneOperations.Wait`, …). Absent: every Compute API call
 * (never the metadata server or the control API).
 */
export type ComputeMethodSelector = readonly string[] | undefined;

/** An operation that ends DONE with `error.errors[0].code` = `code` (and no effect). */
export interface OperationErrorFault {
  /** The code, UPPER_SNAKE as Compute writes it: `QUOTA_EXCEEDED`, `ZONE_RESOURCE_POOL_EXHAUSTED`, … */
  readonly code: string;
  /** The error message. @defaultValue a message like the real API's for the known codes */
  readonly message?: string;
  /** The probability (0 to 1) for each operation a selected method starts. @defaultValue 1 */
  readonly rate?: number;
  /** Only the first N operations selected fail; then the fault is spent. @defaultValue unlimited */
  readonly count?: number;
  readonly methods?: ComputeMethodSelector;
}

/**
 * The faults of a local Compute Engine. Every probability is drawn from one random generator seeded
 * with `seed`, in the order the calls arrive, so a test that makes the same calls sees the same faults.
 */
export interface LocalComputeEngineFaults {
  /** Seed of the random generator (mulberry32). Setting faults reseeds it. @defaultValue 1 */
  readonly seed?: number;
  /**
   * Throttled calls, refused before they take effect. `statuses` lists the answers to draw from:
   * 403 `rateLimitExceeded` (domain `usageLimits`; Compute's documented rate-quota error) and 429
   * `RESOURCE_EXHAUSTED` (the generic Google APIs answer, with an ErrorInfo detail).
   */
  readonly throttle?: { readonly rate: number; readonly statuses?: readonly (403 | 429)[]; readonly methods?: ComputeMethodSelector };
  /** Server errors (500 or 503 `backendError`), before the call takes effect. */
  readonly serverError?: { readonly rate: number; readonly status?: 500 | 503; readonly methods?: ComputeMethodSelector };
  /** Operations that end DONE with an error. The first matching rule that fires wins. */
  readonly operationErrors?: readonly OperationErrorFault[];
  /**
   * Slow operations: each selected operation stays RUNNING `extraMs` longer, so that it outlives a
   * client's `wait` (bounded by `timing.waitTimeoutMs`).
   */
  readonly slowOperations?: { readonly rate?: number; readonly extraMs: number; readonly methods?: ComputeMethodSelector };
  /** Slow boots: a started instance stays STAGING `extraMs` longer before RUNNING. */
  readonly slowBoot?: { readonly rate?: number; readonly extraMs: number };
}

const KNOWN_MESSAGES: Record<string, string> = {
  QUOTA_EXCEEDED: "Quota 'CPUS' exceeded.  Limit: 24.0 in region us-central1.",
  ZONE_RESOURCE_POOL_EXHAUSTED: "The zone does not have enough resources available to fulfill the request.  Try a different zone, or try again later.",
  RESOURCE_OPERATION_RATE_EXCEEDED: "Operation rate exceeded for resource. Too frequent operations from the source resource.",
};

/** The HTTP status and text Compute writes on an operation that ended with this error code. */
export function operationErrorStatus(code: string): { httpErrorStatusCode: number; httpErrorMessage: string } {
  if (code === "QUOTA_EXCEEDED" || code === "RESOURCE_OPERATION_RATE_EXCEEDED") return { httpErrorStatusCode: 403, httpErrorMessage: "FORBIDDEN" };
  if (code === "ZONE_RESOURCE_POOL_EXHAUSTED") return { httpErrorStatusCode: 503, httpErrorMessage: "SERVICE UNAVAILABLE" };
  return { httpErrorStatusCode: 400, httpErrorMessage: "BAD REQUEST" };
}

function selected(methods: ComputeMethodSelector, method: string): boolean {
  return methods === undefined || methods.includes(method);
}

/** Checks fault options; every problem at once. @throws KilnError INVALID_ARGUMENT */
export function validateComputeFaults(faults: LocalComputeEngineFaults): void {
  const problems: string[] = [];
  const rate = (where: string, value: number | undefined) => {
    if (value !== undefined && !(value >= 0 && value <= 1)) problems.push(`${where} must be between 0 and 1, not ${value}`);
  };
  const duration = (where: string, value: number) => {
    if (!(Number.isFinite(value) && value >= 0)) problems.push(`${where} must be a duration in ms >= 0, not ${value}`);
  };
  rate("throttle.rate", faults.throttle?.rate);
  for (const status of faults.throttle?.statuses ?? []) if (status !== 403 && status !== 429) problems.push(`throttle.statuses may hold 403 and 429, not ${String(status)}`);
  rate("serverError.rate", faults.serverError?.rate);
  faults.operationErrors?.forEach((fault, index) => {
    rate(`operationErrors[${index}].rate`, fault.rate);
    if (!/^[A-Z][A-Z0-9_]*$/.test(fault.code)) problems.push(`operationErrors[${index}].code must be UPPER_SNAKE like QUOTA_EXCEEDED, not ${fault.code}`);
  });
  if (faults.slowOperations) {
    rate("slowOperations.rate", faults.slowOperations.rate);
    duration("slowOperations.extraMs", faults.slowOperations.extraMs);
  }
  if (faults.slowBoot) {
    rate("slowBoot.rate", faults.slowBoot.rate);
    duration("slowBoot.extraMs", faults.slowBoot.extraMs);
  }
  if (problems.length > 0) {
    throw new KilnError("INVALID_ARGUMENT", `Local Compute Engine faults are not valid: ${problems.join("; ")}. Fix them and set the faults again.`);
  }
}

/** The fault decisions of one engine: one seeded random generator, drawn in call order. */
export class FaultPlan {
  private random: () => number = seededRandom(1);
  private spent = new Map<OperationErrorFault, number>();
  private current: LocalComputeEngineFaults = {};

  constructor(faults: LocalComputeEngineFaults = {}) {
    this.set(faults);
  }

  /** Replaces every fault and reseeds the generator. @throws KilnError INVALID_ARGUMENT */
  set(faults: LocalComputeEngineFaults): void {
    validateComputeFaults(faults);
    this.current = faults;
    this.random = seededRandom(faults.seed ?? 1);
    this.spent = new Map();
  }

  get faults(): LocalComputeEngineFaults {
    return this.current;
  }

  private draw(rate: number | undefined): boolean {
    const probability = rate ?? 1;
    if (probability <= 0) return false;
    return this.random() < probability;
  }

  /** Whether this call is refused before it takes effect, and with which status. */
  refusal(method: string): { kind: "throttle"; status: 403 | 429 } | { kind: "serverError"; status: 500 | 503 } | undefined {
    const { throttle, serverError } = this.current;
    if (throttle && selected(throttle.methods, method) && this.draw(throttle.rate)) {
      const statuses = throttle.statuses?.length ? throttle.statuses : [403 as const];
      const status = statuses.length === 1 ? statuses[0]! : statuses[Math.floor(this.random() * statuses.length)]!;
      return { kind: "throttle", status };
    }
    if (serverError && selected(serverError.methods, method) && this.draw(serverError.rate)) return { kind: "serverError", status: serverError.status ?? 503 };
    return undefined;
  }

  /** The error an operation of this method ends with, if a fault fires. */
  operationError(method: string): { code: string; message: string } | undefined {
    for (const fault of this.current.operationErrors ?? []) {
      if (!selected(fault.methods, method)) continue;
      const used = this.spent.get(fault) ?? 0;
      if (fault.count !== undefined && used >= fault.count) continue;
      if (!this.draw(fault.rate)) continue;
      this.spent.set(fault, used + 1);
      return { code: fault.code, message: fault.message ?? KNOWN_MESSAGES[fault.code] ?? `Injected operation error ${fault.code}.` };
    }
    return undefined;
  }

  /** Extra time (ms) an operation of this method stays RUNNING. */
  operationDelayMs(method: string): number {
    const slow = this.current.slowOperations;
    return slow && selected(slow.methods, method) && this.draw(slow.rate) ? slow.extraMs : 0;
  }

  /** Extra time (ms) a starting instance stays STAGING. */
  bootDelayMs(): number {
    const slow = this.current.slowBoot;
    return slow && this.draw(slow.rate) ? slow.extraMs : 0;
  }
}
