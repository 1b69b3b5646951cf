import { createHash } from "node:crypto";
import { KilnError } from "./errors.js";

/** A deployable service in one environment: written `service@environment`. */
export interface Target {
  /** The service name from the spec's `service` field. */
  readonly service: string;
  /** The environment name (`staging`, `prod`); `default` when the spec has none. */
  readonly environment: string;
}

/** The environment used when none is named. */
export const DEFAULT_ENVIRONMENT = "default";

/** `service@environment`, the way targets are written in output, state and labels. */
export function formatTarget(target: Target): string {
  return `${target.service}@${target.environment}`;
}

/**
 * Parses `service@environment` (or `service`, meaning the default environment).
 * @throws KilnError INVALID_ARGUMENT when the text is not of that form
 */
export function parseTarget(text: string): Target {
  const match = /^([a-z0-9][a-z0-9-]*)(?:@([a-z0-9][a-z0-9-]*))?$/.exec(text);
  if (!match) {
    throw new KilnError("INVALID_ARGUMENT", `"${text}" is not a target: write it as service@environment, e.g. hello-web@staging.`);
  }
  return { service: match[1]!, environment: match[2] ?? DEFAULT_ENVIRONMENT };
}

/** Options of {@link resourceName}. */
export interface ResourceNameOptions {
  /**
   * What kind of resource, written first (`kiln-proxy`): ASCII letters, digits and dashes,
   * starting with a letter or digit. @defaultValue none (the name starts with the service)
   */
  readonly prefix?: string;
  /** Parts after the target (`r3`, a random suffix), in order: ASCII letters, digits and dashes each. */
  readonly parts?: readonly string[];
  /**
   * The platform's limit, in characters; a longer name is cut and ends with `_` and a digest.
   * At least 32. @defaultValue {@link RESOURCE_NAME_MAX_LENGTH}
   */
  readonly maxLength?: number;
}

/** {@link resourceName}'s default length limit (characters): within Docker's names and an AMI name's 128. */
export const RESOURCE_NAME_MAX_LENGTH = 128;

/** The separator of {@link resourceName}: outside the alphabet of service and environment names, so a join is injective. */
const NAME_SEPARATOR = ".";
/** Hex digits of the SHA-256 digest that ends a cut name (48 bits). */
const CUT_DIGEST_LENGTH = 12;
const PREFIX_PATTERN = /^[A-Za-z0-9][A-Za-z0-9-]*$/;
const PART_PATTERN = /^[A-Za-z0-9-]+$/;
const TARGET_PART = /^[a-z0-9][a-z0-9-]*$/;

/**
 * The name Kiln gives a resource of a target (a container, a proxy, a network, a volume, a cloud
 * instance's `Name` tag): `[prefix.]service.environment[.part…]`, e.g. `kiln-proxy.web.prod` or
 * `web.prod.r3.1a2b3c`.
 *
 * Injective: service and environment names hold only lowercase letters, digits and dashes
 * (`NAME_PATTERN`), so the `.` between the pieces can be read back and two different targets (or
 * parts) never get the same name, whatever dashes they contain (`a-b`@`c` is `a-b.c`, `a`@`b-c` is
 * `a.b-c`). A name longer than `maxLength` keeps its first characters and ends with `_` and the
 * first 12 hex digits of the SHA-256 of the whole name; `_` appears in no uncut name, so a cut name
 * never equals an uncut one, and two cut names are equal only if their digests collide.
 *
 * Every name starts with a letter or digit and uses only letters, digits, `.`, `-` and `_`: valid
 * as a Docker container, network or volume name (`[a-zA-Z0-9][a-zA-Z0-9_.-]*`), an AMI name
 * (3–128 characters of letters, digits, ( ) [ ] space . / - ' @ _) and an EC2 tag value (256).
 *
 * @param target - the target; its service and environment must be lowercase letters, digits and dashes
 * @param options - see {@link ResourceNameOptions}
 * @throws KilnError INVALID_ARGUMENT when the target, prefix or a part holds other characters, or
 *   `maxLength` is below 32
 * @see https://docs.docker.com/reference/cli/docker/container/create/ (container names), https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_CreateImage.html (AMI names)
 * @example
 * ```ts
 * resourceName({ service: "web", environment: "prod" }, { prefix: "kiln-proxy" }); // "kiln-proxy.web.prod"
 * resourceName({ service: "web", environment: "prod" }, { parts: ["r3", "1a2b3c"] }); // "web.prod.r3.1a2b3c"
 * ```
 */
export function resourceName(target: Target, options: ResourceNameOptions = {}): string {
  const maxLength = options.maxLength ?? RESOURCE_NAME_MAX_LENGTH;
  if (!Number.isInteger(maxLength) || maxLength < 32) throw new KilnError("INVALID_ARGUMENT", `A resource name's maxLength must be a whole number of at least 32 characters, not ${maxLength}.`);
  for (const [what, value] of [["service", target.service], ["environment", target.environment]] as const) {
    if (!TARGET_PART.test(value)) throw new KilnError("INVALID_ARGUMENT", `The ${what} "${value}" cannot name a resource: it must be lowercase letters, digits and dashes.`);
  }
  const prefix = options.prefix === undefined ? [] : [options.prefix];
  const parts = options.parts ?? [];
  if (options.prefix !== undefined && !PREFIX_PATTERN.test(options.prefix)) {
    throw new KilnError("INVALID_ARGUMENT", `"${options.prefix}" cannot start a resource name: use ASCII letters, digits and dashes, starting with a letter or digit.`);
  }
  for (const part of parts) {
    if (!PART_PATTERN.test(part)) throw new KilnError("INVALID_ARGUMENT", `"${part}" cannot be part of a resource name: use ASCII letters, digits and dashes.`);
  }
  const name = [...prefix, target.service, target.environment, ...parts].join(NAME_SEPARATOR);
  if (name.length <= maxLength) return name;
  const digest = createHash("sha256").update(name).digest("hex").slice(0, CUT_DIGEST_LENGTH);
  return `${name.slice(0, maxLength - CUT_DIGEST_LENGTH - 1)}_${digest}`;
}
