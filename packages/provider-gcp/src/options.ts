import { KilnError } from "@kilnjs/core";

/**
 * The environment variables the gcp provider reads, and whose they are:
 * - project: `GCLOUD_PROJECT`, then `GOOGLE_CLOUD_PROJECT` (the two google-auth-library's
 *   `getProjectId()` reads first, in that order), then `CLOUDSDK_CORE_PROJECT` (gcloud's
 *   `core/project` property as an environment variable);
 * - zone and region: `CLOUDSDK_COMPUTE_ZONE`, `CLOUDSDK_COMPUTE_REGION` (gcloud's `compute/zone`
 *   and `compute/region` properties; no Google client library reads a zone);
 * - endpoint: `CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE` (gcloud's `api_endpoint_overrides/compute`).
 * @see https://cloud.google.com/sdk/docs/properties#setting_properties_using_environment_variables
 * @see https://cloud.google.com/compute/docs/gcloud-compute#default-region-zone
 */
export const GCP_ENVIRONMENT_VARIABLES = {
  project: ["GCLOUD_PROJECT", "GOOGLE_CLOUD_PROJECT", "CLOUDSDK_CORE_PROJECT"],
  zone: ["CLOUDSDK_COMPUTE_ZONE"],
  region: ["CLOUDSDK_COMPUTE_REGION"],
  endpoint: ["CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE"],
} as const;

/** Where resources go: a spec section's `project`, `zone` and `region`, each optional. */
export interface GcpLocationSettings {
  readonly project?: string | undefined;
  readonly zone?: string | undefined;
  readonly region?: string | undefined;
}

/** A location with the environment applied; `project` may still be missing (then the credentials' project is asked). */
export interface GcpLocation {
  readonly project: string | undefined;
  readonly zone: string;
  /** The section's region, else the zone's. */
  readonly region: string;
}

/**
 * Applies the environment to a section's location: the spec wins, then the variables of
 * {@link GCP_ENVIRONMENT_VARIABLES} in their order. The region is the spec's, else the zone's
 * (the zone minus its last `-x`). A missing project stays undefined: the client then asks
 * google-auth-library (the credentials file's project, gcloud's configuration, the metadata server).
 * @throws KilnError INVALID_ARGUMENT when no zone is given anywhere (the message names the spec field and the variable)
 */
export function resolveGcpLocation(settings: GcpLocationSettings, env: NodeJS.ProcessEnv = process.env, field = "instances.gcp.zone"): GcpLocation {
  const zone = settings.zone ?? firstOf(GCP_ENVIRONMENT_VARIABLES.zone, env);
  if (zone === undefined) throw new KilnError("INVALID_ARGUMENT", `The gcp provider needs a zone: set ${field} in the spec, or ${GCP_ENVIRONMENT_VARIABLES.zone[0]} (gcloud config set compute/zone ZONE also sets it for gcloud).`);
  const region = settings.region ?? zone.replace(/-[a-z]$/, "");
  return { project: settings.project ?? firstOf(GCP_ENVIRONMENT_VARIABLES.project, env), zone, region };
}

/** The Compute Engine endpoint a local server is reached at, as the SDK takes it. */
export interface GceEndpoint {
  /** The URL as given. */
  readonly url: string;
  /** The host name or address (`127.0.0.1`). */
  readonly apiEndpoint: string;
  readonly port: number;
  readonly protocol: "http" | "https";
}

/**
 * Reads an endpoint override: the option, else `CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE`, else
 * none (Google's own endpoint). The URL is `http(s)://HOST[:PORT]`, optionally ending with
 * `/compute/v1/` as gcloud writes it.
 * @throws KilnError INVALID_ARGUMENT for a value that is not such a URL
 */
export function resolveGceEndpoint(option: string | undefined, env: NodeJS.ProcessEnv = process.env): GceEndpoint | undefined {
  const text = option ?? firstOf(GCP_ENVIRONMENT_VARIABLES.endpoint, env);
  if (text === undefined) return undefined;
  const invalid = () =>
    new KilnError("INVALID_ARGUMENT", `The gcp provider's endpoint "${text}" is not an http(s) URL of a host and port (optionally ending /compute/v1/); write e.g. http://127.0.0.1:8085.`);
  let url: URL;
  try {
    url = new URL(text);
  } catch (error) {
    throw Object.assign(invalid(), { cause: error });
  }
  if ((url.protocol !== "http:" && url.protocol !== "https:") || !/^\/?(compute\/v1\/?)?$/.test(url.pathname) || url.search !== "" || url.username !== "") throw invalid();
  const protocol = url.protocol === "http:" ? "http" : "https";
  return { url: text, apiEndpoint: url.hostname.replace(/^\[(.*)\]$/, "$1"), port: url.port === "" ? (protocol === "http" ? 80 : 443) : Number(url.port), protocol };
}

function firstOf(names: readonly string[], env: NodeJS.ProcessEnv): string | undefined {
  for (const name of names) {
    const value = env[name]?.trim();
    if (value) return value;
  }
  return undefined;
}
