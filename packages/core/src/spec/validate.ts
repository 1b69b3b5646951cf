import type { z } from "zod";
import type { ProviderSpec } from "../provider/spec.js";
import { sectionValues } from "../provider/spec.js";
import { DEFAULT_ENVIRONMENT } from "../target.js";
import { composeSpecSchemas, providerRegistry, providersNamedIn, type ComposedSchemas, type ProviderRegistry } from "./compose.js";
import { formatPath, specInvalidError, type SpecIssue } from "./issues.js";
import { withSuggestion } from "./keys.js";
import { resolveTarget } from "./resolve.js";
import { describeIssue } from "./messages.js";
import { checkSpecRules } from "./rules.js";
import { secretWarnings } from "../secrets/rules.js";
import type { Spec } from "./schema.js";

/** A spec that passed validation, with every environment already merged and defaulted. */
export interface ValidatedSpec {
  /** The top-level settings with defaults (used for the `default` environment). */
  readonly spec: Spec;
  /** Each named environment's settings: the top level merged with its overrides, defaulted. */
  readonly environments: Readonly<Record<string, Spec>>;
  /** The spec as given, `x-` keys removed: what a later validation with more providers starts from. */
  readonly input: unknown;
  /**
   * The providers whose sections were checked by their own schemas and rules. A provider the spec
   * names that is not among them had its sections carried unchecked; `createKiln` checks them
   * before it uses that provider.
   */
  readonly checkedProviders: readonly string[];
  /**
   * What is allowed but probably a mistake, each with its key path (and position, for a file):
   * an `instances.env` key that looks like a secret. `kiln validate`, `plan` and `deploy` print
   * them; nothing is refused. @defaultValue none
   */
  readonly warnings?: readonly SpecIssue[];
}

/** Result of {@link validateSpec}: either a spec or every issue found, never both. */
export type SpecValidation = { ok: true; value: ValidatedSpec; issues: [] } | { ok: false; issues: SpecIssue[] };

/** Options of {@link validateSpec}. */
export interface ValidateOptions {
  /**
   * The specs of the providers to check sections and rules with, by provider name (a provider
   * package's `providerSpec`, or `provider.spec`). A provider the spec names that is not given
   * here has its sections accepted unchecked.
   * @defaultValue none
   */
  readonly providers?: Readonly<Record<string, ProviderSpec>>;
}

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

/** Keys whose value an environment replaces whole: a secret's `from` and `to` name one thing each. */
const REPLACED_KEYS = new Set(["from", "to"]);

/**
 * Deep-merges an environment's overrides over the top-level settings: objects merge key by key,
 * arrays and scalars replace, and so do a secret's `from` and `to` (an environment that reads a
 * secret from a file instead of a variable means the file only). Pure; neither input is changed.
 */
export function mergeOverrides(base: unknown, overrides: unknown): unknown {
  if (!isPlainObject(base) || !isPlainObject(overrides)) return overrides === undefined ? base : overrides;
  const out: Record<string, unknown> = { ...base };
  for (const [key, child] of Object.entries(overrides)) out[key] = REPLACED_KEYS.has(key) && child !== undefined ? child : mergeOverrides(base[key], child);
  return out;
}

/**
 * Validates a spec given as an object (parsed YAML or a literal in code) and reports every
 * problem at once, each with its key path (and, for an unknown key, a did-you-mean). Positions
 * (file, line, column) are added by `parseSpec` for specs read from text.
 *
 * Checks beyond types: core's rules (ports named and referenced right, one health check, surge
 * and unavailability, canary steps, host ports, the proxy, the machine recipe a VM provider
 * needs, where a load balancer belongs), then each provider's own rules (`ProviderSpec.validate`)
 * for the targets that use it, for the top level and every environment after merging. A problem
 * an environment inherits from the top level is reported once, at the top level.
 *
 * @param input - the spec object
 * @param options - the providers whose sections and rules to check
 */
