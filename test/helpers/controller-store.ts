/**
 * An in-memory store for the rollout controller's unit tests: the part of the Store contract
 * the controller uses, with faults that can be injected at any call (before the call does
 * anything, or after a write landed, as when the answer of a commit is lost).
 */
import { create, toJson, type MessageInitShape } from "@bufbuild/protobuf";
import { RolloutPlanSchema } from "../../gen/autonomy/v1/rollouts_pb.js";
import { AbortedError, ConflictError, NotFoundError, StoreUnavailableError } from "../../src/domain/errors.js";
import { canonicalJson, initialPlanState, isTerminal, type PlanPhase } from "../../src/domain/rollouts.js";
import { rowToAck, rowToNode, type AckRow, type NodeRow } from "../../src/store/fleet-rows.js";
import {
  stateToRow,
  type AuditRow,
  type MoveRow,
  type PlanRow,
  type RolloutChange,
  type RolloutRecord,
  type StageNodeRow,
} from "../../src/store/rollout-rows.js";
import { planStageOpening, type OpenedStage, type StageOpening } from "../../src/store/rollout-opening.js";
import type { NodeQuery, RolloutQuery, Store } from "../../src/store/store.js";
import { NO_STOP, type EmergencyStopRow } from "../../src/store/operation-rows.js";

/** An injected failure: thrown before the call (`after` false) or once a write landed (`after` true). */
export class InjectedFault extends Error {
  constructor(method: string) {
    super(`injected fault in ${method}`);
  }
}

interface Fault {
  method: string;
  /** Calls of the method to let through first. */
  skip: number;
  after: boolean;
}

export class FakeRolloutStore {
  readonly dialect = "sqlite" as const;
  readonly nodes = new Map<string, NodeRow>();
  readonly acks = new Map<string, AckRow>();
  readonly plans = new Map<string, PlanRow>();
  readonly statuses = new Map<string, RolloutRecord["status"]>();
  readonly moves: MoveRow[] = [];
  readonly audit: AuditRow[] = [];
  /** Events by type: [nodeId, seq] pairs. */
  readonly events: { eventType: string; nodeId: string; seq: number }[] = [];
  /** Every call, by method name, in order. */
  readonly calls: string[] = [];
  private faults: Fault[] = [];
  private callFault?: { index: number; after: boolean };
  /** While set, commitRollout waits for it before writing (a slow database). */
  commitGate?: Promise<void>;
  private closed = false;

  /** The Store the controller is given (only the methods below exist). */
  asStore(): Store {
    return this as unknown as Store;
  }

  /** Makes the (skip+1)-th next call of `method` fail. */
  failOn(method: string, opts: { skip?: number; after?: boolean } = {}): void {
    this.faults.push({ method, skip: opts.skip ?? 0, after: opts.after ?? false });
  }

  private quiet = false;

  /** Runs fn (the test's own reads) without recording its calls or injecting faults into them. */
  async unobserved<T>(fn: () => Promise<T>): Promise<T> {
    this.quiet = true;
    try {
      return await fn();
    } finally {
      this.quiet = false;
    }
  }

  /** Makes the call at this position of `calls` (0-based, any method) fail. */
  failAtCall(index: number, after = false): void {
    this.callFault = { index, after };
  }

  clearFaults(): void {
    this.faults = [];
    this.callFault = undefined;
  }

  close(): void {
    this.closed = true;
  }

  private enter(method: string): Fault | undefined {
    if (this.quiet) return undefined;
    this.calls.push(method);
    if (this.closed) throw new StoreUnavailableError("the store is closed");
    if (this.callFault?.index === this.calls.length - 1) {
      const after = this.callFault.after;
      this.callFault = undefined;
      if (!after) throw new InjectedFault(method);
      return { method, skip: 0, after };
    }
    const i = this.faults.findIndex((f) => f.method === method);
    if (i < 0) return undefined;
    const f = this.faults[i];
    if (f.skip > 0) {
      f.skip--;
      return undefined;
    }
    this.faults.splice(i, 1);
    if (!f.after) throw new InjectedFault(method);
    return f;
  }

  private leave(method: string, fault: Fault | undefined): void {
    if (fault) throw new InjectedFault(method);
  }

  // -- set-up ---------------------------------------------------------------------------

