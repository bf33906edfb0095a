/**
 * Operators' actions on a plan (approve, pause, resume, rollback, cancel, abort and the
 * recovery strategies): checked against the plan's phase and the version the operator read,
 * then taken in the plan's queue by its runtime. On the leader that is the plan's tracked
 * runtime; on a follower, a runtime that lives for the one action, after which the leader is
 * told to read the plan back. RolloutController.act delegates here.
 */
import { AbortedError, FailedPreconditionError, NotFoundError } from "../domain/errors.js";
import { applyAction } from "../domain/rollout-actions.js";
import { isTerminal, SYSTEM_ACTIONS, transition, type Action, type PlanState } from "../domain/rollouts.js";
import type { Actor } from "../services/audit-record.js";
import type { MoveRow } from "../store/rollout-rows.js";
import type { Store } from "../store/store.js";
import { ControllerStoppedError } from "./errors.js";
import type { PlanRuntime } from "./plan-runtime.js";
import type { RunningPlans } from "./running-plans.js";

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

/** What the actions need of the controller (read when each is taken: leadership changes). */
export interface ActionHost {
  store: Store;
  now: () => number;
  stopped(): boolean;
  leading(): boolean;
  /** The plans the controller runs (while it leads). */
  plans: RunningPlans;
  /** A follower changed the plan: the leader is told to read it back. */
  relayPlan(planId: string): void;
}

export class OperatorActions {
  constructor(private readonly host: ActionHost) {}

  /** Applies an operator action or recovery strategy; FailedPrecondition when the plan's phase forbids it. */
  async act(planId: string, action: Action, req: ActionRequest): Promise<ActionResult> {
    const host = this.host;
    if (host.stopped()) throw new ControllerStoppedError();
    if (SYSTEM_ACTIONS.includes(action)) throw new FailedPreconditionError(`${action} is taken by the controller only`);
    if (!host.leading()) return this.actAsFollower(planId, action, req);
    let rt = host.plans.get(planId);
    if (!rt) {
      const record = await host.store.getRollout(planId);
      if (!record) throw new NotFoundError(`rollout plan "${planId}" not found`);
      const phase = record.status.phase as PlanState["phase"];
      if (isTerminal(phase)) transition(phase, action); // throws: a finished plan allows nothing
      if (host.stopped()) throw new ControllerStoppedError();
      rt = host.plans.get(planId) ?? host.plans.load(record);
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
    const record = await this.host.store.getRollout(planId);
    if (!record) throw new NotFoundError(`rollout plan "${planId}" not found`);
    const phase = record.status.phase as PlanState["phase"];
    if (isTerminal(phase)) transition(phase, action); // throws: a finished plan allows nothing
    const rt = this.host.plans.runtime(record);
    try {
      return await rt.queue.run(() => this.actOn(rt, action, req));
    } finally {
      await rt.stop();
      if (!req.dryRun) this.host.relayPlan(planId);
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
      const { next } = applyAction(rt.plan, state, action, { nowMs: this.host.now(), reason: req.reason, actor: req.actor, stageId: req.stageId });
      const moved = await this.host.store.movesOfPlan(rt.planId);
      return { state: { ...next, version: state.version, updatedAtMs: state.updatedAtMs }, fromPhase, moved, message: `would ${action}: ${fromPhase} -> ${next.phase}` };
    }
    const done = await rt.decide(action, who, req.reason, { stageId: req.stageId });
    let message = done?.message ?? "";
    let promoted: boolean | undefined;
    if (action === "approve" && !this.host.leading()) {
      promoted = false;
      message = "approved; the leader evaluates the stage's other gates";
    } else if (action === "approve") {
      // The approval is written; now see whether every gate passes.
      if (!isTerminal(rt.state.phase)) await rt.progress();
      promoted = rt.state.currentStage !== index || rt.state.phase === "completed";
      message = promoted ? "approved; every gate passed and the plan advanced" : "approved; the stage waits for its other gates";
    } else if (!isTerminal(rt.state.phase) && this.host.leading()) {
      rt.schedule();
    }
    const moved = action === "rollback" || action === "cancel" || action === "abort" ? await this.host.store.movesOfPlan(rt.planId) : [];
    return { state: rt.state, fromPhase, moved, promoted, message };
  }
}
