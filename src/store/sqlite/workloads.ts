import { and, asc, eq, inArray, isNull, lt } from "drizzle-orm";
import type { BetterSQLite3Database } from "drizzle-orm/better-sqlite3";
import type { AuditRow } from "../rollout-rows.js";
import type { CommandRow, ReplicaRow, PlacementCommit, ServiceDeletion, WorkloadApply, WorkloadApplyResult, WorkloadReport, WorkloadSnapshot } from "../workload-rows.js";
import { replicaReportSet, workloadNodeRow } from "../workload-rows.js";
import { planWorkloadApply, requireService, requireWorkloadVersion, workloadRecord } from "../write-rules.js";
import type { AppendAudit } from "./audit-writes.js";
import type { WriteHandlers } from "./write-ops.js";
import { workloadCommands, workloadNodes, workloadReplicas, workloadServices, workloadState } from "./schema.js";

/** A workload write, run by the writer thread. */
export type WorkloadWrite =
  | { op: "applyWorkloads"; apply: WorkloadApply }
  | { op: "deleteWorkloadService"; deletion: ServiceDeletion }
  | { op: "commitPlacement"; commit: PlacementCommit }
  | { op: "reportWorkloads"; report: WorkloadReport };

export interface WorkloadWriteResults {
  applyWorkloads: WorkloadApplyResult;
  deleteWorkloadService: { version: number };
  commitPlacement: { done: true };
  reportWorkloads: { commands: CommandRow[] };
}

type Db = BetterSQLite3Database;

const unansweredOf = (db: Db, nodeId: string) =>
  db
    .select()
    .from(workloadCommands)
    .where(and(eq(workloadCommands.nodeId, nodeId), isNull(workloadCommands.ackedAtMs)))
    .orderBy(asc(workloadCommands.createdAtMs), asc(workloadCommands.commandId))
    .all();

export function prepareWorkloadWrites(db: Db, audit: AppendAudit) {
  const version = (): number => {
    db.insert(workloadState).values({ id: 1, version: 0 }).onConflictDoNothing().run();
    return db.select({ v: workloadState.version }).from(workloadState).where(eq(workloadState.id, 1)).get()!.v;
  };
  const bump = (from: number, record: AuditRow) => {
    db.update(workloadState).set({ version: from + 1 }).where(eq(workloadState.id, 1)).run();
    audit([record]);
    return from + 1;
  };
  return {
    applyWorkloads: ({ apply }) => {
      const at = version();
      requireWorkloadVersion(at, apply.expectedVersion);
      const names = apply.specs.map((s) => s.name);
      const stored = new Map(db.select().from(workloadServices).where(inArray(workloadServices.name, names)).all().map((r) => [r.name, r]));
      const { writes, changes } = planWorkloadApply(stored, apply);
      if (writes.length === 0) return { version: at, changes };
      for (const w of writes) {
        db.insert(workloadServices)
          .values(w)
          .onConflictDoUpdate({ target: workloadServices.name, set: { spec: w.spec, generation: w.generation, updatedAtMs: w.updatedAtMs } })
          .run();
      }
      return { version: bump(at, workloadRecord(apply.audit, at + 1, changes)), changes };
    },
    deleteWorkloadService: ({ deletion: d }) => {
      const at = version();
      requireWorkloadVersion(at, d.expectedVersion);
      requireService(d.name, db.select({ n: workloadServices.name }).from(workloadServices).where(eq(workloadServices.name, d.name)).get());
      db.delete(workloadServices).where(eq(workloadServices.name, d.name)).run();
      return { version: bump(at, workloadRecord(d.audit, at + 1)) };
    },
    commitPlacement: ({ commit: c }) => {
      requireWorkloadVersion(version(), c.expectedVersion);
      for (const p of c.upserts) {
        const set = { generation: p.generation, desiredState: p.desiredState, reason: p.reason, changedAtMs: c.atMs, ...(p.state === undefined ? {} : { state: p.state }) };
        db.insert(workloadReplicas)
          .values({ ...p, state: p.state ?? "pending", restarts: 0, lastExitCode: null, lastOutput: "[]", observedGeneration: 0, reportedAtMs: null, changedAtMs: c.atMs })
          .onConflictDoUpdate({ target: [workloadReplicas.service, workloadReplicas.idx, workloadReplicas.nodeId], set })
          .run();
      }
      for (const r of c.removals) {
        db.delete(workloadReplicas)
          .where(and(eq(workloadReplicas.service, r.service), eq(workloadReplicas.idx, r.idx), eq(workloadReplicas.nodeId, r.nodeId)))
          .run();
      }
      for (const cmd of c.commands) db.insert(workloadCommands).values(cmd).run();
      if (c.pruneAnsweredBeforeMs !== undefined) db.delete(workloadCommands).where(lt(workloadCommands.ackedAtMs, c.pruneAnsweredBeforeMs)).run();
      return { done: true as const };
    },
    reportWorkloads: ({ report: r }) => {
      const row = workloadNodeRow(r);
      db.insert(workloadNodes).values(row).onConflictDoUpdate({ target: workloadNodes.nodeId, set: row }).run();
      for (const rep of r.replicas) {
        db.update(workloadReplicas)
          .set(replicaReportSet(rep, r.atMs))
          .where(and(eq(workloadReplicas.service, rep.service), eq(workloadReplicas.idx, rep.index), eq(workloadReplicas.nodeId, r.nodeId)))
          .run();
      }
      for (const a of r.acks) {
        db.update(workloadCommands)
          .set({ ackedAtMs: r.atMs, ok: a.ok, message: a.message })
          .where(and(eq(workloadCommands.commandId, a.commandId), eq(workloadCommands.nodeId, r.nodeId), isNull(workloadCommands.ackedAtMs)))
          .run();
      }
      return { commands: unansweredOf(db, r.nodeId) };
    },
  } satisfies WriteHandlers<WorkloadWrite, WorkloadWriteResults>;
}

export function prepareWorkloadReads(db: Db) {
  return {
    /** One read transaction: every table as of one moment. */
    workloadSnapshot: (): WorkloadSnapshot =>
      db.transaction((tx) => ({
        version: tx.select({ v: workloadState.version }).from(workloadState).where(eq(workloadState.id, 1)).get()?.v ?? 0,
        services: tx.select().from(workloadServices).orderBy(asc(workloadServices.name)).all(),
        replicas: tx.select().from(workloadReplicas).orderBy(asc(workloadReplicas.service), asc(workloadReplicas.idx), asc(workloadReplicas.nodeId)).all(),
        nodes: tx.select().from(workloadNodes).orderBy(asc(workloadNodes.nodeId)).all(),
        unanswered: tx.select().from(workloadCommands).where(isNull(workloadCommands.ackedAtMs)).orderBy(asc(workloadCommands.createdAtMs), asc(workloadCommands.commandId)).all(),
      })),
    unansweredCommands: (nodeId: string): CommandRow[] => unansweredOf(db, nodeId),
    replicasOfNode: (nodeId: string): ReplicaRow[] =>
      db.select().from(workloadReplicas).where(eq(workloadReplicas.nodeId, nodeId)).orderBy(asc(workloadReplicas.service), asc(workloadReplicas.idx)).all(),
  };
}
