import type { Event } from "../../gen/autonomy/v1/events_pb.js";
import { PayloadTooLargeError, ValidationError } from "./errors.js";
import { checkId, checkText, checkTimestamp } from "./fields.js";

/** Most events one ingest request may carry. */
export const MAX_EVENTS_PER_BATCH = 10_000;
/** Largest request body the server reads, in bytes. */
export const MAX_BODY_BYTES = 8 * 1024 * 1024;
/** Page size of QueryEvents when none is asked for, and the most that may be asked for. */
export const DEFAULT_QUERY_LIMIT = 100;
export const MAX_QUERY_LIMIT = 1000;

/**
 * Checks a batch before anything is written: its size, and every event's required and
 * bounded fields. The first bad event rejects the whole batch, naming its index and field.
 */
export function validateEventBatch(events: readonly Event[]): void {
  if (events.length > MAX_EVENTS_PER_BATCH) {
    throw new PayloadTooLargeError(
      `events: a batch holds at most ${MAX_EVENTS_PER_BATCH} events, got ${events.length}`,
    );
  }
  for (let i = 0; i < events.length; i++) {
    const e = events[i];
    const at = `events[${i}]`;
    checkId(e.eventId, `${at}.event_id`, true);
    checkId(e.eventType, `${at}.event_type`, true);
    checkId(e.nodeId, `${at}.node_id`, true);
    if (e.timestamp === undefined) throw new ValidationError(`${at}.timestamp`, "required");
    checkTimestamp(e.timestamp, `${at}.timestamp`);
    if (e.lockFingerprint !== undefined) checkText(e.lockFingerprint, `${at}.lock_fingerprint`);
    if (e.releaseId !== undefined) checkId(e.releaseId, `${at}.release_id`, false);
  }
}

/**
 * Drops events a node repeats within a batch (the same node_id and event_id), keeping the
 * first occurrence, so that the insertion order of the survivors is the order the node sent them in.
 */
export function dedupeWithinBatch(events: readonly Event[]): Event[] {
  // A duplicate is the same node sending the same event_id again; another node's id is its own.
  const seen = new Map<string, Set<string>>();
  const unique: Event[] = [];
  for (const e of events) {
    let ids = seen.get(e.nodeId);
    if (!ids) seen.set(e.nodeId, (ids = new Set()));
    if (ids.has(e.eventId)) continue;
    ids.add(e.eventId);
    unique.push(e);
  }
  return unique;
}

/** The page size a query asked for, defaulted and bounded. */
export function queryLimit(requested: number | undefined): number {
  if (requested === undefined) return DEFAULT_QUERY_LIMIT;
  if (requested < 1 || requested > MAX_QUERY_LIMIT) {
    throw new ValidationError("limit", `must be between 1 and ${MAX_QUERY_LIMIT}`);
  }
  return requested;
}

/** The `before` cursor of a query: a positive sequence number, or 0 for the newest. */
export function queryCursor(before: bigint): bigint {
  if (before < 0n) throw new ValidationError("before", "must not be negative");
  return before;
}

/** The window and bucket of an ingest-rate query, checked: 60 s to a day, at most 360 buckets. */
export function ingestRateWindow(req: { windowSeconds?: number; bucketSeconds?: number }, nowMs: number): { sinceMs: number; bucketMs: number; buckets: number } {
  const windowSeconds = req.windowSeconds ?? 600;
  const bucketSeconds = req.bucketSeconds ?? 10;
  if (!Number.isInteger(windowSeconds) || windowSeconds < 60 || windowSeconds > 86_400) throw new ValidationError("window_seconds", "must be 60 to 86400");
  if (!Number.isInteger(bucketSeconds) || bucketSeconds < 1) throw new ValidationError("bucket_seconds", "must be at least 1");
  const buckets = Math.ceil(windowSeconds / bucketSeconds);
  if (buckets > 360) throw new ValidationError("bucket_seconds", `${bucketSeconds} makes ${buckets} buckets of a ${windowSeconds}s window; at most 360`);
  const bucketMs = bucketSeconds * 1000;
  // Buckets on whole multiples of their width; the last one holds now and is still filling.
  const endMs = (Math.floor(nowMs / bucketMs) + 1) * bucketMs;
  return { sinceMs: endMs - buckets * bucketMs, bucketMs, buckets };
}
