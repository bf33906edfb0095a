import { sql } from "drizzle-orm";
import { bigint, bigserial, boolean, index, integer, pgTable, primaryKey, text, uniqueIndex } from "drizzle-orm/pg-core";

/** Mirrors ../sqlite/schema.ts: same tables, columns and indexes, under the same names. */
export const events = pgTable(
  "events",
  {
    seq: bigserial("seq", { mode: "number" }).primaryKey(),
    eventId: text("event_id").notNull(),
    eventType: text("event_type").notNull(),
    nodeId: text("node_id").notNull(),
    tsSeconds: bigint("ts_seconds", { mode: "number" }).notNull(),
    tsNanos: integer("ts_nanos").notNull(),
    lockFingerprint: text("lock_fingerprint"),
    releaseId: text("release_id"),
    payload: text("payload"),
    receivedAtMs: bigint("received_at_ms", { mode: "number" }).notNull(),
  },
  // Dedupe is per node: the same event_id from another node is another event.
  (t) => [
    uniqueIndex("events_node_event_id").on(t.nodeId, t.eventId),
    index("events_node_seq").on(t.nodeId, t.seq),
    index("events_type_seq").on(t.eventType, t.seq),
  ],
);

/**
 * The newest event of each type of each node (its seq), kept by a trigger on events, so a node's
 * summary reads one row per type however many events the node sent. Retention removes the oldest
 * events first, so a type whose newest event is gone has no events left either.
 */
export const nodeLastEvents = pgTable(
  "node_last_events",
  {
    nodeId: text("node_id").notNull(),
    eventType: text("event_type").notNull(),
    seq: bigint("seq", { mode: "number" }).notNull(),
  },
  (t) => [primaryKey({ columns: [t.nodeId, t.eventType] })],
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
    /**
     * The release the node should run, kept by triggers (moves, unstaged releases) and by the
     * enrolment; the same rule as src/services/desired-release.ts, so the fleet totals can count drift.
     */
    desiredReleaseId: text("desired_release_id"),
    /**
     * Since when desired_release_id and reported_release_id have differed (null: they do not),
     * kept by a trigger on nodes: the divergence report reads the diverged nodes by this index.
     */
    divergedSinceMs: bigint("diverged_since_ms", { mode: "number" }),
    /** The release an operator accepted as this node's desired one (a pin); cleared by its next move. */
    pinnedReleaseId: text("pinned_release_id"),
    pinnedAtMs: bigint("pinned_at_ms", { mode: "number" }),
    pinReason: text("pin_reason").notNull().default(""),
    /** An operator's pending request that the node install this release again (reconcile --strategy reapply). */
    reapplyReleaseId: text("reapply_release_id"),
    reapplyRequestedAtMs: bigint("reapply_requested_at_ms", { mode: "number" }),
  },
  (t) => [
    index("nodes_channel_id").on(t.channel, t.nodeId),
    index("nodes_channel_seen").on(t.channel, t.lastSeenMs),
    // Only diverged nodes are in the divergence indexes: a node converging removes its entry
    // and a node diverging adds one, where a full index rewrote two entries for each (a
    // sighting that converges a node went from about 37 to 21 µs).
    index("nodes_diverged").on(t.divergedSinceMs, t.nodeId).where(sql`${t.divergedSinceMs} IS NOT NULL`),
    index("nodes_channel_diverged").on(t.channel, t.divergedSinceMs, t.nodeId).where(sql`${t.divergedSinceMs} IS NOT NULL`),
    // The fleet search's orders (src/store/fleet-search.ts spells its keys the same), in the "C"
    // collation it compares text in, whatever the database's: so also node_id and channel here,
    // which SQLite's primary key and nodes_channel_id serve. No index on last seen: every
    // heartbeat flush would rewrite it; that order sorts.
    index("nodes_search_id").on(sql`${t.nodeId} COLLATE "C"`),
    index("nodes_search_channel").on(sql`${t.channel} COLLATE "C"`, sql`${t.nodeId} COLLATE "C"`),
    index("nodes_search_reported").on(sql`(CASE WHEN ${t.reportedReleaseId} IS NULL THEN '' ELSE ${t.reportedReleaseId} END) COLLATE "C"`, sql`${t.nodeId} COLLATE "C"`),
    index("nodes_search_desired").on(sql`(CASE WHEN ${t.desiredReleaseId} IS NULL THEN '' ELSE ${t.desiredReleaseId} END) COLLATE "C"`, sql`${t.nodeId} COLLATE "C"`),
  ],
);

