import { and, asc, desc, eq, getTableColumns, gt, inArray, isNotNull, sql, type SQL } from "drizzle-orm";
import type Database from "better-sqlite3";
import type { BetterSQLite3Database } from "drizzle-orm/better-sqlite3";
import type { Event } from "../../../gen/autonomy/v1/events_pb.js";
import type { Node } from "../../../gen/autonomy/v1/nodes_pb.js";
import type { NodeAck, Release } from "../../../gen/autonomy/v1/releases_pb.js";
import { rowToEvent } from "../event-rows.js";
import { rowToAck, rowToNode, rowToRelease } from "../fleet-rows.js";
import { fleetTotalsOf, seenBuckets, type FleetCounts, type FleetTotalsQuery, type StoredSightingRow } from "../fleet-totals.js";
import { fleetSearchSql, rowOfSearch, type FleetSearchQuery, type FleetSearchResult, type FleetSearchSqlRow, type SearchDialect } from "../fleet-search.js";
import type { NodeQuery } from "../store.js";
import { events, nodeAcks, nodeLastEvents, nodes, releases, workloadNodes } from "./schema.js";

/**
 * Which buffered nodes a sighting may move between classes (see fleetTotalsOf): never seen,
 * seen before the threshold, or reported another release than the sighting says. The others,
 * most of a buffer in a steady fleet, are not read out.
 */
const BUFFERED_MAY_CHANGE = "n.last_seen_ms IS NULL OR n.last_seen_ms < @since OR (s.value IS NOT NULL AND s.value IS NOT n.reported_release_id)";

/** SQLite's spelling of the fleet search: JSON1 for the sightings and the labels; text compares bytewise already. */
const SEARCH_DIALECT: SearchDialect = {
  sightings: (json) =>
    sql`SELECT json_extract(value, '$[0]') AS node_id, json_extract(value, '$[1]') AS seen, json_extract(value, '$[2]') AS rel FROM json_each(${json})`,
  // Driven from the sightings: SQLite would otherwise scan json_each once per node.
  sightingsJoin: sql`CROSS JOIN`,
  hasLabel: (key, value) => sql`EXISTS (SELECT 1 FROM json_each(n.labels) l WHERE l.key = ${key} AND l.value = ${value})`,
  bytewise: sql``,
};

