import { create, type JsonObject } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { EventSchema, type Event } from "../../gen/autonomy/v1/events_pb.js";

/** One event as both dialects store it: the timestamp split into seconds and nanos, the payload as JSON text. */
export interface EventRow {
  seq: number;
  eventId: string;
  eventType: string;
  nodeId: string;
  tsSeconds: number;
  tsNanos: number;
  lockFingerprint: string | null;
  releaseId: string | null;
  payload: string | null;
  receivedAtMs: number;
}

export type NewEventRow = Omit<EventRow, "seq">;

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

export function rowToEvent(r: EventRow): Event {
  return create(EventSchema, {
    seq: BigInt(r.seq),
    eventId: r.eventId,
    eventType: r.eventType,
    nodeId: r.nodeId,
    timestamp: { seconds: BigInt(r.tsSeconds), nanos: r.tsNanos },
    lockFingerprint: r.lockFingerprint ?? undefined,
    releaseId: r.releaseId ?? undefined,
    payload: r.payload === null ? undefined : (JSON.parse(r.payload) as JsonObject),
    receivedAt: timestampFromMs(r.receivedAtMs),
  });
}
