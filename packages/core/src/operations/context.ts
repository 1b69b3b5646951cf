/**
 * What every operation shares: the configured providers (created on first use), the store, the
 * data folder, event delivery, and how an operation's options name its spec and target.
 * @module
 */
import os from "node:os";
import path from "node:path";
import { KilnError } from "../errors.js";
import type { EventHandler, KilnEvent, KilnEventInput } from "../events.js";
import { silentLogger, type Logger } from "../logger.js";
import { currentRelease } from "../plan/index.js";
import type { SecretSources } from "../secrets/read.js";
import type { Provider, ProviderContext } from "../provider/contract.js";
import { DEFAULT_PROVIDER_SPEC, type ProviderSpec } from "../provider/spec.js";
import { checkSpecWith, specFromObject, type LoadedSpec } from "../spec/load.js";
import { resolveTarget } from "../spec/resolve.js";
import type { SpecInput } from "../spec/schema.js";
import { providersOf } from "../spec/validate.js";
import { createFileStateStore } from "../state/file-store.js";
import type { Holder, StateStore } from "../state/types.js";
import { DEFAULT_ENVIRONMENT, formatTarget, parseTarget, type Target } from "../target.js";
import type { KilnOptions, SpecOptions, TargetOptions } from "../kiln.js";

/** Sends one event to every handler of an operation (stamping its time and target). */
export type Emit = (event: KilnEventInput) => void;

/** The state every operation of one {@link createOperationContext} call shares. */
export interface OperationContext {
  readonly options: KilnOptions;
  readonly logger: Logger;
  /** Kiln's working folder, absolute. */
  readonly dataDir: string;
  readonly store: StateStore;
  /**
   * The named provider, created on first use and shared afterwards.
   * @throws KilnError PROVIDER_NOT_FOUND when this Kiln has no provider of that name
   */
  provider(name: string): Promise<Provider>;
  /** Every provider created so far (for closing them). */
  createdProviders(): Promise<Provider>[];
  /** An event sender for `target` that calls {@link KilnOptions.onEvent} and `onEvent`; a throwing handler is logged and skipped. */
  emitterFor(target: Target, onEvent: EventHandler | undefined): Emit;
  /** The context handed to provider calls. */
  providerContext(signal: AbortSignal | undefined, emit: Emit): ProviderContext;
  /** Where secrets are read from: `KilnOptions.env` (default: the process's environment), and providers' secret stores. */
  secretSources(ctx: ProviderContext): SecretSources;
  /**
   * The spec, validated with the sections and rules of every configured provider it names (a
   * provider it names that this Kiln does not have is checked when a target uses it, which fails
   * with PROVIDER_NOT_FOUND).
   * @throws KilnError SPEC_INVALID
   */
  loaded(spec: SpecOptions): Promise<LoadedSpec>;
  /** The target an operation names, and the provider that serves it (from the spec, else from state). */
  targetOf(options: TargetOptions): Promise<{ target: Target; providerName: string | undefined }>;
  /** Who holds a lock taken now: this user, host, process and command. */
  holder(): Holder;
}

/** Creates the shared state of a Kiln's operations from its options. */
export function createOperationContext(options: KilnOptions): OperationContext {
  const logger = options.logger ?? silentLogger;
  const dataDir = path.resolve(options.dataDir ?? path.join(process.cwd(), ".kiln"));
  const store = options.store ?? createFileStateStore({ directory: path.join(dataDir, "state") });
  const providers = new Map<string, Promise<Provider>>();

  function provider(name: string): Promise<Provider> {
    let created = providers.get(name);
    if (!created) {
      const source = options.providers[name];
      if (!source) {
        const known = Object.keys(options.providers);
        throw new KilnError(
          "PROVIDER_NOT_FOUND",
          `No provider named "${name}" is configured (${known.length > 0 ? `known: ${known.join(", ")}` : "none are"}); install @kilnjs/provider-${name} and pass it to createKiln, or change the spec's provider.`,
        );
      }
      created = Promise.resolve(typeof source === "function" ? source() : source);
      providers.set(name, created);
    }
    return created;
  }

  function emitterFor(target: Target, onEvent: EventHandler | undefined): Emit {
    const targetText = formatTarget(target);
    return (input: KilnEventInput) => {
      const event = { ...input, time: new Date().toISOString(), target: targetText } as KilnEvent;
      for (const handler of [options.onEvent, onEvent]) {
        try {
          handler?.(event);
        } catch (error) {
          logger.warn("an event handler threw; the event was dropped for it", { type: event.type, error: String(error) });
        }
      }
    };
  }

  async function loaded(spec: SpecOptions): Promise<LoadedSpec> {
    const given = givenSpec(spec.spec, spec.baseDir);
    const specs: Record<string, ProviderSpec> = {};
    for (const name of providersOf(given.validated)) {
      if (options.providers[name] === undefined) continue;
      specs[name] = (await provider(name)).spec ?? DEFAULT_PROVIDER_SPEC;
    }
    return checkSpecWith(given, specs);
  }

  async function targetOf(opts: TargetOptions): Promise<{ target: Target; providerName: string | undefined }> {
    if ("target" in opts) {
      const target = typeof opts.target === "string" ? parseTarget(opts.target) : opts.target;
      const state = await store.read(target);
      return { target, providerName: currentRelease(state)?.provider ?? state.releases.at(-1)?.provider };
    }
    const { validated, baseDir } = await loaded(opts);
    const resolved = resolveTarget(validated, opts.environment ?? DEFAULT_ENVIRONMENT, baseDir);
    return { target: resolved.target, providerName: resolved.provider };
  }

  return {
    options,
    logger,
    dataDir,
    store,
    provider,
    createdProviders: () => [...providers.values()],
    emitterFor,
    providerContext: (signal, emit) => ({ signal: signal ?? new AbortController().signal, logger, emit }),
    secretSources: (ctx) => ({ env: options.env ?? process.env, ...(options.secretEnvPrefix !== undefined ? { envPrefix: options.secretEnvPrefix } : {}), provider, ctx }),
    loaded,
    targetOf,
    holder: () => ({ user: safeUser(), host: os.hostname(), pid: process.pid, command: options.command ?? "library", since: new Date().toISOString() }),
  };
}

/** A spec option as a loaded spec: as given, or a spec object loaded from `baseDir` (default: the working folder). */
export function givenSpec(spec: LoadedSpec | SpecInput, baseDir: string | undefined): LoadedSpec {
  return isLoadedSpec(spec) ? spec : specFromObject(spec, path.resolve(baseDir ?? process.cwd()));
}

function isLoadedSpec(spec: LoadedSpec | SpecInput): spec is LoadedSpec {
  return typeof spec === "object" && spec !== null && "validated" in spec && "baseDir" in spec;
}

function safeUser(): string {
  try {
    return os.userInfo().username;
  } catch {
    return "unknown";
  }
}
