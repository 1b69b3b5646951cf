import type { z } from "zod";
import { KilnError } from "../errors.js";
import type { SpecIssue } from "../spec/issues.js";
import type { ResolvedTarget } from "../spec/resolve.js";

/**
 * The spec sections a provider may own, each under the provider's name:
 *
 * | key | where in `kiln.yaml` | what it holds |
 * | --- | --- | --- |
 * | `instances` | `instances.<provider>` | how each instance is launched (machine size, network, …) |
 * | `base` | `image.machine.base.<provider>` | the base image a machine image is baked from |
 * | `builder` | `image.machine.builder.<provider>` | the VM a machine image is baked on |
 * | `loadBalancer` | `traffic.loadBalancer.<provider>` | the cloud load balancer instances join |
 */
export type ProviderSectionKey = "instances" | "base" | "builder" | "loadBalancer";

/** Every {@link ProviderSectionKey}, in the order the spec reference lists them. */
export const PROVIDER_SECTION_KEYS: readonly ProviderSectionKey[] = ["instances", "base", "builder", "loadBalancer"];

/** Where each section sits in the spec, as a key path whose last part is the provider's name. */
export const PROVIDER_SECTION_PATHS: Readonly<Record<ProviderSectionKey, readonly string[]>> = {
  instances: ["instances"],
  base: ["image", "machine", "base"],
  builder: ["image", "machine", "builder"],
  loadBalancer: ["traffic", "loadBalancer"],
};

/**
 * The zod schemas of a provider's sections. A schema that accepts `undefined` (for example one
 * ending in `.prefault({})`) gives its defaults when the section is absent; any other schema makes
 * its section optional (absent: `undefined`). An environment may override each key of a section
 * that is an object schema (core derives the override schema with `.partial()`), unless
 * {@link ProviderSpec.overrides} gives one.
 */
export type ProviderSections = { readonly [K in ProviderSectionKey]?: z.ZodType };

/** The values of a provider's sections for one target, typed by the provider's own schemas. */
export type SectionValues<S extends ProviderSections> = { readonly [K in ProviderSectionKey]: S[K] extends z.ZodType ? z.output<S[K]> | undefined : undefined };

/** What a provider adds to an image's fingerprint, beyond the recipe core fingerprints itself. */
export interface FingerprintContribution {
  /**
   * A JSON value hashed into the fingerprint beside what core hashes (the recipe's steps and, for
   * machine images, the provider's `image.machine.base` section as written), key order aside: what
   * else decides the image, such as a runtime version. Never put secrets here: the value is hashed,
   * not stored, but it decides when an image is rebuilt. @defaultValue nothing
   */
  readonly inputs?: unknown;
  /** The base images in words, one line each, for `kiln build` output (`ami-0123…`). */
  readonly baseImages?: readonly string[];
}

/**
 * A provider's part of the spec: which recipe it builds images from, the sections it owns (see
 * {@link ProviderSectionKey}), its pre-flight rules, the lines it adds to a plan, and what its
 * settings add to a fingerprint. Core composes these into the spec schema (so `kiln validate`
 * reports a provider's problems with `file:line:column` like its own), carries the sections
 * without knowing what is in them, and hands them back to the provider: the release's
 * `InstanceConfig.providerSettings`, `MachineRecipe.base` and `.builder`, and
 * `TrafficOptions.loadBalancer` hold the target's provider's section values.
 *
 * Every member is pure and cheap: a spec is read by `kiln validate` without the provider's SDK.
 *
 * @example
 * ```ts
 * export const providerSpec = defineProviderSpec({
 *   imageFormat: "machine",
 *   sections: { instances: z.strictObject({ machineType: z.string().default("e2-small") }).prefault({}) },
 *   validate: (target, sections) => (sections.instances?.machineType.startsWith("e2-") ? [] : [{ path: ["instances", "gcp", "machineType"], kind: "invalid-value", message: "…" }]),
 * });
 * ```
 */
