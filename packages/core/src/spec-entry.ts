/**
 * `@kilnjs/core/spec`: the spec alone, for callers that only read, validate and check a spec (the
 * CLI's `kiln validate`, editors, a provider's spec declaration): loading (YAML with line and
 * column), validation with every provider's sections, the file checks, targets, errors, and the
 * helpers a provider's spec declaration uses. It loads zod, yaml and fastest-levenshtein, and none
 * of what `@kilnjs/core` adds for the lifecycle (state store and its file locking, fingerprints
 * and their ignore rules, rollouts, health checks).
 *
 * Everything here is also exported by `@kilnjs/core`, as the same objects (the two entries share
 * their code). Under `require`, this subpath is `@kilnjs/core` itself.
 * @module
 */

export { ERROR_CODES, KilnError, isKilnError, toKilnError } from "./errors.js";
export type { ErrorCode, KilnErrorOptions } from "./errors.js";
export { DEFAULT_ENVIRONMENT, formatTarget, parseTarget } from "./target.js";
export type { Target } from "./target.js";

// What a provider's spec declaration uses.
/**
 * The zod that core validates specs with (zod 4, bundled into core's build): a provider builds its
 * spec sections ({@link ProviderSpec}) with this `z`, so that one copy of zod composes core's schema
 * and every provider's, and a command that only reads a spec loads zod once, as one file. A schema
 * made with another copy of the same zod major version composes too (zod 4 recognises its types by
 * traits, not by class), at the cost of loading that copy. See https://zod.dev/api for the API.
 */
export { z } from "zod";
export { DEFAULT_PROVIDER_SPEC, PROVIDER_SECTION_KEYS, PROVIDER_SECTION_PATHS, defineProviderSpec, readSection, sectionValues } from "./provider/spec.js";
export type { FingerprintContribution, ProviderSectionKey, ProviderSections, ProviderSpec, ReadSection, SectionValues } from "./provider/spec.js";
export { LABELS } from "./provider/labels.js";
export type { LabelKey } from "./provider/labels.js";
export { importProviderSpec } from "./provider/import.js";
export type { ImportProviderOptions } from "./provider/import.js";

// Loading, validating and checking a spec.
export { NAME_MAX_LENGTH, NAME_PATTERN, nameProblems } from "./spec/names.js";
export type { Spec, SpecInput, EnvironmentOverrides } from "./spec/schema.js";
export { composeSpecSchemas, providersNamedIn } from "./spec/compose.js";
export type { ComposedSchemas, ProviderRegistry } from "./spec/compose.js";
export { formatPath, formatSpecIssue, specInvalidError } from "./spec/issues.js";
export type { SpecIssue } from "./spec/issues.js";
export { assertValidSpec, providersOf, validateSpec } from "./spec/validate.js";
export type { SpecValidation, ValidateOptions, ValidatedSpec } from "./spec/validate.js";
export { OBJECT_SPEC_FILE, checkSpecWith, loadSpec, parseSpec, specFromObject, specFromYaml } from "./spec/load.js";
export type { LoadSpecOptions, LoadedSpec, ParseSpecOptions } from "./spec/load.js";
export { checkSpec } from "./spec/check.js";
export type { CheckSpecOptions } from "./spec/check.js";
export { resolveTarget } from "./spec/resolve.js";
export type { ResolvedTarget } from "./spec/resolve.js";
