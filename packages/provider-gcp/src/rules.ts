/**
 * Compute Engine's published rules for the names, labels and metadata a spec gives, as pure
 * checks that return problems in words (each citing the rule's page), for the spec's pre-flight
 * validation. No SDK.
 * @module
 */

/** Where each rule is published, for messages and docs. */
export const GCE_RULE_URLS = {
  /** Resource names: 1–63 characters, `[a-z]([-a-z0-9]*[a-z0-9])?` (RFC 1035). */
  names: "https://cloud.google.com/compute/docs/naming-resources#resource-name-format",
  /** Labels: count, key and value rules. */
  labels: "https://cloud.google.com/compute/docs/labeling-resources#requirements",
  /** Metadata: key pattern and size, value size, total size (the `Metadata` resource of the v1 REST reference). */
  metadata: "https://cloud.google.com/compute/docs/reference/rest/v1/Metadata",
} as const;

/** Compute Engine's resource name rule: 1–63 characters, a lowercase letter first, lowercase letters, digits and dashes, no dash last. */
export const GCE_NAME_PATTERN = /^[a-z]([-a-z0-9]*[a-z0-9])?$/;
/** The longest Compute Engine resource name (characters). */
export const GCE_NAME_MAX_LENGTH = 63;

/** Compute Engine's label rules. @see {@link GCE_RULE_URLS}.labels */
export const GCE_LABEL_RULES = {
  /** Labels per resource, Kiln's own included. */
  maxLabels: 64,
  /** Characters in a key (at least 1). */
  maxKeyLength: 63,
  /** Characters in a value (0 allowed). */
  maxValueLength: 63,
  /** UTF-8 bytes in a key, and in a value. */
  maxBytes: 128,
} as const;

/**
 * A label key: a lowercase letter or an international character (a letter without case, `\p{Lo}`)
 * first, then lowercase letters, letters without case, digits, `_` and `-`.
 */
const LABEL_KEY = /^[\p{Ll}\p{Lo}][\p{Ll}\p{Lo}\p{N}_-]*$/u;
/** A label value: lowercase letters, other letters without case, digits, `_` and `-` (may be empty). */
const LABEL_VALUE = /^[\p{Ll}\p{Lo}\p{N}_-]*$/u;

/** Compute Engine's metadata rules. @see {@link GCE_RULE_URLS}.metadata */
export const GCE_METADATA_RULES = {
  /** A key's bytes must be fewer than this. */
  keyBytesBelow: 128,
  /** The most bytes of one value: 256 KiB. */
  maxValueBytes: 256 * 1024,
  /** The bytes of all keys and values together must be fewer than this: 512 KiB. */
  totalBytesBelow: 512 * 1024,
} as const;

/** A metadata key: letters, digits, `-` and `_`. */
const METADATA_KEY = /^[a-zA-Z0-9_-]+$/;

/**
 * Metadata keys Kiln writes itself on the VMs it creates, which a spec may not set:
 * `startup-script` (the bake's provisioning, and the instance's own start-up), `enable-guest-attributes`
 * (how a VM reports its status), and every key starting `kiln-`.
 */
export const KILN_RESERVED_METADATA_KEYS: readonly string[] = ["startup-script", "enable-guest-attributes"];
/** The prefix of the metadata keys and label keys Kiln keeps for itself. */
export const KILN_KEY_PREFIX = "kiln-";

/** A problem found by one of the checks below: the offending key (when there is one) and the message. */
export interface RuleProblem {
  readonly key?: string;
  readonly message: string;
}

const bytes = (text: string): number => Buffer.byteLength(text, "utf8");
const characters = (text: string): number => [...text].length;

/**
 * Why `name` is not a valid Compute Engine resource name (instance, image, image family, disk,
 * instance group, backend service, network), or undefined when it is.
 * @param what - the kind of name, for the message (`an image family`)
 * @see {@link GCE_RULE_URLS}.names
 */
export function gceNameProblem(name: string, what = "a Compute Engine resource name"): string | undefined {
  if (name.length === 0 || name.length > GCE_NAME_MAX_LENGTH) {
    return `${what} is 1 to ${GCE_NAME_MAX_LENGTH} characters; "${shown(name)}" has ${name.length} (${GCE_RULE_URLS.names})`;
  }
  if (!GCE_NAME_PATTERN.test(name)) {
    return `${what} starts with a lowercase letter, holds lowercase letters, digits and dashes, and does not end with a dash; "${shown(name)}" does not (${GCE_RULE_URLS.names})`;
  }
  return undefined;
}

/**
 * Problems of `labels` under {@link GCE_LABEL_RULES}, each with its key; `kilnLabels` is how many
 * labels Kiln adds itself to the same resource, counted against the 64.
 * @see {@link GCE_RULE_URLS}.labels
 */
