import { bigint, bigserial, index, integer, pgTable, text } from "drizzle-orm/pg-core";

/** Mirrors ../sqlite/schema.ts: same tables, columns and indexes, under the same names. */
export const events = pgTable(
  "events",
  {
    seq: bigserial("seq", { mode: "number" }).primaryKey(),
    eventId: text("event_id").notNull().unique(),
    eventType: text("event_type").notNull(),
    nodeId: text("node_id").notNull(),
    tsSeconds: bigint("ts_seconds", { mode: "number" }).notNull(),
    tsNanos: integer("ts_nanos").notNull(),
    lockFingerprint: text("lock_fingerprint"),
    releaseId: text("release_id"),
    payload: text("payload"),
    receivedAtMs: bigint("received_at_ms", { mode: "number" }).notNull(),
  },
  (t) => [index("events_node_seq").on(t.nodeId, t.seq), index("events_type_seq").on(t.eventType, t.seq)],
);
