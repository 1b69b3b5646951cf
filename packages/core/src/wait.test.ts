import { describe, expect, it } from "vitest";
import { waitFor } from "./wait.js";

describe("waitFor", () => {
  it("returns the value of the first attempt that is done", async () => {
    let calls = 0;
    const value = await waitFor(async () => (++calls >= 3 ? { done: true, value: calls } : { done: false }), { timeoutMs: 5000, minDelayMs: 1, description: "three calls" });
    expect(value).toBe(3);
  });

  it("times out with the last reason", async () => {
    await expect(waitFor(async () => ({ done: false, reason: "still pending" }), { timeoutMs: 30, minDelayMs: 5, description: "nothing" })).rejects.toMatchObject({
      code: "TIMEOUT",
      message: expect.stringContaining("still pending") as string,
    });
  });

  it("stops when aborted", async () => {
    const controller = new AbortController();
    const waiting = waitFor(async () => ({ done: false }), { timeoutMs: 60_000, minDelayMs: 10_000, description: "forever", signal: controller.signal });
    controller.abort();
    await expect(waiting).rejects.toMatchObject({ code: "ABORTED" });
  });
});
