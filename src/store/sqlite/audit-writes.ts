import { desc, eq, gte, lt, min, sql } from "drizzle-orm";
import type { BetterSQLite3Database } from "drizzle-orm/better-sqlite3";
import { chainAudit } from "../../domain/audit.js";
import type { AuditRow } from "../rollout-rows.js";
import { pruneRecord } from "../write-rules.js";
import { auditPruneGate, auditRecords } from "./schema.js";

export type AppendAudit = (rows: readonly AuditRow[]) => void;

/**
 * Audit writes on the writer connection, inside the transaction of the change they record:
 * appending links each record to the newest one; pruning opens the delete gate only for its
 * own statement.
 */
export function prepareAuditWrites(db: BetterSQLite3Database) {
  const last = db.select({ hash: auditRecords.hash }).from(auditRecords).orderBy(desc(auditRecords.seq)).limit(1).prepare();
  const append: AppendAudit = (rows) => {
    if (rows.length === 0) return;
    db.insert(auditRecords)
      .values(chainAudit(rows, last.get()?.hash ?? ""))
      .run();
  };
  const firstKept = db
    .select({ seq: min(auditRecords.seq) })
    .from(auditRecords)
    .where(gte(auditRecords.atMs, sql.placeholder("before")))
    .prepare();
  /**
   * Removes the oldest records, up to the first one at or after beforeMs: always a prefix of the
   * chain, so what stays still links together (a clock that stepped back cannot cut a hole).
   */
  const prune = (beforeMs: number, record: AuditRow): { removed: number; firstKeptSeq?: number } => {
    const lastHash = last.get()?.hash ?? "";
    const keepFrom = firstKept.get({ before: beforeMs })?.seq ?? undefined;
    db.update(auditPruneGate).set({ open: 1 }).where(eq(auditPruneGate.id, 1)).run();
    const removed = db
      .delete(auditRecords)
      .where(keepFrom === undefined ? undefined : lt(auditRecords.seq, keepFrom))
      .run().changes;
    db.update(auditPruneGate).set({ open: 0 }).where(eq(auditPruneGate.id, 1)).run();
    db.insert(auditRecords)
      .values(chainAudit([pruneRecord(record, removed, keepFrom)], lastHash))
      .run();
    return { removed, firstKeptSeq: keepFrom };
  };
  return { append, prune };
}
