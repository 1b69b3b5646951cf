/**
 * The names Kiln gives the Compute Engine resources it creates: instances (which are also the
 * members of an instance group), the bake's builder VM and its disk, and images. Always valid
 * under Compute Engine's rule (1–63 characters, `[a-z]([-a-z0-9]*[a-z0-9])?`), and never equal for
 * different inputs, however long the inputs are.
 *
 * Core's `resourceName` joins with `.`, which Compute Engine names cannot hold, so this module has
 * its own one-to-one mapping; see {@link gceName}.
 * @module
 */
import { createHash } from "node:crypto";
import { KilnError, type Target } from "@kilnjs/core/spec";
import { GCE_NAME_MAX_LENGTH } from "./rules.js";

/** Hex digits of the SHA-256 digest that ends a cut name (64 bits). */
export const GCE_NAME_DIGEST_LENGTH = 16;
/** The marker before a cut name's digest: a run of exactly three dashes, which no uncut name holds. */
const CUT_MARKER = "---";
/** A part: lowercase letters, digits and dashes, neither starting nor ending with a dash. */
const PART = /^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$/;

/**
 * Joins name parts into one Compute Engine resource name, one-to-one.
 *
 * Each part is lowercase letters, digits and dashes, neither starting nor ending with a dash (a
 * service or environment name, `r12`, a number, a {@link textToken}); the first starts with a
 * letter. Dashes inside a part are doubled and parts are joined with a single dash:
 * `["my-app", "prod", "r3"]` → `my--app-prod-r3`. Every run of dashes in the result is then
 * either exactly one long (a join: the characters on both sides are not dashes, since no part
 * starts or ends with one) or of even length (dashes of a part), so the parts can be read back,
 * and different part lists give different names (`a-b`,`c` → `a--b-c`; `a`,`b-c` → `a-b--c`).
 *
 * A joined name longer than `maxLength` keeps its first characters (trailing dashes dropped),
 * then `---` and the first 16 hex digits of the SHA-256 of the whole joined name. A run of exactly
 * three dashes occurs in no uncut name, so a cut name never equals an uncut one; two cut names
 * are equal only if their 64-bit digests are (for a billion cut names in one namespace, a chance
 * of about 3 in 100).
 *
 * @param parts - the parts, at least one
 * @param maxLength - the limit in characters, 32 to 63 (a managed instance group's
 *   `baseInstanceName` takes 58) @defaultValue 63
 * @throws KilnError INVALID_ARGUMENT when a part breaks its rule, the first does not start with a
 *   letter, or `maxLength` is out of range
 * @see https://cloud.google.com/compute/docs/naming-resources#resource-name-format
 */
export function gceName(parts: readonly string[], maxLength: number = GCE_NAME_MAX_LENGTH): string {
  if (!Number.isInteger(maxLength) || maxLength < 32 || maxLength > GCE_NAME_MAX_LENGTH) {
    throw new KilnError("INVALID_ARGUMENT", `A Compute Engine name's maxLength must be a whole number from 32 to ${GCE_NAME_MAX_LENGTH}, not ${maxLength}.`);
  }
  if (parts.length === 0 || !/^[a-z]/.test(parts[0]!)) throw new KilnError("INVALID_ARGUMENT", `A Compute Engine name starts with a part that starts with a lowercase letter; got ${JSON.stringify(parts)}.`);
  for (const part of parts) {
    if (!PART.test(part)) throw new KilnError("INVALID_ARGUMENT", `"${part}" cannot be part of a Compute Engine name: use lowercase letters, digits and dashes, not starting or ending with a dash.`);
  }
  const joined = parts.map((part) => part.replaceAll("-", "--")).join("-");
  if (joined.length <= maxLength) return joined;
  const digest = createHash("sha256").update(joined).digest("hex").slice(0, GCE_NAME_DIGEST_LENGTH);
  return `${joined.slice(0, maxLength - CUT_MARKER.length - GCE_NAME_DIGEST_LENGTH).replace(/-+$/, "")}${CUT_MARKER}${digest}`;
}

