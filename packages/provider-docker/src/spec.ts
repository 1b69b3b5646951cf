import path from "node:path";
import { defineProviderSpec, type ResolvedTarget, type SpecIssue } from "@kilnjs/core/spec";

/**
 * Folders a file secret's folder must not be: Kiln mounts a secret's folder whole (read-only,
 * holding only the target's secrets there), which would hide what the image has in these.
 */
const SHARED_FOLDERS = new Set([
  "/",
  ...["bin", "boot", "dev", "etc", "home", "lib", "lib32", "lib64", "libx32", "media", "mnt", "opt", "proc", "root", "run", "sbin", "srv", "sys", "tmp", "usr", "var"].map((name) => `/${name}`),
  ...["bin", "etc", "include", "lib", "lib32", "lib64", "libexec", "local", "sbin", "share", "src"].map((name) => `/usr/${name}`),
  ...["bin", "etc", "include", "lib", "sbin", "share", "src"].map((name) => `/usr/local/${name}`),
  ...["cache", "lib", "local", "lock", "log", "mail", "opt", "run", "spool", "tmp"].map((name) => `/var/${name}`),
  "/etc/ssl",
  "/etc/ssl/certs",
]);

/** Folders inside which the engine itself mounts filesystems: no secret folder goes there. */
const KERNEL_FOLDERS = ["/proc", "/sys", "/dev"];

/**
 * The docker provider's rules for file secrets (`secrets.<name>.to.file`): each secret's folder
 * is mounted whole, so it must be written plainly (no `.`, `..` or `//`), must not be a shared
 * system folder (`/etc`, `/usr/lib`, `/run`, …) or lie under `/proc`, `/sys` or `/dev`, and no
 * secret folder may lie inside another's (a read-only mount cannot hold a mount point). Pure.
 */
export function checkFileSecrets(target: ResolvedTarget): SpecIssue[] {
  const issues: SpecIssue[] = [];
  const folders = new Map<string, string>();
  for (const secret of target.secrets ?? []) {
    if (secret.to.kind !== "file") continue;
    const at = ["secrets", secret.name, "to", "file"];
    const file = secret.to.path;
    if (path.posix.normalize(file) !== file) {
      issues.push({ path: at, kind: "invalid-value", message: `write the path plainly, as ${path.posix.normalize(file)} (no ".", ".." or "//")` });
      continue;
    }
    const folder = path.posix.dirname(file);
    if (SHARED_FOLDERS.has(folder) || KERNEL_FOLDERS.some((kernel) => folder === kernel || folder.startsWith(`${kernel}/`))) {
      issues.push({
        path: at,
        kind: "invalid-value",
        message: `the docker provider mounts a secret's folder whole (read-only, memory-backed), which would hide the image's ${folder}; put the file in a folder of its own, such as /run/secrets/${path.posix.basename(file)}`,
      });
      continue;
    }
    folders.set(folder, folders.get(folder) ?? secret.name);
  }
  for (const [folder, name] of folders) {
    for (const [outer, outerName] of folders) {
      if (folder !== outer && folder.startsWith(`${outer}/`)) {
        issues.push({
          path: ["secrets", name, "to", "file"],
          kind: "invalid-value",
          message: `its folder ${folder} lies inside ${outer}, the folder of secrets.${outerName}, which the docker provider mounts read-only; put both files in one folder, or in folders side by side`,
        });
      }
    }
  }
  return issues;
}

/**
 * The most containers one target runs (`instances.count`). A target's containers run on one
 * engine and join one bridge network (the target's, behind a front proxy; the engine's default
 * `docker0` otherwise): a Linux bridge takes at most 1,024 ports (`BR_PORT_BITS` is 10 in the
 * kernel), containers past about 1,000 on one bridge are unreachable (moby/moby#44973), and a
 * rollout briefly runs the count plus its surge. 1,000 leaves that room. Behind the front proxy
 * the proxy's slots (`limits.maxInstancesBehindProxy`) are the tighter limit.
 * @see https://github.com/moby/moby/issues/44973
 */
export const DOCKER_MAX_INSTANCE_COUNT = 1_000;

/**
 * The docker provider's part of the spec: container images from `image.dockerfile`; it owns no
 * sections of its own (every instance setting it honours is core's: ports, env, labels, command,
 * resources, the stop grace period, `traffic.proxy`). Instances receive secrets as environment
 * variables or as files on a read-only, memory-backed mount ({@link checkFileSecrets}). A target
 * runs at most {@link DOCKER_MAX_INSTANCE_COUNT} containers.
 */
export const dockerProviderSpec = defineProviderSpec({
  imageFormat: "dockerfile",
  maxInstanceCount: DOCKER_MAX_INSTANCE_COUNT,
  secretDelivery: ["env", "file"],
  validate: (target) => checkFileSecrets(target),
});
