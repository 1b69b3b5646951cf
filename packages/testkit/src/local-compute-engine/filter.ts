import { ComputeApiError } from "./errors.js";

/**
 * The `filter` of Compute v1 list calls, as the API reference documents it ("Filtering"):
 *
 * - `FIELD OP VALUE` with OP one of `=`, `!=`, `>`, `<`, `>=`, `<=`, `:`; VALUE bare or "quoted";
 *   nested fields with dots (`labels.env = prod`, `scheduling.automaticRestart = true`); `*` in a
 *   VALUE matches any characters; `labels.owner:*` tests that a key is present.
 * - The regular-expression form `FIELD eq REGEX` / `FIELD ne REGEX`, the whole value matched
 *   (RE2 there; JavaScript regular expressions here, which agree on the common subset).
 * - Expressions in parentheses, joined by `AND` (also implied between them) and `OR`; `NOT` or
 *   `-` negates.
 *
 * Where a field holds a list (`networkInterfaces.networkIP`), the comparison holds if it holds for
 * any element. k8s-config-connector's mockgcp `mockcompute/filter.go` splits on ` AND ` and knows
 * only `=`/`eq`; this is a small recursive-descent parser instead, so nesting and `OR` work too.
 */
export type FilterExpression =
  | { readonly kind: "and" | "or"; readonly terms: readonly FilterExpression[] }
  | { readonly kind: "not"; readonly term: FilterExpression }
  | { readonly kind: "compare"; readonly field: string; readonly operator: FilterOperator; readonly value: string };

/** The comparison operators of a filter term (`eq`/`ne` compare with a regular expression). */
export type FilterOperator = "=" | "!=" | ">" | "<" | ">=" | "<=" | ":" | "eq" | "ne";

function invalid(filter: string, why: string): ComputeApiError {
  return new ComputeApiError(400, "invalid", `Invalid list filter expression '${filter}': ${why}.`);
}

/**
 * Parses a filter.
 * @param knownField - returns whether the first segment of a field name exists on the resource
 * @throws ComputeApiError 400 `invalid` for a syntax error or an unknown field
 */
export function parseFilter(filter: string, knownField: (name: string) => boolean = () => true): FilterExpression | undefined {
  let position = 0;
  const skipSpace = () => {
    while (position < filter.length && /\s/.test(filter[position]!)) position++;
  };
  const peekWord = (word: string) => {
    skipSpace();
    const after = filter[position + word.length];
    return filter.startsWith(word, position) && (after === undefined || /[\s(]/.test(after));
  };
  const readValue = (): string => {
    skipSpace();
    if (filter[position] === '"') {
      let value = "";
      position++;
      while (position < filter.length && filter[position] !== '"') {
        if (filter[position] === "\\" && position + 1 < filter.length) position++;
        value += filter[position++];
      }
      if (filter[position] !== '"') throw invalid(filter, "a quoted value is not closed");
      position++;
      return value;
    }
    const start = position;
    while (position < filter.length && !/[\s)]/.test(filter[position]!)) position++;
    if (start === position) throw invalid(filter, `a value is missing at character ${start}`);
    return filter.slice(start, position);
  };
  const comparison = (): FilterExpression => {
    skipSpace();
    const field = /^[A-Za-z_][A-Za-z0-9_.-]*/.exec(filter.slice(position))?.[0];
    if (!field) throw invalid(filter, `a field name is expected at character ${position}`);
    position += field.length;
    if (!knownField(field.split(".")[0]!)) throw invalid(filter, `'${field.split(".")[0]}' is not a field of this resource`);
    skipSpace();
    let operator: FilterOperator | undefined;
    for (const candidate of ["!=", ">=", "<=", "=", ">", "<", ":"] as const) {
      if (filter.startsWith(candidate, position)) {
        operator = candidate;
        position += candidate.length;
        break;
      }
    }
    for (const word of ["eq", "ne"] as const) {
      if (operator || !peekWord(word)) continue;
      operator = word;
      position += word.length;
    }
    if (!operator) throw invalid(filter, `an operator is expected after '${field}'`);
    return { kind: "compare", field, operator, value: readValue() };
  };
  const unary = (): FilterExpression => {
    skipSpace();
    if (peekWord("NOT")) {
      position += 3;
      return { kind: "not", term: unary() };
    }
    if (filter[position] === "-") {
      position++;
      return { kind: "not", term: unary() };
    }
    if (filter[position] === "(") {
      position++;
      const inner = orExpression();
      skipSpace();
      if (filter[position] !== ")") throw invalid(filter, "a parenthesis is not closed");
      position++;
      return inner;
    }
    return comparison();
  };
  const andExpression = (): FilterExpression => {
    const terms = [unary()];
    for (;;) {
      skipSpace();
      if (position >= filter.length || filter[position] === ")" || peekWord("OR")) break;
      if (peekWord("AND")) position += 3;
      terms.push(unary());
    }
    return terms.length === 1 ? terms[0]! : { kind: "and", terms };
  };
  const orExpression = (): FilterExpression => {
    const terms = [andExpression()];
    while (peekWord("OR")) {
      position += 2;
      terms.push(andExpression());
    }
    return terms.length === 1 ? terms[0]! : { kind: "or", terms };
  };
  skipSpace();
  if (position >= filter.length) return undefined;
  const expression = orExpression();
  skipSpace();
  if (position < filter.length) throw invalid(filter, `unexpected '${filter.slice(position)}'`);
  return expression;
}

