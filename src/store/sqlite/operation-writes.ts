import { eq, notInArray, sql } from "drizzle-orm";
import type { BetterSQLite3Database } from "drizzle-orm/better-sqlite3";
import type { AuditRow } from "../rollout-rows.js";
import { TERMINAL_PHASES } from "../../domain/rollouts.js";
import { desiredReleaseSql } from "../fleet-totals.js";
import type { NodeRow } from "../fleet-rows.js";
import {
  haltedByStop,
  NO_STOP,
  refuseDuringStop,
  requireDesired,
  requirePinnable,
  stopEnded,
  stopStarted,
  withHalted,
  type EmergencyChange,
  type EmergencyStopResult,
  type EmergencyStopRow,
} from "../operation-rows.js";
import { requireNode } from "../write-rules.js";
import { withFields } from "../../domain/audit.js";
import type { AppendAudit } from "./audit-writes.js";
import type { WriteHandlers } from "./write-ops.js";
import { emergencyStop, nodes, releases, rolloutPlans, rolloutStatus } from "./schema.js";

/** An operations write, run by the writer thread inside its own savepoint. */
export type OperationWrite =
  | { op: "startEmergencyStop"; change: EmergencyChange }
  | { op: "endEmergencyStop"; change: EmergencyChange }
  | { op: "acceptReported"; nodeId: string; atMs: number; reason: string; audit: AuditRow }
  | { op: "unpinNode"; nodeId: string; audit: AuditRow }
  | { op: "requestReapply"; nodeId: string; atMs: number; audit: AuditRow };

export interface OperationWriteResults {
  startEmergencyStop: EmergencyStopResult;
  endEmergencyStop: { state: EmergencyStopRow; changed: boolean };
  acceptReported: { node: NodeRow };
  unpinNode: { node: NodeRow };
  requestReapply: { node: NodeRow };
}

/** Reads the stop on the writer connection: the guard of every write a stop forbids, in that write's transaction. */
export function prepareStopRead(db: BetterSQLite3Database): () => EmergencyStopRow {
  const { id: _, ...columns } = emergencyStop;
  const read = db
    .select({
      active: columns.active,
      sinceMs: columns.sinceMs,
      stoppedBy: columns.stoppedBy,
      reason: columns.reason,
      resumedAtMs: columns.resumedAtMs,
      resumedBy: columns.resumedBy,
      resumeReason: columns.resumeReason,
    })
    .from(emergencyStop)
    .where(eq(emergencyStop.id, 1))
    .prepare();
  return () => read.get() ?? NO_STOP;
}

/** The emergency stop, pins and reapply requests of the SQLite store, synchronous on the writer connection. */
export function prepareOperationWrites(db: BetterSQLite3Database, audit: AppendAudit) {
  const stop = prepareStopRead(db);
  const nodeById = db.select().from(nodes).where(eq(nodes.nodeId, sql.placeholder("id"))).prepare();
  const node = (id: string): NodeRow => requireNode(id, nodeById.get({ id }));
  const releaseExists = (id: string) => db.select({ id: releases.releaseId }).from(releases).where(eq(releases.releaseId, id)).get() !== undefined;
  const writeStop = (row: EmergencyStopRow) => db.update(emergencyStop).set(row).where(eq(emergencyStop.id, 1)).run();

  return {
    startEmergencyStop: (w) => {
      const previous = stop();
      if (previous.active) return { state: previous, changed: false, haltedPlanIds: [] };
      const unfinished = db
        .select({ plan: rolloutPlans, status: rolloutStatus })
        .from(rolloutPlans)
        .innerJoin(rolloutStatus, eq(rolloutStatus.planId, rolloutPlans.planId))
        .where(notInArray(rolloutStatus.phase, [...TERMINAL_PHASES, "halted"]))
        .all();
      const halted: string[] = [];
      const records: AuditRow[] = [];
      for (const { plan, status } of unfinished) {
        const { seq: _, ...planRow } = plan;
        const next = haltedByStop(planRow, status, w.change);
        db.update(rolloutStatus).set(next.status).where(eq(rolloutStatus.planId, plan.planId)).run();
        halted.push(plan.planId);
        records.push(next.audit);
      }
      const state = stopStarted(w.change, previous);
      writeStop(state);
      audit([withHalted(w.change.audit, halted), ...records]);
      return { state, changed: true, haltedPlanIds: halted };
    },
    endEmergencyStop: (w) => {
      const previous = stop();
      if (!previous.active) return { state: previous, changed: false };
      const state = stopEnded(w.change, previous);
      writeStop(state);
      audit([w.change.audit]);
      return { state, changed: true };
    },
    acceptReported: (w) => {
      const n = node(w.nodeId);
      const reported = requirePinnable(w.nodeId, n.reportedReleaseId, n.reportedReleaseId !== null && releaseExists(n.reportedReleaseId));
      db.update(nodes)
        .set({ pinnedReleaseId: reported, pinnedAtMs: w.atMs, pinReason: w.reason, desiredReleaseId: reported, reapplyReleaseId: null, reapplyRequestedAtMs: null })
        .where(eq(nodes.nodeId, w.nodeId))
        .run();
      audit([withFields(w.audit, { pinned_release_id: reported, previous_desired_release_id: n.desiredReleaseId ?? "" })]);
      return { node: node(w.nodeId) };
    },
    unpinNode: (w) => {
      const n = node(w.nodeId);
      if (n.pinnedReleaseId === null) return { node: n };
      db.update(nodes).set({ pinnedReleaseId: null, pinnedAtMs: null, pinReason: "" }).where(eq(nodes.nodeId, w.nodeId)).run();
      db.update(nodes)
        .set({ desiredReleaseId: sql`(${desiredReleaseSql(w.nodeId, n.channel, sql.raw("r.staged = 0"))})` })
        .where(eq(nodes.nodeId, w.nodeId))
        .run();
      const after = node(w.nodeId);
      audit([withFields(w.audit, { unpinned_release_id: n.pinnedReleaseId, desired_release_id: after.desiredReleaseId ?? "" })]);
      return { node: after };
    },
    requestReapply: (w) => {
      refuseDuringStop(stop(), "reapplying a release");
      const n = node(w.nodeId);
      const desired = requireDesired(w.nodeId, n.desiredReleaseId);
      db.update(nodes).set({ reapplyReleaseId: desired, reapplyRequestedAtMs: w.atMs }).where(eq(nodes.nodeId, w.nodeId)).run();
      audit([withFields(w.audit, { release_id: desired })]);
      return { node: node(w.nodeId) };
    },
  } satisfies WriteHandlers<OperationWrite, OperationWriteResults>;
}
