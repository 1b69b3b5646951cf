/**
 * The context guard: which files of a build context (or of a machine image's `file` steps) look
 * like secrets, so that Kiln refuses to send them to a build unless the spec allows them by path.
 *
 * The rules, in one place. A file is checked by its path (POSIX, relative to the build context or
 * to the spec's folder), case-insensitively; only `.npmrc` and `.netrc` are read, because they are
 * secrets only when they hold a credential. Only regular files are checked: a symlink reaches the
 * image as its target text, never its target's content.
 *
 * | matches | why | `.dockerignore` line that keeps it out at any depth |
 * | --- | --- | --- |
 * | `.env`, `.env.*`, except `.env.example`, `.env.sample`, `.env.template`, `.env.dist` (placeholders committed on purpose) | dotenv files hold the passwords and tokens of an environment | `**\/.env`, `**\/.env.*` |
 * | `.envrc` | direnv files export secrets into the shell | `**\/.envrc` |
 * | `id_rsa`, `id_dsa`, `id_ecdsa`, `id_ed25519` (and names starting with them, such as `id_rsa_deploy`), except `*.pub` | SSH private keys | `**\/id_rsa*` (one per key type) |
 * | `*.key`, `*.pem` | PEM private keys and TLS keys (a certificate-only `.pem` is public: allow it by path) | `**\/*.key`, `**\/*.pem` |
 * | `*.p12`, `*.pfx` | PKCS #12 bundles: a certificate with its private key | `**\/*.p12`, `**\/*.pfx` |
 * | `.aws/credentials` | AWS access keys (the shared credentials file) | `**\/.aws/credentials` |
 * | anything under a `.azure/` folder | Azure CLI tokens and service principal secrets | `**\/.azure` |
 * | anything under a `.config/gcloud/` folder; `application_default_credentials.json`; `credentials.json` | gcloud tokens; Google application default credentials; the name Google's quickstarts and many tools give a key or OAuth client secret | `**\/.config/gcloud`, `**\/application_default_credentials.json`, `**\/credentials.json` |
 * | `.docker/config.json` | registry logins (base64 user and password) | `**\/.docker/config.json` |
 * | `.kube/config` | Kubernetes cluster credentials (tokens, client keys) | `**\/.kube/config` |
 * | `.npmrc` holding `_authToken`, `_auth`, `_password` or `password` with a literal value (not only a `${VAR}` reference, which npm fills in at run time) | npm registry tokens | `**\/.npmrc` |
 * | `.netrc`, `_netrc` holding a `password` | logins for curl, git, pip and others | `**\/.netrc` |
 * | `.git-credentials`, `.pgpass` | git's and PostgreSQL's stored passwords | `**\/.git-credentials`, `**\/.pgpass` |
 * | anything under a `.git/` folder | the repository: its whole history (with any secret ever committed), remotes with tokens in their URLs | `**\/.git` |
 *
 * Not detected (exclude them in `.dockerignore` yourself): keys under names of your own choosing,
 * such as a Google service account key downloaded as `<project>-<hex>.json`; secrets inside files
 * that are also code. Reading every file's first bytes (`-----BEGIN … PRIVATE KEY-----`) would
 * catch more, but would read every file of every build, where the walk reads none it can serve
 * from the stat cache.
 * @module
 */
import { readFile } from "node:fs/promises";
import dockerignore from "@balena/dockerignore";
import { KilnError } from "../errors.js";

/** A file of the context that may be a secret: its path for the rules, and where to read it. */
export interface SecretFileCandidate {
  /** POSIX path relative to the build context (or to the spec's folder for machine images). */
  readonly relPath: string;
  /** Absolute path, read only for the rules that look at content (`.npmrc`, `.netrc`). */
  readonly absPath: string;
}

/** A file (or folder) that looks like a secret, as reported in the error. */
export interface SecretFile {
  /** POSIX path relative to the context; a folder (`.git`) when its rule is about a folder. */
  readonly path: string;
  /** What it looks like, in words (never its content). */
  readonly reason: string;
  /** A `.dockerignore` line that keeps every such file out at any depth (`**\/.env`). */
  readonly pattern: string;
}

/** One rule of the table above. */
interface SecretFileRule {
  readonly reason: string;
  readonly pattern: string;
  /** For rules that depend on content: the credential key found in the text, or `undefined`. */
  readonly credentialIn?: (text: string) => string | undefined;
}

