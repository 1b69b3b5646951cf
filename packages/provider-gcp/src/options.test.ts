import { describe, expect, it } from "vitest";
import { resolveGceEndpoint, resolveGcpLocation } from "./options.js";

describe("resolveGcpLocation", () => {
  it("takes the spec first, then google-auth-library's project variables in its order, then gcloud's", () => {
    const env = { GCLOUD_PROJECT: "from-gcloud-project", GOOGLE_CLOUD_PROJECT: "from-google-cloud", CLOUDSDK_CORE_PROJECT: "from-cloudsdk", CLOUDSDK_COMPUTE_ZONE: "us-central1-a" };
    expect(resolveGcpLocation({ project: "from-spec", zone: "europe-west1-b" }, env)).toEqual({ project: "from-spec", zone: "europe-west1-b", region: "europe-west1" });
    expect(resolveGcpLocation({}, env)).toEqual({ project: "from-gcloud-project", zone: "us-central1-a", region: "us-central1" });
    expect(resolveGcpLocation({}, { ...env, GCLOUD_PROJECT: " " }).project).toBe("from-google-cloud");
    expect(resolveGcpLocation({}, { CLOUDSDK_CORE_PROJECT: "from-cloudsdk", CLOUDSDK_COMPUTE_ZONE: "us-central1-a" }).project).toBe("from-cloudsdk");
    // No project anywhere: left to the credentials (google-auth-library's getProjectId).
    expect(resolveGcpLocation({ zone: "europe-west1-b" }, {}).project).toBeUndefined();
    expect(resolveGcpLocation({ zone: "europe-west1-b", region: "europe-west1" }, { CLOUDSDK_COMPUTE_REGION: "asia-east1" }).region).toBe("europe-west1");
  });

  it("needs a zone, and says where to set it", () => {
    expect(() => resolveGcpLocation({}, { CLOUDSDK_COMPUTE_REGION: "europe-west1" })).toThrow(
      expect.objectContaining({ code: "INVALID_ARGUMENT", message: expect.stringContaining("instances.gcp.zone in the spec, or CLOUDSDK_COMPUTE_ZONE") as unknown }),
    );
  });
});

describe("resolveGceEndpoint", () => {
  it("reads the option, else gcloud's endpoint override variable", () => {
    expect(resolveGceEndpoint("http://127.0.0.1:8085", {})).toEqual({ url: "http://127.0.0.1:8085", apiEndpoint: "127.0.0.1", port: 8085, protocol: "http" });
    expect(resolveGceEndpoint(undefined, { CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE: "http://localhost:9000/compute/v1/" })).toMatchObject({ apiEndpoint: "localhost", port: 9000 });
    expect(resolveGceEndpoint(undefined, { CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE: "https://compute.example.test" })).toMatchObject({ port: 443, protocol: "https" });
    expect(resolveGceEndpoint("http://[::1]:8085", {})).toMatchObject({ apiEndpoint: "::1" });
    expect(resolveGceEndpoint(undefined, {})).toBeUndefined();
  });

  it("refuses what is not an http(s) URL of a host and port", () => {
    for (const bad of ["127.0.0.1:8085", "ftp://127.0.0.1", "http://127.0.0.1:8085/other/path", "http://user@127.0.0.1:8085"]) {
      expect(() => resolveGceEndpoint(bad, {}), bad).toThrow(expect.objectContaining({ code: "INVALID_ARGUMENT" }));
    }
  });
});
