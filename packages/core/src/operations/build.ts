/**
 * Plan and build: fingerprint the image's inputs, find an image with that fingerprint, read state
 * and live instances, plan the deploy; build the image when none exists.
 * @module
 */
import path from "node:path";
import { KilnError } from "../errors.js";
import { fingerprintBuild, type FingerprintResult } from "../fingerprint/fingerprint.js";
import { fingerprintMachine, type MachineFingerprintResult } from "../fingerprint/machine.js";
import { planDeploy, type DeployPlan } from "../plan/index.js";
import type { ImageRecipe, ImageRef, Instance, Provider, ProviderContext } from "../provider/contract.js";
import { DEFAULT_PROVIDER_SPEC, sectionValues, type ProviderSpec } from "../provider/spec.js";
import { OBJECT_SPEC_FILE } from "../spec/load.js";
import { resolveTarget, type ResolvedTarget } from "../spec/resolve.js";
import type { TargetState } from "../state/types.js";
import { newSecretDigestKey, readSecret, readSecrets, type SecretSources } from "../secrets/read.js";
import { redactSecrets, type SecretValue } from "../secrets/value.js";
import { DEFAULT_ENVIRONMENT, formatTarget } from "../target.js";
import type { BuildResult, SpecOptions } from "../kiln.js";
import type { Emit, OperationContext } from "./context.js";

/** What {@link prepare} found and planned. */
export interface Prepared {
  readonly resolved: ResolvedTarget;
  readonly emit: Emit;
  readonly ctx: ProviderContext;
  readonly provider: Provider;
  readonly fingerprint: FingerprintResult | MachineFingerprintResult;
  readonly plan: DeployPlan;
  readonly state: TargetState;
  readonly instances: readonly Instance[];
  /** Where secrets are read from, for the build's and the launches' secrets. */
  readonly sources: SecretSources;
  /** The values of the target's secrets (`resolved.instance.secrets`), by name. */
  readonly secretValues: ReadonlyMap<string, SecretValue>;
  /** The values of the build secrets, by id, read when the plan builds (empty otherwise). */
  readonly buildSecrets: ReadonlyMap<string, SecretValue>;
}

/**
 * Fingerprints, looks the image up, reads state and live instances, and plans.
 * @throws KilnError SPEC_INVALID, ENVIRONMENT_NOT_FOUND, PROVIDER_NOT_FOUND, PROVIDER_UNAVAILABLE, CAPABILITY_MISSING, BUILD_CONTEXT_INVALID,
 *   SECRET_FILES_IN_CONTEXT (files that look like secrets would be built; before any image is built)
 */
