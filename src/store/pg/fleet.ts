import { and, asc, desc, eq, getTableColumns, gt, inArray, isNotNull, sql, type SQL } from "drizzle-orm";
import type { NodePgDatabase } from "drizzle-orm/node-postgres";
import type { Event } from "../../../gen/autonomy/v1/events_pb.js";
import type { Node } from "../../../gen/autonomy/v1/nodes_pb.js";
import type { NodeAck, Release } from "../../../gen/autonomy/v1/releases_pb.js";
import { requireNode, requireRelease, requireSameRelease } from "../write-rules.js";
import { rowToEvent } from "../event-rows.js";
import {
  labelsToJson,
  rowToAck,
  rowToNode,
  rowToRelease,
  type AckRow,
  type NodeSighting,
  type ReleaseRow,
} from "../fleet-rows.js";
import { desiredReleaseSql, fleetTotalsOf, seenBuckets, type FleetCounts, type FleetTotalsQuery, type StoredSightingRow } from "../fleet-totals.js";
import { fleetSearchSql, rowOfSearch, type FleetSearchQuery, type FleetSearchResult, type FleetSearchSqlRow, type SearchDialect } from "../fleet-search.js";
import type { Enrollment, NodeQuery } from "../store.js";
import type { Outcome } from "../group-commit.js";
import type { AuditRow } from "../rollout-rows.js";
import { appendAudit } from "./rollouts.js";
import { refuseDuringStop } from "../operation-rows.js";
import { stopForWrite } from "./stop-guard.js";
import { events, nodeAcks, nodeLastEvents, nodes, releases, workloadNodes } from "./schema.js";

type Db = NodePgDatabase;

const ACK_UPDATE = {
  state: sql`excluded.state`,
  message: sql`excluded.message`,
  reportedReleaseId: sql`excluded.reported_release_id`,
  observedAtMs: sql`excluded.observed_at_ms`,
  updatedAtMs: sql`excluded.updated_at_ms`,
};
// An ack observed before the stored one arrived late: it changes nothing.
const ACK_NOT_OLDER = sql`${nodeAcks.observedAtMs} <= excluded.observed_at_ms`;

/** The stored acks of some release and node pairs. */
async function storedAcks(db: Db, keys: readonly { releaseId: string; nodeId: string }[]) {
  return db
    .select()
    .from(nodeAcks)
    .where(
      sql`(${nodeAcks.releaseId}, ${nodeAcks.nodeId}) IN (SELECT * FROM unnest(${sql.param(keys.map((k) => k.releaseId))}::text[], ${sql.param(keys.map((k) => k.nodeId))}::text[]))`,
    );
}

async function nodeRow(db: Db, id: string) {
  const [row] = await db.select().from(nodes).where(eq(nodes.nodeId, id));
  return row;
}

/** PostgreSQL's spelling of the fleet search: labels are JSON text; text compares in the "C" collation (by code point). */
const SEARCH_DIALECT: SearchDialect = {
  sightings: (json) => sql`SELECT x->>0 AS node_id, (x->>1)::bigint AS seen, x->>2 AS rel FROM json_array_elements(${json}::json) x`,
  sightingsJoin: sql`JOIN`,
  hasLabel: (key, value) => sql`(n.labels::jsonb ->> ${key}::text) = ${value}::text`,
  bytewise: sql.raw(`COLLATE "C"`),
};

/**
 * The fleet operations of the PostgreSQL store. Each write is one transaction; conflicts
 * between replicas are settled by the database (ON CONFLICT, row locks), not by the caller.
 */
