import { z } from "zod";
import { NAME_PATTERN, nameMessage } from "./names.js";
import type { secretDeliverySchema, secretSourceSchema } from "./secret-schemas.js";
import { ENV_NAME_PATTERN, buildSecretSchema, scalarText, secretSchema } from "./secret-schemas.js";

export { buildSecretSchema, secretDeliverySchema, secretSchema, secretSourceSchema } from "./secret-schemas.js";

/**
 * The `kiln.yaml` schema, defined once: TypeScript types are inferred from it, the committed JSON
 * Schema (`schema/kiln.schema.json`) and the reference docs are generated from it.
 *
 * Keys are strict: an unknown key is an error (with a did-you-mean), except keys that start with
 * `x-`, which are extension keys for YAML anchors and tools and are ignored at every level.
 */

/** A name's schema: the rule as a pattern (for the JSON Schema), and a message that says what breaks it. */
const nameSchema = (what: string) => z.string().regex(NAME_PATTERN, { error: (issue) => nameMessage(what, issue.input) });

/** Memory sizes: bytes as a number, or text with a binary (Ki, Mi, Gi) or decimal (k, M, G) unit. */
export const MEMORY_PATTERN = /^(\d+(?:\.\d+)?)\s*(b|k|kb|ki|kib|m|mb|mi|mib|g|gb|gi|gib)?$/i;

const milliseconds = (description: string, least = 0) =>
  z.number().int().min(least, `expected at least ${least} ms`).describe(`${description} (milliseconds)`);

/** Build an image from a Dockerfile (container providers). */
export const dockerfileSchema = z
  .strictObject({
    context: z.string().min(1).default(".").describe("The build context folder, relative to the spec file's folder."),
    file: z
      .string()
      .min(1)
      .default("Dockerfile")
      .describe("The Dockerfile, relative to the context folder; it may lie outside the context (`../Dockerfile`)."),
    args: z
      .record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, "a build argument name: letters, digits and _"), scalarText)
      .default({})
      .describe("Build arguments (`--build-arg`). They are part of the fingerprint and show in the image's history: a name that looks like a secret (`NPM_TOKEN`) is refused; declare it under `secrets` instead."),
    target: z.string().min(1).optional().describe("The build stage to stop at (`--target`)."),
    secrets: z
      .record(z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/, "a build secret id: letters, digits, _, . and -, at most 64 characters"), buildSecretSchema)
      .default({})
      .describe("Build secrets by id, for `RUN --mount=type=secret,id=<id>` (Docker builds them with BuildKit; see docs/secrets.md)."),
  })
  .describe("Build a container image from a Dockerfile.");

/**
 * One provisioning step of a machine image, run once inside the builder VM at bake time (never on
 * live instances), in order, as root.
 */
export const provisionStepSchema = z
  .strictObject({
    file: z
      .strictObject({
        from: z.string().min(1).describe("A file or folder, relative to the spec file's folder. A folder is copied with its contents (`dist/` → every file under it)."),
        to: z.string().startsWith("/", "an absolute path inside the image, such as /opt/app").describe("Where it goes inside the image: the folder's contents land in this folder; a file lands at this path."),
      })
      .optional()
      .describe("Copy files into the image."),
    shell: z.string().min(1).optional().describe("A shell script (a file relative to the spec file's folder) run with `sh` as root."),
    run: z.string().min(1).optional().describe("One shell command line run with `sh -c` as root, e.g. `apt-get install -y nodejs`."),
  })
  .describe("One provisioning step: exactly one of `file`, `shell` and `run`.");

/**
 * The base image per VM provider: a section `base.<provider>` for each provider, whose schema the
 * provider owns (`ProviderSpec.sections.base`); core composes them in (see `composeSpecSchemas`).
 */
export const machineBaseSchema = z.strictObject({}).describe("The base image, per VM provider: `base.<provider>`, as that provider's reference describes.");

/** The builder VM per VM provider: a section `builder.<provider>` for each provider, owned by the provider. */
export const machineBuilderSchema = z.strictObject({}).describe("The builder VM, per VM provider: `builder.<provider>`, as that provider's reference describes.");

