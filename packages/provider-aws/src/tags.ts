import { formatTarget, targetLabels, type Target } from "@kilnjs/core";

/**
 * Kiln's own tag keys on AWS beside core's `LABELS` (which AWS accepts as they are: dots are
 * allowed in tag keys; the launch key and ports are core labels too).
 */
export const AWS_TAGS = {
  /** The instance's name in the console. */
  name: "Name",
  /** `private` or `public`: which of the instance's addresses its endpoints use. */
  address: "dev.kiln.address",
  /** What a bake resource is for: `builder` (instance, security group). */
  role: "dev.kiln.role",
  /** `service@environment`: the target a bake resource belongs to (an AMI is shared by the service). */
  target: "dev.kiln.target",
  /** ISO 8601: after this, a bake resource is a leftover whatever its rollout, and any bake removes it. */
  expires: "dev.kiln.expires",
  /** Set by the builder's provisioning script (when its instance profile allows): the steps' exit status. */
  provisionStatus: "dev.kiln.provision-status",
} as const;

/** The `role` value of a bake's builder instance. */
export const BUILDER_ROLE = "builder";

/** A tag as the EC2 API takes it. */
export interface Tag {
  readonly Key: string;
  readonly Value: string;
}

/** Turns a record into EC2 tags. */
export function toTags(record: Readonly<Record<string, string>>): Tag[] {
  return Object.entries(record).map(([Key, Value]) => ({ Key, Value }));
}

/** Turns EC2 tags (as the SDK returns them, fields optional) into a record. */
export function fromTags(tags: ReadonlyArray<{ Key?: string | undefined; Value?: string | undefined }> | undefined): Record<string, string> {
  const record: Record<string, string> = {};
  for (const tag of tags ?? []) if (tag.Key !== undefined) record[tag.Key] = tag.Value ?? "";
  return record;
}

/** The tags every resource Kiln creates for a target carries. */
export function targetTags(target: Target): Record<string, string> {
  return { ...targetLabels(target), [AWS_TAGS.target]: formatTarget(target) };
}

/** A DescribeX `Filters` entry for one tag value. */
export function tagFilter(key: string, ...values: string[]): { Name: string; Values: string[] } {
  return { Name: `tag:${key}`, Values: values };
}
