/**
 * High availability as the server runs it: the leadership (an epoch lease in PostgreSQL, or
 * standalone with SQLite), the rollout controller started and stopped under it, the signals a
 * follower relays to the leader, and the answers of the HA endpoints (readiness, leader,
 * quorum, audit, resign) and metrics.
 */
import type http from "node:http";
import pg from "pg";
import { Counter, Gauge } from "prom-client";
import { auditHash, type ChainedAuditRow } from "../domain/audit.js";
import { FailedPreconditionError, StoreUnavailableError, ValidationError } from "../domain/errors.js";
import type { Logger } from "../observability/logger.js";
import type { Metrics } from "../observability/metrics.js";
import type { RolloutController } from "../rollouts/controller.js";
import { auditRecord, type Actor } from "../services/audit-record.js";
import type { Store } from "../store/store.js";
import type { PlainRoute } from "../transport/rest.js";
import { DEFAULT_LEADER_LEASE_MS, DEFAULT_LEADER_RENEW_MS, HA_CHANNEL, LEADER_LOCK_KEY, PgLeadership } from "./election.js";
import { newReplicaId } from "./ids.js";
import { StandaloneLeadership, type Leadership } from "./leadership.js";
import { applySignals, SignalRelay } from "./relay.js";

/** --replication-lag-critical: above this replay lag, lag_status is critical and resign is refused. */
export const DEFAULT_LAG_CRITICAL_MS = 10_000;
const PROBE_TIMEOUT_MS = 1_000;
const MAX_REASON = 512;

export interface HaSettings {
  postgresUrl?: string;
  leaseMs?: number;
  renewMs?: number;
  lagCriticalMs?: number;
}

export interface Readiness {
  ready: boolean;
  reason?: string;
}

export interface QuorumView {
  mode: string;
  writeReady: boolean;
  syncStandbyCount: number;
  standbyCount: number;
  replayLagSeconds: number;
  lagStatus: "ok" | "critical";
  lagCriticalSeconds: number;
  standbys: { applicationName: string; state: string; syncState: string; replayLagSeconds: number; replayLagBytes: number }[];
  message: string;
}

export class HaRuntime {
  readonly leadership: Leadership;
  readonly replicaId: string;
  readonly relay?: SignalRelay;
  private readonly election?: PgLeadership;
  private readonly pool?: pg.Pool;
  /** The relay's notifications: a pool of their own, so a burst never queues a readiness probe. */
  private readonly notifier?: pg.Pool;
  private readonly lagCriticalMs: number;
  private controller?: RolloutController;
  /** The workload loop, told of workload changes relayed by followers. */
  workloads?: { relayed(): void };
  private verified?: { seq: number; hash: string };
  private auditProblem?: string;
  private lastLagSeconds = 0;

