import { nodeLifecycle } from "../domain/nodes.js";
import { withStageOpened } from "../domain/rollout-actions.js";
import { gatedEventType, selectStageNodes, type Candidate, type PlanState, type RankKeys } from "../domain/rollouts.js";
import type { NodeSighting } from "./fleet-rows.js";
import { rowToPlan, stateToRow, type AuditRow, type MoveRow, type PlanRow, type StatusRow } from "./rollout-rows.js";

/**
 * A stage opening, written in one transaction by Store.openRolloutStage: the store selects
 * the stage's nodes among the channel's nodes as it holds them, writes their moves, the
 * status with the stage opened and the audit record, only while the stored version is
 * expectedVersion. Selecting inside the store keeps the read of a whole channel and its
 * ranking off the server's event loop (SQLite runs it in the writer thread).
 */
export interface StageOpening {
  planId: string;
  expectedVersion: number;
  /** A leader-only write: commits only while this leader epoch is current (PostgreSQL; src/ha/). */
  fenceEpoch?: number;
  /** The status the action leads to (applyAction's next); stage `index` is opened in it. */
  next: PlanState;
  index: number;
  nowMs: number;
  /** A node is HEALTHY when not drained and seen within this long (--node-stale-after). */
  staleAfterMs: number;
  /** Write nothing when no node is selected (a held stage selected again). */
  onlyIfSelected: boolean;
  /**
   * Sightings this server holds that the store may not have yet (its SightingBuffer): the
   * selection reads each over the stored node as writing it would (newer last seen, its
   * reported release), so a node seen a moment ago counts as HEALTHY and its move records
   * the release it reported. Passing them spares writing the buffer before every opening.
   */
  sightings?: readonly NodeSighting[];
  /** The action's audit record; its fields get the number of nodes moved. */
  audit: AuditRow;
}

/** What an opening wrote: the new status and the nodes it moved. */
export interface OpenedStage {
  status: StatusRow;
  nodeIds: string[];
}

/** A node of the channel as the selection sees it. */
export interface CandidateRow {
  nodeId: string;
  labels: string;
  drained: boolean | number;
  lastSeenMs: number | null;
  /** What it runs (its reported release), else what it was to run: recorded with its move for a rollback. */
  reportedReleaseId: string | null;
  desiredReleaseId: string | null;
}

/**
 * The rows an opening writes, from what the store read in its transaction: the channel's
 * nodes, the nodes the plan moved already, the newest event sequence. Undefined when the
 * opening writes nothing (onlyIfSelected and no node selected). Both stores call this, so
 * the rule is written once.
 */
export function planStageOpening(
  plan: PlanRow,
  o: StageOpening,
  stored: readonly CandidateRow[],
  taken: ReadonlySet<string>,
  newestEventSeq: () => bigint,
  ranks?: RankKeys,
): { status: StatusRow; moves: MoveRow[]; audit: AuditRow } | undefined {
  const fleet = o.sightings && o.sightings.length > 0 ? withSightings(stored, o.sightings) : stored;
  const spec = rowToPlan(plan);
  const stage = spec.stages[o.index];
  const withLabels = Object.keys(stage.matchLabels).length > 0;
  const candidates: Candidate[] = fleet.map((n) => ({
    nodeId: n.nodeId,
    labels: withLabels ? (JSON.parse(n.labels) as Record<string, string>) : {},
    healthy: nodeLifecycle({ drained: Boolean(n.drained), lastSeenMs: n.lastSeenMs ?? undefined }, o.nowMs, o.staleAfterMs) === "HEALTHY",
  }));
  const selection = selectStageNodes(plan.planId, stage, candidates, taken, ranks);
  if (o.onlyIfSelected && selection.nodeIds.length === 0) return undefined;
  const selected = new Set(selection.nodeIds);
  const previous = new Map<string, string | null>();
  for (const n of fleet) if (selected.has(n.nodeId)) previous.set(n.nodeId, previousRelease(n));
  const eventSeq = gatedEventType(stage) === undefined ? undefined : newestEventSeq();
  const next = withStageOpened(o.next, o.index, selection, o.nowMs, eventSeq);
  const fields = { ...(JSON.parse(o.audit.fieldsJson) as object), stage_id: stage.stageId, moved_nodes: selection.nodeIds.length };
  return {
    status: stateToRow(next),
    moves: selection.nodeIds.map((nodeId) => ({
      planId: plan.planId,
      stageId: stage.stageId,
      nodeId,
      releaseId: plan.releaseId,
      movedAtMs: o.nowMs,
      kind: "move",
      previousReleaseId: previous.get(nodeId) ?? null,
    })),
    audit: { ...o.audit, fieldsJson: JSON.stringify(fields) },
  };
}

/**
 * The channel's nodes with the sightings not yet stored applied, by the rule the store writes
 * them with (recordSightings): the newer last seen wins, and a sighting's reported release
 * replaces the stored one when it is not older than the stored last seen.
 */
function withSightings(fleet: readonly CandidateRow[], sightings: readonly NodeSighting[]): CandidateRow[] {
  const byNode = new Map<string, NodeSighting>();
  for (const s of sightings) byNode.set(s.nodeId, s);
  return fleet.map((n) => {
    const s = byNode.get(n.nodeId);
    if (!s) return n;
    const stored = n.lastSeenMs ?? 0;
    const newer = s.lastSeenMs >= stored;
    return {
      ...n,
      lastSeenMs: Math.max(stored, s.lastSeenMs),
      reportedReleaseId: newer && s.reportedReleaseId !== undefined ? s.reportedReleaseId : n.reportedReleaseId,
    };
  });
}

/** The release a node ran before a move: the one it reports, else the one it was to run; null when neither. */
function previousRelease(n: CandidateRow): string | null {
  if (n.reportedReleaseId) return n.reportedReleaseId;
  return n.desiredReleaseId || null;
}
