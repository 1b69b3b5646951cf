// The state store conformance suite, run against core's file store (core cannot import testkit,
// which depends on core, so the file store's run lives here).
import { appendFileSync, mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { createFileStateStore } from "@kilnjs/core";
import { runStateStoreConformance } from "./store-conformance.js";

const directory = mkdtempSync(path.join(os.tmpdir(), "kiln-store-conformance-"));

runStateStoreConformance({
  name: "file",
  // Two objects on one folder: as two processes on one machine would have.
  createStore: () => createFileStateStore({ directory }),
  cleanup: async () => rmSync(directory, { recursive: true, force: true }),
  // A process killed in the middle of its one write of an entry's line leaves part of the line.
  interruptAppend: async (target, rolloutId, entry) => {
    const line = JSON.stringify({ rolloutId, entry });
    appendFileSync(path.join(directory, `${target.service}@${target.environment}.journal.jsonl`), line.slice(0, Math.floor(line.length / 2)));
  },
});
