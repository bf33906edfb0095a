/**
 * The rollout controller: it moves every unfinished plan's nodes stage by stage and halts a
 * plan when a gate fails hard.
 *
 * Edge-triggered and level-triggered (the pattern of Argo Rollouts' controllers). A plan is
 * evaluated as soon as something that can change its gates happens: an ack for its release
 * from a node of its open stage, a sighting of a node counted unreachable, an event of a gated
 * type, a timer (a soak ending, the liveness sweep). And on every resync period (--rollout-resync,
 * 30 s by default) and after any error, every unfinished plan is read back from the store, its
 * open stage counted again, and evaluated: a lost signal or a failed write delays a decision,
 * it never loses or corrupts one. Memory is a cache of the store.
 *
 * The parts: PlanRuntime (a plan's queue, timers and signals), StageTracker (the counts),
 * DecisionWriter (every write: one transaction each, conditional on the status version), and
 * the pure applyAction and evaluateStage of src/domain.
 */
import { timestampMs } from "@bufbuild/protobuf/wkt";
import type { Event } from "../../gen/autonomy/v1/events_pb.js";
import type { NodeAck } from "../../gen/autonomy/v1/releases_pb.js";
import { AbortedError, FailedPreconditionError, NotFoundError } from "../domain/errors.js";
import { applyAction } from "../domain/rollout-actions.js";
import { evaluateStage, isTerminal, SYSTEM_ACTIONS, transition, type Action, type PlanState, type StageEvaluation, type StageTally } from "../domain/rollouts.js";
import type { Logger } from "../observability/logger.js";
import type { Metrics } from "../observability/metrics.js";
import { rowToPlan, rowToState, type MoveRow, type RolloutRecord } from "../store/rollout-rows.js";
import type { SightingBuffer } from "../store/sightings.js";
import type { Store } from "../store/store.js";
import type { Actor } from "../services/audit-record.js";
import { DecisionWriter, type MovesCommitted } from "./decisions.js";
import { ControllerStoppedError } from "./errors.js";
import { PlanRuntime } from "./plan-runtime.js";
import { loadStageTracker, type TrackedAck } from "./stage-tracker.js";

export { CONTROLLER_ACTOR } from "./decisions.js";
export type { MovesCommitted } from "./decisions.js";

/** --rollout-resync: how often every unfinished plan is read back and evaluated. */
export const DEFAULT_ROLLOUT_RESYNC_MS = 30_000;
/** How long after a failed step the plan is read back and evaluated again. */
export const DEFAULT_ROLLOUT_RETRY_MS = 5_000;

export interface ControllerDeps {
  store: Store;
  sightings: SightingBuffer;
  metrics: Metrics;
  logger: Logger;
  /** --node-stale-after: a stage node without a final ack and not seen for longer is unreachable. */
  staleAfterMs: number;
  now?: () => number;
  /** --rollout-resync; 0 turns the periodic resync off (errors still trigger one). */
  resyncMs?: number;
  retryMs?: number;
  /** The fencing epoch of the controller's decisions (Leadership.fence); unset: not fenced. */
  fence?: () => number | undefined;
  /** While this replica does not lead: where its signals go (to the leader's controller, src/ha/relay.ts). */
  relay?: ControllerRelay;
  /** HA: a follower until start() (this replica gained leadership). Otherwise it leads from the start. */
  startAsFollower?: boolean;
}

/** The signals a follower's controller passes on to the leader's. */
export interface ControllerRelay {
  ack(releaseId: string, ack: TrackedAck): void;
  events(events: readonly { nodeId: string; eventType: string }[], allNew: boolean): void;
  seen(nodeId: string, atMs: number): void;
  /** A plan was created or changed by an operator here: the leader reads it back. */
  plan(planId: string): void;
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

/** What one resync pass did: plans evaluated, and those whose counts in memory differed from the store's. */
export interface ResyncResult {
  plans: number;
  drifted: string[];
}

export class RolloutController {
  private readonly runtimes = new Map<string, PlanRuntime>();
  private readonly now: () => number;
  private readonly decisions: DecisionWriter;
  private readonly moveListeners: ((m: MovesCommitted) => void)[] = [];
  private stopped = false;
  /** Runs the plans (start() to follow()); a follower only takes operators' actions. */
  private leading: boolean;
  private running = false;
  private timer?: NodeJS.Timeout;
  private pass?: Promise<ResyncResult>;
  private drifted: string[] = [];