/** The fleet reads of the SQLite store, on the reader connection (synchronous, like the driver). */
export function prepareFleetReads(db: BetterSQLite3Database, reader: Database.Database) {
  const latest = db
    .select()
    .from(releases)
    .where(eq(releases.channel, sql.placeholder("channel")))
    .orderBy(desc(releases.seq))
    .limit(1)
    .prepare();
  const latestUnstaged = db
    .select()
    .from(releases)
    .where(and(eq(releases.channel, sql.placeholder("channel")), eq(releases.staged, false)))
    .orderBy(desc(releases.seq))
    .limit(1)
    .prepare();
  const release = db.select().from(releases).where(eq(releases.releaseId, sql.placeholder("id"))).prepare();
  const node = db.select().from(nodes).where(eq(nodes.nodeId, sql.placeholder("id"))).prepare();
  const acksOfRelease = db
    .select()
    .from(nodeAcks)
    .where(eq(nodeAcks.releaseId, sql.placeholder("id")))
    .orderBy(asc(nodeAcks.nodeId))
    .prepare();
  const acksOfNode = db
    .select()
    .from(nodeAcks)
    .where(eq(nodeAcks.nodeId, sql.placeholder("id")))
    .orderBy(desc(nodeAcks.updatedAtMs), asc(nodeAcks.releaseId))
    .prepare();
  // The newest event of each type, one row per type from the projection a trigger keeps.
  const { receivedAtMs: _, ...eventColumns } = getTableColumns(events);
  const lastEvents = db
    .select(eventColumns)
    .from(nodeLastEvents)
    .innerJoin(events, eq(events.seq, nodeLastEvents.seq))
    .where(eq(nodeLastEvents.nodeId, sql.placeholder("id")))
    .orderBy(asc(events.eventType))
    .prepare();
  const fingerprint = db
    .select({ fp: events.lockFingerprint })
    .from(events)
    .where(and(eq(events.nodeId, sql.placeholder("id")), isNotNull(events.lockFingerprint)))
    .orderBy(desc(events.seq))
    .limit(1)
    .prepare();

  // One statement, so the counts and the buffered nodes' rows come from one snapshot.
  const totalsOf = (channel: boolean) => {
    const ch = (alias = "") => (channel ? `AND ${alias}channel = @channel` : "");
    const partial = channel
      ? "SELECT count(*) FROM nodes WHERE channel = @channel AND last_seen_ms >= @from AND last_seen_ms < @to"
      : // Per channel, so the (channel, last_seen_ms) index serves it.
        "SELECT count(*) FROM (SELECT DISTINCT channel FROM fleet_totals) c JOIN nodes n ON n.channel = c.channel AND n.last_seen_ms >= @from AND n.last_seen_ms < @to";
    return reader.prepare(`SELECT
      (SELECT coalesce(sum(n), 0) FROM fleet_totals WHERE 1 ${ch()}) AS total,
      (SELECT coalesce(sum(n), 0) FROM fleet_totals WHERE drained ${ch()}) AS draining,
      (SELECT coalesce(sum(n), 0) FROM fleet_totals WHERE drifted ${ch()}) AS drifted,
      (SELECT coalesce(sum(n), 0) FROM fleet_totals WHERE NOT seen ${ch()}) AS unknown,
      (SELECT coalesce(sum(n), 0) FROM fleet_seen WHERE seen_s > @after ${ch()}) + (${partial}) AS up,
      (SELECT json_group_array(json_array(n.node_id, n.last_seen_ms, n.reported_release_id, n.desired_release_id))
         FROM json_each(@sightings) s CROSS JOIN nodes n ON n.node_id = s.key
         WHERE (${BUFFERED_MAY_CHANGE}) ${ch("n.")}) AS buffered`);
  };
  const totalsOfChannel = totalsOf(true);
  const totalsOfAll = totalsOf(false);

  return {
    fleetTotals: (q: FleetTotalsQuery): FleetCounts => {
      const { afterSecond, partialFromMs, partialToMs } = seenBuckets(q.seenSinceMs);
      // {node id: reported release or null}: json_each yields them as key and value, cheaply.
      const sightings: Record<string, string | null> = {};
      for (const s of q.sightings) sightings[s.nodeId] = s.reportedReleaseId ?? null;
      const params = { after: afterSecond, from: partialFromMs, to: partialToMs, since: q.seenSinceMs, sightings: JSON.stringify(sightings) };
      const row = (q.channel === undefined ? totalsOfAll.get(params) : totalsOfChannel.get({ ...params, channel: q.channel })) as {
        total: number;
        draining: number;
        drifted: number;
        unknown: number;
        up: number;
        buffered: string;
      };
      const buffered = (JSON.parse(row.buffered) as [string, number | null, string | null, string | null][]).map(
        ([nodeId, lastSeenMs, reportedReleaseId, desiredReleaseId]): StoredSightingRow => ({ nodeId, lastSeenMs, reportedReleaseId, desiredReleaseId }),
      );
      return fleetTotalsOf({ ...row, buffered }, q);
    },
    latestRelease: (channel: string, unstagedOnly = false): Release | undefined => {
      const row = (unstagedOnly ? latestUnstaged : latest).get({ channel });
      return row && rowToRelease(row);
    },
    getRelease: (id: string): Release | undefined => {
      const row = release.get({ id });
      return row && rowToRelease(row);
    },
    acksOfRelease: (id: string): NodeAck[] => acksOfRelease.all({ id }).map(rowToAck),
    acksOfNode: (id: string): NodeAck[] => acksOfNode.all({ id }).map(rowToAck),
    getNode: (id: string): Node | undefined => {
      const row = node.get({ id });
      return row && rowToNode(row);
    },
    listNodes: (q: NodeQuery): Node[] => {
      const where: SQL[] = [];
      if (q.channel !== undefined) where.push(eq(nodes.channel, q.channel));
      if (q.afterNodeId !== undefined) where.push(gt(nodes.nodeId, q.afterNodeId));
      if (q.reportingWorkloads) where.push(inArray(nodes.nodeId, db.select({ id: workloadNodes.nodeId }).from(workloadNodes)));
      const query = db.select().from(nodes).where(and(...where)).orderBy(asc(nodes.nodeId));
      return (q.limit === undefined ? query.all() : query.limit(q.limit).all()).map(rowToNode);
    },
    /** Both statements in one read, on the reader connection: one snapshot. */
    searchFleetNodes: (q: FleetSearchQuery): FleetSearchResult => {
      const { page, count } = fleetSearchSql(q, SEARCH_DIALECT);
      const rows = db.all<FleetSearchSqlRow>(page).map(rowOfSearch);
      const total = db.get<{ total: number }>(count).total;
      return { rows, total };
    },
    lastEventsByType: (id: string): Event[] => lastEvents.all({ id }).map(rowToEvent),
    lastLockFingerprint: (id: string): string | undefined => fingerprint.get({ id })?.fp ?? undefined,
  };
}
