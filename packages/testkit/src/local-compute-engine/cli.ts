import { parseArgs } from "node:util";
import { KilnError } from "@kilnjs/core";
import type { LocalComputeEngineFaults } from "./faults.js";
import { type LocalComputeEngine, type LocalComputeEngineOptions, startLocalComputeEngine } from "./server.js";

/** What `kiln-local-compute-engine --help` prints. */
export const LOCAL_COMPUTE_ENGINE_USAGE = `Usage: kiln-local-compute-engine [options]

Starts a local Compute Engine on 127.0.0.1 and prints the variables that point a client at it:
  KILN_GCE_ENDPOINT=http://127.0.0.1:PORT   (Compute API, metadata server, control API)
  KILN_GCE_PROJECT=…  KILN_GCE_ZONE=…  KILN_GCE_ZONES=…
Runs until interrupted (SIGINT or SIGTERM).

Options:
  --port N            port on 127.0.0.1 (default 0: an ephemeral port)
  --project NAME      project a client uses (default kiln-local)
  --zones A,B         zones served (default us-central1-a,us-central1-b)
  --instantaneous     operations DONE at once, no boot time
  --faults JSON       faults from the start, e.g. '{"seed":1,"throttle":{"rate":0.2}}'
  --help              this text
`;

/** The lines the command prints once the engine listens: `NAME=value`, one per line. */
export function environmentLines(engine: LocalComputeEngine): string {
  return [
    `KILN_GCE_ENDPOINT=${engine.endpoint}`,
    `KILN_GCE_PROJECT=${engine.project}`,
    `KILN_GCE_ZONE=${engine.zones[0] ?? ""}`,
    `KILN_GCE_ZONES=${engine.zones.join(",")}`,
  ].join("\n");
}

/**
 * Parses the command's arguments into engine options (`undefined` for `--help`).
 * @throws KilnError INVALID_ARGUMENT for an unknown option or a bad value
 */
export function parseLocalComputeEngineArguments(args: readonly string[]): LocalComputeEngineOptions | undefined {
  let parsed;
  try {
    parsed = parseArgs({
      args: [...args],
      options: {
        port: { type: "string" },
        project: { type: "string" },
        zones: { type: "string" },
        instantaneous: { type: "boolean" },
        faults: { type: "string" },
        help: { type: "boolean" },
      },
      strict: true,
      allowPositionals: false,
    }).values;
  } catch (error) {
    throw new KilnError("INVALID_ARGUMENT", `${error instanceof Error ? error.message : String(error)}; see kiln-local-compute-engine --help.`, { cause: error });
  }
  if (parsed.help) return undefined;
  const port = parsed.port === undefined ? 0 : Number(parsed.port);
  if (!Number.isInteger(port) || port < 0 || port > 65_535) throw new KilnError("INVALID_ARGUMENT", `--port must be a port number from 0 to 65535, not ${parsed.port}.`);
  let faults: LocalComputeEngineFaults | undefined;
  if (parsed.faults !== undefined) {
    try {
      faults = JSON.parse(parsed.faults) as LocalComputeEngineFaults;
    } catch (error) {
      throw new KilnError("INVALID_ARGUMENT", `--faults must be JSON (docs/local-compute-engine.md lists the fields): ${error instanceof Error ? error.message : String(error)}.`, { cause: error });
    }
  }
  const zones = parsed.zones?.split(",").map((zone) => zone.trim()).filter((zone) => zone !== "");
  return {
    port,
    ...(parsed.project ? { project: parsed.project } : {}),
    ...(zones?.length ? { zones } : {}),
    ...(parsed.instantaneous ? { instantaneous: true } : {}),
    ...(faults ? { faults } : {}),
  };
}

/** Runs the command: starts the engine, writes the variables, stops on SIGINT or SIGTERM. Returns the exit code. */
export async function runLocalComputeEngineCommand(args: readonly string[], output: NodeJS.WritableStream = process.stdout, errors: NodeJS.WritableStream = process.stderr): Promise<number> {
  let options: LocalComputeEngineOptions | undefined;
  let engine: LocalComputeEngine;
  try {
    options = parseLocalComputeEngineArguments(args);
    if (!options) {
      output.write(LOCAL_COMPUTE_ENGINE_USAGE);
      return 0;
    }
    engine = await startLocalComputeEngine(options);
  } catch (error) {
    errors.write(`kiln-local-compute-engine: ${error instanceof Error ? error.message : String(error)}\n`);
    return 2;
  }
  output.write(`${environmentLines(engine)}\n`);
  await new Promise<void>((resolve) => {
    process.once("SIGINT", resolve);
    process.once("SIGTERM", resolve);
  });
  await engine.close();
  return 0;
}
