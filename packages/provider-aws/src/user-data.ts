import { readFile, stat } from "node:fs/promises";
import path from "node:path";
import { createGzip } from "node:zlib";
import { KilnError, type MachineRecipe, type MachineStep } from "@kilnjs/core";
import { AWS_USER_DATA_MAX_BYTES } from "./spec.js";
import { pack as createPack } from "tar-stream";
import { AWS_TAGS } from "./tags.js";

/** The line the provisioning script writes to the console with its exit status: `KILN-PROVISION-RESULT status=0`. */
export const RESULT_MARKER = "KILN-PROVISION-RESULT";

/** Where the builder keeps the unpacked payload while the steps run (removed before the image is taken). */
const PAYLOAD_DIR = "/var/lib/kiln-bake";
/** The provisioning log inside the builder (kept in the image, for whoever wonders how it was made). */
const LOG_FILE = "/var/log/kiln-provision.log";

/** What {@link renderProvisionScript} made. */
export interface ProvisionScript {
  /** The user data: a POSIX shell script, at most {@link AWS_USER_DATA_MAX_BYTES} bytes. */
  readonly script: string;
  /** Size of the script in bytes. */
  readonly bytes: number;
  /** Size of the compressed payload of the `file` and `shell` steps (bytes, before base64). */
  readonly payloadBytes: number;
}

/**
 * Renders a machine recipe's steps into the builder's user data: a POSIX shell script that cloud-init
 * runs once, as root, at the builder's first boot. It unpacks the files of the `file` and `shell`
 * steps (a gzipped tar, base64, inside the script), runs the steps in order with `set -e` and their
 * output in /var/log/kiln-provision.log, then reports the exit status twice: as the console line
 * `KILN-PROVISION-RESULT status=N` (read back with GetConsoleOutput) and, when the AWS CLI and an
 * instance profile allow, as the tag `dev.kiln.provision-status` on the builder itself; then it powers
 * the builder off. So a stopped builder means "provisioned", and the status says whether it worked.
 *
 * Everything travels in user data, so the payload must fit EC2's 16 KB limit (RunInstances API
 * reference, UserData); larger files belong in a step that downloads them.
 *
 * @throws KilnError BUILD_CONTEXT_INVALID when a file cannot be read or the script exceeds 16 KB
 */
export async function renderProvisionScript(recipe: MachineRecipe, meta: { readonly service: string; readonly fingerprint: string }): Promise<ProvisionScript> {
  const payload = await packPayload(recipe.steps);
  const encoded = payload.toString("base64").replace(/.{1,76}/g, "$&\n");
  const lines: string[] = [
    "#!/bin/sh",
    `# Kiln bake of ${meta.service} (${meta.fingerprint}): runs image.machine.provision once, reports, powers off.`,
    `KILN_PAYLOAD=${PAYLOAD_DIR}`,
    "kiln_report() {",
    `  echo "${RESULT_MARKER} status=$1" > /dev/console 2>/dev/null || true`,
    `  echo "${RESULT_MARKER} status=$1"`,
    "  if command -v aws >/dev/null 2>&1 && command -v curl >/dev/null 2>&1; then",
    "    token=$(curl -fsS -m 5 -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 300' http://169.254.169.254/latest/api/token || true)",
    "    id=$(curl -fsS -m 5 -H \"X-aws-ec2-metadata-token: $token\" http://169.254.169.254/latest/meta-data/instance-id || true)",
    "    region=$(curl -fsS -m 5 -H \"X-aws-ec2-metadata-token: $token\" http://169.254.169.254/latest/meta-data/placement/region || true)",
    `    [ -n "$id" ] && aws ec2 create-tags --region "$region" --resources "$id" --tags "Key=${AWS_TAGS.provisionStatus},Value=$1" >/dev/null 2>&1 || true`,
    "  fi",
    "}",
    "kiln_steps() {",
    "  set -e",
    '  rm -rf "$KILN_PAYLOAD" && mkdir -p "$KILN_PAYLOAD"',
    "  base64 -d > \"$KILN_PAYLOAD/payload.tgz\" <<'KILN_PAYLOAD_END'",
    encoded.trimEnd(),
    "KILN_PAYLOAD_END",
    '  tar -xzf "$KILN_PAYLOAD/payload.tgz" -C "$KILN_PAYLOAD"',
  ];
  recipe.steps.forEach((step, index) => {
    lines.push(`  echo ${quote(`kiln: step ${index + 1}/${recipe.steps.length}: ${describeStep(step)}`)}`);
    lines.push(...stepCommands(step, index).map((command) => `  ${command}`));
  });
  lines.push(
    "}",
    `mkdir -p ${path.posix.dirname(LOG_FILE)}`,
    `( kiln_steps ) > ${LOG_FILE} 2>&1`,
    "status=$?",
    `tail -n 200 ${LOG_FILE} > /dev/console 2>/dev/null || true`,
    'rm -rf "$KILN_PAYLOAD"',
    'kiln_report "$status"',
    "sync",
    "poweroff || shutdown -h now",
    "",
  );
  const script = lines.join("\n");
  const bytes = Buffer.byteLength(script);
  if (bytes > AWS_USER_DATA_MAX_BYTES) {
    throw new KilnError(
      "BUILD_CONTEXT_INVALID",
      `The provisioning steps come to ${bytes} bytes of user data (${payload.length} bytes of compressed files), and EC2 takes at most ${AWS_USER_DATA_MAX_BYTES} (RunInstances, UserData). Copy large files in a step that downloads them (e.g. run: curl -fsSL https://… | tar -xz -C /opt/app) and keep file steps for small ones.`,
      { details: { bytes, limit: AWS_USER_DATA_MAX_BYTES } },
    );
  }
  return { script, bytes, payloadBytes: payload.length };
}