  constructor(private readonly deps: ControllerDeps) {
    this.now = deps.now ?? Date.now;
    this.leading = !deps.startAsFollower;
    this.decisions = new DecisionWriter({
      store: deps.store,
      metrics: deps.metrics,
      staleAfterMs: deps.staleAfterMs,
      fence: deps.fence,
      onMovesCommitted: (m) => {
        for (const fn of this.moveListeners) fn(m);
      },
    });
    deps.sightings.subscribe((s) => this.onSeen(s.nodeId, s.lastSeenMs));
  }

  /** Whether this controller runs the plans (it leads). */
  isLeading(): boolean {
    return this.leading;
  }

  /**
   * Runs the plans: reads every unfinished plan and evaluates it, then resyncs on the period.
   * With HA, called each time this replica gains leadership (the resync rebuilds every plan's
   * state from the store).
   */
  async start(): Promise<void> {
    if (this.stopped) throw new ControllerStoppedError();
    if (this.running) return;
    this.running = true;
    this.leading = true;
    await this.resync();
    const every = this.deps.resyncMs ?? DEFAULT_ROLLOUT_RESYNC_MS;
    if (every > 0 && !this.stopped && this.leading) {
      clearInterval(this.timer);
      this.timer = setInterval(() => void this.resync(), every);
      this.timer.unref();
    }
  }

  /**
   * Stops running the plans (this replica lost leadership): the resync and every plan's timers
   * stop, and it resolves once no step is running. Operators' actions are still taken.
   */
  async follow(): Promise<void> {
    this.leading = false;
    this.running = false;
    clearInterval(this.timer);
    await this.pass?.catch(() => undefined);
    const runtimes = [...this.runtimes.values()];
    this.runtimes.clear();
    await Promise.all(runtimes.map((rt) => rt.stop()));
  }

  /** Stops the resync and every plan's timers, and waits until no step or action is running. */
  async stop(): Promise<void> {
    this.stopped = true;
    await this.follow();
  }

  /** Calls fn after each committed write that moved nodes: to a plan's release, or back by a rollback. */
  subscribeMoves(fn: (m: MovesCommitted) => void): void {
    this.moveListeners.push(fn);
  }

  /**
   * One level-triggered pass: every unfinished plan in the store (and every plan tracked) is
   * read back, its open stage counted again from the store, and evaluated.
   */
  resync(): Promise<ResyncResult> {
    if (this.stopped || !this.leading) return Promise.resolve({ plans: 0, drifted: [] });
    this.pass ??= this.resyncPass().finally(() => (this.pass = undefined));
    return this.pass;
  }

  private async resyncPass(): Promise<ResyncResult> {
    this.drifted = [];
    let records: RolloutRecord[];
    try {
      records = await this.deps.store.listRollouts({ unfinished: true });
    } catch (err) {
      this.deps.logger.error({ err: (err as Error).message }, "reading the unfinished rollout plans failed; trying again at the next resync");
      return { plans: 0, drifted: [] };
    }
    if (!this.leading) return { plans: 0, drifted: [] };
    const runs: Promise<void>[] = [];
    const listed = new Set<string>();
    for (const record of records) {
      listed.add(record.plan.planId);
      const rt = this.runtimes.get(record.plan.planId);
      runs.push(rt ? rt.resync() : this.load(record).queue.settled());
    }
    for (const rt of this.runtimes.values()) if (!listed.has(rt.planId)) runs.push(rt.resync());
    await Promise.all(runs);
    return { plans: runs.length, drifted: this.drifted };
  }

  /** A plan just published: track it and start it. */
  async track(record: RolloutRecord): Promise<void> {
    if (!this.leading) this.deps.relay?.plan(record.plan.planId);
    else if (!this.stopped && !this.runtimes.has(record.plan.planId)) this.load(record);
  }

  /** A plan changed outside the controller (the emergency stop halted it): the leader reads it back, a follower tells the leader. */
  async planChanged(planId: string): Promise<void> {
    if (!this.leading) this.deps.relay?.plan(planId);
    else await this.refreshPlan(planId);
  }

  /** A plan changed on another replica: read it back (and start running it if it is new here). */
  async refreshPlan(planId: string): Promise<void> {
    if (this.stopped || !this.leading) return;
    const rt = this.runtimes.get(planId);
    if (rt) return rt.resync();
    const record = await this.deps.store.getRollout(planId);
    if (record && !isTerminal(record.status.phase as PlanState["phase"]) && this.leading && !this.runtimes.has(planId)) this.load(record);
  }

