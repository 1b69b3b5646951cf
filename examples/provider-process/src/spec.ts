import { defineProviderSpec, z, type SectionValues, type SpecIssue } from "@kilnjs/core";

/** How each instance runs: the `instances.process` section (always there: its defaults apply when the spec has none). */
export const processInstancesSchema = z
  .strictObject({ workingDirectory: z.string().startsWith("/", "a folder inside the image, such as /app").default("/").describe("The folder inside the image each instance runs in.") })
  .prefault({})
  .describe("How each instance runs as a local process (the process provider).");

/** What a process image is built for: the `image.machine.base.process` section. */
export const processBaseSchema = z
  .strictObject({ node: z.string().regex(/^\d+$/, 'a Node.js major version, such as "20"').describe("The Node.js major version the image is built for; a build on another fails.") })
  .describe("The runtime a process image is built for. Part of the fingerprint: changing it rebuilds the image.");

const sections = { instances: processInstancesSchema, base: processBaseSchema };

/** The process provider's section values for one target, typed by its schemas. */
export type ProcessSections = SectionValues<typeof sections>;

/**
 * The process provider's part of the spec: machine images (`image.machine` steps build a folder), its sections
 * `instances.process` and `image.machine.base.process`, rules for what a process cannot honour, a plan line, the base in the fingerprint.
 */
export const processProviderSpec = defineProviderSpec({
  imageFormat: "machine",
  sections,
  validate(target): SpecIssue[] {
    const issues: SpecIssue[] = [];
    const issue = (path: (string | number)[], message: string) => void issues.push({ path, kind: "invalid-value", message });
    if (!target.instance.command) issue(["instances", "command"], "required: the process provider runs this command in each instance (its images have no default command), e.g. [node, server.js]");
    const hostPorts = target.instance.ports.flatMap((port, index) => (port.hostPort !== undefined ? [index] : []));
    for (const index of hostPorts) issue(["instances", "ports", index, "hostPort"], "the process provider gives each instance a free port on 127.0.0.1 (in PORT); a fixed host port is not supported");
    if (target.instance.memoryBytes !== undefined || target.instance.cpus !== undefined) issue(["instances", "resources"], "the process provider cannot limit a process's memory or CPU; remove the limits");
    if (target.traffic.proxy) issue(["traffic", "proxy"], "the process provider runs no front proxy; clients reach each instance's endpoint");
    if (target.health.check?.kind === "command") issue(["health", "command"], "the process provider cannot run commands in an instance; use health.http or health.tcp");
    return issues;
  },
  planLines: (target, { instances }) => [`process: each instance runs \`${target.instance.command?.join(" ")}\` in ${instances?.workingDirectory} of the image, a local process on 127.0.0.1`],
  fingerprint: (_target, { base }) => ({ inputs: { base: base ?? null }, baseImages: base ? [`process: Node.js ${base.node}`] : [] }),
});
