import { sql, type SQL } from "drizzle-orm";
import type { FleetOrderKey, FleetSearchKey } from "../domain/fleet-query.js";
import { UNAVAILABLE_FACTOR, type Lifecycle } from "../domain/nodes.js";
import type { NodeSighting } from "./fleet-rows.js";

/**
 * One page of the fleet search as the stores answer it (SearchFleetNodes): the filters, the
 * order and the page of src/domain/fleet-query.ts, with the lifecycle computed as of nowMs
 * and the buffered sightings applied the way SightingBuffer.overlay applies them to a node.
 */
export interface FleetSearchQuery {
  /** Every channel when undefined. */
  channel?: string;
  lifecycle?: Lifecycle;
  labels: readonly [string, string][];
  drift?: boolean;
  orderBy: FleetOrderKey;
  descending: boolean;
  /** The rows after this sort key (keyset paging), or else after `offset` matching rows. */
  after?: FleetSearchKey;
  offset: number;
  limit: number;
  nowMs: number;
  staleAfterMs: number;
  /** Sightings buffered in this server and not yet written (SightingBuffer.pending()). */
  sightings: readonly NodeSighting[];
}

/** A fleet row as the search answers it: stored facts with the buffered sighting applied. */
export interface FleetSearchStoreRow {
  nodeId: string;
  channel: string;
  labels: Record<string, string>;
  lifecycle: Lifecycle;
  lastSeenMs: number | undefined;
  reportedReleaseId: string;
  desiredReleaseId: string;
  drift: boolean;
  drained: boolean;
  drainReason: string;
}

export interface FleetSearchResult {
  rows: FleetSearchStoreRow[];
  /** Matching nodes over all pages. */
  total: number;
}

/** What never-seen sorts as: below any time a node can be seen at. */
export const NEVER_SEEN_KEY = -Number.MAX_SAFE_INTEGER;

/** How the two dialects spell what differs between them. */
export interface SearchDialect {
  /** Rows (node_id, seen, rel) of a JSON array of [node id, last seen ms, reported release or null]. */
  sightings(json: string): SQL;
  /** Whether the node's labels (JSON text in n.labels) carry key=value. */
  hasLabel(key: string, value: string): SQL;
  /** Appended to a text expression so it compares and sorts by code point. */
  bytewise: SQL;
}

/** The search's columns of a node n left-joined to its buffered sighting s (as SightingBuffer.overlay). */
function columns(q: FleetSearchQuery) {
  const applies = sql`(s.node_id IS NOT NULL AND s.seen >= coalesce(n.last_seen_ms, -1))`;
  const seen = sql`(CASE WHEN ${applies} THEN s.seen ELSE n.last_seen_ms END)`;
  const reported = sql`(CASE WHEN ${applies} AND s.rel IS NOT NULL THEN s.rel ELSE coalesce(n.reported_release_id, '') END)`;
  const desired = sql`coalesce(n.desired_release_id, '')`;
  const drift = sql`(${desired} <> '' AND ${desired} <> ${reported})`;
  // nodeLifecycle: age <= threshold is seen >= now - threshold (integer milliseconds).
  const lifecycle = sql`(CASE WHEN n.drained THEN 'DRAINING' WHEN ${seen} IS NULL THEN 'UNAVAILABLE'
    WHEN ${seen} >= ${q.nowMs - q.staleAfterMs} THEN 'HEALTHY'
    WHEN ${seen} >= ${q.nowMs - q.staleAfterMs * UNAVAILABLE_FACTOR} THEN 'STALE' ELSE 'UNAVAILABLE' END)`;
  return { seen, reported, desired, drift, lifecycle };
}

