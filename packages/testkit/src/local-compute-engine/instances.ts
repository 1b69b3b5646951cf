import { alreadyExists, invalidField, notFound, requiredField, resourceInUse } from "./errors.js";
import { listAnswer, pageOf } from "./listing.js";
import { type OperationWork, operationForCall } from "./operations.js";
import {
  type ApiCall,
  type ApiHandler,
  type DiskRecord,
  type EngineContext,
  type InstanceRecord,
  SERIAL_PORT_CAPACITY,
  checkLabels,
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
import { resolveSourceImage } from "./images.js";
import type { VmDescription } from "./vm-runner.js";

function knownFieldOf(engine: EngineContext, typeName: string): (name: string) => boolean {
  const type = engine.schema.type(typeName);
  return (name) => name in type.fields;
}

/** The metadata items of an instance as a map. */
export function metadataMap(instance: InstanceRecord): Record<string, string> {
  const items = ((instance.json.metadata as Json | undefined)?.items as { key: string; value?: string }[] | undefined) ?? [];
  return Object.fromEntries(items.map((item) => [item.key, item.value ?? ""]));
}

/** The first network interface's address. */
export function networkIPOf(instance: InstanceRecord): string {
  return ((instance.json.networkInterfaces as Json[] | undefined)?.[0]?.networkIP as string | undefined) ?? "";
}

/** Appends to serial port 1, keeping the last {@link SERIAL_PORT_CAPACITY} characters. */
export function appendSerialPort(instance: InstanceRecord, text: string): void {
  const port = instance.serialPort;
  port.contents += text;
  const excess = port.contents.length - SERIAL_PORT_CAPACITY;
  if (excess > 0) {
    port.contents = port.contents.slice(excess);
    port.start += excess;
  }
}

function describeVm(engine: EngineContext, instance: InstanceRecord): VmDescription {
  const disk = engine.state.disks.get(instance.bootDiskPath);
  return {
    project: instance.project,
    zone: instance.zone,
    name: instance.name,
    id: instance.json.id,
    metadata: metadataMap(instance),
    labels: { ...instance.json.labels },
    machineType: String(instance.json.machineType),
    bootDisk: {
      name: instance.bootDiskPath.split("/").pop()!,
      ...(typeof disk?.json.sourceImage === "string" ? { sourceImage: disk.json.sourceImage } : {}),
      ...(disk?.imageArtifact ? { imageArtifact: disk.imageArtifact } : {}),
    },
    networkIP: networkIPOf(instance),
    metadataServer: { url: engine.metadataUrl(), headers: { "Metadata-Flavor": "Google", "X-Kiln-Instance": instance.json.id } },
    writeSerialPort: (text) => appendSerialPort(instance, text),
  };
}

/** Runs a runner call after the instance's previous one. */
function onRunner<T>(instance: InstanceRecord, task: () => Promise<T>): Promise<T> {
  const next = instance.runnerQueue.then(task, task);
  instance.runnerQueue = next.catch(() => undefined);
  return next;
}

/** STAGING → (runner starts the VM) → RUNNING, over `instanceStepMs` plus any slow-boot fault. */
function boot(engine: EngineContext, instance: InstanceRecord): void {
  instance.json.status = "STAGING";
  const bootDelay = engine.options.timing.instanceStepMs + engine.faults.bootDelayMs();
  engine.after(bootDelay, () => {
    if (instance.lifetime.signal.aborted || instance.json.status !== "STAGING") return;
    onRunner(instance, () => engine.runner.start(describeVm(engine, instance), instance.lifetime.signal)).then(
      (started) => {
        if (instance.json.status !== "STAGING") return;
        if (started.networkIP) ((instance.json.networkInterfaces as Json[])[0]!.networkIP = started.networkIP);
        instance.json.status = "RUNNING";
        instance.json.lastStartTimestamp = now();
      },
      (error: unknown) => {
        appendSerialPort(instance, `kiln-local-compute-engine: the VM did not start: ${error instanceof Error ? error.message : String(error)}\n`);
        instance.json.status = "TERMINATED";
      },
    );
  });
}

function machineTypeLink(project: string, zone: string, machineType: unknown): string {
  if (typeof machineType !== "string" || machineType === "") throw requiredField("resource.machineType");
  const path = machineType.includes("/") ? resolveReference(machineType, project) : `projects/${project}/zones/${zone}/machineTypes/${machineType}`;
  if (!/^projects\/[^/]+\/zones\/[^/]+\/machineTypes\/[^/]+$/.test(path)) throw invalidField("resource.machineType", machineType, "It must name zones/ZONE/machineTypes/TYPE");
  return linkOf(path);
}

/** Everything an instance insert needs, checked before any operation starts. */
function planInstance(engine: EngineContext, project: string, zone: string, body: Json): { record: InstanceRecord; disk: DiskRecord } {
  checkName("resource.name", body.name);
  const name = body.name;
  const path = `projects/${project}/zones/${zone}/instances/${name}`;
  if (engine.state.instances.has(path)) throw alreadyExists(path);
  const labels = checkLabels(body.labels);
  const machineType = machineTypeLink(project, zone, body.machineType);
  const disks = (body.disks as Json[] | undefined) ?? [];
  const bootDisks = disks.filter((disk) => disk.boot === true || disks.length === 1);
  if (bootDisks.length !== 1 || disks.length !== 1) throw invalidField("resource.disks", disks.length, "The local Compute Engine takes exactly one disk, the boot disk");
  const attached = bootDisks[0]!;
  const initialize = attached.initializeParams as Json | undefined;
  if (typeof initialize?.sourceImage !== "string") throw requiredField("resource.disks[0].initializeParams.sourceImage");
  const image = resolveSourceImage(engine, project, initialize.sourceImage);
  const diskName = (initialize.diskName as string | undefined) ?? (attached.deviceName as string | undefined) ?? name;
  const diskPath = `projects/${project}/zones/${zone}/disks/${diskName}`;
  if (engine.state.disks.has(diskPath)) throw alreadyExists(diskPath);
  const sizeGb = textOf(initialize.diskSizeGb, textOf(image.json.diskSizeGb, "10"));
  const createdAt = now();
  const diskJson: Json & { users: string[] } = {
    kind: "compute#disk",
    id: randomId(),
    creationTimestamp: createdAt,
    name: diskName,
    sizeGb,
    zone: linkOf(`projects/${project}/zones/${zone}`),
    status: "READY",
    selfLink: linkOf(diskPath),
    sourceImage: image.json.selfLink,
    sourceImageId: image.json.id,
    type: linkOf(`projects/${project}/zones/${zone}/diskTypes/${textOf(initialize.diskType, "pd-balanced").split("/").pop()}`),
    labels: checkLabels(initialize.labels),
    labelFingerprint: fingerprintOf(initialize.labels ?? {}),
    users: [linkOf(path)],
    lastAttachTimestamp: createdAt,
    physicalBlockSizeBytes: "4096",
  };
  const networkInterfaces = ((body.networkInterfaces as Json[] | undefined) ?? [{}]).map((nic, index) => ({
    kind: "compute#networkInterface",
    name: `nic${index}`,
    network: linkOf(resolveReference(textOf(nic.network, "global/networks/default"), project)),
    ...(nic.subnetwork ? { subnetwork: linkOf(resolveReference(textOf(nic.subnetwork, ""), project)) } : {}),
    networkIP: engine.state.nextNetworkIP(),
    stackType: "IPV4_ONLY",
    fingerprint: fingerprintOf([name, index]),
    ...(Array.isArray(nic.accessConfigs)
      ? { accessConfigs: (nic.accessConfigs as Json[]).map((config) => ({ kind: "compute#accessConfig", type: "ONE_TO_ONE_NAT", name: config.name ?? "External NAT", networkTier: "PREMIUM", natIP: `34.${(index % 200) + 1}.${Math.floor(Math.random() * 250)}.${Math.floor(Math.random() * 250) + 1}` })) }
      : {}),
  }));
  const metadata = (body.metadata as Json | undefined) ?? {};
  const json = {
    kind: "compute#instance",
    id: randomId(),
    creationTimestamp: createdAt,
    name,
    ...(body.description !== undefined ? { description: body.description } : {}),
    tags: { ...((body.tags as Json | undefined) ?? {}), fingerprint: fingerprintOf(body.tags ?? {}) },
    machineType,
    status: "PROVISIONING",
    zone: linkOf(`projects/${project}/zones/${zone}`),
    canIpForward: body.canIpForward === true,
    networkInterfaces,
    disks: [
      {
        kind: "compute#attachedDisk",
        type: "PERSISTENT",
        mode: "READ_WRITE",
        source: linkOf(diskPath),
        deviceName: (attached.deviceName as string | undefined) ?? diskName,
        index: 0,
        boot: true,
        autoDelete: attached.autoDelete !== false,
        interface: "SCSI",
        diskSizeGb: sizeGb,
      },
    ],
    metadata: { kind: "compute#metadata", fingerprint: fingerprintOf(metadata.items ?? []), ...(metadata.items ? { items: metadata.items } : {}) },
    ...(body.serviceAccounts ? { serviceAccounts: body.serviceAccounts } : {}),
    selfLink: linkOf(path),
    scheduling: { onHostMaintenance: "MIGRATE", automaticRestart: true, preemptible: false, provisioningModel: "STANDARD", ...((body.scheduling as Json | undefined) ?? {}) },
    cpuPlatform: "Intel Broadwell",
    labels,
    labelFingerprint: fingerprintOf(labels),
    startRestricted: false,
    deletionProtection: body.deletionProtection === true,
    fingerprint: fingerprintOf([name, createdAt]),
  };
  const record: InstanceRecord = {
    path,
    project,
    zone,
    name,
    json: json,
    guestAttributes: new Map(),
    serialPort: { contents: "", start: 0 },
    runnerQueue: Promise.resolve(),
    lifetime: new AbortController(),
    bootDiskPath: diskPath,
  };
  const disk: DiskRecord = { path: diskPath, zone, json: diskJson, ...(image.artifact ? { imageArtifact: image.artifact } : {}), lastAttachedInstance: path };
  return { record, disk };
}

/** @throws ComputeApiError 409 when another request made an instance or disk of the same name since the plan */
function checkStillFree(engine: EngineContext, planned: { record: InstanceRecord; disk: DiskRecord }): void {
  if (engine.state.instances.has(planned.record.path)) throw alreadyExists(planned.record.path);
  if (engine.state.disks.has(planned.disk.path)) throw alreadyExists(planned.disk.path);
}

/** Makes the planned instance and its disk visible (after {@link checkStillFree}). */
function createInstance(engine: EngineContext, planned: { record: InstanceRecord; disk: DiskRecord }): void {
  engine.state.instances.set(planned.record.path, planned.record);
  engine.state.disks.set(planned.disk.path, planned.disk);
}

function dropInstance(engine: EngineContext, planned: { record: InstanceRecord; disk: DiskRecord }): void {
  engine.state.instances.delete(planned.record.path);
  engine.state.disks.delete(planned.disk.path);
}

const insert: ApiHandler = (call) => {
  const { project, zone } = call.parameters as { project: string; zone: string };
  checkZone(call.engine, project, zone);
  for (const unsupported of ["sourceInstanceTemplate", "sourceMachineImage"] as const) {
    if (call.query[unsupported]) throw invalidField(unsupported, call.query[unsupported], "The local Compute Engine makes instances from instanceResource only");
  }
  const planned = planInstance(call.engine, project, zone, call.body);
  const { engine } = call;
  return operationForCall(call, { project, zone }, "insert", { path: planned.record.path, id: planned.record.json.id }, {
      begin: () => {
        checkStillFree(engine, planned);
        createInstance(engine, planned);
      },
      rollback: () => dropInstance(engine, planned),
      finish: () => {
      engine.after(engine.options.timing.instanceStepMs, () => {
        if (planned.record.json.status === "PROVISIONING") boot(engine, planned.record);
      });
    },
  });
};

/** Expands `namePattern` (`web-####`: the #s become a zero-padded number) or `perInstanceProperties` into names. */
function bulkNames(engine: EngineContext, project: string, zone: string, body: Json): string[] {
  const count = Number(body.count ?? 0);
  const perInstance = Object.keys((body.perInstanceProperties as Json | undefined) ?? {});
  if (perInstance.length > 0) return perInstance;
  const pattern = body.namePattern;
  if (typeof pattern !== "string" || !/#+/.test(pattern)) throw invalidField("resource.namePattern", pattern ?? "", "A name pattern needs a run of # characters (web-####)");
  if (!Number.isInteger(count) || count < 1) throw invalidField("resource.count", body.count ?? 0, "Must be at least 1");
  const hashes = /#+/.exec(pattern)![0];
  const names: string[] = [];
  for (let n = 1; names.length < count; n++) {
    const name = pattern.replace(hashes, String(n).padStart(hashes.length, "0"));
    if (!engine.state.instances.has(`projects/${project}/zones/${zone}/instances/${name}`)) names.push(name);
    if (n > 10 ** hashes.length) throw invalidField("resource.namePattern", pattern, "The pattern has no free names left");
  }
  return names;
}

/** `instances.bulkInsert`: one operation, `instancesBulkInsertOperationMetadata.perLocationStatus`; all or nothing. */
const bulkInsert: ApiHandler = (call) => {
  const { project, zone } = call.parameters as { project: string; zone: string };
  checkZone(call.engine, project, zone);
  const { engine, body } = call;
  if (body.sourceInstanceTemplate) throw invalidField("resource.sourceInstanceTemplate", body.sourceInstanceTemplate, "The local Compute Engine has no instance templates yet; pass instanceProperties");
  const properties = (body.instanceProperties as Json | undefined) ?? {};
  const perInstance = (body.perInstanceProperties as Record<string, Json> | undefined) ?? {};
  const planned = bulkNames(engine, project, zone, body).map((name) =>
    planInstance(engine, project, zone, {
      ...properties,
      name,
      ...(perInstance[name]?.hostname ? { hostname: perInstance[name].hostname } : {}),
      disks: ((properties.disks as Json[] | undefined) ?? []).map((disk) => ({ ...disk, deviceName: name })),
    }),
  );
  let created = 0;
  return operationForCall(call, { project, zone }, "bulkInsert", { path: `projects/${project}/zones/${zone}/instances/bulkInsert`, id: randomId() }, {
      begin: () => {
        planned.forEach((one) => checkStillFree(engine, one));
        planned.forEach((one) => createInstance(engine, one));
      },
      rollback: () => planned.forEach((one) => dropInstance(engine, one)),
      finish: () => {
        created = planned.length;
        engine.after(engine.options.timing.instanceStepMs, () => planned.forEach((one) => one.record.json.status === "PROVISIONING" && boot(engine, one.record)));
      },
      doneFields: () => ({
        instancesBulkInsertOperationMetadata: {
          perLocationStatus: { [`zones/${zone}`]: { status: "DONE", createdVmCount: created, failedToCreateVmCount: planned.length - created, deletedVmCount: 0, targetVmCount: planned.length } },
        },
      }),
  });
};

function instanceOf(call: ApiCall): InstanceRecord {
  const { project, zone, instance } = call.parameters as { project: string; zone: string; instance: string };
  checkZone(call.engine, project, zone);
  return getOr404(call.engine.state.instances, `projects/${project}/zones/${zone}/instances/${instance}`);
}

const get: ApiHandler = (call) => snapshot(instanceOf(call).json);

const list: ApiHandler = (call) => {
  const { project, zone } = call.parameters as { project: string; zone: string };
  checkZone(call.engine, project, zone);
  const prefix = `projects/${project}/zones/${zone}/instances/`;
  const all = [...call.engine.state.instances.values()].filter((one) => one.path.startsWith(prefix)).map((one) => one.json);
  const page = pageOf(all, call.query, knownFieldOf(call.engine, "Instance"));
  return listAnswer("compute#instanceList", prefix.slice(0, -1), page);
};

/**
 * `instances.aggregatedList`: every zone, items keyed `zones/Z`; a zone without results on the page
 * gets `warning: {code: NO_RESULTS_ON_PAGE}` as the real API writes it.
 */
const aggregatedList: ApiHandler = (call) => {
  const { project } = call.parameters as { project: string };
  const zones = [...call.engine.options.zones].sort();
  const all = zones.flatMap((zone) => [...call.engine.state.instances.values()].filter((one) => one.project === project && one.zone === zone).map((one) => one.json));
  const page = pageOf(all, call.query, knownFieldOf(call.engine, "Instance"));
  const items: Record<string, Json> = {};
  for (const zone of zones) {
    const zoneLink = linkOf(`projects/${project}/zones/${zone}`);
    const inZone = page.items.filter((instance) => instance.zone === zoneLink);
    items[`zones/${zone}`] = inZone.length > 0
      ? { instances: snapshot(inZone) }
      : { warning: { code: "NO_RESULTS_ON_PAGE", message: `There are no results for scope 'zones/${zone}' on this page.`, data: [{ key: "scope", value: `zones/${zone}` }] } };
  }
  return { kind: "compute#instanceAggregatedList", id: `projects/${project}/aggregated/instances`, items, selfLink: linkOf(`projects/${project}/aggregated/instances`), ...(page.nextPageToken ? { nextPageToken: page.nextPageToken } : {}) };
};

function instanceOperation(call: ApiCall, operationType: string, work: OperationWork): Json {
  const instance = instanceOf(call);
  return operationForCall(call, { project: instance.project, zone: instance.zone }, operationType, { path: instance.path, id: instance.json.id }, work);
}

/** `instances.stop`: STOPPING → (runner stops the VM) → TERMINATED; DONE when TERMINATED. */
const stop: ApiHandler = (call) => {
  const instance = instanceOf(call);
  const { engine } = call;
  return instanceOperation(call, "stop", {
    begin: () => {
      if (instance.json.status !== "TERMINATED") instance.json.status = "STOPPING";
    },
    finish: async () => {
      if (instance.json.status === "TERMINATED") return;
      await new Promise<void>((resolve) => engine.after(engine.options.timing.instanceStepMs, resolve));
      await onRunner(instance, () => engine.runner.stop(describeVm(engine, instance), instance.lifetime.signal));
      instance.json.status = "TERMINATED";
      instance.json.lastStopTimestamp = now();
    },
  });
};

/** `instances.start`: a TERMINATED instance boots again (STAGING → RUNNING); DONE when it is STAGING. */
const start: ApiHandler = (call) => {
  const instance = instanceOf(call);
  const { engine } = call;
  return instanceOperation(call, "start", {
    finish: () => {
      if (instance.json.status === "TERMINATED") boot(engine, instance);
    },
  });
};

/** `instances.delete`: the boot disk goes with it only when `autoDelete`; it leaves every instance group. */
const remove: ApiHandler = (call) => {
  const instance = instanceOf(call);
  const { engine } = call;
  return instanceOperation(call, "delete", {
    begin: () => {
      instance.json.status = "STOPPING";
    },
    finish: async () => {
      await onRunner(instance, () => engine.runner.delete(describeVm(engine, instance), instance.lifetime.signal));
      instance.lifetime.abort();
      engine.state.instances.delete(instance.path);
      for (const group of engine.state.instanceGroups.values()) group.members.delete(instance.path);
      const attached = (instance.json.disks as Json[])[0]!;
      const disk = engine.state.disks.get(instance.bootDiskPath);
      if (!disk) return;
      if (attached.autoDelete === true) engine.state.disks.delete(instance.bootDiskPath);
      else disk.json.users = (disk.json.users ?? []).filter((user) => user !== linkOf(instance.path));
    },
  });
};

/** `instances.getGuestAttributes`: `variableKey` (`ns/key`) or `queryPath` (`ns/`); 404 until written. */
const getGuestAttributes: ApiHandler = (call) => {
  const instance = instanceOf(call);
  const base = { kind: "compute#guestAttributes", selfLink: `${linkOf(instance.path)}/guestAttributes/${call.query.variableKey ?? call.query.queryPath ?? ""}` };
  if (call.query.variableKey !== undefined) {
    const value = instance.guestAttributes.get(call.query.variableKey);
    if (value === undefined) throw notFound(`${instance.path}/guestAttributes/${call.query.variableKey}`);
    return { ...base, variableKey: call.query.variableKey, variableValue: value };
  }
  const queryPath = call.query.queryPath ?? "";
  const items = [...instance.guestAttributes.entries()]
    .filter(([key]) => key.startsWith(queryPath))
    .map(([key, value]) => ({ namespace: key.slice(0, key.indexOf("/")), key: key.slice(key.indexOf("/") + 1), value }));
  if (items.length === 0) throw notFound(`${instance.path}/guestAttributes/${queryPath}`);
  return { ...base, queryPath, queryValue: { items } };
};

/** `instances.getSerialPortOutput`: `{contents, start, next}` from `start` (clamped to the oldest character kept). */
const getSerialPortOutput: ApiHandler = (call) => {
  const instance = instanceOf(call);
  const port = Number(call.query.port ?? "1");
  if (!Number.isInteger(port) || port < 1 || port > 4) throw invalidField("port", call.query.port, "Must be between 1 and 4");
  const serial = port === 1 ? instance.serialPort : { contents: "", start: 0 };
  const end = serial.start + serial.contents.length;
  let from = call.query.start === undefined ? serial.start : Number(call.query.start);
  if (from < 0) from = Math.max(serial.start, end + from);
  from = Math.min(Math.max(from, serial.start), end);
  return { kind: "compute#serialPortOutput", contents: serial.contents.slice(from - serial.start), start: String(from), next: String(end), selfLink: `${linkOf(instance.path)}/serialPort?port=${port}` };
};

function diskOf(call: ApiCall): DiskRecord {
  const { project, zone, disk } = call.parameters as { project: string; zone: string; disk: string };
  checkZone(call.engine, project, zone);
  return getOr404(call.engine.state.disks, `projects/${project}/zones/${zone}/disks/${disk}`);
}

/** `disks.delete`: 400 `resourceInUseByAnotherResource` while an instance uses the disk. */
const deleteDisk: ApiHandler = (call) => {
  const disk = diskOf(call);
  const user = disk.json.users?.[0];
  if (user) throw resourceInUse("disk", disk.path, resolveReference(user, ""));
  const project = disk.path.split("/")[1]!;
  return operationForCall(call, { project, zone: disk.zone }, "delete", { path: disk.path, id: textOf(disk.json.id, "") }, { finish: () => void call.engine.state.disks.delete(disk.path) });
};

const listDisks: ApiHandler = (call) => {
  const { project, zone } = call.parameters as { project: string; zone: string };
  checkZone(call.engine, project, zone);
  const prefix = `projects/${project}/zones/${zone}/disks/`;
  const page = pageOf([...call.engine.state.disks.values()].filter((one) => one.path.startsWith(prefix)).map((one) => one.json), call.query, knownFieldOf(call.engine, "Disk"));
  return listAnswer("compute#diskList", prefix.slice(0, -1), page);
};

/** The instance and disk methods, by `Service.Method`. */
export const INSTANCE_HANDLERS: Readonly<Record<string, ApiHandler>> = {
  "Instances.Insert": insert,
  "Instances.BulkInsert": bulkInsert,
  "Instances.Get": get,
  "Instances.List": list,
  "Instances.AggregatedList": aggregatedList,
  "Instances.Stop": stop,
  "Instances.Start": start,
  "Instances.Delete": remove,
  "Instances.GetGuestAttributes": getGuestAttributes,
  "Instances.GetSerialPortOutput": getSerialPortOutput,
  "Disks.Get": (call) => snapshot(diskOf(call).json),
  "Disks.List": listDisks,
  "Disks.Delete": deleteDisk,
};

