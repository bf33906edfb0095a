import { sql } from "drizzle-orm";
import { index, integer, primaryKey, sqliteTable, text, uniqueIndex } from "drizzle-orm/sqlite-core";

/** Mirrors ../pg/schema.ts: same tables, columns and indexes, under the same names. */
export const events = sqliteTable(
  "events",
  {
    // AUTOINCREMENT: a sequence number is never reused, even after retention deletes, so cursors stay valid.
    seq: integer("seq").primaryKey({ autoIncrement: true }),
    eventId: text("event_id").notNull(),
    eventType: text("event_type").notNull(),
    nodeId: text("node_id").notNull(),
    tsSeconds: integer("ts_seconds").notNull(),
    tsNanos: integer("ts_nanos").notNull(),
    lockFingerprint: text("lock_fingerprint"),
    releaseId: text("release_id"),
    payload: text("payload"),
    receivedAtMs: integer("received_at_ms").notNull(),
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
export const nodeLastEvents = sqliteTable(
  "node_last_events",
  {
    nodeId: text("node_id").notNull(),
    eventType: text("event_type").notNull(),
    seq: integer("seq").notNull(),
  },
  (t) => [primaryKey({ columns: [t.nodeId, t.eventType] })],
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
    /**
     * The release the node should run, kept by triggers (moves, unstaged releases) and by the
     * enrolment; the same rule as src/services/desired-release.ts, so the fleet totals can count drift.
     */
    desiredReleaseId: text("desired_release_id"),
    /**
     * Since when desired_release_id and reported_release_id have differed (null: they do not),
     * kept by a trigger on nodes: the divergence report reads the diverged nodes by this index.
     */
    divergedSinceMs: integer("diverged_since_ms"),
    /** The release an operator accepted as this node's desired one (a pin); cleared by its next move. */
    pinnedReleaseId: text("pinned_release_id"),
    pinnedAtMs: integer("pinned_at_ms"),
    pinReason: text("pin_reason").notNull().default(""),
    /** An operator's pending request that the node install this release again (reconcile --strategy reapply). */
    reapplyReleaseId: text("reapply_release_id"),
    reapplyRequestedAtMs: integer("reapply_requested_at_ms"),
  },
  (t) => [
    index("nodes_channel_id").on(t.channel, t.nodeId),
    index("nodes_channel_seen").on(t.channel, t.lastSeenMs),
    // Only diverged nodes are in the divergence indexes: a node converging removes its entry
    // and a node diverging adds one, where a full index rewrote two entries for each (a
    // sighting that converges a node went from about 37 to 21 µs).
    index("nodes_diverged").on(t.divergedSinceMs, t.nodeId).where(sql`${t.divergedSinceMs} IS NOT NULL`),
    index("nodes_channel_diverged").on(t.channel, t.divergedSinceMs, t.nodeId).where(sql`${t.divergedSinceMs} IS NOT NULL`),
    // The fleet search's orders by release (src/store/fleet-search.ts spells its keys the same);
    // node_id and channel are served by the primary key and nodes_channel_id. No index on last
    // seen: every heartbeat flush would rewrite it; that order sorts.
    index("nodes_search_reported").on(sql`(CASE WHEN ${t.reportedReleaseId} IS NULL THEN '' ELSE ${t.reportedReleaseId} END)`, t.nodeId),
    index("nodes_search_desired").on(sql`(CASE WHEN ${t.desiredReleaseId} IS NULL THEN '' ELSE ${t.desiredReleaseId} END)`, t.nodeId),
  ],
);

/**
 * The emergency stop: one row (id 1), written by the migration. While active, every write
 * that would start or move a rollout or publish an unstaged release is refused, in the
 * same transaction that reads it (PostgreSQL: FOR SHARE against the stop's row lock).
 */
export const emergencyStop = sqliteTable("emergency_stop", {
  id: integer("id").primaryKey(),
  active: integer("active", { mode: "boolean" }).notNull(),
  sinceMs: integer("since_ms"),
  stoppedBy: text("stopped_by").notNull(),
  reason: text("reason").notNull(),
  resumedAtMs: integer("resumed_at_ms"),
  resumedBy: text("resumed_by").notNull(),
  resumeReason: text("resume_reason").notNull(),
});

/**
 * How many nodes of a channel were last seen in each second (last_seen_ms / 1000), kept by
 * triggers on nodes: the fleet view counts the nodes seen since a time from a few rows.
 */
export const fleetSeen = sqliteTable(
  "fleet_seen",
  {
    channel: text("channel").notNull(),
    seenS: integer("seen_s").notNull(),
    n: integer("n").notNull(),
  },
  (t) => [primaryKey({ columns: [t.channel, t.seenS] }), index("fleet_seen_seen").on(t.seenS)],
);

/** How many nodes of a channel are in each combination of drained, drifted and ever seen, kept by triggers on nodes. */
export const fleetTotals = sqliteTable(
  "fleet_totals",
  {
    channel: text("channel").notNull(),
    drained: integer("drained", { mode: "boolean" }).notNull(),
    drifted: integer("drifted", { mode: "boolean" }).notNull(),
    seen: integer("seen", { mode: "boolean" }).notNull(),
    n: integer("n").notNull(),
  },
  (t) => [primaryKey({ columns: [t.channel, t.drained, t.drifted, t.seen] })],
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
    staged: integer("staged", { mode: "boolean" }).notNull().default(false),
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

/** Rollout plans: the signed spec never changes after the insert. */
export const rolloutPlans = sqliteTable(
  "rollout_plans",
  {
    seq: integer("seq").primaryKey({ autoIncrement: true }),
    planId: text("plan_id").notNull().unique(),
    releaseId: text("release_id")
      .notNull()
      .references(() => releases.releaseId),
    channel: text("channel").notNull(),
    spec: text("spec").notNull(),
    signature: text("signature").notNull(),
    keyId: text("key_id").notNull(),
    createdAtMs: integer("created_at_ms").notNull(),
  },
  (t) => [index("rollout_plans_channel").on(t.channel, t.seq)],
);

/** The mutable, versioned status of each plan; stages as JSON (see src/domain/rollouts.ts). */
export const rolloutStatus = sqliteTable(
  "rollout_status",
  {
    planId: text("plan_id")
      .primaryKey()
      .references(() => rolloutPlans.planId),
    version: integer("version").notNull(),
    phase: text("phase").notNull(),
    currentStage: integer("current_stage").notNull(),
    reason: text("reason").notNull(),
    updatedAtMs: integer("updated_at_ms").notNull(),
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
export const rolloutMoves = sqliteTable(
  "rollout_moves",
  {
    seq: integer("seq").primaryKey({ autoIncrement: true }),
    planId: text("plan_id")
      .notNull()
      .references(() => rolloutPlans.planId),
    stageId: text("stage_id").notNull(),
    nodeId: text("node_id").notNull(),
    releaseId: text("release_id").notNull(),
    movedAtMs: integer("moved_at_ms").notNull(),
    kind: text("kind").notNull().default("move"),
    previousReleaseId: text("previous_release_id"),
  },
  (t) => [uniqueIndex("rollout_moves_plan_node").on(t.planId, t.nodeId, t.kind), index("rollout_moves_node_seq").on(t.nodeId, t.seq)],
);

/** The audit trail: appended in the same transaction as the change it records. */
export const auditRecords = sqliteTable(
  "audit_records",
  {
    seq: integer("seq").primaryKey({ autoIncrement: true }),
    atMs: integer("at_ms").notNull(),
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
export const signingKeys = sqliteTable("signing_keys", {
  keyId: text("key_id").primaryKey(),
  publicKeyPem: text("public_key_pem").notNull(),
  createdAtMs: integer("created_at_ms").notNull(),
});

/**
 * One row: 1 only inside the transaction of an audit prune. The database refuses UPDATE of
 * audit records always, and DELETE unless this is 1 (triggers in the migrations).
 */
export const auditPruneGate = sqliteTable("audit_prune_gate", {
  id: integer("id").primaryKey(),
  open: integer("open").notNull(),
});

/** Custom roles (the built-in ones live in src/domain/rbac.ts). */
export const rbacRoles = sqliteTable("rbac_roles", {
  name: text("name").primaryKey(),
  /** JSON array of resource:verb strings. */
  permissions: text("permissions").notNull(),
  createdAtMs: integer("created_at_ms").notNull(),
});

/** Who holds which role. */
export const rbacBindings = sqliteTable(
  "rbac_bindings",
  {
    principal: text("principal").notNull(),
    role: text("role").notNull(),
    createdAtMs: integer("created_at_ms").notNull(),
  },
  (t) => [primaryKey({ columns: [t.principal, t.role] })],
);

/** Bearer tokens, by the SHA-256 of their secret; the secret itself is never stored. */
export const rbacTokens = sqliteTable("rbac_tokens", {
  tokenId: text("token_id").primaryKey(),
  tokenHash: text("token_hash").notNull().unique(),
  principal: text("principal").notNull(),
  description: text("description").notNull(),
  createdAtMs: integer("created_at_ms").notNull(),
  expiresAtMs: integer("expires_at_ms").notNull(),
  revokedAtMs: integer("revoked_at_ms"),
});

/**
 * One-time enrolment tokens, by the SHA-256 of the token; the token itself is never stored.
 * A token is spent (used_at_ms, certificate_serial) in the transaction that enrols its node.
 */
export const enrollmentTokens = sqliteTable(
  "enrollment_tokens",
  {
    tokenId: text("token_id").primaryKey(),
    tokenHash: text("token_hash").notNull().unique(),
    nodeId: text("node_id").notNull(),
    channel: text("channel").notNull(),
    createdBy: text("created_by").notNull(),
    createdAtMs: integer("created_at_ms").notNull(),
    expiresAtMs: integer("expires_at_ms").notNull(),
    usedAtMs: integer("used_at_ms"),
    certificateSerial: text("certificate_serial"),
    revokedAtMs: integer("revoked_at_ms"),
  },
  (t) => [index("enrollment_tokens_node").on(t.nodeId, t.createdAtMs)],
);

/** Certificates the server's CA signed for nodes: at enrolment (token_id) or renewal (previous_serial). */
export const nodeCertificates = sqliteTable(
  "node_certificates",
  {
    serial: text("serial").primaryKey(),
    nodeId: text("node_id").notNull(),
    issuedAtMs: integer("issued_at_ms").notNull(),
    notBeforeMs: integer("not_before_ms").notNull(),
    notAfterMs: integer("not_after_ms").notNull(),
    tokenId: text("token_id"),
    previousSerial: text("previous_serial"),
  },
  (t) => [index("node_certificates_node").on(t.nodeId, t.issuedAtMs)],
);

/**
 * Copies of a SQLite data dir into PostgreSQL (`autonomy-orchestrator migrate`); the table is
 * here only so both dialects have one schema: a SQLite database is never a cutover's target.
 */
export const haCutover = sqliteTable("ha_cutover", {
  seq: integer("seq").primaryKey({ autoIncrement: true }),
  source: text("source").notNull(),
  startedAtMs: integer("started_at_ms").notNull(),
  cutoverAtMs: integer("cutover_at_ms"),
  rowCounts: text("row_counts").notNull(),
  version: text("version").notNull(),
});

/** The services of WorkloadService: each spec as canonical JSON (src/domain/workloads.ts), with its generation. */
export const workloadServices = sqliteTable("workload_services", {
  name: text("name").primaryKey(),
  spec: text("spec").notNull(),
  generation: integer("generation").notNull(),
  createdAtMs: integer("created_at_ms").notNull(),
  updatedAtMs: integer("updated_at_ms").notNull(),
});

/** The workload state's one version (row id 1, made by the first apply), bumped by every apply and delete that changes something. */
export const workloadState = sqliteTable("workload_state", {
  id: integer("id").primaryKey(),
  version: integer("version").notNull(),
});

/**
 * Where the reconcile loop placed each replica (node_id "" for one that fits nowhere), what it
 * should do (desired_state running or stopped), and what its node last reported of it. A
 * replica moved to another node has a row per node until the old one is gone.
 */
export const workloadReplicas = sqliteTable(
  "workload_replicas",
  {
    service: text("service").notNull(),
    idx: integer("idx").notNull(),
    nodeId: text("node_id").notNull(),
    generation: integer("generation").notNull(),
    desiredState: text("desired_state").notNull(),
    state: text("state").notNull(),
    reason: text("reason").notNull(),
    restarts: integer("restarts").notNull(),
    lastExitCode: integer("last_exit_code"),
    /** JSON list of lines. */
    lastOutput: text("last_output").notNull(),
    observedGeneration: integer("observed_generation").notNull(),
    reportedAtMs: integer("reported_at_ms"),
    changedAtMs: integer("changed_at_ms").notNull(),
  },
  (t) => [primaryKey({ columns: [t.service, t.idx, t.nodeId] }), index("workload_replicas_node").on(t.nodeId)],
);

/** Each node's last workload report (ReportWorkloads): capacity, use, and every replica it reported (JSON). */
export const workloadNodes = sqliteTable("workload_nodes", {
  nodeId: text("node_id").primaryKey(),
  capacityCpuMillis: integer("capacity_cpu_millis").notNull(),
  capacityMemoryBytes: integer("capacity_memory_bytes").notNull(),
  usageCpuMillis: integer("usage_cpu_millis").notNull(),
  usageMemoryBytes: integer("usage_memory_bytes").notNull(),
  replicas: text("replicas").notNull(),
  reportedAtMs: integer("reported_at_ms").notNull(),
});

/**
 * The outbox of workload commands: written with the placement that needs them, pushed on the
 * node's stream and answered in the node's ReportWorkloads (acked_at_ms, ok, message); an
 * unanswered one is in every answer to the node's reports, whichever replica it reaches.
 */
export const workloadCommands = sqliteTable(
  "workload_commands",
  {
    commandId: text("command_id").primaryKey(),
    nodeId: text("node_id").notNull(),
    replicaId: text("replica_id").notNull(),
    kind: text("kind").notNull(),
    /** The WorkloadCommand as proto JSON. */
    payload: text("payload").notNull(),
    createdAtMs: integer("created_at_ms").notNull(),
    ackedAtMs: integer("acked_at_ms"),
    ok: integer("ok", { mode: "boolean" }),
    message: text("message").notNull(),
  },
  (t) => [index("workload_commands_node").on(t.nodeId, t.ackedAtMs, t.createdAtMs)],
);
