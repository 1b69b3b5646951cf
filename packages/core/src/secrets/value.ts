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
