/**
 * The `kiln` command line as a function, for tests and wrappers: `run(argv, io, runOptions)` returns the exit code.
 * @module
 */
export { run } from "./main.js";
export type { CliIo, RunOptions } from "./main.js";
export { EXIT_CODES, exitCodeFor } from "./exit-codes.js";
