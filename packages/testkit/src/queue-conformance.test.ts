// The deployment queue conformance suite, run against core's in-memory queue (core cannot import
// testkit, which depends on core, so the in-memory queue's run lives here).
import { createMemoryDeploymentQueue } from "@kilnjs/core";
import { runDeploymentQueueConformance } from "./queue-conformance.js";

// One object is the whole backend: the suite's "two queue objects" are that one, as the workers of
// one process share it.
const queue = createMemoryDeploymentQueue();

runDeploymentQueueConformance({
  name: "memory",
  createQueue: () => queue,
});
