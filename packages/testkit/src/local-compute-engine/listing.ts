import { invalidField } from "./errors.js";
import { COMPUTE_LINK_PREFIX } from "./state.js";
import { matchesFilter, parseFilter } from "./filter.js";

/** The list parameters every Compute v1 list call takes. */
export interface ListParameters {
  readonly filter?: string;
  readonly maxResults?: string;
  readonly orderBy?: string;
  readonly pageToken?: string;
}

/** The largest `maxResults` Compute accepts (and its default). */
export const MAX_RESULTS = 500;

/**
 * Filters, orders and pages resources as Compute list calls do: `maxResults` 0–500 (0 or absent
 * means 500), `orderBy` only `name` or `creationTimestamp desc` (API reference of `list`),
 * an opaque `nextPageToken` while more remain.
 * @param knownField - whether a top-level field name exists on the listed resource (for the filter)
 * @throws ComputeApiError 400 `invalid` for a bad filter, page size, order or page token
 */
export function pageOf<T extends Record<string, unknown>>(
  resources: readonly T[],
  parameters: ListParameters,
  knownField: (name: string) => boolean,
): { items: T[]; nextPageToken?: string } {
  const expression = parseFilter(parameters.filter ?? "", knownField);
  const maxResults = parameters.maxResults === undefined || parameters.maxResults === "" ? 0 : Number(parameters.maxResults);
  if (!Number.isInteger(maxResults) || maxResults < 0 || maxResults > MAX_RESULTS) {
    throw invalidField("maxResults", parameters.maxResults, `Must be less than or equal to ${MAX_RESULTS}`);
  }
  const pageSize = maxResults === 0 ? MAX_RESULTS : maxResults;
  const matching = resources.filter((resource) => matchesFilter(expression, resource));
  const orderBy = parameters.orderBy?.trim() ?? "";
  if (orderBy === "" || orderBy === "name") {
    matching.sort((a, b) => String(a.name).localeCompare(String(b.name)));
  } else if (orderBy === "creationTimestamp desc") {
    // Newest first; resources made in the same millisecond by insertion order, newest first.
    matching.reverse().sort((a, b) => String(b.creationTimestamp).localeCompare(String(a.creationTimestamp)));
  } else {
    throw invalidField("orderBy", orderBy, "Only 'name' and 'creationTimestamp desc' are supported");
  }
  let offset = 0;
  if (parameters.pageToken) {
    const decoded = decodePageToken(parameters.pageToken);
    if (decoded === undefined) throw invalidField("pageToken", parameters.pageToken, "The page token is not valid");
    offset = decoded;
  }
  const items = matching.slice(offset, offset + pageSize);
  const next = offset + pageSize;
  return next < matching.length ? { items, nextPageToken: encodePageToken(next) } : { items };
}

function encodePageToken(offset: number): string {
  return Buffer.from(JSON.stringify({ offset }), "utf8").toString("base64url");
}

function decodePageToken(token: string): number | undefined {
  try {
    const parsed = JSON.parse(Buffer.from(token, "base64url").toString("utf8")) as { offset?: unknown };
    return typeof parsed.offset === "number" && Number.isInteger(parsed.offset) && parsed.offset >= 0 ? parsed.offset : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The answer of a list call: `kind`, `id`, `selfLink`, `items` only when there are some (the real
 * API leaves `items` out of an empty list), `nextPageToken` while more remain.
 * @param path - the listed collection's path (`projects/p/zones/z/instances`)
 */
export function listAnswer(kind: string, path: string, page: { items: readonly Record<string, unknown>[]; nextPageToken?: string }, selfLink = `${COMPUTE_LINK_PREFIX}${path}`): Record<string, unknown> {
  return {
    kind,
    id: path,
    ...(page.items.length > 0 ? { items: structuredClone(page.items) } : {}),
    selfLink,
    ...(page.nextPageToken ? { nextPageToken: page.nextPageToken } : {}),
  };
}
