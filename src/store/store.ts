import type { Event } from "../../gen/autonomy/v1/events_pb.js";
import type { Node } from "../../gen/autonomy/v1/nodes_pb.js";
import type { NodeAck, Release } from "../../gen/autonomy/v1/releases_pb.js";
import type { AckRow, NodeSighting, ReleaseRow } from "./fleet-rows.js";
import type { FleetCounts, FleetTotalsQuery } from "./fleet-totals.js";
import type { FleetSearchQuery, FleetSearchResult } from "./fleet-search.js";
import type { ChainedAuditRow } from "../domain/audit.js";
import type { RestoreProgress } from "../domain/rollout-actions.js";
import type { IngestRateQuery } from "./ingest-rate.js";
import type { BindingRow, RoleRow, TokenRow } from "./rbac-rows.js";
import type { EnrollmentTokenRow, NodeCertificateRow, TokenEnrollment } from "./enrollment-rows.js";
import type { AuditRow, MoveRow, PlanRow, RolloutChange, RolloutRecord, SigningKeyRow, StageNodeRow, StatusRow } from "./rollout-rows.js";
import type { OpenedStage, StageOpening } from "./rollout-opening.js";
import type { CommandRow, ReplicaRow, PlacementCommit, ServiceDeletion, WorkloadApply, WorkloadApplyResult, WorkloadReport, WorkloadSnapshot } from "./workload-rows.js";
import type { DivergedRow, DivergenceQuery, EmergencyChange, EmergencyStopResult, EmergencyStopRow } from "./operation-rows.js";

/** Filter and page of a stored-event query. */
export interface EventQuery {
  nodeId?: string;
  eventType?: string;
  /** Already bounded by the domain (1..1000). */
  limit: number;
  /** Only events with a sequence number below this one; undefined or 0n for the newest. */
  before?: bigint;
}

/** A page of events written as JSON: `text` is the array of the `count` events. */
export interface EventPage {
  count: number;
  text: string;
  /** True when the page was read and written on SQLite's event page thread. */
  onThread?: boolean;
}

/** Filter and cursor of a follow: events stored after a sequence number, oldest first. */
export interface EventFollowQuery {
  nodeId?: string;
  eventType?: string;
  /** Only events with a sequence number above this one. */
  afterSeq: bigint;
  limit: number;
}

/** One batch of retention: events in a sequence range received before a time. */
export interface EventDeletion {
  /** Only events with a sequence number above this one... */
  afterSeq: bigint;
  /** ...and at most this one. */
  throughSeq: bigint;
  /** Only events received (server time) before this. */
  receivedBeforeMs: number;
  /** At most this many, the oldest first. */
  limit: number;
  /**
   * SQLite: the batch is deleted in steps, and stops after the step that spent this many
   * milliseconds of writer time, even short of `limit`.
   */
  budgetMs?: number;
}

/** What a retention batch removed; the ranges are absent when it removed nothing. */
export interface EventDeletionResult {
  deleted: number;
  firstSeq?: bigint;
  lastSeq?: bigint;
  oldestReceivedMs?: number;
  newestReceivedMs?: number;
  /** How long the delete held the writer (its statements, measured where they ran). */
  elapsedMs: number;
  /** No event of the range is left to delete. */
  done: boolean;
}

/** Row counts, file sizes and settings, for a support bundle. */
export interface StoreStatistics {
  dialect: "sqlite" | "postgres";
  /** Rows of each table, by table name. */
  rowCounts: Record<string, number>;
  /** Bytes of each database file (SQLite: the file, its -wal and -shm), or of each table with its indexes (PostgreSQL). */
  sizes: Record<string, number>;
  /** Settings that matter when diagnosing: pragmas (SQLite) or server settings (PostgreSQL). */
  settings: Record<string, string>;
}

/** A node's enrolment: who it is and what it follows. */
import type { Enrollment } from "./fleet-rows.js";
export type { Enrollment };

