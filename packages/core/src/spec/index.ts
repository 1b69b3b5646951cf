/**
 * The spec (`kiln.yaml`): its zod schema and types, validation with every issue and its position,
 * loading from a file or an object, resolving a target, and the generated JSON Schema.
 * @module
 */
export {
  specSchema,
  environmentSchema,
  imageSchema,
  dockerfileSchema,
  instancesSchema,
  portSchema,
  resourcesSchema,
  healthSchema,
  proxySchema,
  trafficSchema,
  tcpCheckSchema,
  commandCheckSchema,
  canaryStepSchema,
  countOrPercentSchema,
  httpCheckSchema,
  rolloutSchema,
  machineSchema,
  provisionStepSchema,
  awsBaseImageSchema,
  awsBuilderSchema,
  awsInstancesSchema,
  awsBlockDeviceSchema,
  loadBalancerSchema,
  MEMORY_PATTERN,
} from "./schema.js";
export type { Spec, SpecInput, EnvironmentOverrides } from "./schema.js";
export { validateSpec, assertValidSpec, specInvalidError, formatSpecIssue, formatPath } from "./validate.js";
export { MACHINE_IMAGE_PROVIDERS, AWS_TAG_RULES, AWS_KILN_TAG_COUNT, AWS_USER_DATA_MAX_BYTES, amiNameProblem, awsTagProblems } from "./validate.js";
export type { SpecIssue, SpecValidation, ValidatedSpec } from "./validate.js";
export { parseSpec, loadSpec, specFromObject, OBJECT_SPEC_FILE } from "./load.js";
export type { LoadedSpec, ParseSpecOptions } from "./load.js";
export { resolveTarget, parseMemory, defaultHealthDeadlineMs } from "./resolve.js";
export type { ResolvedTarget, ResolvedHealth, ResolvedHttpCheck, ResolvedCheck, ResolvedTcpCheck, ResolvedCommandCheck, ResolvedRollout, ResolvedCanaryStep, ResolvedProxy, ResolvedTraffic } from "./resolve.js";
export type { ResolvedLoadBalancer, ResolvedMachine, ResolvedProvisionStep, ResolvedAwsBaseImage, ResolvedAwsBuilder } from "./resolve.js";
export { specJsonSchema, SPEC_SCHEMA_ID } from "./json-schema.js";
