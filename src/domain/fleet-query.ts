import { ValidationError } from "./errors.js";
import { LIFECYCLES, MAX_LABELS, MAX_PAGE_SIZE, type Lifecycle } from "./nodes.js";
import { checkId } from "./fields.js";

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
  /** Where the page starts among the matching nodes (0-based), as the token says. */
  offset: number;
  /** The sort key of the previous page's last row (a keyset token); absent on the first page and for offset tokens. */
  after?: FleetSearchKey;
}

/** A row's position in a search's order: its order key's value (null: never seen) and its node id. */
export interface FleetSearchKey {
  value: string | number | null;
  nodeId: string;
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

/**
 * Offset page tokens: "o" and the offset, base64url, so that a token reads as opaque. The
 * server issues keyset tokens now; it still accepts these (a page opened before an upgrade).
 */
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

/**
 * Keyset page tokens: "k" and JSON [order key, descending, last row's key value, last row's
 * node id, offset of the next page], base64url. Only valid for a search of the same order.
 */
export function encodeKeysetToken(orderBy: FleetOrderKey, descending: boolean, after: FleetSearchKey, offset: number): string {
  return Buffer.from(`k${JSON.stringify([orderBy, descending, after.value, after.nodeId, offset])}`, "utf8").toString("base64url");
}

/** A page token of either kind: where its page starts (offset) and, for a keyset token, after which row. */
export function decodeSearchToken(token: string, orderBy: FleetOrderKey, descending: boolean): { offset: number; after?: FleetSearchKey } {
  const text = /^[A-Za-z0-9_-]+$/.test(token) ? Buffer.from(token, "base64url").toString("utf8") : "";
  if (!text.startsWith("k")) return { offset: decodeOffsetToken(token) };
  const bad = new ValidationError("page_token", "not a token this server issued");
  let parsed: unknown;
  try {
    parsed = JSON.parse(text.slice(1));
  } catch {
    throw bad;
  }
  if (!Array.isArray(parsed) || parsed.length !== 5) throw bad;
  const [by, desc, value, nodeId, offset] = parsed as unknown[];
  const valueOk = orderBy === "last_seen" ? value === null || Number.isSafeInteger(value) : typeof value === "string";
  if (!valueOk || typeof nodeId !== "string" || !Number.isSafeInteger(offset) || (offset as number) < 0) throw bad;
  const after = { value: value as string | number | null, nodeId };
  if (encodeKeysetToken(orderBy, descending, after, offset as number) !== token) throw bad;
  if (by !== orderBy || desc !== descending) throw new ValidationError("page_token", "issued for another order_by or direction");
  return { offset: offset as number, after };
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
  const orderBy = (req.orderBy || "node_id") as FleetOrderKey;
  return {
    lifecycle: (req.lifecycle || undefined) as Lifecycle | undefined,
    labels: parseLabelSelector(req.labelSelector),
    drift: req.drift === "" ? undefined : req.drift === "drifted",
    orderBy,
    descending: req.descending,
    pageSize,
    ...decodeSearchToken(req.pageToken, orderBy, req.descending),
  };
}

