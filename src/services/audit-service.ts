import { create } from "@bufbuild/protobuf";
import { timestampFromMs, timestampMs } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import { AuditRecordSchema, type AuditService } from "../../gen/autonomy/v1/audit_pb.js";
import { AuditVerifier, CHECKPOINT_EVENT, parseCheckpoint, type ChainedAuditRow } from "../domain/audit.js";
import { ValidationError } from "../domain/errors.js";
import { checkText } from "../domain/fields.js";
import { checkReason } from "../domain/rollouts.js";
import type { Store } from "../store/store.js";
import type { AuditCheckpoints } from "./audit-checkpoints.js";
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
export function createAuditService(deps: { store: Store; auditCheckpoints?: AuditCheckpoints }): ServiceImpl<typeof AuditService> {
  const { store, auditCheckpoints } = deps;
  const MAX_SUPPLIED = 100_000;
  return {
    async queryAuditRecords(req) {
      const limit = req.limit ?? 100;
      if (!Number.isInteger(limit) || limit < 1 || limit > MAX_LIMIT) throw new ValidationError("limit", `must be 1 to ${MAX_LIMIT}`);
      if (req.order !== "" && req.order !== "asc" && req.order !== "desc") throw new ValidationError("order", 'must be "asc" or "desc"');
      if (req.cursor < 0n) throw new ValidationError("cursor", "must not be negative");
      const fields = ["eventName", "category", "action", "outcome", "actor", "resourceType", "resource", "source"] as const;
      for (const f of fields) checkText(req[f], f.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`));
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

    async verifyAuditChain(req) {
      if (req.checkpoints.length > MAX_SUPPLIED) throw new ValidationError("checkpoints", `at most ${MAX_SUPPLIED}`);
      const supplied = req.checkpoints.map((line, i) => {
        let parsed: unknown;
        try {
          parsed = JSON.parse(line);
        } catch {
          parsed = undefined;
        }
        const c = parseCheckpoint(parsed);
        if (!c) throw new ValidationError(`checkpoints[${i}]`, "not a checkpoint line (JSON with seq, hash, at, key_id, reason and signature)");
        return c;
      });
      const verifier = new AuditVerifier(auditCheckpoints?.trustedKeys() ?? new Map());
      // The checkpoints first (in the chain, in this server's file, in the request), then one walk.
      for (let cursor: number | undefined; ; ) {
        const page = await store.auditRecords({ eventName: CHECKPOINT_EVENT, order: "asc", cursorSeq: cursor, limit: VERIFY_PAGE });
        for (const r of page) {
          let fields: unknown;
          try {
            fields = JSON.parse(r.fieldsJson);
          } catch {
            fields = undefined;
          }
          const c = parseCheckpoint(fields);
          if (c) verifier.addCheckpoint(c, "chain", r.seq);
        }
        if (page.length < VERIFY_PAGE) break;
        cursor = page[page.length - 1].seq;
      }
      for (const c of auditCheckpoints?.fileCheckpoints() ?? []) verifier.addCheckpoint(c, "file");
      for (const c of supplied) verifier.addCheckpoint(c, "request");
      for (let cursor: number | undefined; ; ) {
        const page = await store.auditRecords({ order: "asc", cursorSeq: cursor, limit: VERIFY_PAGE });
        verifier.add(page);
        if (page.length < VERIFY_PAGE) break;
        cursor = page[page.length - 1].seq;
      }
      const r = verifier.result();
      return {
        ok: r.ok,
        recordsChecked: r.recordsChecked,
        firstSeq: BigInt(r.firstSeq),
        lastSeq: BigInt(r.lastSeq),
        startsAfterPrune: r.startsAfterPrune,
        problems: r.problems.map((p) => ({ seq: BigInt(p.seq), problem: p.problem })),
        checkpointsChecked: r.checkpointsChecked,
        checkpointsUnverified: r.checkpointsUnverified,
        lastCheckpointSeq: BigInt(r.lastCheckpointSeq),
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
      if (auditCheckpoints) {
        const [first] = await store.auditRecords({ order: "asc", limit: 1 });
        await auditCheckpoints.checkpoint("prune", result.firstKeptSeq ?? first.seq);
      }
      return { removed: result.removed, firstKeptSeq: BigInt(result.firstKeptSeq ?? 0) };
    },
  };
}
