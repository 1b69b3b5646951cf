import { describe, expect, it } from "vitest";
import { JOURNALED_ROLLOUTS_KEPT, compactHistory, emptyTargetState, type RolloutRecord } from "./types.js";

const target = { service: "web", environment: "prod" };

function rollout(index: number, status: RolloutRecord["status"]): RolloutRecord {
  return {
    id: `r${index}`,
    target,
    kind: "deploy",
    fromRelease: undefined,
    toRelease: index,
    startedAt: "",
    holder: { user: "u", host: "h", pid: 1, command: "kiln deploy", since: "" },
    status,
    journal: [{ seq: 1 } as unknown as RolloutRecord["journal"][number]],
  };
}

describe("compactHistory", () => {
  it("keeps the journals of running rollouts and of the newest finished ones only", () => {
    const state = emptyTargetState(target);
    const total = JOURNALED_ROLLOUTS_KEPT + 5;
    for (let index = 0; index < total; index++) state.rollouts.push(rollout(index, index === 2 ? "running" : "succeeded"));
    compactHistory(state);
    const journaled = state.rollouts.filter((r) => r.journal.length > 0).map((r) => r.id);
    expect(journaled).toContain("r2");
    expect(journaled).toHaveLength(JOURNALED_ROLLOUTS_KEPT + 1);
    expect(journaled.at(-1)).toBe(`r${total - 1}`);
    expect(state.rollouts).toHaveLength(total);
  });
});
