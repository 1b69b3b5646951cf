import { defineProviderSpec, z, type ResolvedTarget, type SectionValues, type SpecIssue } from "@kilnjs/core/spec";
import { GCE_KILN_BAKE_LABEL_COUNT, GCE_KILN_INSTANCE_LABEL_COUNT } from "./labels.js";
import { GCE_RULE_URLS, gceLabelProblems, gceMetadataProblems, gceNameProblem, reservedLabelProblems, type RuleProblem } from "./rules.js";

/** A Google Cloud project id: 6–30 characters, a lowercase letter first, lowercase letters, digits and dashes, no dash last (older projects may carry a `domain:` prefix). */
const PROJECT_ID = /^(?:[a-z][a-z0-9.-]*[a-z0-9]:)?[a-z][-a-z0-9]{4,28}[a-z0-9]$/;
/** A zone, such as `europe-west1-b`. */
const ZONE = /^[a-z]+-[a-z]+\d+-[a-z]$/;
/** A region, such as `europe-west1`. */
const REGION = /^[a-z]+-[a-z]+\d+$/;
/** The OAuth scope every default Compute Engine service account setup recommends: access is then decided by IAM roles alone. */
export const GCP_DEFAULT_SCOPES: readonly string[] = ["https://www.googleapis.com/auth/cloud-platform"];
/** The documented link for project ids. */
const PROJECT_RULE = "https://cloud.google.com/resource-manager/docs/creating-managing-projects#before_you_begin";

const projectSchema = z
  .string()
  .regex(PROJECT_ID, `a Google Cloud project id: 6 to 30 lowercase letters, digits and dashes, starting with a letter (${PROJECT_RULE})`)
  .describe("The Google Cloud project; by default GCLOUD_PROJECT, GOOGLE_CLOUD_PROJECT or CLOUDSDK_CORE_PROJECT, else the project of the Application Default Credentials.");
const zoneSchema = z.string().regex(ZONE, "a Compute Engine zone such as europe-west1-b").describe("The zone; by default CLOUDSDK_COMPUTE_ZONE.");

/** The service account a VM runs as, and its OAuth scopes. */
export const gcpServiceAccountSchema = z
  .strictObject({
    email: z
      .string()
      .regex(/^(default|[^@\s]+@[^@\s]+\.[^@\s]+)$/, "a service account email (name@project.iam.gserviceaccount.com) or default")
      .describe("The service account's email, or `default` for the project's Compute Engine default service account."),
    scopes: z
      .array(z.string().regex(/^https:\/\/www\.googleapis\.com\/auth\/[a-z0-9._/-]+$/, "an OAuth scope URL such as https://www.googleapis.com/auth/cloud-platform"))
      .default([...GCP_DEFAULT_SCOPES])
      .describe("OAuth scopes; by default cloud-platform alone, so IAM roles decide what the VM may do."),
  })
  .describe("The service account the VM runs as. Without one the VM runs with no service account.");

/** A VM's boot disk. */
export const gcpBootDiskSchema = z
  .strictObject({
    sizeGb: z.number().int().min(10).max(65_536).optional().describe("The boot disk's size (GB); by default the image's."),
    type: z
      .enum(["pd-standard", "pd-balanced", "pd-ssd", "pd-extreme", "hyperdisk-balanced", "hyperdisk-throughput", "hyperdisk-extreme"])
      .default("pd-balanced")
      .describe("The disk type; the machine type must support it (C3 and newer series take hyperdisk only)."),
  })
  .describe("The boot disk.");

const networkFields = {
  network: z.string().min(1).optional().describe("The VPC network, by name (in the VM's project) or as `projects/P/global/networks/N`; by default the project's `default` network."),
  subnetwork: z.string().min(1).optional().describe("The subnetwork, by name (in the zone's region) or as `projects/P/regions/R/subnetworks/S`; needed for custom-mode networks and Shared VPC."),
};