export function validateSpec(input: unknown, options: ValidateOptions = {}): SpecValidation {
  const cleaned = stripExtensionKeys(input);
  const registry = providerRegistry(cleaned, options.providers);
  const schemas = composeSpecSchemas(registry);
  const issues: SpecIssue[] = [];
  // The input in each issue lets messages say what was given ("not "rollin""), and suggest.
  const parsed = schemas.spec.safeParse(cleaned, { reportInput: true });
  if (!parsed.success) issues.push(...fromZodIssues(parsed.error.issues, [], schemas, registry));
  if (!parsed.success && isPlainObject(cleaned)) issues.push(...salvagedRuleIssues(cleaned, parsed.error.issues, schemas, registry));
  if (!parsed.success || !isPlainObject(cleaned)) return { ok: false, issues };

  const spec = parsed.data as Spec;
  issues.push(...targetIssues(spec, [], registry));
  const warnings = secretWarnings(spec, []);
  const environments: Record<string, Spec> = {};
  const { environments: rawEnvironments = {}, ...rawBase } = cleaned as { environments?: Record<string, unknown> };
  for (const [name, rawOverrides] of Object.entries(rawEnvironments)) {
    const envPath = ["environments", name];
    if (!schemas.environment.safeParse(rawOverrides).success) continue; // already reported by the whole-spec parse
    const merged = schemas.spec.safeParse({ ...(mergeOverrides(rawBase, rawOverrides) as object), environments: {} }, { reportInput: true });
    if (!merged.success) {
      issues.push(...fromZodIssues(merged.error.issues, envPath, schemas, registry));
      continue;
    }
    // A problem the environment inherits from the top level is reported once, at the top level.
    const topLevel = new Set(issues.filter((issue) => issue.path[0] !== "environments").map((issue) => `${formatPath(issue.path)}\u0000${issue.message}`));
    const own = targetIssues(merged.data as Spec, envPath, registry, name);
    issues.push(...own.filter((issue) => !topLevel.has(`${formatPath(issue.path.slice(2))}\u0000${issue.message}`)));
    const inherited = new Set(warnings.map((warning) => formatPath(warning.path)));
    warnings.push(...secretWarnings(merged.data as Spec, envPath).filter((warning) => !inherited.has(formatPath(warning.path.slice(2)))));
    environments[name] = merged.data as Spec;
  }
  if (issues.length > 0) return { ok: false, issues };
  const checkedProviders = [...registry].filter(([, providerSpec]) => providerSpec !== undefined).map(([providerName]) => providerName);
  return { ok: true, value: { spec, environments, input: cleaned, checkedProviders, warnings }, issues: [] };
}

/**
 * Like {@link validateSpec} but throws.
 * @throws KilnError SPEC_INVALID with `details.issues` holding every {@link SpecIssue}
 */
export function assertValidSpec(input: unknown, source = "the spec", options: ValidateOptions = {}): ValidatedSpec {
  const result = validateSpec(input, options);
  if (!result.ok) throw specInvalidError(result.issues, source);
  return result.value;
}

/** The provider names a validated spec uses (top level and environments). */
export function providersOf(validated: Pick<ValidatedSpec, "input">): string[] {
  return providersNamedIn(validated.input);
}

/**
 * The rule problems (a health check naming a port that does not exist, …) of a spec whose schema
 * check failed, so that every problem is reported at once: the values the schema refused are
 * left out (their defaults take their place; a missing `service` gets a stand-in), and the rules
 * run on what remains. A rule problem at, above or below a value left out is not reported (it
 * may be a consequence), nor is a reference into `instances.ports` when a port was left out.
 */
