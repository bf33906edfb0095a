import { create } from "@bufbuild/protobuf";
import { timestampFromMs, timestampMs } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import { AuditRecordSchema, type AuditService } from "../../gen/autonomy/v1/audit_pb.js";
import { verifyAuditStretch, type AuditProblem, type ChainedAuditRow } from "../domain/audit.js";
import { ValidationError } from "../domain/errors.js";
import { checkId } from "../domain/fields.js";
import { checkReason } from "../domain/rollouts.js";
import type { Store } from "../store/store.js";
import { actorOf, auditRecord } from "./audit-record.js";

const MAX_LIMIT = 1000;
const VERIFY_PAGE = 1000;
const DAY_MS = 86_400_000;

const toRecord = (r: ChainedAuditRow) =>
  create(AuditRecordSchema, {
    seq: BigInt(r.seq),
    timestamp: timestampFromMs(r.atMs),
    eventName: r.eventName,
    category: r.category,
    action: r.action,
    outcome: r.outcome,
    actor: r.actor,
    resourceType: r.resourceType,
    resource: r.resource,
    source: r.source,
    fieldsJson: r.fieldsJson,
    reason: r.reason,
    prevHash: r.prevHash,
    hash: r.hash,
  });

/** The oldest cut-off a prune accepts, in days (100 years). */
export const MAX_PRUNE_DAYS = 36_500;

/** AuditService: query, verify and prune the hash-chained audit trail. */
export function createAuditService(deps: { store: Store }): ServiceImpl<typeof AuditService> {
  const { store } = deps;
  return {
    async queryAuditRecords(req) {
      const limit = req.limit ?? 100;
      if (!Number.isInteger(limit) || limit < 1 || limit > MAX_LIMIT) throw new ValidationError("limit", `must be 1 to ${MAX_LIMIT}`);
      if (req.order !== "" && req.order !== "asc" && req.order !== "desc") throw new ValidationError("order", 'must be "asc" or "desc"');
      if (req.cursor < 0n) throw new ValidationError("cursor", "must not be negative");
      const fields = ["eventName", "category", "action", "outcome", "actor", "resourceType", "resource", "source"] as const;
      for (const f of fields) checkId(req[f], f.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`), false);
      const rows = await store.auditRecords({
        eventName: req.eventName,
        category: req.category,
        action: req.action,
        outcome: req.outcome,
        actor: req.actor,
        resourceType: req.resourceType,
        resource: req.resource,
        source: req.source,
        sinceMs: req.since && timestampMs(req.since),
        untilMs: req.until && timestampMs(req.until),
        cursorSeq: req.cursor === 0n ? undefined : Number(req.cursor),
        order: req.order === "asc" ? "asc" : "desc",
        limit,
      });
      const records = rows.map(toRecord);
      return { records, count: records.length, nextCursor: rows.length === limit ? BigInt(rows[rows.length - 1].seq) : 0n };
    },

    async verifyAuditChain() {
      const problems: AuditProblem[] = [];
      let checked = 0;
      let first: ChainedAuditRow | undefined;
      let lastSeq = 0;
      let prev: string | undefined;
      for (let cursor: number | undefined; ; ) {
        const page = await store.auditRecords({ order: "asc", cursorSeq: cursor, limit: VERIFY_PAGE });
        if (page.length === 0) break;
        first ??= page[0];
        const result = verifyAuditStretch(page, prev);
        problems.push(...result.problems);
        prev = result.lastHash;
        checked += page.length;
        cursor = lastSeq = page[page.length - 1].seq;
        if (page.length < VERIFY_PAGE) break;
      }
      return {
        ok: problems.length === 0,
        recordsChecked: checked,
        firstSeq: BigInt(first?.seq ?? 0),
        lastSeq: BigInt(lastSeq),
        startsAfterPrune: first !== undefined && first.prevHash !== "",
        problems: problems.map((p) => ({ seq: BigInt(p.seq), problem: p.problem })),
      };
    },

    async pruneAuditRecords(req, ctx) {
      // Beyond 100 years the cut-off falls before any representable date.
      if (!Number.isInteger(req.olderThanDays) || req.olderThanDays < 1) throw new ValidationError("older_than_days", "must be at least 1");
      if (req.olderThanDays > MAX_PRUNE_DAYS) throw new ValidationError("older_than_days", `must be at most ${MAX_PRUNE_DAYS} (100 years)`);
      checkReason(req.reason);
      const beforeMs = Date.now() - req.olderThanDays * DAY_MS;
      const record = auditRecord(actorOf(ctx), {
        eventName: "audit.pruned",
        category: "system",
        action: "prune",
        resourceType: "audit_trail",
        resource: "audit_records",
        fields: { older_than_days: req.olderThanDays, before: new Date(beforeMs).toISOString() },
        reason: req.reason,
      });
      const result = await store.pruneAudit(beforeMs, record);
      return { removed: result.removed, firstKeptSeq: BigInt(result.firstKeptSeq ?? 0) };
    },
  };
}