/**
 * Any non-empty text (a journal step's identity, a launch key such as `20261207041400-1a2b3c4d:b1`)
 * as a name part, one-to-one: `a`–`y`, digits and inner dashes stay; `z` becomes `zz`; every
 * other character (and a dash at either end) becomes `z` and two hex digits per UTF-8 byte
 * (`:` → `z3a`, `A` → `z41`). After a `z` comes either `z` or a hex digit, so the text can be read
 * back.
 * @throws KilnError INVALID_ARGUMENT for empty text
 */
export function textToken(text: string): string {
  if (text.length === 0) throw new KilnError("INVALID_ARGUMENT", "An empty text cannot be part of a Compute Engine name.");
  const characters = [...text];
  return characters
    .map((character, index) => {
      if (/[a-y0-9]/.test(character)) return character;
      if (character === "-" && index > 0 && index < characters.length - 1) return character;
      if (character === "z") return "zz";
      return [...Buffer.from(character, "utf8")].map((byte) => `z${byte.toString(16).padStart(2, "0")}`).join("");
    })
    .join("");
}

/** A fingerprint (`sha256:` + 64 hex digits) as a name part: its 256 bits in 50 base-36 digits. */
function fingerprintToken(fingerprint: string): string {
  const hex = /^sha256:([0-9a-f]{64})$/.exec(fingerprint)?.[1];
  if (hex === undefined) throw new KilnError("INVALID_ARGUMENT", `"${fingerprint}" is not a fingerprint (sha256: and 64 hex digits).`);
  return BigInt(`0x${hex}`).toString(36).padStart(50, "0");
}

/** What names one instance: see {@link instanceName}. */
export interface InstanceNameInput {
  readonly target: Target;
  /** The release number. */
  readonly release: number;
  /** The launch step's identity (`LaunchRequest.idempotencyKey`). */
  readonly launchKey: string;
  /** The instance's position in its launch, from 0. */
  readonly index: number;
}

/**
 * The name of an instance (and of its boot disk, and its entry in an instance group):
 * `service-environment-r<release>-<launch key>-<index>`, through {@link gceName}, e.g.
 * `web-prod-r3-20261207041400--1a2b3c4dz3ab1-0`. The same launch step gives the same names, so a
 * retried launch meets its own instances (`alreadyExists`) instead of starting more.
 * @throws KilnError INVALID_ARGUMENT for a release or index that is not a whole number, or a target that is not lowercase letters, digits and dashes
 */
export function instanceName(input: InstanceNameInput, maxLength?: number): string {
  wholeNumber("release", input.release);
  wholeNumber("index", input.index);
  return gceName([input.target.service, input.target.environment, `r${input.release}`, textToken(input.launchKey), String(input.index)], maxLength);
}

/** What names a bake's temporary resources: see {@link builderName}. */
export interface BuilderNameInput {
  readonly target: Target;
  /** The bake step's identity (for example the rollout id and the step; a `kiln build` of its own: a fresh id). */
  readonly step: string;
}

/**
 * The name of a bake's builder VM: `service-environment-<step>-bake`, through {@link gceName}.
 * Four parts, where an instance name has five: the two never meet.
 */
export function builderName(input: BuilderNameInput): string {
  return gceName([input.target.service, input.target.environment, textToken(input.step), "bake"]);
}

/**
 * The name of a builder VM's boot disk, which is kept (auto-delete off) until the image is made
 * from it: the builder's parts and `disk`. Five parts like an instance's boot disk (named after
 * its instance), but ending with `disk` where those end with a number.
 */
export function builderDiskName(input: BuilderNameInput): string {
  return gceName([input.target.service, input.target.environment, textToken(input.step), "bake", "disk"]);
}

/**
 * The name of a service's image baked from a fingerprint: `service-<fingerprint in base 36>`,
 * through {@link gceName}. One image per service and fingerprint: a second bake of the same
 * recipe meets the first's image (`alreadyExists`).
 * @throws KilnError INVALID_ARGUMENT for a fingerprint that is not `sha256:` and 64 hex digits
 */
export function imageName(input: { readonly service: string; readonly fingerprint: string }): string {
  return gceName([input.service, fingerprintToken(input.fingerprint)]);
}

function wholeNumber(what: string, value: number): void {
  if (!Number.isSafeInteger(value) || value < 0) throw new KilnError("INVALID_ARGUMENT", `An instance's ${what} must be a whole number of at least 0, not ${value}.`);
}