/** One line about a step, for logs. */
export function describeStep(step: MachineStep): string {
  if (step.kind === "file") return `file ${path.basename(step.from)}${step.directory ? "/" : ""} → ${step.to}`;
  if (step.kind === "shell") return `shell ${path.basename(step.script)}`;
  return `run ${step.command}`;
}

/** The shell commands of one step; payload entries of step `index` live under `<index>/`. */
function stepCommands(step: MachineStep, index: number): string[] {
  const source = `"$KILN_PAYLOAD"/${index}`;
  if (step.kind === "file") {
    if (step.directory) return [`mkdir -p ${quote(step.to)}`, `cp -a ${source}/. ${quote(step.to)}/`];
    return [`mkdir -p ${quote(path.posix.dirname(step.to))}`, `cp -a ${source}/file ${quote(step.to)}`];
  }
  if (step.kind === "shell") return [`sh ${source}/script.sh`];
  return [`sh -c ${quote(step.command)}`];
}

/** Single-quotes text for sh. */
function quote(text: string): string {
  return `'${text.replace(/'/g, "'\\''")}'`;
}

/** The files of `file` and `shell` steps as a gzipped tar, each step under its index. */
async function packPayload(steps: readonly MachineStep[]): Promise<Buffer> {
  const pack = createPack();
  const gzip = createGzip({ level: 9 });
  const chunks: Buffer[] = [];
  const done = new Promise<void>((resolve, reject) => {
    gzip.on("data", (chunk: Buffer) => chunks.push(chunk));
    gzip.on("end", resolve);
    gzip.on("error", reject);
    pack.on("error", reject);
  });
  pack.pipe(gzip);
  const add = async (name: string, file: string, mode: number): Promise<void> => {
    let content: Buffer;
    try {
      content = await readFile(file);
    } catch (error) {
      throw new KilnError("BUILD_CONTEXT_INVALID", `${file} could not be read for the bake (${(error as Error).message}); it was there when the recipe was fingerprinted.`, { cause: error });
    }
    await new Promise<void>((resolve, reject) => pack.entry({ name, mode, size: content.length, mtime: new Date(0) }, content, (error) => (error ? reject(error) : resolve())));
  };
  try {
    for (const [index, step] of steps.entries()) {
      if (step.kind === "shell") await add(`${index}/script.sh`, step.script, 0o755);
      if (step.kind !== "file") continue;
      if (!step.directory) {
        await add(`${index}/file`, step.from, await modeOf(step.from));
        continue;
      }
      for (const relPath of step.files) {
        const file = path.join(step.from, ...relPath.split("/"));
        await add(`${index}/${relPath}`, file, await modeOf(file));
      }
    }
    pack.finalize();
  } catch (error) {
    pack.destroy(error as Error);
    throw error;
  }
  await done;
  return Buffer.concat(chunks);
}

async function modeOf(file: string): Promise<number> {
  try {
    return (await stat(file)).mode & 0o111 ? 0o755 : 0o644;
  } catch {
    return 0o644;
  }
}
