import { KilnError } from "../errors.js";

/** One problem found in a spec. */
export interface SpecIssue {
  /** The key path of the problem, e.g. `["instances", "ports", 0, "port"]`. */
  readonly path: readonly (string | number)[];
  /** What is wrong and what was expected, in words. */
  readonly message: string;
  /** A short machine-readable kind: `unknown-key`, `invalid-key` (a key that breaks its rule, such as an environment's name), `invalid-type`, `invalid-value`, `yaml-syntax`, `reference`, ... */
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

