import { alreadyExists, invalidField, notFound, requiredField, resourceInUse } from "./errors.js";
import { listAnswer, pageOf } from "./listing.js";
import { type OperationWork, operationForCall } from "./operations.js";
import {
  type ApiCall,
  type ApiHandler,
  type EngineContext,
  type ImageRecord,
  checkLabels,
  checkName,
  fingerprintOf,
  getOr404,
  linkOf,
  now,
  randomId,
  resolveReference,
  snapshot,
  textOf,
  type Json,
} from "./state.js";

/** An image given when the engine starts (a public base image such as debian-cloud's). */
export interface SeedImage {
  /** The project that owns it. @defaultValue the engine's project */
  readonly project?: string;
  readonly name: string;
  readonly family?: string;
  readonly labels?: Readonly<Record<string, string>>;
  /** @defaultValue 10 */
  readonly diskSizeGb?: number;
  /** What a VM runner needs to make a VM from it (a Docker image reference in phase 2). */
  readonly artifact?: string;
}

function imageJson(project: string, name: string, fields: Json): ImageRecord["json"] {
  const labels = checkLabels(fields.labels);
  return {
    kind: "compute#image",
    id: randomId(),
    creationTimestamp: now(),
    name,
    sourceType: "RAW",
    status: "READY",
    archiveSizeBytes: "1073741824",
    diskSizeGb: "10",
    selfLink: linkOf(`projects/${project}/global/images/${name}`),
    storageLocations: ["us"],
    architecture: "X86_64",
    ...fields,
    labels,
    labelFingerprint: fingerprintOf(labels),
  };
}

/** Adds a ready image (at start-up: the base images users' specs name). */
export function seedImage(engine: EngineContext, defaultProject: string, seed: SeedImage): void {
  const project = seed.project ?? defaultProject;
  checkName("image.name", seed.name);
  const path = `projects/${project}/global/images/${seed.name}`;
  engine.state.images.set(path, {
    path,
    project,
    json: imageJson(project, seed.name, { ...(seed.family ? { family: seed.family } : {}), labels: seed.labels ?? {}, diskSizeGb: String(seed.diskSizeGb ?? 10) }),
    ...(seed.artifact ? { artifact: seed.artifact } : {}),
    sequence: engine.state.imageSequence++,
  });
}

function deprecationState(image: ImageRecord): string {
  return textOf((image.json.deprecated as Json | undefined)?.state, "ACTIVE");
}

/** The newest READY image of a family that is not DEPRECATED, OBSOLETE or DELETED. */
function newestOfFamily(engine: EngineContext, project: string, family: string): ImageRecord | undefined {
  return [...engine.state.images.values()]
    .filter((image) => image.project === project && image.json.family === family && image.json.status === "READY" && deprecationState(image) === "ACTIVE")
    .sort((a, b) => String(b.json.creationTimestamp).localeCompare(String(a.json.creationTimestamp)) || b.sequence - a.sequence)[0];
}

/**
 * Resolves an instance's `sourceImage` (`global/images/x`, `projects/p/global/images/family/f`,
 * a full URL). An OBSOLETE or DELETED image is refused for new disks (API reference of `deprecate`).
 * @throws ComputeApiError 404 `notFound`, 400 `invalid`
 */
export function resolveSourceImage(engine: EngineContext, project: string, reference: string): ImageRecord {
  const path = resolveReference(reference, project);
  const family = /^projects\/([^/]+)\/global\/images\/family\/([^/]+)$/.exec(path);
  const image = family ? newestOfFamily(engine, family[1]!, family[2]!) : engine.state.images.get(path);
  if (!image || image.json.status !== "READY") throw notFound(path);
  const state = deprecationState(image);
  if (state === "OBSOLETE" || state === "DELETED") throw invalidField("resource.disks[0].initializeParams.sourceImage", reference, `The image is ${state}`);
  return image;
}

function imageOf(call: ApiCall): ImageRecord {
  const { project, image } = call.parameters as { project: string; image: string };
  return getOr404(call.engine.state.images, `projects/${project}/global/images/${image}`);
}

function globalOperation(call: ApiCall, operationType: string, targetPath: string, targetId: string, work: OperationWork): Json {
  return operationForCall(call, { project: call.parameters.project! }, operationType, { path: targetPath, id: targetId }, work);
}