/** How each Compute Engine instance is launched: `instances.gcp`. */
export const gcpInstancesSchema = z
  .strictObject({
    project: projectSchema.optional(),
    zone: zoneSchema.optional(),
    region: z.string().regex(REGION, "a Compute Engine region such as europe-west1").optional().describe("The region (for regional resources); by default the zone's, else CLOUDSDK_COMPUTE_REGION."),
    machineType: z.string().min(1).default("e2-small").describe("The machine type, such as e2-small or n2-custom-2-4096."),
    ...networkFields,
    serviceAccount: gcpServiceAccountSchema.optional(),
    metadata: z
      .record(z.string(), z.string())
      .default({})
      .describe("Instance metadata items, beside Kiln's own (startup-script, enable-guest-attributes, kiln-*: reserved). Recorded in the release: never put secrets here."),
    bootDisk: gcpBootDiskSchema.prefault({}),
  })
  .describe("How each Compute Engine instance is launched (the gcp provider). Instance labels are the spec's instances.labels.");

/** The base image a machine image is baked from: `image.machine.base.gcp`. */
export const gcpBaseImageSchema = z
  .strictObject({
    project: projectSchema.optional().describe("The project the image or family is in, such as debian-cloud; by default the builder's project."),
    image: z.string().min(1).optional().describe("An image name. Pinning an image makes bakes reproducible."),
    family: z.string().min(1).optional().describe("An image family: the newest image of the family that is not deprecated."),
  })
  .describe("The base image: an `image`, or a `family` (newest wins), in a `project`. The fingerprint covers what is written here, not the image a family finds: pin an image to rebake when the base changes.");

/** The builder VM a machine image is baked on: `image.machine.builder.gcp`. */
export const gcpBuilderSchema = z
  .strictObject({
    project: projectSchema.optional().describe("The project the builder runs in and the image is stored in; by default as for instances."),
    zone: zoneSchema.optional().describe("The builder's zone; by default CLOUDSDK_COMPUTE_ZONE."),
    machineType: z.string().min(1).default("e2-medium").describe("The builder's machine type."),
    ...networkFields,
    serviceAccount: gcpServiceAccountSchema.optional().describe("The builder's service account; it needs none to report its result (guest attributes need no IAM role)."),
    bootDisk: gcpBootDiskSchema.prefault({}),
    labels: z
      .record(z.string(), z.string())
      .default({})
      .describe("Labels for the builder VM, its disk and the image, beside Kiln's own (for example a cost centre)."),
    imageFamily: z.string().min(1).optional().describe("An image family the baked images join, so `family` references find the newest."),
  })
  .describe("The Compute Engine VM the image is baked on.");

/** The backend service the instances serve behind: `traffic.loadBalancer.gcp`. */
export const gcpLoadBalancerSchema = z
  .strictObject({
    backendService: z.string().min(1).describe("The backend service (its name) whose backend is the instance group."),
    instanceGroup: z.string().min(1).describe("An unmanaged instance group (its name, in the instances' zone) that the backend service uses; Kiln adds and removes instances."),
    region: z.string().regex(REGION, "a Compute Engine region such as europe-west1").optional().describe("For a regional backend service: its region. Absent: a global backend service."),
    port: z.string().optional().describe("The name of the instance port the group's named port points at; by default the first tcp port."),
  })
  .describe("GCP: an unmanaged instance group behind a backend service. New instances join after their gate; old ones leave it with the backend service's connection draining honoured before they are deleted.");

/** How each Compute Engine instance is launched: the `instances.gcp` section, defaults applied. */
export type GcpInstanceSettings = z.output<typeof gcpInstancesSchema>;
/** The base image: the `image.machine.base.gcp` section. */
export type GcpBaseImage = z.output<typeof gcpBaseImageSchema>;
/** The builder VM: the `image.machine.builder.gcp` section, defaults applied. */
export type GcpBuilderSettings = z.output<typeof gcpBuilderSchema>;
/** The backend service: the `traffic.loadBalancer.gcp` section. */
export type GcpLoadBalancer = z.output<typeof gcpLoadBalancerSchema>;

const sections = { instances: gcpInstancesSchema.prefault({}), base: gcpBaseImageSchema, builder: gcpBuilderSchema.prefault({}), loadBalancer: gcpLoadBalancerSchema };

/** The gcp provider's section values for one target. */
export type GcpSections = SectionValues<typeof sections>;

