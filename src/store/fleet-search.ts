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
  /** The join of the sightings s to nodes n driven from s (a primary key lookup per sighting). */
  sightingsJoin: SQL;
  /** Whether the node's labels (JSON text in n.labels) carry key=value. */
  hasLabel(key: string, value: string): SQL;
  /** Appended to a text expression so it compares and sorts by code point. */
  bytewise: SQL;
}

/** A nullable text column with null read as "": spelled without a comma, as drizzle-kit can write it in an SQLite index. */
const orEmpty = (column: SQL) => sql`(CASE WHEN ${column} IS NULL THEN '' ELSE ${column} END)`;

/**
 * The search's columns of a node n: as stored, or (overlaid) with its buffered sighting s
 * applied as SightingBuffer.overlay applies it.
 */
function columns(q: FleetSearchQuery, overlaid: boolean) {
  const applies = sql`(s.seen >= coalesce(n.last_seen_ms, -1))`;
  const seen = overlaid ? sql`(CASE WHEN ${applies} THEN s.seen ELSE n.last_seen_ms END)` : sql`n.last_seen_ms`;
  const reported = overlaid
    ? sql`(CASE WHEN ${applies} AND s.rel IS NOT NULL THEN s.rel ELSE ${orEmpty(sql`n.reported_release_id`)} END)`
    : orEmpty(sql`n.reported_release_id`);
  const desired = orEmpty(sql`n.desired_release_id`);
  const drift = sql`(${desired} <> '' AND ${desired} <> ${reported})`;
  // nodeLifecycle: age <= threshold is seen >= now - threshold (integer milliseconds).
  const lifecycle = sql`(CASE WHEN n.drained THEN 'DRAINING' WHEN ${seen} IS NULL THEN 'UNAVAILABLE'
    WHEN ${seen} >= ${q.nowMs - q.staleAfterMs} THEN 'HEALTHY'
    WHEN ${seen} >= ${q.nowMs - q.staleAfterMs * UNAVAILABLE_FACTOR} THEN 'STALE' ELSE 'UNAVAILABLE' END)`;
  return { seen, reported, desired, drift, lifecycle };
}

/**
 * The sort key of an order: text compared by code point, never-seen below any time. Spelled
 * as the indexes of migrations sqlite/0014 and pg/0016 are (the constant inline, not bound),
 * so that the stored rows are read in index order.
 */
function sortKey(q: FleetSearchQuery, c: ReturnType<typeof columns>, d: SearchDialect): SQL {
  const text = (e: SQL) => sql`${e} ${d.bytewise}`;
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
      return sql`coalesce(${c.seen}, ${sql.raw(String(NEVER_SEEN_KEY))})`;
  }
}

/**
 * The two statements of a search: its page (the columns of FleetSearchSqlRow) and the count
 * of every matching node. Ties of the order key are broken by node id, in the same direction,
 * so a keyset `after` continues exactly where the previous page stopped.
 *
 * The nodes without a buffered sighting are searched by their stored columns (so an index on
 * the order key serves the page); those with one, by a primary key lookup per sighting with
 * the sighting applied. The page is the first rows of both, merged.
 */
export function fleetSearchSql(q: FleetSearchQuery, d: SearchDialect): { page: SQL; count: SQL } {
  const json = JSON.stringify(q.sightings.map((s) => [s.nodeId, s.lastSeenMs, s.reportedReleaseId ?? null]));
  const buffered = q.sightings.length > 0;
  const dir = sql.raw(q.descending ? "DESC" : "ASC");
  const textKey = q.orderBy !== "last_seen";
  const id = sql`n.node_id ${d.bytewise}`;

  /** Matching nodes by their stored or overlaid columns; of every node, or only of the buffered ones. */
  const part = (overlaid: boolean, ofBuffered: boolean) => {
    const c = columns(q, overlaid);
    const where: SQL[] = [];
    if (q.channel !== undefined) where.push(sql`n.channel = ${q.channel}`);
    if (q.lifecycle !== undefined) where.push(sql`${c.lifecycle} = ${q.lifecycle}`);
    if (q.drift !== undefined) where.push(q.drift ? c.drift : sql`NOT ${c.drift}`);
    for (const [k, v] of q.labels) where.push(d.hasLabel(k, v));
    const from = ofBuffered ? sql`(${d.sightings(json)}) s ${d.sightingsJoin} nodes n ON n.node_id = s.node_id` : sql`nodes n`;
    const key = sortKey(q, c, d);
    const paged = [...where];
    // The stored rows of the page are those of the nodes without a buffered sighting.
    if (!ofBuffered && buffered) paged.push(sql`n.node_id NOT IN (SELECT x.node_id FROM (${d.sightings(json)}) x)`);
    if (q.after) {
      const cmp = sql.raw(q.descending ? "<" : ">");
      const value = q.after.value ?? NEVER_SEEN_KEY;
      paged.push(sql`(${key} ${cmp} ${value} OR (${key} = ${value} AND ${id} ${cmp} ${q.after.nodeId}))`);
    }
    const whereOf = (w: SQL[]) => (w.length === 0 ? sql`` : sql` WHERE ${sql.join(w, sql` AND `)}`);
    const select = sql`SELECT n.node_id AS node_id, n.channel AS channel, n.labels AS labels, ${c.lifecycle} AS lifecycle,
        ${c.seen} AS seen, ${c.reported} AS reported, ${c.desired} AS desired, ${c.drift} AS drift,
        n.drained AS drained, n.drain_reason AS drain_reason, ${key} AS k
      FROM ${from}${whereOf(paged)}`;
    // Each part's first rows up to the end of the page: the merged page is among them.
    const rows = sql`SELECT * FROM (${select} ORDER BY ${key} ${dir}, ${id} ${dir} LIMIT ${q.limit + (q.after ? 0 : q.offset)}) ${sql.raw(overlaid ? "b" : "a")}`;
    return { rows, count: sql`(SELECT count(*) FROM ${from}${whereOf(where)})` };
  };

  const stored = part(false, false);
  const union = buffered ? sql`${stored.rows} UNION ALL ${part(true, true).rows}` : stored.rows;
  const offset = q.after || q.offset === 0 ? sql`` : sql` OFFSET ${q.offset}`;
  const page = sql`SELECT * FROM (${union}) u ORDER BY u.k ${textKey ? d.bytewise : sql``} ${dir}, u.node_id ${d.bytewise} ${dir} LIMIT ${q.limit}${offset}`;
  // Every node by its stored columns, less the buffered ones by theirs, plus those by their overlaid ones:
  // the buffered nodes are counted by lookups, not excluded from a scan of every node.
  const count = buffered
    ? sql`SELECT ${stored.count} - ${part(false, true).count} + ${part(true, true).count} AS total`
    : sql`SELECT ${stored.count} AS total`;
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