/**
 * The emergency stop: one row (id 1), written by the migration. While active, every write
 * that would start or move a rollout or publish an unstaged release is refused, in the
 * same transaction that reads it (PostgreSQL: FOR SHARE against the stop's row lock).
 */
export const emergencyStop = pgTable("emergency_stop", {
  id: integer("id").primaryKey(),
  active: boolean("active").notNull(),
  sinceMs: bigint("since_ms", { mode: "number" }),
  stoppedBy: text("stopped_by").notNull(),
  reason: text("reason").notNull(),
  resumedAtMs: bigint("resumed_at_ms", { mode: "number" }),
  resumedBy: text("resumed_by").notNull(),
  resumeReason: text("resume_reason").notNull(),
});

/**
 * How many nodes of a channel were last seen in each second (last_seen_ms / 1000), kept by
 * triggers on nodes: the fleet view counts the nodes seen since a time from a few rows.
 */
export const fleetSeen = pgTable(
  "fleet_seen",
  {
    channel: text("channel").notNull(),
    seenS: bigint("seen_s", { mode: "number" }).notNull(),
    n: integer("n").notNull(),
  },
  (t) => [primaryKey({ columns: [t.channel, t.seenS] }), index("fleet_seen_seen").on(t.seenS)],
);

/** How many nodes of a channel are in each combination of drained, drifted and ever seen, kept by triggers on nodes. */
export const fleetTotals = pgTable(
  "fleet_totals",
  {
    channel: text("channel").notNull(),
    drained: boolean("drained").notNull(),
    drifted: boolean("drifted").notNull(),
    seen: boolean("seen").notNull(),
    n: integer("n").notNull(),
  },
  (t) => [primaryKey({ columns: [t.channel, t.drained, t.drifted, t.seen] })],
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
    staged: boolean("staged").notNull().default(false),
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

/** Rollout plans: the signed spec never changes after the insert. */
export const rolloutPlans = pgTable(
  "rollout_plans",
  {
    seq: bigserial("seq", { mode: "number" }).primaryKey(),
    planId: text("plan_id").notNull().unique(),
    releaseId: text("release_id")
      .notNull()
      .references(() => releases.releaseId),
    channel: text("channel").notNull(),
    spec: text("spec").notNull(),
    signature: text("signature").notNull(),
    keyId: text("key_id").notNull(),
    createdAtMs: bigint("created_at_ms", { mode: "number" }).notNull(),
  },
  (t) => [index("rollout_plans_channel").on(t.channel, t.seq)],
);

/** The mutable, versioned status of each plan; stages as JSON (see src/domain/rollouts.ts). */
export const rolloutStatus = pgTable(
  "rollout_status",
  {
    planId: text("plan_id")
      .primaryKey()
      .references(() => rolloutPlans.planId),
    version: integer("version").notNull(),
    phase: text("phase").notNull(),
    currentStage: integer("current_stage").notNull(),
    reason: text("reason").notNull(),
    updatedAtMs: bigint("updated_at_ms", { mode: "number" }).notNull(),
    stages: text("stages").notNull(),
  },
  (t) => [index("rollout_status_phase").on(t.phase)],
);

/**
 * Which node each plan moved, in which stage, and the release it ran before (kind "move": a
 * node is moved once per plan); a rollback adds one "restore" row per moved node, whose
 * release_id is that previous release ("" when it had none: its channel's release again).
 * A node's newest row decides its desired release.
 */
export const rolloutMoves = pgTable(
  "rollout_moves",
  {
    seq: bigserial("seq", { mode: "number" }).primaryKey(),
    planId: text("plan_id")
      .notNull()
      .references(() => rolloutPlans.planId),
    stageId: text("stage_id").notNull(),
    nodeId: text("node_id").notNull(),
    releaseId: text("release_id").notNull(),
    movedAtMs: bigint("moved_at_ms", { mode: "number" }).notNull(),
    kind: text("kind").notNull().default("move"),
    previousReleaseId: text("previous_release_id"),
  },
  (t) => [uniqueIndex("rollout_moves_plan_node").on(t.planId, t.nodeId, t.kind), index("rollout_moves_node_seq").on(t.nodeId, t.seq)],
);

/** The audit trail: appended in the same transaction as the change it records. */
export const auditRecords = pgTable(
  "audit_records",
  {
    seq: bigserial("seq", { mode: "number" }).primaryKey(),
    atMs: bigint("at_ms", { mode: "number" }).notNull(),
    eventName: text("event_name").notNull(),
    category: text("category").notNull(),
    action: text("action").notNull(),
    outcome: text("outcome").notNull(),
    actor: text("actor").notNull(),
    resourceType: text("resource_type").notNull(),
    resource: text("resource").notNull(),
    source: text("source").notNull(),
    fieldsJson: text("fields_json").notNull(),
    reason: text("reason").notNull(),
    /** The hash of the record before (empty for the first record ever written). */
    prevHash: text("prev_hash").notNull().default(""),
    /** SHA-256 of prev_hash and this record's fields (src/domain/audit.ts). */
    hash: text("hash").notNull().default(""),
  },
  (t) => [index("audit_records_resource").on(t.resourceType, t.resource, t.seq)],
);

/** Public keys that rollout specs are signed with; every replica serves every key. */
export const signingKeys = pgTable("signing_keys", {
  keyId: text("key_id").primaryKey(),
  publicKeyPem: text("public_key_pem").notNull(),
  createdAtMs: bigint("created_at_ms", { mode: "number" }).notNull(),
});

/**
 * One row: 1 only inside the transaction of an audit prune. The database refuses UPDATE of
 * audit records always, and DELETE unless this is 1 (triggers in the migrations).
 */
export const auditPruneGate = pgTable("audit_prune_gate", {
  id: integer("id").primaryKey(),
  open: integer("open").notNull(),
});

/** Custom roles (the built-in ones live in src/domain/rbac.ts). */
export const rbacRoles = pgTable("rbac_roles", {
  name: text("name").primaryKey(),
  /** JSON array of resource:verb strings. */
  permissions: text("permissions").notNull(),
  createdAtMs: bigint("created_at_ms", { mode: "number" }).notNull(),
});

/** Who holds which role. */
export const rbacBindings = pgTable(
  "rbac_bindings",
  {
    principal: text("principal").notNull(),
    role: text("role").notNull(),
    createdAtMs: bigint("created_at_ms", { mode: "number" }).notNull(),
  },
  (t) => [primaryKey({ columns: [t.principal, t.role] })],
);

/** Bearer tokens, by the SHA-256 of their secret; the secret itself is never stored. */
export const rbacTokens = pgTable("rbac_tokens", {
  tokenId: text("token_id").primaryKey(),
  tokenHash: text("token_hash").notNull().unique(),
  principal: text("principal").notNull(),
  description: text("description").notNull(),
  createdAtMs: bigint("created_at_ms", { mode: "number" }).notNull(),
  expiresAtMs: bigint("expires_at_ms", { mode: "number" }).notNull(),
  revokedAtMs: bigint("revoked_at_ms", { mode: "number" }),
});

/**
 * One-time enrolment tokens, by the SHA-256 of the token; the token itself is never stored.
 * A token is spent (used_at_ms, certificate_serial) in the transaction that enrols its node.
 */
export const enrollmentTokens = pgTable(
  "enrollment_tokens",
  {
    tokenId: text("token_id").primaryKey(),
    tokenHash: text("token_hash").notNull().unique(),
    nodeId: text("node_id").notNull(),
    channel: text("channel").notNull(),
    createdBy: text("created_by").notNull(),
    createdAtMs: bigint("created_at_ms", { mode: "number" }).notNull(),
    expiresAtMs: bigint("expires_at_ms", { mode: "number" }).notNull(),
    usedAtMs: bigint("used_at_ms", { mode: "number" }),
    certificateSerial: text("certificate_serial"),
    revokedAtMs: bigint("revoked_at_ms", { mode: "number" }),
  },
  (t) => [index("enrollment_tokens_node").on(t.nodeId, t.createdAtMs)],
);

/** Certificates the server's CA signed for nodes: at enrolment (token_id) or renewal (previous_serial). */
export const nodeCertificates = pgTable(
  "node_certificates",
  {
    serial: text("serial").primaryKey(),
    nodeId: text("node_id").notNull(),
    issuedAtMs: bigint("issued_at_ms", { mode: "number" }).notNull(),
    notBeforeMs: bigint("not_before_ms", { mode: "number" }).notNull(),
    notAfterMs: bigint("not_after_ms", { mode: "number" }).notNull(),
    tokenId: text("token_id"),
    previousSerial: text("previous_serial"),
  },
  (t) => [index("node_certificates_node").on(t.nodeId, t.issuedAtMs)],
);

/**
 * Copies of a SQLite data dir into this database (`autonomy-orchestrator migrate`): a row is
 * written when a copy starts, and its cutover_at_ms (the HACutoverAt record) once every table
 * was copied and its row count checked. Never written by the server.
 */
export const haCutover = pgTable("ha_cutover", {
  seq: bigserial("seq", { mode: "number" }).primaryKey(),
  /** host:directory of the SQLite data dir copied. */
  source: text("source").notNull(),
  startedAtMs: bigint("started_at_ms", { mode: "number" }).notNull(),
  /** When the copy was validated; null while it is under way (or was interrupted). */
  cutoverAtMs: bigint("cutover_at_ms", { mode: "number" }),
  /** JSON object: rows copied per table. */
  rowCounts: text("row_counts").notNull(),
  /** Version of the program that copied. */
  version: text("version").notNull(),
});

/** The services of WorkloadService: each spec as canonical JSON (src/domain/workloads.ts), with its generation. */
export const workloadServices = pgTable("workload_services", {
  name: text("name").primaryKey(),
  spec: text("spec").notNull(),
  generation: bigint("generation", { mode: "number" }).notNull(),
  createdAtMs: bigint("created_at_ms", { mode: "number" }).notNull(),
  updatedAtMs: bigint("updated_at_ms", { mode: "number" }).notNull(),
});

/** The workload state's one version (row id 1, made by the first apply), bumped by every apply and delete that changes something. */
export const workloadState = pgTable("workload_state", {
  id: integer("id").primaryKey(),
  version: bigint("version", { mode: "number" }).notNull(),
});

/**
 * Where the reconcile loop placed each replica (node_id "" for one that fits nowhere), what it
 * should do (desired_state running or stopped), and what its node last reported of it. A
 * replica moved to another node has a row per node until the old one is gone.
 */
export const workloadReplicas = pgTable(
  "workload_replicas",
  {
    service: text("service").notNull(),
    idx: integer("idx").notNull(),
    nodeId: text("node_id").notNull(),
    generation: bigint("generation", { mode: "number" }).notNull(),
    desiredState: text("desired_state").notNull(),
    state: text("state").notNull(),
    reason: text("reason").notNull(),
    restarts: integer("restarts").notNull(),
    lastExitCode: integer("last_exit_code"),
    /** JSON list of lines. */
    lastOutput: text("last_output").notNull(),
    observedGeneration: bigint("observed_generation", { mode: "number" }).notNull(),
    reportedAtMs: bigint("reported_at_ms", { mode: "number" }),
    changedAtMs: bigint("changed_at_ms", { mode: "number" }).notNull(),
  },
  (t) => [primaryKey({ columns: [t.service, t.idx, t.nodeId] }), index("workload_replicas_node").on(t.nodeId)],
);

/** Each node's last workload report (ReportWorkloads): capacity, use, and every replica it reported (JSON). */
export const workloadNodes = pgTable("workload_nodes", {
  nodeId: text("node_id").primaryKey(),
  capacityCpuMillis: bigint("capacity_cpu_millis", { mode: "number" }).notNull(),
  capacityMemoryBytes: bigint("capacity_memory_bytes", { mode: "number" }).notNull(),
  usageCpuMillis: bigint("usage_cpu_millis", { mode: "number" }).notNull(),
  usageMemoryBytes: bigint("usage_memory_bytes", { mode: "number" }).notNull(),
  replicas: text("replicas").notNull(),
  reportedAtMs: bigint("reported_at_ms", { mode: "number" }).notNull(),
});

/**
 * The outbox of workload commands: written with the placement that needs them, pushed on the
 * node's stream and answered in the node's ReportWorkloads (acked_at_ms, ok, message); an
 * unanswered one is in every answer to the node's reports, whichever replica it reaches.
 */
export const workloadCommands = pgTable(
  "workload_commands",
  {
    commandId: text("command_id").primaryKey(),
    nodeId: text("node_id").notNull(),
    replicaId: text("replica_id").notNull(),
    kind: text("kind").notNull(),
    /** The WorkloadCommand as proto JSON. */
    payload: text("payload").notNull(),
    createdAtMs: bigint("created_at_ms", { mode: "number" }).notNull(),
    ackedAtMs: bigint("acked_at_ms", { mode: "number" }),
    ok: boolean("ok"),
    message: text("message").notNull(),
  },
  (t) => [index("workload_commands_node").on(t.nodeId, t.ackedAtMs, t.createdAtMs)],
);
