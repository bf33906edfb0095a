import { and, asc, count, desc, eq, gt, inArray, max, notInArray, sql, type SQL } from "drizzle-orm";
import type Database from "better-sqlite3";
import type { BetterSQLite3Database } from "drizzle-orm/better-sqlite3";
import { TERMINAL_PHASES } from "../../domain/rollouts.js";
import type { ChainedAuditRow } from "../../domain/audit.js";
import { auditQueryParts } from "../audit-query.js";
import { placeholderNames } from "../prepared-queries.js";
import type { RestoreProgress } from "../../domain/rollout-actions.js";
import { restoreProgressSql } from "../rollout-restore.js";
import type { MoveRow, RolloutRecord, SigningKeyRow, StageNodeRow } from "../rollout-rows.js";
import type { AuditQuery, RolloutQuery, StageNodeQuery } from "../store.js";
import { auditRecords, events, nodeAcks, nodes, rolloutMoves, rolloutPlans, rolloutStatus, signingKeys } from "./schema.js";

/** Node ids per IN list: far below SQLite's bound-parameter limit. */
const IDS_PER_QUERY = 500;

/** The rollout reads of the SQLite store, on the reader connection. */
export function prepareRolloutReads(db: BetterSQLite3Database & { $client: Database.Database }) {
  // Drizzle builders change in place: each query starts from a fresh one.
  const records = () =>
    db.select({ plan: rolloutPlans, status: rolloutStatus }).from(rolloutPlans).innerJoin(rolloutStatus, eq(rolloutStatus.planId, rolloutPlans.planId));
  const byId = records().where(eq(rolloutPlans.planId, sql.placeholder("id"))).prepare();
  const movesOfPlan = db
    .select()
    .from(rolloutMoves)
    .where(and(eq(rolloutMoves.planId, sql.placeholder("id")), eq(rolloutMoves.kind, "move")))
    .orderBy(asc(rolloutMoves.seq))
    .prepare();
  const movedNode = db
    .select({ nodeId: rolloutMoves.nodeId })
    .from(rolloutMoves)
    .where(and(eq(rolloutMoves.planId, sql.placeholder("id")), eq(rolloutMoves.nodeId, sql.placeholder("node"))))
    .prepare();
  const newest = db.select({ seq: max(rolloutMoves.seq).as("newest_seq") }).from(rolloutMoves).groupBy(rolloutMoves.nodeId).as("newest");
  const allNewest = db
    .select({ move: rolloutMoves })
    .from(rolloutMoves)
    .innerJoin(newest, eq(rolloutMoves.seq, newest.seq))
    .prepare();
  const eventCounts = db
    .select({ nodeId: events.nodeId, n: count() })
    .from(events)
    .where(and(eq(events.eventType, sql.placeholder("type")), gt(events.seq, sql.placeholder("after"))))
    .groupBy(events.nodeId)
    .prepare();
  const newestSeq = db.select({ seq: max(events.seq) }).from(events).prepare();
  // A page of a stage's nodes in node id order, through the (plan_id, node_id) index. The
  // controller reads whole stages (100,000 rows at a time) page by page on the event loop:
  // a raw statement (rows as arrays) spares drizzle's mapping of each row. Drizzle writes the SQL.
  const stageNodesQuery = db
    .select({
      nodeId: rolloutMoves.nodeId,
      movedAtMs: rolloutMoves.movedAtMs,
      ackState: nodeAcks.state,
      ackReportedReleaseId: nodeAcks.reportedReleaseId,
      ackUpdatedAtMs: nodeAcks.updatedAtMs,
      lastSeenMs: nodes.lastSeenMs,
    })
    .from(rolloutMoves)
    .leftJoin(nodeAcks, and(eq(nodeAcks.releaseId, sql.placeholder("release")), eq(nodeAcks.nodeId, rolloutMoves.nodeId)))
    .leftJoin(nodes, eq(nodes.nodeId, rolloutMoves.nodeId))
    .where(
      and(
        eq(rolloutMoves.planId, sql.placeholder("plan")),
        // A literal, not a parameter: the statement binds its placeholders by name.
        eq(rolloutMoves.kind, sql`'move'`),
        eq(rolloutMoves.stageId, sql.placeholder("stage")),
        gt(rolloutMoves.nodeId, sql.placeholder("after")),
      ),
    )
    .orderBy(asc(rolloutMoves.nodeId))
    .limit(sql.placeholder("limit"))
    .toSQL();
  const stageNodes = db.$client.prepare(stageNodesQuery.sql).raw(true);
  const stageNodeParams = placeholderNames(stageNodesQuery.params);

  return {
    getRollout: (id: string): RolloutRecord | undefined => byId.get({ id }),
    listRollouts: (q: RolloutQuery): RolloutRecord[] => {
      const where: SQL[] = [];
      if (q.phase) where.push(eq(rolloutStatus.phase, q.phase));
      if (q.unfinished) where.push(notInArray(rolloutStatus.phase, [...TERMINAL_PHASES]));
      if (q.channel !== undefined) where.push(eq(rolloutPlans.channel, q.channel));
      const query = records().where(and(...where)).orderBy(desc(rolloutPlans.seq));
      return q.limit === undefined ? query.all() : query.limit(q.limit).all();
    },
    movesOfPlan: (id: string): MoveRow[] => movesOfPlan.all({ id }),
    planMovedNode: (id: string, node: string): boolean => movedNode.get({ id, node }) !== undefined,
    restoreProgress: (id: string): RestoreProgress => {
      const row = db.get<{ nodes: number; restored: number; failed: number }>(restoreProgressSql(id));
      return { nodes: Number(row?.nodes ?? 0), restored: Number(row?.restored ?? 0), failed: Number(row?.failed ?? 0) };
    },
    newestMoves: (nodeIds?: readonly string[]): Map<string, MoveRow> => {
      const out = new Map<string, MoveRow>();
      if (nodeIds === undefined) {
        for (const { move } of allNewest.all()) out.set(move.nodeId, move);
        return out;
      }
      for (let i = 0; i < nodeIds.length; i += IDS_PER_QUERY) {
        const rows = db
          .select()
          .from(rolloutMoves)
          .where(inArray(rolloutMoves.nodeId, nodeIds.slice(i, i + IDS_PER_QUERY)))
          .orderBy(asc(rolloutMoves.seq))
          .all();
        for (const row of rows) out.set(row.nodeId, row);
      }
      return out;
    },
    eventCountsSince: (type: string, after: bigint): Map<string, number> =>
      new Map(eventCounts.all({ type, after: Number(after) }).map((r) => [r.nodeId, r.n])),
    newestEventSeq: (): bigint => BigInt(newestSeq.get()?.seq ?? 0),
    stageNodes: (q: StageNodeQuery): StageNodeRow[] => {
      const values: Record<string, string | number> = { plan: q.planId, stage: q.stageId, release: q.releaseId, after: q.afterNodeId ?? "", limit: q.limit };
      const rows = stageNodes.all(...stageNodeParams.map((name) => values[name])) as [string, number, string | null, string | null, number | null, number | null][];
      return rows.map(([nodeId, movedAtMs, ackState, ackReportedReleaseId, ackUpdatedAtMs, lastSeenMs]) => ({
        nodeId,
        movedAtMs,
        ackState: ackState ?? undefined,
        ackReportedReleaseId: ackReportedReleaseId ?? undefined,
        ackUpdatedAtMs: ackUpdatedAtMs ?? undefined,
        lastSeenMs: lastSeenMs ?? undefined,
      }));
    },
    auditRecords: (q: AuditQuery): ChainedAuditRow[] => {
      const { where, orderBy } = auditQueryParts(auditRecords, q);
      return db.select().from(auditRecords).where(where).orderBy(orderBy).limit(q.limit).all();
    },
    signingKeys: (): SigningKeyRow[] => db.select().from(signingKeys).orderBy(asc(signingKeys.createdAtMs)).all(),
  };
}
