import { readFile } from "node:fs/promises";
import path from "node:path";
import {
  LineCounter,
  isAlias,
  isMap,
  isScalar,
  isSeq,
  parseDocument,
  visit,
  type Document,
  type Node,
  type Pair,
  type YAMLError,
  type YAMLMap,
} from "yaml";
import { KilnError, toKilnError } from "../errors.js";
import type { ProviderSpec } from "../provider/spec.js";
import { specInvalidError, type SpecIssue } from "./issues.js";
import { providersNamedIn } from "./compose.js";
import { validateSpec, type SpecValidation, type ValidateOptions, type ValidatedSpec } from "./validate.js";

/** A spec that was read and validated, with the folder its relative paths are resolved against. */
export interface LoadedSpec {
  /**
   * Where the spec came from: the absolute path of the file for {@link loadSpec}, or
   * {@link OBJECT_SPEC_FILE} (`"<object>"`) for {@link specFromObject}.
   */
  readonly file: string;
  /** Absolute folder that relative paths in the spec (build context, Dockerfile) are resolved against. */
  readonly baseDir: string;
  /** The validated spec, with every environment merged and defaulted. */
  readonly validated: ValidatedSpec;
  /**
   * Puts the file, line and column on an issue found later (by a provider's rules once that
   * provider is loaded); the identity for a spec given as an object.
   */
  readonly locate: (issue: SpecIssue) => SpecIssue;
}

/** Options of {@link parseSpec}. */
export interface ParseSpecOptions extends ValidateOptions {
  /** The file name put on each issue (and shown by `formatSpecIssue`); issues carry no file without it. */
  file?: string;
}

/** The `file` of a {@link LoadedSpec} made by {@link specFromObject}: the spec was an object in code, not a file. */
export const OBJECT_SPEC_FILE = "<object>";

/** How many alias expansions `toJS` allows before it assumes a "billion laughs" document. */
const MAX_ALIAS_COUNT = 1_000;

/**
 * Parses `kiln.yaml` text and validates it, reporting every problem at once with its key path,
 * file, line and column.
 *
 * The text is read as YAML 1.2 (core schema: `yes`/`no`/`on` are strings), with anchors, aliases and
 * `<<: *anchor` merge keys. YAML syntax errors and warnings (tab indentation, duplicate keys, an
 * unknown tag, an alias without its anchor) become issues of kind `yaml-syntax`, at most one per
 * line; when there are any, the spec itself is not validated. Otherwise the document is validated
 * with `validateSpec`, and each issue gets the position of the node at its path: the key itself for
 * an `unknown-key` issue (with a did-you-mean `suggestion` when a known key is close), the parent
 * mapping for a missing key, or else the nearest enclosing node that exists in the file.
 *
 * Never throws for bad input: problems are returned as issues.
 *
 * @param text - the YAML text
 * @param options - `file`: the name to put on each issue
 * @returns `{ ok: true, value }`, or `{ ok: false, issues }` with every issue found
 *
 * @example
 * ```ts
 * const result = parseSpec("service: web\ninstances: { cuont: 2 }\n", { file: "kiln.yaml" });
 * if (!result.ok) for (const issue of result.issues) console.error(formatSpecIssue(issue));
 * // kiln.yaml:2:14: instances.cuont: unknown key "cuont" (did you mean "count"?)
 * ```
 */
export function parseSpec(text: string, options: ParseSpecOptions = {}): SpecValidation {
  return parseWithLocator(text, options).result;
}

