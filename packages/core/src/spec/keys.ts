import { closest, distance } from "fastest-levenshtein";
import type { z } from "zod";
import type { SpecIssue } from "./issues.js";
import { specSchema } from "./schema.js";

/**
 * The keys a spec schema (core's, or one composed with providers' sections) knows at a key path (`[]` for the top level, `["environments", "prod"]`
 * for an environment), derived from the schema; empty where keys are free-form (`env`, `labels`)
 * or the path does not lead to a mapping.
 */
export function knownKeysAt(keyPath: readonly (string | number)[], root: z.core.$ZodType = specSchema): string[] {
  let schema: z.core.$ZodType | undefined = root;
  for (const segment of keyPath) {
    schema = schema ? childSchema(schema, segment) : undefined;
  }
  if (!schema) return [];
  const def = unwrap(schema)._zod.def;
  return def.type === "object" ? Object.keys(def.shape) : [];
}

/** Removes wrappers that do not change which keys are accepted (optional, default, pipe input, ...). */
function unwrap(schema: z.core.$ZodType): z.core.$ZodTypes {
  const current = schema as z.core.$ZodTypes;
  const def = current._zod.def;
  switch (def.type) {
    case "optional":
    case "nullable":
    case "nonoptional":
    case "default":
    case "prefault":
    case "readonly":
    case "catch":
      return unwrap(def.innerType);
    case "pipe":
      return unwrap(def.in);
    case "lazy":
      return unwrap(def.getter());
    default:
      return current;
  }
}

/** The schema of one child (a key of an object or record, an index of an array or tuple). */
function childSchema(schema: z.core.$ZodType, segment: string | number): z.core.$ZodType | undefined {
  const inner = unwrap(schema);
  const def = inner._zod.def;
  switch (def.type) {
    case "object":
      return typeof segment === "string" ? def.shape[segment] : undefined;
    case "record":
      return def.valueType;
    case "array":
      return def.element;
    case "tuple":
      return typeof segment === "number" ? (def.items[segment] ?? def.rest ?? undefined) : undefined;
    case "union":
      // The first option that has this child (a union of objects, or a number-or-string).
      for (const option of def.options) {
        const child = childSchema(option, segment);
        if (child) return child;
      }
      return undefined;
    default:
      return undefined;
  }
}

/** The known key closest to `key`, when it is close enough to be a likely typo. */
function suggestKey(key: string, known: readonly string[]): string | undefined {
  if (known.length === 0) return undefined;
  const candidate = closest(key, [...known]);
  const limit = Math.max(2, Math.floor(key.length / 3));
  return distance(key, candidate) <= limit ? candidate : undefined;
}

/** Adds a did-you-mean `suggestion` to an `unknown-key` issue when a known key at its path is close. */
export function withSuggestion(issue: SpecIssue, root: z.core.$ZodType = specSchema): SpecIssue {
  if (issue.kind !== "unknown-key" || issue.suggestion !== undefined) return issue;
  const key = issue.key ?? String(issue.path[issue.path.length - 1]);
  const suggestion = suggestKey(key, knownKeysAt(issue.path.slice(0, -1), root));
  return suggestion === undefined ? issue : { ...issue, suggestion };
}

