#!/usr/bin/env node
import { run } from "./main.js";

// The AWS SDK warns on every process under Node 20 that its releases after January 2027 need
// Node 22; the versions Kiln pins work on Node 20 (docs/providers/aws.md). Set the variable to
// anything else to see the warning.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= "true";

run(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    process.stderr.write(`internal error: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    process.exitCode = 70;
  },
);
