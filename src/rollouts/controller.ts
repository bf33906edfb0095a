/**
 * The rollout controller: it moves a plan's nodes stage by stage and halts it when a gate
 * fails hard.
 *
 * It is event-driven. A plan is re-evaluated when something that can change its gates
 * happens: an ack for the plan's release from a node of its open stage, a sighting of a
 * node counted unreachable, an event of a gated type from a stage node, or a timer (a soak
 * ending, the periodic liveness check of nodes that have not acked). Counts are kept up to
 * date one ack at a time, so an evaluation costs the same whatever the size of the fleet.
 *
 * Every decision is one transaction: the new status, the nodes it moves and the audit
 * record (Store.commitRollout, conditional on the status version). State in memory is
 * rebuilt from the store on start, so a restart in the middle of a stage neither moves a
 * node twice (a node is moved once per plan, enforced by the database) nor loses a decision.
 */
import type { NodeAck } from "../../gen/autonomy/v1/releases_pb.js";
import type { Event } from "../../gen/autonomy/v1/events_pb.js";
import type { RolloutPlan } from "../../gen/autonomy/v1/rollouts_pb.js";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { AbortedError, FailedPreconditionError, NotFoundError } from "../domain/errors.js";
import { livenessOf } from "../domain/nodes.js";
import {
  ACTION_EVENT_NAMES,
  evaluateStage,
  gatedEventType,
  isTerminal,
  selectStageNodes,
  transition,
  type Action,
  type PlanState,
  type StageEvaluation,
  type StageTally,
} from "../domain/rollouts.js";
import type { Logger } from "../observability/logger.js";
import type { Metrics } from "../observability/metrics.js";
import { nodeView } from "../services/node-service.js";
import type { NodeSighting } from "../store/fleet-rows.js";
import { rowToPlan, rowToState, stateToRow, type MoveRow, type PlanRow, type RolloutRecord } from "../store/rollout-rows.js";
import type { SightingBuffer } from "../store/sightings.js";
import type { Store } from "../store/store.js";
import { auditRecord, type Actor } from "../services/audit-record.js";

export interface ControllerDeps {
  store: Store;
  sightings: SightingBuffer;
  metrics: Metrics;
  logger: Logger;
  /** --node-stale-after: a stage node without a final ack and not seen for longer is unreachable. */
  staleAfterMs: number;
  now?: () => number;
}


export const CONTROLLER_ACTOR: Actor = { actor: "system:rollout-controller", source: "controller" };

type AckClass = "healthy" | "failed" | "other";

interface NodeTrack {
  ack: AckClass;
  ackUpdatedMs: number;
  lastSeenMs?: number;
  unreachable: boolean;
}

/** An unfinished plan as the controller keeps it. */
interface Runtime {
  plan: RolloutPlan;
  row: PlanRow;
  state: PlanState;
  /** Nodes this plan moved, any stage. */
  taken: Set<string>;
  /** Nodes of the current stage. */
  nodes: Map<string, NodeTrack>;
  tally: StageTally;
  gatedType?: string;
  /** While the stage's counts are read from the store, acks are held here and applied after. */
  building?: NodeAck[];
  /** What opening a stage learnt about the channel's nodes, for tracking it once it is written. */
  opened?: { stageId: string; lastSeen: ReadonlyMap<string, number | undefined> };
  /** Set when the gated event count must be read again from the store. */
  recount?: boolean;
  chain: Promise<unknown>;
  scheduled: boolean;
  wake?: NodeJS.Timeout;
  sweep?: NodeJS.Timeout;
}

const emptyTally = (): StageTally => ({ nodeCount: 0, healthy: 0, failed: 0, unreachable: 0, gatedEvents: 0 });

function classify(ack: NodeAck, releaseId: string): AckClass {
  if (ack.state === "healthy" && ack.reportedReleaseId === releaseId) return "healthy";
  if (ack.state === "failed" || ack.state === "rolled_back") return "failed";
  return "other";
}

