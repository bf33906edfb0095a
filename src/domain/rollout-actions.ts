/**
 * What an action does to a plan's status, as a pure function: the controller decides when
 * to act, the store writes the result, and this module alone says what the result is.
 */
import type { RolloutPlan } from "../../gen/autonomy/v1/rollouts_pb.js";
import { FailedPreconditionError, NotFoundError } from "./errors.js";
import { transition, type Action, type PlanState, type Selection, type StageTally } from "./rollouts.js";

export interface ActionInput {
  nowMs: number;
  /** The operator's reason, or the gate's reason for auto_halt; empty for the controller's other moves. */
  reason: string;
  /** Who acts, for the notes an action leaves in a stage's detail. */
  actor: string;
  /** The open stage's counts now: kept with the status when the action writes it. */
  tally?: StageTally;
  /** approve: the stage approved; a recovery: when set, it must be the current stage. */
  stageId?: string;
  /** rollback, restoring, restored: how many moved nodes run their previous release again. */
  restore?: RestoreProgress;
}

/** A rollback's progress: the nodes it restores, those back on their previous release, those whose reinstall failed. */
export interface RestoreProgress {
  nodes: number;
  restored: number;
  failed: number;
}

/** The status reason while a plan rolls back: the operator's reason, then the progress. */
export function rollbackReason(reason: string, p: RestoreProgress): string {
  const failed = p.failed > 0 ? `, ${p.failed} failed to reinstall` : "";
  return `rolling back (${reason}): ${p.restored} of ${p.nodes} node(s) back on their previous release${failed}`;
}

export interface ActionOutcome {
  /** The status after the action (version + 1), before any stage it opens is selected. */
  next: PlanState;
  /** The stage the action opens: its nodes are selected and moved with the write (withStageOpened). */
  opens?: number;
  /** What happened, for the operator. */
  message: string;
}

/**
 * Applies an action to a plan's status. FailedPreconditionError when the phase forbids it
 * or the stage named is not the current one; NotFoundError for a stage the plan lacks.
 */
export function applyAction(plan: RolloutPlan, state: PlanState, action: Action, input: ActionInput): ActionOutcome {
  const index = state.currentStage;
  const current = index >= 0 ? state.stages[index] : undefined;
  if (input.stageId !== undefined && input.stageId !== "" && current?.stageId !== input.stageId) {
    if (!state.stages.some((s) => s.stageId === input.stageId)) {
      throw new NotFoundError(`plan "${state.planId}" has no stage "${input.stageId}"`);
    }
    throw new FailedPreconditionError(
      `stage "${input.stageId}" is not the plan's current stage${current ? ` ("${current.stageId}" is)` : " (no stage has opened yet)"}`,
    );
  }
  const next: PlanState = structuredClone(state);
  next.phase = transition(state.phase, action);
  next.version = state.version + 1;
  next.updatedAtMs = input.nowMs;
  const stage = index >= 0 ? next.stages[index] : undefined;
  if (stage?.phase === "open" && input.tally !== undefined) stage.tally = { ...input.tally };
  const note = (verb: string) => `${verb} by ${input.actor}: ${input.reason}`;
  const close = (phase: "passed" | "skipped", detail: string): number | undefined => {
    if (stage === undefined) throw new FailedPreconditionError("no stage has opened yet");
    stage.phase = phase;
    stage.closedAtMs = input.nowMs;
    stage.detail = [stage.detail, detail].filter(Boolean).join("; ");
    if (index + 1 >= next.stages.length) {
      next.phase = "completed";
      next.reason = "every stage passed";
      return undefined;
    }
    return index + 1;
  };
  switch (action) {
    case "start":
      return { next, opens: 0, message: "plan started" };
    case "select":
      if (stage?.phase !== "open") throw new FailedPreconditionError("no open stage to select nodes for");
      return { next, opens: index, message: "stage nodes selected again" };
    case "advance":
      return { next, opens: close("passed", "every gate passed"), message: "stage passed" };
    case "auto_halt":
    case "emergency_halt":
    case "pause":
    case "halt":
      next.reason = input.reason;
      if (action !== "pause" && stage?.phase === "open") stage.phase = "halted";
      return { next, message: `plan ${action === "pause" ? "paused" : "halted"}` };
    case "resume":
    case "retry":
      next.reason = "";
      if (index < 0) return { next, opens: 0, message: "plan active again; its first stage opens" };
      if (stage?.phase === "halted") stage.phase = "open";
      return { next, message: "plan active again; its stage is re-evaluated" };
    case "promote":
      return { next, opens: close("passed", note("promoted")), message: "stage promoted" };
    case "skip_failed":
      return { next, opens: close("skipped", note("skipped")), message: "stage skipped past its failures" };
    case "cancel":
    case "abort":
      next.reason = action === "abort" ? note("aborted") : input.reason;
      if (stage?.phase === "open") stage.phase = "halted";
      return {
        next,
        message: action === "cancel" ? "plan cancelled; nodes already moved keep the release" : "plan aborted: no further node is moved; nodes keep what they have",
      };
    case "rollback":
      next.reason = rollbackReason(input.reason, input.restore ?? { nodes: 0, restored: 0, failed: 0 });
      if (stage?.phase === "open") stage.phase = "halted";
      return { next, message: "rolling back: every node the plan moved gets the release it ran before; the moved nodes are listed" };
    case "restoring":
    case "restored": {
      // The operator's reason stays in front of the progress.
      const why = /^rolling back \((.*)\): /s.exec(state.reason)?.[1] ?? "";
      const restore = input.restore ?? { nodes: 0, restored: 0, failed: 0 };
      next.reason = action === "restored" ? `rolled back (${why}): ${restore.nodes} node(s) run their previous release again` : rollbackReason(why, restore);
      return { next, message: next.reason };
    }
    case "approve":
      if (stage === undefined || stage.phase !== "open") {
        throw new FailedPreconditionError(`stage "${input.stageId}" is ${stage?.phase ?? "not open"}; only the open stage can be approved`);
      }
      if (!plan.stages[index].gates.some((g) => g.kind === "manual")) {
        throw new FailedPreconditionError(`stage "${stage.stageId}" has no manual gate`);
      }
      stage.manualApproved = true;
      return { next, message: "approved" };
  }
}

/**
 * The status with stage `index` opened on a selection: its nodes counted, its detail saying
 * what was left out (or why nothing was selected), the event sequence its event_rate gate
 * counts from. Opening a stage again (select) restarts its clock.
 */
export function withStageOpened(state: PlanState, index: number, selection: Selection, nowMs: number, eventSeq?: bigint): PlanState {
  const next: PlanState = structuredClone(state);
  next.currentStage = index;
  const { tally: _, ...stage } = next.stages[index];
  next.stages[index] = {
    ...stage,
    phase: "open",
    nodeCount: selection.nodeIds.length,
    openedAtMs: nowMs,
    openedEventSeq: eventSeq === undefined ? undefined : String(eventSeq),
    detail: selection.detail,
    ...(selection.covered ? { covered: true } : {}),
  };
  return next;
}
