import { desc, getTableColumns, sql, type SQL } from "drizzle-orm";
import { drizzle, type NodePgDatabase } from "drizzle-orm/node-postgres";
import { migrate } from "drizzle-orm/node-postgres/migrator";
import type pg from "pg";
import type { Event } from "../../../gen/autonomy/v1/events_pb.js";
import { StoreBusyError, StoreFullError, StoreUnavailableError } from "../../domain/errors.js";
import { migrationsFolder } from "../../paths.js";
import { eventPageOfRows, eventToRow, rowToEvent } from "../event-rows.js";
import { withInserted } from "../../domain/audit.js";
import { RankKeys } from "../../domain/rollouts.js";
import { eventQueryParams, eventQueryWhere, PreparedEventQueries, type EventQueryShape } from "../prepared-queries.js";
import type { AckRow, NodeSighting, ReleaseRow } from "../fleet-rows.js";
import type { FleetTotalsQuery } from "../fleet-totals.js";
import type { FleetSearchQuery } from "../fleet-search.js";
import type { AuditQuery, Enrollment, EventDeletion, EventFollowQuery, EventQuery, NodeQuery, RolloutQuery, StageNodeQuery, Store } from "../store.js";
import type { StageOpening } from "../rollout-opening.js";
import { pgFleet } from "./fleet.js";
import { GroupCommit } from "../group-commit.js";
import { appendAudit, pgRollouts } from "./rollouts.js";
import { pgRbac } from "./rbac.js";
import { pgEnrollment } from "./enrollment.js";
import { pgWorkloads } from "./workloads.js";
import type { PlacementCommit, ServiceDeletion, WorkloadApply, WorkloadReport } from "../workload-rows.js";
import type { EnrollmentTokenRow, NodeCertificateRow, TokenEnrollment } from "../enrollment-rows.js";
import { pgOperations } from "./operations.js";
import type { DivergenceQuery, EmergencyChange } from "../operation-rows.js";
import type { BindingRow, RoleRow, TokenRow } from "../rbac-rows.js";
import type { AuditRow, PlanRow, RolloutChange, SigningKeyRow, StatusRow } from "../rollout-rows.js";
import { events } from "./schema.js";
import { ingestCounts, type IngestRateQuery } from "../ingest-rate.js";
import { pgEventMaintenance } from "./event-maintenance.js";
import { StorePool } from "./pool.js";

export interface PostgresStoreOptions {
  url: string;
  /** Connections in the pool. */
  poolSize?: number;
}

// PostgreSQL allows 65,535 bind parameters a statement; nine columns a row.
const ROWS_PER_INSERT = 5000;
// Any constant: serialises schema migrations of replicas starting together.
const MIGRATION_LOCK_KEY = 7_340_021;

/** The query of one filter shape, a named prepared statement on each pooled connection. */
function prepareEventQuery(db: NodePgDatabase, shape: EventQueryShape) {
  const { receivedAtMs: _, ...columns } = getTableColumns(events);
  const name = `events_query_${+shape.nodeId}${+shape.eventType}${+shape.before}`;
  return db
    .select(columns)
    .from(events)
    .where(eventQueryWhere(events, shape))
    .orderBy(desc(events.seq))
    .limit(sql.placeholder("limit"))
    .prepare(name);
}

/** Maps a pg failure to a typed error, or returns it unchanged (it then becomes `internal`). */
function translate(err: unknown): unknown {
  // drizzle wraps the driver's error (DrizzleQueryError): its code is on the cause.
  const e = err as { code?: unknown; cause?: { code?: unknown } } | null;
  const code = e?.code ?? e?.cause?.code;
  if (typeof code !== "string") return err;
  if (code === "53100") return new StoreFullError("the database is full: no space left for writes");
  if (code === "40001" || code === "40P01" || code === "55P03" || code === "53300") {
    return new StoreBusyError("the database is busy; retry shortly");
  }
  if (code.startsWith("08") || code === "57P01" || code === "57P03" || code === "ECONNREFUSED" || code === "ECONNRESET") {
    return new StoreUnavailableError("the database cannot be reached; retry shortly");
  }
  return err;
}

/** The high-availability store: PostgreSQL over a connection pool, shared by every replica. */
export class PostgresStore implements Store {
  readonly dialect = "postgres" as const;
  /** The rank keys of the plan this store opened a stage of last (src/domain/rollouts.ts). */
  private readonly ranks = new RankKeys();
  private readonly queries = new PreparedEventQueries((shape) => prepareEventQuery(this.db, shape));
  private readonly acks = new GroupCommit(
    (items: readonly { row: AckRow; audit?: AuditRow }[]) =>
      this.run(() => pgFleet.upsertAcks(this.db, items)).then((outcomes) =>
        outcomes.map((o) => (o.ok ? o : { ok: false as const, error: translate(o.error) })),
      ),
    ({ row, audit }: { row: AckRow; audit?: AuditRow }) => this.run(() => pgFleet.upsertAck(this.db, row, audit)),
  );

