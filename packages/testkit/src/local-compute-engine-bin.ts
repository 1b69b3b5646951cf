// The `kiln-local-compute-engine` command (built to dist/local-compute-engine-bin.js; see
// bin/kiln-local-compute-engine.js and docs/local-compute-engine.md).
import { runLocalComputeEngineCommand } from "./local-compute-engine/cli.js";

process.exitCode = await runLocalComputeEngineCommand(process.argv.slice(2));