export async function prepare(context: OperationContext, spec: SpecOptions): Promise<Prepared> {
  const { validated, baseDir, file } = await context.loaded(spec);
  let resolved = resolveTarget(validated, spec.environment ?? DEFAULT_ENVIRONMENT, baseDir);
  const emit = context.emitterFor(resolved.target, spec.onEvent);
  const ctx = context.providerContext(spec.signal, emit);
  const provider = await context.provider(resolved.provider);
  const providerSpec = provider.spec ?? DEFAULT_PROVIDER_SPEC;
  assertCapabilities(provider, providerSpec, resolved);
  await provider.ping(ctx);
  // A secret read from a file beside the spec must never be sent to a build either.
  const exclude = [...specExclusions(file, baseDir, context.dataDir), ...secretFiles(resolved)];
  const signal = spec.signal ? { signal: spec.signal } : {};
  const fingerprint =
    providerSpec.imageFormat === "machine"
      ? await fingerprintMachine({
          steps: resolved.machine!.provision,
          provider: resolved.provider,
          ...(resolved.machine!.base !== undefined ? { base: resolved.machine!.base } : {}),
          ...(providerSpec.fingerprint ? { contribution: providerSpec.fingerprint(resolved, sectionValues(resolved)) } : {}),
          exclude,
          specDir: baseDir,
          ...(resolved.allowSecretFiles ? { allowSecretFiles: resolved.allowSecretFiles } : {}),
          ...signal,
        })
      : await fingerprintBuild({
          contextDir: resolved.build.contextDir,
          dockerfilePath: resolved.build.dockerfilePath,
          args: resolved.build.args,
          ...(resolved.build.stage ? { stage: resolved.build.stage } : {}),
          cacheFile: path.join(context.dataDir, "cache", `fingerprint-${formatTarget(resolved.target)}.stat-cache`),
          // Kiln's own files never enter an image: its state changes on every deploy, and a spec edit
          // (a new env value, another count) must not force a rebuild.
          exclude,
          logger: context.logger,
          ...(resolved.allowSecretFiles ? { allowSecretFiles: resolved.allowSecretFiles } : {}),
          ...signal,
        });
  emit({
    type: "image.fingerprinted",
    fingerprint: fingerprint.fingerprint,
    fileCount: fingerprint.fileCount,
    totalBytes: fingerprint.totalBytes,
    bytesHashed: fingerprint.bytesHashed,
    durationMs: fingerprint.durationMs,
  });
  const [existingImage, state, instances] = await Promise.all([
    provider.images.find({ service: resolved.target.service, fingerprint: fingerprint.fingerprint }, ctx),
    context.store.read(resolved.target),
    provider.instances.list({ target: resolved.target }, ctx),
  ]);
  const sources = context.secretSources(ctx);
  let secretValues: ReadonlyMap<string, SecretValue> = new Map();
  if (resolved.secrets && resolved.secrets.length > 0) {
    // The digest key is the target's own, made once; the digests (never the values) go into the
    // release, so a changed value makes a new release.
    const key = state.secretDigestKey ?? (await context.store.update(resolved.target, (current) => (current.secretDigestKey ??= newSecretDigestKey())));
    const read = await readSecrets(resolved.secrets, key, sources);
    resolved = { ...resolved, instance: { ...resolved.instance, secrets: read.mounts } };
    secretValues = read.values;
  }
  const plan = planDeploy({
    resolved,
    fingerprint: fingerprint.fingerprint,
    existingImage,
    state,
    instances,
    ...(provider.limits ? { limits: provider.limits } : {}),
    ...(provider.health?.description ? { providerHealth: provider.health.description } : {}),
    ...(providerSpec.planLines ? { providerLines: providerSpec.planLines(resolved, sectionValues(resolved)) } : {}),
  });
  // Read once, when the plan builds: a plan finds a missing build secret as the deploy would.
  const buildSecrets = plan.image.action === "build" ? await readBuildSecrets(resolved, sources) : new Map<string, SecretValue>();
  return { resolved, emit, ctx, provider, fingerprint, plan, state, instances, sources, secretValues, buildSecrets };
}

/**
 * Builds the image of `fingerprint`'s inputs with `provider` (for a rollout: journaled, and
 * labelled with the rollout and release), handing it `secrets` (build secrets by id).
 * @throws KilnError BUILD_FAILED, ABORTED
 */
export async function buildImage(
  resolved: ResolvedTarget,
  fingerprint: FingerprintResult | MachineFingerprintResult,
  provider: Provider,
  ctx: ProviderContext,
  emit: Emit,
  secrets: ReadonlyMap<string, SecretValue>,
  rollout?: { readonly id: string; readonly release: number },
): Promise<ImageRef> {
  emit({ type: "image.build.started", fingerprint: fingerprint.fingerprint });
  const startedAt = Date.now();
  const labels = rollout ? { rolloutId: rollout.id, release: rollout.release } : {};
  const recipe: ImageRecipe =
    "steps" in fingerprint
      ? {
          target: resolved.target,
          fingerprint: fingerprint.fingerprint,
          machine: { kind: "machine", steps: fingerprint.steps, base: resolved.machine!.base, builder: resolved.machine!.builder, timeoutMs: resolved.machine!.timeoutMs },
          ...labels,
        }
      : {
          target: resolved.target,
          fingerprint: fingerprint.fingerprint,
          dockerfile: {
            kind: "dockerfile",
            contextDir: resolved.build.contextDir,
            dockerfilePath: resolved.build.dockerfilePath,
            files: fingerprint.files,
            args: resolved.build.args,
            ...(resolved.build.stage ? { stage: resolved.build.stage } : {}),
            ...(secrets.size > 0 ? { secrets } : {}),
          },
          ...labels,
        };
  // A RUN step that prints a build secret must not carry it into Kiln's events and logs.
  const image = await provider.images.build(recipe, secrets.size > 0 ? redactingContext(ctx, [...secrets.values()]) : ctx);
  emit({ type: "image.built", fingerprint: fingerprint.fingerprint, imageId: image.id, durationMs: Date.now() - startedAt });
  return image;
}