function salvagedRuleIssues(cleaned: Record<string, unknown>, zodIssues: readonly z.core.$ZodIssue[], schemas: ComposedSchemas, registry: ProviderRegistry): SpecIssue[] {
  const salvaged = structuredClone(cleaned);
  const removed: (string | number)[][] = [];
  for (const issue of zodIssues) {
    const path = issue.path.filter((part): part is string | number => typeof part !== "symbol");
    if (issue.code === "unrecognized_keys") {
      for (const key of issue.keys) removeAt(salvaged, [...path, key]);
      continue;
    }
    // An array's bad element goes with its array (removing it would shift the others' indexes).
    const at = path.findIndex((part) => typeof part === "number");
    const cut = at >= 0 ? path.slice(0, at) : path;
    if (cut.length === 0) continue;
    removeAt(salvaged, cut);
    removed.push(cut);
  }
  if (typeof salvaged.service !== "string") salvaged.service = "service";
  const parsed = schemas.spec.safeParse(salvaged);
  if (!parsed.success) return [];
  const overlaps = (path: readonly (string | number)[]) => removed.some((cut) => cut.every((part, index) => path[index] === undefined || path[index] === part));
  const portsLeftOut = overlaps(["instances", "ports"]);
  return targetIssues(parsed.data as Spec, [], registry).filter((issue) => !overlaps(issue.path) && !(issue.kind === "reference" && portsLeftOut));
}

/** Deletes the value at `path` (object keys only), if it is there. */
function removeAt(root: Record<string, unknown>, path: readonly (string | number)[]): void {
  let node: unknown = root;
  for (const part of path.slice(0, -1)) {
    if (!isPlainObject(node)) return;
    node = node[String(part)];
  }
  if (isPlainObject(node)) delete node[String(path.at(-1))];
}

/** Core's rules, then the target's provider's own, for one target's merged settings. */
function targetIssues(spec: Spec, prefix: (string | number)[], registry: ProviderRegistry, environment = DEFAULT_ENVIRONMENT): SpecIssue[] {
  const provider = registry.get(spec.provider);
  const issues = checkSpecRules(spec, prefix, provider);
  if (!provider?.validate) return issues;
  // Resolved with a stand-in folder: rules look at settings, never at files.
  const resolved = resolveTarget({ spec, environments: { [environment]: spec }, input: undefined, checkedProviders: [] }, environment, "/");
  return [...issues, ...provider.validate(resolved, sectionValues(resolved)).map((issue) => ({ ...issue, path: [...prefix, ...issue.path] }))];
}

function fromZodIssues(zodIssues: readonly z.core.$ZodIssue[], prefix: (string | number)[], schemas: ComposedSchemas, registry: ProviderRegistry): SpecIssue[] {
  const issues: SpecIssue[] = [];
  for (const issue of zodIssues) {
    const path = [...prefix, ...issue.path.map((part) => (typeof part === "symbol" ? String(part) : part))];
    if (issue.code === "unrecognized_keys") {
      for (const key of issue.keys) issues.push(unknownKey([...path, key], key, schemas, registry));
    } else if (issue.code === "invalid_key") {
      // A record's key broke its rule (an environment's name): say which rule, not "Invalid key in record".
      for (const inner of issue.issues) issues.push({ path, kind: "invalid-key", message: describeIssue(inner).message });
    } else {
      const { message, suggestion } = describeIssue(issue);
      issues.push({ path, kind: issue.code === "invalid_type" ? "invalid-type" : "invalid-value", message, ...(suggestion !== undefined ? { suggestion } : {}) });
    }
  }
  return issues;
}

/** Places where a key is a provider's section: `instances`, `image.machine.base`, … (in environments too). */
const SECTION_PARENTS = ["instances", "image.machine.base", "image.machine.builder", "traffic.loadBalancer"];

function unknownKey(path: (string | number)[], key: string, schemas: ComposedSchemas, registry: ProviderRegistry): SpecIssue {
  const issue = withSuggestion({ path, kind: "unknown-key", key, message: `unknown key "${key}"` }, schemas.spec);
  const parent = (path[0] === "environments" ? path.slice(2, -1) : path.slice(0, -1)).join(".");
  if (issue.suggestion !== undefined || !SECTION_PARENTS.includes(parent)) return issue;
  const known = [...registry.keys()].map((name) => `"${name}"`).join(", ");
  return { ...issue, message: `unknown key "${key}": a section here is named after a provider the spec uses (${known}), and no provider "${key}" is` };
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
