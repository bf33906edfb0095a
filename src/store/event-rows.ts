import type { JsonObject } from "@bufbuild/protobuf";
import { EventSchema, type Event } from "../../gen/autonomy/v1/events_pb.js";
import { jsonText, jsonTextWith } from "../domain/json-text.js";
import type { EventPage } from "./store.js";
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
  const event = eventOfRow(r);
  if (r.payload !== null) event.payload = JSON.parse(r.payload) as JsonObject;
  return event;
}

/**
 * A stored event's proto3 JSON text, the text jsonText writes for rowToEvent(r), with its
 * payload written as stored: the payload column holds what JSON.stringify wrote for it
 * (eventToRow), which is what JSON.stringify writes again for the object parsed from it, so
 * the payload is neither parsed nor written again. The column is the server's own: a payload
 * put there by other means (by hand in SQL) is answered as it was put there.
 */
export function rowToEventText(r: Omit<EventRow, "receivedAtMs">): string {
  const event = eventOfRow(r);
  return r.payload === null ? jsonText(EventSchema, event) : jsonTextWith(EventSchema, event, { payload: r.payload });
}

/** Stored events as a page of JSON text (Store.queryEventPage). */
export function eventPageOfRows(rows: readonly Omit<EventRow, "receivedAtMs">[]): EventPage {
  let text = "[";
  for (let i = 0; i < rows.length; i++) text += (i > 0 ? "," : "") + rowToEventText(rows[i]);
  return { count: rows.length, text: text + "]" };
}

/** An event's message without its payload. */
function eventOfRow(r: Omit<EventRow, "receivedAtMs">): Event {
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
  return event;
}
