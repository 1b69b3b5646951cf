/**
 * Kiln provider for AWS EC2: bakes AMIs without SSH and replaces EC2 instances, with optional
 * ELBv2 target groups. The AWS SDK is loaded on the first call that needs AWS, so importing this
 * package is cheap.
 * @module
 */
export { createAwsProvider, createAwsProvider as createProvider, PROVIDER_NAME } from "./provider.js";
export type { AwsProviderOptions, AwsCredentials } from "./options.js";
export { AWS_TAGS } from "./tags.js";
