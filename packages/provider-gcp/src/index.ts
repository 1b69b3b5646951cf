/**
 * Kiln provider for Google Compute Engine: **preview**. This release holds the foundations only:
 * the provider's part of the spec with Compute Engine's published rules as pre-flight checks,
 * the names and labels Kiln derives, request ids from journal steps, the shared backoff, the error
 * classifier and the lazily loaded client. The provider's lifecycle (bake, launch, traffic) is not
 * implemented yet, so the package exports no `createProvider`. `@google-cloud/compute` is loaded
 * on the first call that needs Compute Engine, so importing this package is cheap.
 * @module
 */
export {
  gcpProviderSpec,
  gcpProviderSpec as providerSpec,
  gcpInstancesSchema,
  gcpBaseImageSchema,
  gcpBuilderSchema,
  gcpLoadBalancerSchema,
  gcpServiceAccountSchema,
  gcpBootDiskSchema,
  GCP_DEFAULT_SCOPES,
  GCP_MAX_INSTANCE_COUNT,
  targetPortName,
} from "./spec.js";
export type { GcpInstanceSettings, GcpBaseImage, GcpBuilderSettings, GcpLoadBalancer, GcpSections } from "./spec.js";
export {
  GCE_RULE_URLS,
  GCE_NAME_PATTERN,
  GCE_NAME_MAX_LENGTH,
  GCE_LABEL_RULES,
  GCE_METADATA_RULES,
  KILN_RESERVED_METADATA_KEYS,
  KILN_KEY_PREFIX,
  gceNameProblem,
  gceLabelProblems,
  reservedLabelProblems,
  gceMetadataProblems,
} from "./rules.js";
export type { RuleProblem } from "./rules.js";
export { GCE_NAME_DIGEST_LENGTH, gceName, textToken, instanceName, builderName, builderDiskName, imageName } from "./names.js";
export type { InstanceNameInput, BuilderNameInput } from "./names.js";
export {
  GCE_LABEL_KEYS,
  GCE_PROVIDER_LABEL_KEYS,
  GCE_KILN_INSTANCE_LABEL_COUNT,
  GCE_KILN_BAKE_LABEL_COUNT,
  encodeLabelValue,
  decodeLabelValue,
  toGceLabels,
  fromGceLabels,
  expiryLabelValue,
  parseExpiryLabelValue,
} from "./labels.js";
export { GCE_REQUEST_ID_NAMESPACE, requestIdFor } from "./request-id.js";
export type { RequestIdInput } from "./request-id.js";
export { GceBackoff, REAL_CLOCK, isRetryableGceError } from "./backoff.js";
export type { BackoffClock, BackoffEvent, GceBackoffOptions } from "./backoff.js";
export { readGceError, gceError, operationError } from "./errors.js";
export type { GceErrorInfo, GceErrorKind, GceOperationResult } from "./errors.js";
export { GCP_ENVIRONMENT_VARIABLES, resolveGcpLocation, resolveGceEndpoint } from "./options.js";
export type { GcpLocation, GcpLocationSettings, GceEndpoint } from "./options.js";
export { GceClients, GCE_AUTH_SCOPES, LOCAL_ACCESS_TOKEN, DEFAULT_CALL_TIMEOUT_MS } from "./client.js";
export type { ComputeModule, GceClientSet, GceClientsOptions } from "./client.js";
