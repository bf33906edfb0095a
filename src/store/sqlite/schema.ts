import { index, integer, sqliteTable, text } from "drizzle-orm/sqlite-core";

/** Mirrors ../pg/schema.ts: same tables, columns and indexes, under the same names. */
export const events = sqliteTable(
  "events",
  {
    // AUTOINCREMENT: a sequence number is never reused, even after retention deletes, so cursors stay valid.
    seq: integer("seq").primaryKey({ autoIncrement: true }),
    eventId: text("event_id").notNull().unique(),
    eventType: text("event_type").notNull(),
    nodeId: text("node_id").notNull(),
    tsSeconds: integer("ts_seconds").notNull(),
    tsNanos: integer("ts_nanos").notNull(),
    lockFingerprint: text("lock_fingerprint"),
    releaseId: text("release_id"),
    payload: text("payload"),
    receivedAtMs: integer("received_at_ms").notNull(),
  },
  (t) => [index("events_node_seq").on(t.nodeId, t.seq), index("events_type_seq").on(t.eventType, t.seq)],
);