const ENV_PLACEHOLDERS = new Set([".env.example", ".env.sample", ".env.template", ".env.dist"]);
const SSH_KEY = /^id_(rsa|dsa|ecdsa|ed25519)/;
const SSH_KEY_RULES = new Map(
  ["rsa", "dsa", "ecdsa", "ed25519"].map((type): [string, SecretFileRule] => [type, { reason: `an SSH private key (id_${type})`, pattern: `**/id_${type}*` }]),
);

const RULES = {
  env: { reason: "an environment file (.env), which holds passwords and tokens", pattern: "**/.env" },
  envVariant: { reason: "an environment file (.env.*), which holds passwords and tokens", pattern: "**/.env.*" },
  envrc: { reason: "a direnv file (.envrc), which exports secrets", pattern: "**/.envrc" },
  key: { reason: "a private key (*.key)", pattern: "**/*.key" },
  pem: { reason: "a PEM file (*.pem), which usually holds a private key", pattern: "**/*.pem" },
  p12: { reason: "a PKCS #12 bundle (*.p12), which holds a private key", pattern: "**/*.p12" },
  pfx: { reason: "a PKCS #12 bundle (*.pfx), which holds a private key", pattern: "**/*.pfx" },
  aws: { reason: "AWS credentials (.aws/credentials)", pattern: "**/.aws/credentials" },
  docker: { reason: "Docker registry logins (.docker/config.json)", pattern: "**/.docker/config.json" },
  kube: { reason: "Kubernetes credentials (.kube/config)", pattern: "**/.kube/config" },
  googleDefault: { reason: "Google application default credentials", pattern: "**/application_default_credentials.json" },
  googleCredentials: { reason: "a credentials file (credentials.json: a key or OAuth client secret by Google's naming)", pattern: "**/credentials.json" },
  gitCredentials: { reason: "git's stored passwords (.git-credentials)", pattern: "**/.git-credentials" },
  pgpass: { reason: "PostgreSQL passwords (.pgpass)", pattern: "**/.pgpass" },
  npmrc: { reason: "an .npmrc with a registry credential", pattern: "**/.npmrc", credentialIn: npmrcCredential },
  netrc: { reason: "a .netrc with a password", pattern: "**/.netrc", credentialIn: netrcCredential },
} satisfies Record<string, SecretFileRule>;

/**
 * Folders whose every file is a secret; the finding is the folder. `atStart` and `inside` are the
 * strings looked for (`.git/`, `/.git/`), made once: the guard looks at every path of a context.
 */
const SECRET_FOLDERS: ReadonlyArray<{ readonly folder: string; readonly atStart: string; readonly inside: string; readonly rule: SecretFileRule }> = [
  { folder: ".git", rule: { reason: "a git repository (.git): its whole history, remotes with their tokens", pattern: "**/.git" } },
  { folder: ".azure", rule: { reason: "Azure CLI credentials (.azure)", pattern: "**/.azure" } },
  { folder: ".config/gcloud", rule: { reason: "gcloud credentials (.config/gcloud)", pattern: "**/.config/gcloud" } },
].map((entry) => ({ ...entry, atStart: `${entry.folder}/`, inside: `/${entry.folder}/` }));

/** Files known by the end of their path (a file in a known folder); `afterSlash` is `/` + `ending`. */
const SECRET_PATH_ENDINGS: ReadonlyArray<{ readonly ending: string; readonly afterSlash: string; readonly rule: SecretFileRule }> = [
  { ending: ".aws/credentials", rule: RULES.aws },
  { ending: ".docker/config.json", rule: RULES.docker },
  { ending: ".kube/config", rule: RULES.kube },
].map((entry) => ({ ...entry, afterSlash: `/${entry.ending}` }));

/** Files known by name alone. */
const SECRET_NAMES = new Map<string, SecretFileRule>([
  [".env", RULES.env],
  [".envrc", RULES.envrc],
  ["application_default_credentials.json", RULES.googleDefault],
  ["credentials.json", RULES.googleCredentials],
  [".git-credentials", RULES.gitCredentials],
  [".pgpass", RULES.pgpass],
  [".npmrc", RULES.npmrc],
  [".netrc", RULES.netrc],
  ["_netrc", RULES.netrc],
]);

