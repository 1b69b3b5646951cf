import type { z } from "zod";
import { KilnError } from "../errors.js";
import { specSchema, environmentSchema, type Spec } from "./schema.js";
import { minimumHealthDeadline, resolveStepSize, resolveSurge, resolveUnavailable } from "./arithmetic.js";

/** One problem found in a spec. */
export interface SpecIssue {
  /** The key path of the problem, e.g. `["instances", "ports", 0, "port"]`. */
  readonly path: readonly (string | number)[];
  /** What is wrong and what was expected, in words. */
  readonly message: string;
  /** A short machine-readable kind: `unknown-key`, `invalid-type`, `invalid-value`, `yaml-syntax`, `reference`, ... */
  readonly kind: string;
  /** For an unknown key: the known key it most resembles. */
  readonly suggestion?: string;
  /** The unknown key itself, for `unknown-key` issues. */
  readonly key?: string;
  /** The file the issue is in, when the spec came from one. */
  readonly file?: string;
  /** 1-based line and column in that file, when known. */
  readonly line?: number;
  readonly column?: number;
}

/** A spec that passed validation, with every environment already merged and defaulted. */
export interface ValidatedSpec {
  /** The top-level settings with defaults (used for the `default` environment). */
  readonly spec: Spec;
  /** Each named environment's settings: the top level merged with its overrides, defaulted. */
  readonly environments: Readonly<Record<string, Spec>>;
}

/** Result of {@link validateSpec}: either a spec or every issue found, never both. */
export type SpecValidation = { ok: true; value: ValidatedSpec; issues: [] } | { ok: false; issues: SpecIssue[] };

/** Keys whose values are free-form maps: `x-` keys inside them are data, not extensions. */
const FREE_FORM_KEYS = new Set(["env", "labels", "args"]);

/** Drops `x-` extension keys from every object that is not a free-form map. */
export function stripExtensionKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(stripExtensionKeys);
  if (!isPlainObject(value)) return value;
  const out: Record<string, unknown> = {};
  for (const [key, child] of Object.entries(value)) {
    if (key.startsWith("x-")) continue;
    out[key] = FREE_FORM_KEYS.has(key) ? child : stripExtensionKeys(child);
  }
  return out;
}

/**
 * Deep-merges an environment's overrides over the top-level settings: objects merge key by key,
 * arrays and scalars replace. Pure; neither input is changed.
 */
export function mergeOverrides(base: unknown, overrides: unknown): unknown {
  if (!isPlainObject(base) || !isPlainObject(overrides)) return overrides === undefined ? base : overrides;
  const out: Record<string, unknown> = { ...base };
  for (const [key, child] of Object.entries(overrides)) out[key] = mergeOverrides(base[key], child);
  return out;
}

/**
 * Validates a spec given as an object (parsed YAML or a literal in code) and reports every
 * problem at once, each with its key path. Positions (file, line, column) are added by
 * {@link parseSpec} for specs read from text.
 *
 * Checks beyond types: the health check's port names a declared port, port names are unique,
 * `maxSurge` and `maxUnavailable` are not both 0, and the same for every environment after merging.
 */
export function validateSpec(input: unknown): SpecValidation {
  const cleaned = stripExtensionKeys(input);
  const issues: SpecIssue[] = [];
  const parsed = specSchema.safeParse(cleaned);
  if (!parsed.success) issues.push(...fromZodIssues(parsed.error.issues, []));
  if (!parsed.success || !isPlainObject(cleaned)) return { ok: false, issues };

  issues.push(...checkConsistency(parsed.data, []));
  const environments: Record<string, Spec> = {};
  const { environments: rawEnvironments = {}, ...rawBase } = cleaned as { environments?: Record<string, unknown> };
  for (const [name, rawOverrides] of Object.entries(rawEnvironments)) {
    const envPath = ["environments", name];
    const overridesCheck = environmentSchema.safeParse(rawOverrides);
    if (!overridesCheck.success) continue; // already reported by the whole-spec parse
    const merged = specSchema.safeParse({ ...(mergeOverrides(rawBase, rawOverrides) as object), environments: {} });
    if (!merged.success) {
      issues.push(...fromZodIssues(merged.error.issues, envPath));
      continue;
    }
    // A problem the environment inherits from the top level is reported once, at the top level.
    const topLevel = new Set(issues.filter((issue) => issue.path[0] !== "environments").map((issue) => `${formatPath(issue.path)}\u0000${issue.message}`));
    issues.push(...checkConsistency(merged.data, envPath).filter((issue) => !topLevel.has(`${formatPath(issue.path.slice(2))}\u0000${issue.message}`)));
    environments[name] = merged.data;
  }
  if (issues.length > 0) return { ok: false, issues };
  return { ok: true, value: { spec: parsed.data, environments }, issues: [] };
}

