/**
 * One unfinished plan as the controller runs it: its queue and its timers (the wake-up at a
 * gate's time or a rollback's next count, the retry after an error). Decisions come from the domain (evaluateStage,
 * applyAction), counts and the signals they take from its LiveStage (src/rollouts/live-stage.ts),
 * writes go through the DecisionWriter. Memory is a cache of the store: after an error, or on a
 * resync, the plan is read back and its stage counted again from the store.
 */
import type { RolloutPlan } from "../../gen/autonomy/v1/rollouts_pb.js";
import { AbortedError, FailedPreconditionError } from "../domain/errors.js";
import { applyAction, rollbackReason, type RestoreProgress } from "../domain/rollout-actions.js";
import { evaluateStage, gatedEventType, isTerminal, type Action, type PlanState, type StageTally } from "../domain/rollouts.js";
import type { Logger } from "../observability/logger.js";
import type { Metrics } from "../observability/metrics.js";
import type { Actor } from "../services/audit-record.js";
import { rowToPlan, rowToState, type MoveRow, type RolloutRecord } from "../store/rollout-rows.js";
import type { NodeSighting } from "../store/fleet-rows.js";
import type { SightingBuffer } from "../store/sightings.js";
import type { Store } from "../store/store.js";
import { CONTROLLER_ACTOR, type DecisionWriter } from "./decisions.js";
import { ControllerStoppedError } from "./errors.js";
import { LiveStage } from "./live-stage.js";
import { PlanQueue } from "./plan-queue.js";
import { sameTally, type StageTracker } from "./stage-tracker.js";

/** How often a rolling-back plan counts its nodes back on their previous release (acks also wake it). */
export const RESTORE_POLL_MS = 2000;

export interface RuntimeDeps {
  store: Store;
  sightings: SightingBuffer;
  metrics: Metrics;
  logger: Logger;
  staleAfterMs: number;
  now: () => number;
  decisions: DecisionWriter;
  /** How long after an error the plan is read back and evaluated again. */
  retryMs: number;
  /** The plan finished (or is gone): the controller forgets the runtime. */
  onFinished: (rt: PlanRuntime) => void;
  /** A resync found the counts in memory different from the store's: they are replaced. */
  onDrift?: (rt: PlanRuntime, memory: StageTally, store: StageTally) => void;
}

export class PlanRuntime {
  readonly planId: string;
  plan: RolloutPlan;
  state: PlanState;
  /** The open stage's counts and the signals they take. */
  readonly live: LiveStage;
  /** Every step and action of the plan runs in this queue. */
  readonly queue = new PlanQueue();
  private stepQueued = false;
  private refreshing?: Promise<void>;
  /** The status or counts may differ from the store's: read them back before deciding. */
  private stale = true;
  private wake?: NodeJS.Timeout;
  private retry?: NodeJS.Timeout;
  private stopped = false;

  constructor(
    private readonly deps: RuntimeDeps,
    record: RolloutRecord,
  ) {
    this.planId = record.plan.planId;
    this.plan = rowToPlan(record.plan);
    this.state = rowToState(record.status, record.plan.createdAtMs);
    this.live = new LiveStage(deps, () => this.schedule());
  }

  /** The event type the open stage's event_rate gate counts, if any. */
  gatedType(): string | undefined {
    return this.state.currentStage >= 0 ? gatedEventType(this.plan.stages[this.state.currentStage]) : undefined;
  }

  // -- the queue ------------------------------------------------------------------------

  /** Queues one evaluation (coalesced: one queued at a time is enough). */
  schedule(): void {
    if (this.stepQueued || this.stopped) return;
    this.stepQueued = true;
    this.queue.run(() => {
      this.stepQueued = false;
      return this.progress();
    }).catch((err: unknown) => this.failed(err));
  }

  /** Queues a read-back from the store and an evaluation (coalesced); resolves once it ran. */
  resync(record?: RolloutRecord): Promise<void> {
    if (this.stopped) return Promise.resolve();
    this.refreshing ??= this.queue
      .run(() => {
        this.refreshing = undefined;
        return this.refresh(record);
      })
      .catch((err: unknown) => this.failed(err));
    return this.refreshing;
  }

