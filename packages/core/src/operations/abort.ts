/**
 * `Kiln.abortRollout`: under the target's lock, roll back on purpose: mark an interrupted rollout
 * `aborted` and its release `failed`, then repair the current release (or, with none, remove the
 * target's instances).
 * @module
 */
import { currentRelease, planRecovery } from "../plan/index.js";
import type { Instance, Provider } from "../provider/contract.js";
import { describe } from "../rollout/engine.js";
import type { RecoveryResult, TargetOptions } from "../kiln.js";
import type { OperationContext } from "./context.js";
import { runRollout } from "./run-rollout.js";
import { inSession, type Session } from "./session.js";

/** `Kiln.abortRollout`; see its documentation. */
export async function abortRollout(context: OperationContext, options: TargetOptions): Promise<RecoveryResult> {
  const { target, providerName } = await context.targetOf(options);
  return inSession(context, target, providerName, options, async (session) => {
    const { interrupted, emit } = session;
    const records = interrupted.map(({ rollout }) => rollout);
    const current = currentRelease(await context.store.read(target));
    const name = current?.provider ?? interrupted.at(-1)?.rollout.provider ?? providerName;
    if (!name) {
      await session.settle(undefined, undefined, "it was aborted");
      return { interrupted: records, result: undefined };
    }
    const provider = await session.connect(name);
    const instances = await session.list(provider);
    if (!current) {
      await removeLeftovers(session, provider, instances);
      return { interrupted: records, result: undefined };
    }
    const replacement = planRecovery({ current, instances, release: current, ...(provider.limits ? { limits: provider.limits } : {}) });
    await session.settle(undefined, replacement.action === "replace" ? replacement : undefined, "it was aborted");
    if (replacement.action === "none") {
      emit({ type: "rollout.skipped", reason: replacement.reason, release: current.number });
      return { interrupted: records, result: { outcome: "unchanged", plan: undefined, release: current, rollout: undefined } };
    }
    const rollout = await session.beginRollout({ provider: name, kind: "rollback", fromRelease: current.number, toRelease: current.number });
    const journal = session.journal(provider, rollout.id);
    const result = await runRollout(context, session, { rollout, provider: journal, release: current, createRelease: false, previous: current, replacement, adopted: [], plan: undefined });
    return { interrupted: records, result };
  });
}

/** Nothing ever served: what runs is all leftovers, removed (journaled on the last interrupted rollout). */
async function removeLeftovers(session: Session, provider: Provider, instances: readonly Instance[]): Promise<void> {
  const { interrupted, emit } = session;
  await session.settle(undefined, { keep: [], retire: instances }, "it was aborted");
  if (instances.length === 0) return;
  const last = interrupted.at(-1);
  const via = last ? session.journal(provider, last.rollout.id) : provider;
  const rolloutId = last?.rollout.id ?? "";
  for (const instance of instances) emit({ type: "instance.retiring", rolloutId, instance: describe(instance) });
  await via.instances.terminate(instances, { gracePeriodMs: last?.release?.instance.stopGracePeriodMs ?? 10_000 }, session.ctx);
  for (const instance of instances) emit({ type: "instance.retired", rolloutId, instance: describe(instance) });
}
