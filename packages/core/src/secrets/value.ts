import { inspect } from "node:util";

/** What a {@link SecretValue} shows wherever it is printed, serialised or logged. */
export const REDACTED = "[secret]";

/**
 * A secret's value, held only in memory while an operation needs it. It never shows itself by
 * accident: `JSON.stringify`, template strings, `String()`, `util.inspect` (and so `console.log`
 * and loggers) all give {@link REDACTED}; only {@link SecretValue.reveal} gives the value, and
 * only a provider handing it to an instance or a build should call it.
 */
export class SecretValue {
  readonly #value: string;

  /** @param value - the secret itself */
  constructor(value: string) {
    this.#value = value;
  }

  /** The secret itself: for a provider to hand to an instance or a build, never to print. */
  reveal(): string {
    return this.#value;
  }

  /** Its length in bytes (UTF-8), for limits that a provider must check. */
  get byteLength(): number {
    return Buffer.byteLength(this.#value);
  }

  /** {@link REDACTED}. */
  toString(): string {
    return REDACTED;
  }

  /** {@link REDACTED}. */
  toJSON(): string {
    return REDACTED;
  }

  /** {@link REDACTED}, for `util.inspect` and `console.log`. */
  [inspect.custom](): string {
    return REDACTED;
  }
}

/**
 * The forms a secret could take in text Kiln did not write (an engine's message, build output):
 * the value, its JSON-escaped form, and each line of a multi-line value (8 characters or more).
 */
function secretForms(value: string): string[] {
  const lines = value.includes("\n") ? value.split(/\r?\n/).filter((line) => line.trim().length >= 8) : [];
  return [...new Set([value, JSON.stringify(value).slice(1, -1), ...lines])].filter((form) => form.length > 0).sort((a, b) => b.length - a.length);
}

/**
 * `text` with every form of every secret in `values` (the value, JSON-escaped, each long line of a
 * multi-line value) replaced by {@link REDACTED}: for text Kiln relays but did not write, such as
 * build output or an engine's error message.
 */
export function redactSecrets(text: string, values: readonly SecretValue[]): string {
  let out = text;
  for (const value of values) for (const form of secretForms(value.reveal())) out = out.split(form).join(REDACTED);
  return out;
}
