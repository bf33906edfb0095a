/**
 * Refused calls in the audit trail, coalesced: a caller that fails or is refused again and
 * again (a flood of 401s, a misconfigured agent) writes one record per source, caller, RPC
 * and reason per interval, with a count, instead of one record per request.
 */
import { auditRecord, boundClaim, type AuditRow } from "../domain/audit.js";
import type { Logger } from "../observability/logger.js";
import type { Store } from "../store/store.js";

/** One refused call. */
export interface Refusal {
  /** auth.denied (a known caller lacks a permission or broke a rule) or auth.failed (no usable credential). */
  eventName: "auth.denied" | "auth.failed";
  /** The remote address, or "unknown". */
  source: string;
  /** The authenticated principal, or "anonymous". */
  actor: string;
  /** What the autonomy-operator header claimed, unverified. */
  claim?: string;
  rpc: string;
  reason: string;
  /** More details (a token id, never a token). */
  fields?: Record<string, unknown>;
}

interface Window {
  row: AuditRow;
  /** Refusals after the first, not yet written. */
  repeats: number;
  firstRepeatMs: number;
  lastRepeatMs: number;
}

export interface RefusalRecorderOptions {
  store: Store;
  logger: Logger;
  /** How long one record stands for every repeat of the same refusal; 10 seconds when unset. */
  intervalMs?: number;
  /** Distinct refusals tracked per interval; beyond it they count in one record per reason. 1024 when unset. */
  maxKeys?: number;
  /**
   * Distinct refusals of one caller (source and principal) per interval; beyond it that caller's
   * refusals count in one record per reason, whatever they claim or call. 64 when unset.
   */
  maxKeysPerCaller?: number;
  now?: () => number;
}

export const DEFAULT_REFUSAL_INTERVAL_MS = 10_000;
export const DEFAULT_REFUSAL_KEYS = 1024;
export const DEFAULT_REFUSAL_KEYS_PER_CALLER = 64;

export class RefusalRecorder {
  private windows = new Map<string, Window>();
  /** Distinct refusals per caller in this interval. */
  private perCaller = new Map<string, number>();
  private timer: NodeJS.Timeout | undefined;
  private readonly intervalMs: number;
  private readonly maxKeys: number;
  private readonly maxKeysPerCaller: number;
  private readonly now: () => number;
  private flushing: Promise<void> = Promise.resolve();

  constructor(private readonly opts: RefusalRecorderOptions) {
    this.intervalMs = opts.intervalMs ?? DEFAULT_REFUSAL_INTERVAL_MS;
    this.maxKeys = opts.maxKeys ?? DEFAULT_REFUSAL_KEYS;
    this.maxKeysPerCaller = opts.maxKeysPerCaller ?? DEFAULT_REFUSAL_KEYS_PER_CALLER;
    this.now = opts.now ?? Date.now;
  }

  /** Refusals being counted in this interval (bounded by maxKeys + one per reason). */
  get tracked(): number {
    return this.windows.size;
  }

  /**
   * Records a refusal: the first of its kind in an interval is written at once; repeats are
   * counted and written as one record when the interval ends.
   */
  async record(r: Refusal): Promise<void> {
    const claim = r.claim === undefined || r.claim === "" ? undefined : boundClaim(r.claim);
    let key = [r.eventName, r.source, r.actor, claim?.value ?? "", r.rpc, r.reason].join("\u0000");
    let refusal = r;
    const caller = [r.source, r.actor].join("\u0000");
    if (!this.windows.has(key)) {
      const seen = this.perCaller.get(caller) ?? 0;
      if (this.windows.size >= this.maxKeys) {
        // Too many different refusals in one interval (many sources): one bucket per reason.
        key = [r.eventName, "*", r.reason].join("\u0000");
        refusal = { eventName: r.eventName, source: "many", actor: "many", rpc: "many", reason: r.reason };
      } else if (seen >= this.maxKeysPerCaller) {
        // One caller with many different claims or calls (a flood of forged headers): one bucket per reason.
        key = [r.eventName, r.source, r.actor, "*", r.reason].join("\u0000");
        refusal = { eventName: r.eventName, source: r.source, actor: r.actor, rpc: "many", reason: r.reason, fields: { claims_and_rpcs: "many" } };
      } else {
        this.perCaller.set(caller, seen + 1);
      }
    }
    const nowMs = this.now();
    const open = this.windows.get(key);
    if (open) {
      if (open.repeats === 0) open.firstRepeatMs = nowMs;
      open.repeats++;
      open.lastRepeatMs = nowMs;
      return;
    }
    const fields: Record<string, unknown> = { ...refusal.fields };
    if (refusal === r && claim) {
      fields.claimed_operator = claim.value;
      fields.claimed_operator_bytes = claim.bytes;
      if (claim.truncated) fields.claimed_operator_truncated = true;
    }
    const row = auditRecord(
      { actor: refusal.actor, source: refusal.source },
      { eventName: refusal.eventName, category: "auth", action: "call", resourceType: "rpc", resource: refusal.rpc, reason: refusal.reason, fields },
      nowMs,
    );
    row.outcome = refusal.eventName === "auth.failed" ? "failure" : "denied";
    this.windows.set(key, { row, repeats: 0, firstRepeatMs: 0, lastRepeatMs: 0 });
    this.timer ??= setTimeout(() => void this.flush(), this.intervalMs).unref();
    await this.write([row]);
  }

  /** Writes the repeats counted so far and starts a new interval. */
  flush(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    const closed = [...this.windows.values()].filter((w) => w.repeats > 0);
    this.windows = new Map();
    this.perCaller = new Map();
    const rows = closed.map((w) => ({
      ...w.row,
      atMs: w.lastRepeatMs,
      fieldsJson: JSON.stringify({
        ...(JSON.parse(w.row.fieldsJson) as object),
        count: w.repeats,
        first_at: new Date(w.firstRepeatMs).toISOString(),
        last_at: new Date(w.lastRepeatMs).toISOString(),
      }),
    }));
    this.flushing = this.flushing.then(() => this.write(rows));
    return this.flushing;
  }

  /** Writes what is counted and stops (at shutdown, before the store closes). */
  async close(): Promise<void> {
    await this.flush();
  }

  private async write(rows: AuditRow[]): Promise<void> {
    if (rows.length === 0) return;
    try {
      await this.opts.store.appendAudit(rows);
    } catch (err) {
      this.opts.logger.error({ err: (err as Error).message, records: rows.length }, "could not record refused calls in the audit trail");
    }
  }
}