  constructor(
    private readonly settings: HaSettings,
    private readonly deps: { store: Store; metrics: Metrics; logger: Logger; replicaId?: string },
  ) {
    this.lagCriticalMs = settings.lagCriticalMs ?? DEFAULT_LAG_CRITICAL_MS;
    if (!Number.isFinite(this.lagCriticalMs) || this.lagCriticalMs <= 0) throw new ValidationError("--replication-lag-critical", "must be a positive duration");
    this.replicaId = deps.replicaId ?? newReplicaId();
    if (settings.postgresUrl) {
      // Readiness probes, quorum, notifications: a small pool of their own, each query bounded.
      this.pool = new pg.Pool({ connectionString: settings.postgresUrl, max: 3, connectionTimeoutMillis: PROBE_TIMEOUT_MS, query_timeout: PROBE_TIMEOUT_MS, idleTimeoutMillis: 10_000 });
      this.pool.on("error", () => {});
      this.pool.on("connect", (client) => client.on("error", () => {}));
      this.notifier = new pg.Pool({ connectionString: settings.postgresUrl, max: 2, connectionTimeoutMillis: PROBE_TIMEOUT_MS, query_timeout: PROBE_TIMEOUT_MS, idleTimeoutMillis: 10_000 });
      this.notifier.on("error", () => {});
      this.notifier.on("connect", (client) => client.on("error", () => {}));
      const election = new PgLeadership({
        url: settings.postgresUrl,
        holderId: this.replicaId,
        leaseMs: settings.leaseMs ?? DEFAULT_LEADER_LEASE_MS,
        renewMs: settings.renewMs ?? DEFAULT_LEADER_RENEW_MS,
        logger: deps.logger,
        onSignals: (body) => {
          if (this.controller) applySignals(this.controller, body, this.workloads);
        },
        onTransition: (leading, epoch) => {
          this.changes.inc();
          this.isLeaderGauge.set(leading ? 1 : 0);
          this.epochGauge.set(epoch ?? 0);
        },
      });
      this.election = election;
      this.leadership = election;
      this.relay = new SignalRelay(
        this.replicaId,
        async (msg) => {
          await this.notifier!.query("SELECT pg_notify($1, $2)", [HA_CHANNEL, JSON.stringify(msg)]);
        },
        (err) => deps.logger.debug({ err: err.message }, "relaying signals to the leader failed; its resync catches up"),
      );
    } else {
      this.leadership = new StandaloneLeadership();
    }
    const registers = [deps.metrics.registry];
    this.isLeaderGauge = new Gauge({ name: "cp_leader_is_leader", help: "1 while this replica leads (always 1 standalone)", registers });
    this.epochGauge = new Gauge({ name: "cp_leader_epoch", help: "The leader epoch this replica holds (0 when it does not lead, or standalone)", registers });
    this.changes = new Counter({ name: "cp_leader_changes_total", help: "Times this replica gained or lost leadership", registers });
    const readLag = async () => {
      if (this.pool) await this.quorum().catch(() => undefined);
      return this.lastLagSeconds;
    };
    new Gauge({
      name: "cp_replication_lag_seconds",
      help: "The largest replay lag of the database's streaming standbys (pg_stat_replication), read at scrape time",
      registers,
      async collect() {
        this.set(await readLag());
      },
    });
    this.isLeaderGauge.set(this.election ? 0 : 1);
  }

  private readonly isLeaderGauge: Gauge;
  private readonly epochGauge: Gauge;
  private readonly changes: Counter;

  get mode(): "standalone" | "postgres" {
    return this.leadership.mode;
  }

  /**
   * Runs the controller under the leadership: standalone it starts now; with PostgreSQL it
   * starts each time this replica gains leadership and stops when it loses it.
   */
  async attach(controller: RolloutController): Promise<void> {
    this.controller = controller;
    if (!this.election) {
      await controller.start();
      return;
    }
    this.election.onChange(async (leading) => {
      if (leading) await controller.start().catch((err: Error) => this.deps.logger.error({ err: err.message }, "starting the rollout controller failed"));
      else await controller.follow();
    });
    await this.election.start();
  }

  async close(): Promise<void> {
    this.relay?.close();
    await this.election?.close();
    await this.pool?.end().catch(() => undefined);
    await this.notifier?.end().catch(() => undefined);
  }

  // -- answers --------------------------------------------------------------------------

  private async probe(): Promise<{ inRecovery: boolean }> {
    const { rows } = await this.pool!.query<{ r: boolean }>("SELECT pg_is_in_recovery() AS r");
    return { inRecovery: rows[0].r };
  }

  async readiness(): Promise<{ read: Readiness; write: Readiness }> {
    if (!this.pool) {
      const ok = this.deps.store.dialect === "sqlite";
      return { read: { ready: ok }, write: { ready: ok } };
    }
    try {
      const { inRecovery } = await this.probe();
      const write = inRecovery ? { ready: false, reason: "the database is a standby (in recovery): it takes no writes" } : { ready: true };
      return { read: { ready: true }, write };
    } catch (err) {
      const reason = `PostgreSQL cannot be reached: ${(err as Error).message}`;
      return { read: { ready: false, reason }, write: { ready: false, reason } };
    }
  }