/** The result of an operator action. */
export interface ActionResult {
  state: PlanState;
  fromPhase: string;
  moved: MoveRow[];
  /** For approve: whether the stage advanced. */
  promoted?: boolean;
  message: string;
}

export interface ActionRequest extends Actor {
  reason: string;
  expectedVersion?: number;
  /** approve: the stage approved. recover: when set, it must be the current stage. */
  stageId?: string;
  dryRun?: boolean;
}

export class RolloutController {
  private readonly runtimes = new Map<string, Runtime>();
  private readonly now: () => number;
  private stopped = false;
  /** Plans whose gate types include an event type: the ingest path checks this first. */
  private readonly gatedTypes = new Map<string, Set<Runtime>>();

  constructor(private readonly deps: ControllerDeps) {
    this.now = deps.now ?? Date.now;
    deps.sightings.subscribe((s) => this.onSighting(s));
  }

  /** Loads every unfinished plan and evaluates it. */
  async start(): Promise<void> {
    for (const record of await this.deps.store.listRollouts({ unfinished: true })) {
      await this.load(record);
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const rt of this.runtimes.values()) {
      clearTimeout(rt.wake);
      clearInterval(rt.sweep);
    }
    await Promise.allSettled([...this.runtimes.values()].map((rt) => rt.chain));
    this.runtimes.clear();
  }

  /** A plan just published: track it and start it. */
  async track(record: RolloutRecord): Promise<void> {
    await this.load(record);
  }

  /** The live counts of a plan's stage, when the controller tracks it. */
  liveTally(planId: string, stageIndex: number): StageTally | undefined {
    const rt = this.runtimes.get(planId);
    return rt && rt.state.currentStage === stageIndex ? { ...rt.tally } : undefined;
  }

  /** Resolves when the plan has no evaluation or action queued (benchmarks and tests wait on it). */
  async settled(planId: string): Promise<void> {
    for (let rt = this.runtimes.get(planId); rt; rt = this.runtimes.get(planId)) {
      const chain = rt.chain;
      await chain;
      if (rt.chain === chain && !rt.scheduled) return;
    }
  }

  /** The current status of a tracked plan (newer than the store's only by nothing: it is written first). */
  trackedState(planId: string): PlanState | undefined {
    return this.runtimes.get(planId)?.state;
  }

  /** Evaluates a stage's gates now (without acting on them). */
  evaluate(record: RolloutRecord, stageIndex: number): StageEvaluation {
    const rt = this.runtimes.get(record.plan.planId);
    const plan = rt?.plan ?? rowToPlan(record.plan);
    const state = rt?.state ?? rowToState(record.status, record.plan.createdAtMs);
    const stageState = state.stages[stageIndex];
    const tally = (rt && state.currentStage === stageIndex ? rt.tally : stageState.tally) ?? emptyTally();
    return evaluateStage(plan.stages[stageIndex], stageState, tally, this.now());
  }

  // ---------------------------------------------------------------------------------------
  // Signals.

  /** An ack the store kept (not a stale one). */
  onAck(ack: NodeAck): void {
    for (const rt of this.runtimes.values()) {
      if (rt.plan.releaseId !== ack.releaseId) continue;
      if (rt.building) {
        if (rt.taken.has(ack.nodeId)) rt.building.push(ack);
        continue;
      }
      if (this.applyAck(rt, ack)) this.schedule(rt);
    }
  }

  /**
   * Events just stored, counted for event_rate gates of open stages. When some of the batch
   * were duplicates (allNew false), which ones is unknown here: the plans they may concern
   * count again from the store.
   */
  onEvents(events: readonly Event[], allNew: boolean): void {
    if (this.gatedTypes.size === 0) return;
    for (const e of events) {
      const plans = this.gatedTypes.get(e.eventType);
      if (!plans) continue;
      for (const rt of plans) {
        if (rt.building || !rt.nodes.has(e.nodeId)) continue;
        if (allNew) rt.tally.gatedEvents++;
        else rt.recount = true;
        this.schedule(rt);
      }
    }
  }

