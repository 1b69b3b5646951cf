import { LABELS, defineProviderSpec, z, type ResolvedTarget, type SectionValues, type SpecIssue } from "@kilnjs/core/spec";
import { awsSecretSourceSchema } from "./secret-source.js";

/** The base AMI a machine image is baked from: `image.machine.base.aws`. */
export const awsBaseImageSchema = z
  .strictObject({
    id: z.string().regex(/^ami-[0-9a-f]{8,17}$/, "an AMI id such as ami-0123456789abcdef0").optional().describe("The base AMI's id. Pinning an id makes bakes reproducible."),
    name: z.string().min(1).max(128).optional().describe("A name pattern (`*` and `?` wildcards, as EC2 DescribeImages filters); the newest matching AMI wins."),
    owners: z
      .array(z.string().min(1))
      .min(1)
      .optional()
      .describe("Who must own an AMI found by `name`: account ids, or `amazon`, `aws-marketplace`, `self`. Required with `name`, so a stranger's AMI never matches."),
  })
  .describe("The base AMI: an `id`, or a `name` pattern with `owners` (newest wins). The fingerprint covers what is written here, not the AMI a pattern finds: pin an `id` to rebake when the base changes, or change the pattern.");

/** The builder instance a machine image is baked on: `image.machine.builder.aws`. */
export const awsBuilderSchema = z
  .strictObject({
    instanceType: z.string().min(1).default("t3.small").describe("The builder's instance type."),
    subnetId: z.string().min(1).optional().describe("The subnet the builder runs in; by default the default VPC's."),
    securityGroupIds: z.array(z.string().min(1)).default([]).describe("Security groups of the builder; by default the VPC's default group. The builder needs outbound access only for what the steps download."),
    iamInstanceProfile: z.string().min(1).optional().describe("An instance profile (name or ARN) for the builder: give it `ec2:CreateTags` on itself so it reports its result by tag (see docs/providers/aws.md)."),
    amiName: z
      .string()
      .min(1)
      .regex(/\{fingerprint\}/, "the AMI name must contain {fingerprint}, so each recipe gets its own name")
      .default("kiln-{service}-{fingerprint}")
      .describe("The AMI's name; `{service}` and `{fingerprint}` (its first 12 hex digits) are filled in. AMI names are 3–128 characters of letters, digits, spaces and ( ) [ ] . / - ' @ _ (EC2 CreateImage)."),
  })
  .describe("The EC2 instance the image is baked on.");

/** An EBS volume of each instance. */
export const awsBlockDeviceSchema = z
  .strictObject({
    deviceName: z.string().min(1).describe("The device name, such as /dev/xvda (the root device of most Linux AMIs)."),
    volumeSizeGiB: z.number().int().min(1).max(65536).optional().describe("The volume's size (GiB); by default the AMI's."),
    volumeType: z.enum(["gp2", "gp3", "io1", "io2", "st1", "sc1", "standard"]).optional().describe("The EBS volume type."),
    encrypted: z.boolean().optional().describe("Whether the volume is encrypted."),
    deleteOnTermination: z.boolean().default(true).describe("Whether the volume goes when the instance does."),
  })
  .describe("An EBS volume (RunInstances BlockDeviceMappings).");

/** How each EC2 instance is launched: `instances.aws`. */
export const awsInstancesSchema = z
  .strictObject({
    instanceType: z.string().min(1).optional().describe("The EC2 instance type; by default the launch template's, else t3.micro."),
    subnetIds: z.array(z.string().min(1)).default([]).describe("Subnets to launch in, taken in turn (spread over zones); by default the default VPC's."),
    securityGroupIds: z.array(z.string().min(1)).default([]).describe("Security groups of each instance."),
    iamInstanceProfile: z.string().min(1).optional().describe("An instance profile, by name or ARN."),
    keyName: z.string().min(1).optional().describe("An EC2 key pair name (Kiln never needs SSH; this is for your own access)."),
    userData: z.string().optional().describe("User data run at each instance's boot (at most 16 KB, EC2 RunInstances). Recorded in the release: never put secrets here."),
    blockDevices: z.array(awsBlockDeviceSchema).default([]).describe("EBS volumes; tagged like the instance."),
    launchTemplate: z
      .strictObject({
        id: z.string().min(1).optional().describe("The launch template's id (lt-…)."),
        name: z.string().min(1).optional().describe("The launch template's name."),
        version: z.string().min(1).default("$Default").describe("A version number, `$Latest` or `$Default`."),
      })
      .optional()
      .describe("Launch from a launch template (give `id` or `name`); settings here override the template's. The AMI is always the release's."),
    address: z
      .enum(["private", "public"])
      .default("private")
      .describe("Which address health checks and endpoints use: the private IP (Kiln runs inside the VPC) or the public IP."),
  })
  .describe("How each EC2 instance is launched (the aws provider).");

