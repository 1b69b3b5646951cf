import type { ServerResponse } from "node:http";
import type { EngineContext, InstanceRecord } from "./state.js";
import { metadataMap, networkIPOf } from "./instances.js";

/** The header that names the instance a metadata request comes from: its id, or `zones/Z/instances/N`. */
export const METADATA_INSTANCE_HEADER = "x-kiln-instance";

function text(response: ServerResponse, status: number, body: string): void {
  response.writeHead(status, { "Content-Type": "text/plain; charset=utf-8", "Metadata-Flavor": "Google" });
  response.end(body);
}

function findInstance(engine: EngineContext, named: string): InstanceRecord | undefined {
  for (const instance of engine.state.instances.values()) {
    if (instance.json.id === named || instance.path === named || instance.path.endsWith(`/${named}`)) return instance;
  }
  return undefined;
}

/**
 * The metadata server a guest reaches at `/computeMetadata/v1/…` (the real one answers at
 * `http://metadata.google.internal`), with the `Metadata-Flavor: Google` header it requires (403
 * without). The real server knows the caller by its address; here the caller names its instance in
 * the `X-Kiln-Instance` header. Serves `instance/id`, `instance/name`, `instance/zone`,
 * `instance/hostname`, `instance/network-interfaces/0/ip`, `instance/attributes/KEY` (metadata
 * items), `project/project-id`, and guest attributes: `PUT|GET|DELETE
 * instance/guest-attributes/NAMESPACE/KEY` (writes need the instance metadata
 * `enable-guest-attributes: TRUE`, as on GCE).
 */
export function serveMetadata(engine: EngineContext, method: string, path: string, headers: Record<string, string | string[] | undefined>, body: string, response: ServerResponse): void {
  if (headers["metadata-flavor"] !== "Google") return text(response, 403, "Missing required header \"Metadata-Flavor\": \"Google\"\n");
  const named = headers[METADATA_INSTANCE_HEADER];
  const instance = typeof named === "string" ? findInstance(engine, named) : undefined;
  if (!instance) return text(response, 404, `The local Compute Engine's metadata server needs the ${METADATA_INSTANCE_HEADER} header naming a live instance (its id or zones/ZONE/instances/NAME).\n`);
  const item = path.replace(/^\/computeMetadata\/v1\//, "");
  const attribute = /^instance\/guest-attributes\/([A-Za-z0-9_-]+)\/([A-Za-z0-9_-]+)$/.exec(item);
  if (attribute) {
    const key = `${attribute[1]}/${attribute[2]}`;
    if (method === "GET") {
      const value = instance.guestAttributes.get(key);
      return value === undefined ? text(response, 404, "Not Found\n") : text(response, 200, value);
    }
    if (method !== "PUT" && method !== "DELETE") return text(response, 405, "Method Not Allowed\n");
    if ((metadataMap(instance)["enable-guest-attributes"] ?? "").toUpperCase() !== "TRUE") return text(response, 403, "Guest attributes endpoint access is disabled.\n");
    if (method === "PUT") instance.guestAttributes.set(key, body);
    else instance.guestAttributes.delete(key);
    return text(response, 200, "");
  }
  if (method !== "GET") return text(response, 405, "Method Not Allowed\n");
  const values: Record<string, string> = {
    "instance/id": instance.json.id,
    "instance/name": instance.name,
    "instance/zone": `projects/${instance.project}/zones/${instance.zone}`,
    "instance/hostname": `${instance.name}.${instance.zone}.c.${instance.project}.internal`,
    "instance/network-interfaces/0/ip": networkIPOf(instance),
    "project/project-id": instance.project,
  };
  const attributeKey = /^instance\/attributes\/(.+)$/.exec(item)?.[1];
  const value = attributeKey !== undefined ? metadataMap(instance)[attributeKey] : values[item];
  return value === undefined ? text(response, 404, "Not Found\n") : text(response, 200, value);
}
