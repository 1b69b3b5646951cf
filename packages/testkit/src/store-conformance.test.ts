// The state store conformance suite, run against core's file store (core cannot import testkit,
// which depends on core, so the file store's run lives here).
import { mkdtempSync, rmSync } from "node:fs";
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
});
