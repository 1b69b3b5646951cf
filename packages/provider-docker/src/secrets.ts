import { lstat, mkdir, readdir, rm, statfs, writeFile, chmod } from "node:fs/promises";
import path from "node:path";
import type Dockerode from "dockerode";
import { KilnError, LABELS, redactSecrets, type LaunchRequest, type ProviderContext, type SecretMount, type SecretValue } from "@kilnjs/core";
import type { EngineAddress } from "./options.js";

/**
 * Where file secrets live on the engine's host by default: a folder on `/dev/shm`, the tmpfs
 * (memory) every Linux host mounts there.
 */
export const DEFAULT_SECRETS_DIR = "/dev/shm/kiln-secrets";

/** `statfs` magic numbers of memory-backed filesystems (linux/magic.h): tmpfs, ramfs. */
const MEMORY_FILESYSTEMS = new Set([0x01021994, 0x858458f6]);

/**
 * How old (milliseconds) a container's secret folder must be before a sweep may remove it for
 * want of its container: another Kiln process may have written it and not yet created the
 * container (that takes milliseconds).
 */
export const SWEEP_MIN_AGE_MS = 5 * 60_000;

/** One folder of file secrets as the container sees it: its path and the files in it. */
export interface SecretFolder {
  /** The folder inside the container (absolute, POSIX): the folder of each file's `to.file`. */
  readonly target: string;
  /** The files in it: their base name and the secret (its name under `secrets`) each holds. */
  readonly files: readonly { readonly file: string; readonly secret: string }[];
}

/**
 * The folders a release's file secrets go to (`to.file`), each with its files, sorted by
 * folder. Kiln mounts each folder whole (read-only, memory-backed), so that the container's
 * writable layer holds nothing of the secret, not even an empty file in its place. Pure.
 */
export function secretFolders(mounts: readonly SecretMount[] | undefined): SecretFolder[] {
  const byFolder = new Map<string, { file: string; secret: string }[]>();
  for (const mount of mounts ?? []) {
    if (mount.to.kind !== "file") continue;
    const target = path.posix.dirname(mount.to.path);
    const files = byFolder.get(target) ?? [];
    files.push({ file: path.posix.basename(mount.to.path), secret: mount.name });
    byFolder.set(target, files);
  }
  return [...byFolder.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([target, files]) => ({ target, files }));
}

/**
 * The value of secret `name` of a launch request.
 * @throws KilnError INTERNAL when the request carries no value for it (core always reads them)
 */
export function secretValue(request: Pick<LaunchRequest, "secrets">, name: string): SecretValue {
  const value = request.secrets?.get(name);
  if (!value) throw new KilnError("INTERNAL", `The launch request carries no value for secrets.${name}; core reads every secret of a release before it launches it.`);
  return value;
}

/** `NAME=value` for each secret the request delivers as an environment variable (`to.env`). */
export function secretEnv(request: Pick<LaunchRequest, "config" | "secrets">): string[] {
  return (request.config.secrets ?? []).flatMap((mount) => (mount.to.kind === "env" ? [`${mount.to.name}=${secretValue(request, mount.name).reveal()}`] : []));
}

/** Every secret value of a launch request or a build, for {@link redactSecrets}. */
export function secretValues(secrets: ReadonlyMap<string, SecretValue> | undefined): SecretValue[] {
  return [...(secrets?.values() ?? [])];
}

/**
 * `error` unchanged when its message holds no secret value; otherwise a copy with the value
 * redacted and without its cause (which may hold it too: an engine's message, a child's output).
 */
export function withoutSecrets(error: KilnError, values: readonly SecretValue[]): KilnError {
  if (values.length === 0) return error;
  const message = redactSecrets(error.message, values);
  const details = redactSecrets(JSON.stringify(error.details), values);
  if (message === error.message && details === JSON.stringify(error.details)) return error;
  let cleanDetails: Record<string, unknown> = {};
  try {
    cleanDetails = JSON.parse(details) as Record<string, unknown>;
  } catch {
    // A value that cut through JSON's escapes: the details go, the message stays.
  }
  return new KilnError(error.code, message, { retryable: error.retryable, details: cleanDetails });
}

