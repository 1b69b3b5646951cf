/**
 * Kiln over HTTP (`kiln serve`): the same core functions as the CLI, for internal platforms, safe
 * to run as several replicas on one PostgreSQL. The deployment queue it runs from is core's
 * `DeploymentQueue` (in memory by default; `@kilnjs/store-postgres` for several replicas). See
 * docs/server.md.
 * @module
 */
export { SERVER_SECRET_ENV_PREFIX, createKilnServer, jsonLogger } from "./server.js";
export type { KilnServer, KilnServerOptions } from "./server.js";
export { createAuthenticator, hashToken, newTokenSecret, mayTouch, tokensSchema } from "./auth.js";
export type { Principal, Scope, TokenConfig } from "./auth.js";
export { problem, SERVER_ERROR_CODES } from "./problem.js";
export type { Problem, ProblemCode } from "./problem.js";