export function gceLabelProblems(labels: Readonly<Record<string, string>>, kilnLabels: number): RuleProblem[] {
  const problems: RuleProblem[] = [];
  const entries = Object.entries(labels);
  const rule = `(${GCE_RULE_URLS.labels})`;
  if (entries.length + kilnLabels > GCE_LABEL_RULES.maxLabels) {
    problems.push({
      message: `Compute Engine allows ${GCE_LABEL_RULES.maxLabels} labels per resource and Kiln adds ${kilnLabels} of its own, so at most ${GCE_LABEL_RULES.maxLabels - kilnLabels} fit; there are ${entries.length} ${rule}`,
    });
  }
  for (const [key, value] of entries) {
    if (characters(key) < 1 || characters(key) > GCE_LABEL_RULES.maxKeyLength) {
      problems.push({ key, message: `a label key is 1 to ${GCE_LABEL_RULES.maxKeyLength} characters; this one has ${characters(key)} ${rule}` });
    } else if (!LABEL_KEY.test(key)) {
      problems.push({ key, message: `a label key starts with a lowercase letter (or a letter without case) and holds only lowercase letters, digits, "_" and "-" (no dots, no uppercase) ${rule}` });
    }
    if (bytes(key) > GCE_LABEL_RULES.maxBytes) problems.push({ key, message: `a label key is at most ${GCE_LABEL_RULES.maxBytes} bytes (UTF-8); this one has ${bytes(key)} ${rule}` });
    if (characters(value) > GCE_LABEL_RULES.maxValueLength) {
      problems.push({ key, message: `a label value is at most ${GCE_LABEL_RULES.maxValueLength} characters; this one has ${characters(value)} ${rule}` });
    } else if (!LABEL_VALUE.test(value)) {
      problems.push({ key, message: `a label value holds only lowercase letters, digits, "_" and "-" (no uppercase, dots, colons or spaces); "${shown(value)}" does not ${rule}` });
    }
    if (bytes(value) > GCE_LABEL_RULES.maxBytes) problems.push({ key, message: `a label value is at most ${GCE_LABEL_RULES.maxBytes} bytes (UTF-8); this one has ${bytes(value)} ${rule}` });
  }
  return problems;
}

/** Problems of a spec's own labels that Compute Engine would take but Kiln keeps for itself: keys starting `kiln-`. */
export function reservedLabelProblems(labels: Readonly<Record<string, string>>): RuleProblem[] {
  return Object.keys(labels)
    .filter((key) => key.startsWith(KILN_KEY_PREFIX))
    .map((key) => ({ key, message: `label keys starting with "${KILN_KEY_PREFIX}" are Kiln's own; choose another key` }));
}

/**
 * Problems of user metadata under {@link GCE_METADATA_RULES}, each with its key: the key's
 * characters and size, each value's size, keys Kiln reserves, and the total size with
 * `reservedBytes` (what Kiln adds itself, such as its start-up script) counted in.
 * @see {@link GCE_RULE_URLS}.metadata
 */
export function gceMetadataProblems(metadata: Readonly<Record<string, string>>, reservedBytes = 0): RuleProblem[] {
  const problems: RuleProblem[] = [];
  const rule = `(${GCE_RULE_URLS.metadata})`;
  let total = reservedBytes;
  for (const [key, value] of Object.entries(metadata)) {
    total += bytes(key) + bytes(value);
    if (!METADATA_KEY.test(key)) problems.push({ key, message: `a metadata key holds only letters, digits, "-" and "_" ${rule}` });
    if (bytes(key) >= GCE_METADATA_RULES.keyBytesBelow) problems.push({ key, message: `a metadata key is under ${GCE_METADATA_RULES.keyBytesBelow} bytes; this one has ${bytes(key)} ${rule}` });
    if (KILN_RESERVED_METADATA_KEYS.includes(key) || key.startsWith(KILN_KEY_PREFIX)) {
      problems.push({
        key,
        message: `"${key}" is written by Kiln itself (${KILN_RESERVED_METADATA_KEYS.join(", ")} and keys starting "${KILN_KEY_PREFIX}"); provision the image with image.machine.provision instead, or choose another key`,
      });
    }
    if (bytes(value) > GCE_METADATA_RULES.maxValueBytes) {
      problems.push({ key, message: `a metadata value is at most ${GCE_METADATA_RULES.maxValueBytes} bytes (256 KiB); this one has ${bytes(value)} ${rule}` });
    }
  }
  if (total >= GCE_METADATA_RULES.totalBytesBelow) {
    problems.push({
      message: `all metadata keys and values together must be under ${GCE_METADATA_RULES.totalBytesBelow} bytes (512 KiB); these have ${total}${reservedBytes > 0 ? `, ${reservedBytes} of them Kiln's own` : ""} ${rule}`,
    });
  }
  return problems;
}

/** The first 40 characters of a value, for messages. */
function shown(text: string): string {
  return text.length > 40 ? `${text.slice(0, 37)}…` : text;
}
