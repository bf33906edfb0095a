import { and, eq, max, notInArray, sql } from "drizzle-orm";
import type Database from "better-sqlite3";
import type { BetterSQLite3Database } from "drizzle-orm/better-sqlite3";
import { RankKeys, TERMINAL_PHASES } from "../../domain/rollouts.js";
import type { AuditRow, PlanRow, RolloutChange, RolloutRecord, SigningKeyRow, StatusRow } from "../rollout-rows.js";
import { refuseStaleStatus, requireChannelFree, requireRelease, requireSamePlanSpec } from "../write-rules.js";
import { planStageOpening, type CandidateRow, type OpenedStage, type StageOpening } from "../rollout-opening.js";
import type { MoveRow } from "../rollout-rows.js";
import { placeholderNames } from "../prepared-queries.js";
import type { AppendAudit } from "./audit-writes.js";
import { refuseDuringStop } from "../operation-rows.js";
import { prepareStopRead } from "./operation-writes.js";
import { events, nodes, releases, rolloutMoves, rolloutPlans, rolloutStatus, signingKeys } from "./schema.js";

/** A rollout write, run by the writer thread inside its own savepoint. */
export type RolloutWrite =
  | { op: "createRollout"; plan: PlanRow; status: StatusRow; audit: AuditRow }
  | { op: "commitRollout"; change: RolloutChange }
  | { op: "openRolloutStage"; opening: StageOpening }
  | { op: "registerSigningKey"; row: SigningKeyRow }
  | { op: "pruneAudit"; beforeMs: number; audit: AuditRow }
  | { op: "appendAudit"; rows: readonly AuditRow[] };

export type RolloutWriteResult =
  | { record: RolloutRecord; created: boolean }
  | { done: true }
  | { removed: number; firstKeptSeq?: number }
  | { opened?: OpenedStage };

/** Rows per multi-row INSERT of moves: 5 values a row, well under SQLite's bound-value limit. */
const MOVES_PER_STATEMENT = 500;

/** The rollout writes of the SQLite store, synchronous on the writer connection. */
export function prepareRolloutWrites(db: BetterSQLite3Database & { $client: Database.Database }, audit: AppendAudit, pruneAudit: (beforeMs: number, record: AuditRow) => { removed: number; firstKeptSeq?: number }) {
  const planById = db.select().from(rolloutPlans).where(eq(rolloutPlans.planId, sql.placeholder("id"))).prepare();
  const statusById = db.select().from(rolloutStatus).where(eq(rolloutStatus.planId, sql.placeholder("id"))).prepare();
  // A stage opening reads a whole channel: these run as raw statements (rows as arrays), which
  // spares drizzle's per-row mapping of 100,000 rows. Drizzle still writes the SQL.
  const raw = (query: { toSQL(): { sql: string } }) => db.$client.prepare(query.toSQL().sql).raw(true);
  const channelNodes = raw(
    db
      .select({
        nodeId: nodes.nodeId,
        labels: nodes.labels,
        drained: nodes.drained,
        lastSeenMs: nodes.lastSeenMs,
        reportedReleaseId: nodes.reportedReleaseId,
        desiredReleaseId: nodes.desiredReleaseId,
      })
      .from(nodes)
      .where(eq(nodes.channel, sql.placeholder("channel")))
      .orderBy(nodes.nodeId),
  );
  const movedByPlan = raw(
    db
      .select({ nodeId: rolloutMoves.nodeId })
      .from(rolloutMoves)
      .where(and(eq(rolloutMoves.planId, sql.placeholder("id")), eq(rolloutMoves.kind, sql`'move'`))),
  );
  // An opening writes up to a whole channel of moves: one raw statement run per move, its
  // parameters in the order drizzle wrote them.
  const p = (name: keyof MoveRow) => sql.placeholder(name);
  const insertMoveQuery = db
    .insert(rolloutMoves)
    .values({
      planId: p("planId"),
      stageId: p("stageId"),
      nodeId: p("nodeId"),
      releaseId: p("releaseId"),
      movedAtMs: p("movedAtMs"),
      kind: p("kind"),
      previousReleaseId: p("previousReleaseId"),
    })
    .toSQL();
  const insertMove = db.$client.prepare(insertMoveQuery.sql);
  const moveParams = placeholderNames(insertMoveQuery.params) as (keyof MoveRow)[];
  const candidates = (channel: string): CandidateRow[] =>
    (channelNodes.all(channel) as [string, string, number, number | null, string | null, string | null][]).map(
      ([nodeId, labels, drained, lastSeenMs, reportedReleaseId, desiredReleaseId]) => ({ nodeId, labels, drained, lastSeenMs, reportedReleaseId, desiredReleaseId }),
    );
  const newestEventSeq = db.select({ seq: max(events.seq) }).from(events).prepare();
  // The writer opens every stage: it keeps the running plan's rank keys between its openings.
  const ranks = new RankKeys();
  const stop = prepareStopRead(db);

  /** The status update conditional on the version, refused as the contract says when it does not apply. */
  const updateStatus = (status: StatusRow, expectedVersion: number) => {
    const updated = db
      .update(rolloutStatus)
      .set(status)
      .where(and(eq(rolloutStatus.planId, status.planId), eq(rolloutStatus.version, expectedVersion)))
      .run().changes;
    if (updated === 0) refuseStaleStatus(status.planId, statusById.get({ id: status.planId })?.version, expectedVersion);
  };

  return (w: RolloutWrite): RolloutWriteResult => {
    switch (w.op) {
      case "createRollout": {
        const stored = planById.get({ id: w.plan.planId });
        if (stored) {
          requireSamePlanSpec(w.plan.planId, stored.spec, w.plan.spec);
          return { record: { plan: stored, status: statusById.get({ id: w.plan.planId })! }, created: false };
        }
        refuseDuringStop(stop(), "publishing a rollout plan");
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
        // A stop halted every plan: none becomes active again, no node is moved (a rollback's moves).
        if (change.moves.length > 0 || change.status.phase === "active") refuseDuringStop(stop(), change.moves.length > 0 ? "moving nodes" : "making a plan active");
        updateStatus(change.status, change.expectedVersion);
        for (let i = 0; i < change.moves.length; i += MOVES_PER_STATEMENT) {
          db.insert(rolloutMoves)
            .values(change.moves.slice(i, i + MOVES_PER_STATEMENT))
            .run();
        }
        audit(change.audit);
        return { done: true };
      }
      case "openRolloutStage": {
        const o = w.opening;
        refuseDuringStop(stop(), "opening a rollout stage");
        const plan = planById.get({ id: o.planId });
        const current = statusById.get({ id: o.planId });
        if (!plan || !current || current.version !== o.expectedVersion) refuseStaleStatus(o.planId, plan && current?.version, o.expectedVersion);
        const taken = new Set((movedByPlan.all(o.planId) as [string][]).map(([nodeId]) => nodeId));
        const planned = planStageOpening(plan, o, candidates(plan.channel), taken, () => BigInt(newestEventSeq.get()?.seq ?? 0), ranks);
        if (!planned) return { opened: undefined };
        updateStatus(planned.status, o.expectedVersion);
        for (const m of planned.moves) {
          const row: MoveRow = { ...m, kind: m.kind ?? "move", previousReleaseId: m.previousReleaseId ?? null };
          insertMove.run(...moveParams.map((name) => row[name]));
        }
        audit([planned.audit]);
        return { opened: { status: planned.status, nodeIds: planned.moves.map((m) => m.nodeId) } };
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