  /** Stops the timers, refuses new work and waits for what is queued. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.clearTimers();
    await this.queue.close();
  }

  private clearTimers(): void {
    clearTimeout(this.wake);
    this.live.stopSweep();
    clearTimeout(this.retry);
  }

  private failed(err: unknown): void {
    if (this.stopped) return;
    // Memory may be behind the store now (a write may have landed): counted again before any decision.
    this.stale = true;
    this.live.forget();
    const { logger, retryMs } = this.deps;
    if (err instanceof AbortedError) logger.info({ plan_id: this.planId }, "rollout status changed elsewhere; reading the plan again");
    else logger.error({ plan_id: this.planId, err: (err as Error).message }, "rollout step failed; reading the plan again shortly");
    clearTimeout(this.retry);
    this.retry = setTimeout(() => void this.resync(), err instanceof AbortedError ? 0 : retryMs);
    this.retry.unref();
  }

  // -- steps (each runs in the queue) -----------------------------------------------------

  /** Reads the plan back from the store, counts its stage again, then evaluates it. */
  private async refresh(record?: RolloutRecord): Promise<void> {
    await this.sync(record);
    if (this.stopped || isTerminal(this.state.phase)) return;
    const index = this.state.currentStage;
    if (this.state.phase === "active" && index >= 0 && this.state.stages[index].phase === "open" && this.state.stages[index].nodeCount === 0) {
      // A held stage: select again, written only when some node qualifies now.
      await this.decide("select", CONTROLLER_ACTOR, "", { onlyIfSelected: true });
    }
    await this.progress();
  }

  /** Adopts the stored status and rebuilds the open stage's counts from the store. */
  private async sync(record?: RolloutRecord): Promise<void> {
    const stored = record ?? (await this.deps.store.getRollout(this.planId));
    if (!stored) {
      this.finish();
      return;
    }
    this.state = rowToState(stored.status, stored.plan.createdAtMs);
    if (isTerminal(this.state.phase)) {
      this.finish();
      return;
    }
    const before = this.live.tracker;
    before?.sweep(this.deps.now() - this.deps.staleAfterMs);
    await this.track(before);
    const now = this.live.tracker?.tally();
    if (before && now && before.stageId === this.live.tracker!.stageId && !sameTally(before.tally(), now)) this.deps.onDrift?.(this, before.tally(), now);
  }

  /** Counts the current stage from the store when it is open (src/rollouts/live-stage.ts). */
  private async track(previous?: StageTracker): Promise<void> {
    this.live.forget();
    this.live.stopSweep();
    const index = this.state.currentStage;
    if (index < 0 || this.state.stages[index].phase !== "open") {
      this.stale = false;
      return;
    }
    await this.live.count(this.plan, this.state, previous);
    this.stale = false;
  }

  /** One run of the machine: start, then halt or advance for as long as the gates allow (in a queued task). */
  async progress(): Promise<void> {
    for (;;) {
      if (!this.stopped && this.stale) await this.sync();
      if (this.stopped || isTerminal(this.state.phase)) return;
      if (this.state.phase === "published") {
        await this.decide("start", CONTROLLER_ACTOR, "");
        continue;
      }
      if (this.state.phase === "rolling_back") {
        await this.followRestore();
        return;
      }
      const index = this.state.currentStage;
      if (this.state.phase !== "active" || index < 0 || !this.live.tracker) return;
      if (this.live.recountPending) await this.live.countEvents(this.gatedType(), this.state.stages[this.state.currentStage]?.openedEventSeq);
      this.deps.metrics.rolloutEvaluations.inc();
      const ev = evaluateStage(this.plan.stages[index], this.state.stages[index], this.live.tracker.tally(), this.deps.now());
      clearTimeout(this.wake);
      if (ev.halt !== undefined) {
        await this.decide("auto_halt", CONTROLLER_ACTOR, ev.halt);
        this.deps.logger.warn({ plan_id: this.planId, reason: ev.halt }, "rollout halted by its gate");
        return;
      }
      if (!ev.allPassed) {
        if (ev.wakeAtMs !== undefined) {
          this.wake = setTimeout(() => this.schedule(), Math.max(0, ev.wakeAtMs - this.deps.now()) + 5);
          this.wake.unref();
        }
        return;
      }
      await this.decide("advance", CONTROLLER_ACTOR, "");
    }
  }