  /** Counts the open stage's gated events again from the store. */
  private async recountEvents(rt: Runtime): Promise<void> {
    rt.recount = false;
    const stage = rt.state.stages[rt.state.currentStage];
    if (rt.gatedType === undefined || stage?.openedEventSeq === undefined) return;
    const counts = await this.deps.store.eventCountsSince(rt.gatedType, BigInt(stage.openedEventSeq));
    let total = 0;
    for (const nodeId of rt.nodes.keys()) total += counts.get(nodeId) ?? 0;
    rt.tally.gatedEvents = total;
  }

  private onSighting(s: NodeSighting): void {
    for (const rt of this.runtimes.values()) {
      const track = rt.nodes.get(s.nodeId);
      if (!track) continue;
      track.lastSeenMs = Math.max(track.lastSeenMs ?? 0, s.lastSeenMs);
      if (track.unreachable) {
        track.unreachable = false;
        rt.tally.unreachable--;
        this.schedule(rt);
      }
    }
  }

  /** Updates a stage's counts with one ack; true when they changed. */
  private applyAck(rt: Runtime, ack: NodeAck): boolean {
    const track = rt.nodes.get(ack.nodeId);
    if (!track) return false;
    const updatedMs = ack.updatedAt ? timestampMs(ack.updatedAt) : this.now();
    if (updatedMs < track.ackUpdatedMs) return false;
    const next = classify(ack, rt.plan.releaseId);
    track.ackUpdatedMs = updatedMs;
    track.lastSeenMs = Math.max(track.lastSeenMs ?? 0, updatedMs);
    const t = rt.tally;
    if (track.unreachable) {
      track.unreachable = false;
      t.unreachable--;
    }
    if (next === track.ack) return false;
    if (track.ack !== "other") t[track.ack]--;
    if (next !== "other") t[next]++;
    track.ack = next;
    t.settledAtMs = t.healthy + t.failed === t.nodeCount ? updatedMs : undefined;
    return true;
  }

  /** Marks stage nodes without a final ack that have not been seen lately as unreachable. */
  private sweepLiveness(rt: Runtime): void {
    const cutoff = this.now() - this.deps.staleAfterMs;
    let changed = false;
    for (const track of rt.nodes.values()) {
      const unreachable = track.ack === "other" && (track.lastSeenMs ?? 0) < cutoff;
      if (unreachable !== track.unreachable) {
        track.unreachable = unreachable;
        rt.tally.unreachable += unreachable ? 1 : -1;
        changed = true;
      }
    }
    if (changed) this.schedule(rt);
  }

  // ---------------------------------------------------------------------------------------
  // Loading and tracking.

  private async load(record: RolloutRecord): Promise<void> {
    if (this.stopped || this.runtimes.has(record.plan.planId)) return;
    const moves = await this.deps.store.movesOfPlan(record.plan.planId);
    const rt: Runtime = {
      plan: rowToPlan(record.plan),
      row: record.plan,
      state: rowToState(record.status, record.plan.createdAtMs),
      taken: new Set(moves.map((m) => m.nodeId)),
      nodes: new Map(),
      tally: emptyTally(),
      chain: Promise.resolve(),
      scheduled: false,
    };
    this.runtimes.set(rt.plan.planId, rt);
    await this.trackStage(rt, moves);
    this.schedule(rt);
  }

