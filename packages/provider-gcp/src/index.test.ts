// The package's public surface, listed: a change to it is a decision, not an accident. And while
// the lifecycle is missing, nothing here may look like a usable provider to core's importProvider.
import { describe, expect, it } from "vitest";
import * as entry from "./index.js";
import * as specEntry from "./spec-entry.js";

describe("@kilnjs/provider-gcp's exports", () => {
  it("lists the foundations and no createProvider (the provider's lifecycle is not implemented yet)", () => {
    expect(Object.keys(entry).sort()).toEqual(
      [
        "DEFAULT_CALL_TIMEOUT_MS",
        "GCE_AUTH_SCOPES",
        "GCE_KILN_BAKE_LABEL_COUNT",
        "GCE_KILN_INSTANCE_LABEL_COUNT",
        "GCE_LABEL_KEYS",
        "GCE_LABEL_RULES",
        "GCE_METADATA_RULES",
        "GCE_NAME_DIGEST_LENGTH",
        "GCE_NAME_MAX_LENGTH",
        "GCE_NAME_PATTERN",
        "GCE_PROVIDER_LABEL_KEYS",
        "GCE_REQUEST_ID_NAMESPACE",
        "GCE_RULE_URLS",
        "GCP_DEFAULT_SCOPES",
        "GCP_ENVIRONMENT_VARIABLES",
        "GCP_MAX_INSTANCE_COUNT",
        "GceBackoff",
        "GceClients",
        "KILN_KEY_PREFIX",
        "KILN_RESERVED_METADATA_KEYS",
        "LOCAL_ACCESS_TOKEN",
        "REAL_CLOCK",
        "builderDiskName",
        "builderName",
        "decodeLabelValue",
        "encodeLabelValue",
        "expiryLabelValue",
        "fromGceLabels",
        "gceError",
        "gceLabelProblems",
        "gceMetadataProblems",
        "gceName",
        "gceNameProblem",
        "gcpBaseImageSchema",
        "gcpBootDiskSchema",
        "gcpBuilderSchema",
        "gcpInstancesSchema",
        "gcpLoadBalancerSchema",
        "gcpProviderSpec",
        "gcpServiceAccountSchema",
        "imageName",
        "instanceName",
        "isRetryableGceError",
        "operationError",
        "parseExpiryLabelValue",
        "providerSpec",
        "readGceError",
        "requestIdFor",
        "reservedLabelProblems",
        "resolveGceEndpoint",
        "resolveGcpLocation",
        "targetPortName",
        "textToken",
        "toGceLabels",
      ].sort(),
    );
    expect("createProvider" in entry).toBe(false);
  });

  it("gives the /spec entry the same spec object", () => {
    expect(Object.keys(specEntry).sort()).toEqual(["gcpProviderSpec", "providerSpec"]);
    expect(specEntry.providerSpec).toBe(entry.providerSpec);
  });
});
