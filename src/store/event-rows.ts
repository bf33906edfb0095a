import type { JsonObject } from "@bufbuild/protobuf";
import type { Event } from "../../gen/autonomy/v1/events_pb.js";
import type { RowOf } from "./schema-check.js";

/**
 * One event as both dialects store it (the drizzle schemas' row): the timestamp split into
 * seconds and nanos, the payload as JSON text, and the server's receive time (kept for
 * retention, not served).
 */
export type EventRow = RowOf<"events">;

export type NewEventRow = Omit<EventRow, "seq">;

/** The columns of a new row, in the order flattened rows carry them (see appendEventRow). */
export const EVENT_COLUMNS = [
  "eventId",
  "eventType",
  "nodeId",
  "tsSeconds",
  "tsNanos",
  "lockFingerprint",
  "releaseId",
  "payload",
  "receivedAtMs",
] as const satisfies readonly (keyof NewEventRow)[];

/** The row of a validated event; the timestamp's range was checked by the domain. */
export function eventToRow(e: Event, receivedAtMs: number): NewEventRow {
  return {
    eventId: e.eventId,
    eventType: e.eventType,
    nodeId: e.nodeId,
    tsSeconds: Number(e.timestamp!.seconds),
    tsNanos: e.timestamp!.nanos,
    lockFingerprint: e.lockFingerprint ?? null,
    releaseId: e.releaseId ?? null,
    payload: e.payload === undefined ? null : JSON.stringify(e.payload),
    receivedAtMs,
  };
}

/** Appends an event's row to a flat array, in EVENT_COLUMNS order (cheap to pass to another thread). */
export function appendEventRow(out: unknown[], e: Event, receivedAtMs: number): void {
  const row = eventToRow(e, receivedAtMs);
  for (const column of EVENT_COLUMNS) out.push(row[column]);
}

export function rowToEvent(r: Omit<EventRow, "receivedAtMs">): Event {
  // A literal, not create(): this runs for every row of every event query.
  const event: Event = {
    $typeName: "autonomy.v1.Event",
    seq: BigInt(r.seq),
    eventId: r.eventId,
    eventType: r.eventType,
    nodeId: r.nodeId,
    timestamp: { $typeName: "google.protobuf.Timestamp", seconds: BigInt(r.tsSeconds), nanos: r.tsNanos },
  };
  if (r.lockFingerprint !== null) event.lockFingerprint = r.lockFingerprint;
  if (r.releaseId !== null) event.releaseId = r.releaseId;
  if (r.payload !== null) event.payload = JSON.parse(r.payload) as JsonObject;
  return event;
}
