import { sql, type SQL } from "drizzle-orm";
import type { NodeSighting } from "./fleet-rows.js";

/** The totals of the fleet view: what GetFleetStatus answers in `totals`. */
export interface FleetCounts {
  total: number;
  up: number;
  stale: number;
  unknown: number;
  draining: number;
  drifted: number;
}

/** Which nodes the totals cover, and what the server knows that the store does not yet. */
export interface FleetTotalsQuery {
  /** Every channel when undefined. */
  channel?: string;
  /** A node last seen at or after this time is up; before it, stale. */
  seenSinceMs: number;
  /** Sightings buffered in this server and not yet written (SightingBuffer.pending()). */
  sightings: readonly NodeSighting[];
}

/** A buffered node as the store holds it. */
export interface StoredSightingRow {
  nodeId: string;
  lastSeenMs: number | null;
  reportedReleaseId: string | null;
  desiredReleaseId: string | null;
}

/**
 * What a store reads for the totals, all at one snapshot: the counts its projection keeps
 * (fleet_totals and fleet_seen, maintained by triggers on nodes) and the stored rows of the
 * buffered nodes of the selection.
 */
export interface FleetTotalsSnapshot {
  total: number;
  draining: number;
  drifted: number;
  unknown: number;
  /** Nodes last seen at or after seenSinceMs. */
  up: number;
  buffered: readonly StoredSightingRow[];
}

/** The bucket arithmetic of fleet_seen: whole seconds after `since`, and the part of its own second. */
export function seenBuckets(seenSinceMs: number): { afterSecond: number; partialFromMs: number; partialToMs: number } {
  const second = Math.floor(seenSinceMs / 1000);
  return { afterSecond: second, partialFromMs: seenSinceMs, partialToMs: (second + 1) * 1000 };
}

const drifts = (desired: string | null, reported: string | null) => desired !== null && desired !== (reported ?? "");

/**
 * The totals of a snapshot with the buffered sightings applied the way SightingBuffer.overlay
 * applies them to a node: a sighting older than the stored last-seen time changes nothing;
 * otherwise it sets last seen and, when it carries one, the reported release. So the totals
 * equal a recount of every node as this server answers it, at the snapshot's time.
 */
export function fleetTotalsOf(snapshot: FleetTotalsSnapshot, q: FleetTotalsQuery): FleetCounts {
  let { up, unknown, drifted } = snapshot;
  const byId = new Map(q.sightings.map((s) => [s.nodeId, s]));
  for (const row of snapshot.buffered) {
    const s = byId.get(row.nodeId);
    if (!s || (row.lastSeenMs !== null && s.lastSeenMs < row.lastSeenMs)) continue;
    if (row.lastSeenMs === null) unknown--;
    else if (row.lastSeenMs >= q.seenSinceMs) up--;
    if (s.lastSeenMs >= q.seenSinceMs) up++;
    const reported = s.reportedReleaseId ?? row.reportedReleaseId;
    drifted += Number(drifts(row.desiredReleaseId, reported)) - Number(drifts(row.desiredReleaseId, row.reportedReleaseId));
  }
  return { total: snapshot.total, up, stale: snapshot.total - unknown - up, unknown, draining: snapshot.draining, drifted };
}

/**
 * The desired release of a node of `channel` as the stores keep it in nodes.desired_release_id:
 * the rule of src/services/desired-release.ts in SQL (the node's newest move when it is not
 * older than the channel's latest unstaged release, else that release; a pin, while the node
 * has one, before either: the next move removes it). The migration's
 * triggers apply the same expression when a move or an unstaged release is stored;
 * `unstaged` is the dialect's test of an unstaged release row `r`.
 */
export function desiredReleaseSql(nodeId: string, channel: string, unstaged: SQL): SQL {
  const latest = sql`SELECT r.release_id, r.published_at_ms FROM releases r WHERE r.channel = ${channel} AND ${unstaged} ORDER BY r.seq DESC LIMIT 1`;
  return sql`coalesce(
    (SELECT p.pinned_release_id FROM nodes p WHERE p.node_id = ${nodeId}),
    (SELECT CASE WHEN m.moved_at_ms >= coalesce((SELECT l.published_at_ms FROM (${latest}) l), -1)
                  AND EXISTS (SELECT 1 FROM releases r WHERE r.release_id = m.release_id)
             THEN m.release_id END
       FROM rollout_moves m WHERE m.node_id = ${nodeId} ORDER BY m.seq DESC LIMIT 1),
    (SELECT l.release_id FROM (${latest}) l))`;
}