/** {@link parseSpec}, and the function that puts positions in this text on later issues. */
function parseWithLocator(text: string, options: ParseSpecOptions): { result: SpecValidation; locate: (issue: SpecIssue) => SpecIssue } {
  const file = options.file;
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, version: "1.2", schema: "core", merge: true, prettyErrors: true, uniqueKeys: true });
  const at = (offset: number): Pick<SpecIssue, "file" | "line" | "column"> => {
    const { line, col } = lineCounter.linePos(offset);
    return { ...(file !== undefined ? { file } : {}), line, column: col };
  };

  const locate = (issue: SpecIssue) => locateIssue(doc, issue, at);
  const fail = (issues: SpecIssue[]) => ({ result: { ok: false as const, issues }, locate });
  const syntaxIssues = yamlIssues(doc, [...doc.errors, ...doc.warnings], at);
  syntaxIssues.push(...unresolvedAliasIssues(doc, at));
  if (syntaxIssues.length > 0) return fail(dedupeByLine(syntaxIssues));

  const root = doc.contents;
  if (root === null || (isScalar(root) && root.value === null && !root.source)) {
    return fail([{ path: [], kind: "invalid-type", message: "the spec is empty; it needs at least `service: <name>`", ...at(0) }]);
  }
  if (!isMap(root)) {
    const what = isSeq(root) ? "a list" : isAlias(root) ? "an alias" : "a single value";
    return fail([{ path: [], kind: "invalid-type", message: `the spec must be a mapping of keys (service, instances, ...), but the file holds ${what}`, ...at(root.range?.[0] ?? 0) }]);
  }

  let input: unknown;
  try {
    input = doc.toJS({ maxAliasCount: MAX_ALIAS_COUNT });
  } catch (error) {
    // Only a resource-exhaustion guard (too many aliases) is left to throw here: report it as an issue.
    const detail = error instanceof Error ? error.message : String(error);
    return fail([{ path: [], kind: "yaml-syntax", message: `the YAML could not be read: ${detail}`, ...at(0) }]);
  }

  const result = validateSpec(input, options);
  if (result.ok) return { result: { ...result, value: { ...result.value, warnings: byPosition((result.value.warnings ?? []).map(locate)) } }, locate };
  return fail(byPosition(result.issues.map(locate)));
}

/**
 * Reads a `kiln.yaml` file, parses and validates it.
 *
 * @param file - path of the spec file, absolute or relative to the working directory; issues and
 *   error messages name it as given, `LoadedSpec.file` holds it resolved
 * @returns the validated spec, with `baseDir` the file's folder
 * @throws KilnError SPEC_NOT_FOUND when the file does not exist or cannot be read (the read error is the cause)
 * @throws KilnError SPEC_INVALID when the spec has problems; `details.issues` lists each
 *   {@link SpecIssue} with file, line and column, and the message lists them as `file:line:col: path: message`
 *
 * @example
 * ```ts
 * const { validated, baseDir } = await loadSpec("kiln.yaml");
 * const target = resolveTarget(validated, "staging", baseDir);
 * ```
 */
export async function loadSpec(file: string, options: LoadSpecOptions = {}): Promise<LoadedSpec> {
  const absolute = path.resolve(file);
  let text: string;
  try {
    text = await readFile(absolute, "utf8");
  } catch (error) {
    const code = (error as NodeJS.ErrnoException | undefined)?.code;
    if (code === "ENOENT" || code === "ENOTDIR") {
      throw new KilnError("SPEC_NOT_FOUND", `No kiln.yaml at ${file}; create one with \`kiln init\` or pass --config.`, { cause: error });
    }
    if (code === "EISDIR") {
      throw new KilnError("SPEC_NOT_FOUND", `${file} is a folder, not a spec file; pass the kiln.yaml inside it.`, { cause: error });
    }
    throw toKilnError(error, "SPEC_NOT_FOUND", `Could not read the spec ${file}`);
  }
  const providers = options.providerSpec ? { ...(await providerSpecsFor(text, options.providerSpec)), ...options.providers } : options.providers;
  const { result, locate } = parseWithLocator(text, { ...options, ...(providers ? { providers } : {}), file });
  if (!result.ok) throw specInvalidError(result.issues, file);
  return { file: absolute, baseDir: path.dirname(absolute), validated: result.value, locate };
}