/** Files known by extension. */
const SECRET_EXTENSIONS = new Map<string, SecretFileRule>([
  [".key", RULES.key],
  [".pem", RULES.pem],
  [".p12", RULES.p12],
  [".pfx", RULES.pfx],
]);

/** The length of the folder of `relPath` named like `folder` (`a/.git` for `a/.git/HEAD`), or -1. */
function folderLengthIn(relPath: string, folder: (typeof SECRET_FOLDERS)[number]): number {
  if (relPath.startsWith(folder.atStart)) return folder.folder.length;
  const at = relPath.indexOf(folder.inside);
  return at === -1 ? -1 : at + 1 + folder.folder.length;
}

/**
 * The rule a path matches by name, and the path to report (a folder for a folder rule). Pure string
 * work: no file is touched.
 */
export function secretFileRuleFor(relPath: string): { readonly rule: SecretFileRule; readonly path: string } | undefined {
  // Case-insensitive; a path whose lower case has another length (rare letters) is matched as it is.
  const lowered = relPath.toLowerCase();
  const lower = lowered.length === relPath.length ? lowered : relPath;
  for (const folder of SECRET_FOLDERS) {
    const length = folderLengthIn(lower, folder);
    if (length !== -1) return { rule: folder.rule, path: relPath.slice(0, length) };
  }
  const name = lower.slice(lower.lastIndexOf("/") + 1);
  const byName = SECRET_NAMES.get(name);
  if (byName) return { rule: byName, path: relPath };
  if (name.startsWith(".env.")) return ENV_PLACEHOLDERS.has(name) ? undefined : { rule: RULES.envVariant, path: relPath };
  const sshKey = name.startsWith("id_") ? SSH_KEY.exec(name) : null;
  if (sshKey && !name.endsWith(".pub")) return { rule: SSH_KEY_RULES.get(sshKey[1] ?? "") ?? RULES.key, path: relPath };
  const dot = name.lastIndexOf(".");
  const byExtension = dot > 0 ? SECRET_EXTENSIONS.get(name.slice(dot)) : undefined;
  if (byExtension) return { rule: byExtension, path: relPath };
  for (const { ending, afterSlash, rule } of SECRET_PATH_ENDINGS) {
    if (lower === ending || lower.endsWith(afterSlash)) return { rule, path: relPath };
  }
  return undefined;
}

