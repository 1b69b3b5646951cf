/**
 * Kiln's labels in Compute Engine's label alphabet. Core spells its label keys `dev.kiln.service`
 * and its values freely (`sha256:…`, `rollout:b1`); Compute Engine label keys and values allow only
 * lowercase letters, digits, `_` and `-`, 63 characters at most. This module maps core's keys
 * one-to-one to `kiln-…` keys and encodes values reversibly where they fit, so that the provider
 * can filter by a label and read Kiln's labels back.
 * @module
 */
import { createHash } from "node:crypto";
import { LABELS, type LabelKey } from "@kilnjs/core/spec";
import { GCE_LABEL_RULES } from "./rules.js";

/**
 * The Compute Engine label key of each of core's {@link LABELS}, and the provider's own keys for
 * temporary resources. Keys start `kiln-`, which spec labels may not use.
 */
export const GCE_LABEL_KEYS = {
  [LABELS.managed]: "kiln-managed",
  [LABELS.service]: "kiln-service",
  [LABELS.environment]: "kiln-environment",
  [LABELS.release]: "kiln-release",
  [LABELS.rollout]: "kiln-rollout",
  [LABELS.fingerprint]: "kiln-fingerprint",
  [LABELS.launchKey]: "kiln-launch-key",
  [LABELS.ports]: "kiln-ports",
} as const satisfies Record<LabelKey, string>;

/** The provider's own label keys, beside the ones mapped from core's {@link LABELS}. */
export const GCE_PROVIDER_LABEL_KEYS = {
  /** What a temporary resource is (`builder`), so a sweep finds bake leftovers. */
  role: "kiln-role",
  /**
   * When a temporary resource (a builder VM, its disk) becomes a leftover that any later run may
   * delete: whole seconds since 1970-01-01 UTC, as decimal digits ({@link expiryLabelValue}).
   */
  expires: "kiln-expires",
} as const;

/** How many labels Kiln puts on an instance itself: one per core label. Counted against Compute Engine's 64. */
export const GCE_KILN_INSTANCE_LABEL_COUNT = Object.keys(GCE_LABEL_KEYS).length;

/**
 * How many labels Kiln puts on a bake's resources (builder VM, builder disk, image) at most: core's
 * image labels (managed, service, fingerprint, release, rollout), environment, and the
 * provider's role and expiry. Counted against Compute Engine's 64 with `image.machine.builder.gcp.labels`.
 */
export const GCE_KILN_BAKE_LABEL_COUNT = 8;

/** Characters that pass through a label value unchanged. `_` is the escape character, so it is escaped itself. */
const PLAIN = /[a-z0-9-]/;
/** A core fingerprint: `sha256:` and 64 lowercase hex digits. */
const FINGERPRINT = /^sha256:([0-9a-f]{64})$/;
/** Base-36 digits of a 256-bit number: 36^50 > 2^256. */
const FINGERPRINT_DIGITS = 50;
/** Hex digits of the SHA-256 digest that ends a value too long to encode (64 bits). */
const HASH_DIGITS = 16;

/**
 * Encodes any text as a valid Compute Engine label value (at most 63 characters of `[a-z0-9_-]`).
 *
 * - Lowercase ASCII letters, digits and `-` stay as they are; every other character becomes `_`
 *   followed by the two lowercase hex digits of each of its UTF-8 bytes (`_` itself is `_5f`,
 *   `:` is `_3a`, `A` is `_41`). Decoding reads `_hh` back; the mapping is one-to-one.
 * - A core fingerprint (`sha256:` + 64 hex digits, 71 characters) becomes `_s` + its 256 bits in
 *   50 base-36 digits: reversible, and short enough.
 * - Anything whose encoding is still longer than 63 characters becomes its encoding's first
 *   characters (never cutting an escape), `_h`, and 16 hex digits of the SHA-256 of the text:
 *   equal texts still give equal values (so a label filter finds them), but the text cannot be
 *   read back ({@link decodeLabelValue} returns undefined); the provider keeps such values
 *   elsewhere when it must read them (instance metadata).
 *
 * `_s` and `_h` never occur in the first form (`_` is always followed by two hex digits there),
 * so the three forms cannot be confused.
 * @see https://cloud.google.com/compute/docs/labeling-resources#requirements
 * @example
 * ```ts
 * encodeLabelValue("web"); // "web"
 * encodeLabelValue("20261207-1a2b:b1"); // "20261207-1a2b_3ab1"
 * ```
 */
