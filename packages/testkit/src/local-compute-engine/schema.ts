import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import type * as Protobuf from "protobufjs";
import { ComputeApiError } from "./errors.js";

/** The proto package of Compute Engine v1 inside `@google-cloud/compute`'s `build/protos/protos.json`. */
const COMPUTE_PACKAGE = "google.cloud.compute.v1";

/** One REST method of Compute Engine v1, as its `google.api.http` annotation publishes it. */
export interface ComputeMethod {
  /** `Service.Method`, e.g. `Instances.Insert`: the name fault rules and call counts use. */
  readonly name: string;
  readonly httpMethod: "GET" | "POST" | "PUT" | "PATCH" | "DELETE";
  /** The path template, e.g. `/compute/v1/projects/{project}/zones/{zone}/instances/{instance}`. */
  readonly pathTemplate: string;
  /** The request message's field that the body binds to (e.g. `instanceResource`), when there is a body. */
  readonly bodyField?: string;
  /** The request message (path parameters, query parameters and the body field). */
  readonly requestType: Protobuf.Type;
  /** The response message. */
  readonly responseType: Protobuf.Type;
  readonly pathParameters: readonly string[];
  readonly pattern: RegExp;
}

/** A problem found in a request or response body: where (`resource.disks[0].type`) and what. */
export interface SchemaProblem {
  readonly path: string;
  readonly kind: "unknownField" | "badValue";
  readonly message: string;
}

/**
 * The Compute v1 message definitions that ship inside `@google-cloud/compute` (pinned exactly in
 * testkit's package.json), loaded with protobufjs: the routes come from the methods' HTTP
 * annotations and bodies are checked against the messages, so the fake is held to the published API.
 */
export interface ComputeSchema {
  /** The methods of the given services (e.g. `["Instances", "Images"]`) that the fake implements. */
  readonly methods: readonly ComputeMethod[];
  /** Finds the method of a request, with its path parameters. */
  match(httpMethod: string, path: string): { method: ComputeMethod; parameters: Record<string, string> } | undefined;
  /** Looks up a message of the Compute v1 package by its short name (`Instance`). */
  type(name: string): Protobuf.Type;
  /** Every problem of a JSON value against a message: unknown fields, values of the wrong type, enum values not defined. */
  check(type: Protobuf.Type, value: unknown, path: string): SchemaProblem[];
}

const require = createRequire(import.meta.url);
let loaded: { root: Protobuf.Root; protobuf: typeof Protobuf } | undefined;

/** Loads protos.json once per process (about 0.7 s, 12 MB of JSON); later calls reuse it. */
function loadRoot(): { root: Protobuf.Root; protobuf: typeof Protobuf } {
  if (loaded) return loaded;
  const protobuf = require("protobufjs") as typeof Protobuf;
  const file = require.resolve("@google-cloud/compute/build/protos/protos.json");
  const root = protobuf.Root.fromJSON(JSON.parse(readFileSync(file, "utf8")) as Protobuf.INamespace);
  loaded = { root, protobuf };
  return loaded;
}

const HTTP_VERBS = ["get", "post", "put", "patch", "delete"] as const;

function compilePath(template: string): { pattern: RegExp; parameters: string[] } {
  const parameters: string[] = [];
  const source = template
    .split("/")
    .map((segment) => {
      const variable = /^\{([A-Za-z_]+)\}$/.exec(segment);
      if (variable) {
        parameters.push(snakeToCamel(variable[1]!));
        return "([^/]+)";
      }
      return segment.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
    })
    .join("/");
  return { pattern: new RegExp(`^${source}$`), parameters };
}

/**
 * Builds the schema for the given services of Compute v1.
 * @param services - service names as protos.json spells them (`Instances`, `ZoneOperations`, …)
 * @throws Error when a service or an HTTP annotation is missing (the pinned package changed shape)
 */