/** Whether an engine address certainly is another machine (a `tcp://` address that is not loopback). */
export function isRemoteEngine(address: EngineAddress): boolean {
  return address.kind === "tcp" && !["127.0.0.1", "::1", "localhost"].includes(address.host);
}

/**
 * Refuses, before any engine call, a launch with file secrets on an engine that certainly runs on
 * another host (see {@link isRemoteEngine}).
 * @throws KilnError CAPABILITY_MISSING
 */
export function assertFileSecretsReachable(address: EngineAddress, request: Pick<LaunchRequest, "config">): void {
  if (isRemoteEngine(address) && secretFolders(request.config.secrets).length > 0) throw fileSecretsUnsupported(address, "it runs on another host");
}

/** The engine's answer when a bind mount's source is not on its host. */
const MISSING_SOURCE = /bind source path does not exist/i;

/** `CAPABILITY_MISSING` for file secrets an engine cannot receive, saying to use `to.env`. */
export function fileSecretsUnsupported(address: EngineAddress, why: string, cause?: unknown): KilnError {
  return new KilnError(
    "CAPABILITY_MISSING",
    `The Docker engine at ${address.url} cannot receive secrets as files: ${why}. File secrets live in a memory-backed folder on the machine that runs Kiln, ` +
      "which the engine bind-mounts, so Kiln and the engine must share one host. Deliver them as environment variables instead (secrets.<name>.to: { env: NAME }), " +
      "or run Kiln on the engine's host (see the Secrets section of @kilnjs/provider-docker's README).",
    { ...(cause === undefined ? {} : { cause }), details: { host: address.url } },
  );
}

/** Whether `error` is the engine refusing a bind mount whose source it cannot see. */
export function isMissingMountSource(error: unknown): boolean {
  const json = (error as { json?: { message?: unknown } } | null)?.json;
  const text = typeof json?.message === "string" ? json.message : error instanceof Error ? error.message : String(error);
  return MISSING_SOURCE.test(text);
}

/** Writes, removes and sweeps the file secrets of containers: see {@link createSecretFileStore}. */
export interface SecretFileStore {
  /**
   * Writes the request's file secrets for the container `name` and returns its bind mounts (none
   * when the request has no file secrets; then nothing is touched).
   * @throws KilnError CAPABILITY_MISSING (a remote engine; a folder that is not memory-backed or
   *   not Kiln's own), INTERNAL
   */
  write(docker: Dockerode, name: string, request: LaunchRequest, ctx: ProviderContext): Promise<Dockerode.MountSettings[]>;
  /**
   * Removes the secret folders of the containers `names` (gone or about to go), then sweeps the
   * folders of containers that no longer exist. Never throws: a failure is logged.
   */
  remove(docker: Dockerode, names: readonly string[], ctx: ProviderContext): Promise<void>;
}

/**
 * File secrets (`secrets.<name>.to.file`) for containers on one engine. Each container's secrets
 * live in `<secretsDir>/<engine id>/<container name>/<n>/<file>`, on a memory-backed filesystem
 * of the machine that runs Kiln (checked with `statfs`), and folder `n` is bind-mounted read-only
 * at the n-th secret folder of {@link secretFolders}. Folders are mode 0700 up to the
 * container's (so no other user of the host reads them), the mounted folder 0755 and the files
 * 0444 (like Docker Swarm's secrets: any user of the container may read them).
 *
 * The engine must see the same filesystem: a `tcp://` engine on another host is refused before
 * anything is written; any other engine that cannot see the freshly made folder refuses the bind
 * mount, which becomes the same `CAPABILITY_MISSING`.
 */
