import { KilnError, toKilnError } from "../errors.js";
import type { Logger } from "../logger.js";
import { silentLogger } from "../logger.js";
import type { Provider, ProviderContext, TrafficCapability } from "../provider/contract.js";
import type { JournalEntry, JournalOp, RecordedError, RolloutRecord, StateStore } from "../state/types.js";
import type { Target } from "../target.js";

/*
 * The rollout journal: a write-ahead record of every provider call that creates or destroys
 * something. Each call is written to the store as an `intent` before it is made and as an
 * `outcome` after it (ok, with the ids it created or removed; or failed, with the error code), as
 * entries of the rollout's record (`RolloutRecord.journal`), each appended on its own
 * (`StateStore.appendJournal`) and folded into the record by the store's next update. A process killed at any point leaves
 * a journal that says which calls may have happened; with the rollout id label on every instance,
 * the next run finds and recovers everything the dead one created.
 *
 * Step names. Each call gets a step name `<verb>:<n>`, n counting that verb's calls within the
 * rollout from 1, in the order the engine makes them:
 *
 *   build:<n>       images.build        (a deploy builds at most once: build:1)
 *   launch:<n>      instances.launch    (batch launches, then any restore launch of an undo)
 *   terminate:<n>   instances.terminate (each retirement call, in order)
 *   register:<n>, deregister:<n>   traffic.register / traffic.deregister
 *   retire-proxy:<n> traffic.retireProxy (a release without a front proxy serves: the old proxy goes)
 *   remove:<n>      images.remove       (garbage collection: one per image, the image id in both entries)
 *
 * Names do not contain the rollout id, so the same plan gives the same names in every run: a test
 * reads the steps of one normal run (`journalCrashPoints(rollout)`) and then kills a new run at
 * each of them. The launch's idempotency key (`<rolloutId>:launch:<batch>`) is kept in the entry.
 *
 * Test-only crash hook. A test harness passes `crashAt: "<phase>:<step>"` ({@link JournalHooks},
 * through `createKiln`'s `journalHooks`), e.g. `intent:launch:2` or `outcome:terminate:1`, and the
 * process kills itself with SIGKILL right after that journal entry is written (so the entry is on
 * disk, and for an intent the provider call was never made; for an outcome it was). A value that
 * is not of this form makes every journaled call fail with INVALID_ARGUMENT, so a typo in a test
 * cannot pass silently. Shipped code never sets it: nothing reads it from the environment.
 */

/**
 * Test-only hooks of the journal, which a test harness passes to `createKiln` (`journalHooks`) to
 * kill a run at a chosen journal step and check that the next run recovers.
 */
export interface JournalHooks {
  /**
   * The `<phase>:<verb>:<n>` to die at (`intent:launch:2`; see {@link journalCrashPoints}), right
   * after that entry is written. An invalid value makes every journaled call throw
   * INVALID_ARGUMENT. @defaultValue none: never die
   */
  readonly crashAt?: string | undefined;
  /**
   * How to die at the crash point. @defaultValue `process.kill(process.pid, "SIGKILL")`
   * (the journaled call then never returns, even if the signal were delayed).
   */
  readonly kill?: () => void;
}

/** Options of {@link journaled}. */
export interface JournalOptions extends JournalHooks {
  readonly store: StateStore;
  readonly target: Target;
  /** The rollout whose record receives the entries; it must exist in the store. */
  readonly rolloutId: string;
  /** The fencing token of the lease the rollout runs under; every entry is written with it. */
  readonly token: number;
  readonly logger?: Logger;
}

type Verb = "build" | "launch" | "terminate" | "register" | "deregister" | "retire-proxy" | "remove";

const OPS: Record<Verb, JournalOp> = {
  build: "images.build",
  launch: "instances.launch",
  terminate: "instances.terminate",
  register: "traffic.register",
  deregister: "traffic.deregister",
  "retire-proxy": "traffic.retireProxy",
  remove: "images.remove",
};

/**
 * Parses a crash point, `<phase>:<verb>:<n>` (`intent:launch:2`).
 * @throws KilnError INVALID_ARGUMENT when it is not of that form
 */
export function parseCrashPoint(text: string): { phase: "intent" | "outcome"; step: string } {
  const match = /^(intent|outcome):((?:build|launch|terminate|register|deregister|retire-proxy|remove):[1-9]\d*)$/.exec(text.trim());
  if (!match) {
    throw new KilnError(
      "INVALID_ARGUMENT",
      `The crash point "${text}" is not a journal step: write <phase>:<verb>:<n>, phase intent or outcome, verb build, launch, terminate, register, deregister, retire-proxy or remove, e.g. intent:launch:2.`,
    );
  }
  return { phase: match[1] as "intent" | "outcome", step: match[2]! };
}

/**
 * Every journal step a rollout wrote, as crash points (`intent:build:1`, `outcome:build:1`,
 * `intent:launch:1`, …), in order: the values {@link JournalHooks.crashAt} accepts for a run of the same plan.
 */
export function journalCrashPoints(rollout: Pick<RolloutRecord, "journal">): string[] {
  return (rollout.journal ?? []).filter((entry) => entry.op !== "rollout.recover").map((entry) => `${entry.phase}:${entry.step}`);
}

