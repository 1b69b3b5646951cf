/**
 * The kiln command line: plan, deploy, rollback, status and history from a kiln.yaml.
 * @module
 */
export const PLACEHOLDER = true;