  private load(record: RolloutRecord): PlanRuntime {
    const rt = this.runtime(record);
    this.runtimes.set(rt.planId, rt);
    void rt.resync(record);
    return rt;
  }

  private runtime(record: RolloutRecord): PlanRuntime {
    return new PlanRuntime(
      {
        ...this.deps,
        now: this.now,
        decisions: this.decisions,
        retryMs: this.deps.retryMs ?? DEFAULT_ROLLOUT_RETRY_MS,
        onFinished: (done) => {
          if (this.runtimes.get(done.planId) === done) this.runtimes.delete(done.planId);
        },
        onDrift: (drift, memory, stored) => {
          this.drifted.push(drift.planId);
          this.deps.logger.warn({ plan_id: drift.planId, memory, stored }, "rollout stage counts differed from the store; counted again");
        },
      },
      record,
    );
  }

  /** The live counts of a plan's stage, when the controller tracks it and has counted it. */
  liveTally(planId: string, stageIndex: number): StageTally | undefined {
    const rt = this.runtimes.get(planId);
    return rt && rt.state.currentStage === stageIndex ? rt.tracker?.tally() : undefined;
  }

  /** The counts of a plan's open stage as the store holds them now, counted apart from the controller's. */
  async recount(planId: string): Promise<StageTally | undefined> {
    const record = await this.deps.store.getRollout(planId);
    if (!record) return undefined;
    const state = rowToState(record.status, record.plan.createdAtMs);
    if (state.currentStage < 0 || state.stages[state.currentStage].phase !== "open") return undefined;
    return (await loadStageTracker(this.deps, rowToPlan(record.plan), state, this.now())).tally();
  }

  /** Resolves when the plan has no step or action queued (benchmarks and tests wait on it). */
  async settled(planId: string): Promise<void> {
    for (let rt = this.runtimes.get(planId); rt; rt = this.runtimes.get(planId)) {
      await rt.queue.settled();
      if (this.runtimes.get(planId) !== rt || !rt.queue.busy()) return;
    }
  }

  /** The current status of a tracked plan (never older than the store's: it is written first). */
  trackedState(planId: string): PlanState | undefined {
    return this.runtimes.get(planId)?.state;
  }

  /** Evaluates a stage's gates now (without acting on them). */
  evaluate(record: RolloutRecord, stageIndex: number): StageEvaluation {
    const rt = this.runtimes.get(record.plan.planId);
    const plan = rt?.plan ?? rowToPlan(record.plan);
    const state = rt?.state ?? rowToState(record.status, record.plan.createdAtMs);
    const stage = state.stages[stageIndex];
    const live = rt && state.currentStage === stageIndex ? rt.tracker?.tally() : undefined;
    const tally = live ?? stage.tally ?? { nodeCount: stage.nodeCount, healthy: 0, failed: 0, unreachable: 0, gatedEvents: 0 };
    return evaluateStage(plan.stages[stageIndex], stage, tally, this.now());
  }

  // -- signals --------------------------------------------------------------------------

  /** An ack the store kept (not a stale one). */
  onAck(ack: NodeAck): void {
    const updatedAtMs = ack.updatedAt ? timestampMs(ack.updatedAt) : this.now();
    this.applyAck(ack.releaseId, { nodeId: ack.nodeId, state: ack.state, reportedReleaseId: ack.reportedReleaseId, updatedAtMs });
  }

  /** An ack stored here or on another replica. */
  applyAck(releaseId: string, ack: TrackedAck): void {
    if (!this.leading) {
      this.deps.relay?.ack(releaseId, ack);
      return;
    }
    for (const rt of this.runtimes.values()) {
      // A rollback counts acks of the releases it restores: the runtime counts again.
      if (rt.state.phase === "rolling_back") rt.schedule();
      if (rt.plan.releaseId === releaseId) rt.onAck(ack);
    }
  }

  /** A node seen here or on another replica. */
  onSeen(nodeId: string, atMs: number): void {
    if (!this.leading) {
      this.deps.relay?.seen(nodeId, atMs);
      return;
    }
    for (const rt of this.runtimes.values()) rt.onSeen(nodeId, atMs);
  }