  /**
   * Reads the current stage's nodes, acks and gated events from the store. A stage just
   * opened passes what its opening knew (its moves, its nodes' last-seen times), which spares
   * reading every node of the channel again.
   */
  private async trackStage(rt: Runtime, moves?: readonly MoveRow[], lastSeen?: ReadonlyMap<string, number | undefined>): Promise<void> {
    this.untrackGatedType(rt);
    clearInterval(rt.sweep);
    rt.nodes = new Map();
    rt.tally = emptyTally();
    const index = rt.state.currentStage;
    if (index < 0 || isTerminal(rt.state.phase)) return;
    const stage = rt.plan.stages[index];
    const stageState = rt.state.stages[index];
    rt.building = [];
    try {
      const { store, sightings } = this.deps;
      const [allMoves, acks, seen] = await Promise.all([
        moves ?? store.movesOfPlan(rt.plan.planId),
        store.acksOfRelease(rt.plan.releaseId),
        lastSeen ??
          store
            .listNodes({ channel: rt.row.channel })
            .then((nodes) => new Map(nodes.map((n) => [n.nodeId, livenessOf(sightings.overlay(n)).lastSeenMs]))),
      ]);
      for (const m of allMoves) {
        if (m.stageId !== stage.stageId) continue;
        rt.nodes.set(m.nodeId, { ack: "other", ackUpdatedMs: 0, lastSeenMs: seen.get(m.nodeId) ?? m.movedAtMs, unreachable: false });
      }
      rt.tally.nodeCount = rt.nodes.size;
      for (const ack of acks) this.applyAck(rt, ack);
      rt.gatedType = gatedEventType(stage);
      if (rt.gatedType !== undefined && stageState.openedEventSeq !== undefined) {
        const counts = await store.eventCountsSince(rt.gatedType, BigInt(stageState.openedEventSeq));
        for (const nodeId of rt.nodes.keys()) rt.tally.gatedEvents += counts.get(nodeId) ?? 0;
      }
    } finally {
      const held = rt.building ?? [];
      rt.building = undefined;
      for (const ack of held) this.applyAck(rt, ack);
    }
    if (rt.tally.nodeCount === 0 || rt.tally.healthy + rt.tally.failed === rt.tally.nodeCount) {
      rt.tally.settledAtMs ??= stageState.openedAtMs ?? this.now();
    }
    if (rt.gatedType !== undefined) {
      let set = this.gatedTypes.get(rt.gatedType);
      if (!set) this.gatedTypes.set(rt.gatedType, (set = new Set()));
      set.add(rt);
    }
    this.sweepLiveness(rt);
    const every = Math.max(1000, Math.floor(this.deps.staleAfterMs / 4));
    rt.sweep = setInterval(() => this.sweepLiveness(rt), every);
    rt.sweep.unref();
  }

  private untrackGatedType(rt: Runtime): void {
    if (rt.gatedType === undefined) return;
    const set = this.gatedTypes.get(rt.gatedType);
    set?.delete(rt);
    if (set?.size === 0) this.gatedTypes.delete(rt.gatedType);
    rt.gatedType = undefined;
  }

  private drop(rt: Runtime): void {
    clearTimeout(rt.wake);
    clearInterval(rt.sweep);
    this.untrackGatedType(rt);
    this.runtimes.delete(rt.plan.planId);
  }

  // ---------------------------------------------------------------------------------------
  // Evaluation: serialised per plan, coalesced while one is queued.

  private schedule(rt: Runtime): void {
    if (rt.scheduled || this.stopped) return;
    rt.scheduled = true;
    rt.chain = rt.chain
      .then(() => {
        rt.scheduled = false;
        return this.progress(rt);
      })
      .catch((err: unknown) => this.onError(rt, err));
  }

  /** Runs fn after whatever the plan has queued, and before anything queued later. */
  private exclusive<T>(rt: Runtime, fn: () => Promise<T>): Promise<T> {
    const result = rt.chain.then(fn);
    rt.chain = result.catch(() => undefined);
    return result;
  }