/** A page of the inventory, in node id order. */
export interface NodeQuery {
  channel?: string;
  /** Only nodes whose id sorts after this one. */
  afterNodeId?: string;
  /** At most this many; every match when undefined. */
  limit?: number;
  /** Only nodes that have reported their workloads (the nodes the workload scheduler places on). */
  reportingWorkloads?: boolean;
}

/** A selection of rollout plans. */
export interface RolloutQuery {
  phase?: string;
  /** Only plans not in a terminal phase. */
  unfinished?: boolean;
  /** Only plans of this channel. */
  channel?: string;
  limit?: number;
}

/** A page of a plan's stage: its nodes in node id order, each with its ack of `releaseId`. */
export interface StageNodeQuery {
  planId: string;
  stageId: string;
  releaseId: string;
  /** Only nodes whose id sorts after this one. */
  afterNodeId?: string;
  limit: number;
}

/** A selection of audit records: every field given must match. */
export interface AuditQuery {
  eventName?: string;
  category?: string;
  action?: string;
  outcome?: string;
  actor?: string;
  resourceType?: string;
  resource?: string;
  source?: string;
  /** at_ms >= sinceMs */
  sinceMs?: number;
  /** at_ms < untilMs */
  untilMs?: number;
  /** Only records after this seq (asc) or before it (desc): the paging cursor. */
  cursorSeq?: number;
  order?: "asc" | "desc";
  limit: number;
}

/**
 * The store contract: async and dialect-neutral, spoken in proto messages. SQLite and
 * PostgreSQL implement it alike and pass one contract suite (test/store-contract.test.ts).
 * Failures surface as the typed errors of src/domain/errors.ts, never as driver errors.
 */
