// The package's public surface, listed: a change to it is a decision, not an accident. Since the
// lifecycle's phase 2 the package exports createProvider, which core's importProvider looks for.
import { describe, expect, it } from "vitest";
import * as entry from "./index.js";
import * as specEntry from "./spec-entry.js";

describe("@kilnjs/provider-gcp's exports", () => {
  it("lists the provider, its lifecycle helpers and the foundations", () => {
    expect(Object.keys(entry).sort()).toEqual(
      [
        "COMMAND_CHECK_UNSUPPORTED",
        "DEFAULT_CALL_TIMEOUT_MS",
        "DEFAULT_CONCURRENCY",
        "DEFAULT_OPERATION_TIMEOUT_MS",
        "GCE_INSTANCE_METADATA_KEYS",
        "PROVIDER_NAME",
        "createGcpProvider",
        "createProvider",
        "imageFromGce",
        "instanceId",
        "instanceState",
        "parseInstanceId",
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
    expect(entry.createProvider).toBe(entry.createGcpProvider);
  });

  it("creates a provider named gcp with the package's spec, without loading the SDK or doing I/O", () => {
    const provider = entry.createProvider({ endpoint: "http://127.0.0.1:9", project: "kiln-test", zone: "us-central1-a" });
    expect(provider.name).toBe(entry.PROVIDER_NAME);
    expect(provider.name).toBe("gcp");
    expect(provider.spec).toBe(entry.gcpProviderSpec);
    expect(provider.limits?.maxInstancesPerTarget).toBe(entry.GCP_MAX_INSTANCE_COUNT);
  });

  it("gives the /spec entry the same spec object", () => {
    expect(Object.keys(specEntry).sort()).toEqual(["gcpProviderSpec", "providerSpec"]);
    expect(specEntry.providerSpec).toBe(entry.providerSpec);
  });
});
