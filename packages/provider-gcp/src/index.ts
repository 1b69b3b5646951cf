/**
 * Kiln provider for Google Compute Engine: **preview**. `createProvider` (also exported as
 * `createGcpProvider`) launches, lists and deletes Compute Engine instances from a release's image
 * (one `requestId` per instance from the journal step, one aggregated label-filtered list across
 * zones, one wait loop per operation), finds, lists and removes images by Kiln's labels, and checks
 * instances by their status plus core's probe. Baking images (`images.build`) and traffic through a
 * backend service are not implemented yet. Also exported: the provider's part of the spec with
 * Compute Engine's published rules as pre-flight checks, the names and labels Kiln derives, request
 * ids, the shared backoff, the error classifier and the lazily loaded client.
 * `@google-cloud/compute` is loaded on the first call that needs Compute Engine, so importing this
 * package is cheap.
 * @module
 */
export { createGcpProvider, createGcpProvider as createProvider, PROVIDER_NAME } from "./provider.js";
export type { GcpProviderOptions } from "./runtime.js";
export { DEFAULT_OPERATION_TIMEOUT_MS, DEFAULT_CONCURRENCY } from "./runtime.js";
export { GCE_INSTANCE_METADATA_KEYS, instanceState, instanceId, parseInstanceId } from "./instances.js";
export { imageFromGce } from "./images.js";
export { COMMAND_CHECK_UNSUPPORTED } from "./health.js";
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
