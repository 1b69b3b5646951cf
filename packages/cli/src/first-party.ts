/**
 * The specs of the providers Kiln ships, by name: what the committed JSON Schema
 * (`@kilnjs/core/schema.json`) and the kiln.yaml reference describe beside core's own sections.
 * Read by `scripts/generate-spec-docs.ts` and its staleness test; not on the CLI's start-up path
 * (the CLI loads providers by name, on first use).
 */
import { providerSpec as aws } from "@kilnjs/provider-aws";
import { providerSpec as docker } from "@kilnjs/provider-docker";
import type { ProviderSpec } from "@kilnjs/core";

/** The first-party providers' specs, by provider name. */
export const FIRST_PARTY_PROVIDER_SPECS: Readonly<Record<string, ProviderSpec>> = { docker, aws };