  private async onError(rt: Runtime, err: unknown): Promise<void> {
    if (err instanceof AbortedError) {
      // Another writer changed the plan: start again from what the store holds.
      this.deps.logger.info({ plan_id: rt.plan.planId }, "rollout status changed elsewhere; reloading the plan");
      await this.reload(rt);
      return;
    }
    this.deps.logger.error({ plan_id: rt.plan.planId, err: (err as Error).message }, "rollout evaluation failed; retrying shortly");
    clearTimeout(rt.wake);
    rt.wake = setTimeout(() => this.schedule(rt), 5000);
    rt.wake.unref();
  }

  private async reload(rt: Runtime): Promise<void> {
    this.drop(rt);
    const record = await this.deps.store.getRollout(rt.plan.planId);
    if (record && !isTerminal(record.status.phase as PlanState["phase"])) await this.load(record);
  }

  /** One step of the machine: start, halt, or advance while gates pass. */
  private async progress(rt: Runtime): Promise<void> {
    if (this.stopped || this.runtimes.get(rt.plan.planId) !== rt) return;
    if (rt.state.phase === "published") {
      await this.commit(rt, "start", CONTROLLER_ACTOR, "", (draft) => this.openStage(rt, draft, 0));
      this.schedule(rt);
      return;
    }
    if (rt.state.phase !== "active" || rt.state.currentStage < 0) return;
    if (rt.recount) await this.recountEvents(rt);
    this.deps.metrics.rolloutEvaluations.inc();
    const index = rt.state.currentStage;
    const ev = evaluateStage(rt.plan.stages[index], rt.state.stages[index], rt.tally, this.now());
    clearTimeout(rt.wake);
    if (ev.halt !== undefined) {
      const reason = ev.halt;
      await this.commit(rt, "auto_halt", CONTROLLER_ACTOR, reason, (draft) => {
        draft.stages[index].phase = "halted";
        draft.reason = reason;
        return Promise.resolve([]);
      });
      this.deps.logger.warn({ plan_id: rt.plan.planId, reason }, "rollout halted by its gate");
      return;
    }
    if (ev.allPassed) {
      await this.commit(rt, "advance", CONTROLLER_ACTOR, "", (draft) => this.closeStage(rt, draft, "passed", "every gate passed"));
      this.schedule(rt);
      return;
    }
    if (ev.wakeAtMs !== undefined) {
      rt.wake = setTimeout(() => this.schedule(rt), Math.max(0, ev.wakeAtMs - this.now()) + 5);
      rt.wake.unref();
    }
  }

  /** Opens stage `index` in a draft: selects its nodes among HEALTHY ones and returns their moves. */
  private async openStage(rt: Runtime, draft: PlanState, index: number): Promise<MoveRow[]> {
    const { store, sightings, staleAfterMs } = this.deps;
    const nowMs = this.now();
    const stage = rt.plan.stages[index];
    const seen = new Map<string, number | undefined>();
    const fleet = (await store.listNodes({ channel: rt.row.channel })).map((n) => {
      const node = nodeView(n, sightings, nowMs, staleAfterMs);
      seen.set(node.nodeId, livenessOf(node).lastSeenMs);
      return { nodeId: node.nodeId, labels: node.labels, healthy: node.lifecycle === "HEALTHY" };
    });
    const selection = selectStageNodes(rt.plan.planId, stage, fleet, rt.taken);
    rt.opened = { stageId: stage.stageId, lastSeen: seen };
    const eventSeq = gatedEventType(stage) === undefined ? undefined : String(await store.newestEventSeq());
    draft.currentStage = index;
    draft.stages[index] = {
      ...draft.stages[index],
      phase: "open",
      nodeCount: selection.nodeIds.length,
      openedAtMs: nowMs,
      openedEventSeq: eventSeq,
      detail: selection.detail,
    };
    return selection.nodeIds.map((nodeId) => ({
      planId: rt.plan.planId,
      stageId: stage.stageId,
      nodeId,
      releaseId: rt.plan.releaseId,
      movedAtMs: nowMs,
    }));
  }