/**
 * Like {@link validateSpec} but throws.
 * @throws KilnError SPEC_INVALID with `details.issues` holding every {@link SpecIssue}
 */
export function assertValidSpec(input: unknown, source = "the spec"): ValidatedSpec {
  const result = validateSpec(input);
  if (!result.ok) throw specInvalidError(result.issues, source);
  return result.value;
}

/** The `SPEC_INVALID` error for a list of issues, its message listing each one. */
export function specInvalidError(issues: readonly SpecIssue[], source: string): KilnError {
  const lines = issues.map((issue) => `  ${formatSpecIssue(issue)}`);
  return new KilnError(
    "SPEC_INVALID",
    `${source} has ${issues.length} problem${issues.length === 1 ? "" : "s"}; fix ${issues.length === 1 ? "it" : "them"} and try again:\n${lines.join("\n")}`,
    { details: { issues } },
  );
}

/** `file:line:column: path: message (did you mean "x"?)` */
export function formatSpecIssue(issue: SpecIssue): string {
  const where = issue.file ? `${issue.file}${issue.line ? `:${issue.line}:${issue.column ?? 1}` : ""}: ` : "";
  const path = issue.path.length > 0 ? `${formatPath(issue.path)}: ` : "";
  const hint = issue.suggestion ? ` (did you mean "${issue.suggestion}"?)` : "";
  return `${where}${path}${issue.message}${hint}`;
}

/** `instances.ports[0].port` */
export function formatPath(path: readonly (string | number)[]): string {
  return path.map((part, index) => (typeof part === "number" ? `[${part}]` : index === 0 ? part : `.${part}`)).join("");
}

