import { chmodSync, closeSync, existsSync, mkdirSync, openSync } from "node:fs";
import path from "node:path";
import { Worker } from "node:worker_threads";
import type { BetterSQLite3Database } from "drizzle-orm/better-sqlite3";
import type Database from "better-sqlite3";
import type { Event } from "../../../gen/autonomy/v1/events_pb.js";
import type { Node } from "../../../gen/autonomy/v1/nodes_pb.js";
import type { NodeAck, Release } from "../../../gen/autonomy/v1/releases_pb.js";
import { AbortedError, ConflictError, FailedPreconditionError, NotFoundError, StoreCorruptError, StoreUnavailableError } from "../../domain/errors.js";
import { packageRoot } from "../../paths.js";
import { appendEventRow } from "../event-rows.js";
import { EventPageReader } from "./event-pages.js";
import { eventQueryParams, PreparedEventQueries } from "../prepared-queries.js";
import { prepareEventQuery } from "./event-query.js";
import { rowToAck, rowToNode, rowToRelease, type AckRow, type NodeSighting, type ReleaseRow } from "../fleet-rows.js";
import type { FleetTotalsQuery } from "../fleet-totals.js";
import type { FleetSearchQuery } from "../fleet-search.js";
import type { AuditQuery, Enrollment, EventDeletion, EventFollowQuery, EventPage, EventQuery, NodeQuery, RolloutQuery, StageNodeQuery, Store } from "../store.js";
import type { OpenedStage, StageOpening } from "../rollout-opening.js";
import { openConnection, sqliteUnavailable, type SqliteConnectionOptions } from "./connection.js";
import { classifySqliteError, sqliteDomainError } from "./errors.js";
import { prepareFleetReads } from "./fleet-reads.js";
import type { AuditRow, PlanRow, RolloutChange, SigningKeyRow, StatusRow } from "../rollout-rows.js";
import { prepareRolloutReads } from "./rollout-reads.js";
import { prepareRbacReads } from "./rbac.js";
import { prepareEnrollmentReads } from "./enrollment.js";
import { prepareWorkloadReads } from "./workloads.js";
import type { PlacementCommit, ServiceDeletion, WorkloadApply, WorkloadReport } from "../workload-rows.js";
import type { EnrollmentTokenRow, NodeCertificateRow, TokenEnrollment } from "../enrollment-rows.js";
import { prepareOperationReads } from "./operation-reads.js";
import type { DivergenceQuery, EmergencyChange } from "../operation-rows.js";
import type { BindingRow, RoleRow, TokenRow } from "../rbac-rows.js";
import { ingestCounts, type IngestRateQuery } from "../ingest-rate.js";
import { fromDeleteEventsResult, prepareEventMaintenanceReads, toDeleteEventsWrite } from "./event-maintenance.js";
import type { StoreWrite, StoreWriteResult, StoreWriteResults, WriterReply, WriterRequest, WriterWork } from "./writer.js";

/** The database file inside `--data-dir`. */
export const DB_FILE_NAME = "orchestrator.db";

export interface SqliteStoreOptions {
  dataDir: string;
  busyTimeoutMs: number;
  maxDbBytes?: number;
  /**
   * Called once when the store can no longer be trusted (a corrupt file, a dead writer
   * thread). The server logs it and exits: serving on would risk acknowledged writes.
   */
  onFatal: (err: Error) => void;
}

// The worker runs compiled JavaScript, also when the caller runs from TypeScript sources.
const WRITER_SCRIPT = path.join(packageRoot, "dist", "src", "store", "sqlite", "writer.js");

/**
 * The embedded default store: one SQLite file in WAL mode. Writes go through a dedicated
 * writer thread (./writer.ts); reads use a second connection on the calling thread, which
 * WAL lets proceed while a write is in progress.
 */
