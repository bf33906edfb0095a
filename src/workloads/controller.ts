/**
 * The workload reconcile loop: it runs on the leader only (standalone: always; with PostgreSQL:
 * from gaining leadership to losing it, each commit fenced by the epoch). Level-triggered: a
 * pass reads the whole stored state, places it with the scheduler and writes what differs, so a
 * lost signal or a failed write delays a decision, never loses one. A pass runs on every apply,
 * delete and report signal (coalesced: one pass at a time, one more after it when anything came
 * in meanwhile) and on the resync period (--workload-resync).
 *
 * A pass writes the placement and its commands in one transaction (conditional on the workload
 * version: an apply in between makes it start over), then pushes the new commands on the nodes'
 * streams. Commands not answered after --workload-resend-after are pushed again; every answer
 * to a node's ReportWorkloads also carries them, which is how an agent connected to another
 * replica (HA) or without a stream gets them.
 */
import { randomUUID } from "node:crypto";
import { fromJsonString } from "@bufbuild/protobuf";
import { WorkloadCommandSchema } from "../../gen/autonomy/v1/workloads_pb.js";
import { AbortedError, FencedError } from "../domain/errors.js";
import type { Logger } from "../observability/logger.js";
import type { Metrics } from "../observability/metrics.js";
import type { PushHub } from "../services/agent-push.js";
import { fleetById } from "../services/workload-service.js";
import type { SightingBuffer } from "../store/sightings.js";
import type { Store } from "../store/store.js";
import { DEFAULT_REPLICA_LOST_AFTER_MS, loadPlacement, type PlacementSettings, type WorkloadHooks } from "./inputs.js";
import { reconcileWrites, type ReconcileWrites } from "./reconcile.js";
import { replicaStateCounts } from "./state-counts.js";

/** --workload-resync: how often a pass runs without a signal. */
export const DEFAULT_WORKLOAD_RESYNC_MS = 10_000;
/** How long a command may go unanswered before it is pushed again. */
export const DEFAULT_COMMAND_RESEND_MS = 30_000;
/** Reports signalled within this long of one another start one pass. */
export const REPORT_COALESCE_MS = 250;
/** Answered commands are kept this long (workload_commands), then removed by a pass. */
export const ANSWERED_COMMAND_RETENTION_MS = 3_600_000;

export interface WorkloadControllerDeps {
  store: Store;
  sightings: SightingBuffer;
  push: PushHub;
  metrics: Metrics;
  logger: Logger;
  /** --node-stale-after. */
  staleAfterMs: number;
  /** --replica-lost-after. */
  lostAfterMs?: number;
  /** --workload-resync; 0: no periodic pass (signals still run one). */
  resyncMs?: number;
  resendAfterMs?: number;
  now?: () => number;
  /** Command ids; each must sort after those made before it in the same millisecond. */
  newId?: () => string;
  /** The fencing epoch of the loop's commits (Leadership.fence); unset: not fenced. */
  fence?: () => number | undefined;
  /** While this replica does not lead: tells the leader's loop that the workload state changed (src/ha/relay.ts). */
  relay?: { workloads(): void };
}

/** What one pass did. */
export interface PassResult {
  written: boolean;
  decisions: ReconcileWrites["decisions"];
  /** Commands pushed: new ones, and unanswered ones pushed again. */
  sent: number;
  resent: number;
  outcome: "ok" | "aborted" | "fenced" | "error" | "skipped";
}

const SKIPPED: PassResult = { written: false, decisions: { launch: 0, update: 0, stop: 0, unschedulable: 0, orphan: 0, relaunch: 0 }, sent: 0, resent: 0, outcome: "skipped" };

export class WorkloadController implements WorkloadHooks {
  private readonly now: () => number;
  private readonly newId: () => string;
  private readonly lostAfterMs: number;
  private leading = false;
  private stopped = false;
  private leaderSinceMs = 0;
  private timer?: NodeJS.Timeout;
  private reportTimer?: NodeJS.Timeout;
  private pass?: Promise<PassResult>;
  private again = false;
  /** When each unanswered command was last pushed by this replica. */
  private readonly pushedAt = new Map<string, number>();

  constructor(private readonly deps: WorkloadControllerDeps) {
    this.now = deps.now ?? Date.now;
    // Ids sort in the order they were made (outbox order is created_at, then id), and never repeat.
    let made = 0;
    this.newId = deps.newId ?? (() => `wc-${this.now().toString(36).padStart(9, "0")}-${(made++).toString(36).padStart(6, "0")}-${randomUUID().slice(0, 8)}`);
    this.lostAfterMs = deps.lostAfterMs ?? DEFAULT_REPLICA_LOST_AFTER_MS;
    if (!(this.lostAfterMs > 0)) throw new Error("--replica-lost-after: must be greater than 0");
  }

  isLeading(): boolean {
    return this.leading;
  }

  /**
   * Runs the loop (this replica leads). No node is lost within --replica-lost-after of this,
   * so a failover does not take the fleet's replicas for lost while their reports reach the new leader.
   */
  async start(): Promise<void> {
    if (this.stopped || this.leading) return;
    this.leading = true;
    this.leaderSinceMs = this.now();
    this.pushedAt.clear();
    const every = this.deps.resyncMs ?? DEFAULT_WORKLOAD_RESYNC_MS;
    if (every > 0) {
      this.timer = setInterval(() => this.trigger(), every);
      this.timer.unref();
    }
    await this.reconcile();
  }

