import { existsSync } from "node:fs";
import path from "node:path";
import { isKilnError } from "../errors.js";
import type { ProviderSpec } from "../provider/spec.js";
import { DEFAULT_ENVIRONMENT } from "../target.js";
import { specInvalidError, type SpecIssue } from "./issues.js";
import { OBJECT_SPEC_FILE, checkSpecWith, type LoadedSpec } from "./load.js";
import { resolveTarget, type ResolvedTarget } from "./resolve.js";
import { providersOf } from "./validate.js";

/** Options of {@link checkSpec}. */
export interface CheckSpecOptions {
  /**
   * The spec of the provider of this name. A `PROVIDER_NOT_FOUND` error (a package that is not
   * installed) becomes an issue at each `provider:` that names it, with the error's message.
   */
  providerSpec(name: string): Promise<ProviderSpec>;
  /** Also check that every file the spec references (build context, Dockerfile, provision files) exists. @defaultValue true */
  readonly references?: boolean;
  /**
   * Also require every file the spec references to lie in this folder: a server's spec root, so a
   * caller can neither build from nor probe for files elsewhere on its host.
   */
  readonly root?: string;
}

/**
 * Checks a spec as completely as can be done without touching a backend, and reports every
 * problem at once: each provider it names must load; each provider's sections and rules
 * (`ProviderSpec`); every file it references must exist; and, with `root`, every such file must
 * lie within it. The CLI's `kiln validate` and the server's request check both call it.
 *
 * @returns the spec checked with every provider's sections (so later steps need not check again)
 * @throws KilnError SPEC_INVALID listing every issue, positioned in the file where there is one
 */
export async function checkSpec(loaded: LoadedSpec, options: CheckSpecOptions): Promise<LoadedSpec> {
  const issues: SpecIssue[] = [];
  const specs: Record<string, ProviderSpec> = {};
  for (const name of providersOf(loaded.validated)) {
    try {
      specs[name] = await options.providerSpec(name);
    } catch (error) {
      if (!isKilnError(error, "PROVIDER_NOT_FOUND")) throw error;
      for (const at of providerPaths(loaded, name)) issues.push(loaded.locate({ path: at, kind: "reference", message: error.message }));
    }
  }
  let checked = loaded;
  try {
    checked = checkSpecWith(loaded, specs);
  } catch (error) {
    if (!isKilnError(error, "SPEC_INVALID")) throw error;
    issues.push(...((error.details.issues as SpecIssue[] | undefined) ?? []));
  }
  if (issues.length === 0) {
    // A missing file that an environment inherits is one problem, reported where it is first
    // declared (the top level comes first): the message names the file, so the same message is the
    // same problem.
    const missing = new Set<string>();
    for (const target of resolvedTargets(checked)) {
      const imageFormat = specs[target.resolved.provider]?.imageFormat ?? "dockerfile";
      if (options.references ?? true) {
        for (const issue of referenceIssues(target.resolved, target.prefix, imageFormat)) {
          if (!missing.has(issue.message)) issues.push(issue);
          missing.add(issue.message);
        }
      }
      if (options.root !== undefined) issues.push(...confinementIssues(target.resolved, target.prefix, options.root));
    }
  }
  const unique = [...new Map(issues.map((issue) => [`${issue.path.join(".")}\u0000${issue.message}`, issue])).values()].map((issue) =>
    issue.file === undefined && loaded.file !== OBJECT_SPEC_FILE ? loaded.locate(issue) : issue,
  );
  if (unique.length > 0) throw specInvalidError(unique, loaded.file === OBJECT_SPEC_FILE ? "The spec" : loaded.file);
  return checked;
}

/** Every target of the spec (the top level and each environment), resolved, with its key path prefix. */
function resolvedTargets(loaded: LoadedSpec): Array<{ resolved: ResolvedTarget; prefix: string[] }> {
  return [DEFAULT_ENVIRONMENT, ...Object.keys(loaded.validated.environments)].map((environment) => ({
    resolved: resolveTarget(loaded.validated, environment, loaded.baseDir),
    prefix: environment === DEFAULT_ENVIRONMENT ? [] : ["environments", environment],
  }));
}

/** The key paths of the `provider:` fields that name `name` (the top level's, when it is the default). */
function providerPaths(loaded: LoadedSpec, name: string): string[][] {
  const input = loaded.validated.input as { environments?: Record<string, { provider?: unknown } | undefined> } | undefined;
  const paths: string[][] = loaded.validated.spec.provider === name ? [["provider"]] : [];
  for (const [environment, overrides] of Object.entries(input?.environments ?? {})) {
    if (overrides?.provider === name) paths.push(["environments", environment, "provider"]);
  }
  return paths.length > 0 ? paths : [["provider"]];
}

/**
 * The files a target's image is made from that do not exist: for a Dockerfile provider the build
 * context and the Dockerfile; for a machine-image provider each `file` and `shell` step's source.
 */
export function referenceIssues(target: ResolvedTarget, prefix: readonly string[], imageFormat: ProviderSpec["imageFormat"]): SpecIssue[] {
  const issues: SpecIssue[] = [];
  if (imageFormat === "machine") {
    target.machine?.provision.forEach((step, index) => {
      const source = step.kind === "file" ? step.from : step.kind === "shell" ? step.script : undefined;
      if (source !== undefined && !existsSync(source)) issues.push({ path: [...prefix, "image", "machine", "provision", index, step.kind], kind: "reference", message: `${source} does not exist` });
    });
  } else if (!existsSync(target.build.contextDir)) {
    issues.push({ path: [...prefix, "image", "dockerfile", "context"], kind: "reference", message: `the build context ${target.build.contextDir} does not exist` });
  } else if (!existsSync(target.build.dockerfilePath)) {
    issues.push({ path: [...prefix, "image", "dockerfile", "file"], kind: "reference", message: `the Dockerfile ${target.build.dockerfilePath} does not exist` });
  }
  return issues;
}

/** The files a target references that lie outside `root`. */
export function confinementIssues(target: ResolvedTarget, prefix: readonly string[], root: string): SpecIssue[] {
  const base = path.resolve(root);
  const inside = (file: string) => {
    const resolved = path.resolve(file);
    return resolved === base || resolved.startsWith(`${base}${path.sep}`);
  };
  const message = "a posted spec's paths must stay within the server's spec root (--spec-root); register the service instead (--service)";
  const issues: SpecIssue[] = [];
  const check = (file: string, at: (string | number)[]) => {
    if (!inside(file)) issues.push({ path: [...prefix, ...at], kind: "invalid-value", message });
  };
  check(target.build.contextDir, ["image", "dockerfile", "context"]);
  check(target.build.dockerfilePath, ["image", "dockerfile", "file"]);
  target.machine?.provision.forEach((step, index) => {
    if (step.kind === "file") check(step.from, ["image", "machine", "provision", index, "file", "from"]);
    if (step.kind === "shell") check(step.script, ["image", "machine", "provision", index, "shell"]);
  });
  // A secret read from a file is the server's file: a caller may only name one the spec root holds.
  for (const secret of target.secrets ?? []) if (secret.source.kind === "file") check(secret.source.path, ["secrets", secret.name, "from", "file"]);
  for (const [id, source] of Object.entries(target.build.secrets ?? {})) if (source.kind === "file") check(source.path, ["image", "dockerfile", "secrets", id, "from", "file"]);
  return issues;
}