export interface ProviderSpec<S extends ProviderSections = ProviderSections> {
  /**
   * Which recipe the provider builds images from: `dockerfile` (container providers, the spec's
   * `image.dockerfile`) or `machine` (VM providers: a base image and provisioning steps, the spec's
   * `image.machine`, which is then required).
   */
  readonly imageFormat: "dockerfile" | "machine";
  /** The sections the provider owns, by key. */
  readonly sections?: S;
  /**
   * The shape of a reference to a secret in the provider's secret store, written
   * `secrets.<name>.from.<provider>` (and `image.dockerfile.secrets.<id>.from.<provider>`); the
   * provider's `Provider.secrets.read` receives it as this schema produced it. Absent: the
   * provider has no secret store.
   */
  readonly secretSource?: z.ZodType;
  /**
   * How the provider can hand a secret to its instances (`secrets.<name>.to`): as an environment
   * variable (`env`) and/or as a file (`file`). A target whose spec asks for another way is
   * refused by validation. @defaultValue none: the provider's instances cannot receive secrets
   */
  readonly secretDelivery?: readonly ("env" | "file")[];
  /**
   * The most instances one target may run on this provider (`instances.count`, a whole number
   * from 1 to the spec's own ceiling, 10000): what the platform can hold for one service, such as
   * the ports of a host's network bridge or a cloud's launch rate and quotas. Validation refuses a
   * larger count at `instances.count` (with its file, line and column), naming this limit. The
   * peak of a rollout (the count plus its surge) is checked against `Provider.limits` at plan time.
   * @defaultValue 1000 (`DEFAULT_MAX_INSTANCE_COUNT`)
   */
  readonly maxInstanceCount?: number;
  /**
   * Environment override schemas, for sections whose override is not simply every key optional.
   * @defaultValue the section's schema with `.partial()` (objects), else the schema itself
   */
  readonly overrides?: { readonly [K in ProviderSectionKey]?: z.ZodType };
  /**
   * Pre-flight rules (names, tag limits, sizes, settings the provider cannot honour) for one
   * target that uses this provider, run by validation for the top level and for every
   * environment. Each issue's `path` is from the spec's top (`["instances", "labels", "team"]`);
   * core adds the `environments.<name>` prefix and the position in the file. Pure.
   */
  validate?(target: ResolvedTarget, sections: SectionValues<S>): SpecIssue[];
  /**
   * Lines the provider adds to a plan (`kiln plan`), after core's own, each without indentation:
   * e.g. `traffic: load balancer … → port http; …`. When the target has a load balancer, the
   * provider says where its traffic goes here (core then prints no traffic line of its own). Pure.
   */
  planLines?(target: ResolvedTarget, sections: SectionValues<S>): string[];
  /** What the provider's settings add to a machine image's fingerprint (the base image as written). Pure. */
  fingerprint?(target: ResolvedTarget, sections: SectionValues<S>): FingerprintContribution;
}

/**
 * Identity helper that types a provider spec: the sections' values given to `validate`,
 * `planLines` and `fingerprint` are typed by their schemas.
 */
export function defineProviderSpec<S extends ProviderSections>(spec: ProviderSpec<S>): ProviderSpec<S> {
  return spec;
}

/** A provider without a spec of its own: Dockerfile images, no sections. */
export const DEFAULT_PROVIDER_SPEC: ProviderSpec = { imageFormat: "dockerfile" };

/**
 * The target's provider's section values, as {@link ProviderSpec} members receive them. A
 * provider's own code may call it with its spec type to read its settings typed.
 */
export function sectionValues<S extends ProviderSections = ProviderSections>(target: ResolvedTarget): SectionValues<S> {
  return {
    instances: target.instance.providerSettings,
    base: target.machine?.base,
    builder: target.machine?.builder,
    loadBalancer: target.traffic.loadBalancer,
  } as SectionValues<S>;
}

/**
 * What {@link readSection} returns for `key`: the schema's output; `undefined` too unless the
 * schema accepts an absent section (then its defaults always come back).
 */
export type ReadSection<S extends ProviderSections, K extends ProviderSectionKey> = S[K] extends z.ZodType
  ? undefined extends z.input<S[K]>
    ? z.output<S[K]>
    : z.output<S[K]> | undefined
  : undefined;

/**
 * Reads a section core handed back to the provider (`InstanceConfig.providerSettings`,
 * `MachineRecipe.base` or `.builder`, `TrafficOptions.loadBalancer`: `unknown` to core), checked and
 * typed by the provider's own schema for `key`: the value as that schema parses it, defaults
 * applied. An absent section gives the schema's defaults when it accepts `undefined` (`.prefault({})`),
 * else `undefined`; without a schema for `key`, `undefined`. A release recorded by an earlier version
 * of the provider is read through today's schema, so a changed shape fails here, loudly, not later.
 *
 * @example
 * ```ts
 * const settings = readSection(providerSpec, "instances", request.config.providerSettings); // typed by the schema
 * ```
 * @throws KilnError INVALID_ARGUMENT when the value does not match the schema (the message names the
 *   section and the first problem)
 */
export function readSection<S extends ProviderSections, K extends ProviderSectionKey>(spec: ProviderSpec<S>, key: K, value: unknown): ReadSection<S, K> {
  const schema = spec.sections?.[key];
  if (!schema) return undefined as ReadSection<S, K>;
  const parsed = schema.safeParse(value);
  if (parsed.success) return parsed.data as ReadSection<S, K>;
  if (value === undefined) return undefined as ReadSection<S, K>;
  const issue = parsed.error.issues[0];
  const where = [...PROVIDER_SECTION_PATHS[key], "<provider>", ...(issue?.path ?? []).map(String)].join(".");
  throw new KilnError(
    "INVALID_ARGUMENT",
    `The ${where} setting handed to the provider does not match its schema (${issue?.message ?? "invalid"}); a release recorded by another version of the provider may need a new deploy with today's spec.`,
    { details: { section: key } },
  );
}
