import { bigint, bigserial, boolean, index, integer, pgTable, primaryKey, text } from "drizzle-orm/pg-core";

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

export const nodes = pgTable(
  "nodes",
  {
    nodeId: text("node_id").primaryKey(),
    channel: text("channel").notNull(),
    labels: text("labels").notNull(),
    agentVersion: text("agent_version").notNull(),
    enrolledAtMs: bigint("enrolled_at_ms", { mode: "number" }).notNull(),
    lastSeenMs: bigint("last_seen_ms", { mode: "number" }),
    reportedReleaseId: text("reported_release_id"),
    drained: boolean("drained").notNull(),
    drainReason: text("drain_reason").notNull(),
  },
  (t) => [index("nodes_channel_id").on(t.channel, t.nodeId)],
);

export const releases = pgTable(
  "releases",
  {
    seq: bigserial("seq", { mode: "number" }).primaryKey(),
    releaseId: text("release_id").notNull().unique(),
    channel: text("channel").notNull(),
    version: text("version").notNull(),
    artifacts: text("artifacts").notNull(),
    notes: text("notes").notNull(),
    publishedAtMs: bigint("published_at_ms", { mode: "number" }).notNull(),
  },
  (t) => [index("releases_channel_seq").on(t.channel, t.seq)],
);

export const nodeAcks = pgTable(
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
    observedAtMs: bigint("observed_at_ms", { mode: "number" }).notNull(),
    updatedAtMs: bigint("updated_at_ms", { mode: "number" }).notNull(),
  },
  (t) => [primaryKey({ columns: [t.releaseId, t.nodeId] }), index("node_acks_node_updated").on(t.nodeId, t.updatedAtMs)],
);
