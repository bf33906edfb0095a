import { and, asc, eq, inArray, isNull, lt, sql } from "drizzle-orm";
import type { NodePgDatabase } from "drizzle-orm/node-postgres";
import type { AuditRow } from "../rollout-rows.js";
import type { CommandRow, ReplicaRow, PlacementCommit, ReplicaPlacement, ServiceDeletion, WorkloadApply, WorkloadApplyResult, WorkloadReport, WorkloadSnapshot } from "../workload-rows.js";
import { replicaReportSet, workloadNodeRow } from "../workload-rows.js";
import { planWorkloadApply, requireService, requireWorkloadVersion, workloadRecord } from "../write-rules.js";
import { appendAudit, requireEpoch } from "./rollouts.js";
import { workloadCommands, workloadNodes, workloadReplicas, workloadServices, workloadState } from "./schema.js";

type Db = NodePgDatabase;

/** Rows per multi-row INSERT: 14 parameters a row, well under PostgreSQL's 65,535. */
const ROWS_PER_INSERT = 1000;

/** The version row, locked: applies, deletes and reconcile commits of every replica take their turn on it. */
async function lockedVersion(tx: Db): Promise<number> {
  await tx.insert(workloadState).values({ id: 1, version: 0 }).onConflictDoNothing();
  const [row] = await tx.select({ v: workloadState.version }).from(workloadState).where(eq(workloadState.id, 1)).for("update");
  return row.v;
}

async function bump(tx: Db, from: number, record: AuditRow): Promise<number> {
  await tx.update(workloadState).set({ version: from + 1 }).where(eq(workloadState.id, 1));
  await appendAudit(tx, [record]);
  return from + 1;
}

const unansweredOf = (db: Db, nodeId: string): Promise<CommandRow[]> =>
  db
    .select()
    .from(workloadCommands)
    .where(and(eq(workloadCommands.nodeId, nodeId), isNull(workloadCommands.ackedAtMs)))
    .orderBy(asc(workloadCommands.createdAtMs), asc(workloadCommands.commandId));

async function upsertPlacements(tx: Db, rows: readonly ReplicaPlacement[], atMs: number, withState: boolean): Promise<void> {
  for (let i = 0; i < rows.length; i += ROWS_PER_INSERT) {
    const values = rows.slice(i, i + ROWS_PER_INSERT).map((p) => ({
      ...p,
      state: p.state ?? "pending",
      restarts: 0,
      lastExitCode: null,
      lastOutput: "[]",
      observedGeneration: 0,
      reportedAtMs: null,
      changedAtMs: atMs,
    }));
    const set = {
      generation: sql`excluded.generation`,
      desiredState: sql`excluded.desired_state`,
      reason: sql`excluded.reason`,
      changedAtMs: sql`excluded.changed_at_ms`,
      ...(withState ? { state: sql`excluded.state` } : {}),
    };
    await tx
      .insert(workloadReplicas)
      .values(values)
      .onConflictDoUpdate({ target: [workloadReplicas.service, workloadReplicas.idx, workloadReplicas.nodeId], set });
  }
}

