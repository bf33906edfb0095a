import { createHash } from "node:crypto";
import { canonicalJson } from "./rollouts.js";

export const AUDIT_CATEGORIES = ["rollout", "ha", "cert", "auth", "system", "rollback"] as const;
export const AUDIT_OUTCOMES = ["success", "failure", "denied"] as const;
/** The sources records carry (`source`), each with what it means: a call, or what the server did by itself. */
export const AUDIT_SOURCES = {
  api: "a call",
  controller: "the rollout controller",
  server: "the server itself: bootstrap, checkpoints",
  retention: "event retention deleting old events",
  many: "a summary of refused calls from many sources",
} as const;

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

/** A record's fields completed with what only the store learns inside the transaction. */
export function withFields(r: AuditRow, fields: object): AuditRow {
  return { ...r, fieldsJson: JSON.stringify({ ...(JSON.parse(r.fieldsJson) as object), ...fields }) };
}

/** Byte bounds of the stored fields: no record, however it was built, holds more. */
export const AUDIT_FIELD_BYTES = {
  eventName: 128,
  category: 32,
  action: 64,
  outcome: 16,
  actor: 300,
  resourceType: 64,
  resource: 300,
  source: 64,
  reason: 2048,
  fieldsJson: 65_536,
} as const;

/** A string cut to at most max UTF-8 bytes (at a character boundary), ending in "…" when cut. */
export function truncateBytes(value: string, max: number): string {
  if (value.length * 3 <= max || Buffer.byteLength(value, "utf8") <= max) return value;
  const room = max - 3; // "…" is 3 bytes
  let out = "";
  let bytes = 0;
  for (const ch of value) {
    const n = Buffer.byteLength(ch, "utf8");
    if (bytes + n > room) break;
    out += ch;
    bytes += n;
  }
  return `${out}…`;
}

const UNPRINTABLE_ALL = /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;

/** Longest claimed (unverified) operator name kept in a record, in bytes. */
export const MAX_CLAIM_BYTES = 64;

/**
 * An unverified claim (the autonomy-operator header of a refused call) as a record may hold
 * it: unprintable characters replaced, cut to MAX_CLAIM_BYTES, with its original size.
 */
export function boundClaim(claim: string): { value: string; bytes: number; truncated: boolean } {
  const bytes = Buffer.byteLength(claim, "utf8");
  const value = truncateBytes(claim.slice(0, MAX_CLAIM_BYTES * 2).replace(UNPRINTABLE_ALL, "\ufffd"), MAX_CLAIM_BYTES);
  return { value, bytes, truncated: bytes > MAX_CLAIM_BYTES || value.endsWith("…") };
}

/**
 * A record within AUDIT_FIELD_BYTES: text fields cut, and fields_json over its bound replaced
 * by a note of its size and SHA-256 (cutting JSON would leave something that does not parse).
 */
export function boundAuditRow(r: AuditRow): AuditRow {
  const b = AUDIT_FIELD_BYTES;
  let fieldsJson = r.fieldsJson;
  if (fieldsJson.length * 3 > b.fieldsJson && Buffer.byteLength(fieldsJson, "utf8") > b.fieldsJson) {
    fieldsJson = JSON.stringify({ truncated: true, bytes: Buffer.byteLength(fieldsJson, "utf8"), sha256: createHash("sha256").update(fieldsJson).digest("hex") });
  }
  return {
    atMs: r.atMs,
    eventName: truncateBytes(r.eventName, b.eventName),
    category: truncateBytes(r.category, b.category),
    action: truncateBytes(r.action, b.action),
    outcome: truncateBytes(r.outcome, b.outcome),
    actor: truncateBytes(r.actor, b.actor),
    resourceType: truncateBytes(r.resourceType, b.resourceType),
    resource: truncateBytes(r.resource, b.resource),
    source: truncateBytes(r.source, b.source),
    fieldsJson,
    reason: truncateBytes(r.reason, b.reason),
  };
}