  /** Closes the current stage in a draft and opens the next one, or completes the plan. */
  private async closeStage(rt: Runtime, draft: PlanState, phase: "passed" | "skipped", detail: string): Promise<MoveRow[]> {
    const index = draft.currentStage;
    const stage = draft.stages[index];
    stage.phase = phase;
    stage.closedAtMs = this.now();
    stage.detail = [stage.detail, detail].filter(Boolean).join("; ");
    stage.tally = { ...rt.tally };
    if (index + 1 >= draft.stages.length) {
      draft.phase = "completed";
      draft.reason = "every stage passed";
      return [];
    }
    draft.phase = "active";
    return this.openStage(rt, draft, index + 1);
  }

  /**
   * Writes one transition: the status (version + 1) with the moves `change` returns and the
   * audit record, in one transaction, conditional on the version read. Then brings memory
   * in line with it.
   */
  private async commit(
    rt: Runtime,
    action: Action,
    who: Actor,
    reason: string,
    change: (draft: PlanState) => Promise<MoveRow[]>,
    expectedVersion?: number,
    dryRun = false,
  ): Promise<{ draft: PlanState; moves: MoveRow[] }> {
    const before = rt.state;
    if (expectedVersion !== undefined && expectedVersion !== before.version) {
      throw new AbortedError(
        `plan "${before.planId}" is at version ${before.version}, not ${expectedVersion}: it changed since it was read`,
      );
    }
    const nextPhase = transition(before.phase, action);
    const draft: PlanState = structuredClone(before);
    draft.phase = nextPhase;
    if (draft.currentStage >= 0 && draft.stages[draft.currentStage].phase === "open") {
      draft.stages[draft.currentStage].tally = { ...rt.tally };
    }
    const moves = await change(draft);
    if (dryRun) {
      rt.opened = undefined;
      return { draft, moves };
    }
    draft.version = before.version + 1;
    draft.updatedAtMs = this.now();
    const audit = auditRecord(
      who,
      {
        eventName: ACTION_EVENT_NAMES[action],
        category: action === "rollback" ? "rollback" : "rollout",
        action,
        resourceType: "rollout_plan",
        resource: before.planId,
        fields: {
          from_phase: before.phase,
          to_phase: draft.phase,
          version: draft.version,
          stage_id: draft.currentStage >= 0 ? draft.stages[draft.currentStage].stageId : "",
          moved_nodes: moves.length,
        },
        reason,
      },
      draft.updatedAtMs,
    );
    await this.deps.store.commitRollout({ expectedVersion: before.version, status: stateToRow(draft), moves, audit: [audit] });
    this.deps.metrics.rolloutTransitions.inc({ action, phase: draft.phase });
    rt.state = draft;
    for (const m of moves) rt.taken.add(m.nodeId);
    if (isTerminal(draft.phase)) this.drop(rt);
    else if (draft.currentStage !== before.currentStage) {
      const opened = rt.opened?.stageId === draft.stages[draft.currentStage].stageId ? rt.opened : undefined;
      await this.trackStage(rt, opened && moves, opened?.lastSeen);
    }
    rt.opened = undefined;
    return { draft, moves };
  }

  // ---------------------------------------------------------------------------------------
  // Operator actions.

  /** Applies an operator action or recovery strategy to a plan; FailedPrecondition when its phase forbids it. */
  async act(planId: string, action: Action, req: ActionRequest): Promise<ActionResult> {
    const rt = this.runtimes.get(planId);
    if (!rt) {
      const record = await this.deps.store.getRollout(planId);
      if (!record) throw new NotFoundError(`rollout plan "${planId}" not found`);
      const phase = record.status.phase as PlanState["phase"];
      if (isTerminal(phase)) transition(phase, action); // throws: a finished plan allows nothing
      await this.load(record);
      return this.act(planId, action, req);
    }
    return this.exclusive(rt, () => this.actNow(rt, action, req));
  }