/** An ELBv2 target group the instances join: `traffic.loadBalancer.aws`. */
export const awsLoadBalancerSchema = z
  .strictObject({
    targetGroupArn: z
      .string()
      .regex(/^arn:aws[a-z-]*:elasticloadbalancing:[a-z0-9-]+:\d{12}:targetgroup\/[A-Za-z0-9-]{1,32}\/[0-9a-f]+$/, "a target group ARN (arn:aws:elasticloadbalancing:REGION:ACCOUNT:targetgroup/NAME/ID)")
      .describe("The ELBv2 target group (type `instance`) the instances join."),
    port: z.string().optional().describe("The name of the instance port targets are registered on; by default the first tcp port."),
  })
  .describe("AWS: an Elastic Load Balancing v2 target group. Old instances are deregistered and drained for the group's deregistration delay, at most the stop grace period.");

/** How each EC2 instance is launched: the `instances.aws` section, defaults applied. */
export type AwsInstanceSettings = z.output<typeof awsInstancesSchema>;
/** The base AMI: the `image.machine.base.aws` section. */
export type AwsBaseImage = z.output<typeof awsBaseImageSchema>;
/** The builder instance: the `image.machine.builder.aws` section, defaults applied. */
export type AwsBuilderSettings = z.output<typeof awsBuilderSchema>;
/** The target group: the `traffic.loadBalancer.aws` section. */
export type AwsLoadBalancer = z.output<typeof awsLoadBalancerSchema>;

/**
 * The AWS tag rules, from "Tag restrictions" in the Amazon EC2 User Guide
 * (https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/Using_Tags.html#tag-restrictions).
 */
export const AWS_TAG_RULES = {
  /** Tags per resource, Kiln's own included. */
  maxTags: 50,
  /** Characters in a key (UTF-8 characters). */
  maxKeyLength: 128,
  /** Characters in a value (UTF-8 characters). */
  maxValueLength: 256,
  /** Keys reserved for AWS, compared without regard to case. */
  reservedPrefix: "aws:",
} as const;

/**
 * How many tags Kiln itself puts on an EC2 instance or volume: its {@link LABELS} and the aws
 * provider's own `Name` and address kind.
 */
export const AWS_KILN_TAG_COUNT = Object.keys(LABELS).length + 2;

/** The most bytes of user data EC2 accepts (before base64), from the RunInstances API reference. */
export const AWS_USER_DATA_MAX_BYTES = 16 * 1024;

/**
 * Problems of tags against {@link AWS_TAG_RULES}, each with the tag's key; `kilnTags` is how many
 * tags Kiln adds itself, counted against the 50.
 */
