/**
 * The rule for the names a spec gives (service, environment, provider): what it allows, and, for a
 * name that breaks it, which part and where, in words a newcomer can act on.
 * @module
 */

/** The longest name, in characters: with Kiln's suffixes, resource names stay within Docker's and the clouds' limits. */
export const NAME_MAX_LENGTH = 40;

/** A valid name: lowercase ASCII letters, digits and dashes, starting with a letter and not ending with a dash. */
export const NAME_PATTERN = /^[a-z]([a-z0-9-]{0,38}[a-z0-9])?$/;

/** The rule in words. */
export const NAME_RULE = `lowercase letters, digits and dashes, starting with a letter, not ending with a dash, at most ${NAME_MAX_LENGTH} characters`;

/** How many offending characters a message lists before it says "and N more". */
const LISTED_CHARACTERS = 3;

/**
 * What is wrong with `name` under {@link NAME_PATTERN}, one phrase per broken rule (empty when it
 * is valid): the characters not allowed with their positions (1-based, by character; uppercase
 * letters get their lowercase form as a fix), a wrong first or last character, the length over
 * the limit.
 *
 * @example
 * ```ts
 * nameProblems("Web_App"); // ['"W" at position 1 and "A" at 5 are uppercase (use "w", "a")', '"_" at position 4 is not allowed']
 * ```
 */
export function nameProblems(name: string): string[] {
  const characters = [...name];
  if (characters.length === 0) return ["it is empty"];
  const problems: string[] = [];
  const uppercase: Array<[string, number]> = [];
  const other: Array<[string, number]> = [];
  characters.forEach((character, index) => {
    if (/[a-z0-9-]/.test(character)) return;
    (/[A-Z]/.test(character) ? uppercase : other).push([character, index + 1]);
  });
  if (uppercase.length > 0) {
    problems.push(`${listed(uppercase)} ${uppercase.length === 1 ? "is" : "are"} uppercase (use ${[...new Set(uppercase.map(([c]) => `"${c.toLowerCase()}"`))].join(", ")})`);
  }
  if (other.length > 0) {
    const nonAscii = other.some(([c]) => c.codePointAt(0)! > 0x7f);
    problems.push(`${listed(other)} ${other.length === 1 ? "is" : "are"} not allowed${nonAscii ? " (only ASCII letters)" : ""}`);
  }
  const first = characters[0]!;
  if (/[0-9-]/.test(first)) problems.push(`it starts with "${first}" (it must start with a letter)`);
  if (characters.length > 1 && characters.at(-1) === "-") problems.push(`it ends with "-"`);
  if (characters.length > NAME_MAX_LENGTH) problems.push(`it is ${characters.length} characters, ${characters.length - NAME_MAX_LENGTH} over the limit of ${NAME_MAX_LENGTH}`);
  return problems;
}

/**
 * The message for a name that breaks the rule: `a service name: "Web_App": "_" at position 4 is
 * not allowed; …; use lowercase letters, …`. `what` names the kind of name (`a service name`).
 */
export function nameMessage(what: string, name: unknown): string {
  const shown = typeof name === "string" ? (name.length > 48 ? `"${name.slice(0, 45)}…"` : `"${name}"`) : String(name);
  const problems = typeof name === "string" ? nameProblems(name) : [];
  return `${what}: ${shown}${problems.length > 0 ? `: ${problems.join("; ")}` : ""}; use ${NAME_RULE}`;
}

/** `"W" at position 1 and "A" at 5`, at most {@link LISTED_CHARACTERS} of them, then `and N more`. */
function listed(found: ReadonlyArray<[string, number]>): string {
  const shown = found.slice(0, LISTED_CHARACTERS).map(([character, position], index) => `"${character}" at ${index === 0 ? "position " : ""}${position}`);
  const more = found.length - shown.length;
  if (more > 0) return `${shown.join(", ")} and ${more} more`;
  return shown.length === 1 ? shown[0]! : `${shown.slice(0, -1).join(", ")} and ${shown.at(-1)!}`;
}