export const pgFleet = {
  async publishRelease(db: Db, row: ReleaseRow, audit?: AuditRow): Promise<{ release: Release; created: boolean }> {
    return db.transaction(async (tx) => {
      // An unstaged release rewrites the desired release of every node of its channel (a trigger):
      // publishes to one channel take turns, or two of them deadlock on the channel's node rows.
      if (!row.staged) await tx.execute(sql`SELECT pg_advisory_xact_lock(hashtext(${`autonomy.channel:${row.channel}`}))`);
      // An unstaged release moves its channel's nodes: a stop refuses a new one (the same one again is a no-op).
      if (!row.staged) {
        const stop = await stopForWrite(tx);
        if (stop.active) {
          const [existing] = await tx.select({ id: releases.releaseId }).from(releases).where(eq(releases.releaseId, row.releaseId));
          if (!existing) refuseDuringStop(stop, "publishing an unstaged release");
        }
      }
      const inserted = await tx.insert(releases).values(row).onConflictDoNothing().returning({ seq: releases.seq });
      if (inserted.length === 1 && audit) await appendAudit(tx, [audit]);
      const [stored] = await tx.select().from(releases).where(eq(releases.releaseId, row.releaseId));
      if (inserted.length === 0) requireSameRelease(stored, row);
      return { release: rowToRelease(stored), created: inserted.length === 1 };
    });
  },

  async latestRelease(db: Db, channel: string, unstagedOnly = false): Promise<Release | undefined> {
    const where = unstagedOnly ? and(eq(releases.channel, channel), eq(releases.staged, false)) : eq(releases.channel, channel);
    const [row] = await db.select().from(releases).where(where).orderBy(desc(releases.seq)).limit(1);
    return row && rowToRelease(row);
  },

  async getRelease(db: Db, id: string): Promise<Release | undefined> {
    const [row] = await db.select().from(releases).where(eq(releases.releaseId, id));
    return row && rowToRelease(row);
  },

  async upsertAck(db: Db, row: AckRow, audit?: AuditRow): Promise<{ ack: NodeAck; stale: boolean }> {
    return db.transaction(async (tx) => {
      const [release] = await tx.select({ id: releases.releaseId }).from(releases).where(eq(releases.releaseId, row.releaseId));
      requireRelease(row.releaseId, release);
      requireNode(row.nodeId, await nodeRow(tx, row.nodeId));
      const changed = await tx
        .insert(nodeAcks)
        .values(row)
        .onConflictDoUpdate({ target: [nodeAcks.releaseId, nodeAcks.nodeId], set: ACK_UPDATE, setWhere: ACK_NOT_OLDER })
        .returning({ state: nodeAcks.state });
      if (changed.length > 0 && audit) await appendAudit(tx, [audit]);
      const [stored] = await tx
        .select()
        .from(nodeAcks)
        .where(and(eq(nodeAcks.releaseId, row.releaseId), eq(nodeAcks.nodeId, row.nodeId)));
      return { ack: rowToAck(stored), stale: changed.length === 0 };
    });
  },

  /**
   * A group of acks in one transaction (see GroupCommit): an unknown release or node refuses
   * its ack alone; acks of the same release and node apply in the order given, each against
   * the one before, in rounds (one statement may not touch a row twice).
   */
  async upsertAcks(db: Db, items: readonly { row: AckRow; audit?: AuditRow }[]): Promise<Outcome<{ ack: NodeAck; stale: boolean }>[]> {
    return db.transaction(async (tx) => {
      const releaseIds = [...new Set(items.map((i) => i.row.releaseId))];
      const nodeIds = [...new Set(items.map((i) => i.row.nodeId))];
      const [knownReleases, knownNodes] = await Promise.all([
        tx.select({ id: releases.releaseId }).from(releases).where(inArray(releases.releaseId, releaseIds)),
        tx.select({ id: nodes.nodeId }).from(nodes).where(inArray(nodes.nodeId, nodeIds)),
      ]);
      const releaseKnown = new Set(knownReleases.map((r) => r.id));
      const nodeKnown = new Set(knownNodes.map((r) => r.id));
      const outcomes: (Outcome<{ ack: NodeAck; stale: boolean }> | undefined)[] = items.map(({ row }) => {
        try {
          requireRelease(row.releaseId, releaseKnown.has(row.releaseId));
          requireNode(row.nodeId, nodeKnown.has(row.nodeId) || undefined);
          return undefined;
        } catch (error) {
          return { ok: false, error };
        }
      });
      const key = (r: { releaseId: string; nodeId: string }) => `${r.releaseId}\u0000${r.nodeId}`;
      const audits: AuditRow[] = [];
      let pending = items.map((_, i) => i).filter((i) => outcomes[i] === undefined);
      while (pending.length > 0) {
        const round: number[] = [];
        const later: number[] = [];
        const inRound = new Set<string>();
        for (const i of pending) {
          const k = key(items[i].row);
          if (inRound.has(k)) later.push(i);
          else {
            inRound.add(k);
            round.push(i);
          }
        }
        const changed = await tx
          .insert(nodeAcks)
          .values(round.map((i) => items[i].row))
          .onConflictDoUpdate({ target: [nodeAcks.releaseId, nodeAcks.nodeId], set: ACK_UPDATE, setWhere: ACK_NOT_OLDER })
          .returning();
        const changedByKey = new Map(changed.map((r) => [key(r), r]));
        const staleKeys = round.filter((i) => !changedByKey.has(key(items[i].row)));
        const stored = staleKeys.length === 0 ? [] : await storedAcks(tx, staleKeys.map((i) => items[i].row));
        const storedByKey = new Map(stored.map((r) => [key(r), r]));
        for (const i of round) {
          const k = key(items[i].row);
          const row = changedByKey.get(k);
          if (row && items[i].audit) audits.push(items[i].audit!);
          outcomes[i] = { ok: true, value: { ack: rowToAck(row ?? storedByKey.get(k)!), stale: !row } };
        }
        pending = later;
      }
      await appendAudit(tx, audits);
      return outcomes as Outcome<{ ack: NodeAck; stale: boolean }>[];
    });
  },

  async acksOfRelease(db: Db, id: string): Promise<NodeAck[]> {
    const rows = await db.select().from(nodeAcks).where(eq(nodeAcks.releaseId, id)).orderBy(asc(nodeAcks.nodeId));
    return rows.map(rowToAck);
  },

  async acksOfNode(db: Db, id: string): Promise<NodeAck[]> {
    const rows = await db
      .select()
      .from(nodeAcks)
      .where(eq(nodeAcks.nodeId, id))
      .orderBy(desc(nodeAcks.updatedAtMs), asc(nodeAcks.releaseId));
    return rows.map(rowToAck);
  },

  async enrollNode(db: Db, e: Enrollment, nowMs: number, audit?: AuditRow): Promise<Node> {
    const labels = labelsToJson(e.labels);
    return db.transaction(async (tx) => {
      const [row] = await tx
        .insert(nodes)
        .values({
          nodeId: e.nodeId,
          channel: e.channel,
          labels,
          agentVersion: e.agentVersion,
          enrolledAtMs: nowMs,
          drained: false,
          drainReason: "",
          desiredReleaseId: sql`(${desiredReleaseSql(e.nodeId, e.channel, sql.raw("NOT r.staged"))})`,
        })
        .onConflictDoUpdate({
          target: nodes.nodeId,
          set: { channel: e.channel, labels, agentVersion: e.agentVersion, desiredReleaseId: sql`excluded.desired_release_id` },
        })
        .returning();
      if (audit) await appendAudit(tx, [audit]);
      return rowToNode(row);
    });
  },

  async getNode(db: Db, id: string): Promise<Node | undefined> {
    const row = await nodeRow(db, id);
    return row && rowToNode(row);
  },

  async listNodes(db: Db, q: NodeQuery): Promise<Node[]> {
    const where: SQL[] = [];
    if (q.channel !== undefined) where.push(eq(nodes.channel, q.channel));
    if (q.afterNodeId !== undefined) where.push(gt(nodes.nodeId, q.afterNodeId));
    if (q.reportingWorkloads) where.push(inArray(nodes.nodeId, db.select({ id: workloadNodes.nodeId }).from(workloadNodes)));
    const query = db.select().from(nodes).where(and(...where)).orderBy(asc(nodes.nodeId));
    const rows = q.limit === undefined ? await query : await query.limit(q.limit);
    return rows.map(rowToNode);
  },

  async setDrained(db: Db, id: string, drained: boolean, reason: string, audit?: AuditRow): Promise<Node> {
    return db.transaction(async (tx) => {
      const [row] = await tx
        .update(nodes)
        .set({ drained, drainReason: drained ? reason : "" })
        .where(eq(nodes.nodeId, id))
        .returning();
      requireNode(id, row);
      if (audit) await appendAudit(tx, [audit]);
      return rowToNode(row);
    });
  },

  /** One statement for the whole flush: the sightings travel as arrays and are joined by node id. */
  async recordSightings(db: Db, sightings: readonly NodeSighting[]): Promise<void> {
    if (sightings.length === 0) return;
    const ids = sightings.map((s) => s.nodeId);
    const seen = sightings.map((s) => s.lastSeenMs);
    const rels = sightings.map((s) => s.reportedReleaseId ?? null);
    const versions = sightings.map((s) => s.agentVersion ?? null);
    // Set expressions read the old row, so the reported release follows only a newer sighting.
    await db.execute(sql`
      UPDATE ${nodes} SET
        last_seen_ms = greatest(coalesce(${nodes.lastSeenMs}, 0), s.seen),
        reported_release_id = CASE WHEN s.rel IS NOT NULL AND s.seen >= coalesce(${nodes.lastSeenMs}, 0)
          THEN s.rel ELSE ${nodes.reportedReleaseId} END,
        agent_version = coalesce(s.version, ${nodes.agentVersion})
      FROM unnest(${sql.param(ids)}::text[], ${sql.param(seen)}::bigint[], ${sql.param(rels)}::text[], ${sql.param(versions)}::text[]) AS s(node_id, seen, rel, version)
      WHERE ${nodes.nodeId} = s.node_id`);
  },

  /** One statement, so the counts and the buffered nodes' rows come from one snapshot. */
  async fleetTotals(db: Db, q: FleetTotalsQuery): Promise<FleetCounts> {
    const { afterSecond, partialFromMs, partialToMs } = seenBuckets(q.seenSinceMs);
    const ch = q.channel === undefined ? sql`` : sql` AND channel = ${q.channel}`;
    const chN = q.channel === undefined ? sql`` : sql` AND n.channel = ${q.channel}`;
    const partial =
      q.channel === undefined
        ? // Per channel, so the (channel, last_seen_ms) index serves it.
          sql`SELECT count(*) FROM (SELECT DISTINCT channel FROM fleet_totals) c JOIN nodes n ON n.channel = c.channel AND n.last_seen_ms >= ${partialFromMs} AND n.last_seen_ms < ${partialToMs}`
        : sql`SELECT count(*) FROM nodes WHERE channel = ${q.channel} AND last_seen_ms >= ${partialFromMs} AND last_seen_ms < ${partialToMs}`;
    const ids = q.sightings.map((s) => s.nodeId);
    const rels = q.sightings.map((s) => s.reportedReleaseId ?? null);
    const result = await db.execute<{ total: string; draining: string; drifted: string; unknown: string; up: string; buffered: [string, string | null, string | null, string | null][] }>(sql`SELECT
      (SELECT coalesce(sum(n), 0) FROM fleet_totals WHERE true${ch}) AS total,
      (SELECT coalesce(sum(n), 0) FROM fleet_totals WHERE drained${ch}) AS draining,
      (SELECT coalesce(sum(n), 0) FROM fleet_totals WHERE drifted${ch}) AS drifted,
      (SELECT coalesce(sum(n), 0) FROM fleet_totals WHERE NOT seen${ch}) AS unknown,
      (SELECT coalesce(sum(n), 0) FROM fleet_seen WHERE seen_s > ${afterSecond}${ch}) + (${partial}) AS up,
      (SELECT coalesce(json_agg(json_build_array(n.node_id, n.last_seen_ms::text, n.reported_release_id, n.desired_release_id)), '[]'::json)
         FROM unnest(${sql.param(ids)}::text[], ${sql.param(rels)}::text[]) AS s(node_id, rel) JOIN nodes n ON n.node_id = s.node_id
         -- Only the nodes a sighting may move between classes (see fleetTotalsOf); most of a buffer is not read out.
         WHERE (n.last_seen_ms IS NULL OR n.last_seen_ms < ${q.seenSinceMs} OR (s.rel IS NOT NULL AND s.rel IS DISTINCT FROM n.reported_release_id))${chN}) AS buffered`);
    const row = result.rows[0];
    const buffered = row.buffered.map(
      ([nodeId, seen, reportedReleaseId, desiredReleaseId]): StoredSightingRow => ({
        nodeId,
        lastSeenMs: seen === null ? null : Number(seen),
        reportedReleaseId,
        desiredReleaseId,
      }),
    );
    const n = (v: string) => Number(v);
    return fleetTotalsOf({ total: n(row.total), draining: n(row.draining), drifted: n(row.drifted), unknown: n(row.unknown), up: n(row.up), buffered }, q);
  },

  /** The page and the count in one repeatable-read transaction: one snapshot. */
  async searchFleetNodes(db: Db, q: FleetSearchQuery): Promise<FleetSearchResult> {
    const { page, count } = fleetSearchSql(q, SEARCH_DIALECT);
    return db.transaction(
      async (tx) => {
        const rows = (await tx.execute<FleetSearchSqlRow & Record<string, unknown>>(page)).rows.map(rowOfSearch);
        const [{ total }] = (await tx.execute<{ total: string }>(count)).rows;
        return { rows, total: Number(total) };
      },
      { isolationLevel: "repeatable read", accessMode: "read only" },
    );
  },

  async lastEventsByType(db: Db, id: string): Promise<Event[]> {
    // One row per type from the projection a trigger keeps, however many events the node sent.
    const { receivedAtMs: _, ...columns } = getTableColumns(events);
    const rows = await db
      .select(columns)
      .from(nodeLastEvents)
      .innerJoin(events, eq(events.seq, nodeLastEvents.seq))
      .where(eq(nodeLastEvents.nodeId, id))
      .orderBy(asc(events.eventType));
    return rows.map(rowToEvent);
  },

  async lastLockFingerprint(db: Db, id: string): Promise<string | undefined> {
    const [row] = await db
      .select({ fp: events.lockFingerprint })
      .from(events)
      .where(and(eq(events.nodeId, id), isNotNull(events.lockFingerprint)))
      .orderBy(desc(events.seq))
      .limit(1);
    return row?.fp ?? undefined;
  },
};