/**
 * Wraps a provider so that every `images.build`, `images.remove`, `instances.launch`, `instances.terminate` and
 * traffic `register`/`deregister` is journaled on the rollout's record: an intent before the call,
 * an outcome after it. So a process that lost its lease can change neither instances nor routing. Other members
 * (find, list, health, capabilities core does not journal) pass through unchanged. The rollout
 * engine gets the wrapped provider and never knows.
 *
 * An intent that cannot be written (the lease was lost: `LOCK_LOST`) stops the call before it is
 * made. An outcome that cannot be written after a successful call throws that error (the intent
 * and the rollout id label still let the next run find what was created); after a failed call the
 * call's own error is thrown and the journal failure is logged.
 */
export function journaled(provider: Provider, options: JournalOptions): Provider {
  const logger = options.logger ?? silentLogger;
  const crashText = options.crashAt;
  let crash: { phase: "intent" | "outcome"; step: string } | undefined;
  let crashError: KilnError | undefined;
  if (crashText !== undefined && crashText !== "") {
    try {
      crash = parseCrashPoint(crashText);
    } catch (error) {
      crashError = error as KilnError;
    }
  }
  const kill = options.kill ?? (() => process.kill(process.pid, "SIGKILL"));
  const counters: Record<Verb, number> = { build: 0, launch: 0, terminate: 0, register: 0, deregister: 0, "retire-proxy": 0, remove: 0 };

  async function write(entry: Omit<JournalEntry, "seq" | "time">): Promise<void> {
    // Appended: the cost of an entry does not grow with the fleet, the journal or the history.
    await options.store.appendJournal(options.target, options.rolloutId, { ...entry, time: new Date().toISOString() }, { token: options.token });
    if (crash && crash.phase === entry.phase && crash.step === entry.step) {
      logger.warn("crashAt: dying after the journal entry", { phase: entry.phase, step: entry.step });
      kill();
      await new Promise<never>(() => {});
    }
  }

  async function step<T>(verb: Verb, fields: Pick<JournalEntry, "instanceIds" | "idempotencyKey" | "release" | "count" | "imageId">, call: () => Promise<T>, describe: (value: T) => Pick<JournalEntry, "instanceIds" | "imageId"> | undefined): Promise<T> {
    if (crashError) throw crashError;
    counters[verb] += 1;
    const name = `${verb}:${counters[verb]}`;
    const base = { step: name, op: OPS[verb], ...fields };
    await write({ ...base, phase: "intent" });
    let value: T;
    try {
      value = await call();
    } catch (error) {
      const failed = toKilnError(error, "INTERNAL", `${OPS[verb]} failed`);
      const recorded: RecordedError = { code: failed.code, message: failed.message };
      try {
        await write({ ...base, phase: "outcome", result: "failed", error: recorded });
      } catch (journalError) {
        // A lost lease is the news: this process may do nothing more for the rollout.
        if (journalError instanceof KilnError && journalError.code === "LOCK_LOST") throw journalError;
        logger.error("could not journal a failed provider call", { rolloutId: options.rolloutId, step: name, error: String(journalError) });
      }
      throw error;
    }
    await write({ ...base, phase: "outcome", result: "ok", ...describe(value) });
    return value;
  }

  return {
    ...provider,
    images: {
      ...provider.images,
      build: (recipe, ctx) =>
        step("build", { instanceIds: [] }, () => provider.images.build(recipe, ctx), (image) => ({ imageId: image.id, instanceIds: [] })),
      // Bound so providers whose methods use `this` keep working.
      find: provider.images.find.bind(provider.images),
      list: provider.images.list.bind(provider.images),
      remove: (image, ctx) => step("remove", { instanceIds: [], imageId: image.id }, () => provider.images.remove(image, ctx), () => ({ imageId: image.id, instanceIds: [] })),
    },
    instances: {
      ...provider.instances,
      launch: (request, ctx) =>
        step(
          "launch",
          { idempotencyKey: request.idempotencyKey, release: request.release, count: request.count, instanceIds: [] },
          () => provider.instances.launch(request, ctx),
          (started) => ({ instanceIds: started.map((instance) => instance.id) }),
        ),
      list: provider.instances.list.bind(provider.instances),
      terminate: (instances, terminateOptions, ctx) =>
        step(
          "terminate",
          { instanceIds: instances.map((instance) => instance.id) },
          () => provider.instances.terminate(instances, terminateOptions, ctx),
          () => undefined,
        ),
    },
    ...(provider.traffic ? { traffic: journaledTraffic(provider.traffic) } : {}),
    ping: provider.ping.bind(provider),
    ...(provider.close ? { close: provider.close.bind(provider) } : {}),
  };

  function journaledTraffic(traffic: TrafficCapability): TrafficCapability {
    return {
      ...(traffic.listProxies ? { listProxies: (target: Target, ctx: ProviderContext) => traffic.listProxies!(target, ctx) } : {}),
      ...(traffic.retireProxy
        ? { retireProxy: (target: Target, ctx: ProviderContext) => step("retire-proxy", { instanceIds: [] }, () => traffic.retireProxy!(target, ctx), () => undefined) }
        : {}),
      register: (instances, trafficOptions, ctx) =>
        step("register", { instanceIds: instances.map((instance) => instance.id) }, () => traffic.register(instances, trafficOptions, ctx), () => undefined),
      deregister: (instances, trafficOptions, ctx) =>
        step("deregister", { instanceIds: instances.map((instance) => instance.id) }, () => traffic.deregister(instances, trafficOptions, ctx), () => undefined),
    };
  }
}