function checkConsistency(spec: Spec, prefix: (string | number)[]): SpecIssue[] {
  const issues: SpecIssue[] = [];
  const seen = new Set<string>();
  spec.instances.ports.forEach((port, index) => {
    if (seen.has(port.name)) {
      issues.push({ path: [...prefix, "instances", "ports", index, "name"], kind: "invalid-value", message: `port name "${port.name}" is used twice; give each port its own name` });
    }
    seen.add(port.name);
  });
  const checks = (["http", "tcp", "command"] as const).filter((kind) => spec.health[kind] !== undefined);
  if (checks.length > 1) {
    issues.push({ path: [...prefix, "health"], kind: "invalid-value", message: `give one health check, not ${checks.join(" and ")}` });
  }
  for (const kind of ["http", "tcp"] as const) {
    const port = spec.health[kind]?.port;
    if (typeof port === "string" && !seen.has(port)) {
      const known = [...seen].map((name) => `"${name}"`).join(", ") || "none are declared";
      issues.push({
        path: [...prefix, "health", kind, "port"],
        kind: "reference",
        message: `"${port}" is not a port name from instances.ports (${known}); name one, or give a port number`,
      });
    }
  }
  const { rollout } = spec;
  const count = spec.instances.count;
  const proxy = spec.traffic.proxy;
  spec.instances.ports.forEach((port, index) => {
    if (port.hostPort === undefined) return;
    const path = [...prefix, "instances", "ports", index, "hostPort"];
    if (proxy) {
      issues.push({ path, kind: "invalid-value", message: "behind traffic.proxy, instances publish no host ports (the proxy does); remove hostPort" });
    } else if (count > 1) {
      issues.push({ path, kind: "invalid-value", message: `host port ${port.hostPort} can be held by one instance only, and count is ${count}; use traffic.proxy to run several behind one address` });
    } else if (rollout.order !== "stop-first") {
      issues.push({
        path,
        kind: "invalid-value",
        message: `a pinned host port cannot be held by the old and the new instance at once: set rollout.order: stop-first (the rollout then has downtime), or use traffic.proxy for a zero-downtime address`,
      });
    }
  });
  if (rollout.order === "stop-first" && rollout.strategy !== "rolling") {
    issues.push({ path: [...prefix, "rollout", "order"], kind: "invalid-value", message: `stop-first applies to the rolling strategy; ${rollout.strategy} always starts the new instances first` });
  }
  if (proxy) {
    const tcpPorts = spec.instances.ports.filter((port) => port.protocol === "tcp");
    if (tcpPorts.length === 0) {
      issues.push({ path: [...prefix, "traffic", "proxy"], kind: "invalid-value", message: "a proxy sends traffic to an instance port: declare one in instances.ports" });
    } else if (proxy.targetPort !== undefined && !tcpPorts.some((port) => port.name === proxy.targetPort)) {
      issues.push({
        path: [...prefix, "traffic", "proxy", "targetPort"],
        kind: "reference",
        message: `"${proxy.targetPort}" is not a tcp port name from instances.ports (${tcpPorts.map((port) => `"${port.name}"`).join(", ")})`,
      });
    }
  }
  if (rollout.strategy === "rolling" && rollout.order !== "stop-first" && resolveSurge(rollout.maxSurge, count) === 0 && resolveUnavailable(rollout.maxUnavailable, count) === 0) {
    issues.push({
      path: [...prefix, "rollout"],
      kind: "invalid-value",
      message: `maxSurge (${String(rollout.maxSurge)}) and maxUnavailable (${String(rollout.maxUnavailable)}) both come to 0 instances of ${count}, so no instance could ever be replaced; set maxSurge to 1 (replace surge-first) or maxUnavailable to 1`,
    });
  }
  if (rollout.strategy === "canary") {
    if (!rollout.steps) {
      issues.push({ path: [...prefix, "rollout", "steps"], kind: "invalid-value", message: 'a canary rollout needs steps, e.g. [{ instances: 1, holdMs: 60000 }, { instances: "50%" }]' });
    } else {
      // Steps at or above count are dropped (the last step, 100%, is implied), so the same steps
      // serve environments of different sizes; below count, each must be larger than the last.
      let previous = 0;
      rollout.steps.forEach((step, index) => {
        const size = resolveStepSize(step.instances, count);
        if (size >= count) return;
        if (size <= previous) {
          issues.push({
            path: [...prefix, "rollout", "steps", index, "instances"],
            kind: "invalid-value",
            message: `step ${index + 1} comes to ${size} of ${count} instances; each step must be larger than the one before (${previous})`,
          });
        }
        previous = Math.max(previous, size);
      });
    }
  } else if (rollout.steps && prefix.length === 0) {
    // In an environment, steps inherited from a canary top level are simply unused.
    issues.push({ path: [...prefix, "rollout", "steps"], kind: "invalid-value", message: `steps apply to the canary strategy only; this rollout is ${rollout.strategy}` });
  }
  if (spec.health.deadlineMs !== undefined) {
    const need = minimumHealthDeadline(spec.health);
    if (spec.health.deadlineMs < need.totalMs) {
      issues.push({
        path: [...prefix, "health", "deadlineMs"],
        kind: "invalid-value",
        message: `${spec.health.deadlineMs} ms is shorter than these settings need: ${need.arithmetic} = ${need.totalMs} ms; raise deadlineMs or lower those settings`,
      });
    }
  }
  return issues;
}

function fromZodIssues(zodIssues: readonly z.core.$ZodIssue[], prefix: (string | number)[]): SpecIssue[] {
  const issues: SpecIssue[] = [];
  for (const issue of zodIssues) {
    const path = [...prefix, ...issue.path.map((part) => (typeof part === "symbol" ? String(part) : part))];
    if (issue.code === "unrecognized_keys") {
      for (const key of issue.keys) issues.push({ path: [...path, key], kind: "unknown-key", key, message: `unknown key "${key}"` });
    } else if (issue.code === "invalid_type") {
      issues.push({ path, kind: "invalid-type", message: describeInvalidType(issue) });
    } else {
      issues.push({ path, kind: "invalid-value", message: issue.message });
    }
  }
  return issues;
}

function describeInvalidType(issue: z.core.$ZodIssueInvalidType): string {
  if (issue.message.includes("received undefined")) return `required: expected ${issue.expected}`;
  return issue.message.replace(/^Invalid input: /, "");
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
