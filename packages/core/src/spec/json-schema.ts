import { z } from "zod";
import type { ProviderSpec } from "../provider/spec.js";
import { composeSpecSchemas } from "./compose.js";

/**
 * The `$id` of the spec's JSON Schema: where the published file can be fetched. The same file ships
 * in the package as `@kilnjs/core/schema.json` (`schema/kiln.schema.json`).
 */
export const SPEC_SCHEMA_ID = "https://unpkg.com/@kilnjs/core/schema/kiln.schema.json";

/** A JSON Schema node, as far as this module reads and writes it. */
type JsonSchemaNode = Record<string, unknown>;

/** `format` values zod writes for its own string checks; they are not JSON Schema formats and the `pattern` beside them says the same. */
const ZOD_ONLY_FORMATS = new Set(["starts_with", "ends_with", "includes"]);

/**
 * The JSON Schema (draft 2020-12) of `kiln.yaml`, generated from the zod schema, for editors
 * (`# yaml-language-server: $schema=...`) and other tools. It describes the spec as written (input
 * types, with defaults and descriptions), and differs from a plain `z.toJSONSchema` in three ways:
 *
 * - every mapping that rejects unknown keys also accepts keys matching `^x-` (extension keys, which
 *   Kiln ignores), and so does the `environments` map;
 * - keys of an environment's overrides have no `default`: an absent key inherits the top-level value;
 * - zod's own `format` names (`starts_with`) are dropped; the `pattern` beside them remains.
 *
 * Provider sections are part of it for the providers given (`instances.<name>`, …): the committed
 * copy, `packages/core/schema/kiln.schema.json`, is made by `scripts/generate-spec-docs.ts` with
 * the first-party providers' specs (core itself imports no provider). Returns a fresh object each call.
 *
 * @param options.providers - provider specs by name, whose sections the schema describes
 *
 * @example
 * ```ts
 * import Ajv from "ajv/dist/2020.js";
 * const validate = new Ajv({ strict: false }).compile(specJsonSchema());
 * ```
 */
export function specJsonSchema(options: { readonly providers?: Readonly<Record<string, ProviderSpec>> } = {}): Record<string, unknown> {
  const { spec } = composeSpecSchemas(new Map(Object.entries(options.providers ?? {})));
  const generated = z.toJSONSchema(spec, {
    io: "input",
    target: "draft-2020-12",
    override(ctx) {
      // `.partial()` wraps a defaulted key in `optional`: in an environment, absent means "inherit".
      const def = ctx.zodSchema._zod.def;
      if (def.type === "optional") {
        const inner = (def.innerType as z.core.$ZodTypes)._zod.def.type;
        if (inner === "default" || inner === "prefault") delete ctx.jsonSchema.default;
      }
    },
  }) as JsonSchemaNode;
  const { $schema, ...rest } = generated;
  return { $schema, $id: SPEC_SCHEMA_ID, title: "kiln.yaml", ...(postProcess(rest) as JsonSchemaNode) };
}

function postProcess(node: unknown): unknown {
  if (Array.isArray(node)) return node.map(postProcess);
  if (!isObject(node)) return node;
  const out: JsonSchemaNode = {};
  for (const [key, value] of Object.entries(node)) {
    if (key === "format" && typeof value === "string" && ZOD_ONLY_FORMATS.has(value)) continue;
    // Under `properties` the keys are spec keys (one may be named `$schema`), not keywords.
    out[key] = key === "properties" && isObject(value) ? mapValues(value, postProcess) : postProcess(value);
  }
  if (node.type === "object" && allowsExtensionKeys(node)) {
    out.patternProperties = { ...(isObject(out.patternProperties) ? out.patternProperties : {}), "^x-": {} };
  }
  return out;
}

/**
 * Strict mappings (`additionalProperties: false`) and maps of sections (`environments`, whose values
 * are mappings) take `x-` keys; free-form maps of strings (`env`, `labels`, `args`) hold them as data.
 */
function allowsExtensionKeys(node: JsonSchemaNode): boolean {
  const additional = node.additionalProperties;
  return additional === false || (isObject(additional) && additional.type === "object");
}

