// A test fixture: the in-memory provider as a CLI provider module, kept in a state file so that a
// `kiln` process killed with SIGKILL and the next one see the same instances.
//   KILN_PROVIDER_MODULE_MEMORY=packages/cli/test-fixtures/memory-provider.mjs
//   KILN_MEMORY_STATE_FILE=/tmp/x/cloud.json   (outside the build context: a file inside it would
//                                              change the fingerprint on every run)
import { createMemoryProvider } from "@kilnjs/testkit";

export function createProvider() {
  const stateFile = process.env.KILN_MEMORY_STATE_FILE;
  if (!stateFile) throw new Error("KILN_MEMORY_STATE_FILE must name the in-memory provider's state file");
  return createMemoryProvider({ name: "memory", stateFile });
}
