/**
 * The one place the controller writes its decisions and the operators' actions: each is one
 * transaction of the store (the status conditional on the version read, the moves of a stage
 * it opens, the audit record). The controller's own decisions are leader-only: each carries
 * the leader's fencing epoch (see src/ha/) and commits only while it is current.
 */
import type { ActionOutcome } from "../domain/rollout-actions.js";
import { ACTION_EVENT_NAMES, type Action, type PlanState } from "../domain/rollouts.js";
import type { Metrics } from "../observability/metrics.js";
import { auditRecord, type Actor } from "../services/audit-record.js";
import type { NodeSighting } from "../store/fleet-rows.js";
import { rowToState, stateToRow, type MoveRow } from "../store/rollout-rows.js";
import type { Store } from "../store/store.js";
import { refuseDuringStop } from "../store/operation-rows.js";

/**
 * Decisions that open a stage, move nodes or make a plan active: refused while an emergency
 * stop is in force, which is read from the store at decision time (any replica may have
 * started it). The store refuses the same writes again inside their transactions.
 */
const REFUSED_DURING_STOP: ReadonlySet<Action> = new Set<Action>(["start", "advance", "select", "resume", "retry", "skip_failed", "promote", "rollback"]);

/** Who the controller's own decisions are recorded as. */
export const CONTROLLER_ACTOR: Actor = { actor: "system:rollout-controller", source: "controller" };

/** Nodes a committed decision moved to a plan's release, or back by a rollback (for whoever tells the nodes). */
export interface MovesCommitted {
  planId: string;
  /** The stage that opened; "" for a rollback's restores (which span the plan's stages). */
  stageId: string;
  releaseId: string;
  nodeIds: readonly string[];
}

export interface DecisionWriterDeps {
  store: Store;
  metrics: Metrics;
  /** --node-stale-after: which nodes a stage opening counts as HEALTHY. */
  staleAfterMs: number;
  /** Called after a write that moved nodes has committed. */
  onMovesCommitted?: (moves: MovesCommitted) => void;
  /**
   * The fencing epoch of the controller's own decisions (Leadership.fence): each commits only
   * while that epoch is current, checked in its transaction. Undefined (standalone): not fenced.
   * Operators' actions are not leader-only (any replica takes them): conditional on the version only.
   */
  fence?: () => number | undefined;
}

export interface Decision {
  planId: string;
  releaseId: string;
  before: PlanState;
  action: Action;
  outcome: ActionOutcome;
  who: Actor;
  reason: string;
  nowMs: number;
  /** A held stage selected again: write nothing when it still selects no node. */
  onlyIfSelected?: boolean;
  /** A rollback: the restore rows written with it (each moved node back to its previous release). */
  restores?: readonly MoveRow[];
  /** An opening: the sightings not yet stored, read over the stored nodes (StageOpening.sightings). */
  sightings?: readonly NodeSighting[];
}

export class DecisionWriter {
  constructor(private readonly deps: DecisionWriterDeps) {}

  /**
   * Writes a decision; resolves with the status as stored, or undefined when nothing was
   * written (onlyIfSelected and still no node). AbortedError when the stored version moved.
   */
  async write(d: Decision): Promise<PlanState | undefined> {
    const { store, metrics } = this.deps;
    if (REFUSED_DURING_STOP.has(d.action)) refuseDuringStop(await store.emergencyStop(), `rollout action ${d.action}`);
    const next = d.outcome.next;
    const stageIndex = d.outcome.opens ?? next.currentStage;
    const fenceEpoch = d.who.actor === CONTROLLER_ACTOR.actor ? this.deps.fence?.() : undefined;
    const audit = auditRecord(
      d.who,
      {
        eventName: ACTION_EVENT_NAMES[d.action],
        category: d.action === "rollback" || d.action === "restored" || d.action === "abort" ? "rollback" : "rollout",
        action: d.action,
        resourceType: "rollout_plan",
        resource: d.planId,
        fields: {
          from_phase: d.before.phase,
          to_phase: next.phase,
          version: next.version,
          stage_id: stageIndex >= 0 ? next.stages[stageIndex].stageId : "",
          moved_nodes: 0,
          ...(d.restores && d.restores.length > 0 ? { restored_nodes: d.restores.length } : {}),
          // The leader epoch the decision was fenced by (HA): an audit trail shows who decided under which epoch.
          ...(fenceEpoch === undefined ? {} : { leader_epoch: fenceEpoch }),
        },
        reason: d.reason,
      },
      d.nowMs,
    );
    let stored: PlanState;
    if (d.outcome.opens === undefined) {
      // Progress of a rollback is status only; its start and its end are audited.
      const audited = d.action === "restoring" ? [] : [audit];
      await store.commitRollout({ expectedVersion: d.before.version, fenceEpoch, status: stateToRow(next), moves: d.restores ?? [], audit: audited });
      stored = next;
      // A rollback moves nodes too (back to what each ran before): they hear of it as of a stage's moves.
      if (d.restores && d.restores.length > 0) for (const moves of restoredMoves(d.planId, d.restores)) this.deps.onMovesCommitted?.(moves);
    } else {
      const opened = await store.openRolloutStage({
        planId: d.planId,
        expectedVersion: d.before.version,
        fenceEpoch,
        next,
        index: d.outcome.opens,
        nowMs: d.nowMs,
        staleAfterMs: this.deps.staleAfterMs,
        onlyIfSelected: d.onlyIfSelected ?? false,
        sightings: d.sightings,
        audit,
      });
      if (!opened) return undefined;
      stored = rowToState(opened.status, d.before.createdAtMs);
      if (opened.nodeIds.length > 0) {
        this.deps.onMovesCommitted?.({ planId: d.planId, stageId: stored.stages[d.outcome.opens].stageId, releaseId: d.releaseId, nodeIds: opened.nodeIds });
      }
    }
    metrics.rolloutTransitions.inc({ action: d.action, phase: stored.phase });
    return stored;
  }
}

/**
 * A rollback's restore rows as the moves they are: one group per release restored. A node that
 * ran no release before the move is restored to "" (its channel's latest unstaged release, as
 * the desired-release rule reads it); the agent reads its desired release on any push.
 */
function restoredMoves(planId: string, restores: readonly MoveRow[]): MovesCommitted[] {
  const groups = new Map<string, MovesCommitted & { nodeIds: string[] }>();
  for (const r of restores) {
    let g = groups.get(r.releaseId);
    if (!g) groups.set(r.releaseId, (g = { planId, stageId: "", releaseId: r.releaseId, nodeIds: [] }));
    g.nodeIds.push(r.nodeId);
  }
  return [...groups.values()];
}