  private constructor(
    private readonly pool: pg.Pool,
    private readonly db: NodePgDatabase,
  ) {}

  /** Connects and applies the schema migrations, one replica at a time. */
  static async open(opts: PostgresStoreOptions): Promise<PostgresStore> {
    const pool = new StorePool({ connectionString: opts.url, max: opts.poolSize ?? 10 });
    // An idle client losing its connection must not crash the process; the next query reports it.
    pool.on("error", () => {});
    // A connection ended while checked out between two statements (a transaction, when the
    // server or a successor leader ends the session) emits on the client: the next query reports it.
    pool.on("connect", (client) => client.on("error", () => {}));
    const db = drizzle({ client: pool });
    try {
      const client = await pool.connect();
      try {
        await client.query("SELECT pg_advisory_lock($1)", [MIGRATION_LOCK_KEY]);
        await migrate(drizzle({ client }), { migrationsFolder: migrationsFolder("pg") });
      } finally {
        await client.query("SELECT pg_advisory_unlock($1)", [MIGRATION_LOCK_KEY]).catch(() => {});
        client.release();
      }
    } catch (err) {
      await pool.end();
      throw err;
    }
    return new PostgresStore(pool, db);
  }

  async ingestEvents(batch: readonly Event[], audit?: AuditRow): Promise<number> {
    const receivedAtMs = Date.now();
    const rows = batch.map((e) => eventToRow(e, receivedAtMs));
    try {
      return await this.db.transaction(async (tx) => {
        let inserted = 0;
        for (let i = 0; i < rows.length; i += ROWS_PER_INSERT) {
          const result = await tx
            .insert(events)
            .values(rows.slice(i, i + ROWS_PER_INSERT))
            .onConflictDoNothing();
          inserted += result.rowCount ?? 0;
        }
        if (audit && inserted > 0) await appendAudit(tx, [withInserted(audit, inserted)]);
        return inserted;
      });
    } catch (err) {
      throw translate(err);
    }
  }

  ingestCounts(q: IngestRateQuery): Promise<number[]> {
    const rows = async <T>(query: SQL) => (await this.run(() => this.db.execute(query))).rows as T[];
    return ingestCounts(
      {
        seqRange: async () => {
          const [r] = await rows<{ min: string | null; max: string | null }>(sql`SELECT min(seq) AS min, max(seq) AS max FROM events`);
          return r?.min == null || r.max == null ? undefined : { min: Number(r.min), max: Number(r.max) };
        },
        receivedAtOrAfter: async (seq) => {
          const [r] = await rows<{ at: string }>(sql`SELECT received_at_ms AS at FROM events WHERE seq >= ${seq} ORDER BY seq LIMIT 1`);
          return r === undefined ? undefined : Number(r.at);
        },
        countFrom: async (seq, query) =>
          (
            await rows<{ bucket: string; n: string }>(
              sql`SELECT (received_at_ms - ${query.sinceMs}::bigint) / ${query.bucketMs}::bigint AS bucket, count(*) AS n FROM events WHERE seq >= ${seq} GROUP BY 1`,
            )
          ).map((r) => ({ bucket: Number(r.bucket), n: Number(r.n) })),
      },
      q,
    );
  }

  async queryEvents(q: EventQuery): Promise<Event[]> {
    return (await this.eventRows(q)).map(rowToEvent);
  }

  async queryEventPage(q: EventQuery) {
    return eventPageOfRows(await this.eventRows(q));
  }

  private async eventRows(q: EventQuery) {
    try {
      return await this.queries.get(q).execute(eventQueryParams(q));
    } catch (err) {
      throw translate(err);
    }
  }

  eventsAfter(q: EventFollowQuery) {
    return this.run(() => pgEventMaintenance.eventsAfter(this.db, q, Date.now()));
  }
  eventAtOrAfter(seq: bigint) {
    return this.run(() => pgEventMaintenance.eventAtOrAfter(this.db, seq));
  }
  deleteEvents(d: EventDeletion) {
    return this.run(() => pgEventMaintenance.deleteEvents(this.db, d));
  }
  statistics() {
    return this.run(() => pgEventMaintenance.statistics(this.db));
  }

