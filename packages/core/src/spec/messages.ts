import { closest, distance } from "fastest-levenshtein";
import type { z } from "zod";

/**
 * A schema issue in Kiln's words, never the schema library's ("Too small: expected number to be
 * >=1" becomes "must be at least 1"): what is allowed, for the value given. Messages the schema
 * states itself (a pattern's rule, a refinement) are kept as they are.
 */
export function describeIssue(issue: z.core.$ZodIssue): { message: string; suggestion?: string } {
  switch (issue.code) {
    case "invalid_type":
      return { message: describeInvalidType(issue) };
    case "too_small":
      return { message: isLibraryMessage(issue.message) ? tooSmall(issue) : issue.message };
    case "too_big":
      return { message: isLibraryMessage(issue.message) ? tooBig(issue) : issue.message };
    case "invalid_value":
      return describeInvalidValue(issue);
    case "invalid_union":
      return { message: describeUnion(issue) };
    case "not_multiple_of":
      return { message: isLibraryMessage(issue.message) ? `must be a multiple of ${String(issue.divisor)}` : issue.message };
    default:
      return { message: issue.message };
  }
}

/** Whether zod wrote the message itself (rather than the schema giving its own). */
function isLibraryMessage(message: string): boolean {
  return /^(Too small|Too big|Invalid input|Invalid option|Invalid number|Invalid string)\b/.test(message);
}

/** `a number`, `a string`, `a list`, `a mapping`, `true or false`, `nothing`: a value's kind in words. */
function kindOf(value: unknown): string {
  if (value === undefined) return "nothing";
  if (value === null) return "null (an empty value)";
  if (Array.isArray(value)) return "a list";
  if (typeof value === "object") return "a mapping";
  if (typeof value === "boolean") return `${String(value)} (a boolean)`;
  if (typeof value === "number") return `${String(value)} (a number)`;
  if (typeof value === "string") return `"${value.length > 40 ? `${value.slice(0, 40)}…` : value}" (a string)`;
  return typeof value;
}

const EXPECTED_WORDS: Record<string, string> = {
  string: "a string",
  number: "a number",
  int: "a whole number",
  boolean: "true or false",
  array: "a list",
  object: "a mapping",
  record: "a mapping",
  tuple: "a list",
  null: "null",
  undefined: "nothing",
};

function describeInvalidType(issue: z.core.$ZodIssueInvalidType): string {
  const expected = EXPECTED_WORDS[issue.expected] ?? issue.expected;
  if (issue.input === undefined) return `required: expected ${expected}`;
  if (issue.expected === "int" && typeof issue.input === "number") return `must be a whole number, not ${String(issue.input)}`;
  return `expected ${expected}, not ${kindOf(issue.input)}`;
}

function tooSmall(issue: z.core.$ZodIssueTooSmall): string {
  const minimum = Number(issue.minimum);
  switch (issue.origin) {
    case "string":
      return minimum === 1 ? "must not be empty" : `must be at least ${minimum} characters long`;
    case "array":
    case "set":
      return `needs at least ${minimum} item${minimum === 1 ? "" : "s"}`;
    default:
      return issue.inclusive === false ? `must be greater than ${minimum}` : `must be at least ${minimum}`;
  }
}

function tooBig(issue: z.core.$ZodIssueTooBig): string {
  const maximum = Number(issue.maximum);
  switch (issue.origin) {
    case "string":
      return `must be at most ${maximum} characters long`;
    case "array":
    case "set":
      return `takes at most ${maximum} item${maximum === 1 ? "" : "s"}`;
    default:
      return issue.inclusive === false ? `must be less than ${maximum}` : `must be at most ${maximum}`;
  }
}

/** One of a fixed set (an enum, a literal): say which are allowed, and which one was probably meant. */
function describeInvalidValue(issue: z.core.$ZodIssueInvalidValue): { message: string; suggestion?: string } {
  const allowed = issue.values.map((value) => (typeof value === "string" ? `"${value}"` : String(value)));
  const message = isLibraryMessage(issue.message) ? `must be ${allowed.length === 1 ? allowed[0]! : `one of ${allowed.join(", ")}`}, not ${kindOf(issue.input)}` : issue.message;
  const strings = issue.values.filter((value): value is string => typeof value === "string");
  if (typeof issue.input !== "string" || strings.length === 0) return { message };
  const input = issue.input.toLowerCase();
  const near = closest(input, strings);
  return distance(input, near) <= Math.max(2, Math.floor(near.length / 3)) ? { message, suggestion: near } : { message };
}

/**
 * A value that matched none of a union's shapes (a port name or number, a count or percentage).
 * When one shape takes the value's kind, its own complaint is the one that matters ("must be at
 * most 65535" for 70000); otherwise the kinds allowed are listed.
 */
function describeUnion(issue: z.core.$ZodIssueInvalidUnion): string {
  if (!isLibraryMessage(issue.message)) return issue.message;
  const branches = issue.errors;
  const typed = branches.find((branch) => branch.length > 0 && !branch.every((inner) => inner.code === "invalid_type" && inner.path.length === 0));
  if (typed) return describeIssue(typed[0]!).message;
  const expected = [...new Set(branches.flatMap((branch) => branch.filter((inner) => inner.code === "invalid_type").map((inner) => EXPECTED_WORDS[(inner).expected] ?? (inner).expected)))];
  if (expected.length === 0) return "is not a value this setting takes";
  return `expected ${expected.length === 1 ? expected[0]! : `${expected.slice(0, -1).join(", ")} or ${expected.at(-1)!}`}, not ${kindOf(issue.input)}`;
}
