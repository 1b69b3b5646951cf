import type { z } from "zod";
import { KilnError } from "../errors.js";
import { LABELS } from "../target.js";
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
  issues.push(...checkMachine(spec, prefix), ...checkAws(spec, prefix));
  if (spec.traffic.proxy && spec.traffic.loadBalancer) {
    issues.push({ path: [...prefix, "traffic"], kind: "invalid-value", message: "give traffic.proxy (a front proxy Kiln runs) or traffic.loadBalancer (the cloud's), not both" });
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

/** Providers that run virtual machines and so bake machine images (`image.machine`), not Dockerfiles. */
export const MACHINE_IMAGE_PROVIDERS: ReadonlySet<string> = new Set(["aws"]);

function checkMachine(spec: Spec, prefix: (string | number)[]): SpecIssue[] {
  const issues: SpecIssue[] = [];
  const machine = spec.image.machine;
  if (!machine) {
    if (MACHINE_IMAGE_PROVIDERS.has(spec.provider)) {
      issues.push({
        path: [...prefix, "image", "machine"],
        kind: "invalid-value",
        message: `required: the ${spec.provider} provider runs virtual machines and bakes machine images; add image.machine with provision steps and base.${spec.provider}`,
      });
    }
    return issues;
  }
  machine.provision.forEach((step, index) => {
    const kinds = (["file", "shell", "run"] as const).filter((kind) => step[kind] !== undefined);
    if (kinds.length !== 1) {
      issues.push({
        path: [...prefix, "image", "machine", "provision", index],
        kind: "invalid-value",
        message: kinds.length === 0 ? "a step needs one of file, shell and run" : `a step does one thing: give one of ${kinds.join(" and ")}, as separate steps`,
      });
    }
  });
  const base = machine.base.aws;
  const basePath = [...prefix, "image", "machine", "base", "aws"];
  if (base) {
    if (base.id !== undefined && base.name !== undefined) {
      issues.push({ path: basePath, kind: "invalid-value", message: "give the base AMI's id or a name pattern, not both" });
    } else if (base.id === undefined && base.name === undefined) {
      issues.push({ path: basePath, kind: "invalid-value", message: 'give the base AMI\'s id (ami-…) or a name pattern with owners, e.g. { name: "debian-12-amd64-*", owners: ["136693071363"] }' });
    } else if (base.name !== undefined && base.owners === undefined) {
      issues.push({ path: [...basePath, "owners"], kind: "invalid-value", message: 'required with name: the accounts that may own the base AMI (e.g. ["136693071363"] for Debian, or "self"), so a stranger\'s AMI never matches' });
    }
  } else if (spec.provider === "aws") {
    issues.push({ path: basePath, kind: "invalid-value", message: 'required: the base AMI for the aws provider, e.g. { id: ami-0123456789abcdef0 } or { name: "debian-12-amd64-*", owners: ["136693071363"] }' });
  }
  if (spec.provider === "aws") {
    const name = machine.builder.aws.amiName.replace("{service}", spec.service).replace("{fingerprint}", "0123456789ab");
    const problem = amiNameProblem(name);
    if (problem) issues.push({ path: [...prefix, "image", "machine", "builder", "aws", "amiName"], kind: "invalid-value", message: problem });
  }
  return issues;
}

/**
 * Why a name is not a valid AMI name, or undefined when it is: 3 to 128 characters, letters,
 * digits, spaces and `( ) [ ] . / - ' @ _` (EC2 API reference, CreateImage, parameter Name).
 */
export function amiNameProblem(name: string): string | undefined {
  if (name.length < 3 || name.length > 128) return `an AMI name is 3 to 128 characters (EC2 CreateImage); "${name}" has ${name.length}`;
  const bad = [...name].find((char) => !/[A-Za-z0-9 ()[\]./'@_-]/.test(char));
  if (bad !== undefined) return `an AMI name may hold letters, digits, spaces and ( ) [ ] . / - ' @ _ only (EC2 CreateImage); "${bad}" is not allowed`;
  return undefined;
}

/**
 * The AWS tag rules, from "Tag restrictions" in the Amazon EC2 User Guide
 * (https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/Using_Tags.html#tag-restrictions).
 */
export const AWS_TAG_RULES = {
  /** Tags per resource, Kiln's own included. */
  maxTags: 50,
  /** Characters in a key (UTF-8 characters). */
  maxKeyLength: 128,
  /** Characters in a value (UTF-8 characters). */
  maxValueLength: 256,
  /** Keys reserved for AWS, compared without regard to case. */
  reservedPrefix: "aws:",
} as const;

/**
 * How many tags Kiln itself puts on an EC2 instance or volume: its {@link LABELS}, `Name`, and the
 * aws provider's bookkeeping tags (the launch step's idempotency key, the ports, the address kind).
 */
export const AWS_KILN_TAG_COUNT = Object.keys(LABELS).length + 4;

/**
 * Problems of tags against {@link AWS_TAG_RULES}, each with the tag's key; `kilnTags` is how many
 * tags Kiln adds itself, counted against the 50.
 */
export function awsTagProblems(tags: Readonly<Record<string, string>>, kilnTags: number): Array<{ key?: string; message: string }> {
  const problems: Array<{ key?: string; message: string }> = [];
  const entries = Object.entries(tags);
  if (entries.length + kilnTags > AWS_TAG_RULES.maxTags) {
    problems.push({
      message: `AWS allows ${AWS_TAG_RULES.maxTags} tags per resource and Kiln adds ${kilnTags} of its own, so at most ${AWS_TAG_RULES.maxTags - kilnTags} labels fit; there are ${entries.length} (EC2 User Guide, tag restrictions)`,
    });
  }
  for (const [key, value] of entries) {
    if (key.toLowerCase().startsWith(AWS_TAG_RULES.reservedPrefix)) problems.push({ key, message: `tag keys starting with "aws:" are reserved for AWS (EC2 User Guide, tag restrictions)` });
    if ([...key].length > AWS_TAG_RULES.maxKeyLength) problems.push({ key, message: `a tag key is at most ${AWS_TAG_RULES.maxKeyLength} characters; this one has ${[...key].length} (EC2 User Guide, tag restrictions)` });
    if ([...value].length > AWS_TAG_RULES.maxValueLength) {
      problems.push({ key, message: `a tag value is at most ${AWS_TAG_RULES.maxValueLength} characters; this one has ${[...value].length} (EC2 User Guide, tag restrictions)` });
    }
  }
  return problems;
}

/** The most bytes of user data EC2 accepts (before base64), from the RunInstances API reference. */
export const AWS_USER_DATA_MAX_BYTES = 16 * 1024;

function checkAws(spec: Spec, prefix: (string | number)[]): SpecIssue[] {
  const issues: SpecIssue[] = [];
  const aws = spec.instances.aws;
  if (spec.provider === "aws") {
    for (const problem of awsTagProblems(spec.instances.labels, AWS_KILN_TAG_COUNT)) {
      issues.push({ path: [...prefix, "instances", "labels", ...(problem.key !== undefined ? [problem.key] : [])], kind: "invalid-value", message: problem.message });
    }
    if (spec.traffic.proxy) {
      issues.push({ path: [...prefix, "traffic", "proxy"], kind: "invalid-value", message: "the aws provider runs no front proxy; use traffic.loadBalancer.aws (an ELBv2 target group)" });
    }
    if (spec.health.command) {
      issues.push({ path: [...prefix, "health", "command"], kind: "invalid-value", message: "the aws provider cannot run commands in EC2 instances; use health.http or health.tcp (EC2 status checks apply anyway)" });
    }
  } else if (spec.traffic.loadBalancer?.aws) {
    issues.push({ path: [...prefix, "traffic", "loadBalancer", "aws"], kind: "invalid-value", message: `an AWS target group needs the aws provider; this target uses ${spec.provider}` });
  }
  if (aws) {
    if (aws.userData !== undefined && Buffer.byteLength(aws.userData) > AWS_USER_DATA_MAX_BYTES) {
      issues.push({ path: [...prefix, "instances", "aws", "userData"], kind: "invalid-value", message: `user data is at most ${AWS_USER_DATA_MAX_BYTES} bytes (EC2 RunInstances); this has ${Buffer.byteLength(aws.userData)}` });
    }
    const template = aws.launchTemplate;
    if (template && (template.id === undefined) === (template.name === undefined)) {
      issues.push({ path: [...prefix, "instances", "aws", "launchTemplate"], kind: "invalid-value", message: "give the launch template's id or its name (one of them)" });
    }
  }
  const targetGroup = spec.traffic.loadBalancer?.aws;
  if (targetGroup) {
    const tcpPorts = spec.instances.ports.filter((port) => port.protocol === "tcp");
    if (tcpPorts.length === 0) {
      issues.push({ path: [...prefix, "traffic", "loadBalancer", "aws"], kind: "invalid-value", message: "a target group sends traffic to an instance port: declare one in instances.ports" });
    } else if (targetGroup.port !== undefined && !tcpPorts.some((port) => port.name === targetGroup.port)) {
      issues.push({
        path: [...prefix, "traffic", "loadBalancer", "aws", "port"],
        kind: "reference",
        message: `"${targetGroup.port}" is not a tcp port name from instances.ports (${tcpPorts.map((port) => `"${port.name}"`).join(", ")})`,
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
