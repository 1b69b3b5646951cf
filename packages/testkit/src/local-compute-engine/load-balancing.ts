import { ComputeApiError, alreadyExists, conditionNotMet, invalidField } from "./errors.js";
import { listAnswer, pageOf } from "./listing.js";
import { operationForCall, waitForOperation } from "./operations.js";
import {
  type ApiCall,
  type ApiHandler,
  type BackendServiceRecord,
  type EngineContext,
  type HealthState,
  type InstanceGroupRecord,
  checkName,
  checkZone,
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
import { networkIPOf } from "./instances.js";

const operation = operationForCall;

function groupOf(call: ApiCall): InstanceGroupRecord {
  const { project, zone, instanceGroup } = call.parameters as { project: string; zone: string; instanceGroup: string };
  checkZone(call.engine, project, zone);
  return getOr404(call.engine.state.instanceGroups, `projects/${project}/zones/${zone}/instanceGroups/${instanceGroup}`);
}

function refreshSize(group: InstanceGroupRecord): void {
  group.json.size = group.members.size;
  group.json.fingerprint = fingerprintOf([...group.members.keys()]);
}

const insertGroup: ApiHandler = (call) => {
  const { project, zone } = call.parameters as { project: string; zone: string };
  checkZone(call.engine, project, zone);
  checkName("resource.name", call.body.name);
  const path = `projects/${project}/zones/${zone}/instanceGroups/${call.body.name}`;
  if (call.engine.state.instanceGroups.has(path)) throw alreadyExists(path);
  const record: InstanceGroupRecord = {
    path,
    zone,
    members: new Map(),
    json: {
      kind: "compute#instanceGroup",
      id: randomId(),
      creationTimestamp: now(),
      name: call.body.name,
      ...(call.body.description !== undefined ? { description: call.body.description } : {}),
      namedPorts: call.body.namedPorts ?? [],
      network: linkOf(resolveReference(textOf(call.body.network, "global/networks/default"), project)),
      zone: linkOf(`projects/${project}/zones/${zone}`),
      selfLink: linkOf(path),
      size: 0,
      fingerprint: fingerprintOf([]),
    },
  };
  return operation(call, { project, zone }, "compute.instanceGroups.insert", { path, id: String(record.json.id) }, { begin: () => void call.engine.state.instanceGroups.set(path, record) });
};

function memberPaths(call: ApiCall, group: InstanceGroupRecord): string[] {
  const project = call.parameters.project!;
  return ((call.body.instances as { instance?: string }[] | undefined) ?? []).map((reference, index) => {
    if (!reference.instance) throw invalidField(`resource.instances[${index}].instance`, "", "An instance URL is required");
    const path = resolveReference(reference.instance, project);
    if (!path.startsWith(`projects/${project}/zones/${group.zone}/instances/`)) throw invalidField(`resource.instances[${index}].instance`, reference.instance, `The instance must be in the group's zone, ${group.zone}`);
    getOr404(call.engine.state.instances, path);
    return path;
  });
}

/** `instanceGroups.addInstances`: 400 `memberAlreadyExists` for an instance already in the group. */
const addInstances: ApiHandler = (call) => {
  const group = groupOf(call);
  const paths = memberPaths(call, group);
  for (const path of paths) {
    if (group.members.has(path)) throw new ComputeApiError(400, "memberAlreadyExists", `The resource '${path}' is already a member of '${group.path}'`);
  }
  return operation(call, { project: call.parameters.project!, zone: group.zone }, "compute.instanceGroups.addInstances", { path: group.path, id: String(group.json.id) }, {
    begin: () => {
      for (const path of paths) group.members.set(path, { draining: false });
      refreshSize(group);
    },
  });
};

/** The longest `connectionDraining.drainingTimeoutSec` of the backend services that serve a group. */
function drainingSeconds(engine: EngineContext, group: InstanceGroupRecord): number {
  let longest = 0;
  for (const service of engine.state.backendServices.values()) {
    const backends = (service.json.backends as { group?: string }[] | undefined) ?? [];
    if (!backends.some((backend) => backend.group && resolveReference(backend.group, "") === group.path)) continue;
    longest = Math.max(longest, Number((service.json.connectionDraining as Json | undefined)?.drainingTimeoutSec ?? 0));
  }
  return longest;
}

/**
 * `instanceGroups.removeInstances`: with a backend service's connection draining, the members stay
 * (draining) and the operation RUNNING for `drainingTimeoutSec` (× `timing.secondMs`), then they go.
 */
const removeInstances: ApiHandler = (call) => {
  const group = groupOf(call);
  const paths = memberPaths(call, group).filter((path) => group.members.has(path));
  const drainMs = drainingSeconds(call.engine, group) * call.engine.options.timing.secondMs;
  return operation(call, { project: call.parameters.project!, zone: group.zone }, "compute.instanceGroups.removeInstances", { path: group.path, id: String(group.json.id) }, {
    extraRunningMs: drainMs,
    begin: () => paths.forEach((path) => group.members.set(path, { draining: true })),
    rollback: () => paths.forEach((path) => group.members.has(path) && group.members.set(path, { draining: false })),
    finish: () => {
      paths.forEach((path) => group.members.delete(path));
      refreshSize(group);
    },
  });
};

const listInstances: ApiHandler = (call) => {
  const group = groupOf(call);
  const runningOnly = call.body.instanceState === "RUNNING";
  const items = [...group.members.keys()]
    .map((path) => call.engine.state.instances.get(path))
    .filter((instance) => instance !== undefined && (!runningOnly || instance.json.status === "RUNNING"))
    .map((instance) => ({ instance: linkOf(instance!.path), status: instance!.json.status, ...(group.json.namedPorts ? { namedPorts: group.json.namedPorts } : {}) }));
  const type = call.engine.schema.type("InstanceWithNamedPorts");
  const page = pageOf(items, { ...call.query, orderBy: call.query.orderBy ?? "name" }, (name) => name in type.fields);
  return listAnswer("compute#instanceGroupsListInstances", group.path, page, `${linkOf(group.path)}/listInstances`);
};

function serviceOf(call: ApiCall): BackendServiceRecord {
  const { project, backendService } = call.parameters as { project: string; backendService: string };
  return getOr404(call.engine.state.backendServices, `projects/${project}/global/backendServices/${backendService}`);
}

function withFingerprint(json: Json): BackendServiceRecord["json"] {
  const { fingerprint: _old, ...rest } = json;
  return { ...rest, fingerprint: fingerprintOf(rest) };
}

function normaliseBackends(project: string, backends: unknown): Json[] | undefined {
  if (!Array.isArray(backends)) return undefined;
  return (backends as Json[]).map((backend) => ({ balancingMode: "UTILIZATION", capacityScaler: 1, ...backend, ...(typeof backend.group === "string" ? { group: linkOf(resolveReference(backend.group, project)) } : {}) }));
}

const insertService: ApiHandler = (call) => {
  const { project } = call.parameters as { project: string };
  checkName("resource.name", call.body.name);
  const path = `projects/${project}/global/backendServices/${call.body.name}`;
  if (call.engine.state.backendServices.has(path)) throw alreadyExists(path);
  const { fingerprint: _ignored, ...body } = call.body;
  const backends = normaliseBackends(project, body.backends);
  const record: BackendServiceRecord = {
    path,
    json: withFingerprint({
      kind: "compute#backendService",
      id: randomId(),
      creationTimestamp: now(),
      protocol: "HTTP",
      port: 80,
      portName: "http",
      timeoutSec: 30,
      loadBalancingScheme: "EXTERNAL",
      sessionAffinity: "NONE",
      affinityCookieTtlSec: 0,
      connectionDraining: { drainingTimeoutSec: 0 },
      ...body,
      ...(backends ? { backends } : {}),
      selfLink: linkOf(path),
    }),
  };
  return operation(call, { project }, "insert", { path, id: String(record.json.id) }, { begin: () => void call.engine.state.backendServices.set(path, record) });
};

/**
 * `backendServices.patch` (JSON merge of the top-level fields): a `fingerprint` that is not the
 * current one is refused with 412 `conditionNotMet`, as the real API refuses a stale update.
 */
const patchService: ApiHandler = (call) => {
  const service = serviceOf(call);
  const { project } = call.parameters as { project: string };
  if (call.body.fingerprint !== undefined && call.body.fingerprint !== service.json.fingerprint) {
    throw conditionNotMet(`Supplied fingerprint does not match current fingerprint of resource '${service.path}'.`);
  }
  const { fingerprint: _given, name, ...changes } = call.body;
  if (name !== undefined && name !== service.json.name) throw invalidField("resource.name", name, "The name of a backend service cannot change");
  const backends = normaliseBackends(project, changes.backends);
  // The fingerprint changes when the request is accepted, so a second patch with the old one fails.
  service.json = withFingerprint({ ...service.json, ...changes, ...(backends ? { backends } : {}) });
  return operation(call, { project }, "patch", { path: service.path, id: String(service.json.id) }, {});
};

const deleteService: ApiHandler = (call) => {
  const service = serviceOf(call);
  return operation(call, { project: call.parameters.project! }, "delete", { path: service.path, id: String(service.json.id) }, { finish: () => void call.engine.state.backendServices.delete(service.path) });
};

/** The health of one instance: an override set through the control API, else the engine's health check. */
export async function healthOf(engine: EngineContext, path: string, port: number): Promise<HealthState> {
  const instance = engine.state.instances.get(path);
  if (!instance) return "UNHEALTHY";
  if (instance.healthOverride) return instance.healthOverride;
  return engine.options.health({ project: instance.project, zone: instance.zone, name: instance.name, status: instance.json.status, networkIP: networkIPOf(instance), labels: instance.json.labels, port });
}

/** `backendServices.getHealth` `{group}` → `{healthStatus: [{instance, ipAddress, port, healthState}]}`. */
const getHealth: ApiHandler = async (call) => {
  const service = serviceOf(call);
  const groupReference = call.body.group;
  if (typeof groupReference !== "string") throw invalidField("resourceGroupReference.group", "", "A group URL is required");
  const groupPath = resolveReference(groupReference, call.parameters.project!);
  const backends = (service.json.backends as { group?: string }[] | undefined) ?? [];
  if (!backends.some((backend) => backend.group && resolveReference(backend.group, "") === groupPath)) {
    throw invalidField("resourceGroupReference.group", groupReference, `The group is not a backend of '${service.path}'`);
  }
  const group = getOr404(call.engine.state.instanceGroups, groupPath);
  const namedPorts = (group.json.namedPorts as { name?: string; port?: number }[] | undefined) ?? [];
  const port = namedPorts.find((named) => named.name === service.json.portName)?.port ?? Number(service.json.port ?? 80);
  const members = [...group.members.keys()].filter((path) => call.engine.state.instances.has(path));
  const healthStatus = await Promise.all(
    members.map(async (path) => ({ instance: linkOf(path), ipAddress: networkIPOf(call.engine.state.instances.get(path)!), port, healthState: await healthOf(call.engine, path, port) })),
  );
  return { kind: "compute#backendServiceGroupHealth", ...(healthStatus.length > 0 ? { healthStatus } : {}) };
};

/** Instance groups and backend services, by `Service.Method`. */
export const LOAD_BALANCING_HANDLERS: Readonly<Record<string, ApiHandler>> = {
  "InstanceGroups.Insert": insertGroup,
  "InstanceGroups.Get": (call) => snapshot(groupOf(call).json),
  "InstanceGroups.AddInstances": addInstances,
  "InstanceGroups.RemoveInstances": removeInstances,
  "InstanceGroups.ListInstances": listInstances,
  "BackendServices.Insert": insertService,
  "BackendServices.Get": (call) => snapshot(serviceOf(call).json),
  "BackendServices.Patch": patchService,
  "BackendServices.Delete": deleteService,
  "BackendServices.GetHealth": getHealth,
};

function operationOf(call: ApiCall) {
  const { project, zone, operation: name } = call.parameters as { project: string; zone?: string; operation: string };
  if (zone) checkZone(call.engine, project, zone);
  const scope = zone ? `projects/${project}/zones/${zone}` : `projects/${project}/global`;
  return getOr404(call.engine.state.operations, `${scope}/operations/${name}`);
}

/** Zone and global operations: `get` and `wait`. */
export const OPERATION_HANDLERS: Readonly<Record<string, ApiHandler>> = {
  "ZoneOperations.Get": (call) => snapshot(operationOf(call).json),
  "ZoneOperations.Wait": async (call) => snapshot(await waitForOperation(call.engine, operationOf(call))),
  "GlobalOperations.Get": (call) => snapshot(operationOf(call).json),
  "GlobalOperations.Wait": async (call) => snapshot(await waitForOperation(call.engine, operationOf(call))),
};
