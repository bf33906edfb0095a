import { createHash } from "node:crypto";
import { canonicalJson } from "./rollouts.js";

export const AUDIT_CATEGORIES = ["rollout", "ha", "cert", "auth", "system", "rollback"] as const;
export const AUDIT_OUTCOMES = ["success", "failure", "denied"] as const;

/** One audit record (SPEC §3 fields). */
export interface AuditRow {
  atMs: number;
  eventName: string;
  category: string;
  action: string;
  outcome: string;
  actor: string;
  resourceType: string;
  resource: string;
  source: string;
  fieldsJson: string;
  reason: string;
}

/** Who made a change and through what, for its audit record. */
export interface Actor {
  actor: string;
  source: string;
}

/** An audit record of a successful change. */
export function auditRecord(
  who: Actor,
  what: { eventName: string; category: string; action: string; resourceType: string; resource: string; fields?: object; reason?: string },
  atMs = Date.now(),
): AuditRow {
  return {
    atMs,
    eventName: what.eventName,
    category: what.category,
    action: what.action,
    outcome: "success",
    actor: who.actor,
    resourceType: what.resourceType,
    resource: what.resource,
    source: who.source,
    fieldsJson: JSON.stringify(what.fields ?? {}),
    reason: what.reason ?? "",
  };
}

/** A stored audit record: its fields, its place in the chain, and the hash linking it. */
export interface ChainedAuditRow extends AuditRow {
  seq: number;
  prevHash: string;
  hash: string;
}

/**
 * The hash of a record: SHA-256 over the previous record's hash and the canonical JSON of this
 * record's fields. Changing any field, or removing or reordering records, breaks the chain
 * from there on.
 */
export function auditHash(prevHash: string, r: AuditRow): string {
  const fields = {
    at_ms: r.atMs,
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
  };
  return createHash("sha256").update(prevHash).update("\n").update(canonicalJson(fields)).digest("hex");
}

/** An ingest batch's audit record, its fields completed with how many events were new. */
export function withInserted(r: AuditRow, inserted: number): AuditRow {
  return { ...r, fieldsJson: JSON.stringify({ ...(JSON.parse(r.fieldsJson) as object), inserted }) };
}

/** Links rows to a chain whose last hash is `lastHash` (empty for an empty trail). */
export function chainAudit(rows: readonly AuditRow[], lastHash: string): (AuditRow & { prevHash: string; hash: string })[] {
  let prev = lastHash;
  return rows.map((r) => {
    const hash = auditHash(prev, r);
    const linked = { ...r, prevHash: prev, hash };
    prev = hash;
    return linked;
  });
}

export interface AuditProblem {
  seq: number;
  problem: string;
}

/**
 * Checks a stretch of the chain, in sequence order. `expectedPrev` is the hash the first row
 * must link to (the hash of the row before the stretch; for the first stretch, the first row's
 * own prev_hash, since pruning may have removed what came before). Returns the problems found
 * and the last hash, to continue with the next stretch.
 */
export function verifyAuditStretch(rows: readonly ChainedAuditRow[], expectedPrev: string | undefined): { problems: AuditProblem[]; lastHash: string | undefined } {
  const problems: AuditProblem[] = [];
  let prev = expectedPrev;
  for (const r of rows) {
    if (prev !== undefined && r.prevHash !== prev) {
      problems.push({ seq: r.seq, problem: "does not link to the record before it: a record was removed, inserted or altered" });
    }
    if (auditHash(r.prevHash, r) !== r.hash) problems.push({ seq: r.seq, problem: "its fields do not match its hash: the record was altered" });
    prev = r.hash;
  }
  return { problems, lastHash: prev };
}
