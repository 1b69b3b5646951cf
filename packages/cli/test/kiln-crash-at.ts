/**
 * `kiln`, with a journal crash point injected: the test-only harness of crash.integ.test.ts.
 *
 *   node --import tsx packages/cli/test/kiln-crash-at.ts <phase>:<verb>:<n> <kiln arguments...>
 *
 * Runs the CLI's `run` as `bin.ts` does, with `journalHooks.crashAt` passed to `createKiln`, so the
 * process kills itself with SIGKILL right after writing that journal entry (see core's
 * `journaled`). The hook is an option a harness passes in: the shipped CLI reads no variable for
 * it. Lives under test/, which the package neither builds nor ships.
 */
import { run } from "../src/main.js";

const [crashAt, ...argv] = process.argv.slice(2);
if (crashAt === undefined || crashAt.startsWith("-")) {
  process.stderr.write("usage: kiln-crash-at.ts <phase>:<verb>:<n> <kiln arguments...>, e.g. intent:launch:2 deploy --json\n");
  process.exitCode = 64;
} else {
  run(argv, undefined, { kilnOptions: { journalHooks: { crashAt } } }).then(
    (code) => {
      process.exitCode = code;
    },
    (error: unknown) => {
      process.stderr.write(`internal error: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
      process.exitCode = 70;
    },
  );
}