export function encodeLabelValue(text: string): string {
  const fingerprint = FINGERPRINT.exec(text);
  if (fingerprint) return `_s${BigInt(`0x${fingerprint[1]!}`).toString(36).padStart(FINGERPRINT_DIGITS, "0")}`;
  const pieces = [...text].map((character) => (PLAIN.test(character) ? character : [...Buffer.from(character, "utf8")].map((byte) => `_${byte.toString(16).padStart(2, "0")}`).join("")));
  const escaped = pieces.join("");
  if (escaped.length <= GCE_LABEL_RULES.maxValueLength) return escaped;
  const room = GCE_LABEL_RULES.maxValueLength - 2 - HASH_DIGITS;
  let kept = "";
  for (const piece of pieces) {
    if (kept.length + piece.length > room) break;
    kept += piece;
  }
  return `${kept}_h${createHash("sha256").update(text).digest("hex").slice(0, HASH_DIGITS)}`;
}

/**
 * Reads back a value {@link encodeLabelValue} wrote: the text, or undefined when the value was
 * hashed (too long to keep) or is not in Kiln's encoding.
 */
export function decodeLabelValue(value: string): string | undefined {
  const fingerprint = /^_s([0-9a-z]{50})$/.exec(value);
  if (fingerprint) {
    const hex = [...fingerprint[1]!].reduce((sum, digit) => sum * 36n + BigInt(parseInt(digit, 36)), 0n).toString(16);
    return hex.length <= 64 ? `sha256:${hex.padStart(64, "0")}` : undefined;
  }
  const bytes: number[] = [];
  for (let index = 0; index < value.length; index++) {
    const character = value[index]!;
    if (character !== "_") {
      if (!PLAIN.test(character)) return undefined;
      bytes.push(character.charCodeAt(0));
      continue;
    }
    const hex = value.slice(index + 1, index + 3);
    if (!/^[0-9a-f]{2}$/.test(hex)) return undefined;
    bytes.push(parseInt(hex, 16));
    index += 2;
  }
  const text = new TextDecoder("utf-8", { fatal: true });
  try {
    return text.decode(Uint8Array.from(bytes));
  } catch {
    return undefined;
  }
}

/**
 * Core's labels (keys from {@link LABELS}) as Compute Engine labels: each key mapped by
 * {@link GCE_LABEL_KEYS}, each value by {@link encodeLabelValue}. Keys core does not know pass
 * through unchanged (the spec's own labels, already valid: validation checks them).
 */
export function toGceLabels(labels: Readonly<Record<string, string>>): Record<string, string> {
  const mapped: Record<string, string> = {};
  for (const [key, value] of Object.entries(labels)) {
    const gceKey = (GCE_LABEL_KEYS as Readonly<Record<string, string>>)[key];
    mapped[gceKey ?? key] = gceKey === undefined ? value : encodeLabelValue(value);
  }
  return mapped;
}

/**
 * Compute Engine labels back to core's: `kiln-…` keys of {@link GCE_LABEL_KEYS} become core's
 * keys with their values decoded (a hashed value is left out), other labels pass through.
 */
export function fromGceLabels(labels: Readonly<Record<string, string>> | null | undefined): Record<string, string> {
  const coreKeyOf = new Map<string, string>(Object.entries(GCE_LABEL_KEYS).map(([core, gce]) => [gce, core]));
  const mapped: Record<string, string> = {};
  for (const [key, value] of Object.entries(labels ?? {})) {
    const coreKey = coreKeyOf.get(key);
    if (coreKey === undefined) {
      mapped[key] = value;
      continue;
    }
    const decoded = decodeLabelValue(value);
    if (decoded !== undefined) mapped[coreKey] = decoded;
  }
  return mapped;
}

/**
 * The value of the {@link GCE_PROVIDER_LABEL_KEYS}.expires label: whole seconds since 1970 (UTC)
 * as decimal digits, a valid label value that sorts by time for the next few centuries.
 * @param at - the moment the resource expires
 */
export function expiryLabelValue(at: Date): string {
  return String(Math.floor(at.getTime() / 1000));
}

/** The moment an {@link expiryLabelValue} names, or undefined for a value that is not one. */
export function parseExpiryLabelValue(value: string | undefined): Date | undefined {
  return value !== undefined && /^\d{1,12}$/.test(value) ? new Date(Number(value) * 1000) : undefined;
}