export function awsTagProblems(tags: Readonly<Record<string, string>>, kilnTags: number): Array<{ key?: string; message: string }> {
  const problems: Array<{ key?: string; message: string }> = [];
  const entries = Object.entries(tags);
  if (entries.length + kilnTags > AWS_TAG_RULES.maxTags) {
    problems.push({
      message: `AWS allows ${AWS_TAG_RULES.maxTags} tags per resource and Kiln adds ${kilnTags} of its own, so at most ${AWS_TAG_RULES.maxTags - kilnTags} labels fit; there are ${entries.length} (EC2 User Guide, tag restrictions)`,
    });
  }
  for (const [key, value] of entries) {
    if (key.toLowerCase().startsWith(AWS_TAG_RULES.reservedPrefix)) problems.push({ key, message: `tag keys starting with "aws:" are reserved for AWS (EC2 User Guide, tag restrictions)` });
    if ([...key].length > AWS_TAG_RULES.maxKeyLength) problems.push({ key, message: `a tag key is at most ${AWS_TAG_RULES.maxKeyLength} characters; this one has ${[...key].length} (EC2 User Guide, tag restrictions)` });
    if ([...value].length > AWS_TAG_RULES.maxValueLength) {
      problems.push({ key, message: `a tag value is at most ${AWS_TAG_RULES.maxValueLength} characters; this one has ${[...value].length} (EC2 User Guide, tag restrictions)` });
    }
  }
  return problems;
}

/**
 * Why a name is not a valid AMI name, or undefined when it is: 3 to 128 characters, letters,
 * digits, spaces and `( ) [ ] . / - ' @ _` (EC2 API reference, CreateImage, parameter Name).
 */
