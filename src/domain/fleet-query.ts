import { ValidationError } from "./errors.js";
import { LIFECYCLES, MAX_LABELS, MAX_PAGE_SIZE, type Lifecycle } from "./nodes.js";
import { checkId } from "./fields.js";

/** One node as the fleet search sees it: the columns it filters and orders by. */
export interface FleetSearchRow {
  nodeId: string;
  channel: string;
  lifecycle: string;
  /** Undefined when the node was never seen. */
  lastSeenMs: number | undefined;
  reportedReleaseId: string;
  desiredReleaseId: string;
  drift: boolean;
  labels: Record<string, string>;
}

export const FLEET_ORDER_KEYS = ["node_id", "channel", "lifecycle", "last_seen", "reported_release_id", "desired_release_id"] as const;
export type FleetOrderKey = (typeof FLEET_ORDER_KEYS)[number];
export const FLEET_SEARCH_DEFAULT_PAGE = 50;

/** A checked fleet search: what SearchFleetNodes filters by and orders on. */
export interface FleetSearch {
  lifecycle?: Lifecycle;
  labels: [string, string][];
  drift?: boolean;
  orderBy: FleetOrderKey;
  descending: boolean;
  pageSize: number;
  offset: number;
}

/** Parses `k=v,k2=v2` (spaces around pairs are ignored); every pair needs a non-empty key. */
export function parseLabelSelector(selector: string): [string, string][] {
  if (selector.trim() === "") return [];
  const pairs: [string, string][] = [];
  for (const part of selector.split(",")) {
    const text = part.trim();
    const eq = text.indexOf("=");
    if (eq <= 0) throw new ValidationError("label_selector", `"${text}": expected key=value`);
    const key = text.slice(0, eq).trim();
    const value = text.slice(eq + 1).trim();
    checkId(key, "label_selector", true);
    checkId(value, "label_selector", false);
    pairs.push([key, value]);
  }
  if (pairs.length > MAX_LABELS) throw new ValidationError("label_selector", `at most ${MAX_LABELS} pairs`);
  return pairs;
}

/** Offset page tokens: "o" and the offset, base64url, so that a token reads as opaque. */
export function encodeOffsetToken(offset: number): string {
  return Buffer.from(`o${offset}`, "utf8").toString("base64url");
}

export function decodeOffsetToken(token: string): number {
  if (token === "") return 0;
  const text = /^[A-Za-z0-9_-]+$/.test(token) ? Buffer.from(token, "base64url").toString("utf8") : "";
  const m = /^o(0|[1-9][0-9]{0,8})$/.exec(text);
  if (!m || encodeOffsetToken(Number(m[1])) !== token) throw new ValidationError("page_token", "not a token this server issued");
  return Number(m[1]);
}

/** Checks the fields of a SearchFleetNodesRequest; each bad one is a ValidationError naming it. */
export function checkFleetSearch(req: {
  lifecycle: string;
  labelSelector: string;
  drift: string;
  orderBy: string;
  descending: boolean;
  pageSize?: number;
  pageToken: string;
}): FleetSearch {
  if (req.lifecycle !== "" && !(LIFECYCLES as readonly string[]).includes(req.lifecycle)) {
    throw new ValidationError("lifecycle", `must be one of ${LIFECYCLES.join(", ")}`);
  }
  if (req.drift !== "" && req.drift !== "drifted" && req.drift !== "in_sync") {
    throw new ValidationError("drift", 'must be "drifted", "in_sync" or empty');
  }
  if (req.orderBy !== "" && !(FLEET_ORDER_KEYS as readonly string[]).includes(req.orderBy)) {
    throw new ValidationError("order_by", `must be one of ${FLEET_ORDER_KEYS.join(", ")}`);
  }
  const pageSize = req.pageSize ?? FLEET_SEARCH_DEFAULT_PAGE;
  if (!Number.isInteger(pageSize) || pageSize < 1 || pageSize > MAX_PAGE_SIZE) {
    throw new ValidationError("page_size", `must be between 1 and ${MAX_PAGE_SIZE}`);
  }
  return {
    lifecycle: (req.lifecycle || undefined) as Lifecycle | undefined,
    labels: parseLabelSelector(req.labelSelector),
    drift: req.drift === "" ? undefined : req.drift === "drifted",
    orderBy: (req.orderBy || "node_id") as FleetOrderKey,
    descending: req.descending,
    pageSize,
    offset: decodeOffsetToken(req.pageToken),
  };
}

const byText = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

function compareBy(key: FleetOrderKey, a: FleetSearchRow, b: FleetSearchRow): number {
  switch (key) {
    case "node_id":
      return byText(a.nodeId, b.nodeId);
    case "channel":
      return byText(a.channel, b.channel);
    case "lifecycle":
      return byText(a.lifecycle, b.lifecycle);
    case "reported_release_id":
      return byText(a.reportedReleaseId, b.reportedReleaseId);
    case "desired_release_id":
      return byText(a.desiredReleaseId, b.desiredReleaseId);
    case "last_seen":
      // Never seen sorts before any time.
      return (a.lastSeenMs ?? -Infinity) - (b.lastSeenMs ?? -Infinity) || 0;
  }
}

/**
 * Filters, orders and cuts the rows: every filter must match; ties of the order key are
 * broken by node id (ascending or descending with the rest), so pages never overlap.
 */
export function searchFleet<R extends FleetSearchRow>(rows: readonly R[], q: FleetSearch): { page: R[]; total: number; nextOffset?: number } {
  const matching = rows.filter(
    (r) =>
      (q.lifecycle === undefined || r.lifecycle === q.lifecycle) &&
      (q.drift === undefined || r.drift === q.drift) &&
      q.labels.every(([k, v]) => r.labels[k] === v),
  );
  const sign = q.descending ? -1 : 1;
  matching.sort((a, b) => sign * (compareBy(q.orderBy, a, b) || byText(a.nodeId, b.nodeId)));
  const page = matching.slice(q.offset, q.offset + q.pageSize);
  const end = q.offset + page.length;
  return { page, total: matching.length, nextOffset: end < matching.length ? end : undefined };
}