export function loadComputeSchema(services: readonly string[]): ComputeSchema {
  const { root, protobuf } = loadRoot();
  const lookup = (name: string) => root.lookupType(`${COMPUTE_PACKAGE}.${name}`);
  const methods: ComputeMethod[] = [];
  for (const serviceName of services) {
    const service = root.lookupService(`${COMPUTE_PACKAGE}.${serviceName}`);
    for (const method of service.methodsArray) {
      const options = method.options ?? {};
      const verb = HTTP_VERBS.find((candidate) => typeof options[`(google.api.http).${candidate}`] === "string");
      if (!verb) continue;
      const pathTemplate = options[`(google.api.http).${verb}`] as string;
      const body = options["(google.api.http).body"] as string | undefined;
      const { pattern, parameters } = compilePath(pathTemplate);
      methods.push({
        name: `${serviceName}.${method.name}`,
        httpMethod: verb.toUpperCase() as ComputeMethod["httpMethod"],
        pathTemplate,
        ...(body ? { bodyField: snakeToCamel(body) } : {}),
        requestType: lookup(method.requestType),
        responseType: lookup(method.responseType),
        pathParameters: parameters,
        pattern,
      });
    }
  }
  return {
    methods,
    match(httpMethod, path) {
      for (const method of methods) {
        if (method.httpMethod !== httpMethod) continue;
        const found = method.pattern.exec(path);
        if (!found) continue;
        const parameters: Record<string, string> = {};
        method.pathParameters.forEach((name, index) => (parameters[name] = decodeURIComponent(found[index + 1]!)));
        return { method, parameters };
      }
      return undefined;
    },
    type: lookup,
    check: (type, value, path) => checkMessage(protobuf, type, value, path),
  };
}

/** `instance_resource` → `instanceResource`: protos.json keeps field names in their JSON (lowerCamel) form. */
export function snakeToCamel(name: string): string {
  return name.replace(/_([a-z0-9])/g, (_, letter: string) => letter.toUpperCase());
}

/** `onHostMaintenance` → `OnHostMaintenance`: Compute's string fields name their enum this way. */
function pascal(name: string): string {
  return name.charAt(0).toUpperCase() + name.slice(1);
}

const INTEGER_TYPES = new Set(["int32", "uint32", "sint32", "fixed32", "sfixed32"]);
const LONG_TYPES = new Set(["int64", "uint64", "sint64", "fixed64", "sfixed64"]);

function describe(value: unknown): string {
  return typeof value === "string" ? `'${value}'` : JSON.stringify(value);
}

/**
 * Checks a JSON value against a message. Compute v1 declares most enumerations as `string` fields
 * whose values are listed by a nested enum of the same message named after the field
 * (`AttachedDisk.type` ↔ `AttachedDisk.Type`; compute.proto comments say "Check the Type enum for
 * the list of possible values"); such a string must be one of those names, as the real API demands.
 */
function checkMessage(protobuf: typeof Protobuf, type: Protobuf.Type, value: unknown, path: string): SchemaProblem[] {
  const problems: SchemaProblem[] = [];
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    problems.push({ path, kind: "badValue", message: `Invalid value at '${path}' (type.googleapis.com/${type.fullName.slice(1)}), ${describe(value)}` });
    return problems;
  }
  for (const [key, fieldValue] of Object.entries(value)) {
    const field = type.fields[key] ?? type.fields[snakeToCamel(key)];
    const fieldPath = path ? `${path}.${key}` : key;
    if (!field) {
      problems.push({ path: fieldPath, kind: "unknownField", message: `Invalid JSON payload received. Unknown name "${key}" at '${path}': Cannot find field.` });
      continue;
    }
    if (fieldValue === null) continue;
    const siblingEnum = field.type === "string" ? type.nested?.[pascal(field.name)] : undefined;
    const checkOne = (item: unknown, itemPath: string) => checkValue(protobuf, type, field, siblingEnum, item, itemPath, problems);
    if (field instanceof protobuf.MapField) {
      if (typeof fieldValue !== "object" || Array.isArray(fieldValue)) {
        problems.push({ path: fieldPath, kind: "badValue", message: `Invalid value at '${fieldPath}', ${describe(fieldValue)}: a map is an object` });
        continue;
      }
      for (const [mapKey, mapValue] of Object.entries(fieldValue as Record<string, unknown>)) checkOne(mapValue, `${fieldPath}[${JSON.stringify(mapKey)}]`);
    } else if (field.repeated) {
      if (!Array.isArray(fieldValue)) {
        problems.push({ path: fieldPath, kind: "badValue", message: `Invalid value at '${fieldPath}', ${describe(fieldValue)}: a repeated field is a list` });
        continue;
      }
      fieldValue.forEach((item, index) => checkOne(item, `${fieldPath}[${index}]`));
    } else {
      checkOne(fieldValue, fieldPath);
    }
  }
  return problems;
}