/** A machine image (AMI, Compute Engine image, Azure image), baked from a base image and provisioning steps. */
export const machineSchema = z
  .strictObject({
    provision: z.array(provisionStepSchema).min(1).describe("The provisioning steps, run in order in the builder VM at bake time."),
    base: machineBaseSchema.prefault({}),
    builder: machineBuilderSchema.prefault({}),
    timeoutMs: milliseconds("How long a bake may take in all, from the builder's launch until the image is available", 60_000)
      .default(1_800_000),
  })
  .describe("Bake a machine image for VM providers: launch a builder from the base image, run the steps once, image it. No SSH: the steps travel with the builder (user data, a startup script, custom data).");

/** Files that look like secrets and may be built anyway (the context guard, `secret-files.ts`). */
const allowSecretFilesSchema = z
  .array(z.string().min(1))
  .describe(
    "Files that look like secrets (`.env`, `.env.*`, private keys such as `id_rsa`, `*.key`, `*.pem`, cloud credential files, `.npmrc`/`.netrc` holding a credential, `.git`) that the image may contain anyway. Without a match, Kiln refuses to build an image that would hold one (`SECRET_FILES_IN_CONTEXT`). Patterns in `.dockerignore` syntax (`**` for any depth, a folder matches what is inside it, `!` excepts): relative to the build context for `dockerfile`, relative to the spec file's folder for the files of `machine` `file` steps. See docs/secrets.md.",
  );

/** How the image is made. */
export const imageSchema = z
  .strictObject({
    dockerfile: dockerfileSchema.prefault({}),
    machine: machineSchema.optional(),
    allowSecretFiles: allowSecretFilesSchema.optional(),
  })
  .describe("How the image is built: `dockerfile` for container providers (docker), `machine` for VM providers. Its fingerprint covers every input: same inputs, no rebuild.");

/** A port an instance listens on. */
export const portSchema = z
  .strictObject({
    name: z.string().regex(/^[a-z][a-z0-9-]{0,14}$/, "a port name: lowercase letters, digits and dashes, at most 15 characters").describe("Name that health checks refer to."),
    port: z.number().int().min(1).max(65535).describe("Port number inside the instance."),
    protocol: z.enum(["tcp", "udp"]).default("tcp").describe("Transport protocol of the port."),
    hostPort: z
      .number()
      .int()
      .min(1)
      .max(65535)
      .optional()
      .describe("Pin this port to a fixed port on the host (Docker). Only one instance can hold it, so replacing it means downtime: it needs `rollout.order: stop-first`, and a front proxy (`traffic.proxy`) is the way to avoid it."),
  })
  .describe("A port an instance listens on.");

/** Resource limits of each instance. */
export const resourcesSchema = z
  .strictObject({
    memory: z
      .union([z.number().int().positive(), z.string().regex(MEMORY_PATTERN, "a size such as 256Mi, 1Gi or 512M")])
      .optional()
      .describe("Memory limit: bytes, or text such as 256Mi or 1Gi."),
    cpus: z.number().positive().max(512).optional().describe("CPU limit in cores (0.5 = half a core)."),
  })
  .describe("Resource limits of each instance; no limit where a key is absent.");

/**
 * The most instances any spec may ask for per target (`instances.count`). Each provider allows at
 * most its own `ProviderSpec.maxInstanceCount` (default {@link DEFAULT_MAX_INSTANCE_COUNT}),
 * checked by validation once the provider's spec is known.
 */
export const MAX_INSTANCE_COUNT = 10_000;

/** The most instances per target on a provider that declares no `maxInstanceCount`: the spec's ceiling before providers set their own. */
export const DEFAULT_MAX_INSTANCE_COUNT = 1_000;

/** The instances of a release. */
export const instancesSchema = z
  .strictObject({
    count: z
      .number()
      .int()
      .min(1)
      .max(MAX_INSTANCE_COUNT)
      .default(1)
      .describe(`How many instances run: at most ${MAX_INSTANCE_COUNT}, and at most what the provider allows per target (its maxInstanceCount; ${DEFAULT_MAX_INSTANCE_COUNT} when it declares none).`),
    ports: z.array(portSchema).default([]).describe("Ports the instances listen on."),
    env: z
      .record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, "an environment variable name: letters, digits and _"), scalarText)
      .default({})
      .describe("Environment variables. A number or true/false is taken as its text (`PORT: 8080` is \"8080\"; quote a value to keep it as written, such as \"1.10\"). They are recorded in the release: secrets go in `secrets`."),
    labels: z.record(z.string().min(1), scalarText).default({}).describe("Extra labels on each instance (numbers and true/false taken as their text)."),
    command: z.array(z.string()).min(1).optional().describe("Command to run instead of the image's default."),
    resources: resourcesSchema.prefault({}),
    stopGracePeriodMs: milliseconds("How long an instance may take to stop after SIGTERM before it is killed").default(10_000),
  })
  .describe("The instances each release runs. A provider may own a section here, `instances.<provider>`, with its launch settings (machine size, network, …).");

