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
 * The parts: RunningPlans (running-plans.ts: the plans this leader runs, and its signals passed
 * on to them), PlanRuntime (a plan's queue and timers), LiveStage (live-stage.ts: its open
 * stage's counts and the signals they take), StageTracker (the counts), OperatorActions
 * (operator-actions.ts: operators' actions, on the leader or on a follower), DecisionWriter
 * (every write: one transaction each, conditional on the status version), and the pure
 * applyAction and evaluateStage of src/domain.
 */
import { timestampMs } from "@bufbuild/protobuf/wkt";
import type { Event } from "../../gen/autonomy/v1/events_pb.js";
import type { NodeAck } from "../../gen/autonomy/v1/releases_pb.js";
import { evaluateStage, isTerminal, type Action, type PlanState, type StageEvaluation, type StageTally } from "../domain/rollouts.js";
import type { Logger } from "../observability/logger.js";
import type { Metrics } from "../observability/metrics.js";
import { rowToPlan, rowToState, type RolloutRecord } from "../store/rollout-rows.js";
import type { SightingBuffer } from "../store/sightings.js";
import type { Store } from "../store/store.js";
import { DecisionWriter, type MovesCommitted } from "./decisions.js";
import { ControllerStoppedError } from "./errors.js";
import { OperatorActions, type ActionRequest, type ActionResult } from "./operator-actions.js";
import { RunningPlans } from "./running-plans.js";
import { loadStageTracker, type TrackedAck } from "./stage-tracker.js";

export { CONTROLLER_ACTOR } from "./decisions.js";
export type { MovesCommitted } from "./decisions.js";
export type { ActionRequest, ActionResult } from "./operator-actions.js";

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

/** What one resync pass did: plans evaluated, and those whose counts in memory differed from the store's. */
export interface ResyncResult {
  plans: number;
  drifted: string[];
}

export class RolloutController {
  private readonly runtimes: RunningPlans;
  private readonly now: () => number;
  private readonly decisions: DecisionWriter;
  private readonly actions: OperatorActions;
  private readonly moveListeners: ((m: MovesCommitted) => void)[] = [];
  private stopped = false;
  /** Runs the plans (start() to follow()); a follower only takes operators' actions. */
  private leading: boolean;
  private running = false;
  private timer?: NodeJS.Timeout;
  private pass?: Promise<ResyncResult>;

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
    this.runtimes = new RunningPlans({ ...deps, now: this.now, decisions: this.decisions, retryMs: deps.retryMs ?? DEFAULT_ROLLOUT_RETRY_MS });
    this.actions = new OperatorActions({
      store: deps.store,
      now: this.now,
      stopped: () => this.stopped,
      leading: () => this.leading,
      plans: this.runtimes,
      relayPlan: (planId) => this.deps.relay?.plan(planId),
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
    await Promise.all(this.runtimes.clear().map((rt) => rt.stop()));
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
    this.runtimes.drifted = [];
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
      runs.push(rt ? rt.resync() : this.runtimes.load(record).queue.settled());
    }
    for (const rt of this.runtimes.values()) if (!listed.has(rt.planId)) runs.push(rt.resync());
    await Promise.all(runs);
    return { plans: runs.length, drifted: this.runtimes.drifted };
  }

  /** A plan just published: track it and start it. */
  async track(record: RolloutRecord): Promise<void> {
    if (!this.leading) this.deps.relay?.plan(record.plan.planId);
    else if (!this.stopped && !this.runtimes.has(record.plan.planId)) this.runtimes.load(record);
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
    if (record && !isTerminal(record.status.phase as PlanState["phase"]) && this.leading && !this.runtimes.has(planId)) this.runtimes.load(record);
  }

  /** The live counts of a plan's stage, when the controller tracks it and has counted it. */
  liveTally(planId: string, stageIndex: number): StageTally | undefined {
    const rt = this.runtimes.get(planId);
    return rt && rt.state.currentStage === stageIndex ? rt.live.tracker?.tally() : undefined;
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
    const live = rt && state.currentStage === stageIndex ? rt.live.tracker?.tally() : undefined;
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
    if (this.leading) this.runtimes.ack(releaseId, ack);
    else this.deps.relay?.ack(releaseId, ack);
  }

  /** A node seen here or on another replica. */
  onSeen(nodeId: string, atMs: number): void {
    if (this.leading) this.runtimes.seen(nodeId, atMs);
    else this.deps.relay?.seen(nodeId, atMs);
  }

  /** Events just stored; allNew false when some of the batch were duplicates (which ones is unknown here). */
  onEvents(events: readonly Pick<Event, "nodeId" | "eventType">[], allNew: boolean): void {
    if (this.leading) this.runtimes.events(events, allNew);
    else if (events.length > 0) this.deps.relay?.events(events.map((e) => ({ nodeId: e.nodeId, eventType: e.eventType })), allNew);
  }

  // -- operator actions (src/rollouts/operator-actions.ts) ---------------------------------

  /** Applies an operator action or recovery strategy; FailedPrecondition when the plan's phase forbids it. */
  act(planId: string, action: Action, req: ActionRequest): Promise<ActionResult> {
    return this.actions.act(planId, action, req);
  }
}
