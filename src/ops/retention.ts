import { setTimeout as sleep } from "node:timers/promises";
import { auditRecord, type Actor } from "../domain/audit.js";
import type { Logger } from "../observability/logger.js";
import type { EventDeletionResult, Store } from "../store/store.js";

export const RETENTION_ACTOR: Actor = { actor: "system:event-retention", source: "retention" };

/**
 * A batch may hold the writer this long at most. Batches are steered to a quarter of it (and a
 * batch stops early once it spent that), which leaves room for a slow step on a busy machine.
 */
export const MAX_BATCH_MS = 50;
const TARGET_BATCH_MS = MAX_BATCH_MS / 4;
/** The writer is left to ingest this many times as long as a batch held it (besides its queue). */
const PAUSE_FACTOR = 1;
const MIN_BATCH = 10;
const MAX_BATCH = 50_000;
// Small at first: the first batch measures what a batch costs on this database.
const FIRST_BATCH = 100;

export interface RetentionOptions {
  store: Store;
  /** Events received longer ago than this are deleted (--event-retention). */
  retentionMs: number;
  logger: Logger;
  /** Only the leader deletes; always true when unset (one SQLite server). */
  isLeader?: () => boolean;
  /** Time between runs; a run also starts right after start(). A minute when unset. */
  intervalMs?: number;
  now?: () => number;
}

/** What one run removed. */
export interface RetentionRun {
  deleted: number;
  batches: number;
  firstSeq?: bigint;
  lastSeq?: bigint;
  oldestReceivedMs?: number;
  newestReceivedMs?: number;
  /** The longest a batch held the writer, in milliseconds. */
  maxBatchMs: number;
  /** The receive-time bound of the run: events received before it were deleted. */
  cutoffMs: number;
}

/** The next batch size: steered so a batch takes about TARGET_BATCH_MS, moving at most 2x (or /4) at a time. */
export function nextBatchSize(size: number, elapsedMs: number): number {
  const factor = Math.min(2, Math.max(0.25, TARGET_BATCH_MS / Math.max(elapsedMs, 0.05)));
  return Math.min(MAX_BATCH, Math.max(MIN_BATCH, Math.round(size * factor)));
}

/**
 * Event retention (--event-retention): deletes events received before now minus the
 * retention, oldest first, in batches that each hold the writer briefly (their time is
 * measured where they run and the next batch is sized from it), with a pause between
 * batches as long as the batch took, so ingest keeps at least half of the writer. Each run that removed
 * anything is recorded in the audit trail with its count and its seq and time ranges.
 *
 * The range is found without scanning: sequence numbers and receive times grow together,
 * so a binary search over point reads finds the last old event, and every batch is a
 * primary-key range scan below it (with the receive time checked again on every row).
 */
export class EventRetention {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<unknown> | undefined;
  private stopped = true;
  /** Set by stop(): a run in progress ends after its current batch. */
  private halting = false;
  private batchSize = FIRST_BATCH;
  private readonly isLeader: () => boolean;
  private readonly now: () => number;

  constructor(private readonly opts: RetentionOptions) {
    if (!Number.isFinite(opts.retentionMs) || opts.retentionMs < 1000) throw new Error("--event-retention: at least 1s");
    this.isLeader = opts.isLeader ?? (() => true);
    this.now = opts.now ?? Date.now;
  }

  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.halting = false;
    this.schedule(0);
  }

  /** Stops between two batches and waits for the run in progress. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.halting = true;
    clearTimeout(this.timer);
    await this.running;
  }

  private schedule(ms: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.running = this.runOnce()
        .catch((err: Error) => this.opts.logger.warn({ err: err.message }, "event retention run failed; retrying at the next run"))
        .finally(() => {
          this.running = undefined;
          this.schedule(this.opts.intervalMs ?? 60_000);
        });
    }, ms);
    this.timer.unref();
  }

  /** One run: deletes every event older than the retention (unless stopped or no longer leader). */
  async runOnce(): Promise<RetentionRun | undefined> {
    if (!this.isLeader()) return undefined;
    const { store } = this.opts;
    const cutoffMs = this.now() - this.opts.retentionMs;
    const first = await store.eventAtOrAfter(0n);
    if (!first || first.receivedAtMs >= cutoffMs) return undefined;
    const throughSeq = await this.lastOldSeq(first.seq, cutoffMs);
    const run: RetentionRun = { deleted: 0, batches: 0, maxBatchMs: 0, cutoffMs };
    let afterSeq = first.seq - 1n;
    // The loop also ends when stop() was called: a batch in progress finishes, none starts.
    while (this.isLeader() && !this.halting) {
      const limit = this.batchSize;
      const r = await store.deleteEvents({ afterSeq, throughSeq, receivedBeforeMs: cutoffMs, limit, budgetMs: TARGET_BATCH_MS });
      this.record(run, r);
      // Sized from the rate it deleted at: a batch its budget cut short counts as the part it did.
      this.batchSize = nextBatchSize(Math.max(r.deleted, MIN_BATCH), r.elapsedMs);
      if (r.done || r.lastSeq === undefined || r.lastSeq >= throughSeq) break;
      afterSeq = r.lastSeq;
      await sleep(Math.max(2, Math.ceil(r.elapsedMs * PAUSE_FACTOR)));
    }
    if (run.deleted > 0) await this.audit(run);
    return run;
  }

  /** The seq of the newest event received before the cutoff, by a binary search (the first event is old). */
  private async lastOldSeq(firstOld: bigint, cutoffMs: number): Promise<bigint> {
    const { store } = this.opts;
    let lo = firstOld;
    let hi = (await store.newestEventSeq()) + 1n;
    while (hi - lo > 1n) {
      const mid = (lo + hi) / 2n;
      const e = await store.eventAtOrAfter(mid);
      if (!e || e.seq >= hi || e.receivedAtMs >= cutoffMs) hi = mid;
      else lo = e.seq;
    }
    return lo;
  }

  private record(run: RetentionRun, r: EventDeletionResult): void {
    run.batches++;
    run.maxBatchMs = Math.max(run.maxBatchMs, r.elapsedMs);
    if (r.deleted === 0) return;
    run.deleted += r.deleted;
    run.firstSeq ??= r.firstSeq;
    run.lastSeq = r.lastSeq;
    run.oldestReceivedMs = Math.min(run.oldestReceivedMs ?? Infinity, r.oldestReceivedMs!);
    run.newestReceivedMs = Math.max(run.newestReceivedMs ?? -Infinity, r.newestReceivedMs!);
  }

  private async audit(run: RetentionRun): Promise<void> {
    const iso = (ms: number | undefined) => (ms === undefined ? undefined : new Date(ms).toISOString());
    const fields = {
      deleted: run.deleted,
      batches: run.batches,
      first_seq: String(run.firstSeq),
      last_seq: String(run.lastSeq),
      oldest_received_at: iso(run.oldestReceivedMs),
      newest_received_at: iso(run.newestReceivedMs),
      cutoff: iso(run.cutoffMs),
      retention_seconds: Math.round(this.opts.retentionMs / 1000),
      max_batch_ms: Math.round(run.maxBatchMs * 100) / 100,
    };
    await this.opts.store.appendAudit([
      auditRecord(RETENTION_ACTOR, {
        eventName: "events.retention.deleted",
        category: "system",
        action: "delete",
        resourceType: "events",
        resource: `${run.firstSeq}..${run.lastSeq}`,
        fields,
      }),
    ]);
    this.opts.logger.info(fields, "event retention: deleted old events");
  }
}