  /** Events just stored; allNew false when some of the batch were duplicates (which ones is unknown here). */
  onEvents(events: readonly Pick<Event, "nodeId" | "eventType">[], allNew: boolean): void {
    if (!this.leading) {
      if (events.length > 0) this.deps.relay?.events(events.map((e) => ({ nodeId: e.nodeId, eventType: e.eventType })), allNew);
      return;
    }
    for (const rt of this.runtimes.values()) {
      const type = rt.gatedType();
      if (type === undefined) continue;
      for (const e of events) if (e.eventType === type) rt.onEvent(e.nodeId, allNew);
    }
  }

  // -- operator actions -------------------------------------------------------------------

  /** Applies an operator action or recovery strategy; FailedPrecondition when the plan's phase forbids it. */
  async act(planId: string, action: Action, req: ActionRequest): Promise<ActionResult> {
    if (this.stopped) throw new ControllerStoppedError();
    if (SYSTEM_ACTIONS.includes(action)) throw new FailedPreconditionError(`${action} is taken by the controller only`);
    if (!this.leading) return this.actAsFollower(planId, action, req);
    let rt = this.runtimes.get(planId);
    if (!rt) {
      const record = await this.deps.store.getRollout(planId);
      if (!record) throw new NotFoundError(`rollout plan "${planId}" not found`);
      const phase = record.status.phase as PlanState["phase"];
      if (isTerminal(phase)) transition(phase, action); // throws: a finished plan allows nothing
      if (this.stopped) throw new ControllerStoppedError();
      rt = this.runtimes.get(planId) ?? this.load(record);
    }
    const runtime = rt;
    return runtime.queue.run(() => this.actOn(runtime, action, req));
  }

  /**
   * An operator's action on a replica that does not lead: written here (conditional on the
   * version, like any action) by a runtime that lives for this action only; the leader is told
   * to read the plan back and goes on from there.
   */
  private async actAsFollower(planId: string, action: Action, req: ActionRequest): Promise<ActionResult> {
    const record = await this.deps.store.getRollout(planId);
    if (!record) throw new NotFoundError(`rollout plan "${planId}" not found`);
    const phase = record.status.phase as PlanState["phase"];
    if (isTerminal(phase)) transition(phase, action); // throws: a finished plan allows nothing
    const rt = this.runtime(record);
    try {
      return await rt.queue.run(() => this.actOn(rt, action, req));
    } finally {
      await rt.stop();
      if (!req.dryRun) this.deps.relay?.plan(planId);
    }
  }

  private async actOn(rt: PlanRuntime, action: Action, req: ActionRequest): Promise<ActionResult> {
    const state = await rt.current();
    if (req.expectedVersion !== undefined && req.expectedVersion !== state.version) {
      throw new AbortedError(`plan "${state.planId}" is at version ${state.version}, not ${req.expectedVersion}: it changed since it was read`);
    }
    const fromPhase = state.phase;
    const index = state.currentStage;
    const current = index >= 0 ? state.stages[index] : undefined;
    if (action === "approve" && current?.manualApproved && current.stageId === req.stageId) {
      return { state, fromPhase, moved: [], promoted: false, message: `stage "${current.stageId}" was already approved` };
    }
    const who: Actor = { actor: req.actor, source: req.source };
    if (req.dryRun) {
      const { next } = applyAction(rt.plan, state, action, { nowMs: this.now(), reason: req.reason, actor: req.actor, stageId: req.stageId });
      const moved = await this.deps.store.movesOfPlan(rt.planId);
      return { state: { ...next, version: state.version, updatedAtMs: state.updatedAtMs }, fromPhase, moved, message: `would ${action}: ${fromPhase} -> ${next.phase}` };
    }
    const done = await rt.decide(action, who, req.reason, { stageId: req.stageId });
    let message = done?.message ?? "";
    let promoted: boolean | undefined;
    if (action === "approve" && !this.leading) {
      promoted = false;
      message = "approved; the leader evaluates the stage's other gates";
    } else if (action === "approve") {
      // The approval is written; now see whether every gate passes.
      if (!isTerminal(rt.state.phase)) await rt.progress();
      promoted = rt.state.currentStage !== index || rt.state.phase === "completed";
      message = promoted ? "approved; every gate passed and the plan advanced" : "approved; the stage waits for its other gates";
    } else if (!isTerminal(rt.state.phase) && this.leading) {
      rt.schedule();
    }
    const moved = action === "rollback" || action === "cancel" || action === "abort" ? await this.deps.store.movesOfPlan(rt.planId) : [];
    return { state: rt.state, fromPhase, moved, promoted, message };
  }
}
