import { KilnError } from "./errors.js";

/** A deployable service in one environment: written `service@environment`. */
export interface Target {
  /** The service name from the spec's `service` field. */
  readonly service: string;
  /** The environment name (`staging`, `prod`); `default` when the spec has none. */
  readonly environment: string;
}

/** The environment used when none is named. */
export const DEFAULT_ENVIRONMENT = "default";

/** `service@environment`, the way targets are written in output, state and labels. */
export function formatTarget(target: Target): string {
  return `${target.service}@${target.environment}`;
}

/**
 * Parses `service@environment` (or `service`, meaning the default environment).
 * @throws KilnError INVALID_ARGUMENT when the text is not of that form
 */
export function parseTarget(text: string): Target {
  const match = /^([a-z0-9][a-z0-9-]*)(?:@([a-z0-9][a-z0-9-]*))?$/.exec(text);
  if (!match) {
    throw new KilnError("INVALID_ARGUMENT", `"${text}" is not a target: write it as service@environment, e.g. hello-web@staging.`);
  }
  return { service: match[1]!, environment: match[2] ?? DEFAULT_ENVIRONMENT };
}