/**
 * `images.insert` from `sourceDisk`: the disk's instance must be stopped (TERMINATED) or the disk
 * detached, unless `forceCreate`; else 400 `resourceInUseByAnotherResource`. PENDING until the
 * operation is DONE, then READY.
 */
const insert: ApiHandler = (call) => {
  const { project } = call.parameters as { project: string };
  const { engine, body } = call;
  checkName("resource.name", body.name);
  const path = `projects/${project}/global/images/${body.name}`;
  if (engine.state.images.has(path)) throw alreadyExists(path);
  if (typeof body.sourceDisk !== "string") {
    if (body.sourceImage || body.rawDisk || body.sourceSnapshot) throw invalidField("resource.sourceDisk", "", "The local Compute Engine makes images from disks only (sourceDisk)");
    throw requiredField("resource.sourceDisk");
  }
  if (body.family !== undefined) checkName("resource.family", body.family);
  const diskPath = resolveReference(body.sourceDisk, project);
  const disk = getOr404(engine.state.disks, diskPath);
  const forceCreate = call.query.forceCreate === "true";
  for (const user of disk.json.users ?? []) {
    const instance = engine.state.instances.get(resolveReference(user, project));
    if (instance && instance.json.status !== "TERMINATED" && !forceCreate) throw resourceInUse("disk", diskPath, instance.path);
  }
  const record: ImageRecord = {
    path,
    project,
    json: imageJson(project, body.name, {
      ...(body.description !== undefined ? { description: body.description } : {}),
      ...(body.family !== undefined ? { family: body.family } : {}),
      labels: body.labels ?? {},
      status: "PENDING",
      diskSizeGb: textOf(disk.json.sizeGb, "10"),
      sourceDisk: linkOf(diskPath),
      sourceDiskId: disk.json.id,
    }),
    sequence: engine.state.imageSequence++,
  };
  return globalOperation(call, "insert", path, String(record.json.id), {
    begin: () => {
      if (engine.state.images.has(path)) throw alreadyExists(path);
      engine.state.images.set(path, record);
    },
    rollback: () => void engine.state.images.delete(path),
    finish: async () => {
      const artifact = await engine.runner.captureImage?.({ zone: disk.zone, name: diskPath.split("/").pop()!, ...(disk.lastAttachedInstance ? { lastAttachedInstance: disk.lastAttachedInstance } : {}) }, { name: body.name as string }, new AbortController().signal);
      if (artifact) record.artifact = artifact;
      record.json.status = "READY";
    },
  });
};

const getFromFamily: ApiHandler = (call) => {
  const { project, family } = call.parameters as { project: string; family: string };
  const image = newestOfFamily(call.engine, project, family);
  if (!image) throw notFound(`projects/${project}/global/images/family/${family}`);
  return snapshot(image.json);
};

const list: ApiHandler = (call) => {
  const { project } = call.parameters as { project: string };
  const type = call.engine.schema.type("Image");
  const all = [...call.engine.state.images.values()].filter((image) => image.project === project).sort((a, b) => a.sequence - b.sequence).map((image) => image.json);
  const page = pageOf(all, call.query, (name) => name in type.fields);
  return listAnswer("compute#imageList", `projects/${project}/global/images`, page);
};

const remove: ApiHandler = (call) => {
  const image = imageOf(call);
  return globalOperation(call, "delete", image.path, String(image.json.id), { finish: () => void call.engine.state.images.delete(image.path) });
};

/** `images.deprecate`: `state` ACTIVE clears the deprecation; DEPRECATED leaves the image out of its family. */
const deprecate: ApiHandler = (call) => {
  const image = imageOf(call);
  const status = call.body;
  return globalOperation(call, "deprecate", image.path, String(image.json.id), {
    finish: () => {
      if (status.state === undefined || status.state === "ACTIVE") delete image.json.deprecated;
      else image.json.deprecated = { ...status, ...(typeof status.replacement === "string" ? { replacement: linkOf(resolveReference(status.replacement, image.project)) } : {}) };
    },
  });
};

/** The image methods, by `Service.Method`. */
export const IMAGE_HANDLERS: Readonly<Record<string, ApiHandler>> = {
  "Images.Insert": insert,
  "Images.Get": (call) => snapshot(imageOf(call).json),
  "Images.GetFromFamily": getFromFamily,
  "Images.List": list,
  "Images.Delete": remove,
  "Images.Deprecate": deprecate,
};
