import { distance } from "fastest-levenshtein";
import { z } from "zod";
import type { ProviderSectionKey, ProviderSpec } from "../provider/spec.js";
import {
  environmentSchema,
  imageSchema,
  instancesSchema,
  loadBalancerSchema,
  machineBaseSchema,
  machineBuilderSchema,
  machineSchema,
  providerSchema,
  buildSecretSchema,
  dockerfileSchema,
  resourcesSchema,
  secretSchema,
  secretSourceSchema,
  specSchema,
  trafficSchema,
} from "./schema.js";

/**
 * The providers a spec is validated with, by name. A name mapped to `undefined` is a provider the
 * spec uses whose package is not loaded: its sections are accepted as they are (unchecked) and
 * checked once the provider is known.
 */
export type ProviderRegistry = ReadonlyMap<string, ProviderSpec | undefined>;

/** The schemas validation uses: core's, with each provider's sections composed in. */
export interface ComposedSchemas {
  /** The whole spec. */
  readonly spec: z.ZodType;
  /** One environment's overrides (every key optional). */
  readonly environment: z.ZodType;
}

const cache = new Map<string, ComposedSchemas>();
const specIds = new WeakMap<ProviderSpec, number>();
let nextSpecId = 1;

/**
 * Core's spec schema with the sections of every provider in `registry` composed in:
 * `instances.<name>`, `image.machine.base.<name>`, `image.machine.builder.<name>` and
 * `traffic.loadBalancer.<name>`, at the top level and (as overrides) in environments. A key in
 * those places that names no provider stays an unknown key. Pure; results are cached per registry.
 */
export function composeSpecSchemas(registry: ProviderRegistry): ComposedSchemas {
  const key = [...registry.entries()]
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([name, spec]) => `${name}#${spec ? idOf(spec) : 0}`)
    .join(",");
  let composed = cache.get(key);
  if (!composed) {
    composed = compose(registry);
    if (cache.size > 64) cache.clear();
    cache.set(key, composed);
  }
  return composed;
}

function idOf(spec: ProviderSpec): number {
  let id = specIds.get(spec);
  if (id === undefined) {
    id = nextSpecId++;
    specIds.set(spec, id);
  }
  return id;
}

function compose(registry: ProviderRegistry): ComposedSchemas {
  const sections = (sectionKey: ProviderSectionKey, override: boolean): Record<string, z.ZodType> => {
    const shape: Record<string, z.ZodType> = {};
    for (const [name, spec] of registry) {
      // A provider whose name is one of core's keys there (`instances.count`) cannot own a section.
      if (sectionKey === "instances" && name in instancesSchema.shape) continue;
      const schema = spec?.sections?.[sectionKey];
      if (!spec) shape[name] = z.unknown().optional();
      else if (schema) shape[name] = override ? overrideOf(spec, sectionKey, schema).optional() : acceptsUndefined(schema) ? schema : schema.optional();
    }
    return shape;
  };

  // A secret's source: core's `env` and `file`, and each provider's secret store by its name.
  const storeShape: Record<string, z.ZodType> = {};
  for (const [name, spec] of registry) {
    if (!spec) storeShape[name] = z.unknown().optional();
    else if (spec.secretSource) storeShape[name] = spec.secretSource.optional();
  }
  const secretFrom = described(secretSourceSchema.extend(storeShape), secretSourceSchema);
  const secret = described(secretSchema.extend({ from: secretFrom }), secretSchema);
  const secretKey = specSchema.shape.secrets.unwrap().keyType;
  const secrets = z.record(secretKey, secret).default({}).describe(specSchema.shape.secrets.description ?? "");
  const buildSecrets = z
    .record(dockerfileSchema.shape.secrets.unwrap().keyType, described(buildSecretSchema.extend({ from: secretFrom }), buildSecretSchema))
    .default({})
    .describe(dockerfileSchema.shape.secrets.description ?? "");
  const dockerfile = described(dockerfileSchema.extend({ secrets: buildSecrets }), dockerfileSchema);

  const instances = described(instancesSchema.extend(sections("instances", false)), instancesSchema);
  const base = described(machineBaseSchema.extend(sections("base", false)), machineBaseSchema);
  const builder = described(machineBuilderSchema.extend(sections("builder", false)), machineBuilderSchema);
  const machine = described(machineSchema.extend({ base: base.prefault({}), builder: builder.prefault({}) }), machineSchema);
  const image = described(imageSchema.extend({ dockerfile: dockerfile.prefault({}), machine: machine.optional() }), imageSchema);
  const loadBalancer = described(loadBalancerSchema.extend(sections("loadBalancer", false)), loadBalancerSchema);
  const traffic = described(trafficSchema.extend({ loadBalancer: loadBalancer.optional() }), trafficSchema);

  const overrides = environmentSchema.shape;
  const environment = described(
    environmentSchema.extend({
      image: z
        .strictObject({
          dockerfile: dockerfile.partial().optional(),
          machine: machineSchema
            .partial()
            .extend({
              base: described(machineBaseSchema.extend(sections("base", true)), machineBaseSchema).optional(),
              builder: described(machineBuilderSchema.extend(sections("builder", true)), machineBuilderSchema).optional(),
            })
            .optional(),
          allowSecretFiles: overrides.image.unwrap().shape.allowSecretFiles,
        })
        .optional(),
      instances: instancesSchema
        .partial()
        .extend({ resources: resourcesSchema.partial().optional(), ...sections("instances", true) })
        .optional(),
      secrets: z.record(secretKey, secret.partial()).optional(),
      traffic: z
        .strictObject({
          proxy: overrides.traffic.unwrap().shape.proxy,
          loadBalancer: described(loadBalancerSchema.extend(sections("loadBalancer", true)), loadBalancerSchema).optional(),
        })
        .optional(),
    }),
    environmentSchema,
  );
  const spec = described(
    specSchema.extend({
      image: image.prefault({}),
      instances: instances.prefault({}),
      traffic: traffic.prefault({}),
      secrets,
      environments: z
        .record(specSchema.shape.environments.unwrap().keyType, environment)
        .default({})
        .describe(specSchema.shape.environments.description ?? ""),
    }),
    specSchema,
  );
  return { spec, environment };
}