/** An HTTP health check. */
export const httpCheckSchema = z
  .strictObject({
    port: z.union([z.string(), z.number().int().min(1).max(65535)]).describe("A port name from `instances.ports`, or a port number."),
    path: z.string().startsWith("/").default("/").describe("The path requested with GET."),
    expectStatus: z
      .tuple([z.number().int().min(100).max(599), z.number().int().min(100).max(599)])
      .refine(([low, high]) => low <= high, "the first status must not be above the second, e.g. [200, 399]")
      .default([200, 399])
      .describe("Inclusive range of HTTP statuses that count as healthy."),
  })
  .describe("Probe each instance with an HTTP GET; a status in `expectStatus` is a success.");

/** A TCP health check: the port accepts a connection. */
export const tcpCheckSchema = z
  .strictObject({
    port: z.union([z.string(), z.number().int().min(1).max(65535)]).describe("A port name from `instances.ports`, or a port number."),
  })
  .describe("A TCP health check: healthy when the port accepts a connection.");

/** A command health check, run inside the instance. */
export const commandCheckSchema = z
  .strictObject({
    command: z.array(z.string().min(1)).min(1).describe("The command and its arguments, run inside the instance; exit code 0 is healthy."),
  })
  .describe("A command health check, run inside the instance (the provider must be able to run commands in instances).");

/** The health check that gates a rollout. */
export const healthSchema = z
  .strictObject({
    http: httpCheckSchema.optional(),
    tcp: tcpCheckSchema.optional(),
    command: commandCheckSchema.optional(),
    intervalMs: milliseconds("Time between two counted probes of one instance; a new instance that has not answered yet is also probed sooner during its first interval (start probes)", 100).default(1_000),
    timeoutMs: milliseconds("How long one probe may take", 50).default(2_000),
    healthyThreshold: z.number().int().min(1).max(100).default(2).describe("Consecutive successes, `intervalMs` apart, that make an instance healthy."),
    unhealthyThreshold: z
      .number()
      .int()
      .min(1)
      .max(100)
      .default(3)
      .describe("Consecutive failures, after the start period, that make an instance unhealthy and fail the rollout."),
    startPeriodMs: milliseconds("Grace period after launch during which failures do not count").default(0),
    stabilityWindowMs: milliseconds(
      "After reaching the healthy threshold, how long an instance must keep passing, without restarting, before it counts as healthy",
    ).default(0),
    deadlineMs: milliseconds("How long an instance may take to become healthy in all; by default derived from the other settings")
      .optional(),
  })
  .describe("How Kiln decides that a new instance is healthy. At most one of http, tcp and command; without any, a running instance counts as healthy.");

/** An instance count, or a percentage of `instances.count` (`"25%"`). */
export const countOrPercentSchema = z.union([
  z.number().int().min(0),
  z.string().regex(/^(100|[1-9]?[0-9])%$/, "a whole percentage from 0% to 100%, such as 25%"),
]);

/** One canary step. */
export const canaryStepSchema = z
  .strictObject({
    instances: countOrPercentSchema.describe("How many instances run the new release at this step: a count or a percentage of `count` (rounded up)."),
    holdMs: milliseconds("How long the step is held, health checks still gating, before the next step").default(0),
  })
  .describe("A canary step: this many new instances, held this long.");

