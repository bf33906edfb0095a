import { and, asc, desc, eq, gt, gte, lt, type AnyColumn, type SQL } from "drizzle-orm";
import type { AuditQuery } from "./store.js";

/** The columns of audit_records, as both dialects' schemas name them. */
interface AuditColumns {
  seq: AnyColumn;
  atMs: AnyColumn;
  eventName: AnyColumn;
  category: AnyColumn;
  action: AnyColumn;
  outcome: AnyColumn;
  actor: AnyColumn;
  resourceType: AnyColumn;
  resource: AnyColumn;
  source: AnyColumn;
}

const FIELDS = ["eventName", "category", "action", "outcome", "actor", "resourceType", "resource", "source"] as const;

/** The filter and order of an audit query, for either dialect's audit_records table. */
export function auditQueryParts(t: AuditColumns, q: AuditQuery): { where: SQL | undefined; orderBy: SQL } {
  const where: SQL[] = [];
  for (const field of FIELDS) {
    const value = q[field];
    if (value !== undefined && value !== "") where.push(eq(t[field], value));
  }
  if (q.sinceMs !== undefined) where.push(gte(t.atMs, q.sinceMs));
  if (q.untilMs !== undefined) where.push(lt(t.atMs, q.untilMs));
  const ascending = q.order === "asc";
  if (q.cursorSeq !== undefined) where.push(ascending ? gt(t.seq, q.cursorSeq) : lt(t.seq, q.cursorSeq));
  return { where: and(...where), orderBy: ascending ? asc(t.seq) : desc(t.seq) };
}
