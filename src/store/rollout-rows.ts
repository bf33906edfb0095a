import { create, fromJsonString } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import {
  MovedNodeSchema,
  RolloutPlanSchema,
  RolloutStatusSchema,
  StageStatusSchema,
  type MovedNode,
  type RolloutPlan,
  type RolloutStatus,
} from "../../gen/autonomy/v1/rollouts_pb.js";
import type { AuditRow } from "../domain/audit.js";
import { shownStagePhase, waitingReason, type PlanPhase, type PlanState, type StageState, type StageTally } from "../domain/rollouts.js";

/** Rows of the rollout tables as both dialects hold them (see sqlite/schema.ts and pg/schema.ts). */
export interface PlanRow {
  planId: string;
  releaseId: string;
  channel: string;
  /** Canonical JSON of the spec: exactly the signed bytes. */
  spec: string;
  /** Ed25519 signature of spec, base64. */
  signature: string;
  keyId: string;
  createdAtMs: number;
}

export interface StatusRow {
  planId: string;
  version: number;
  phase: string;
  currentStage: number;
  reason: string;
  updatedAtMs: number;
  /** JSON array of StageState. */
  stages: string;
}

export interface MoveRow {
  planId: string;
  stageId: string;
  nodeId: string;
  releaseId: string;
  movedAtMs: number;
  /** "move" (to the plan's release; the default) or "restore" (a rollback's, to previousReleaseId of the move). */
  kind?: string;
  /** A move: the release the node ran before it (null: none known). */
  previousReleaseId?: string | null;
}

export type { AuditRow };

/**
 * One node of a plan's stage with what the stage's counts need: its move, its ack of the
 * plan's release (none yet: the ack fields are undefined) and its last-seen time as stored.
 */
export interface StageNodeRow {
  nodeId: string;
  movedAtMs: number;
  ackState?: string;
  ackReportedReleaseId?: string;
  ackUpdatedAtMs?: number;
  lastSeenMs?: number;
}

export interface SigningKeyRow {
  keyId: string;
  publicKeyPem: string;
  createdAtMs: number;
}

/** A plan with its status, as stored. */
export interface RolloutRecord {
  plan: PlanRow;
  status: StatusRow;
}

/**
 * A change of a plan's status, written in one transaction with the node moves it makes and
 * its audit records. It applies only while the stored version is `expectedVersion`.
 */
export interface RolloutChange {
  expectedVersion: number;
  /** A leader-only write: commits only while this leader epoch is current (PostgreSQL; src/ha/). */
  fenceEpoch?: number;
  status: StatusRow;
  moves: readonly MoveRow[];
  audit: readonly AuditRow[];
}

export function stateToRow(s: PlanState): StatusRow {
  return {
    planId: s.planId,
    version: s.version,
    phase: s.phase,
    currentStage: s.currentStage,
    reason: s.reason,
    updatedAtMs: s.updatedAtMs,
    stages: JSON.stringify(s.stages),
  };
}

export function rowToState(r: StatusRow, createdAtMs: number): PlanState {
  return {
    planId: r.planId,
    phase: r.phase as PlanPhase,
    version: r.version,
    currentStage: r.currentStage,
    reason: r.reason,
    createdAtMs,
    updatedAtMs: r.updatedAtMs,
    stages: JSON.parse(r.stages) as StageState[],
  };
}

export function rowToPlan(r: PlanRow): RolloutPlan {
  return fromJsonString(RolloutPlanSchema, r.spec);
}

const ts = (ms: number | undefined) => (ms === undefined ? undefined : timestampFromMs(ms));

/**
 * The status message of a plan. `live` gives the controller's current counts of a stage by
 * index, which replace the counts stored at the last transition.
 */
export function stateToStatus(s: PlanState, live?: (index: number) => StageTally | undefined): RolloutStatus {
  return create(RolloutStatusSchema, {
    planId: s.planId,
    phase: s.phase,
    version: s.version,
    currentStageId: s.currentStage >= 0 ? s.stages[s.currentStage].stageId : "",
    reason: s.reason,
    createdAt: timestampFromMs(s.createdAtMs),
    updatedAt: timestampFromMs(s.updatedAtMs),
    stages: s.stages.map((st, i) => {
      const t = live?.(i) ?? st.tally;
      const healthy = t?.healthy ?? 0;
      const failed = t?.failed ?? 0;
      const unreachable = t?.unreachable ?? 0;
      return create(StageStatusSchema, {
        stageId: st.stageId,
        phase: shownStagePhase(st),
        nodeCount: st.nodeCount,
        healthy,
        failed,
        unreachable,
        pending: Math.max(0, st.nodeCount - healthy - failed - unreachable),
        gatedEvents: t?.gatedEvents ?? 0,
        openedAt: ts(st.openedAtMs),
        settledAt: ts(t?.settledAtMs),
        closedAt: ts(st.closedAtMs),
        manualApproved: st.manualApproved,
        detail: waitingReason(st) ?? st.detail,
      });
    }),
  });
}

export function rowToMovedNode(m: MoveRow): MovedNode {
  return create(MovedNodeSchema, { nodeId: m.nodeId, stageId: m.stageId, movedAt: timestampFromMs(m.movedAtMs) });
}
