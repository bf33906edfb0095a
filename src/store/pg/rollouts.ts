import { and, asc, count, desc, eq, gt, inArray, max, notInArray, sql, type SQL } from "drizzle-orm";
import type { NodePgDatabase } from "drizzle-orm/node-postgres";
import { pruneRecord, refuseStaleStatus, requireChannelFree, requireRelease, requireSamePlanSpec } from "../write-rules.js";
import { TERMINAL_PHASES, type RankKeys } from "../../domain/rollouts.js";
import { FencedError } from "../../domain/errors.js";
import type { AuditRow, MoveRow, PlanRow, RolloutChange, RolloutRecord, SigningKeyRow, StageNodeRow, StatusRow } from "../rollout-rows.js";
import type { AuditQuery, RolloutQuery, StageNodeQuery } from "../store.js";
import { planStageOpening, type OpenedStage, type StageOpening } from "../rollout-opening.js";
import { chainAudit, type ChainedAuditRow } from "../../domain/audit.js";
import { auditQueryParts } from "../audit-query.js";
import { refuseDuringStop } from "../operation-rows.js";
import { stopForWrite } from "./stop-guard.js";
import type { RestoreProgress } from "../../domain/rollout-actions.js";
import { restoreProgressSql } from "../rollout-restore.js";
import { auditRecords, events, nodeAcks, nodes, releases, rolloutMoves, rolloutPlans, rolloutStatus, signingKeys } from "./schema.js";

type Db = NodePgDatabase;

/** Rows per multi-row INSERT of moves: 5 parameters a row, well under PostgreSQL's 65,535. */
const MOVES_PER_INSERT = 5000;
// Any constant: serialises plan creation, so two replicas cannot both start a plan on one channel.
const PLAN_CREATE_LOCK_KEY = 7_340_022;

// Any constant: serialises appends to the audit chain across replicas (each links to the newest record).
const AUDIT_CHAIN_LOCK_KEY = 7_340_023;

/**
 * Appends audit records to the chain inside the caller's transaction. Under the chain lock each
 * record takes the next seq itself (a sequence would leave holes where a transaction rolled
 * back), so a hole in the trail means records were removed.
 */
export async function appendAudit(tx: Db, rows: readonly AuditRow[]): Promise<void> {
  if (rows.length === 0) return;
  await tx.execute(sql`SELECT pg_advisory_xact_lock(${AUDIT_CHAIN_LOCK_KEY})`);
  await appendAfter(tx, await chainHead(tx), rows);
}

/** The newest record's seq and hash (under the chain lock). */
async function chainHead(tx: Db): Promise<{ seq: number; hash: string } | undefined> {
  const [last] = await tx.select({ seq: auditRecords.seq, hash: auditRecords.hash }).from(auditRecords).orderBy(desc(auditRecords.seq)).limit(1);
  return last;
}

async function appendAfter(tx: Db, head: { seq: number; hash: string } | undefined, rows: readonly AuditRow[]): Promise<void> {
  const first = (head?.seq ?? 0) + 1;
  await tx.insert(auditRecords).values(chainAudit(rows, head?.hash ?? "").map((r, i) => ({ ...r, seq: first + i })));
}

/**
 * The fence of a leader-only write, first in its transaction: the epoch must be the newest, not
 * resigned, its lease not run out by the database's clock. FOR KEY SHARE keeps the row so: a
 * takeover (which locks it FOR UPDATE to end it) waits until this transaction is over, and a
 * write that comes after the takeover sees the epoch ended. Renewals do not conflict with it.
 */
export async function requireEpoch(tx: Db, epoch: number): Promise<void> {
  const result = await tx.execute(sql`
    SELECT epoch FROM leader_epochs
    WHERE epoch = ${epoch} AND resigned_at IS NULL
      AND renewed_at + lease_ms * interval '1 millisecond' > clock_timestamp()
      AND epoch = (SELECT max(epoch) FROM leader_epochs)
    FOR KEY SHARE`);
  if (result.rows.length === 0) throw new FencedError(`leader epoch ${epoch} is no longer current: this replica is not the leader, nothing was written`);
}

