import type { ProviderSpec } from "../provider/spec.js";
import type { SpecIssue } from "../spec/issues.js";
import type { Spec } from "../spec/schema.js";
import { looksLikeSecretName } from "./names.js";

type Path = (string | number)[];

/** The keys of a secret source that are not core's: a provider's secret store, by its name. */
function storeKeys(from: object): string[] {
  return Object.entries(from)
    .filter(([key, value]) => key !== "env" && key !== "file" && value !== undefined)
    .map(([key]) => key);
}

/** A source's problems: exactly one of `env`, `file` and a provider's store. */
function checkSource(from: object, path: Path): SpecIssue[] {
  const given = [...(["env", "file"] as const).filter((key) => (from as Record<string, unknown>)[key] !== undefined), ...storeKeys(from)];
  if (given.length === 1) return [];
  return [
    {
      path,
      kind: "invalid-value",
      message:
        given.length === 0
          ? "say where the secret's value comes from: `env` (a variable of the process that runs Kiln), `file` (a file beside the spec) or a provider's secret store such as `aws`"
          : `give one source, not ${given.join(" and ")}`,
    },
  ];
}

/**
 * The rules of the spec's secrets, for one target's merged settings: one source and one delivery
 * per secret, deliveries the provider can make (`ProviderSpec.secretDelivery`), no variable or
 * file given twice, no secret under an `instances.env` name, and build arguments whose name looks
 * like a secret refused (they show in the image's history). Pure.
 */
export function checkSecretRules(spec: Spec, prefix: Path, provider: ProviderSpec | undefined): SpecIssue[] {
  const issues: SpecIssue[] = [];
  const envNames = new Map<string, string>();
  const files = new Map<string, string>();
  for (const [name, secret] of Object.entries(spec.secrets)) {
    const path = [...prefix, "secrets", name];
    issues.push(...checkSource(secret.from, [...path, "from"]));
    const to = secret.to ?? { env: name };
    const ways = (["env", "file"] as const).filter((key) => to[key] !== undefined);
    if (ways.length !== 1) {
      issues.push({ path: [...path, "to"], kind: "invalid-value", message: ways.length === 0 ? "say how instances receive the secret: `env: NAME` or `file: /absolute/path`" : "give one of `env` and `file`, not both" });
      continue;
    }
    const way = ways[0]!;
    const supported = provider?.secretDelivery;
    if (provider && !(supported ?? []).includes(way)) {
      issues.push({
        path: [...path, "to", way],
        kind: "invalid-value",
        message:
          (supported ?? []).length === 0
            ? `the ${spec.provider} provider cannot hand secrets to its instances: they read their own when they start, as the ${spec.provider} provider's docs say (docs/secrets.md). Remove secrets.${name} here; a secret at the top level reaches every environment, so declare it under environments.<name>.secrets of those whose provider can hand it over`
            : `the ${spec.provider} provider hands secrets over as ${supported!.join(" or ")}, not as a ${way}`,
      });
    }
    const value = to[way]!;
    const seen = way === "env" ? envNames : files;
    const other = seen.get(value);
    if (other !== undefined) issues.push({ path: [...path, "to", way], kind: "invalid-value", message: `secrets ${other} and ${name} both go to ${way === "env" ? "the variable" : "the file"} ${value}; give each its own` });
    seen.set(value, name);
    if (way === "env" && value in spec.instances.env) {
      issues.push({ path: [...path, "to", "env"], kind: "invalid-value", message: `instances.env also sets ${value}; remove it there (a secret belongs in secrets only)` });
    }
  }
  for (const [id, secret] of Object.entries(spec.image.dockerfile.secrets)) issues.push(...checkSource(secret.from, [...prefix, "image", "dockerfile", "secrets", id, "from"]));
  for (const name of Object.keys(spec.image.dockerfile.args)) {
    if (!looksLikeSecretName(name)) continue;
    issues.push({
      path: [...prefix, "image", "dockerfile", "args", name],
      kind: "invalid-value",
      message: `"${name}" looks like a secret, and a build argument's value shows in the image's history (docker history --no-trunc); declare it under image.dockerfile.secrets (image.dockerfile.secrets.${name}.from.env: ${name}) and read it in the step that needs it: RUN --mount=type=secret,id=${name} ${name}="$(cat /run/secrets/${name})" ...`,
    });
  }
  return issues;
}

/**
 * Warnings (not errors) about secrets for one target's merged settings: an `instances.env` key
 * that looks like a secret (`DB_PASSWORD`), since `env` is recorded in state and shown by
 * `kiln status` and `kiln history`. Pure.
 */
export function secretWarnings(spec: Spec, prefix: Path): SpecIssue[] {
  return Object.keys(spec.instances.env)
    .filter((name) => looksLikeSecretName(name))
    .map((name) => ({
      path: [...prefix, "instances", "env", name],
      kind: "secret-in-env",
      message: `"${name}" looks like a secret, and env values are recorded in state and shown by kiln status and kiln history; move it to secrets (secrets.${name}.from.env or .file), see docs/secrets.md`,
    }));
}