/** Links rows to a chain whose last hash is `lastHash` (empty for an empty trail), each within AUDIT_FIELD_BYTES. */
export function chainAudit(rows: readonly AuditRow[], lastHash: string): (AuditRow & { prevHash: string; hash: string })[] {
  let prev = lastHash;
  return rows.map((row) => {
    const r = boundAuditRow(row);
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
 * A signed checkpoint of the chain: the newest record's seq and hash at a moment, signed with a
 * key that is not in the database (the server's Ed25519 key in its data dir). Written into the
 * chain (an audit.checkpoint record) and as a JSON line to a file and the log, which an operator
 * can keep elsewhere: whoever rewrites the database cannot make a chain that matches them.
 */
export interface AuditCheckpoint {
  seq: number;
  hash: string;
  /** RFC 3339. */
  at: string;
  key_id: string;
  /** Why it was written: start, interval or prune. */
  reason: string;
  /** A prune's checkpoint: the seq the trail starts at after the prune. */
  pruned_to?: number;
  /** Ed25519 over checkpointBytes, base64. */
  signature: string;
}

export const CHECKPOINT_EVENT = "audit.checkpoint";
export const PRUNE_EVENT = "audit.pruned";

/** The bytes a checkpoint's signature covers. */
export function checkpointBytes(c: Omit<AuditCheckpoint, "signature">): Buffer {
  const signed: Record<string, unknown> = { seq: c.seq, hash: c.hash, at: c.at, key_id: c.key_id, reason: c.reason };
  if (c.pruned_to !== undefined) signed.pruned_to = c.pruned_to;
  return Buffer.from(`autonomy audit checkpoint v1\n${canonicalJson(signed)}`, "utf8");
}

/** A checkpoint from JSON (a file line, a record's fields), or undefined when it is not one. */
export function parseCheckpoint(value: unknown): AuditCheckpoint | undefined {
  const c = value as Partial<AuditCheckpoint> | null;
  if (!c || typeof c !== "object") return undefined;
  if (!Number.isSafeInteger(c.seq) || (c.seq as number) < 1) return undefined;
  if (typeof c.hash !== "string" || !/^[0-9a-f]{64}$/.test(c.hash)) return undefined;
  if (typeof c.at !== "string" || typeof c.key_id !== "string" || typeof c.signature !== "string" || typeof c.reason !== "string") return undefined;
  if (c.pruned_to !== undefined && !Number.isSafeInteger(c.pruned_to)) return undefined;
  const out: AuditCheckpoint = { seq: c.seq as number, hash: c.hash, at: c.at, key_id: c.key_id, reason: c.reason, signature: c.signature };
  if (c.pruned_to !== undefined) out.pruned_to = c.pruned_to;
  return out;
}

/** Where a checkpoint came from, for the problems that name it. */
export type CheckpointOrigin = "chain" | "file" | "request";

export interface VerifyResult {
  ok: boolean;
  recordsChecked: number;
  firstSeq: number;
  lastSeq: number;
  startsAfterPrune: boolean;
  problems: AuditProblem[];
  checkpointsChecked: number;
  checkpointsUnverified: number;
  lastCheckpointSeq: number;
}

/**
 * Checks the whole trail, fed in seq order one stretch at a time: every link and hash, holes in
 * the seq numbers, a start that no prune record explains, and every signed checkpoint it is
 * given (a checkpoint whose record is gone or differs means the trail was rewritten). Signatures
 * are checked against `trustedKeys` (key id → verify function); checkpoints signed by another
 * key are counted as unverified and not used.
 */
export class AuditVerifier {
  private readonly problems: AuditProblem[] = [];
  private readonly pending = new Map<number, { c: AuditCheckpoint; origin: CheckpointOrigin }[]>();
  private checked = 0;
  private first: ChainedAuditRow | undefined;
  private last: ChainedAuditRow | undefined;
  private latestPrune: { seq: number; firstKept: number | null } | undefined;
  private verified = 0;
  private unverified = 0;
  private lastCheckpointSeq = 0;
  /** Verified prune checkpoints: the seq each was written at, by the start it confirms. */
  private readonly pruneConfirmations = new Map<number, number>();

  constructor(private readonly trustedKeys: ReadonlyMap<string, (bytes: Buffer, signature: Buffer) => boolean>) {}

  /** Adds a checkpoint to check the chain against; resolves whether its signature was verified. */
  addCheckpoint(c: AuditCheckpoint, origin: CheckpointOrigin, atSeq?: number): boolean {
    const verify = this.trustedKeys.get(c.key_id);
    if (!verify) {
      this.unverified++;
      return false;
    }
    const { signature, ...signed } = c;
    if (!verify(checkpointBytes(signed), Buffer.from(signature, "base64"))) {
      this.problems.push({ seq: atSeq ?? c.seq, problem: `a checkpoint (${origin}, ${c.at}) has a signature that does not verify: it was forged or altered` });
      return false;
    }
    this.verified++;
    if (c.pruned_to !== undefined) this.pruneConfirmations.set(c.pruned_to, Math.max(c.seq, this.pruneConfirmations.get(c.pruned_to) ?? 0));
    const list = this.pending.get(c.seq) ?? [];
    list.push({ c, origin });
    this.pending.set(c.seq, list);
    return true;
  }

  /** Checks the next stretch of the chain (seq order, continuing the last one). */
  add(rows: readonly ChainedAuditRow[]): void {
    for (const r of rows) {
      const prev = this.last;
      if (prev) {
        if (r.seq !== prev.seq + 1) {
          const missing = r.seq - prev.seq - 1;
          this.problems.push({ seq: r.seq, problem: `${missing === 1 ? `seq ${prev.seq + 1} is` : `seq ${prev.seq + 1} to ${r.seq - 1} are`} missing: records were removed` });
        }
        if (r.prevHash !== prev.hash) this.problems.push({ seq: r.seq, problem: "does not link to the record before it: a record was removed, inserted or altered" });
      } else {
        this.first = r;
      }
      if (auditHash(r.prevHash, r) !== r.hash) this.problems.push({ seq: r.seq, problem: "its fields do not match its hash: the record was altered" });
      if (r.eventName === PRUNE_EVENT) {
        const f = safeJson(r.fieldsJson) as { first_kept_seq?: unknown } | undefined;
        this.latestPrune = { seq: r.seq, firstKept: typeof f?.first_kept_seq === "number" ? f.first_kept_seq : null };
      }
      const claims = this.pending.get(r.seq);
      if (claims) {
        for (const { c, origin } of claims) {
          if (c.hash !== r.hash) {
            this.problems.push({ seq: r.seq, problem: `differs from the checkpoint (${origin}) of ${c.at}: this record or one before it was rewritten` });
          } else {
            this.lastCheckpointSeq = Math.max(this.lastCheckpointSeq, c.seq);
          }
        }
        this.pending.delete(r.seq);
      }
      this.last = r;
      this.checked++;
    }
  }

  /** The verdict, once every stretch was added. */
  result(): VerifyResult {
    const first = this.first;
    const last = this.last;
    const prune = this.latestPrune;
    // The seq the newest prune says the trail starts at (its own seq when it removed everything).
    const prunedTo = prune ? (prune.firstKept ?? prune.seq) : undefined;
    let startsAfterPrune = false;
    // A prune record alone proves nothing (whoever deletes rows can append one): the server
    // signs a checkpoint after each prune it makes, naming where the trail then starts.
    if (prune && prunedTo !== undefined && !((this.pruneConfirmations.get(prunedTo) ?? 0) >= prune.seq)) {
      this.problems.push({ seq: prune.seq, problem: `no checkpoint signed by this server confirms the prune at seq ${prune.seq}: records may have been removed and the prune record forged` });
    }
    if (first && first.prevHash !== "") {
      if (prunedTo !== undefined && first.seq === prunedTo) startsAfterPrune = true;
      else if (prunedTo !== undefined && first.seq < prunedTo) {
        this.problems.push({ seq: first.seq, problem: `the trail starts before seq ${prunedTo}, where the prune at seq ${prune!.seq} says it starts` });
      } else {
        this.problems.push({
          seq: first.seq,
          problem: prune
            ? `the trail starts at seq ${first.seq}, but the prune at seq ${prune.seq} kept from seq ${prunedTo}: records were removed without a prune record`
            : `the trail starts at seq ${first.seq}, after records that are gone, and no prune record explains it: records were removed`,
        });
      }
    }
    for (const [seq, claims] of this.pending) {
      for (const { c, origin } of claims) {
        if (!last || seq > last.seq) {
          this.problems.push({ seq, problem: `a checkpoint (${origin}) of ${c.at} covers seq ${seq}, but the trail ends at seq ${last?.seq ?? 0}: records at its end were removed` });
        } else if (first && seq < first.seq) {
          if (prunedTo === undefined || seq >= prunedTo) {
            this.problems.push({ seq, problem: `a checkpoint (${origin}) of ${c.at} covers seq ${seq}, which is gone, and no prune record explains it` });
          }
        } else {
          this.problems.push({ seq, problem: `a checkpoint (${origin}) of ${c.at} covers seq ${seq}, which is missing` });
        }
      }
    }
    this.problems.sort((a, b) => a.seq - b.seq);
    return {
      ok: this.problems.length === 0,
      recordsChecked: this.checked,
      firstSeq: first?.seq ?? 0,
      lastSeq: last?.seq ?? 0,
      startsAfterPrune,
      problems: this.problems,
      checkpointsChecked: this.verified,
      checkpointsUnverified: this.unverified,
      lastCheckpointSeq: this.lastCheckpointSeq,
    };
  }
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}