  async leader() {
    const standalone = { mode: "standalone", currentEpoch: 0, holderId: this.replicaId, acquiredAt: "", renewedAt: "", resignedAt: "", sessionLockHeld: false, thisReplicaIsLeader: true, leaseMs: 0 };
    if (!this.election) return standalone;
    const row = await this.election.current();
    let lockHeld = false;
    try {
      const { rows } = await this.pool!.query<{ held: boolean }>(
        "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND classid = 0 AND objid = $1 AND granted) AS held",
        [LEADER_LOCK_KEY],
      );
      lockHeld = rows[0].held;
    } catch (err) {
      throw new StoreUnavailableError(`PostgreSQL cannot be reached: ${(err as Error).message}`);
    }
    return {
      mode: "postgres",
      currentEpoch: row?.epoch ?? 0,
      holderId: row?.holderId ?? "",
      acquiredAt: row?.acquiredAt.toISOString() ?? "",
      renewedAt: row?.renewedAt.toISOString() ?? "",
      resignedAt: row?.resignedAt?.toISOString() ?? "",
      sessionLockHeld: lockHeld,
      thisReplicaIsLeader: this.election.isLeader() && this.election.epoch() === row?.epoch,
      leaseMs: row?.leaseMs ?? 0,
    };
  }

  async quorum(): Promise<QuorumView> {
    const lagCriticalSeconds = this.lagCriticalMs / 1000;
    const base = { syncStandbyCount: 0, standbyCount: 0, replayLagSeconds: 0, lagStatus: "ok" as const, lagCriticalSeconds, standbys: [] };
    if (!this.pool) return { ...base, mode: "standalone", writeReady: true, message: "standalone deployment (embedded SQLite): no replication" };
    const { write } = await this.readiness();
    if (!write.ready && write.reason?.startsWith("PostgreSQL cannot")) throw new StoreUnavailableError(write.reason);
    const { rows } = await this.pool.query<{ application_name: string; state: string; sync_state: string; lag_s: number | null; lag_bytes: string | null }>(
      `SELECT application_name, state, sync_state,
              EXTRACT(EPOCH FROM replay_lag)::float8 AS lag_s,
              pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::float8 AS lag_bytes
       FROM pg_stat_replication`,
    );
    const standbys = rows.map((r) => ({
      applicationName: r.application_name,
      state: r.state,
      syncState: r.sync_state,
      replayLagSeconds: Number(r.lag_s ?? 0),
      replayLagBytes: Number(r.lag_bytes ?? 0),
    }));
    const lag = Math.max(0, ...standbys.map((s) => s.replayLagSeconds));
    this.lastLagSeconds = lag;
    return {
      mode: "postgres",
      writeReady: write.ready,
      syncStandbyCount: standbys.filter((s) => s.syncState === "sync" || s.syncState === "quorum").length,
      standbyCount: standbys.length,
      replayLagSeconds: lag,
      lagStatus: lag > lagCriticalSeconds ? "critical" : "ok",
      lagCriticalSeconds,
      standbys,
      message: standbys.length === 0 ? "no streaming standby is connected" : "",
    };
  }

  /** The audit chain verified from where the last call stopped (at most `budget` records a call). */
  async audit(budget = 50_000) {
    const { store } = this.deps;
    const [head] = await store.auditRecords({ order: "desc", limit: 1 });
    let checked = 0;
    while (!this.auditProblem && checked < budget) {
      const page: ChainedAuditRow[] = await store.auditRecords({ order: "asc", cursorSeq: this.verified?.seq, limit: 1000 });
      for (const r of page) {
        const prev = this.verified;
        if (prev && (r.seq !== prev.seq + 1 || r.prevHash !== prev.hash)) this.auditProblem = `record ${r.seq} does not link to record ${prev.seq}`;
        else if (!prev && r.seq === 1 && r.prevHash !== "") this.auditProblem = "record 1 links to a record before it";
        else if (auditHash(r.prevHash, r) !== r.hash) this.auditProblem = `record ${r.seq}: its hash does not match its content`;
        if (this.auditProblem) break;
        this.verified = { seq: r.seq, hash: r.hash };
      }
      checked += page.length;
      if (page.length < 1000) break;
    }
    return {
      mode: this.mode,
      ok: this.auditProblem === undefined,
      verifiedThroughSeq: this.verified?.seq ?? 0,
      headSeq: head?.seq ?? 0,
      lastWriteAt: head ? new Date(head.atMs).toISOString() : "",
      problem: this.auditProblem ?? "",
    };
  }