/** Options of {@link loadSpec}. */
export interface LoadSpecOptions extends ValidateOptions {
  /**
   * Finds the spec of a provider the spec names (`provider:`, a secret's store): its sections and
   * rules are then checked in the same pass as the rest (every problem at once); one it cannot
   * find is checked later, by whoever loads it. @defaultValue none: only `providers` are checked
   */
  readonly providerSpec?: (name: string) => Promise<ProviderSpec | undefined>;
}

/** The specs of the providers a spec's text names, as far as `find` finds them; a text that does not parse names none. */
async function providerSpecsFor(text: string, find: (name: string) => Promise<ProviderSpec | undefined>): Promise<Record<string, ProviderSpec>> {
  let input: unknown;
  try {
    input = parseDocument(text, { version: "1.2", schema: "core", merge: true }).toJS({ maxAliasCount: MAX_ALIAS_COUNT });
  } catch {
    return {};
  }
  const specs = await Promise.all(providersNamedIn(input).map(async (name) => [name, await find(name).catch(() => undefined)] as const));
  return Object.fromEntries(specs.filter((entry): entry is readonly [string, ProviderSpec] => entry[1] !== undefined));
}

/**
 * Parses and validates `kiln.yaml` text that did not come from a file (a request body), as
 * {@link loadSpec} does a file: issues name `options.file` (e.g. `request body`) with line and column.
 * @param options.baseDir - the folder relative paths in the spec are resolved against
 * @throws KilnError SPEC_INVALID listing every issue
 */
export function specFromYaml(text: string, options: ValidateOptions & { readonly file: string; readonly baseDir: string }): LoadedSpec {
  const { result, locate } = parseWithLocator(text, options);
  if (!result.ok) throw specInvalidError(result.issues, "The spec");
  return { file: OBJECT_SPEC_FILE, baseDir: path.resolve(options.baseDir), validated: result.value, locate };
}

/**
 * Validates a spec given as an object in code (the same shape as `kiln.yaml`) and wraps it as a
 * {@link LoadedSpec} whose `file` is {@link OBJECT_SPEC_FILE}. `x-` keys are ignored, as in YAML.
 *
 * @param input - the spec object, e.g. a `SpecInput` literal
 * @param baseDir - the folder relative paths in the spec are resolved against; made absolute
 * @throws KilnError SPEC_INVALID when the spec has problems; `details.issues` lists each
 *   {@link SpecIssue} with its key path (no file or position) and, for an unknown key, a suggestion
 *
 * @example
 * ```ts
 * const loaded = specFromObject({ service: "web", instances: { count: 2 } }, import.meta.dirname);
 * ```
 */
export function specFromObject(input: unknown, baseDir: string, options: ValidateOptions = {}): LoadedSpec {
  const result = validateSpec(input, options);
  if (!result.ok) throw specInvalidError(result.issues, "The spec object");
  return { file: OBJECT_SPEC_FILE, baseDir: path.resolve(baseDir), validated: result.value, locate: (issue) => issue };
}

/**
 * The spec checked with these providers' sections and rules too: `loaded` itself when each was
 * checked already, else validated again from its input with them (a spec loaded before its
 * providers were known, or one that names a provider another part of the program loads).
 * @param providers - provider specs by name
 * @throws KilnError SPEC_INVALID with every issue, positioned in the file where there is one
 */
export function checkSpecWith(loaded: LoadedSpec, providers: Readonly<Record<string, ProviderSpec>>): LoadedSpec {
  const missing = Object.keys(providers).filter((name) => !loaded.validated.checkedProviders.includes(name));
  if (missing.length === 0) return loaded;
  const all = { ...providers };
  const result = validateSpec(loaded.validated.input, { providers: all });
  if (!result.ok) throw specInvalidError(byPosition(result.issues.map(loaded.locate)), loaded.file === OBJECT_SPEC_FILE ? "The spec object" : loaded.file);
  return { ...loaded, validated: { ...result.value, warnings: byPosition((result.value.warnings ?? []).map(loaded.locate)) } };
}

type Position = Pick<SpecIssue, "file" | "line" | "column">;