function valuesAt(resource: unknown, path: readonly string[]): unknown[] {
  if (path.length === 0) return [resource];
  if (Array.isArray(resource)) return resource.flatMap((item) => valuesAt(item, path));
  if (typeof resource !== "object" || resource === null) return [];
  const next = (resource as Record<string, unknown>)[path[0]!];
  return next === undefined ? [] : valuesAt(next, path.slice(1));
}

function globToRegExp(value: string): RegExp {
  return new RegExp(`^${value.split("*").map((part) => part.replace(/[.+?^${}()|[\]\\]/g, "\\$&")).join(".*")}$`);
}

function compareOne(actual: unknown, operator: FilterOperator, expected: string): boolean {
  if (typeof actual === "object" && actual !== null) return false;
  const text = String(actual);
  switch (operator) {
    case "=":
    case ":":
      return expected.includes("*") ? globToRegExp(expected).test(text) : text === expected;
    case "!=":
      return text !== expected;
    case "eq":
      return new RegExp(`^(?:${expected})$`).test(text);
    case "ne":
      return !new RegExp(`^(?:${expected})$`).test(text);
    default: {
      const both = [Number(text), Number(expected)] as const;
      const numeric = text !== "" && expected !== "" && !Number.isNaN(both[0]) && !Number.isNaN(both[1]);
      const order = numeric ? Math.sign(both[0] - both[1]) : text < expected ? -1 : text > expected ? 1 : 0;
      return operator === ">" ? order > 0 : operator === "<" ? order < 0 : operator === ">=" ? order >= 0 : order <= 0;
    }
  }
}

/** Whether a resource (its API JSON) matches a parsed filter; an empty filter matches everything. */
export function matchesFilter(expression: FilterExpression | undefined, resource: Record<string, unknown>): boolean {
  if (!expression) return true;
  switch (expression.kind) {
    case "and":
      return expression.terms.every((term) => matchesFilter(term, resource));
    case "or":
      return expression.terms.some((term) => matchesFilter(term, resource));
    case "not":
      return !matchesFilter(expression.term, resource);
    case "compare": {
      const values = valuesAt(resource, expression.field.split("."));
      if (expression.operator === ":" && expression.value === "*") return values.length > 0;
      // A field that is absent is "not equal" to anything and matches nothing else.
      if (values.length === 0) return expression.operator === "!=" || expression.operator === "ne";
      if (expression.operator === "!=" || expression.operator === "ne") return values.every((value) => compareOne(value, expression.operator, expression.value));
      return values.some((value) => compareOne(value, expression.operator, expression.value));
    }
  }
}
