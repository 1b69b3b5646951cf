import path from "node:path";
import dockerignore from "@balena/dockerignore";

/** Decides which paths of a build context take part in the build. Paths are POSIX, relative to the context. */
export interface ContextFilter {
  /** Whether the file (or symlink) at `relPath` is part of the build. */
  includesFile(relPath: string): boolean;
  /** Whether the walk must read the directory at `relPath` (it is kept, or something inside may be). */
  entersDirectory(relPath: string): boolean;
}

/** The lines of a `.dockerignore` that count: trimmed, without comments and blank lines. */
function patternLines(content: string): string[] {
  return content
    .replace(/^\uFEFF/, "")
    .split(/\r?\n/)
    .map((line) => line.trim())
    .filter((line) => line !== "" && !line.startsWith("#"));
}

/** The exception (`!`) patterns, normalized as Docker does, split into path segments. */
function exceptionSegments(lines: readonly string[]): string[][] {
  const result: string[][] = [];
  for (const line of lines) {
    if (!line.startsWith("!")) continue;
    let pattern = line.slice(1).trim();
    if (pattern === "") continue;
    pattern = path.posix.normalize(pattern).replace(/(?<=.)\/$/, "");
    if (pattern.length > 1 && pattern.startsWith("/")) pattern = pattern.slice(1);
    if (pattern === "." || pattern === "") continue;
    result.push(pattern.split("/"));
  }
  return result;
}

const segmentRegexps = new Map<string, RegExp | undefined>();

/** Whether one segment of a pattern may match one path segment; a character class always may. */
function segmentMayMatch(patternSegment: string, name: string): boolean {
  let regexp = segmentRegexps.get(patternSegment);
  if (!segmentRegexps.has(patternSegment)) {
    regexp = compileSegment(patternSegment);
    segmentRegexps.set(patternSegment, regexp);
  }
  return regexp === undefined ? true : regexp.test(name);
}

function compileSegment(segment: string): RegExp | undefined {
  if (segment.includes("[")) return undefined;
  let source = "^";
  for (let index = 0; index < segment.length; index++) {
    const char = segment[index] ?? "";
    if (char === "*") source += "[^/]*";
    else if (char === "?") source += "[^/]";
    else if (char === "\\" && index + 1 < segment.length) source += escapeRegExp(segment[++index] ?? "");
    else source += escapeRegExp(char);
  }
  return new RegExp(source + "$");
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");
}

/**
 * Whether an exception pattern could match the directory `dirSegments`, one of its ancestors, or
 * anything inside it. Conservative: a `**` or a character class counts as "could".
 */
export function exceptionMayMatchInside(patternSegments: readonly string[], dirSegments: readonly string[]): boolean {
  for (let index = 0; index < dirSegments.length; index++) {
    const patternSegment = patternSegments[index];
    // The pattern matched an ancestor of the directory: everything inside comes back with it.
    if (patternSegment === undefined) return true;
    if (patternSegment.includes("**")) return true;
    if (!segmentMayMatch(patternSegment, dirSegments[index] ?? "")) return false;
  }
  return true;
}

/**
 * A {@link ContextFilter} for a `.dockerignore`'s content, with Docker's (Moby's) matching rules:
 * case-sensitive, a pattern that matches a directory matches everything in it, later lines win,
 * `!` re-includes.
 *
 * `alwaysIncluded` paths (the `.dockerignore` itself, the Dockerfile when it lies in the context)
 * are part of the build whatever the patterns say, as `docker build` sends them to the engine
 * anyway. An excluded directory is entered only when it holds an always-included path or some `!`
 * pattern could match inside it.
 *
 * @param content - the `.dockerignore` text; `undefined` when there is none
 * @param alwaysIncluded - POSIX paths relative to the context
 * @see https://docs.docker.com/build/concepts/context/#dockerignore-files
 */
export function createContextFilter(content: string | undefined, alwaysIncluded: readonly string[]): ContextFilter {
  const lines = patternLines(content ?? "");
  if (lines.length === 0) return { includesFile: () => true, entersDirectory: () => true };

  const matcher = dockerignore.default({ ignorecase: false }).add(lines);
  const exceptions = exceptionSegments(lines);
  const always = new Set(alwaysIncluded);

  return {
    includesFile(relPath) {
      return always.has(relPath) || !matcher.ignores(relPath);
    },
    entersDirectory(relPath) {
      if (!matcher.ignores(relPath)) return true;
      const prefix = relPath + "/";
      for (const kept of always) if (kept.startsWith(prefix)) return true;
      const dirSegments = relPath.split("/");
      return exceptions.some((segments) => exceptionMayMatchInside(segments, dirSegments));
    },
  };
}
