import { and, eq, sql } from "drizzle-orm";
import type { BetterSQLite3Database } from "drizzle-orm/better-sqlite3";
import type { AckRow, NodeRow, NodeSighting, ReleaseRow } from "../fleet-rows.js";
import { labelsToJson } from "../fleet-rows.js";
import { requireNode, requireRelease, requireSameRelease } from "../write-rules.js";
import { desiredReleaseSql } from "../fleet-totals.js";
import type { AuditRow } from "../rollout-rows.js";
import type { Enrollment } from "../store.js";
import type { AppendAudit } from "./audit-writes.js";
import { refuseDuringStop } from "../operation-rows.js";
import { prepareStopRead } from "./operation-writes.js";
import type { WriteHandlers } from "./write-ops.js";
import { nodeAcks, nodes, releases } from "./schema.js";

/** A fleet write, run by the writer thread inside its own savepoint. */
export type FleetWrite =
  | { op: "publishRelease"; row: ReleaseRow; audit?: AuditRow }
  | { op: "upsertAck"; row: AckRow; audit?: AuditRow }
  | { op: "enrollNode"; enrollment: Enrollment; nowMs: number; audit?: AuditRow }
  | { op: "setDrained"; nodeId: string; drained: boolean; reason: string; audit?: AuditRow }
  | { op: "recordSightings"; sightings: readonly NodeSighting[] };

/** What each fleet write answers. */
export interface FleetWriteResults {
  publishRelease: { release: ReleaseRow; created: boolean };
  upsertAck: { ack: AckRow; stale: boolean };
  enrollNode: { node: NodeRow };
  setDrained: { node: NodeRow };
  recordSightings: { recorded: number };
}

/**
 * The update a sighting makes to its node, run with { id, seen, release, version } (release and
 * version null when the sighting carries none). Set expressions read the old row, so the
 * reported release follows only a newer sighting. The rollout bench's ceiling runs it too.
 */
export function prepareSightingUpdate(db: BetterSQLite3Database) {
  return db
    .update(nodes)
    .set({
      lastSeenMs: sql`max(coalesce(${nodes.lastSeenMs}, 0), ${sql.placeholder("seen")})`,
      reportedReleaseId: sql`case when ${sql.placeholder("release")} is not null and ${sql.placeholder("seen")} >= coalesce(${nodes.lastSeenMs}, 0) then ${sql.placeholder("release")} else ${nodes.reportedReleaseId} end`,
      agentVersion: sql`coalesce(${sql.placeholder("version")}, ${nodes.agentVersion})`,
    })
    .where(eq(nodes.nodeId, sql.placeholder("id")))
    .prepare();
}

/**
 * The fleet writes of the SQLite store. They run synchronously on the writer connection, so
 * each is atomic inside the writer's transaction and commits durably with its group.
 */
export function prepareFleetWrites(db: BetterSQLite3Database, audit: AppendAudit) {
  const releaseById = db.select().from(releases).where(eq(releases.releaseId, sql.placeholder("id"))).prepare();
  const nodeById = db.select().from(nodes).where(eq(nodes.nodeId, sql.placeholder("id"))).prepare();
  const ackOf = db
    .select()
    .from(nodeAcks)
    .where(and(eq(nodeAcks.releaseId, sql.placeholder("releaseId")), eq(nodeAcks.nodeId, sql.placeholder("nodeId"))))
    .prepare();
  const p = (name: keyof AckRow) => sql.placeholder(name);
  const upsertAck = db
    .insert(nodeAcks)
    .values({
      releaseId: p("releaseId"),
      nodeId: p("nodeId"),
      state: p("state"),
      message: p("message"),
      reportedReleaseId: p("reportedReleaseId"),
      observedAtMs: p("observedAtMs"),
      updatedAtMs: p("updatedAtMs"),
    })
    .onConflictDoUpdate({
      target: [nodeAcks.releaseId, nodeAcks.nodeId],
      set: {
        state: sql`excluded.state`,
        message: sql`excluded.message`,
        reportedReleaseId: sql`excluded.reported_release_id`,
        observedAtMs: sql`excluded.observed_at_ms`,
        updatedAtMs: sql`excluded.updated_at_ms`,
      },
      // An ack observed before the stored one arrived late: it changes nothing.
      setWhere: sql`${nodeAcks.observedAtMs} <= excluded.observed_at_ms`,
    })
    .returning()
    .prepare();
  const sighting = prepareSightingUpdate(db);

  const node = (id: string): NodeRow => requireNode(id, nodeById.get({ id }));
  const stop = prepareStopRead(db);

  return {
    publishRelease: (w) => {
      // An unstaged release moves its channel's nodes: a stop refuses a new one (the same one again is a no-op).
      if (!w.row.staged && !releaseById.get({ id: w.row.releaseId })) refuseDuringStop(stop(), "publishing an unstaged release");
      const inserted = db.insert(releases).values(w.row).onConflictDoNothing().run().changes;
      const stored = releaseById.get({ id: w.row.releaseId })!;
      if (inserted === 0) requireSameRelease(stored, w.row);
      if (inserted === 1 && w.audit) audit([w.audit]);
      return { release: stored, created: inserted === 1 };
    },
    upsertAck: (w) => {
      // One statement on the way of an ack storm: the foreign keys check the release and the
      // node; only a refused ack looks up which one is missing.
      let changed: AckRow | undefined;
      try {
        changed = upsertAck.get({ ...w.row });
      } catch (err) {
        if ((err as { code?: unknown }).code !== "SQLITE_CONSTRAINT_FOREIGNKEY") throw err;
        requireRelease(w.row.releaseId, releaseById.get({ id: w.row.releaseId }));
        node(w.row.nodeId);
        throw err;
      }
      if (changed && w.audit) audit([w.audit]);
      // A stale ack changed nothing (RETURNING is empty): answer the stored one.
      return { ack: changed ?? ackOf.get({ releaseId: w.row.releaseId, nodeId: w.row.nodeId })!, stale: !changed };
    },
    enrollNode: (w) => {
      const { nodeId, channel, labels, agentVersion } = w.enrollment;
      const json = labelsToJson(labels);
      const desiredReleaseId = sql`(${desiredReleaseSql(nodeId, channel, sql.raw("r.staged = 0"))})`;
      db.insert(nodes)
        .values({ nodeId, channel, labels: json, agentVersion, enrolledAtMs: w.nowMs, drained: false, drainReason: "", desiredReleaseId })
        .onConflictDoUpdate({ target: nodes.nodeId, set: { channel, labels: json, agentVersion, desiredReleaseId: sql`excluded.desired_release_id` } })
        .run();
      if (w.audit) audit([w.audit]);
      return { node: node(nodeId) };
    },
    setDrained: (w) => {
      node(w.nodeId);
      db.update(nodes)
        .set({ drained: w.drained, drainReason: w.drained ? w.reason : "" })
        .where(eq(nodes.nodeId, w.nodeId))
        .run();
      if (w.audit) audit([w.audit]);
      return { node: node(w.nodeId) };
    },
    recordSightings: (w) => {
      let recorded = 0;
      for (const s of w.sightings) {
        recorded += sighting.run({
          id: s.nodeId,
          seen: s.lastSeenMs,
          release: s.reportedReleaseId ?? null,
          version: s.agentVersion ?? null,
        }).changes;
      }
      return { recorded };
    },
  } satisfies WriteHandlers<FleetWrite, FleetWriteResults>;
}
