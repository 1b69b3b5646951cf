/**
 * Just enough of the Dockerfile grammar to find the base images a build starts from: parser
 * directives (`# escape=`), comments, line continuations, the global `ARG`s declared before the
 * first `FROM`, and each `FROM [--flag=…] <image> [AS <name>]`.
 *
 * @see https://docs.docker.com/reference/dockerfile/#understand-how-arg-and-from-interact
 */

/** Build arguments Docker (BuildKit) defines by itself; a `FROM` may use them without an `ARG`. */
const AUTOMATIC_PLATFORM_ARGS = new Set([
  "TARGETPLATFORM",
  "TARGETOS",
  "TARGETARCH",
  "TARGETVARIANT",
  "BUILDPLATFORM",
  "BUILDOS",
  "BUILDARCH",
  "BUILDVARIANT",
]);

/** One instruction: its keyword (upper case) and the rest of its logical line. */
interface Instruction {
  keyword: string;
  rest: string;
}

/** Splits a Dockerfile into logical instructions (continuations joined, comments dropped). */
export function parseInstructions(content: string): Instruction[] {
  const lines = content.replace(/^\uFEFF/, "").split(/\r?\n/);
  let escape = "\\";

  // Parser directives: `# key=value` lines at the very top, before any comment or instruction.
  let first = 0;
  for (; first < lines.length; first++) {
    const match = /^\s*#\s*([a-zA-Z]+)\s*=\s*(\S+)\s*$/.exec(lines[first] ?? "");
    if (!match) break;
    if (match[1]?.toLowerCase() === "escape" && (match[2] === "`" || match[2] === "\\")) escape = match[2];
  }

  const instructions: Instruction[] = [];
  let pending: string | undefined;
  for (let index = first; index < lines.length; index++) {
    const line = lines[index] ?? "";
    const trimmed = line.trim();
    // A comment line is dropped, also in the middle of a continued instruction.
    if (trimmed.startsWith("#")) continue;
    if (pending === undefined && trimmed === "") continue;
    const body = line.replace(/\s+$/, "");
    if (body.endsWith(escape)) {
      pending = (pending ?? "") + body.slice(0, -escape.length) + " ";
      continue;
    }
    const logical = ((pending ?? "") + body).trim();
    pending = undefined;
    pushInstruction(instructions, logical);
  }
  if (pending !== undefined) pushInstruction(instructions, pending.trim());
  return instructions;
}

function pushInstruction(instructions: Instruction[], logical: string): void {
  if (logical === "") return;
  const match = /^(\S+)\s*(.*)$/s.exec(logical);
  if (!match) return;
  instructions.push({ keyword: (match[1] ?? "").toUpperCase(), rest: match[2] ?? "" });
}

/** Splits on whitespace, keeping quoted parts together and removing the quotes. */
function splitWords(text: string): string[] {
  const words: string[] = [];
  let current = "";
  let quote: string | undefined;
  let inWord = false;
  for (let index = 0; index < text.length; index++) {
    const char = text[index] ?? "";
    if (quote) {
      if (char === quote) quote = undefined;
      else current += char;
      continue;
    }
    if (char === '"' || char === "'") {
      quote = char;
      inWord = true;
      continue;
    }
    if (/\s/.test(char)) {
      if (inWord) words.push(current);
      current = "";
      inWord = false;
      continue;
    }
    current += char;
    inWord = true;
  }
  if (inWord) words.push(current);
  return words;
}

/**
 * Expands `$NAME`, `${NAME}`, `${NAME:-word}`, `${NAME-word}`, `${NAME:+word}` and `${NAME+word}`
 * the way Dockerfile `FROM` lines do. `lookup` returns `undefined` for an unset variable.
 */