  addNode(nodeId: string, opts: { channel?: string; labels?: Record<string, string>; lastSeenMs?: number | null; drained?: boolean } = {}): void {
    this.nodes.set(nodeId, {
      nodeId,
      channel: opts.channel ?? "c",
      labels: JSON.stringify(opts.labels ?? {}),
      agentVersion: "t",
      enrolledAtMs: 0,
      lastSeenMs: opts.lastSeenMs === undefined ? 0 : opts.lastSeenMs,
      reportedReleaseId: null,
      desiredReleaseId: null,
      drained: opts.drained ?? false,
      drainReason: "",
      divergedSinceMs: null,
      pinnedReleaseId: null,
      pinnedAtMs: null,
      pinReason: "",
      reapplyReleaseId: null,
      reapplyRequestedAtMs: null,
    });
  }

  /** Stores an ack as the ack path would; returns the ack message the controller is told of. */
  putAck(releaseId: string, nodeId: string, state: string, atMs: number) {
    const row: AckRow = { releaseId, nodeId, state, message: "", reportedReleaseId: state === "healthy" ? releaseId : "", observedAtMs: atMs, updatedAtMs: atMs };
    this.acks.set(`${releaseId}\n${nodeId}`, row);
    const node = this.nodes.get(nodeId);
    if (node) node.lastSeenMs = Math.max(node.lastSeenMs ?? 0, atMs);
    return rowToAck(row);
  }

  /** Publishes a plan (channel "c", release "r" unless given) as createRollout would. */
  publish(init: MessageInitShape<typeof RolloutPlanSchema>, nowMs = 0): RolloutRecord {
    const plan = create(RolloutPlanSchema, { releaseId: "r", channel: "c", ...init });
    const spec = canonicalJson(toJson(RolloutPlanSchema, plan, { useProtoFieldName: true }));
    const row: PlanRow = { planId: plan.planId, releaseId: plan.releaseId, channel: plan.channel, spec, signature: "", keyId: "", createdAtMs: nowMs };
    this.plans.set(plan.planId, row);
    this.statuses.set(plan.planId, stateToRow(initialPlanState(plan, nowMs)));
    return { plan: row, status: this.statuses.get(plan.planId)! };
  }

  movesOf(planId: string, stageId?: string): string[] {
    return this.moves.filter((m) => m.planId === planId && (m.kind ?? "move") === "move" && (stageId === undefined || m.stageId === stageId)).map((m) => m.nodeId);
  }

  // -- the Store methods the controller uses ---------------------------------------------

  /** The emergency stop: none here (test/operations-store.test.ts covers the stores' stop). */
  async emergencyStop(): Promise<EmergencyStopRow> {
    return NO_STOP;
  }

  async getRollout(planId: string): Promise<RolloutRecord | undefined> {
    this.leave("getRollout", this.enter("getRollout"));
    const plan = this.plans.get(planId);
    return plan && { plan, status: { ...this.statuses.get(planId)! } };
  }

  async listRollouts(q: RolloutQuery): Promise<RolloutRecord[]> {
    this.leave("listRollouts", this.enter("listRollouts"));
    return [...this.plans.values()]
      .filter((p) => !q.unfinished || !isTerminal(this.statuses.get(p.planId)!.phase as PlanPhase))
      .map((plan) => ({ plan, status: { ...this.statuses.get(plan.planId)! } }));
  }

  async commitRollout(change: RolloutChange): Promise<void> {
    const fault = this.enter("commitRollout");
    await this.commitGate;
    const current = this.statuses.get(change.status.planId);
    if (!current) throw new NotFoundError(`plan "${change.status.planId}" not found`);
    if (current.version !== change.expectedVersion) throw new AbortedError(`plan at version ${current.version}, not ${change.expectedVersion}`);
    for (const m of change.moves) {
      if (this.moves.some((x) => x.planId === m.planId && x.nodeId === m.nodeId && (x.kind ?? "move") === (m.kind ?? "move"))) {
        throw new ConflictError(`node "${m.nodeId}" moved twice by plan "${m.planId}"`);
      }
    }
    this.statuses.set(change.status.planId, { ...change.status });
    this.moves.push(...change.moves.map((m) => ({ ...m })));
    this.audit.push(...change.audit);
    this.leave("commitRollout", fault);
  }

