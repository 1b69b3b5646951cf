/**
 * Kiln testkit: the in-memory provider and the provider conformance suite.
 * @module
 */
export const PLACEHOLDER = true;