export class SqliteStore implements Store {
  readonly dialect = "sqlite" as const;
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (r: WriterReply) => void; reject: (e: Error) => void }>();
  /** Requests not yet posted to the writer (see send). */
  private outbox: WriterWork[] = [];
  private fatal: Error | undefined;
  private closed = false;
  private readonly queries: PreparedEventQueries<ReturnType<typeof prepareEventQuery>>;
  private readonly fleet: ReturnType<typeof prepareFleetReads>;
  private readonly rollouts: ReturnType<typeof prepareRolloutReads>;
  private readonly rbac: ReturnType<typeof prepareRbacReads>;
  private readonly enrollment: ReturnType<typeof prepareEnrollmentReads>;
  private readonly workloads: ReturnType<typeof prepareWorkloadReads>;
  private readonly operations: ReturnType<typeof prepareOperationReads>;
  private readonly maintenance: ReturnType<typeof prepareEventMaintenanceReads>;
  private readonly pages: EventPageReader;

  private constructor(
    private readonly worker: Worker,
    private readonly reader: Database.Database,
    db: BetterSQLite3Database & { $client: Database.Database },
    private readonly onFatal: (err: Error) => void,
    file: string,
    connection: SqliteConnectionOptions,
  ) {
    this.pages = new EventPageReader(
      connection,
      (q) => this.pageInline(q),
      (err, kind) => this.translate(err, kind),
    );
    this.maintenance = prepareEventMaintenanceReads(db, reader, file);
    this.queries = new PreparedEventQueries((shape) => prepareEventQuery(db, reader, shape));
    this.fleet = prepareFleetReads(db, reader);
    this.rollouts = prepareRolloutReads(db);
    this.rbac = prepareRbacReads(db);
    this.enrollment = prepareEnrollmentReads(db);
    this.workloads = prepareWorkloadReads(db);
    this.operations = prepareOperationReads(db);
    worker.on("message", (replies: WriterReply | WriterReply[]) => this.onReplies(replies));
    worker.on("error", () => this.fail(new StoreUnavailableError("the database writer stopped")));
    worker.on("exit", () => {
      if (!this.closed) this.fail(new StoreUnavailableError("the database writer stopped"));
    });
  }

  /** Creates the data dir, starts the writer (which applies migrations), then opens the reader. */
  static async open(opts: SqliteStoreOptions): Promise<SqliteStore> {
    const missing = sqliteUnavailable();
    if (missing) throw new StoreUnavailableError(missing);
    mkdirSync(opts.dataDir, { recursive: true, mode: 0o700 });
    const file = path.join(opts.dataDir, DB_FILE_NAME);
    // Mode 0600 whatever the umask; SQLite gives the -wal and -shm files the database file's mode.
    closeSync(openSync(file, "a", 0o600));
    for (const f of [file, `${file}-wal`, `${file}-shm`]) if (existsSync(f)) chmodSync(f, 0o600);
    const connection: SqliteConnectionOptions = {
      file,
      busyTimeoutMs: opts.busyTimeoutMs,
      maxDbBytes: opts.maxDbBytes,
    };
    const worker = new Worker(WRITER_SCRIPT, { workerData: connection });
    const first = await new Promise<WriterReply>((resolve, reject) => {
      worker.once("message", resolve);
      worker.once("error", reject);
    });
    if (!("ready" in first)) {
      await worker.terminate();
      const failure = "startFailure" in first ? first.startFailure : "other";
      const detail = "detail" in first ? first.detail : "";
      throw failure === "corrupt"
        ? new StoreCorruptError(`the database file is corrupt: ${connection.file}`)
        : new Error(`cannot open the database ${connection.file}: ${detail}`);
    }
    const reader = openConnection(connection, "reader");
    // Loaded here, not at the top: drizzle's driver imports better-sqlite3, an optional dependency.
    const { drizzle } = await import("drizzle-orm/better-sqlite3");
    return new SqliteStore(worker, reader, drizzle({ client: reader }), opts.onFatal, file, connection);
  }

  async ingestEvents(batch: readonly Event[], audit?: AuditRow): Promise<number> {
    this.checkOpen();
    const receivedAtMs = Date.now();
    const rows: unknown[] = [];
    for (const e of batch) appendEventRow(rows, e, receivedAtMs);
    const reply = await this.send({ id: this.nextId++, rows, audit });
    return (reply as { inserted: number }).inserted;
  }

  async publishRelease(row: ReleaseRow, audit?: AuditRow): Promise<{ release: Release; created: boolean }> {
    const r = await this.write({ op: "publishRelease", row, audit });
    return { release: rowToRelease(r.release), created: r.created };
  }

  async upsertAck(row: AckRow, audit?: AuditRow): Promise<{ ack: NodeAck; stale: boolean }> {
    const r = await this.write({ op: "upsertAck", row, audit });
    return { ack: rowToAck(r.ack), stale: r.stale };
  }

  async enrollNode(enrollment: Enrollment, nowMs: number, audit?: AuditRow): Promise<Node> {
    return rowToNode((await this.write({ op: "enrollNode", enrollment, nowMs, audit })).node);
  }

  async setDrained(nodeId: string, drained: boolean, reason: string, audit?: AuditRow): Promise<Node> {
    return rowToNode((await this.write({ op: "setDrained", nodeId, drained, reason, audit })).node);
  }

  pruneAudit(beforeMs: number, audit: AuditRow) {
    return this.write({ op: "pruneAudit", beforeMs, audit });
  }

  async recordSightings(sightings: readonly NodeSighting[]): Promise<void> {
    if (sightings.length > 0) await this.write({ op: "recordSightings", sightings });
  }

  latestRelease(channel: string, opts?: { unstagedOnly?: boolean }) {
    return this.read(() => this.fleet.latestRelease(channel, opts?.unstagedOnly));
  }
  getRelease(releaseId: string) {
    return this.read(() => this.fleet.getRelease(releaseId));
  }
  acksOfRelease(releaseId: string) {
    return this.read(() => this.fleet.acksOfRelease(releaseId));
  }
  acksOfNode(nodeId: string) {
    return this.read(() => this.fleet.acksOfNode(nodeId));
  }
  getNode(nodeId: string) {
    return this.read(() => this.fleet.getNode(nodeId));
  }
  listNodes(q: NodeQuery) {
    return this.read(() => this.fleet.listNodes(q));
  }
  fleetTotals(q: FleetTotalsQuery) {
    return this.read(() => this.fleet.fleetTotals(q));
  }
  searchFleetNodes(q: FleetSearchQuery) {
    return this.read(() => this.fleet.searchFleetNodes(q));
  }
  private channelsQuery?: Database.Statement;
  fleetChannels() {
    const q = (this.channelsQuery ??= this.reader.prepare("SELECT channel FROM fleet_totals GROUP BY channel HAVING sum(n) > 0 ORDER BY channel"));
    return this.read(() => (q.all() as { channel: string }[]).map((r) => r.channel));
  }
  lastEventsByType(nodeId: string) {
    return this.read(() => this.fleet.lastEventsByType(nodeId));
  }
  lastLockFingerprint(nodeId: string) {
    return this.read(() => this.fleet.lastLockFingerprint(nodeId));
  }

  createRollout(plan: PlanRow, status: StatusRow, audit: AuditRow) {
    return this.write({ op: "createRollout", plan, status, audit });
  }
  async commitRollout(change: RolloutChange): Promise<void> {
    await this.write({ op: "commitRollout", change });
  }
  async openRolloutStage(opening: StageOpening): Promise<OpenedStage | undefined> {
    return (await this.write({ op: "openRolloutStage", opening })).opened;
  }
  stageNodes(q: StageNodeQuery) {
    return this.read(() => this.rollouts.stageNodes(q));
  }
  async registerSigningKey(row: SigningKeyRow): Promise<void> {
    await this.write({ op: "registerSigningKey", row });
  }
  getRollout(planId: string) {
    return this.read(() => this.rollouts.getRollout(planId));
  }
  listRollouts(q: RolloutQuery) {
    return this.read(() => this.rollouts.listRollouts(q));
  }
  movesOfPlan(planId: string) {
    return this.read(() => this.rollouts.movesOfPlan(planId));
  }
  planMovedNode(planId: string, nodeId: string) {
    return this.read(() => this.rollouts.planMovedNode(planId, nodeId));
  }
  restoreProgress(planId: string) {
    return this.read(() => this.rollouts.restoreProgress(planId));
  }
  newestMoves(nodeIds?: readonly string[]) {
    return this.read(() => this.rollouts.newestMoves(nodeIds));
  }
  eventCountsSince(eventType: string, afterSeq: bigint) {
    return this.read(() => this.rollouts.eventCountsSince(eventType, afterSeq));
  }
  newestEventSeq() {
    return this.read(() => this.rollouts.newestEventSeq());
  }
  auditRecords(q: AuditQuery) {
    return this.read(() => this.rollouts.auditRecords(q));
  }
  signingKeys() {
    return this.read(() => this.rollouts.signingKeys());
  }

  async appendAudit(rows: readonly AuditRow[]) {
    if (rows.length > 0) await this.write({ op: "appendAudit", rows });
  }
  async putRole(row: RoleRow, audit: AuditRow) {
    return (await this.write({ op: "putRole", row, audit })).role;
  }
  async assignRole(row: BindingRow, audit: AuditRow) {
    return (await this.write({ op: "assignRole", row, audit })).binding;
  }
  async revokeRole(principal: string, role: string, audit: AuditRow) {
    return (await this.write({ op: "revokeRole", principal, role, audit })).revoked;
  }
  async createToken(row: TokenRow, audit: AuditRow) {
    return (await this.write({ op: "createToken", row, audit })).token;
  }
  async revokeToken(tokenId: string, atMs: number, audit: AuditRow) {
    return (await this.write({ op: "revokeToken", tokenId, atMs, audit })).token;
  }
  listRoles() {
    return this.read(() => this.rbac.listRoles());
  }
  listBindings(principal?: string) {
    return this.read(() => this.rbac.listBindings(principal));
  }
  listTokens() {
    return this.read(() => this.rbac.listTokens());
  }
  tokenByHash(hash: string) {
    return this.read(() => this.rbac.tokenByHash(hash));
  }
  rbacCounts() {
    return this.read(() => this.rbac.rbacCounts());
  }

  async createEnrollmentToken(row: EnrollmentTokenRow, audit: AuditRow) {
    return (await this.write({ op: "createEnrollmentToken", row, audit })).token;
  }
  listEnrollmentTokens(q: { nodeId?: string }) {
    return this.read(() => this.enrollment.listEnrollmentTokens(q));
  }
  enrollmentTokenByHash(hash: string) {
    return this.read(() => this.enrollment.enrollmentTokenByHash(hash));
  }
  async revokeEnrollmentToken(tokenId: string, atMs: number, audit: AuditRow) {
    return (await this.write({ op: "revokeEnrollmentToken", tokenId, atMs, audit })).token;
  }
  async enrollWithToken(enrollment: TokenEnrollment): Promise<Node> {
    return rowToNode((await this.write({ op: "enrollWithToken", enrollment })).node);
  }
  async recordCertificateRenewal(row: NodeCertificateRow, audit: AuditRow): Promise<void> {
    await this.write({ op: "recordCertificateRenewal", row, audit });
  }
  nodeCertificates(nodeId: string) {
    return this.read(() => this.enrollment.nodeCertificates(nodeId));
  }

  applyWorkloads(apply: WorkloadApply) {
    return this.write({ op: "applyWorkloads", apply });
  }
  deleteWorkloadService(deletion: ServiceDeletion) {
    return this.write({ op: "deleteWorkloadService", deletion });
  }
  workloadSnapshot() {
    return this.read(() => this.workloads.workloadSnapshot());
  }
  async commitPlacement(commit: PlacementCommit): Promise<void> {
    await this.write({ op: "commitPlacement", commit });
  }
  async reportWorkloads(report: WorkloadReport) {
    return (await this.write({ op: "reportWorkloads", report })).commands;
  }
  unansweredCommands(nodeId: string) {
    return this.read(() => this.workloads.unansweredCommands(nodeId));
  }
  replicasOfNode(nodeId: string) {
    return this.read(() => this.workloads.replicasOfNode(nodeId));
  }

  emergencyStop() {
    return this.read(() => this.operations.emergencyStop());
  }
  startEmergencyStop(change: EmergencyChange) {
    return this.write({ op: "startEmergencyStop", change });
  }
  endEmergencyStop(change: EmergencyChange) {
    return this.write({ op: "endEmergencyStop", change });
  }
  divergedNodes(q: DivergenceQuery) {
    return this.read(() => this.operations.divergedNodes(q));
  }
  acksOfNodes(nodeIds: readonly string[]) {
    return this.read(() => this.operations.acksOfNodes(nodeIds));
  }
  async acceptReported(nodeId: string, atMs: number, reason: string, audit: AuditRow): Promise<Node> {
    return rowToNode((await this.write({ op: "acceptReported", nodeId, atMs, reason, audit })).node);
  }
  async unpinNode(nodeId: string, audit: AuditRow): Promise<Node> {
    return rowToNode((await this.write({ op: "unpinNode", nodeId, audit })).node);
  }
  async requestReapply(nodeId: string, atMs: number, audit: AuditRow): Promise<Node> {
    return rowToNode((await this.write({ op: "requestReapply", nodeId, atMs, audit })).node);
  }

  queryEvents(q: EventQuery): Promise<Event[]> {
    const query = this.queries.get(q);
    return this.read(() => query.events(eventQueryParams(q)));
  }

  async queryEventPage(q: EventQuery, opts: { busy?: boolean } = {}): Promise<EventPage> {
    if (this.fatal) throw this.fatal;
    return opts.busy ? this.pages.page(q) : this.pageInline(q);
  }

  private pageInline(q: EventQuery): Promise<EventPage> {
    const query = this.queries.get(q);
    return this.read(() => query.page(eventQueryParams(q)));
  }

  /** For tests: the event page thread's reader. */
  get eventPages(): EventPageReader {
    return this.pages;
  }

  private ingestRate?: { range: Database.Statement; at: Database.Statement; count: Database.Statement };
  ingestCounts(q: IngestRateQuery): Promise<number[]> {
    const s = (this.ingestRate ??= {
      range: this.reader.prepare("SELECT min(seq) AS min, max(seq) AS max FROM events"),
      at: this.reader.prepare("SELECT received_at_ms AS at FROM events WHERE seq >= ? ORDER BY seq LIMIT 1"),
      count: this.reader.prepare("SELECT CAST((received_at_ms - CAST(? AS INTEGER)) / CAST(? AS INTEGER) AS INTEGER) AS bucket, count(*) AS n FROM events WHERE seq >= ? GROUP BY 1"),
    });
    return ingestCounts(
      {
        seqRange: () => this.read(() => {
          const r = s.range.get() as { min: number | null; max: number | null };
          return r.min === null || r.max === null ? undefined : { min: r.min, max: r.max };
        }),
        receivedAtOrAfter: (seq) => this.read(() => (s.at.get(seq) as { at: number } | undefined)?.at),
        countFrom: (seq, query) => this.read(() => s.count.all(query.sinceMs, query.bucketMs, seq) as { bucket: number; n: number }[]),
      },
      q,
    );
  }

  eventsAfter(q: EventFollowQuery) {
    return this.read(() => this.maintenance.eventsAfter(q));
  }
  eventAtOrAfter(seq: bigint) {
    return this.read(() => this.maintenance.eventAtOrAfter(seq));
  }
  async deleteEvents(d: EventDeletion) {
    return fromDeleteEventsResult(await this.write(toDeleteEventsWrite(d)));
  }
  statistics() {
    return this.read(() => this.maintenance.statistics());
  }

  /** Runs a read on the reader connection, with driver failures translated. */
  private async read<T>(fn: () => T): Promise<T> {
    if (this.fatal) throw this.fatal;
    if (this.closed) throw new StoreUnavailableError("the store is closed");
    try {
      return fn();
    } catch (err) {
      throw this.translate(err);
    }
  }

  /** Runs a write on the writer thread; its result has the type of its operation's (StoreWriteResults). */
  private async write<W extends StoreWrite>(write: W): Promise<StoreWriteResults[W["op"]]> {
    this.checkOpen();
    // The reply crossed a thread: its type is the writer's handler's for this operation.
    const reply = (await this.send({ id: this.nextId++, write })) as { result: StoreWriteResult };
    return reply.result as StoreWriteResults[W["op"]];
  }

  private checkOpen(): void {
    if (this.fatal) throw this.fatal;
    if (this.closed) throw new StoreUnavailableError("the store is closed");
  }

  /**
   * Hands a request to the writer thread; resolves with its successful reply. Requests made in
   * one turn of the event loop cross to the writer in one message (postMessage costs the same
   * for one request as for many), and its replies come back the same way.
   */
  private send(request: WriterWork): Promise<WriterReply> {
    return new Promise((resolve, reject) => {
      this.pending.set(request.id, { resolve, reject });
      this.outbox.push(request);
      if (this.outbox.length === 1) setImmediate(this.postOutbox);
    });
  }

  private readonly postOutbox = () => {
    const batch = this.outbox;
    this.outbox = [];
    // After a fatal error every waiter was rejected already (fail); the requests are dropped.
    if (batch.length === 0 || this.fatal) return;
    try {
      this.worker.postMessage(batch satisfies WriterRequest);
    } catch (err) {
      // A request that cannot cross to the thread (not cloneable): its batch fails, the store goes on.
      for (const request of batch) {
        this.pending.get(request.id)?.reject(err as Error);
        this.pending.delete(request.id);
      }
    }
  };

  /** Lets the writer commit what it holds and close its connection, then closes the reader. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.pages.close();
    this.reader.close();
    if (!this.fatal) {
      const exited = new Promise<void>((resolve) => this.worker.once("exit", () => resolve()));
      this.postOutbox();
      this.worker.postMessage({ close: true } satisfies WriterRequest);
      const stuck = setTimeout(() => void this.worker.terminate(), 10_000);
      await exited;
      clearTimeout(stuck);
    } else {
      await this.worker.terminate();
    }
    for (const waiter of this.pending.values()) waiter.reject(new StoreUnavailableError("the store is closed"));
    this.pending.clear();
  }

  private onReplies(replies: WriterReply | WriterReply[]): void {
    if (Array.isArray(replies)) for (const reply of replies) this.onReply(reply);
    else this.onReply(replies);
  }

  private onReply(reply: WriterReply): void {
    if (!("id" in reply)) return;
    const waiter = this.pending.get(reply.id);
    if (!waiter) return;
    this.pending.delete(reply.id);
    if ("inserted" in reply || "result" in reply) waiter.resolve(reply);
    else if ("refused" in reply) {
      const { kind, message } = reply.refused;
      const error = { notFound: NotFoundError, conflict: ConflictError, aborted: AbortedError, failedPrecondition: FailedPreconditionError }[kind];
      waiter.reject(new error(message));
    } else waiter.reject(this.translate(new Error(reply.detail), reply.failure));
  }

  /** Maps a driver failure to a typed error; corruption is also reported as fatal. */
  private translate(err: unknown, kind = classifySqliteError(err)): Error {
    const typed = sqliteDomainError(kind);
    if (typed instanceof StoreCorruptError) this.fail(typed);
    return typed ?? (err instanceof Error ? err : new Error("sqlite failure"));
  }

  private fail(err: Error): void {
    if (this.fatal) return;
    this.fatal = err;
    for (const waiter of this.pending.values()) waiter.reject(err);
    this.pending.clear();
    this.onFatal(err);
  }
}
