export { CRASH_AT_ENV, journalCrashPoints, journaled, parseCrashPoint } from "./journaled.js";
export type { JournalOptions } from "./journaled.js";
export { markInterruptedRollouts } from "./recover.js";
export type { InterruptedRollout, MarkInterruptedOptions } from "./recover.js";
