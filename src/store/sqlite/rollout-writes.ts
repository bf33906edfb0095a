import { and, eq, notInArray, sql } from "drizzle-orm";
import type { BetterSQLite3Database } from "drizzle-orm/better-sqlite3";
import { TERMINAL_PHASES } from "../../domain/rollouts.js";
import type { AuditRow, PlanRow, RolloutChange, RolloutRecord, SigningKeyRow, StatusRow } from "../rollout-rows.js";
import { refuseStaleStatus, requireChannelFree, requireRelease, requireSamePlanSpec } from "../write-rules.js";
import type { AppendAudit } from "./audit-writes.js";
import { releases, rolloutMoves, rolloutPlans, rolloutStatus, signingKeys } from "./schema.js";

/** A rollout write, run by the writer thread inside its own savepoint. */
export type RolloutWrite =
  | { op: "createRollout"; plan: PlanRow; status: StatusRow; audit: AuditRow }
  | { op: "commitRollout"; change: RolloutChange }
  | { op: "registerSigningKey"; row: SigningKeyRow }
  | { op: "pruneAudit"; beforeMs: number; audit: AuditRow }
  | { op: "appendAudit"; rows: readonly AuditRow[] };

export type RolloutWriteResult = { record: RolloutRecord; created: boolean } | { done: true } | { removed: number; firstKeptSeq?: number };

/** Rows per multi-row INSERT of moves: 5 values a row, well under SQLite's bound-value limit. */
const MOVES_PER_STATEMENT = 500;

/** The rollout writes of the SQLite store, synchronous on the writer connection. */
export function prepareRolloutWrites(db: BetterSQLite3Database, audit: AppendAudit, pruneAudit: (beforeMs: number, record: AuditRow) => { removed: number; firstKeptSeq?: number }) {
  const planById = db.select().from(rolloutPlans).where(eq(rolloutPlans.planId, sql.placeholder("id"))).prepare();
  const statusById = db.select().from(rolloutStatus).where(eq(rolloutStatus.planId, sql.placeholder("id"))).prepare();


  return (w: RolloutWrite): RolloutWriteResult => {
    switch (w.op) {
      case "createRollout": {
        const stored = planById.get({ id: w.plan.planId });
        if (stored) {
          requireSamePlanSpec(w.plan.planId, stored.spec, w.plan.spec);
          return { record: { plan: stored, status: statusById.get({ id: w.plan.planId })! }, created: false };
        }
        requireRelease(w.plan.releaseId, db.select({ id: releases.releaseId }).from(releases).where(eq(releases.releaseId, w.plan.releaseId)).get());
        const busy = db
          .select({ planId: rolloutPlans.planId, phase: rolloutStatus.phase })
          .from(rolloutPlans)
          .innerJoin(rolloutStatus, eq(rolloutStatus.planId, rolloutPlans.planId))
          .where(and(eq(rolloutPlans.channel, w.plan.channel), notInArray(rolloutStatus.phase, [...TERMINAL_PHASES])))
          .get();
        requireChannelFree(w.plan.channel, busy);
        db.insert(rolloutPlans).values(w.plan).run();
        db.insert(rolloutStatus).values(w.status).run();
        audit([w.audit]);
        return { record: { plan: planById.get({ id: w.plan.planId })!, status: w.status }, created: true };
      }
      case "commitRollout": {
        const { change } = w;
        const updated = db
          .update(rolloutStatus)
          .set(change.status)
          .where(and(eq(rolloutStatus.planId, change.status.planId), eq(rolloutStatus.version, change.expectedVersion)))
          .run().changes;
        if (updated === 0) refuseStaleStatus(change.status.planId, statusById.get({ id: change.status.planId })?.version, change.expectedVersion);
        for (let i = 0; i < change.moves.length; i += MOVES_PER_STATEMENT) {
          db.insert(rolloutMoves)
            .values(change.moves.slice(i, i + MOVES_PER_STATEMENT))
            .run();
        }
        audit(change.audit);
        return { done: true };
      }
      case "registerSigningKey":
        db.insert(signingKeys).values(w.row).onConflictDoNothing().run();
        return { done: true };
      case "pruneAudit":
        return pruneAudit(w.beforeMs, w.audit);
      case "appendAudit":
        audit(w.rows);
        return { done: true };
    }
  };
}
