/** The benchmark's deterministic workload: the same batches for the ceiling, the peer and the server. */
import { create, toBinary } from "@bufbuild/protobuf";
import { IngestEventsRequestSchema } from "../gen/autonomy/v1/events_pb.js";

export const BATCH_SIZE = 500;
const TYPES = ["heartbeat", "telemetry", "boot", "crash_report", "ack"];
const BASE_MS = Date.parse("2026-11-22T10:00:00.000Z");

export interface JsonEvent {
  event_id: string;
  event_type: string;
  node_id: string;
  timestamp: string;
  release_id: string;
  payload: { seq: number; temperature: number; status: string; tags: string[] };
}

/** Batch `b` of a run: 500 events with a timestamp and a JSON payload, ids unique across batches. */
export function jsonBatch(b: number, size = BATCH_SIZE): JsonEvent[] {
  return Array.from({ length: size }, (_, i) => {
    const n = b * size + i;
    return {
      event_id: `evt-${b}-${i}`,
      event_type: TYPES[n % TYPES.length],
      node_id: `node-${n % 1000}`,
      timestamp: new Date(BASE_MS + n).toISOString(),
      release_id: "rel-2026.11.1",
      payload: { seq: n, temperature: 20 + (n % 100) / 10, status: "ok", tags: ["edge", "bench"] },
    };
  });
}

export function restBody(b: number): Buffer {
  return Buffer.from(JSON.stringify({ events: jsonBatch(b) }));
}

export function protoBody(b: number): Uint8Array {
  const events = jsonBatch(b).map((e) => {
    const ms = Date.parse(e.timestamp);
    return {
      eventId: e.event_id,
      eventType: e.event_type,
      nodeId: e.node_id,
      timestamp: { seconds: BigInt(Math.floor(ms / 1000)), nanos: (ms % 1000) * 1e6 },
      releaseId: e.release_id,
      payload: e.payload,
    };
  });
  return toBinary(IngestEventsRequestSchema, create(IngestEventsRequestSchema, { events }));
}

/** The row values the SQLite schema stores for an event (as the server's store writes them). */
export function rowOf(e: JsonEvent, receivedAtMs: number) {
  const ms = Date.parse(e.timestamp);
  return {
    eventId: e.event_id,
    eventType: e.event_type,
    nodeId: e.node_id,
    tsSeconds: Math.floor(ms / 1000),
    tsNanos: (ms % 1000) * 1e6,
    lockFingerprint: null,
    releaseId: e.release_id,
    payload: JSON.stringify(e.payload),
    receivedAtMs,
  };
}