/**
 * The most instances one target runs on Compute Engine (`instances.count`). A start-first
 * rollout launches the whole count again beside the old instances; each `instances.insert` counts
 * against the project's per-minute API rate quotas (exceeding one answers 403 `rateLimitExceeded`),
 * and bulk creation makes at most 5,000 VMs per call. 1,000 keeps a whole rollout (old and new)
 * within one bulk call and a few minutes of rate quota; larger fleets belong to a managed instance
 * group and its rolling update. Provisional: the lifecycle phase measures it.
 * @see https://cloud.google.com/compute/api-quotas (API rate quotas)
 * @see https://cloud.google.com/compute/docs/instances/multiple/about-bulk-creation (bulk creation limits)
 */
export const GCP_MAX_INSTANCE_COUNT = 1_000;

/**
 * The gcp provider's part of the spec: machine images (`image.machine`, required), the sections
 * `instances.gcp`, `image.machine.base.gcp`, `image.machine.builder.gcp` and
 * `traffic.loadBalancer.gcp`, Compute Engine's published naming, label and metadata rules as
 * pre-flight checks, the backend service in plans, and the base image as written in the
 * fingerprint. It declares no secret store and no `secretDelivery` yet. A target runs at most
 * {@link GCP_MAX_INSTANCE_COUNT} instances.
 *
 * Preview: baking and traffic are not implemented yet (launch, list, terminate and images are).
 */
export const gcpProviderSpec = defineProviderSpec({
  imageFormat: "machine",
  sections,
  maxInstanceCount: GCP_MAX_INSTANCE_COUNT,
  validate: validateGcp,
  planLines(target, { loadBalancer }) {
    if (!loadBalancer) return [];
    const where = loadBalancer.region ? `regional backend service ${loadBalancer.backendService} (${loadBalancer.region})` : `backend service ${loadBalancer.backendService}`;
    return [
      `traffic: ${where} → instance group ${loadBalancer.instanceGroup}, port ${targetPortName(target, loadBalancer)}; new instances join after their gate, old ones leave with the backend service's connection draining before they are deleted`,
    ];
  },
  // Core hashes the base section as written; the provider only says it in words.
  fingerprint: (_target, { base }) => ({
    baseImages: base ? [`gcp: ${base.image !== undefined ? `image ${base.image}` : `family ${base.family ?? "?"}`}${base.project !== undefined ? ` in ${base.project}` : ""}`] : [],
  }),
});

/** The instance port (by name) the instance group's named port points at: the section's `port`, else the first tcp port. */
export function targetPortName(target: Pick<ResolvedTarget, "instance">, loadBalancer: GcpLoadBalancer): string {
  return loadBalancer.port ?? target.instance.ports.find((port) => port.protocol === "tcp")?.name ?? "";
}

type Issue = (path: (string | number)[], message: string) => void;

function validateGcp(target: ResolvedTarget, { instances, base, builder, loadBalancer }: GcpSections): SpecIssue[] {
  const issues: SpecIssue[] = [];
  const issue: Issue = (path, message) => void issues.push({ path, kind: "invalid-value", message });
  for (const problem of labelProblems(target.instance.labels, GCE_KILN_INSTANCE_LABEL_COUNT)) {
    issue(["instances", "labels", ...(problem.key !== undefined ? [problem.key] : [])], problem.message);
  }
  if (target.traffic.proxy) issue(["traffic", "proxy"], "the gcp provider runs no front proxy; use traffic.loadBalancer.gcp (a backend service and an instance group)");
  if (target.health.check?.kind === "command") issue(["health", "command"], "the gcp provider cannot run commands in Compute Engine instances; use health.http or health.tcp");
  if (instances) validateInstances(instances, issue);
  if (target.machine) validateMachine(base, builder, issue);
  if (loadBalancer) validateLoadBalancer(target, loadBalancer, issue);
  return issues;
}

function validateInstances(instances: GcpInstanceSettings, issue: Issue): void {
  const path = ["instances", "gcp"];
  nameIssue([...path, "machineType"], instances.machineType, "a machine type", issue);
  networkIssues(path, instances, issue);
  if (instances.zone !== undefined && instances.region !== undefined && !instances.zone.startsWith(`${instances.region}-`)) {
    issue([...path, "region"], `the zone ${instances.zone} is not in the region ${instances.region}; give a zone of that region, or leave region out (it is the zone's)`);
  }
  for (const problem of gceMetadataProblems(instances.metadata)) issue([...path, "metadata", ...(problem.key !== undefined ? [problem.key] : [])], problem.message);
}