  async openRolloutStage(o: StageOpening): Promise<OpenedStage | undefined> {
    const fault = this.enter("openRolloutStage");
    const plan = this.plans.get(o.planId);
    const current = this.statuses.get(o.planId);
    if (!plan || !current) throw new NotFoundError(`plan "${o.planId}" not found`);
    if (current.version !== o.expectedVersion) throw new AbortedError(`plan at version ${current.version}, not ${o.expectedVersion}`);
    const fleet = [...this.nodes.values()].filter((n) => n.channel === plan.channel).sort((a, b) => (a.nodeId < b.nodeId ? -1 : 1));
    const taken = new Set(this.movesOf(o.planId));
    const planned = planStageOpening(plan, o, fleet, taken, () => BigInt(this.events.length));
    if (!planned) {
      this.leave("openRolloutStage", fault);
      return undefined;
    }
    for (const m of planned.moves) if (taken.has(m.nodeId)) throw new ConflictError(`node "${m.nodeId}" moved twice by plan "${m.planId}"`);
    this.statuses.set(o.planId, { ...planned.status });
    this.moves.push(...planned.moves);
    this.audit.push(planned.audit);
    this.leave("openRolloutStage", fault);
    return { status: { ...planned.status }, nodeIds: planned.moves.map((m) => m.nodeId) };
  }

  async movesOfPlan(planId: string): Promise<MoveRow[]> {
    this.leave("movesOfPlan", this.enter("movesOfPlan"));
    return this.moves.filter((m) => m.planId === planId && (m.kind ?? "move") === "move").map((m) => ({ ...m }));
  }

  /** The rule of src/store/rollout-restore.ts over the rows in memory. */
  async restoreProgress(planId: string) {
    this.leave("restoreProgress", this.enter("restoreProgress"));
    let nodes = 0;
    let restored = 0;
    let failed = 0;
    for (const m of this.moves) {
      if (m.planId !== planId || m.kind !== "restore") continue;
      nodes++;
      const ack = this.acks.get(`${m.releaseId}\n${m.nodeId}`);
      const node = this.nodes.get(m.nodeId);
      const fresh = ack !== undefined && ack.updatedAtMs >= m.movedAtMs;
      if (m.releaseId === "" || (fresh && ack.state === "healthy" && ack.reportedReleaseId === m.releaseId) || (node?.reportedReleaseId === m.releaseId && (node.lastSeenMs ?? -1) >= m.movedAtMs)) restored++;
      else if (fresh && (ack.state === "failed" || ack.state === "rolled_back")) failed++;
    }
    return { nodes, restored, failed };
  }

  async planMovedNode(planId: string, nodeId: string): Promise<boolean> {
    this.leave("planMovedNode", this.enter("planMovedNode"));
    return this.moves.some((m) => m.planId === planId && m.nodeId === nodeId);
  }

  async stageNodes(q: { planId: string; stageId: string; releaseId: string; afterNodeId?: string; limit: number }): Promise<StageNodeRow[]> {
    this.leave("stageNodes", this.enter("stageNodes"));
    return this.moves
      .filter((m) => m.planId === q.planId && (m.kind ?? "move") === "move" && m.stageId === q.stageId && (q.afterNodeId === undefined || m.nodeId > q.afterNodeId))
      .sort((a, b) => (a.nodeId < b.nodeId ? -1 : 1))
      .slice(0, q.limit)
      .map((m) => {
        const ack = this.acks.get(`${q.releaseId}\n${m.nodeId}`);
        const seen = this.nodes.get(m.nodeId)?.lastSeenMs;
        return {
          nodeId: m.nodeId,
          movedAtMs: m.movedAtMs,
          ackState: ack?.state,
          ackReportedReleaseId: ack?.reportedReleaseId,
          ackUpdatedAtMs: ack?.updatedAtMs,
          lastSeenMs: seen ?? undefined,
        };
      });
  }

  async acksOfRelease(releaseId: string) {
    this.leave("acksOfRelease", this.enter("acksOfRelease"));
    return [...this.acks.values()].filter((a) => a.releaseId === releaseId).map(rowToAck);
  }

  async listNodes(q: NodeQuery) {
    this.leave("listNodes", this.enter("listNodes"));
    const rows = [...this.nodes.values()]
      .filter((n) => (q.channel === undefined || n.channel === q.channel) && (q.afterNodeId === undefined || n.nodeId > q.afterNodeId))
      .sort((a, b) => (a.nodeId < b.nodeId ? -1 : 1));
    return (q.limit === undefined ? rows : rows.slice(0, q.limit)).map(rowToNode);
  }

  async eventCountsSince(eventType: string, afterSeq: bigint): Promise<Map<string, number>> {
    this.leave("eventCountsSince", this.enter("eventCountsSince"));
    const out = new Map<string, number>();
    for (const e of this.events) if (e.eventType === eventType && e.seq > Number(afterSeq)) out.set(e.nodeId, (out.get(e.nodeId) ?? 0) + 1);
    return out;
  }

  async newestEventSeq(): Promise<bigint> {
    this.leave("newestEventSeq", this.enter("newestEventSeq"));
    return BigInt(this.events.length);
  }

  async recordSightings(): Promise<void> {}
}
