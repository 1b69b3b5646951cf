/**
 * The `requestId` of Compute Engine's mutating calls, derived from the journal step: a retry after
 * a client time-out sends the same id, and Compute Engine answers it with the original operation
 * instead of doing the work twice.
 * @module
 */
import { v5 } from "uuid";
import { KilnError } from "@kilnjs/core/spec";

/**
 * The UUID namespace of Kiln's Compute Engine request ids (itself a UUIDv5 of the URL
 * `https://kiln.dev/provider-gcp/request-id` in the RFC 9562 URL namespace), so Kiln's ids never
 * meet ids another tool derives from the same text.
 */
export const GCE_REQUEST_ID_NAMESPACE = v5("https://kiln.dev/provider-gcp/request-id", v5.URL);

/** What one Compute Engine call is for: see {@link requestIdFor}. */
export interface RequestIdInput {
  /** The journal step's identity (`LaunchRequest.idempotencyKey`, a bake step's id). */
  readonly step: string;
  /** The call, such as `instances.insert`, `instances.delete`, `images.insert`. */
  readonly call: string;
  /** What the call acts on within the step (an instance's name); different resources of one step get different ids. */
  readonly resource: string;
}

/**
 * The `requestId` for one call of one journal step: a name-based UUID (version 5, SHA-1, RFC 9562)
 * of the step, the call and the resource in {@link GCE_REQUEST_ID_NAMESPACE}. Always the same for
 * the same input, different for different inputs, and never the nil UUID (Compute Engine refuses
 * `00000000-0000-0000-0000-000000000000`): a version-5 UUID has its version digit set.
 *
 * Compute Engine ignores a repeated request with the same id and returns the original operation;
 * its documentation promises no retention window (other Google Cloud APIs keep ids at least 60
 * minutes), so a resume long after a crash must still check what exists.
 * @throws KilnError INVALID_ARGUMENT when a field is empty
 * @see https://cloud.google.com/compute/docs/reference/rest/v1/instances/insert (requestId)
 * @example
 * ```ts
 * requestIdFor({ step: "20261207041400-1a2b3c4d:b1", call: "instances.insert", resource: "web-prod-r3-…-0" });
 * ```
 */
export function requestIdFor(input: RequestIdInput): string {
  for (const [field, value] of Object.entries(input) as Array<[string, string]>) {
    if (value.length === 0) throw new KilnError("INVALID_ARGUMENT", `A Compute Engine request id needs a non-empty ${field}.`);
  }
  // JSON keeps the three fields apart whatever characters they hold.
  return v5(JSON.stringify([input.step, input.call, input.resource]), GCE_REQUEST_ID_NAMESPACE);
}