/** Adds the position to one validation issue. */
function locateIssue(doc: Document, issue: SpecIssue, at: (offset: number) => Position): SpecIssue {
  const { node, pair, depth } = findNode(doc, issue.path);
  // An unknown key points at the key. A path that ends before the document does (a missing key, or
  // an environment's merged value that comes from the top level) points at the key of the deepest
  // mapping that exists: `prod:` rather than the first line inside it.
  const atKey = pair !== undefined && (depth < issue.path.length || issue.kind === "unknown-key" || issue.kind === "invalid-key" || issue.kind === "secret-in-env");
  let offset = atKey ? (pair.key as Node | null)?.range?.[0] : undefined;
  offset ??= node?.range?.[0];
  return offset === undefined ? issue : { ...issue, ...at(offset) };
}

/**
 * Follows a key path through the document (through aliases and `<<` merge keys) as far as it
 * exists. Returns the deepest node reached, how many segments were followed, and the pair that
 * holds that node when it is a mapping value.
 */
function findNode(doc: Document, keyPath: readonly (string | number)[]): { node: Node | undefined; pair: Pair | undefined; depth: number } {
  let node = resolveAlias(doc, doc.contents);
  let pair: Pair | undefined;
  let depth = 0;
  for (const segment of keyPath) {
    let next: Node | undefined;
    let nextPair: Pair | undefined;
    if (isMap(node)) {
      nextPair = findPair(doc, node, String(segment), new Set());
      next = nextPair ? resolveAlias(doc, nextPair.value) : undefined;
      // A key with no value (`health:`) holds an empty scalar that sits after the colon: point at the key.
      if (isScalar(next) && next.value === null && !next.source) next = undefined;
    } else if (isSeq(node) && typeof segment === "number") {
      next = resolveAlias(doc, node.items[segment]);
      nextPair = undefined;
    }
    if (!next && !nextPair) break;
    node = next ?? (nextPair?.key as Node | undefined);
    pair = nextPair;
    depth += 1;
  }
  return { node, pair, depth };
}

/** The pair with this key in a mapping, looking into `<<` merge sources after the mapping's own keys. */
function findPair(doc: Document, map: YAMLMap, key: string, seen: Set<Node>): Pair | undefined {
  if (seen.has(map)) return undefined;
  seen.add(map);
  for (const pair of map.items) {
    if (isScalar(pair.key) && typeof pair.key.value !== "symbol" && String(pair.key.value) === key) return pair;
  }
  for (const pair of map.items) {
    if (!isScalar(pair.key) || typeof pair.key.value !== "symbol") continue; // only merge keys (`<<`)
    const value = resolveAlias(doc, pair.value);
    const sources = isSeq(value) ? value.items.map((item) => resolveAlias(doc, item)) : [value];
    for (const source of sources) {
      if (!isMap(source)) continue;
      const found = findPair(doc, source, key, seen);
      if (found) return found;
    }
  }
  return undefined;
}

function resolveAlias(doc: Document, value: unknown): Node | undefined {
  let current = value;
  for (let hops = 0; isAlias(current) && hops < 100; hops += 1) current = current.resolve(doc);
  return current !== null && typeof current === "object" && !isAlias(current) ? (current as Node) : undefined;
}

/** Turns the YAML library's errors and warnings into `yaml-syntax` issues with readable messages. */
function yamlIssues(doc: Document, errors: readonly YAMLError[], at: (offset: number) => Position): SpecIssue[] {
  return errors.map((error) => {
    const unclosed = unclosedFlowCollection(doc, error);
    if (unclosed) {
      const [open, close] = unclosed.kind === "sequence" ? ["[", "]"] : ["{", "}"];
      return { path: [], kind: "yaml-syntax", message: `the flow ${unclosed.kind} "${open}" opened here is never closed with "${close}"`, ...at(unclosed.offset) };
    }
    return { path: [], kind: "yaml-syntax", message: yamlMessage(doc, error), ...at(error.pos[0]) };
  });
}