/** `Kiln.plan`: plans a deploy without changing anything. */
export async function plan(context: OperationContext, spec: SpecOptions): Promise<DeployPlan> {
  return (await prepare(context, spec)).plan;
}

/** `Kiln.build`: builds the target's image unless one with the same fingerprint exists. */
export async function build(context: OperationContext, spec: SpecOptions): Promise<BuildResult> {
  const { resolved, fingerprint, plan, provider, ctx, emit, buildSecrets } = await prepare(context, spec);
  if (plan.image.action === "reuse") {
    emit({ type: "image.reused", fingerprint: fingerprint.fingerprint, imageId: plan.image.image.id });
    return { image: plan.image.image, fingerprint, built: false };
  }
  return { image: await buildImage(resolved, fingerprint, provider, ctx, emit, buildSecrets), fingerprint, built: true };
}

/** @throws KilnError CAPABILITY_MISSING when the spec asks for what the provider cannot do */
function assertCapabilities(provider: Provider, providerSpec: ProviderSpec, resolved: ResolvedTarget): void {
  if (resolved.traffic.proxy && !provider.traffic) {
    throw new KilnError(
      "CAPABILITY_MISSING",
      `The ${provider.name} provider cannot run a front proxy (it has no traffic capability), so traffic.proxy cannot be used with it; remove traffic.proxy to reach instances at their own addresses.`,
    );
  }
  if (resolved.traffic.loadBalancer !== undefined && !provider.traffic) {
    throw new KilnError(
      "CAPABILITY_MISSING",
      `The ${provider.name} provider cannot register instances with a load balancer (it has no traffic capability); remove traffic.loadBalancer.`,
    );
  }
  if (providerSpec.imageFormat === "machine" && !resolved.machine) {
    throw new KilnError(
      "CAPABILITY_MISSING",
      `The ${provider.name} provider bakes its images from a machine recipe and the spec has no image.machine; add image.machine with its provision steps (and the base settings the provider's docs name), see docs/reference/kiln-yaml.md.`,
    );
  }
}

/**
 * Kiln's own files, never part of a fingerprint or a build: the data folder, and the spec file; for
 * a spec given as an object, the `kiln.yaml`/`kiln.yml` in its base folder (the same service
 * deployed from its file and from an object, as a server does, must fingerprint the same).
 */
function specExclusions(file: string, baseDir: string, dataDir: string): string[] {
  return file === OBJECT_SPEC_FILE ? [dataDir, path.join(baseDir, "kiln.yaml"), path.join(baseDir, "kiln.yml")] : [dataDir, file];
}

/** The files secrets are read from (`from.file`, runtime and build secrets): never part of an image. */
function secretFiles(resolved: ResolvedTarget): string[] {
  const sources = [...(resolved.secrets ?? []).map((secret) => secret.source), ...Object.values(resolved.build.secrets ?? {})];
  return sources.flatMap((source) => (source.kind === "file" ? [source.path] : []));
}

/** `ctx` whose build output lines (`image.build.log`, `image.build.step`) have each of `secrets` replaced by `[secret]`. */
function redactingContext(ctx: ProviderContext, secrets: readonly SecretValue[]): ProviderContext {
  const redact = (text: string) => redactSecrets(text, secrets);
  return {
    ...ctx,
    emit: (progress) =>
      ctx.emit(progress.type === "image.build.log" ? { ...progress, message: redact(progress.message) } : { ...progress, description: redact(progress.description) }),
  };
}

/**
 * The values of the target's build secrets (`image.dockerfile.secrets`), by id, read in parallel.
 * @throws KilnError SECRET_UNAVAILABLE and what `readSecret` throws
 */
async function readBuildSecrets(resolved: ResolvedTarget, sources: SecretSources): Promise<Map<string, SecretValue>> {
  const entries = Object.entries(resolved.build.secrets ?? {});
  return new Map(await Promise.all(entries.map(async ([id, source]) => [id, await readSecret(`image.dockerfile.secrets.${id}`, source, sources)] as const)));
}