  private async actNow(rt: Runtime, action: Action, req: ActionRequest): Promise<ActionResult> {
    const fromPhase = rt.state.phase;
    const index = rt.state.currentStage;
    const current = index >= 0 ? rt.state.stages[index] : undefined;
    if (req.stageId !== undefined && req.stageId !== "" && current?.stageId !== req.stageId) {
      const known = rt.state.stages.some((s) => s.stageId === req.stageId);
      if (!known) throw new NotFoundError(`plan "${rt.plan.planId}" has no stage "${req.stageId}"`);
      throw new FailedPreconditionError(
        `stage "${req.stageId}" is not the plan's current stage${current ? ` ("${current.stageId}" is)` : " (no stage has opened yet)"}`,
      );
    }
    const who: Actor = { actor: req.actor, source: req.source };
    const note = (verb: string) => `${verb} by ${req.actor}: ${req.reason}`;
    let message = "";
    let promoted: boolean | undefined;
    const change = (draft: PlanState): Promise<MoveRow[]> => {
      const stage = draft.currentStage >= 0 ? draft.stages[draft.currentStage] : undefined;
      switch (action) {
        case "pause":
        case "halt":
          draft.reason = req.reason;
          if (action === "halt" && stage?.phase === "open") stage.phase = "halted";
          message = `plan ${action === "pause" ? "paused" : "halted"}`;
          return Promise.resolve([]);
        case "resume":
        case "retry":
          draft.reason = "";
          if (draft.currentStage < 0) return this.openStage(rt, draft, 0);
          if (stage?.phase === "halted") stage.phase = "open";
          message = "plan active again; its stage is re-evaluated";
          return Promise.resolve([]);
        case "promote":
          message = "stage promoted";
          return this.closeStage(rt, draft, "passed", note("promoted"));
        case "skip_failed":
          message = "stage skipped past its failures";
          return this.closeStage(rt, draft, "skipped", note("skipped"));
        case "cancel":
        case "rollback":
          draft.reason = req.reason;
          if (stage?.phase === "open") stage.phase = "halted";
          message =
            action === "cancel"
              ? "plan cancelled; nodes already moved keep the release"
              : "plan rolled back: no further node is moved; the nodes already moved are listed";
          return Promise.resolve([]);
        case "approve":
          if (stage === undefined || stage.phase !== "open") {
            throw new FailedPreconditionError(`stage "${req.stageId}" is ${stage?.phase ?? "not open"}; only the open stage can be approved`);
          }
          if (!rt.plan.stages[draft.currentStage].gates.some((g) => g.kind === "manual")) {
            throw new FailedPreconditionError(`stage "${stage.stageId}" has no manual gate`);
          }
          stage.manualApproved = true;
          return Promise.resolve([]);
        default:
          throw new FailedPreconditionError(`${action} is taken by the controller only`);
      }
    };
    if (action === "approve" && current?.manualApproved) {
      return { state: rt.state, fromPhase, moved: [], promoted: false, message: `stage "${current.stageId}" was already approved` };
    }
    const { draft } = await this.commit(rt, action, who, req.reason, change, req.expectedVersion, req.dryRun);
    if (req.dryRun) {
      const moved = await this.deps.store.movesOfPlan(rt.plan.planId);
      return { state: draft, fromPhase, moved, message: `would ${action}: ${fromPhase} -> ${draft.phase}` };
    }
    if (action === "approve") {
      // The approval is written; now see whether every gate passes.
      if (this.runtimes.get(rt.plan.planId) === rt) await this.progress(rt);
      promoted = rt.state.currentStage !== index || rt.state.phase === "completed";
      message = promoted ? "approved; every gate passed and the plan advanced" : "approved; the stage waits for its other gates";
    } else if (!isTerminal(rt.state.phase)) {
      this.schedule(rt);
    }
    const moved = action === "rollback" || action === "cancel" ? await this.deps.store.movesOfPlan(rt.plan.planId) : [];
    return { state: rt.state, fromPhase, moved, promoted, message };
  }
}