/**
 * For the parser's "flow collection must end with ] / }" errors, which it reports where it gave
 * up (the next line), finds the flow sequence or map that was never closed: the user needs the
 * line where the bracket was opened.
 */
function unclosedFlowCollection(doc: Document, error: YAMLError): { kind: "sequence" | "mapping"; offset: number } | undefined {
  const match = /^Flow (sequence|map) .*end with an? [\]}]/.exec(error.message);
  if (!match) return undefined;
  const kind = match[1] === "sequence" ? "sequence" : "mapping";
  let found: { kind: "sequence" | "mapping"; offset: number } | undefined;
  visit(doc, {
    Collection(_key, node) {
      if (found || !node.flow || !node.range || (kind === "sequence" ? !isSeq(node) : !isMap(node))) return;
      if (node.range[1] === error.pos[0] || node.range[2] === error.pos[0]) found = { kind, offset: node.range[0] };
    },
  });
  return found;
}

function yamlMessage(doc: Document, error: YAMLError): string {
  switch (error.code) {
    case "TAB_AS_INDENT":
      return "tabs are not allowed for indentation in YAML; indent with spaces";
    case "DUPLICATE_KEY": {
      const key = keyAtOffset(doc, error.pos[0]);
      return `${key === undefined ? "a key" : `the key "${key}"`} appears twice in the same mapping; keep one`;
    }
    case "MULTIPLE_DOCS":
      return "the file holds more than one YAML document (a `---` separator); a spec is one document";
    case "TAG_RESOLVE_FAILED":
      return `${firstLine(error.message)}; kiln.yaml uses no tags`;
    default:
      return firstLine(error.message);
  }
}

/** The YAML library's message without the `at line L, column C:` tail and the source excerpt. */
function firstLine(message: string): string {
  const line = message.split("\n")[0] ?? message;
  const text = line.replace(/ at line \d+, column \d+:?$/, "");
  return text.charAt(0).toLowerCase() + text.slice(1);
}

function keyAtOffset(doc: Document, offset: number): string | undefined {
  let found: string | undefined;
  visit(doc, {
    Pair(_key, pair) {
      if (isScalar(pair.key) && pair.key.range?.[0] === offset) {
        found = String(pair.key.value);
        return visit.BREAK;
      }
      return undefined;
    },
  });
  return found;
}

/**
 * An alias whose anchor is missing (or comes later), or that sits inside the value it names, is
 * not a parse error in `yaml` but would make `toJS` throw or build a cycle; find them first.
 */
function unresolvedAliasIssues(doc: Document, at: (offset: number) => Position): SpecIssue[] {
  const issues: SpecIssue[] = [];
  visit(doc, {
    Alias(_key, alias, ancestors) {
      const target = alias.resolve(doc);
      let message: string | undefined;
      if (target === undefined) message = `the alias *${alias.source} has no anchor &${alias.source} before it`;
      else if (ancestors.includes(target)) message = `the alias *${alias.source} is inside the value it names, which would repeat forever`;
      if (message !== undefined) issues.push({ path: [], kind: "yaml-syntax", message, ...at(alias.range?.[0] ?? 0) });
    },
  });
  return issues;
}

/** Issues in file order (a stable sort: issues without a position keep their order, last). */
function byPosition(issues: SpecIssue[]): SpecIssue[] {
  const line = (issue: SpecIssue) => issue.line ?? Number.POSITIVE_INFINITY;
  return [...issues].sort((a, b) => line(a) - line(b) || (a.column ?? 0) - (b.column ?? 0));
}

/** One issue per line: a tab or an unclosed bracket makes the parser report follow-on errors on the same line. */
function dedupeByLine(issues: SpecIssue[]): SpecIssue[] {
  const seen = new Set<number | undefined>();
  return byPosition(issues).filter((issue) => {
    if (seen.has(issue.line)) return false;
    seen.add(issue.line);
    return true;
  });
}