export function createSecretFileStore(address: EngineAddress, secretsDir: string): SecretFileStore {
  let engineDir: Promise<string> | undefined;

  /** `<secretsDir>/<engine id>`: containers of two engines on one host never share a folder. */
  function folderOfEngine(docker: Dockerode): Promise<string> {
    engineDir ??= docker.info().then(
      (info: { ID?: string }) => path.join(secretsDir, (info.ID ?? "engine").replace(/[^A-Za-z0-9_.-]/g, "-")),
      (error: unknown) => {
        engineDir = undefined;
        throw error;
      },
    );
    return engineDir;
  }

  /** Makes `folder` (0700) when missing and checks it is Kiln's: a real folder of this user, closed to others. */
  async function ensurePrivateFolder(folder: string): Promise<void> {
    await mkdir(folder, { recursive: true, mode: 0o700 });
    const stat = await lstat(folder);
    const uid = process.getuid?.();
    if (!stat.isDirectory() || (uid !== undefined && stat.uid !== uid) || (stat.mode & 0o077) !== 0) {
      throw new KilnError(
        "CAPABILITY_MISSING",
        `The secrets folder ${folder} is not a folder of this user closed to others (mode 0700); Kiln will not write secrets there. Remove it (another user may have made it) or set the provider's secretsDir option to a private folder on a tmpfs.`,
        { details: { folder } },
      );
    }
  }

  async function sweep(docker: Dockerode, engineFolder: string, ctx: ProviderContext): Promise<void> {
    const entries = await readdir(engineFolder, { withFileTypes: true }).catch(() => []);
    if (entries.length === 0) return;
    const containers = await docker.listContainers({ all: true, filters: { label: [`${LABELS.managed}=true`] } });
    const live = new Set(containers.flatMap((info) => (info.Names ?? []).map((name) => name.replace(/^\//, ""))));
    for (const entry of entries) {
      if (!entry.isDirectory() || live.has(entry.name)) continue;
      const folder = path.join(engineFolder, entry.name);
      const stat = await lstat(folder).catch(() => undefined);
      if (!stat || Date.now() - stat.mtimeMs < SWEEP_MIN_AGE_MS) continue;
      await rm(folder, { recursive: true, force: true });
      ctx.logger.debug("removed the secrets of a container that no longer exists", { container: entry.name });
    }
  }

  return {
    async write(docker, name, request, ctx) {
      const folders = secretFolders(request.config.secrets);
      if (folders.length === 0) return [];
      assertFileSecretsReachable(address, request);
      if (!/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(name)) throw new KilnError("INTERNAL", `Container name ${JSON.stringify(name)} cannot name a secrets folder.`);
      await ensurePrivateFolder(secretsDir);
      const kind = (await statfs(secretsDir)).type;
      if (!MEMORY_FILESYSTEMS.has(kind)) {
        throw new KilnError(
          "CAPABILITY_MISSING",
          `The secrets folder ${secretsDir} is not on a memory-backed filesystem (tmpfs or ramfs; statfs type 0x${kind.toString(16)}), and a secret must never be written to disk. Set the provider's secretsDir option to a folder on a tmpfs (such as /dev/shm/kiln-secrets), or deliver the secrets as environment variables (to: { env: NAME }).`,
          { details: { folder: secretsDir } },
        );
      }
      const engineFolder = await folderOfEngine(docker);
      await ensurePrivateFolder(engineFolder);
      await sweep(docker, engineFolder, ctx).catch((error: unknown) => ctx.logger.warn("sweeping old secret folders failed", { error: String(error) }));
      const containerFolder = path.join(engineFolder, name);
      await mkdir(containerFolder, { mode: 0o700 });
      try {
        return await Promise.all(
          folders.map(async (folder, index): Promise<Dockerode.MountSettings> => {
            const source = path.join(containerFolder, String(index));
            await mkdir(source);
            await chmod(source, 0o755);
            for (const { file, secret } of folder.files) {
              const target = path.join(source, file);
              await writeFile(target, secretValue(request, secret).reveal(), { mode: 0o444, flag: "wx" });
              await chmod(target, 0o444);
            }
            return { Type: "bind", Source: source, Target: folder.target, ReadOnly: true };
          }),
        );
      } catch (error) {
        await rm(containerFolder, { recursive: true, force: true });
        throw error;
      }
    },

    async remove(docker, names, ctx) {
      try {
        // Nothing to do where no file secret was ever written (the usual case): no engine call.
        if (!(await lstat(secretsDir).catch(() => undefined))) return;
        const engineFolder = await folderOfEngine(docker);
        for (const name of names) {
          if (/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(name)) await rm(path.join(engineFolder, name), { recursive: true, force: true });
        }
        await sweep(docker, engineFolder, ctx);
      } catch (error) {
        ctx.logger.warn("removing the secret files of terminated containers failed", { error: String(error) });
      }
    },
  };
}