export interface Store {
  readonly dialect: "sqlite" | "postgres";
  /**
   * Stores events that are valid and unique within the batch, in one transaction, in the
   * order given, skipping ids already stored. Resolves with how many were new, only after
   * the commit is durable. With `audit`, a batch that stored anything is recorded in the
   * same transaction (its fields completed with the number inserted).
   */
  ingestEvents(events: readonly Event[], audit?: AuditRow): Promise<number>;
  /** Stored events newest first (by insertion sequence). */
  queryEvents(query: EventQuery): Promise<Event[]>;
  /**
   * The same events as queryEvents, as the JSON text of their list (what jsonText writes for
   * each, in an array), written from the stored rows with each payload as stored: what a REST
   * event query answers. With `busy` (other calls are being answered) SQLite reads and writes
   * the page on its event page thread, where it does not hold them up; without, on the event
   * loop, which answers a lone page sooner than a hop to the thread and back.
   */
  queryEventPage(query: EventQuery, opts?: { busy?: boolean }): Promise<EventPage>;
  /** Events stored per bucket of time from sinceMs, oldest bucket first (src/store/ingest-rate.ts). */
  ingestCounts(q: IngestRateQuery): Promise<number[]>;
  /**
   * Events stored after a sequence number, oldest first, that no later commit can precede:
   * a follower that resumes after the last seq it saw misses none.
   */
  eventsAfter(query: EventFollowQuery): Promise<Event[]>;
  /** The first stored event at or after a sequence number, with its receive time. */
  eventAtOrAfter(seq: bigint): Promise<{ seq: bigint; receivedAtMs: number } | undefined>;
  /** Deletes one retention batch in its own short transaction (see EventDeletion). */
  deleteEvents(d: EventDeletion): Promise<EventDeletionResult>;
  /** Row counts, sizes and settings (support bundles). */
  statistics(): Promise<StoreStatistics>;
  /**
   * Publishes a release. The same id with the same content is a no-op (created false); with
   * other content it throws ConflictError. A new release's audit record is written with it.
   * (Every write that takes an `audit` row appends it to the hash-chained trail in the same
   * transaction as the change.)
   */
  publishRelease(row: ReleaseRow, audit?: AuditRow): Promise<{ release: Release; created: boolean }>;
  /** The release published last on a channel; with unstagedOnly, the last one that is not staged. */
  latestRelease(channel: string, opts?: { unstagedOnly?: boolean }): Promise<Release | undefined>;
  getRelease(releaseId: string): Promise<Release | undefined>;
  /**
   * Stores an ack unless the stored one for the same release and node was observed later
   * (then stale is true and the stored one is returned). NotFoundError names an unknown
   * release or node.
   */
  upsertAck(row: AckRow, audit?: AuditRow): Promise<{ ack: NodeAck; stale: boolean }>;
  /** A release's acks by node id. */
  acksOfRelease(releaseId: string): Promise<NodeAck[]>;
  /** A node's acks, most recently updated first. */
  acksOfNode(nodeId: string): Promise<NodeAck[]>;
  /** Registers a node or updates its channel, labels and agent version; drain and last-seen stay. */
  enrollNode(e: Enrollment, nowMs: number, audit?: AuditRow): Promise<Node>;
  getNode(nodeId: string): Promise<Node | undefined>;
  listNodes(q: NodeQuery): Promise<Node[]>;
  /**
   * The fleet view's totals of a channel (or of every node), counted from a projection the
   * database keeps with every write (so the cost does not grow with the fleet), corrected by
   * the sightings the caller has buffered and not yet written. Exact: equal to a recount of
   * every selected node with those sightings applied.
   */
  fleetTotals(q: FleetTotalsQuery): Promise<FleetCounts>;
  /**
   * One page of the fleet search (SearchFleetNodes) and the count of every matching node,
   * filtered, ordered and paged in the database, from one snapshot: the same rows as reading
   * every node with the buffered sightings applied and searching them in memory.
   */
  searchFleetNodes(q: FleetSearchQuery): Promise<FleetSearchResult>;
  /** The channels that have enrolled nodes, by name (from the totals projection: no node is read). */
  fleetChannels(): Promise<string[]>;
  /** Drains or undrains a node; NotFoundError when it is not enrolled. */
  setDrained(nodeId: string, drained: boolean, reason: string, audit?: AuditRow): Promise<Node>;
  /**
   * Writes coalesced sightings in one transaction. last_seen never moves back (replicas may
   * flush out of order); unknown nodes are skipped.
   */
  recordSightings(sightings: readonly NodeSighting[]): Promise<void>;
  /** The newest event of each type a node has sent, by type. */
  lastEventsByType(nodeId: string): Promise<Event[]>;
  /** The lock_fingerprint of the node's newest event that carries one. */
  lastLockFingerprint(nodeId: string): Promise<string | undefined>;
  /**
   * Publishes a rollout plan with its first status and audit record, in one transaction.
   * The same plan id with the same spec is a no-op (created false). ConflictError for the
   * same id with another spec, or while another plan of the channel is not finished.
   */
  createRollout(plan: PlanRow, status: StatusRow, audit: AuditRow): Promise<{ record: RolloutRecord; created: boolean }>;
  getRollout(planId: string): Promise<RolloutRecord | undefined>;
  /** Plans newest first; `unfinished` keeps those not in a terminal phase. */
  listRollouts(q: RolloutQuery): Promise<RolloutRecord[]>;
  /**
   * Writes a status change with its node moves and audit records in one transaction, only
   * while the stored version is change.expectedVersion (else AbortedError, nothing written).
   */
  commitRollout(change: RolloutChange): Promise<void>;
  /**
   * Opens a stage in one transaction: selects its nodes among the channel's HEALTHY nodes
   * the plan has not moved (by the stored last-seen times), writes their moves, the status
   * with the stage opened and the audit record, only while the stored version is
   * o.expectedVersion (else AbortedError, nothing written). Undefined when nothing was
   * written (o.onlyIfSelected and no node selected).
   */
  openRolloutStage(o: StageOpening): Promise<OpenedStage | undefined>;
  /** A page of a stage's nodes with their acks and stored last-seen times. */
  stageNodes(q: StageNodeQuery): Promise<StageNodeRow[]>;
  /** The nodes a plan moved, in move order. */
  movesOfPlan(planId: string): Promise<MoveRow[]>;
  /** Whether a plan moved a node: one point lookup on (plan_id, node_id). */
  planMovedNode(planId: string, nodeId: string): Promise<boolean>;
  /** A rolling-back plan: its restored nodes, those back on their previous release, those that failed to reinstall it. */
  restoreProgress(planId: string): Promise<RestoreProgress>;
  /** Each node's newest move by any plan, by node id: of the given nodes, or of every node. */
  newestMoves(nodeIds?: readonly string[]): Promise<Map<string, MoveRow>>;
  /** How many events of a type each node sent after an event sequence number. */
  eventCountsSince(eventType: string, afterSeq: bigint): Promise<Map<string, number>>;
  /** The newest event sequence number (0 when there is none). */
  newestEventSeq(): Promise<bigint>;
  /** Audit records matching every filter given, newest first (or oldest first with order "asc"). */
  auditRecords(q: AuditQuery): Promise<ChainedAuditRow[]>;
  /**
   * Removes the audit records older than beforeMs and appends `audit` (the record of the prune,
   * its fields completed with how many were removed and the first seq kept), in one transaction.
   */
  pruneAudit(beforeMs: number, audit: AuditRow): Promise<{ removed: number; firstKeptSeq?: number }>;
  /** Stores a public signing key; a key already stored stays as it is. */
  registerSigningKey(row: SigningKeyRow): Promise<void>;
  signingKeys(): Promise<SigningKeyRow[]>;
  /** Appends audit records on their own (a denial: there is no change to record them with). */
  appendAudit(rows: readonly AuditRow[]): Promise<void>;
  /** Custom roles. */
  listRoles(): Promise<RoleRow[]>;
  /** Creates or redefines a custom role, with its audit record. */
  putRole(row: RoleRow, audit: AuditRow): Promise<RoleRow>;
  listBindings(principal?: string): Promise<BindingRow[]>;
  /** Gives a principal a role (no-op when held), with its audit record. */
  assignRole(row: BindingRow, audit: AuditRow): Promise<BindingRow>;
  /** Takes a role from a principal; false when it did not hold it (then nothing is recorded). */
  revokeRole(principal: string, role: string, audit: AuditRow): Promise<boolean>;
  createToken(row: TokenRow, audit: AuditRow): Promise<TokenRow>;
  listTokens(): Promise<TokenRow[]>;
  /** Revokes a token (NotFoundError for an unknown id); revoking twice changes nothing. */
  revokeToken(tokenId: string, atMs: number, audit: AuditRow): Promise<TokenRow>;
  tokenByHash(hash: string): Promise<TokenRow | undefined>;
  /** How many role bindings and tokens exist (both 0: a store never set up). */
  rbacCounts(): Promise<{ bindings: number; tokens: number }>;
  /** Stores a new enrolment token (its hash) with its audit record. */
  createEnrollmentToken(row: EnrollmentTokenRow, audit: AuditRow): Promise<EnrollmentTokenRow>;
  /** Enrolment tokens, newest first; of one node when nodeId is given. */
  listEnrollmentTokens(q: { nodeId?: string }): Promise<EnrollmentTokenRow[]>;
  enrollmentTokenByHash(hash: string): Promise<EnrollmentTokenRow | undefined>;
  /**
   * Revokes an enrolment token with its audit record (NotFoundError for an unknown id;
   * FailedPreconditionError for a used one); revoking a revoked or expired one changes nothing.
   */
  revokeEnrollmentToken(tokenId: string, atMs: number, audit: AuditRow): Promise<EnrollmentTokenRow>;
  /**
   * Enrols a node by token in one transaction (see TokenEnrollment). A token no longer usable
   * at e.atMs (used, revoked or expired since it was read) is ConflictError, nothing written.
   */
  enrollWithToken(e: TokenEnrollment): Promise<Node>;
  /** Records a renewed node certificate with its audit record; NotFoundError when the node is not enrolled. */
  recordCertificateRenewal(row: NodeCertificateRow, audit: AuditRow): Promise<void>;
  /** The certificates signed for a node, newest first. */
  nodeCertificates(nodeId: string): Promise<NodeCertificateRow[]>;
  /** The emergency stop as stored (every replica reads the same row). */
  emergencyStop(): Promise<EmergencyStopRow>;
  /**
   * Starts an emergency stop in one transaction: every unfinished plan not already halted is
   * halted with the reason (each with its own audit record), the stop is stored and its
   * record (completed with the plans halted) appended. A stop already in force: nothing is
   * written (changed false). While a stop is in force the store refuses, in their own
   * transactions, new plans, new unstaged releases, stage openings, node moves, a plan made
   * active again and reapply requests (FailedPreconditionError naming the stop).
   */
  startEmergencyStop(change: EmergencyChange): Promise<EmergencyStopResult>;
  /** Lifts the stop with its audit record; no stop in force: nothing is written (changed false). */
  endEmergencyStop(change: EmergencyChange): Promise<{ state: EmergencyStopRow; changed: boolean }>;
  /** A page of the nodes whose desired and reported releases have differed since at most q.divergedAtOrBeforeMs. */
  divergedNodes(q: DivergenceQuery): Promise<DivergedRow[]>;
  /** Every ack of the given nodes. */
  acksOfNodes(nodeIds: readonly string[]): Promise<NodeAck[]>;
  /**
   * Pins the node's desired release to the release it reports (which must be a stored release,
   * else FailedPreconditionError), with its audit record; the node's next move removes the pin.
   */
  acceptReported(nodeId: string, atMs: number, reason: string, audit: AuditRow): Promise<Node>;
  /** Removes a node's pin (none: nothing changes) and gives it back the desired release of the usual rule. */
  unpinNode(nodeId: string, audit: AuditRow): Promise<Node>;
  /** Asks the node to install its desired release again (FailedPreconditionError without one, or during a stop). */
  requestReapply(nodeId: string, atMs: number, audit: AuditRow): Promise<Node>;
  /**
   * Creates or changes services in one transaction, only while the workload version is
   * a.expectedVersion (else AbortedError, nothing written). The version is bumped, and the audit
   * record appended, only when some service changed.
   */
  applyWorkloads(a: WorkloadApply): Promise<WorkloadApplyResult>;
  /** Removes a service (NotFoundError when there is none; AbortedError when the version is stale), bumping the version, with its audit record. */
  deleteWorkloadService(d: ServiceDeletion): Promise<{ version: number }>;
  /** The services, replicas, node reports and unanswered commands as of one moment. */
  workloadSnapshot(): Promise<WorkloadSnapshot>;
  /**
   * Writes a reconcile pass (replica placements, removals, new commands) in one transaction,
   * only while the workload version is c.expectedVersion (else AbortedError) and, with
   * c.fenceEpoch, while that leader epoch is current (else FencedError).
   */
  commitPlacement(c: PlacementCommit): Promise<void>;
  /**
   * Stores a node's workload report in one transaction (its capacity and use, each reported
   * replica's state on its row, the acks), and answers the node's unanswered commands, oldest first.
   */
  reportWorkloads(r: WorkloadReport): Promise<CommandRow[]>;
  /** The replica rows placed on a node, by service and index (one indexed read). */
  replicasOfNode(nodeId: string): Promise<ReplicaRow[]>;
  /** A node's unanswered commands, oldest first. */
  unansweredCommands(nodeId: string): Promise<CommandRow[]>;
  /** Releases connections and workers. */
  close(): Promise<void>;
}
