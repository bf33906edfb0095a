import type { Event } from "../../gen/autonomy/v1/events_pb.js";
import { PayloadTooLargeError, ValidationError } from "./errors.js";

/** Most events one ingest request may carry. */
export const MAX_EVENTS_PER_BATCH = 10_000;
/** Largest request body the server reads, in bytes. */
export const MAX_BODY_BYTES = 8 * 1024 * 1024;
/** Longest id, type, fingerprint or release id, in UTF-8 bytes. */
export const MAX_ID_BYTES = 256;
/** Page size of QueryEvents when none is asked for, and the most that may be asked for. */
export const DEFAULT_QUERY_LIMIT = 100;
export const MAX_QUERY_LIMIT = 1000;

function checkId(value: string, field: string, required: boolean): void {
  if (value === "") {
    if (required) throw new ValidationError(field, "required");
    return;
  }
  // UTF-8 length is at most 3 bytes per UTF-16 unit: skip the exact count for short strings.
  if (value.length * 3 > MAX_ID_BYTES && Buffer.byteLength(value, "utf8") > MAX_ID_BYTES) {
    throw new ValidationError(field, `longer than ${MAX_ID_BYTES} bytes`);
  }
}

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
    const { seconds, nanos } = e.timestamp;
    // The RFC 3339 range protobuf allows: 0001-01-01 to 9999-12-31.
    if (seconds < -62135596800n || seconds > 253402300799n || nanos < 0 || nanos > 999_999_999) {
      throw new ValidationError(`${at}.timestamp`, "out of range");
    }
    if (e.lockFingerprint !== undefined) checkId(e.lockFingerprint, `${at}.lock_fingerprint`, false);
    if (e.releaseId !== undefined) checkId(e.releaseId, `${at}.release_id`, false);
  }
}

/**
 * Drops repeated event ids within a batch, keeping the first occurrence, so that the
 * insertion order of the survivors is the order the node sent them in.
 */
export function dedupeWithinBatch(events: readonly Event[]): Event[] {
  const seen = new Set<string>();
  const unique: Event[] = [];
  for (const e of events) {
    if (seen.has(e.eventId)) continue;
    seen.add(e.eventId);
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