  async status() {
    const { read, write } = await this.readiness();
    let leader: Awaited<ReturnType<HaRuntime["leader"]>> | undefined;
    let quorum: QuorumView | undefined;
    try {
      leader = await this.leader();
      quorum = await this.quorum();
    } catch {
      // unreachable: the readiness says so
    }
    return {
      mode: this.mode,
      replicaId: this.replicaId,
      readReady: read.ready,
      writeReady: write.ready,
      reason: write.reason ?? read.reason ?? "",
      thisReplicaIsLeader: this.leadership.isLeader(),
      currentEpoch: leader?.currentEpoch ?? 0,
      holderId: leader?.holderId ?? "",
      replicationLagSeconds: quorum?.replayLagSeconds ?? 0,
      lagStatus: quorum?.lagStatus ?? "ok",
      lagCriticalSeconds: this.lagCriticalMs / 1000,
    };
  }

  async resign(reason: string, actor: Actor) {
    const why = reason.trim();
    if (why === "") throw new ValidationError("reason", "required: say why the leader resigns (it is audited)");
    if (why.length > MAX_REASON) throw new ValidationError("reason", `at most ${MAX_REASON} characters`);
    if (!this.election) throw new FailedPreconditionError("standalone deployment (embedded SQLite): this replica is the only one and always leads; there is nothing to hand over");
    // The lag in one query (the handover waits for it): what /v1/health/quorum reports as lag_status.
    let lag: number;
    try {
      const { rows } = await this.pool!.query<{ lag_s: number | null }>("SELECT max(EXTRACT(EPOCH FROM replay_lag))::float8 AS lag_s FROM pg_stat_replication");
      lag = Number(rows[0].lag_s ?? 0);
    } catch (err) {
      throw new StoreUnavailableError(`PostgreSQL cannot be reached: ${(err as Error).message}`);
    }
    const lagCriticalSeconds = this.lagCriticalMs / 1000;
    if (lag > lagCriticalSeconds) {
      throw new FailedPreconditionError(
        `replication lag is critical (${lag.toFixed(1)}s > ${lagCriticalSeconds}s): a handover now could lose acknowledged writes on a failover; wait until the standbys catch up (autonomy ha quorum)`,
      );
    }
    const r = await this.election.resign(why);
    try {
      await this.deps.store.appendAudit([
        auditRecord(actor, {
          eventName: "ha.leader_resigned",
          category: "ha",
          action: "resign",
          resourceType: "leader_epoch",
          resource: String(r.previousEpoch),
          fields: { previous_holder: r.previousHolder, resigned_at: r.resignedAt.toISOString(), by_replica: this.replicaId },
          reason: why,
        }),
      ]);
    } catch (err) {
      this.deps.logger.error({ err: (err as Error).message, epoch: r.previousEpoch }, "the leader resigned but its audit record could not be written");
    }
    return {
      success: true,
      previousHolder: r.previousHolder,
      previousEpoch: r.previousEpoch,
      resignedAt: r.resignedAt.toISOString(),
      message: `epoch ${r.previousEpoch} of ${r.previousHolder} resigned; a follower takes over`,
    };
  }

  /** GET /v1/health/read-ready and /v1/health/write-ready: 200 {"ready":true} or 503 {"ready":false,"reason"}. */
  routes(): PlainRoute[] {
    const route = (path: string, which: "read" | "write"): PlainRoute => ({
      method: "GET",
      path,
      handle: async (_req, res) => {
        const r = (await this.readiness())[which];
        const body = r.ready ? { ready: true, mode: this.mode } : { ready: false, reason: r.reason, mode: this.mode };
        (res as http.ServerResponse).writeHead(r.ready ? 200 : 503, { "content-type": "application/json", "cache-control": "no-store" });
        res.end(JSON.stringify(body));
      },
    });
    return [route("/v1/health/read-ready", "read"), route("/v1/health/write-ready", "write")];
  }
}
