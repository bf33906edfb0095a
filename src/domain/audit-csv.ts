/**
 * The CSV form of audit records, one file format for `autonomy audit export --format csv` and
 * the dashboard's export: pure (no Node API), so the browser bundle uses it too.
 */
import { timestampDate } from "@bufbuild/protobuf/wkt";
import type { AuditRecord } from "../../gen/autonomy/v1/audit_pb.js";

export const AUDIT_CSV_COLUMNS = ["seq", "timestamp", "event_name", "category", "action", "outcome", "actor", "resource_type", "resource", "source", "fields_json", "reason", "prev_hash", "hash"] as const;

const csvCell = (v: string) => (/[",\n\r]/.test(v) ? `"${v.replace(/"/g, '""')}"` : v);

/** One record as a CSV line (no newline), in the order of AUDIT_CSV_COLUMNS. */
export function auditCsvRow(r: AuditRecord): string {
  const values: Record<(typeof AUDIT_CSV_COLUMNS)[number], string> = {
    seq: String(r.seq),
    timestamp: r.timestamp ? timestampDate(r.timestamp).toISOString() : "-",
    event_name: r.eventName,
    category: r.category,
    action: r.action,
    outcome: r.outcome,
    actor: r.actor,
    resource_type: r.resourceType,
    resource: r.resource,
    source: r.source,
    fields_json: r.fieldsJson,
    reason: r.reason,
    prev_hash: r.prevHash,
    hash: r.hash,
  };
  return AUDIT_CSV_COLUMNS.map((c) => csvCell(values[c])).join(",");
}