  publishRelease(row: ReleaseRow, audit?: AuditRow) {
    return this.run(() => pgFleet.publishRelease(this.db, row, audit));
  }
  latestRelease(channel: string, opts?: { unstagedOnly?: boolean }) {
    return this.run(() => pgFleet.latestRelease(this.db, channel, opts?.unstagedOnly));
  }
  getRelease(releaseId: string) {
    return this.run(() => pgFleet.getRelease(this.db, releaseId));
  }
  /** Group-committed (see GroupCommit): each ack answered after the transaction holding it committed. */
  upsertAck(row: AckRow, audit?: AuditRow) {
    return this.acks.submit({ row, audit });
  }
  acksOfRelease(releaseId: string) {
    return this.run(() => pgFleet.acksOfRelease(this.db, releaseId));
  }
  acksOfNode(nodeId: string) {
    return this.run(() => pgFleet.acksOfNode(this.db, nodeId));
  }
  enrollNode(enrollment: Enrollment, nowMs: number, audit?: AuditRow) {
    return this.run(() => pgFleet.enrollNode(this.db, enrollment, nowMs, audit));
  }
  getNode(nodeId: string) {
    return this.run(() => pgFleet.getNode(this.db, nodeId));
  }
  listNodes(q: NodeQuery) {
    return this.run(() => pgFleet.listNodes(this.db, q));
  }
  fleetTotals(q: FleetTotalsQuery) {
    return this.run(() => pgFleet.fleetTotals(this.db, q));
  }
  searchFleetNodes(q: FleetSearchQuery) {
    return this.run(() => pgFleet.searchFleetNodes(this.db, q));
  }
  async fleetChannels() {
    const res = await this.run(() => this.db.execute(sql`SELECT channel FROM fleet_totals GROUP BY channel HAVING sum(n) > 0 ORDER BY channel COLLATE "C"`));
    return (res.rows as { channel: string }[]).map((r) => r.channel);
  }
  setDrained(nodeId: string, drained: boolean, reason: string, audit?: AuditRow) {
    return this.run(() => pgFleet.setDrained(this.db, nodeId, drained, reason, audit));
  }
  pruneAudit(beforeMs: number, audit: AuditRow) {
    return this.run(() => pgRollouts.pruneAudit(this.db, beforeMs, audit));
  }
  recordSightings(sightings: readonly NodeSighting[]) {
    return this.run(() => pgFleet.recordSightings(this.db, sightings));
  }
  lastEventsByType(nodeId: string) {
    return this.run(() => pgFleet.lastEventsByType(this.db, nodeId));
  }
  lastLockFingerprint(nodeId: string) {
    return this.run(() => pgFleet.lastLockFingerprint(this.db, nodeId));
  }

  createRollout(plan: PlanRow, status: StatusRow, audit: AuditRow) {
    return this.run(() => pgRollouts.createRollout(this.db, plan, status, audit));
  }
  commitRollout(change: RolloutChange) {
    return this.run(() => pgRollouts.commitRollout(this.db, change));
  }
  openRolloutStage(opening: StageOpening) {
    return this.run(() => pgRollouts.openRolloutStage(this.db, opening, this.ranks));
  }
  stageNodes(q: StageNodeQuery) {
    return this.run(() => pgRollouts.stageNodes(this.db, q));
  }
  registerSigningKey(row: SigningKeyRow) {
    return this.run(() => pgRollouts.registerSigningKey(this.db, row));
  }
  getRollout(planId: string) {
    return this.run(() => pgRollouts.getRollout(this.db, planId));
  }
  listRollouts(q: RolloutQuery) {
    return this.run(() => pgRollouts.listRollouts(this.db, q));
  }
  movesOfPlan(planId: string) {
    return this.run(() => pgRollouts.movesOfPlan(this.db, planId));
  }
  planMovedNode(planId: string, nodeId: string) {
    return this.run(() => pgRollouts.planMovedNode(this.db, planId, nodeId));
  }
  restoreProgress(planId: string) {
    return this.run(() => pgRollouts.restoreProgress(this.db, planId));
  }
  newestMoves(nodeIds?: readonly string[]) {
    return this.run(() => pgRollouts.newestMoves(this.db, nodeIds));
  }
  eventCountsSince(eventType: string, afterSeq: bigint) {
    return this.run(() => pgRollouts.eventCountsSince(this.db, eventType, afterSeq));
  }
  newestEventSeq() {
    return this.run(() => pgRollouts.newestEventSeq(this.db));
  }
  auditRecords(q: AuditQuery) {
    return this.run(() => pgRollouts.auditRecords(this.db, q));
  }
  signingKeys() {
    return this.run(() => pgRollouts.signingKeys(this.db));
  }

