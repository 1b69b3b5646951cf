/**
 * Kiln core: the spec, fingerprints, the plan/build/deploy/rollback lifecycle, rollouts, health
 * checks, state, events and errors. Imports no provider, cloud SDK, CLI or HTTP library.
 * @module
 */
export { ERROR_CODES, KilnError, isKilnError, toKilnError, isAbortError, throwIfAborted } from "./errors.js";
export type { ErrorCode, KilnErrorOptions } from "./errors.js";
export { silentLogger } from "./logger.js";
export type { Logger } from "./logger.js";
export { DEFAULT_ENVIRONMENT, LABELS, formatTarget, parseTarget } from "./target.js";
export type { Target, LabelKey } from "./target.js";
export { defineProvider } from "./provider.js";
export type {
  DockerfileRecipe,
  Endpoint,
  ImageOperations,
  ImageRecipe,
  ImageRef,
  Instance,
  InstanceConfig,
  InstanceOperations,
  InstanceSelector,
  InstanceState,
  LaunchRequest,
  PortConfig,
  Provider,
  ProviderContext,
  ProviderProgress,
} from "./provider.js";