export function amiNameProblem(name: string): string | undefined {
  if (name.length < 3 || name.length > 128) return `an AMI name is 3 to 128 characters (EC2 CreateImage); "${name}" has ${name.length}`;
  const bad = [...name].find((char) => !/[A-Za-z0-9 ()[\]./'@_-]/.test(char));
  if (bad !== undefined) return `an AMI name may hold letters, digits, spaces and ( ) [ ] . / - ' @ _ only (EC2 CreateImage); "${bad}" is not allowed`;
  return undefined;
}

const sections = { instances: awsInstancesSchema, base: awsBaseImageSchema, builder: awsBuilderSchema.prefault({}), loadBalancer: awsLoadBalancerSchema };

/** The aws provider's section values for one target. */
export type AwsSections = SectionValues<typeof sections>;

/**
 * The most instances one target runs on EC2 (`instances.count`). A rollout launches the whole
 * count again (start-first), and RunInstances draws on a resource token bucket of 1,000
 * instances per account and Region that refills at 2 instances per second: a bigger rollout would
 * launch its first 1,000 at once and then wait on throttling (`RequestLimitExceeded`) for the
 * rest, over an hour for 10,000. The account's vCPU quota for On-Demand instances (Service Quotas,
 * per Region) usually refuses such a fleet earlier still. Larger fleets belong to an Auto Scaling
 * group and its instance refresh.
 * @see https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-throttling.html (resource token bucket of RunInstances)
 * @see https://docs.aws.amazon.com/ec2/latest/instancetypes/ec2-instance-quotas.html (On-Demand vCPU quotas)
 */
export const AWS_MAX_INSTANCE_COUNT = 1_000;

/**
 * The aws provider's part of the spec: machine images (`image.machine`, required), the sections
 * `instances.aws`, `image.machine.base.aws`, `image.machine.builder.aws` and
 * `traffic.loadBalancer.aws`, AWS's documented limits as pre-flight rules, the target group in
 * plans, and the base AMI as written in the fingerprint. Its secret store's references are
 * `secrets.<name>.from.aws` ({@link awsSecretSourceSchema}), for targets of any provider. It
 * declares no `secretDelivery`: Kiln cannot set an EC2 instance's environment or files, so an
 * instance reads its own secrets at boot (docs/providers/aws.md, "Secrets"). A target runs at
 * most {@link AWS_MAX_INSTANCE_COUNT} instances.
 */
export const awsProviderSpec = defineProviderSpec({
  imageFormat: "machine",
  sections,
  maxInstanceCount: AWS_MAX_INSTANCE_COUNT,
  secretSource: awsSecretSourceSchema,
  validate: validateAws,
  planLines(target, { loadBalancer }) {
    if (!loadBalancer) return [];
    return [
      `traffic: target group ${loadBalancer.targetGroupArn} → port ${targetPortName(target, loadBalancer)}; new instances join after their gate and the group's health check, old ones are deregistered and drained before they stop`,
    ];
  },
  // Core hashes the base section as written; the provider only says it in words.
  fingerprint: (_target, { base }) => ({
    baseImages: base ? [base.id !== undefined ? `aws: ${base.id}` : `aws: ${base.name ?? "?"} owned by ${(base.owners ?? []).join(", ")}`] : [],
  }),
});

/** The instance port (by name) targets are registered on: the section's `port`, else the first tcp port. */
export function targetPortName(target: Pick<ResolvedTarget, "instance">, loadBalancer: AwsLoadBalancer): string {
  return loadBalancer.port ?? target.instance.ports.find((port) => port.protocol === "tcp")?.name ?? "";
}

function validateAws(target: ResolvedTarget, { instances, base, builder, loadBalancer }: AwsSections): SpecIssue[] {
  const issues: SpecIssue[] = [];
  const issue = (path: (string | number)[], message: string): void => void issues.push({ path, kind: "invalid-value", message });
  for (const problem of awsTagProblems(target.instance.labels, AWS_KILN_TAG_COUNT)) {
    issue(["instances", "labels", ...(problem.key !== undefined ? [problem.key] : [])], problem.message);
  }
  if (target.traffic.proxy) issue(["traffic", "proxy"], "the aws provider runs no front proxy; use traffic.loadBalancer.aws (an ELBv2 target group)");
  if (target.health.check?.kind === "command") issue(["health", "command"], "the aws provider cannot run commands in EC2 instances; use health.http or health.tcp (EC2 status checks apply anyway)");
  if (target.machine) {
    const basePath = ["image", "machine", "base", "aws"];
    if (!base) issue(basePath, 'required: the base AMI for the aws provider, e.g. { id: ami-0123456789abcdef0 } or { name: "debian-12-amd64-*", owners: ["136693071363"] }');
    else if (base.id !== undefined && base.name !== undefined) issue(basePath, "give the base AMI's id or a name pattern, not both");
    else if (base.id === undefined && base.name === undefined) issue(basePath, 'give the base AMI\'s id (ami-…) or a name pattern with owners, e.g. { name: "debian-12-amd64-*", owners: ["136693071363"] }');
    else if (base.name !== undefined && base.owners === undefined) {
      issue([...basePath, "owners"], 'required with name: the accounts that may own the base AMI (e.g. ["136693071363"] for Debian, or "self"), so a stranger\'s AMI never matches');
    }
    if (builder) {
      const problem = amiNameProblem(builder.amiName.replace("{service}", target.target.service).replace("{fingerprint}", "0123456789ab"));
      if (problem) issue(["image", "machine", "builder", "aws", "amiName"], problem);
    }
  }
  if (instances?.userData !== undefined && Buffer.byteLength(instances.userData) > AWS_USER_DATA_MAX_BYTES) {
    issue(["instances", "aws", "userData"], `user data is at most ${AWS_USER_DATA_MAX_BYTES} bytes (EC2 RunInstances); this has ${Buffer.byteLength(instances.userData)}`);
  }
  const template = instances?.launchTemplate;
  if (template && (template.id === undefined) === (template.name === undefined)) issue(["instances", "aws", "launchTemplate"], "give the launch template's id or its name (one of them)");
  if (loadBalancer) issues.push(...targetGroupPortIssues(target, loadBalancer));
  return issues;
}

function targetGroupPortIssues(target: ResolvedTarget, loadBalancer: AwsLoadBalancer): SpecIssue[] {
  const tcpPorts = target.instance.ports.filter((port) => port.protocol === "tcp");
  if (tcpPorts.length === 0) {
    return [{ path: ["traffic", "loadBalancer", "aws"], kind: "invalid-value", message: "a target group sends traffic to an instance port: declare one in instances.ports" }];
  }
  if (loadBalancer.port !== undefined && !tcpPorts.some((port) => port.name === loadBalancer.port)) {
    return [
      {
        path: ["traffic", "loadBalancer", "aws", "port"],
        kind: "reference",
        message: `"${loadBalancer.port}" is not a tcp port name from instances.ports (${tcpPorts.map((port) => `"${port.name}"`).join(", ")})`,
      },
    ];
  }
  return [];
}
