// The deployment queue conformance suite, run against core's in-memory and file queues (core
// cannot import testkit, which depends on core, so their runs live here).
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { createFileDeploymentQueue, createMemoryDeploymentQueue } from "@kilnjs/core";
import { runDeploymentQueueConformance } from "./queue-conformance.js";

// One object is the whole backend: the suite's "two queue objects" are that one, as the workers of
// one process share it.
const queue = createMemoryDeploymentQueue();

runDeploymentQueueConformance({
  name: "memory",
  createQueue: () => queue,
});

const directory = mkdtempSync(path.join(os.tmpdir(), "kiln-queue-conformance-"));

runDeploymentQueueConformance({
  name: "file",
  // Two objects on one folder: as the server and an embedder's code in one process would have.
  createQueue: () => createFileDeploymentQueue({ directory }),
  cleanup: async () => rmSync(directory, { recursive: true, force: true }),
});