/** The rollout strategy. */
export const rolloutSchema = z
  .strictObject({
    strategy: z
      .enum(["rolling", "blue-green", "canary"])
      .default("rolling")
      .describe("`rolling`: batch by batch. `blue-green`: the whole new set, then the switch, then the old set retired after `bakeTimeMs`. `canary`: the new release grows through `steps`."),
    maxSurge: countOrPercentSchema
      .default(1)
      .describe("How many instances may run above `count` during a rolling rollout: a count, or a percentage of `count` rounded up."),
    maxUnavailable: countOrPercentSchema
      .default(0)
      .describe("How many instances may be missing below `count` during a rolling rollout: a count, or a percentage of `count` rounded down."),
    pauseBetweenBatchesMs: milliseconds("Rolling: a pause after each batch, health checks still gating").default(0),
    bakeTimeMs: milliseconds("Blue-green: how long the old set is kept after the switch, so a rollback is instant").default(0),
    steps: z.array(canaryStepSchema).min(1).optional().describe("Canary: the steps, each a size and a hold; a last step of 100% is implied."),
    order: z
      .enum(["start-first", "stop-first"])
      .default("start-first")
      .describe("`start-first`: new instances are healthy before old ones stop (no downtime). `stop-first`: old instances stop before new ones start (rolling only; needed when instances pin a host port; has downtime when count is 1)."),
    autoRollback: z
      .boolean()
      .default(true)
      .describe("Undo a rollout whose health gate fails, restoring the previous release. When false, the failed rollout stops where it is and leaves its instances for inspection."),
  })
  .describe("How a release replaces the previous one.");

/** A provider name, as `provider:` takes it. */
export const providerSchema = nameSchema("a provider name").describe("The provider that runs the service: `docker` (the default), or `<name>` for an installed `@kilnjs/provider-<name>` or `kiln-provider-<name>` package.");

/** A front proxy Kiln runs and drives: the service's one stable address. */
export const proxySchema = z
  .strictObject({
    port: z.number().int().min(1).max(65535).describe("The host port where the service is reached (the proxy publishes it)."),
    host: z.string().min(1).default("127.0.0.1").describe("The host address the proxy's port is published on."),
    targetPort: z.string().optional().describe("The name of the instance port that receives traffic; by default the first tcp port."),
    retries: z.number().int().min(0).max(10).default(2).describe("How many times the proxy retries a request that failed to connect, on another instance."),
  })
  .describe("A front proxy (Docker: HAProxy in a container on a network Kiln creates). New instances get traffic only after their health gate; old ones are drained before they stop; the proxy keeps serving when Kiln exits.");

/**
 * A load balancer of the cloud's own, which Kiln registers instances with: a section
 * `loadBalancer.<provider>` owned by the provider (`ProviderSpec.sections.loadBalancer`).
 */
export const loadBalancerSchema = z
  .strictObject({})
  .describe("A cloud load balancer the service sits behind, as a section of the target's provider (`loadBalancer.<provider>`). New instances join after their health gate and after the load balancer finds them healthy; old ones are deregistered and drained before they stop.");

/** How requests reach the instances. */
export const trafficSchema = z
  .strictObject({
    proxy: proxySchema.optional(),
    loadBalancer: loadBalancerSchema.optional(),
  })
  .describe("How requests reach the instances. Without a proxy or load balancer, clients reach each instance at its own address.");

/** How many old images a target keeps: the clean-up run after each successful deploy. */
export const retentionSchema = z
  .strictObject({
    keep: z
      .number()
      .int()
      .min(1)
      .max(1000)
      .describe("Releases kept per target, the rollback window: the current release and the `keep - 1` successful releases before it. After each successful deploy, the service's images that no instance runs and no kept release references are removed (another environment keeps its own window, or every release when it declares no retention), as `kiln gc --keep N --yes` does."),
  })
  .describe("Remove old images after each successful deploy (see docs/retention.md). A failed clean-up is a warning; the deploy stands.");

/**
 * What an environment may override, before provider sections are composed in: every section, each
 * key optional; objects merge, arrays replace. See `composeSpecSchemas` for the schema validation uses.
 */
export const environmentSchema = z
  .strictObject({
    provider: providerSchema.optional(),
    image: z
      .strictObject({
        dockerfile: dockerfileSchema.partial().optional(),
        machine: machineSchema.partial().extend({ base: machineBaseSchema.optional(), builder: machineBuilderSchema.optional() }).optional(),
        allowSecretFiles: allowSecretFilesSchema.optional(),
      })
      .optional(),
    instances: instancesSchema.partial().extend({ resources: resourcesSchema.partial().optional() }).optional(),
    health: healthSchema
      .partial()
      .extend({ http: httpCheckSchema.partial().optional(), tcp: tcpCheckSchema.partial().optional(), command: commandCheckSchema.partial().optional() })
      .optional(),
    rollout: rolloutSchema.partial().optional(),
    retention: retentionSchema.partial().optional(),
    secrets: z
      .record(z.string().regex(ENV_NAME_PATTERN, "a secret name: letters, digits and _"), secretSchema.partial())
      .optional(),
    traffic: z
      .strictObject({
        proxy: proxySchema.partial().optional(),
        loadBalancer: loadBalancerSchema.optional(),
      })
      .optional(),
  })
  .describe("Overrides for one environment, merged over the top-level settings.");

