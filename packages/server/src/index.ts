/**
 * Kiln over HTTP (`kiln serve`): the same core functions as the CLI, for internal platforms, safe
 * to run as several replicas on one PostgreSQL. See docs/server.md.
 * @module
 */
export { createKilnServer, jsonLogger } from "./server.js";
export type { KilnServer, KilnServerOptions } from "./server.js";
export { createAuthenticator, hashToken, newTokenSecret, mayTouch, tokensSchema } from "./auth.js";
export type { Principal, Scope, TokenConfig } from "./auth.js";
export { createMemoryDeploymentStore, FINAL_STATES, newDeploymentId } from "./deployments.js";
export type { CreateOutcome, DeploymentKind, DeploymentRecord, DeploymentRequest, DeploymentState, DeploymentStore, StoredEvent, StoredResponse } from "./deployments.js";
export { problem, SERVER_ERROR_CODES } from "./problem.js";
export type { Problem, ProblemCode } from "./problem.js";
export { createPostgresDeploymentStore } from "./pg-deployments.js";
export type { PostgresDeploymentStoreOptions } from "./pg-deployments.js";