/** Whether an `.npmrc` or `.netrc` value is only an environment variable reference (`${NPM_TOKEN}`). */
function isVariableReference(value: string): boolean {
  return /^["']?\$\{[A-Za-z_][A-Za-z0-9_]*\}["']?$/.test(value);
}

/**
 * The credential key an `.npmrc` sets to a literal value: `_authToken`, `_auth`, `_password` or
 * `password`, bare or scoped to a registry (`//registry.npmjs.org/:_authToken=…`).
 * @see https://docs.npmjs.com/cli/configuring-npm/npmrc#auth-related-configuration
 */
export function npmrcCredential(text: string): string | undefined {
  for (const rawLine of text.split(/\r?\n/)) {
    const line = rawLine.trim();
    if (line === "" || line.startsWith("#") || line.startsWith(";")) continue;
    const equals = line.indexOf("=");
    if (equals === -1) continue;
    const key = line.slice(0, equals).trim();
    const value = line.slice(equals + 1).trim();
    const match = /(?:^|:)(_authToken|_auth|_password|password)$/.exec(key);
    if (match && value !== "" && !isVariableReference(value)) return match[1];
  }
  return undefined;
}

/**
 * `password` when a `.netrc` gives one (the token `password` followed by a value).
 * @see https://www.gnu.org/software/inetutils/manual/html_node/The-_002enetrc-file.html
 */
export function netrcCredential(text: string): string | undefined {
  const tokens = text.split(/\s+/).filter((token) => token !== "");
  for (let index = 0; index < tokens.length - 1; index++) {
    if (tokens[index] === "password" && !isVariableReference(tokens[index + 1] ?? "")) return "password";
  }
  return undefined;
}

/**
 * A matcher for the spec's `image.allowSecretFiles`: `.dockerignore`-syntax patterns (the same
 * library and rules as the context walk: `**` for any depth, a folder matches what is inside it,
 * `!` excepts, case-sensitive).
 */
export function createSecretFileAllowList(patterns: readonly string[]): (relPath: string) => boolean {
  if (patterns.length === 0) return () => false;
  const matcher = dockerignore.default({ ignorecase: false }).add([...patterns]);
  return (relPath) => matcher.ignores(relPath);
}

/** What {@link findSecretFiles} needs besides the candidates. */
export interface FindSecretFilesOptions<C extends SecretFileCandidate = SecretFileCandidate> {
  /** Patterns of `image.allowSecretFiles`, relative to what `relPath` is relative to. @defaultValue none */
  readonly allow?: readonly string[];
  /** Reads a file's text (`.npmrc`, `.netrc` only). @defaultValue `readFile(absPath, "utf8")` */
  readonly readText?: (candidate: C) => Promise<string>;
}

/**
 * The files among `candidates` (regular files only) that look like secrets and are not allowed,
 * one entry per file, or per folder for a folder rule (`.git`), sorted by path. Reads only the
 * `.npmrc` and `.netrc` files that are not allowed.
 *
 * @throws whatever `readText` throws for an `.npmrc` or `.netrc` that cannot be read
 */
export async function findSecretFiles<C extends SecretFileCandidate>(candidates: readonly C[], options: FindSecretFilesOptions<C> = {}): Promise<SecretFile[]> {
  const allowed = createSecretFileAllowList(options.allow ?? []);
  const readText = options.readText ?? ((candidate: C) => readFile(candidate.absPath, "utf8"));
  const found = new Map<string, SecretFile>();
  const toRead: Array<{ candidate: C; rule: SecretFileRule }> = [];
  for (const candidate of candidates) {
    const match = secretFileRuleFor(candidate.relPath);
    if (!match || allowed(candidate.relPath)) continue;
    if (match.rule.credentialIn) toRead.push({ candidate, rule: match.rule });
    else if (!found.has(match.path)) found.set(match.path, { path: match.path, reason: match.rule.reason, pattern: match.rule.pattern });
  }
  for (const { candidate, rule } of toRead) {
    const key = rule.credentialIn?.(await readText(candidate));
    if (key !== undefined) found.set(candidate.relPath, { path: candidate.relPath, reason: `${rule.reason} (${key})`, pattern: rule.pattern });
  }
  return [...found.values()].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}

/** Where the files the guard found would go: a build context, or a machine image's `file` steps. */
export type SecretFilePlace =
  | { readonly kind: "context"; readonly contextDir: string }
  | { readonly kind: "machine"; readonly specDir?: string };

/**
 * The `SECRET_FILES_IN_CONTEXT` error for `files`: each path and why it matched, the lines to add
 * to `.dockerignore` (or, for a machine image, what to move), and how to allow a file in the spec.
 * Never holds any file's content.
 */
export function secretFilesError(files: readonly SecretFile[], place: SecretFilePlace): KilnError {
  const count = files.length === 1 ? "1 file that looks" : `${files.length} files that look`;
  const list = files.map((file) => `  ${file.path}  (${file.reason})`).join("\n");
  const anyDepth = [...new Set(files.map((file) => file.pattern))].map((pattern) => `  ${pattern}`).join("\n");
  const allowExample = `  image:\n    allowSecretFiles: [${JSON.stringify(files[0]?.path ?? "")}]`;
  const message =
    place.kind === "context"
      ? `The build context ${place.contextDir} holds ${count} like a secret; Kiln does not send such files to a build (where a COPY or ADD would put them in the image):\n${list}\n` +
        `Keep them out by adding these lines to ${place.contextDir}/.dockerignore:\n${files.map((file) => `  ${file.path}`).join("\n")}\n` +
        `or, to keep such files out at any depth:\n${anyDepth}\n` +
        `If the image really needs one, allow it by path in the spec (patterns relative to the build context):\n${allowExample}`
      : `The files of image.machine's provision steps include ${count} like a secret; Kiln does not copy such files into an image:\n${list}\n` +
        `Remove them from the steps' sources (or point the steps at folders without them). If the image really needs one, allow it by path in the spec (patterns relative to ${place.specDir !== undefined ? `the spec's folder ${place.specDir}` : "the folder of each step's source"}):\n${allowExample}`;
  return new KilnError("SECRET_FILES_IN_CONTEXT", message, {
    details: {
      files: files.map((file) => ({ path: file.path, reason: file.reason })),
      ...(place.kind === "context" ? { contextDir: place.contextDir } : place.specDir !== undefined ? { specDir: place.specDir } : {}),
    },
  });
}