function validateMachine(base: GcpBaseImage | undefined, builder: GcpBuilderSettings | undefined, issue: Issue): void {
  const basePath = ["image", "machine", "base", "gcp"];
  if (!base) issue(basePath, "required: the base image for the gcp provider, e.g. { family: debian-12, project: debian-cloud } or { image: my-base-image }");
  else if (base.image !== undefined && base.family !== undefined) issue(basePath, "give the base image's name or its family, not both");
  else if (base.image === undefined && base.family === undefined) issue(basePath, "give the base image's name (image) or a family, e.g. { family: debian-12, project: debian-cloud }");
  else if (base.image !== undefined) nameIssue([...basePath, "image"], base.image, "an image name", issue);
  else if (base.family !== undefined) nameIssue([...basePath, "family"], base.family, "an image family", issue);
  if (!builder) return;
  const builderPath = ["image", "machine", "builder", "gcp"];
  nameIssue([...builderPath, "machineType"], builder.machineType, "a machine type", issue);
  if (builder.imageFamily !== undefined) nameIssue([...builderPath, "imageFamily"], builder.imageFamily, "an image family", issue);
  networkIssues(builderPath, builder, issue);
  for (const problem of labelProblems(builder.labels, GCE_KILN_BAKE_LABEL_COUNT)) issue([...builderPath, "labels", ...(problem.key !== undefined ? [problem.key] : [])], problem.message);
}

function validateLoadBalancer(target: ResolvedTarget, loadBalancer: GcpLoadBalancer, issue: Issue): void {
  const path = ["traffic", "loadBalancer", "gcp"];
  nameIssue([...path, "backendService"], loadBalancer.backendService, "a backend service name", issue);
  nameIssue([...path, "instanceGroup"], loadBalancer.instanceGroup, "an instance group name", issue);
  const tcpPorts = target.instance.ports.filter((port) => port.protocol === "tcp");
  if (tcpPorts.length === 0) issue(path, "a backend service sends traffic to an instance port: declare one in instances.ports");
  else if (loadBalancer.port !== undefined && !tcpPorts.some((port) => port.name === loadBalancer.port)) {
    issue([...path, "port"], `"${loadBalancer.port}" is not a tcp port name from instances.ports (${tcpPorts.map((port) => `"${port.name}"`).join(", ")})`);
  }
}

/** A spec's labels against Compute Engine's rules and Kiln's reserved keys, in key order. */
function labelProblems(labels: Readonly<Record<string, string>>, kilnLabels: number): RuleProblem[] {
  return [...gceLabelProblems(labels, kilnLabels), ...reservedLabelProblems(labels)];
}

function nameIssue(path: string[], name: string, what: string, issue: Issue): void {
  const problem = gceNameProblem(name, what);
  if (problem) issue(path, problem);
}

/** A network or subnetwork: a name, or a partial or full URL ending in a valid name. */
function networkIssues(path: string[], settings: { network?: string | undefined; subnetwork?: string | undefined }, issue: Issue): void {
  const forms = {
    network: /^(?:https:\/\/(?:www|compute)\.googleapis\.com\/compute\/v1\/)?(?:projects\/[^/]+\/)?global\/networks\/([^/]+)$/,
    subnetwork: /^(?:https:\/\/(?:www|compute)\.googleapis\.com\/compute\/v1\/)?(?:projects\/[^/]+\/)?regions\/[a-z0-9-]+\/subnetworks\/([^/]+)$/,
  };
  for (const key of ["network", "subnetwork"] as const) {
    const value = settings[key];
    if (value === undefined) continue;
    if (!value.includes("/")) {
      nameIssue([...path, key], value, `a ${key} name`, issue);
      continue;
    }
    const name = forms[key].exec(value)?.[1];
    if (name === undefined) {
      issue([...path, key], `write a ${key} as its name or as ${key === "network" ? "projects/PROJECT/global/networks/NAME" : "projects/PROJECT/regions/REGION/subnetworks/NAME"} (${GCE_RULE_URLS.names})`);
    } else nameIssue([...path, key], name, `a ${key} name`, issue);
  }
}
