import { asc, eq, inArray, notInArray, sql } from "drizzle-orm";
import type { NodePgDatabase } from "drizzle-orm/node-postgres";
import type { Node } from "../../../gen/autonomy/v1/nodes_pb.js";
import type { NodeAck } from "../../../gen/autonomy/v1/releases_pb.js";
import { withFields } from "../../domain/audit.js";
import { TERMINAL_PHASES } from "../../domain/rollouts.js";
import { desiredReleaseSql } from "../fleet-totals.js";
import { rowToAck, rowToNode } from "../fleet-rows.js";
import {
  divergenceWhere,
  haltedByStop,
  NO_STOP,
  refuseDuringStop,
  requireDesired,
  requirePinnable,
  stopEnded,
  stopStarted,
  withHalted,
  type DivergedRow,
  type DivergenceQuery,
  type EmergencyChange,
  type EmergencyStopResult,
  type EmergencyStopRow,
} from "../operation-rows.js";
import type { AuditRow } from "../rollout-rows.js";
import { requireNode } from "../write-rules.js";
import { appendAudit } from "./rollouts.js";
import { STOP_COLUMNS, stopForWrite } from "./stop-guard.js";
import { emergencyStop, nodeAcks, nodes, releases, rolloutPlans, rolloutStatus } from "./schema.js";

type Db = NodePgDatabase;

async function nodeRow(tx: Db, id: string, lock = false) {
  const query = tx.select().from(nodes).where(eq(nodes.nodeId, id));
  const [row] = lock ? await query.for("update") : await query;
  return requireNode(id, row);
}

/** The emergency stop, pins and reapply requests of the PostgreSQL store; each write is one transaction. */
export const pgOperations = {
  async emergencyStop(db: Db): Promise<EmergencyStopRow> {
    const [row] = await db.select(STOP_COLUMNS).from(emergencyStop).where(eq(emergencyStop.id, 1));
    return row ?? NO_STOP;
  },

  async startEmergencyStop(db: Db, c: EmergencyChange): Promise<EmergencyStopResult> {
    return db.transaction(async (tx) => {
      const [previous] = await tx.select(STOP_COLUMNS).from(emergencyStop).where(eq(emergencyStop.id, 1)).for("update");
      if (previous?.active) return { state: previous, changed: false, haltedPlanIds: [] };
      // Each plan's status row locked: a controller's write of it waits, then fails its version check.
      const unfinished = await tx
        .select({ plan: rolloutPlans, status: rolloutStatus })
        .from(rolloutStatus)
        .innerJoin(rolloutPlans, eq(rolloutPlans.planId, rolloutStatus.planId))
        .where(notInArray(rolloutStatus.phase, [...TERMINAL_PHASES, "halted"]))
        .orderBy(asc(rolloutStatus.planId))
        .for("update", { of: rolloutStatus });
      const halted: string[] = [];
      const records: AuditRow[] = [];
      for (const { plan, status } of unfinished) {
        const { seq: _, ...planRow } = plan;
        const next = haltedByStop(planRow, status, c);
        await tx.update(rolloutStatus).set(next.status).where(eq(rolloutStatus.planId, plan.planId));
        halted.push(plan.planId);
        records.push(next.audit);
      }
      const state = stopStarted(c, previous ?? NO_STOP);
      await tx.update(emergencyStop).set(state).where(eq(emergencyStop.id, 1));
      await appendAudit(tx, [withHalted(c.audit, halted), ...records]);
      return { state, changed: true, haltedPlanIds: halted };
    });
  },

  async endEmergencyStop(db: Db, c: EmergencyChange): Promise<{ state: EmergencyStopRow; changed: boolean }> {
    return db.transaction(async (tx) => {
      const [previous] = await tx.select(STOP_COLUMNS).from(emergencyStop).where(eq(emergencyStop.id, 1)).for("update");
      if (!previous?.active) return { state: previous ?? NO_STOP, changed: false };
      const state = stopEnded(c, previous);
      await tx.update(emergencyStop).set(state).where(eq(emergencyStop.id, 1));
      await appendAudit(tx, [c.audit]);
      return { state, changed: true };
    });
  },

  async divergedNodes(db: Db, q: DivergenceQuery): Promise<DivergedRow[]> {
    const rows = await db
      .select()
      .from(nodes)
      .where(divergenceWhere(nodes, q))
      .orderBy(asc(nodes.divergedSinceMs), asc(nodes.nodeId))
      .limit(q.limit);
    return rows.map((r) => ({ node: rowToNode(r), desiredReleaseId: r.desiredReleaseId ?? "", divergedSinceMs: Number(r.divergedSinceMs) }));
  },

  async acksOfNodes(db: Db, ids: readonly string[]): Promise<NodeAck[]> {
    if (ids.length === 0) return [];
    return (await db.select().from(nodeAcks).where(inArray(nodeAcks.nodeId, [...ids]))).map(rowToAck);
  },

  async acceptReported(db: Db, nodeId: string, atMs: number, reason: string, audit: AuditRow): Promise<Node> {
    return db.transaction(async (tx) => {
      const n = await nodeRow(tx, nodeId, true);
      const [known] = n.reportedReleaseId === null ? [] : await tx.select({ id: releases.releaseId }).from(releases).where(eq(releases.releaseId, n.reportedReleaseId));
      const reported = requirePinnable(nodeId, n.reportedReleaseId, known !== undefined);
      await tx
        .update(nodes)
        .set({ pinnedReleaseId: reported, pinnedAtMs: atMs, pinReason: reason, desiredReleaseId: reported, reapplyReleaseId: null, reapplyRequestedAtMs: null })
        .where(eq(nodes.nodeId, nodeId));
      await appendAudit(tx, [withFields(audit, { pinned_release_id: reported, previous_desired_release_id: n.desiredReleaseId ?? "" })]);
      return rowToNode(await nodeRow(tx, nodeId));
    });
  },

  async unpinNode(db: Db, nodeId: string, audit: AuditRow): Promise<Node> {
    return db.transaction(async (tx) => {
      const n = await nodeRow(tx, nodeId, true);
      if (n.pinnedReleaseId === null) return rowToNode(n);
      await tx.update(nodes).set({ pinnedReleaseId: null, pinnedAtMs: null, pinReason: "" }).where(eq(nodes.nodeId, nodeId));
      await tx
        .update(nodes)
        .set({ desiredReleaseId: sql`(${desiredReleaseSql(nodeId, n.channel, sql.raw("NOT r.staged"))})` })
        .where(eq(nodes.nodeId, nodeId));
      const after = await nodeRow(tx, nodeId);
      await appendAudit(tx, [withFields(audit, { unpinned_release_id: n.pinnedReleaseId, desired_release_id: after.desiredReleaseId ?? "" })]);
      return rowToNode(after);
    });
  },

  async requestReapply(db: Db, nodeId: string, atMs: number, audit: AuditRow): Promise<Node> {
    return db.transaction(async (tx) => {
      refuseDuringStop(await stopForWrite(tx), "reapplying a release");
      const n = await nodeRow(tx, nodeId, true);
      const desired = requireDesired(nodeId, n.desiredReleaseId);
      await tx.update(nodes).set({ reapplyReleaseId: desired, reapplyRequestedAtMs: atMs }).where(eq(nodes.nodeId, nodeId));
      await appendAudit(tx, [withFields(audit, { release_id: desired })]);
      return rowToNode(await nodeRow(tx, nodeId));
    });
  },
};