function mapValues(record: JsonSchemaNode, fn: (value: unknown) => unknown): JsonSchemaNode {
  return Object.fromEntries(Object.entries(record).map(([key, value]) => [key, fn(value)]));
}

function isObject(value: unknown): value is JsonSchemaNode {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** A complete `kiln.yaml` that uses every section, an anchor and environments; shown in the reference docs and tested to be valid. */
export const EXAMPLE_SPEC_YAML = `# yaml-language-server: $schema=./node_modules/@kilnjs/core/schema/kiln.schema.json
service: hello-web
provider: docker

# x- keys are ignored by Kiln: a place to keep anchors.
x-common-env: &common-env
  LOG_FORMAT: json
  TZ: UTC

image:
  dockerfile:
    context: .
    file: Dockerfile
    args:
      NODE_ENV: production
    target: runtime

instances:
  count: 3
  ports:
    - name: http
      port: 8080
  env:
    <<: *common-env          # merge the anchored map, then add to it
    LOG_LEVEL: info
  labels:
    team: web
  command: ["node", "dist/server.js"]
  resources:
    memory: 256Mi
    cpus: 0.5
  stopGracePeriodMs: 10000   # 10 s

health:
  http:
    port: http               # a name from instances.ports, or a number
    path: /healthz
    expectStatus: [200, 299]
  intervalMs: 2000
  timeoutMs: 1000
  healthyThreshold: 3
  unhealthyThreshold: 3
  startPeriodMs: 10000

rollout:
  strategy: rolling
  maxSurge: 1
  maxUnavailable: 0

environments:
  staging:
    instances:
      count: 1
      env:
        LOG_LEVEL: debug     # objects merge: LOG_FORMAT and TZ stay
  prod:
    instances:
      count: 6
      resources: { memory: 512Mi }
      command: ["node", "--enable-source-maps", "dist/server.js"]   # arrays replace
    rollout: { maxSurge: 2 }
`;

/**
 * Renders the `kiln.yaml` reference (Markdown) from a JSON Schema made by {@link specJsonSchema}:
 * an introduction, the complete example, and one table per section (key, type, default,
 * description). The committed copy is `docs/reference/kiln-yaml.md`, made by
 * `scripts/generate-spec-docs.ts`; a provider's own docs can render its sections the same way.
 */
export function renderSpecReference(schema: Record<string, unknown>): string {
  const sections: string[] = [];
  renderSection(schema, [], { root: schema, out: sections });
  return [
    "<!-- Generated by scripts/generate-spec-docs.ts from packages/core/src/spec/schema.ts. Do not edit by hand: -->",
    "<!-- change the schema, then run `node --import tsx scripts/generate-spec-docs.ts`. -->",
    "",
    "# `kiln.yaml` reference",
    "",
    "A service is described by one spec file, `kiln.yaml`. The CLI reads `kiln.yaml` in the working directory, or",
    "the file that `--config <path>` names; the library reads a file with `loadSpec(path)` or takes the same shape",
    "as an object with `specFromObject(spec, baseDir)`. Relative paths in the spec (the build context, the",
    "Dockerfile) are resolved against the folder of the spec file.",
    "",
    "- **Validation.** Every problem is reported at once, each with its `file:line:column` and key path: types,",
    "  values and references (a health check's port name) alike. Keys are strict: an unknown key is an error,",
    "  with a suggestion when it looks like a typo",
    '  (`kiln.yaml:4:3: instances.cuont: unknown key "cuont" (did you mean "count"?)`), and so is a value',
    '  outside a fixed set (`rollout.strategy: must be one of "rolling", "blue-green", "canary", not "rollin"',
    '  (a string) (did you mean "rolling"?)`). Warnings (an `env` key that looks like a secret) are printed, not refused.',
    "- **Free-form maps.** In `env`, `labels` and `args` a number or `true`/`false` is taken as its text",
    '  (`PORT: 8080` is `"8080"`); quote a value to keep it exactly as written (`VERSION: "1.10"`).',
    "- **Editor support.** The JSON Schema ships in the package as `@kilnjs/core/schema.json`, the file",
    "  `node_modules/@kilnjs/core/schema/kiln.schema.json`, and is published at",
    `  <${SPEC_SCHEMA_ID}>. Point your editor at it with a first line`,
    "  `# yaml-language-server: $schema=<path or URL>`, or a top-level `$schema` key.",
    "- **YAML 1.2.** `yes`, `no`, `on` and `off` are strings, not booleans. Indent with spaces: tabs are an error.",
    "  A key may appear once per mapping.",
    "- **`x-` keys.** A key that starts with `x-` is an extension key: Kiln ignores it at every level, except",
    "  inside the free-form maps `env`, `labels` and `args`, whose keys are data. Use extension keys to hold",
    "  YAML anchors (`x-defaults: &defaults {...}`) and settings of other tools.",
    "- **Anchors, aliases and merge keys.** `&name` marks a value, `*name` repeats it, and `<<: *name` inside a",
    "  mapping merges the anchored mapping's keys in (keys written beside `<<` win).",
    "- **Environments.** `environments.<name>` holds overrides merged over the top-level settings: mappings",
    "  merge key by key, lists (`ports`, `command`, `expectStatus`) and single values replace. The result must",
    "  be a valid spec on its own; a target `service@name` deploys it. Without an environment the top-level",
    "  settings are used (the `default` environment).",
    "- **Units.** Every duration is an integer number of milliseconds, and its key ends in `Ms`",
    "  (`intervalMs: 2000` is two seconds). Memory is a number of bytes or text with a unit: binary `Ki`,",
    "  `Mi`, `Gi` (powers of 1024, as in Kubernetes: `256Mi`) or decimal `k`, `M`, `G` (powers of 1000: `512M`);",
    "  units are case-insensitive, and a `B` or `iB` suffix is accepted (`1GiB`).",
    "",
    "## Complete example",
    "",
    "```yaml",
    EXAMPLE_SPEC_YAML.trimEnd(),
    "```",
    "",
    ...sections,
  ].join("\n");
}

type KeyPath = readonly string[];

/** What every section shares while rendering: the whole schema (environment overrides link to its sections) and the output. */
interface RenderContext {
  readonly root: JsonSchemaNode;
  readonly out: string[];
}

function renderSection(node: JsonSchemaNode, keyPath: KeyPath, ctx: RenderContext, options: { overrides?: boolean; namePattern?: unknown } = {}): void {
  const properties = isObject(node.properties) ? node.properties : {};
  const required = new Set(Array.isArray(node.required) ? node.required.map(String) : []);
  const title = keyPath.length === 0 ? "Top level" : `\`${keyPath.join(".")}\``;
  const lines = [`<a id="${anchor(keyPath)}"></a>`, "", `## ${title}`, ""];
  const description = typeof node.description === "string" ? node.description : undefined;
  if (description) lines.push(description, "");
  if (keyPath.at(-1) === "<name>" && typeof options.namePattern === "string") {
    lines.push(`\`<name>\` matches ${code(options.namePattern)}.`, "");
  }
  if (options.overrides) {
    lines.push(
      "Every key is optional and means the same as at the top level; an absent key inherits the top-level",
      "value. Mappings merge key by key, lists and single values replace.",
      "",
    );
  }
  lines.push("| key | type | default | description |", "| --- | --- | --- | --- |");
  const nested: (() => void)[] = [];
  for (const [key, raw] of Object.entries(properties)) {
    if (!isObject(raw)) continue;
    const childPath = [...keyPath, key];
    const topLevel = options.overrides && isObject(ctx.root.properties) ? ctx.root.properties[key] : undefined;
    let type = typeText(raw);
    let text = typeof raw.description === "string" ? raw.description : "";
    if (isSection(raw)) {
      if (options.overrides && isObject(topLevel)) {
        type = "mapping";
        text = text || `Overrides of [\`${key}\`](#${anchor([key])}).`;
      } else {
        type = `mapping, see [below](#${anchor(childPath)})`;
        nested.push(() => renderSection(raw, childPath, ctx));
      }
    } else if (isObject(raw.items) && isSection(raw.items)) {
      const items = raw.items;
      const itemPath = [...keyPath, `${key}[]`];
      type = `list of mappings${typeof raw.minItems === "number" && raw.minItems > 0 ? `, at least ${raw.minItems}` : ""}, see [below](#${anchor(itemPath)})`;
      nested.push(() => renderSection(items, itemPath, ctx));
    } else if (isObject(raw.additionalProperties) && isSection(raw.additionalProperties)) {
      const values = raw.additionalProperties;
      const valuePath = [...keyPath, key, "<name>"];
      type = `map of name to mapping, see [below](#${anchor(valuePath)})`;
      const namePattern = isObject(raw.propertyNames) ? raw.propertyNames.pattern : undefined;
      nested.push(() => renderSection(values, valuePath, ctx, { overrides: true, namePattern }));
    }
    const defaultText = required.has(key) ? "**required**" : "default" in raw ? code(JSON.stringify(raw.default)) : "";
    lines.push(`| ${code(childPath.join("."))} | ${cell(type)} | ${defaultText} | ${cell(text)} |`);
  }
  lines.push("");
  ctx.out.push(...lines);
  for (const render of nested) render();
}

function isSection(node: JsonSchemaNode): boolean {
  return node.type === "object" && isObject(node.properties);
}

function typeText(node: JsonSchemaNode): string {
  if (node.const !== undefined) return code(JSON.stringify(node.const));
  if (Array.isArray(node.enum)) return `one of ${node.enum.map((value) => code(JSON.stringify(value))).join(", ")}`;
  if (Array.isArray(node.anyOf)) return node.anyOf.filter(isObject).map(typeText).join(", or ");
  switch (node.type) {
    case "string":
      if (typeof node.pattern === "string") return `string matching ${code(node.pattern)}`;
      return node.minLength === 1 ? "non-empty string" : "string";
    case "integer":
    case "number":
      return [node.type, rangeText(node)].filter(Boolean).join(" ");
    case "array": {
      if (Array.isArray(node.prefixItems)) return `list \`[${node.prefixItems.filter(isObject).map((item) => stripCode(typeText(item))).join(", ")}]\``;
      const items = isObject(node.items) ? typeText(node.items).replace(/^string$/, "strings") : "values";
      return `list of ${items}${typeof node.minItems === "number" && node.minItems > 0 ? `, at least ${node.minItems}` : ""}`;
    }
    case "object": {
      if (isObject(node.additionalProperties)) {
        const names = isObject(node.propertyNames) && typeof node.propertyNames.pattern === "string" ? ` (names matching ${code(node.propertyNames.pattern)})` : "";
        return `map of name to ${typeText(node.additionalProperties)}${names}`;
      }
      return "mapping";
    }
    default:
      return typeof node.type === "string" ? node.type : "any";
  }
}

/** `1–1000`, `≥ 0`, `> 0, ≤ 512`. */
function rangeText(node: JsonSchemaNode): string {
  // zod writes the safe-integer limit on every `.int()`; it is no real limit of a spec value.
  const max = typeof node.maximum === "number" && node.maximum < Number.MAX_SAFE_INTEGER ? node.maximum : undefined;
  if (typeof node.minimum === "number" && max !== undefined) return `${node.minimum}–${max}`;
  const parts: string[] = [];
  if (typeof node.minimum === "number") parts.push(`≥ ${node.minimum}`);
  if (typeof node.exclusiveMinimum === "number") parts.push(`> ${node.exclusiveMinimum}`);
  if (max !== undefined) parts.push(`≤ ${max}`);
  return parts.join(", ");
}

function anchor(keyPath: KeyPath): string {
  if (keyPath.length === 0) return "top-level";
  return keyPath
    .join("-")
    .replace(/\[\]/g, "-item")
    .replace(/[^A-Za-z0-9-]+/g, "")
    .toLowerCase();
}

function code(text: string): string {
  return `\`${text}\``;
}

function stripCode(text: string): string {
  return text.replace(/`/g, "");
}

/** Text safe inside a Markdown table cell: no pipes (GFM unescapes `\|` even in code spans), no line breaks. */
function cell(text: string): string {
  return text.replace(/\|/g, "\\|").replace(/\n+/g, " ");
}