export function expandVariables(text: string, lookup: (name: string) => string | undefined): string {
  let out = "";
  for (let index = 0; index < text.length; index++) {
    const char = text[index] ?? "";
    if (char === "\\" && text[index + 1] === "$") {
      out += "$";
      index++;
      continue;
    }
    if (char !== "$") {
      out += char;
      continue;
    }
    const bare = /^[A-Za-z_][A-Za-z0-9_]*/.exec(text.slice(index + 1));
    if (bare) {
      out += lookup(bare[0]) ?? "";
      index += bare[0].length;
      continue;
    }
    const braced = /^\{([A-Za-z_][A-Za-z0-9_]*)(:?[-+])?/.exec(text.slice(index + 1));
    if (!braced) {
      out += char;
      continue;
    }
    // Find the matching closing brace (the word may hold further `${…}`).
    let depth = 1;
    let close = index + 1 + braced[0].length;
    for (; close < text.length && depth > 0; close++) {
      if (text[close] === "{") depth++;
      else if (text[close] === "}") depth--;
    }
    if (depth > 0) {
      out += text.slice(index);
      break;
    }
    const name = braced[1] ?? "";
    const operator = braced[2];
    const word = text.slice(index + 1 + braced[0].length, close - 1);
    if (!operator && word !== "") {
      // An operator this parser does not know (`${A#x}`, `${A/x/y}`): keep it as written.
      out += text.slice(index, close);
    } else {
      out += applyOperator(lookup(name), operator, () => expandVariables(word, lookup));
    }
    index = close - 1;
  }
  return out;
}

function applyOperator(value: string | undefined, operator: string | undefined, word: () => string): string {
  switch (operator) {
    case undefined:
      return value ?? "";
    case ":-":
      return value === undefined || value === "" ? word() : value;
    case "-":
      return value === undefined ? word() : value;
    case ":+":
      return value === undefined || value === "" ? "" : word();
    default: // "+"
      return value === undefined ? "" : word();
  }
}

/**
 * The image references a Dockerfile's `FROM` lines start from, in order of first appearance,
 * without duplicates.
 *
 * Variables are expanded from the global `ARG`s (those before the first `FROM`): a given build
 * argument wins over the `ARG`'s default; an undeclared variable expands to nothing, as in Docker,
 * except the automatic platform arguments (`TARGETPLATFORM`, `BUILDARCH`, …), which are kept as
 * written because they depend on the machine that builds. `FROM scratch` and `FROM <earlier stage>`
 * are skipped (stage names compare case-insensitively), and so is a reference that expands to
 * nothing (Docker rejects that build with its own error).
 *
 * @param content - the Dockerfile's text
 * @param args - build arguments (`--build-arg`)
 */
export function resolveBaseImages(content: string, args: Readonly<Record<string, string>> = {}): string[] {
  const globals = new Map<string, string | undefined>();
  const stageNames = new Set<string>();
  const images: string[] = [];
  let seenFrom = false;

  const lookup = (name: string): string | undefined => {
    if (Object.hasOwn(args, name) && globals.has(name)) return args[name];
    const declared = globals.get(name);
    if (declared !== undefined) return declared;
    if (AUTOMATIC_PLATFORM_ARGS.has(name)) return `\${${name}}`;
    return undefined;
  };

  for (const { keyword, rest } of parseInstructions(content)) {
    if (keyword === "ARG" && !seenFrom) {
      for (const word of splitWords(rest)) {
        const eq = word.indexOf("=");
        const name = eq === -1 ? word : word.slice(0, eq);
        if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) continue;
        globals.set(name, eq === -1 ? undefined : expandVariables(word.slice(eq + 1), lookup));
      }
      continue;
    }
    if (keyword !== "FROM") continue;
    seenFrom = true;
    const words = splitWords(rest).filter((word) => !word.startsWith("--"));
    const reference = expandVariables(words[0] ?? "", lookup).trim();
    const asIndex = words.findIndex((word, index) => index > 0 && word.toUpperCase() === "AS");
    const stageName = asIndex === -1 ? undefined : words[asIndex + 1];

    if (reference !== "" && reference.toLowerCase() !== "scratch" && !stageNames.has(reference.toLowerCase())) {
      if (!images.includes(reference)) images.push(reference);
    }
    if (stageName) stageNames.add(stageName.toLowerCase());
  }
  return images;
}
