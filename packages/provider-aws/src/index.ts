/**
 * Kiln provider for AWS EC2: bakes AMIs without SSH and replaces EC2 instances, with optional
 * ELBv2 target groups, and a secret store (Secrets Manager, Parameter Store) that targets of any
 * provider may read. The AWS SDK is loaded on the first call that needs AWS, so importing this
 * package is cheap.
 * @module
 */
export { createAwsProvider, createAwsProvider as createProvider, PROVIDER_NAME } from "./provider.js";
export type { AwsProviderOptions, AwsCredentials } from "./options.js";
export { AWS_TAGS } from "./tags.js";
export {
  awsProviderSpec,
  awsProviderSpec as providerSpec,
  awsBaseImageSchema,
  awsBuilderSchema,
  awsBlockDeviceSchema,
  awsInstancesSchema,
  awsLoadBalancerSchema,
  AWS_TAG_RULES,
  AWS_KILN_TAG_COUNT,
  AWS_USER_DATA_MAX_BYTES,
  AWS_MAX_INSTANCE_COUNT,
  amiNameProblem,
  awsTagProblems,
} from "./spec.js";
export type { AwsInstanceSettings, AwsBaseImage, AwsBuilderSettings, AwsLoadBalancer, AwsSections } from "./spec.js";
export { awsSecretSourceSchema, awsSecretsManagerSourceSchema, awsParameterSourceSchema, AWS_SECRET_STORE_RULES, secretIdProblem, parameterNameProblem } from "./secret-source.js";
export type { AwsSecretSource } from "./secret-source.js";
