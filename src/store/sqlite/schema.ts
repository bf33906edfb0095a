import { index, integer, primaryKey, sqliteTable, text } from "drizzle-orm/sqlite-core";

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

export const nodes = sqliteTable(
  "nodes",
  {
    nodeId: text("node_id").primaryKey(),
    channel: text("channel").notNull(),
    labels: text("labels").notNull(),
    agentVersion: text("agent_version").notNull(),
    enrolledAtMs: integer("enrolled_at_ms").notNull(),
    lastSeenMs: integer("last_seen_ms"),
    reportedReleaseId: text("reported_release_id"),
    drained: integer("drained", { mode: "boolean" }).notNull(),
    drainReason: text("drain_reason").notNull(),
  },
  (t) => [index("nodes_channel_id").on(t.channel, t.nodeId)],
);

export const releases = sqliteTable(
  "releases",
  {
    seq: integer("seq").primaryKey({ autoIncrement: true }),
    releaseId: text("release_id").notNull().unique(),
    channel: text("channel").notNull(),
    version: text("version").notNull(),
    artifacts: text("artifacts").notNull(),
    notes: text("notes").notNull(),
    publishedAtMs: integer("published_at_ms").notNull(),
  },
  (t) => [index("releases_channel_seq").on(t.channel, t.seq)],
);

export const nodeAcks = sqliteTable(
  "node_acks",
  {
    releaseId: text("release_id")
      .notNull()
      .references(() => releases.releaseId),
    nodeId: text("node_id")
      .notNull()
      .references(() => nodes.nodeId),
    state: text("state").notNull(),
    message: text("message").notNull(),
    reportedReleaseId: text("reported_release_id").notNull(),
    observedAtMs: integer("observed_at_ms").notNull(),
    updatedAtMs: integer("updated_at_ms").notNull(),
  },
  (t) => [primaryKey({ columns: [t.releaseId, t.nodeId] }), index("node_acks_node_updated").on(t.nodeId, t.updatedAtMs)],
);