  /** A rollback: records how many moved nodes are back on their previous release, ends it when all are. */
  private async followRestore(): Promise<void> {
    clearTimeout(this.wake);
    const progress = await this.deps.store.restoreProgress(this.planId);
    if (progress.restored >= progress.nodes) {
      await this.decide("restored", CONTROLLER_ACTOR, "", { restore: progress });
      this.deps.logger.info({ plan_id: this.planId, nodes: progress.nodes }, "rollout rolled back: every moved node runs its previous release");
      return;
    }
    const why = /^rolling back \((.*)\): /s.exec(this.state.reason)?.[1] ?? "";
    if (rollbackReason(why, progress) !== this.state.reason) await this.decide("restoring", CONTROLLER_ACTOR, "", { restore: progress });
    this.wake = setTimeout(() => this.schedule(), RESTORE_POLL_MS);
    this.wake.unref();
  }

  /**
   * Applies an action and writes it; then memory follows the store: a stage it opened is
   * counted from the store. Undefined when nothing was written (a re-selection of none).
   */
  async decide(
    action: Action,
    who: Actor,
    reason: string,
    opts: { onlyIfSelected?: boolean; stageId?: string; restore?: RestoreProgress } = {},
  ): Promise<{ state: PlanState; message: string } | undefined> {
    if (this.stopped) throw new ControllerStoppedError();
    const before = this.state;
    const nowMs = this.deps.now();
    // A rollback restores every node the plan moved: one restore row each, to the release it ran before.
    let restores: MoveRow[] = [];
    let restore = opts.restore;
    if (action === "rollback") {
      const moves = await this.deps.store.movesOfPlan(this.planId);
      restores = moves.map((m) => ({ planId: m.planId, stageId: m.stageId, nodeId: m.nodeId, releaseId: m.previousReleaseId ?? "", movedAtMs: nowMs, kind: "restore" }));
      restore = { nodes: moves.length, restored: 0, failed: 0 };
    }
    const outcome = applyAction(this.plan, before, action, { nowMs, reason, actor: who.actor, tally: this.live.tracker?.tally(), stageId: opts.stageId, restore });
    this.stale = true;
    const stored = await this.deps.decisions.write({
      planId: this.planId,
      releaseId: this.plan.releaseId,
      before,
      action,
      outcome,
      who,
      reason,
      nowMs,
      onlyIfSelected: opts.onlyIfSelected,
      restores,
      sightings: outcome.opens === undefined ? undefined : this.unstoredSightings(),
    });
    if (!stored) {
      this.stale = false;
      return undefined;
    }
    this.state = stored;
    if (isTerminal(stored.phase)) this.finish();
    else if (stored.phase === "rolling_back") this.stale = false;
    else if (outcome.opens !== undefined || stored.currentStage !== before.currentStage) await this.track();
    else this.stale = false;
    return { state: stored, message: outcome.message };
  }

  /**
   * What an opening reads over the stored nodes (it selects by last-seen times): the buffered
   * sightings, but for the nodes of the stage the plan leaves, which it moved already and so
   * will not select again (after an ack storm of a stage, most of the buffer).
   */
  private unstoredSightings(): NodeSighting[] {
    const leaving = this.live.tracker;
    return this.deps.sightings.pending(leaving ? (nodeId) => !leaving.has(nodeId) : undefined);
  }

  /** The state an action starts from: read back first when memory may be behind the store. */
  async current(): Promise<PlanState> {
    if (this.stale) await this.sync();
    if (isTerminal(this.state.phase)) throw new FailedPreconditionError(`cannot act: the plan is ${this.state.phase} (it is finished)`);
    return this.state;
  }

  private finish(): void {
    this.stale = false;
    this.live.forget();
    this.clearTimers();
    this.deps.onFinished(this);
  }
}