function checkValue(
  protobuf: typeof Protobuf,
  owner: Protobuf.Type,
  field: Protobuf.Field,
  siblingEnum: Protobuf.ReflectionObject | undefined,
  value: unknown,
  path: string,
  problems: SchemaProblem[],
): void {
  const bad = (message: string): void => void problems.push({ path, kind: "badValue", message });
  const fieldType = field.type;
  if (fieldType === "string") {
    if (typeof value !== "string") return bad(`Invalid value at '${path}' (TYPE_STRING), ${describe(value)}`);
    if (siblingEnum instanceof protobuf.Enum) {
      const allowed = Object.keys(siblingEnum.values).filter((name) => !name.startsWith("UNDEFINED_"));
      if (!allowed.includes(value)) bad(`Invalid value for field '${path}': ${describe(value)}. Value must be one of [ ${allowed.join(", ")} ]`);
    }
    return;
  }
  if (fieldType === "bool") {
    if (typeof value !== "boolean") bad(`Invalid value at '${path}' (TYPE_BOOL), ${describe(value)}`);
    return;
  }
  if (INTEGER_TYPES.has(fieldType) || LONG_TYPES.has(fieldType) || fieldType === "double" || fieldType === "float") {
    // proto3 JSON: numbers, or decimal strings (the only form of 64-bit integers that keeps precision).
    const numeric = typeof value === "number" ? value : typeof value === "string" && /^-?\d+(\.\d+)?$/.test(value) ? Number(value) : Number.NaN;
    const integral = fieldType !== "double" && fieldType !== "float";
    if (Number.isNaN(numeric) || (integral && !Number.isInteger(numeric)) || (fieldType.startsWith("u") && numeric < 0)) {
      bad(`Invalid value at '${path}' (TYPE_${fieldType.toUpperCase()}), ${describe(value)}`);
    }
    return;
  }
  if (fieldType === "bytes") {
    if (typeof value !== "string" || !/^[A-Za-z0-9+/_-]*={0,2}$/.test(value)) bad(`Invalid value at '${path}' (TYPE_BYTES), ${describe(value)}`);
    return;
  }
  field.resolve();
  const resolved = field.resolvedType ?? owner.lookup(fieldType);
  if (resolved instanceof protobuf.Enum) {
    const known = typeof value === "string" ? value in resolved.values : typeof value === "number" && Object.values(resolved.values).includes(value);
    if (!known) bad(`Invalid value at '${path}' (type.googleapis.com/${resolved.fullName.slice(1)}), ${describe(value)}`);
    return;
  }
  if (resolved instanceof protobuf.Type) {
    problems.push(...checkMessage(protobuf, resolved, value, path));
    return;
  }
  bad(`Invalid value at '${path}': field type ${fieldType} is not known`);
}

/**
 * Turns the problems of a request body into the error the real API answers with: an unknown field
 * is refused by Google's front end (`Invalid JSON payload received. Unknown name …`, status
 * INVALID_ARGUMENT, a `google.rpc.BadRequest` detail naming the field); a value out of an enum is
 * refused by Compute itself (`Invalid value for field 'resource.…'`, reason `invalid`).
 */
export function schemaProblemsError(problems: readonly SchemaProblem[]): ComputeApiError {
  const first = problems[0]!;
  if (first.kind === "unknownField") {
    return new ComputeApiError(400, "invalid", first.message, {
      status: "INVALID_ARGUMENT",
      details: [
        {
          "@type": "type.googleapis.com/google.rpc.BadRequest",
          fieldViolations: problems.map((problem) => ({ field: problem.path, description: problem.message })),
        },
      ],
    });
  }
  return new ComputeApiError(400, "invalid", first.message);
}