  appendAudit(rows: readonly AuditRow[]) {
    return this.run(() => this.db.transaction((tx) => appendAudit(tx, rows)));
  }
  putRole(row: RoleRow, audit: AuditRow) {
    return this.run(() => pgRbac.putRole(this.db, row, audit));
  }
  assignRole(row: BindingRow, audit: AuditRow) {
    return this.run(() => pgRbac.assignRole(this.db, row, audit));
  }
  revokeRole(principal: string, role: string, audit: AuditRow) {
    return this.run(() => pgRbac.revokeRole(this.db, principal, role, audit));
  }
  createToken(row: TokenRow, audit: AuditRow) {
    return this.run(() => pgRbac.createToken(this.db, row, audit));
  }
  revokeToken(tokenId: string, atMs: number, audit: AuditRow) {
    return this.run(() => pgRbac.revokeToken(this.db, tokenId, atMs, audit));
  }
  listRoles() {
    return this.run(() => pgRbac.listRoles(this.db));
  }
  listBindings(principal?: string) {
    return this.run(() => pgRbac.listBindings(this.db, principal));
  }
  listTokens() {
    return this.run(() => pgRbac.listTokens(this.db));
  }
  tokenByHash(hash: string) {
    return this.run(() => pgRbac.tokenByHash(this.db, hash));
  }
  rbacCounts() {
    return this.run(() => pgRbac.rbacCounts(this.db));
  }
  createEnrollmentToken(row: EnrollmentTokenRow, audit: AuditRow) {
    return this.run(() => pgEnrollment.createEnrollmentToken(this.db, row, audit));
  }
  listEnrollmentTokens(q: { nodeId?: string }) {
    return this.run(() => pgEnrollment.listEnrollmentTokens(this.db, q));
  }
  enrollmentTokenByHash(hash: string) {
    return this.run(() => pgEnrollment.enrollmentTokenByHash(this.db, hash));
  }
  revokeEnrollmentToken(tokenId: string, atMs: number, audit: AuditRow) {
    return this.run(() => pgEnrollment.revokeEnrollmentToken(this.db, tokenId, atMs, audit));
  }
  enrollWithToken(e: TokenEnrollment) {
    return this.run(() => pgEnrollment.enrollWithToken(this.db, e));
  }
  recordCertificateRenewal(row: NodeCertificateRow, audit: AuditRow) {
    return this.run(() => pgEnrollment.recordCertificateRenewal(this.db, row, audit));
  }
  nodeCertificates(nodeId: string) {
    return this.run(() => pgEnrollment.nodeCertificates(this.db, nodeId));
  }

  applyWorkloads(apply: WorkloadApply) {
    return this.run(() => pgWorkloads.applyWorkloads(this.db, apply));
  }
  deleteWorkloadService(deletion: ServiceDeletion) {
    return this.run(() => pgWorkloads.deleteWorkloadService(this.db, deletion));
  }
  workloadSnapshot() {
    return this.run(() => pgWorkloads.workloadSnapshot(this.db));
  }
  commitPlacement(commit: PlacementCommit) {
    return this.run(() => pgWorkloads.commitPlacement(this.db, commit));
  }
  reportWorkloads(report: WorkloadReport) {
    return this.run(() => pgWorkloads.reportWorkloads(this.db, report));
  }
  unansweredCommands(nodeId: string) {
    return this.run(() => pgWorkloads.unansweredCommands(this.db, nodeId));
  }
  replicasOfNode(nodeId: string) {
    return this.run(() => pgWorkloads.replicasOfNode(this.db, nodeId));
  }

  emergencyStop() {
    return this.run(() => pgOperations.emergencyStop(this.db));
  }
  startEmergencyStop(change: EmergencyChange) {
    return this.run(() => pgOperations.startEmergencyStop(this.db, change));
  }
  endEmergencyStop(change: EmergencyChange) {
    return this.run(() => pgOperations.endEmergencyStop(this.db, change));
  }
  divergedNodes(q: DivergenceQuery) {
    return this.run(() => pgOperations.divergedNodes(this.db, q));
  }
  acksOfNodes(nodeIds: readonly string[]) {
    return this.run(() => pgOperations.acksOfNodes(this.db, nodeIds));
  }
  acceptReported(nodeId: string, atMs: number, reason: string, audit: AuditRow) {
    return this.run(() => pgOperations.acceptReported(this.db, nodeId, atMs, reason, audit));
  }
  unpinNode(nodeId: string, audit: AuditRow) {
    return this.run(() => pgOperations.unpinNode(this.db, nodeId, audit));
  }
  requestReapply(nodeId: string, atMs: number, audit: AuditRow) {
    return this.run(() => pgOperations.requestReapply(this.db, nodeId, atMs, audit));
  }

  /** Runs an operation with driver failures translated; typed domain errors pass through. */
  private async run<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      throw translate(err);
    }
  }

  /** Round trip to the database; used by readiness checks. */
  async ping(): Promise<void> {
    await this.db.execute(sql`SELECT 1`);
  }

  async close(): Promise<void> {
    await this.pool.end();
  }
}