/** The workload operations of the PostgreSQL store; each write is one transaction. */
export const pgWorkloads = {
  applyWorkloads: (db: Db, apply: WorkloadApply): Promise<WorkloadApplyResult> =>
    db.transaction(async (tx) => {
      const at = await lockedVersion(tx);
      requireWorkloadVersion(at, apply.expectedVersion);
      const names = apply.specs.map((s) => s.name);
      const stored = new Map((await tx.select().from(workloadServices).where(inArray(workloadServices.name, names))).map((r) => [r.name, r]));
      const { writes, changes } = planWorkloadApply(stored, apply);
      if (writes.length === 0) return { version: at, changes };
      await tx
        .insert(workloadServices)
        .values(writes)
        .onConflictDoUpdate({ target: workloadServices.name, set: { spec: sql`excluded.spec`, generation: sql`excluded.generation`, updatedAtMs: sql`excluded.updated_at_ms` } });
      return { version: await bump(tx, at, workloadRecord(apply.audit, at + 1, changes)), changes };
    }),
  deleteWorkloadService: (db: Db, d: ServiceDeletion): Promise<{ version: number }> =>
    db.transaction(async (tx) => {
      const at = await lockedVersion(tx);
      requireWorkloadVersion(at, d.expectedVersion);
      requireService(d.name, (await tx.delete(workloadServices).where(eq(workloadServices.name, d.name)).returning({ n: workloadServices.name }))[0]);
      return { version: await bump(tx, at, workloadRecord(d.audit, at + 1)) };
    }),
  commitPlacement: (db: Db, c: PlacementCommit): Promise<void> =>
    db.transaction(async (tx) => {
      if (c.fenceEpoch !== undefined) await requireEpoch(tx, c.fenceEpoch);
      requireWorkloadVersion(await lockedVersion(tx), c.expectedVersion);
      await upsertPlacements(tx, c.upserts.filter((p) => p.state !== undefined), c.atMs, true);
      await upsertPlacements(tx, c.upserts.filter((p) => p.state === undefined), c.atMs, false);
      for (const r of c.removals) {
        await tx.delete(workloadReplicas).where(and(eq(workloadReplicas.service, r.service), eq(workloadReplicas.idx, r.idx), eq(workloadReplicas.nodeId, r.nodeId)));
      }
      for (let i = 0; i < c.commands.length; i += ROWS_PER_INSERT) await tx.insert(workloadCommands).values(c.commands.slice(i, i + ROWS_PER_INSERT));
      if (c.pruneAnsweredBeforeMs !== undefined) await tx.delete(workloadCommands).where(lt(workloadCommands.ackedAtMs, c.pruneAnsweredBeforeMs));
    }),
  reportWorkloads: (db: Db, r: WorkloadReport): Promise<CommandRow[]> =>
    db.transaction(async (tx) => {
      const row = workloadNodeRow(r);
      await tx.insert(workloadNodes).values(row).onConflictDoUpdate({ target: workloadNodes.nodeId, set: row });
      // In (service, index) order, as the reconcile commits write them: two transactions never wait on each other in a cycle.
      const reports = [...r.replicas].sort((a, b) => (a.service < b.service ? -1 : a.service > b.service ? 1 : a.index - b.index));
      for (const rep of reports) {
        await tx
          .update(workloadReplicas)
          .set(replicaReportSet(rep, r.atMs))
          .where(and(eq(workloadReplicas.service, rep.service), eq(workloadReplicas.idx, rep.index), eq(workloadReplicas.nodeId, r.nodeId)));
      }
      for (const a of r.acks) {
        await tx
          .update(workloadCommands)
          .set({ ackedAtMs: r.atMs, ok: a.ok, message: a.message })
          .where(and(eq(workloadCommands.commandId, a.commandId), eq(workloadCommands.nodeId, r.nodeId), isNull(workloadCommands.ackedAtMs)));
      }
      return unansweredOf(tx, r.nodeId);
    }),
  /** One repeatable-read transaction: every table as of one moment. */
  workloadSnapshot: (db: Db): Promise<WorkloadSnapshot> =>
    db.transaction(
      async (tx) => ({
        version: (await tx.select({ v: workloadState.version }).from(workloadState).where(eq(workloadState.id, 1)))[0]?.v ?? 0,
        services: await tx.select().from(workloadServices).orderBy(asc(workloadServices.name)),
        replicas: await tx.select().from(workloadReplicas).orderBy(asc(workloadReplicas.service), asc(workloadReplicas.idx), asc(workloadReplicas.nodeId)),
        nodes: await tx.select().from(workloadNodes).orderBy(asc(workloadNodes.nodeId)),
        unanswered: await tx.select().from(workloadCommands).where(isNull(workloadCommands.ackedAtMs)).orderBy(asc(workloadCommands.createdAtMs), asc(workloadCommands.commandId)),
      }),
      { isolationLevel: "repeatable read", accessMode: "read only" },
    ),
  unansweredCommands: (db: Db, nodeId: string) => unansweredOf(db, nodeId),
  replicasOfNode: (db: Db, nodeId: string): Promise<ReplicaRow[]> =>
    db.select().from(workloadReplicas).where(eq(workloadReplicas.nodeId, nodeId)).orderBy(asc(workloadReplicas.service), asc(workloadReplicas.idx)),
};