/** The whole `kiln.yaml`. */
export const specSchema = z
  .strictObject({
    $schema: z.string().optional().describe("Path or URL of the JSON Schema, for editors."),
    service: nameSchema("a service name").describe("The service's name; it names images and instances."),
    provider: providerSchema.default("docker"),
    image: imageSchema.prefault({}),
    instances: instancesSchema.prefault({}),
    health: healthSchema.prefault({}),
    rollout: rolloutSchema.prefault({}),
    traffic: trafficSchema.prefault({}),
    retention: retentionSchema.optional(),
    secrets: z
      .record(z.string().regex(ENV_NAME_PATTERN, "a secret name: letters, digits and _ (it is the default environment variable name)"), secretSchema)
      .default({})
      .describe("Secrets the instances receive, by name: each says where its value comes from (`from`) and how instances get it (`to`). See docs/secrets.md."),
    environments: z
      .record(nameSchema("an environment name"), environmentSchema)
      .default({})
      .describe("Named environments (`staging`, `prod`) with their overrides."),
  })
  .describe("A Kiln service spec (kiln.yaml).");

/** Provider sections under a key of the spec (`instances.<provider>`), as written: each provider's own shape. */
type ProviderSectionsInput = { readonly [provider: string]: unknown };

type CoreSpecInput = z.input<typeof specSchema>;
type CoreEnvironmentInput = z.input<typeof environmentSchema>;
type CoreMachineInput = NonNullable<NonNullable<CoreSpecInput["image"]>["machine"]>;
type CoreEnvironmentMachineInput = NonNullable<NonNullable<CoreEnvironmentInput["image"]>["machine"]>;

/** A secret's source as written: core's `env` or `file`, or a provider's store section (`aws: {...}`). */
type SecretFromInput = z.input<typeof secretSourceSchema> & ProviderSectionsInput;

/** Adds provider sections to the places that hold them: `instances`, `image.machine.base`/`builder`, `traffic.loadBalancer`, secret sources. */
type WithSections<T extends { instances?: unknown; image?: unknown; traffic?: unknown }, Machine extends object> = Omit<T, "instances" | "image" | "traffic" | "secrets"> & {
  instances?: NonNullable<T["instances"]> & ProviderSectionsInput;
  image?: Omit<NonNullable<T["image"]>, "machine" | "dockerfile"> & {
    dockerfile?: Omit<NonNullable<NonNullable<CoreSpecInput["image"]>["dockerfile"]>, "secrets"> & { secrets?: Record<string, { from: SecretFromInput }> };
    // Core's own `base` and `builder` hold nothing but provider sections.
    machine?: Omit<Machine, "base" | "builder"> & { base?: ProviderSectionsInput; builder?: ProviderSectionsInput };
  };
  traffic?: Omit<NonNullable<T["traffic"]>, "loadBalancer"> & { loadBalancer?: ProviderSectionsInput };
  secrets?: Record<string, { from?: SecretFromInput; to?: z.input<typeof secretDeliverySchema> }>;
};

/** One environment's overrides as written, provider sections included. */
export type EnvironmentOverrides = WithSections<CoreEnvironmentInput, CoreEnvironmentMachineInput>;

/**
 * A spec as written (before defaults): what `kiln.yaml` or a spec object in code may contain. A
 * provider's sections (`instances.<provider>`, …) are typed `unknown` here; each provider's
 * package exports their types.
 */
export type SpecInput = Omit<WithSections<CoreSpecInput, CoreMachineInput>, "environments"> & { environments?: Record<string, EnvironmentOverrides> };
/** A validated spec with every default filled in (provider sections are held as their schemas produced them). */
export type Spec = z.output<typeof specSchema>;