const records = (db: Db) =>
  db.select({ plan: rolloutPlans, status: rolloutStatus }).from(rolloutPlans).innerJoin(rolloutStatus, eq(rolloutStatus.planId, rolloutPlans.planId));

/** The rollout operations of the PostgreSQL store; each write is one transaction. */
export const pgRollouts = {
  async createRollout(db: Db, plan: PlanRow, status: StatusRow, audit: AuditRow): Promise<{ record: RolloutRecord; created: boolean }> {
    return db.transaction(async (tx) => {
      await tx.execute(sql`SELECT pg_advisory_xact_lock(${PLAN_CREATE_LOCK_KEY})`);
      const [stored] = await records(tx).where(eq(rolloutPlans.planId, plan.planId));
      if (stored) {
        requireSamePlanSpec(plan.planId, stored.plan.spec, plan.spec);
        return { record: stored, created: false };
      }
      refuseDuringStop(await stopForWrite(tx), "publishing a rollout plan");
      const [release] = await tx.select({ id: releases.releaseId }).from(releases).where(eq(releases.releaseId, plan.releaseId));
      requireRelease(plan.releaseId, release);
      const [busy] = await tx
        .select({ planId: rolloutPlans.planId, phase: rolloutStatus.phase })
        .from(rolloutPlans)
        .innerJoin(rolloutStatus, eq(rolloutStatus.planId, rolloutPlans.planId))
        .where(and(eq(rolloutPlans.channel, plan.channel), notInArray(rolloutStatus.phase, [...TERMINAL_PHASES])))
        .limit(1);
      requireChannelFree(plan.channel, busy);
      const [row] = await tx.insert(rolloutPlans).values(plan).returning();
      await tx.insert(rolloutStatus).values(status);
      await appendAudit(tx, [audit]);
      const { seq: _, ...planRow } = row;
      return { record: { plan: planRow, status }, created: true };
    });
  },

  async commitRollout(db: Db, change: RolloutChange): Promise<void> {
    await db.transaction(async (tx) => {
      if (change.fenceEpoch !== undefined) await requireEpoch(tx, change.fenceEpoch);
      // A stop halted every plan: none becomes active again, no node is moved (a rollback's moves).
      if (change.moves.length > 0 || change.status.phase === "active") {
        refuseDuringStop(await stopForWrite(tx), change.moves.length > 0 ? "moving nodes" : "making a plan active");
      }
      const updated = await tx
        .update(rolloutStatus)
        .set(change.status)
        .where(and(eq(rolloutStatus.planId, change.status.planId), eq(rolloutStatus.version, change.expectedVersion)))
        .returning({ version: rolloutStatus.version });
      if (updated.length === 0) {
        const [current] = await tx.select().from(rolloutStatus).where(eq(rolloutStatus.planId, change.status.planId));
        refuseStaleStatus(change.status.planId, current?.version, change.expectedVersion);
      }
      for (let i = 0; i < change.moves.length; i += MOVES_PER_INSERT) {
        await tx.insert(rolloutMoves).values(change.moves.slice(i, i + MOVES_PER_INSERT));
      }
      await appendAudit(tx, change.audit);
    });
  },

  /** `ranks`: the store's rank keys of the plan it opened last (kept between openings). */
  async openRolloutStage(db: Db, o: StageOpening, ranks?: RankKeys): Promise<OpenedStage | undefined> {
    return db.transaction(async (tx) => {
      if (o.fenceEpoch !== undefined) await requireEpoch(tx, o.fenceEpoch);
      refuseDuringStop(await stopForWrite(tx), "opening a rollout stage");
      // The status row locked first: a concurrent writer of the plan waits, then sees the new version.
      const [current] = await tx.select().from(rolloutStatus).where(eq(rolloutStatus.planId, o.planId)).for("update");
      const [plan] = await tx.select().from(rolloutPlans).where(eq(rolloutPlans.planId, o.planId));
      if (!current || !plan || current.version !== o.expectedVersion) refuseStaleStatus(o.planId, plan && current?.version, o.expectedVersion);
      const fleet = await tx
        .select({
          nodeId: nodes.nodeId,
          labels: nodes.labels,
          drained: nodes.drained,
          lastSeenMs: nodes.lastSeenMs,
          reportedReleaseId: nodes.reportedReleaseId,
          desiredReleaseId: nodes.desiredReleaseId,
        })
        .from(nodes)
        .where(eq(nodes.channel, plan.channel))
        .orderBy(asc(nodes.nodeId));
      const taken = new Set(
        (
          await tx
            .select({ nodeId: rolloutMoves.nodeId })
            .from(rolloutMoves)
            .where(and(eq(rolloutMoves.planId, o.planId), eq(rolloutMoves.kind, "move")))
        ).map((m) => m.nodeId),
      );
      const [newest] = await tx.select({ seq: max(events.seq) }).from(events);
      const planned = planStageOpening(plan, o, fleet, taken, () => BigInt(newest?.seq ?? 0), ranks);
      if (!planned) return undefined;
      await tx.update(rolloutStatus).set(planned.status).where(eq(rolloutStatus.planId, o.planId));
      for (let i = 0; i < planned.moves.length; i += MOVES_PER_INSERT) {
        await tx.insert(rolloutMoves).values(planned.moves.slice(i, i + MOVES_PER_INSERT));
      }
      await appendAudit(tx, [planned.audit]);
      return { status: planned.status, nodeIds: planned.moves.map((m) => m.nodeId) };
    });
  },

  async stageNodes(db: Db, q: StageNodeQuery): Promise<StageNodeRow[]> {
    const rows = await db
      .select({
        nodeId: rolloutMoves.nodeId,
        movedAtMs: rolloutMoves.movedAtMs,
        ackState: nodeAcks.state,
        ackReportedReleaseId: nodeAcks.reportedReleaseId,
        ackUpdatedAtMs: nodeAcks.updatedAtMs,
        lastSeenMs: nodes.lastSeenMs,
      })
      .from(rolloutMoves)
      .leftJoin(nodeAcks, and(eq(nodeAcks.releaseId, q.releaseId), eq(nodeAcks.nodeId, rolloutMoves.nodeId)))
      .leftJoin(nodes, eq(nodes.nodeId, rolloutMoves.nodeId))
      .where(
        and(eq(rolloutMoves.planId, q.planId), eq(rolloutMoves.kind, "move"), eq(rolloutMoves.stageId, q.stageId), gt(rolloutMoves.nodeId, q.afterNodeId ?? "")),
      )
      .orderBy(asc(rolloutMoves.nodeId))
      .limit(q.limit);
    return rows.map((r) => ({
      nodeId: r.nodeId,
      movedAtMs: Number(r.movedAtMs),
      ackState: r.ackState ?? undefined,
      ackReportedReleaseId: r.ackReportedReleaseId ?? undefined,
      ackUpdatedAtMs: r.ackUpdatedAtMs === null ? undefined : Number(r.ackUpdatedAtMs),
      lastSeenMs: r.lastSeenMs === null ? undefined : Number(r.lastSeenMs),
    }));
  },

  async registerSigningKey(db: Db, row: SigningKeyRow): Promise<void> {
    await db.insert(signingKeys).values(row).onConflictDoNothing();
  },

  async getRollout(db: Db, id: string): Promise<RolloutRecord | undefined> {
    const [row] = await records(db).where(eq(rolloutPlans.planId, id));
    return row && strip(row);
  },

  async listRollouts(db: Db, q: RolloutQuery): Promise<RolloutRecord[]> {
    const where: SQL[] = [];
    if (q.phase) where.push(eq(rolloutStatus.phase, q.phase));
    if (q.unfinished) where.push(notInArray(rolloutStatus.phase, [...TERMINAL_PHASES]));
    if (q.channel !== undefined) where.push(eq(rolloutPlans.channel, q.channel));
    const query = records(db).where(and(...where)).orderBy(desc(rolloutPlans.seq));
    const rows = q.limit === undefined ? await query : await query.limit(q.limit);
    return rows.map(strip);
  },

  async movesOfPlan(db: Db, id: string): Promise<MoveRow[]> {
    const rows = await db
      .select()
      .from(rolloutMoves)
      .where(and(eq(rolloutMoves.planId, id), eq(rolloutMoves.kind, "move")))
      .orderBy(asc(rolloutMoves.seq));
    return rows.map(stripMove);
  },

  async planMovedNode(db: Db, id: string, nodeId: string): Promise<boolean> {
    const rows = await db
      .select({ nodeId: rolloutMoves.nodeId })
      .from(rolloutMoves)
      .where(and(eq(rolloutMoves.planId, id), eq(rolloutMoves.nodeId, nodeId)))
      .limit(1);
    return rows.length > 0;
  },

  async restoreProgress(db: Db, id: string): Promise<RestoreProgress> {
    const result = await db.execute(restoreProgressSql(id));
    const row = result.rows[0] as Record<string, unknown> | undefined;
    return { nodes: Number(row?.nodes ?? 0), restored: Number(row?.restored ?? 0), failed: Number(row?.failed ?? 0) };
  },

  async newestMoves(db: Db, nodeIds?: readonly string[]): Promise<Map<string, MoveRow>> {
    const out = new Map<string, MoveRow>();
    if (nodeIds !== undefined && nodeIds.length === 0) return out;
    const rows =
      nodeIds === undefined
        ? await db
            .selectDistinctOn([rolloutMoves.nodeId])
            .from(rolloutMoves)
            .orderBy(rolloutMoves.nodeId, desc(rolloutMoves.seq))
        : await db
            .select()
            .from(rolloutMoves)
            .where(inArray(rolloutMoves.nodeId, [...nodeIds]))
            .orderBy(asc(rolloutMoves.seq));
    for (const row of rows) out.set(row.nodeId, stripMove(row));
    return out;
  },

  async eventCountsSince(db: Db, type: string, after: bigint): Promise<Map<string, number>> {
    const rows = await db
      .select({ nodeId: events.nodeId, n: count() })
      .from(events)
      .where(and(eq(events.eventType, type), gt(events.seq, Number(after))))
      .groupBy(events.nodeId);
    return new Map(rows.map((r) => [r.nodeId, Number(r.n)]));
  },

  async newestEventSeq(db: Db): Promise<bigint> {
    const [row] = await db.select({ seq: max(events.seq) }).from(events);
    return BigInt(row?.seq ?? 0);
  },

  async auditRecords(db: Db, q: AuditQuery): Promise<ChainedAuditRow[]> {
    const { where, orderBy } = auditQueryParts(auditRecords, q);
    return db.select().from(auditRecords).where(where).orderBy(orderBy).limit(q.limit);
  },

  /** Removes a prefix of the chain: the records before the first one at or after beforeMs. */
  async pruneAudit(db: Db, beforeMs: number, record: AuditRow): Promise<{ removed: number; firstKeptSeq?: number }> {
    return db.transaction(async (tx) => {
      await tx.execute(sql`SELECT pg_advisory_xact_lock(${AUDIT_CHAIN_LOCK_KEY})`);
      const head = await chainHead(tx);
      // The delete runs in autonomy_audit_prune (SECURITY DEFINER, migrations/pg/0006): the
      // server's role may hold no DELETE on the trail.
      const result = await tx.execute<{ removed: string; first_kept_seq: string | null }>(sql`SELECT removed, first_kept_seq FROM autonomy_audit_prune(${beforeMs})`);
      const removed = Number(result.rows[0].removed);
      const keepFrom = result.rows[0].first_kept_seq === null ? undefined : Number(result.rows[0].first_kept_seq);
      // Linked to the head as it was, which may be gone now: the prune record says what went.
      await appendAfter(tx, head, [pruneRecord(record, removed, keepFrom)]);
      return { removed, firstKeptSeq: keepFrom };
    });
  },

  async signingKeys(db: Db): Promise<SigningKeyRow[]> {
    return db.select().from(signingKeys).orderBy(asc(signingKeys.createdAtMs));
  },
};

function strip(r: { plan: PlanRow & { seq: number }; status: StatusRow }): RolloutRecord {
  const { seq: _, ...plan } = r.plan;
  return { plan, status: r.status };
}

function stripMove(r: MoveRow & { seq: number }): MoveRow {
  const { seq: _, ...move } = r;
  return move;
}