/** The sort key of an order: text compared by code point, never-seen below any time. */
function sortKey(q: FleetSearchQuery, c: ReturnType<typeof columns>, d: SearchDialect): { key: SQL; text: boolean } {
  const text = (e: SQL) => ({ key: sql`${e} ${d.bytewise}`, text: true });
  switch (q.orderBy) {
    case "node_id":
      return text(sql`n.node_id`);
    case "channel":
      return text(sql`n.channel`);
    case "lifecycle":
      return text(c.lifecycle);
    case "reported_release_id":
      return text(c.reported);
    case "desired_release_id":
      return text(c.desired);
    case "last_seen":
      return { key: sql`coalesce(${c.seen}, ${NEVER_SEEN_KEY})`, text: false };
  }
}

/**
 * The two statements of a search: its page (the columns of FleetSearchStoreRow, in order)
 * and the count of every matching node. Ties of the order key are broken by node id, in the
 * same direction, so a keyset `after` continues exactly where the previous page stopped.
 */
export function fleetSearchSql(q: FleetSearchQuery, d: SearchDialect): { page: SQL; count: SQL } {
  const c = columns(q);
  const json = JSON.stringify(q.sightings.map((s) => [s.nodeId, s.lastSeenMs, s.reportedReleaseId ?? null]));
  const from = sql`nodes n LEFT JOIN (${d.sightings(json)}) s ON s.node_id = n.node_id`;
  const where: SQL[] = [];
  if (q.channel !== undefined) where.push(sql`n.channel = ${q.channel}`);
  if (q.lifecycle !== undefined) where.push(sql`${c.lifecycle} = ${q.lifecycle}`);
  if (q.drift !== undefined) where.push(q.drift ? c.drift : sql`NOT ${c.drift}`);
  for (const [k, v] of q.labels) where.push(d.hasLabel(k, v));
  const matching = where.length === 0 ? sql`` : sql` WHERE ${sql.join(where, sql` AND `)}`;
  const count = sql`SELECT count(*) AS total FROM ${from}${matching}`;

  const { key } = sortKey(q, c, d);
  const id = sql`n.node_id ${d.bytewise}`;
  const dir = q.descending ? sql.raw("DESC") : sql.raw("ASC");
  const paged = [...where];
  if (q.after) {
    const cmp = q.descending ? sql.raw("<") : sql.raw(">");
    const value = q.after.value ?? NEVER_SEEN_KEY;
    paged.push(sql`(${key} ${cmp} ${value} OR (${key} = ${value} AND ${id} ${cmp} ${q.after.nodeId}))`);
  }
  const pagedWhere = paged.length === 0 ? sql`` : sql` WHERE ${sql.join(paged, sql` AND `)}`;
  const offset = q.after || q.offset === 0 ? sql`` : sql` OFFSET ${q.offset}`;
  const page = sql`SELECT n.node_id AS node_id, n.channel AS channel, n.labels AS labels, ${c.lifecycle} AS lifecycle,
      ${c.seen} AS seen, ${c.reported} AS reported, ${c.desired} AS desired, ${c.drift} AS drift,
      n.drained AS drained, n.drain_reason AS drain_reason
    FROM ${from}${pagedWhere}
    ORDER BY ${key} ${dir}, ${id} ${dir} LIMIT ${q.limit}${offset}`;
  return { page, count };
}

/** A page row as either driver returns it (PostgreSQL's bigint as text, SQLite's booleans as 0/1). */
export interface FleetSearchSqlRow {
  node_id: string;
  channel: string;
  labels: string;
  lifecycle: string;
  seen: number | string | null;
  reported: string;
  desired: string;
  drift: boolean | number;
  drained: boolean | number;
  drain_reason: string;
}

export function rowOfSearch(r: FleetSearchSqlRow): FleetSearchStoreRow {
  return {
    nodeId: r.node_id,
    channel: r.channel,
    labels: JSON.parse(r.labels) as Record<string, string>,
    lifecycle: r.lifecycle as Lifecycle,
    lastSeenMs: r.seen === null ? undefined : Number(r.seen),
    reportedReleaseId: r.reported,
    desiredReleaseId: r.desired,
    drift: Boolean(r.drift),
    drained: Boolean(r.drained),
    drainReason: r.drain_reason,
  };
}