  /** Stops running the loop (leadership lost); resolves once no pass runs. */
  async follow(): Promise<void> {
    this.leading = false;
    clearInterval(this.timer);
    clearTimeout(this.reportTimer);
    this.reportTimer = undefined;
    await this.pass?.catch(() => undefined);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.follow();
  }

  changed(): void {
    if (!this.leading) this.deps.relay?.workloads();
    this.trigger();
  }
  /** Reports come from every node each heartbeat: they start at most one pass per REPORT_COALESCE_MS. */
  reported(): void {
    if (!this.leading) return this.deps.relay?.workloads();
    this.relayed();
  }

  /** A follower relayed a change (src/ha/relay.ts): coalesced like reports, since they are mostly reports. */
  relayed(): void {
    if (this.reportTimer || !this.leading) return;
    this.reportTimer = setTimeout(() => {
      this.reportTimer = undefined;
      this.trigger();
    }, REPORT_COALESCE_MS);
    this.reportTimer.unref();
  }

  settings(nowMs: number): PlacementSettings {
    // A replica that does not lead loses no node: its dry runs show the placement without losses.
    const graceUntilMs = this.leading ? this.leaderSinceMs + this.lostAfterMs : nowMs + this.lostAfterMs;
    return { nowMs, staleAfterMs: this.deps.staleAfterMs, lostAfterMs: this.lostAfterMs, graceUntilMs };
  }

  private trigger(): void {
    if (!this.leading || this.stopped) return;
    void this.reconcile();
  }

  /** One pass now, or after the one running (passes never overlap). */
  reconcile(): Promise<PassResult> {
    if (!this.leading || this.stopped) return Promise.resolve(SKIPPED);
    if (this.pass) {
      this.again = true;
      return this.pass;
    }
    this.pass = this.run().finally(() => {
      this.pass = undefined;
      if (this.again) {
        this.again = false;
        this.trigger();
      }
    });
    return this.pass;
  }

  private async run(): Promise<PassResult> {
    const started = process.hrtime.bigint();
    let result: PassResult;
    try {
      result = await this.passOnce();
    } catch (err) {
      if (err instanceof AbortedError) {
        // An apply or delete committed meanwhile: pass again over the new state.
        this.again = true;
        result = { ...SKIPPED, outcome: "aborted" };
      } else if (err instanceof FencedError) {
        this.deps.logger.warn({ err: err.message }, "a workload reconcile pass was fenced: this replica no longer leads");
        result = { ...SKIPPED, outcome: "fenced" };
      } else {
        this.deps.logger.error({ err: (err as Error).message }, "a workload reconcile pass failed; the next one tries again");
        result = { ...SKIPPED, outcome: "error" };
      }
    }
    this.deps.metrics.reconcileDuration.observe({ outcome: result.outcome }, Number(process.hrtime.bigint() - started) / 1e9);
    return result;
  }

  private async passOnce(): Promise<PassResult> {
    const { store, metrics } = this.deps;
    const nowMs = this.now();
    const snapshot = await store.workloadSnapshot();
    const fleet = await fleetById(this.deps, nowMs);
    const { plan, standing } = loadPlacement(snapshot, fleet, this.settings(nowMs));
    const writes = reconcileWrites(snapshot, plan, standing, nowMs, this.newId);
    const written = writes.upserts.length + writes.removals.length + writes.commands.length > 0;
    if (!this.leading) return SKIPPED;
    if (written) {
      await store.commitPlacement({
        expectedVersion: snapshot.version,
        fenceEpoch: this.deps.fence?.(),
        atMs: nowMs,
        upserts: writes.upserts,
        removals: writes.removals,
        commands: writes.commands.map((c) => c.row),
        pruneAnsweredBeforeMs: nowMs - ANSWERED_COMMAND_RETENTION_MS,
      });
    }
    for (const [decision, n] of Object.entries(writes.decisions)) if (n > 0) metrics.schedulingDecisions.inc({ decision }, n);
    for (const [state, n] of Object.entries(replicaStateCounts(snapshot.replicas, writes))) metrics.workloadReplicas.set({ state }, n);

    for (const c of writes.commands) {
      this.deps.push.workloadCommand(c.row.nodeId, c.message);
      this.pushedAt.set(c.row.commandId, nowMs);
      metrics.workloadCommands.inc({ kind: c.row.kind, send: "first" });
    }
    const resendMs = this.deps.resendAfterMs ?? DEFAULT_COMMAND_RESEND_MS;
    const unanswered = new Set<string>();
    let resent = 0;
    for (const row of snapshot.unanswered) {
      unanswered.add(row.commandId);
      const last = this.pushedAt.get(row.commandId);
      if (last !== undefined && nowMs - last < resendMs) continue;
      this.deps.push.workloadCommand(row.nodeId, fromJsonString(WorkloadCommandSchema, row.payload));
      this.pushedAt.set(row.commandId, nowMs);
      metrics.workloadCommands.inc({ kind: row.kind, send: "resend" });
      resent++;
    }
    for (const id of this.pushedAt.keys()) if (!unanswered.has(id) && !writes.commands.some((c) => c.row.commandId === id)) this.pushedAt.delete(id);
    return { written, decisions: writes.decisions, sent: writes.commands.length, resent, outcome: "ok" };
  }
}