/** An environment's override schema of a section: the provider's own, else every key optional. */
function overrideOf(spec: ProviderSpec, key: ProviderSectionKey, schema: z.ZodType): z.ZodType {
  const given = spec.overrides?.[key];
  if (given) return given;
  const object = unwrapObject(schema);
  return object ? described(object.partial(), schema) : schema;
}

/** The object schema inside optional/default/prefault wrappers, if the schema is one. */
function unwrapObject(schema: z.ZodType): z.ZodObject | undefined {
  let current = schema as unknown as z.core.$ZodTypes;
  for (let depth = 0; depth < 10; depth++) {
    const def = current._zod.def;
    if (def.type === "object") return current as unknown as z.ZodObject;
    if (def.type === "optional" || def.type === "default" || def.type === "prefault" || def.type === "nullable" || def.type === "readonly") current = def.innerType as z.core.$ZodTypes;
    else return undefined;
  }
  return undefined;
}

function acceptsUndefined(schema: z.ZodType): boolean {
  return schema.safeParse(undefined).success;
}

/** `next` with the description of `from`, which `.extend()` does not carry over. */
function described<T extends z.ZodType>(next: T, from: z.ZodType): T {
  return from.description ? next.describe(from.description) : next;
}

/**
 * The registry a spec is validated with: every provider given, plus every provider the spec names
 * (`provider:` at the top level and in each environment) that was not given, mapped to `undefined`.
 */
export function providerRegistry(input: unknown, given: Readonly<Record<string, ProviderSpec>> = {}): Map<string, ProviderSpec | undefined> {
  const registry = new Map<string, ProviderSpec | undefined>(Object.entries(given));
  for (const name of providersNamedIn(input)) if (!registry.has(name)) registry.set(name, undefined);
  return registry;
}

/**
 * The provider names a spec (as written) uses: its top-level `provider` (`docker` when absent)
 * and each environment's, and the secret stores its secrets are read from
 * (`secrets.<name>.from.<provider>`, `image.dockerfile.secrets.<id>.from.<provider>`); valid
 * names only, without duplicates. A source key that is a near-miss of `env` or `file` (`evn`)
 * names no store: it stays an unknown key, with its did-you-mean.
 */
export function providersNamedIn(input: unknown): string[] {
  const names = new Set<string>();
  const add = (value: unknown) => {
    if (typeof value === "string" && providerSchema.safeParse(value).success) names.add(value);
  };
  const addStores = (secrets: unknown) => {
    if (!isPlainObject(secrets)) return;
    for (const secret of Object.values(secrets)) {
      if (!isPlainObject(secret) || !isPlainObject(secret.from)) continue;
      for (const key of Object.keys(secret.from)) if (!nearCoreSourceKey(key)) add(key);
    }
  };
  const addTarget = (object: Record<string, unknown>) => {
    addStores(object.secrets);
    if (isPlainObject(object.image) && isPlainObject(object.image.dockerfile)) addStores(object.image.dockerfile.secrets);
  };
  const object = isPlainObject(input) ? input : {};
  add(object.provider ?? "docker");
  addTarget(object);
  if (isPlainObject(object.environments)) {
    for (const environment of Object.values(object.environments)) {
      if (!isPlainObject(environment)) continue;
      add(environment.provider);
      addTarget(environment);
    }
  }
  return [...names];
}

/** Whether a secret source's key is core's own (`env`, `file`) or a near-miss of one. */
function nearCoreSourceKey(key: string): boolean {
  return ["env", "file"].some((core) => distance(core, key) <= 2);
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
