/**
 * Rows and rules of the operations writes (emergency stop, pins, reapply requests), written
 * once for both dialects: each store reads what a rule needs inside its own transaction and
 * calls it here, so SQLite and PostgreSQL refuse and record the same writes alike.
 */
import { and, eq, isNotNull, lte, sql, type Column, type SQL } from "drizzle-orm";
import type { Node } from "../../gen/autonomy/v1/nodes_pb.js";
import { auditRecord, withFields, type Actor, type AuditRow } from "../domain/audit.js";
import { FailedPreconditionError } from "../domain/errors.js";
import { applyAction } from "../domain/rollout-actions.js";
import { ACTION_EVENT_NAMES } from "../domain/rollouts.js";
import type { RowOf } from "./schema-check.js";
import { rowToPlan, rowToState, stateToRow, type PlanRow, type StatusRow } from "./rollout-rows.js";

/** The one row of emergency_stop, as both dialects hold it (without its id, always 1). */
export type EmergencyStopRow = Omit<RowOf<"emergencyStop">, "id">;

/** The stop to start or end: when, by whom, why, and its audit record. */
export interface EmergencyChange extends Actor {
  atMs: number;
  reason: string;
  audit: AuditRow;
}

/** What starting a stop did: the stop as stored, whether it changed, the plans it halted. */
export interface EmergencyStopResult {
  state: EmergencyStopRow;
  changed: boolean;
  haltedPlanIds: string[];
}

/** A node of the divergence index: diverged since divergedSinceMs. */
export interface DivergedRow {
  node: Node;
  desiredReleaseId: string;
  divergedSinceMs: number;
}

/** A page of the divergence index, longest diverged first (then by node id). */
export interface DivergenceQuery {
  channel?: string;
  /** Only nodes diverged at or before this time. */
  divergedAtOrBeforeMs: number;
  /** The last row of the previous page. */
  after?: { divergedSinceMs: number; nodeId: string };
  limit: number;
}

/** A stop never stored: the migration writes the row, so this is only what an absent row means. */
export const NO_STOP: EmergencyStopRow = {
  active: false,
  sinceMs: null,
  stoppedBy: "",
  reason: "",
  resumedAtMs: null,
  resumedBy: "",
  resumeReason: "",
};

/** The sentence every refusal of a stop carries: what is in force, since when, by whom, and the way out. */
export function describeStop(stop: EmergencyStopRow): string {
  const since = stop.sinceMs === null ? "" : ` since ${new Date(stop.sinceMs).toISOString()}`;
  return `an emergency stop is in force${since} by ${stop.stoppedBy || "unknown"} (reason: "${stop.reason}")`;
}

/** Refuses a write a stop forbids (FailedPrecondition, 409), naming the stop. */
export function refuseDuringStop(stop: EmergencyStopRow | undefined, what: string): void {
  if (stop?.active) throw new FailedPreconditionError(`${describeStop(stop)}: ${what} is refused until "autonomy emergency resume"`);
}

/** The stored row of a stop beginning now. */
export function stopStarted(c: EmergencyChange, previous: EmergencyStopRow): EmergencyStopRow {
  return { ...previous, active: true, sinceMs: c.atMs, stoppedBy: c.actor, reason: c.reason, resumedAtMs: null, resumedBy: "", resumeReason: "" };
}

/** The stored row of a stop lifted now (who stopped and why stay, for the record). */
export function stopEnded(c: EmergencyChange, previous: EmergencyStopRow): EmergencyStopRow {
  return { ...previous, active: false, resumedAtMs: c.atMs, resumedBy: c.actor, resumeReason: c.reason };
}

/**
 * An active or paused plan halted by the stop: its next status (the stage that was open is
 * halted, as an operator's halt does) and the plan's own audit record.
 */
export function haltedByStop(plan: PlanRow, status: StatusRow, c: EmergencyChange): { status: StatusRow; audit: AuditRow } {
  const state = rowToState(status, plan.createdAtMs);
  const { next } = applyAction(rowToPlan(plan), state, "emergency_halt", { nowMs: c.atMs, reason: c.reason, actor: c.actor });
  const index = next.currentStage;
  const audit = auditRecord(
    { actor: c.actor, source: c.source },
    {
      eventName: ACTION_EVENT_NAMES.emergency_halt,
      category: "rollout",
      action: "emergency_halt",
      resourceType: "rollout_plan",
      resource: plan.planId,
      fields: { from_phase: state.phase, to_phase: next.phase, version: next.version, stage_id: index >= 0 ? next.stages[index].stageId : "", moved_nodes: 0 },
      reason: c.reason,
    },
    c.atMs,
  );
  return { status: stateToRow(next), audit };
}

/** The stop's own record completed with the plans it halted. */
export function withHalted(audit: AuditRow, haltedPlanIds: readonly string[]): AuditRow {
  return withFields(audit, { halted_plans: haltedPlanIds });
}

/** A pin needs a release the server knows: the one the node reports. */
export function requirePinnable(nodeId: string, reported: string | null, known: boolean): string {
  if (!reported) throw new FailedPreconditionError(`node "${nodeId}" reports no release: there is nothing to accept; reapply or drain it`);
  if (!known) throw new FailedPreconditionError(`node "${nodeId}" reports release "${reported}", which this server does not know: it cannot be accepted; reapply or drain it`);
  return reported;
}

/** A reapply needs a desired release. */
export function requireDesired(nodeId: string, desired: string | null): string {
  if (!desired) throw new FailedPreconditionError(`node "${nodeId}" has no desired release: there is nothing to reapply`);
  return desired;
}

/** The divergence index's condition of a page, for either dialect's nodes table (index nodes_diverged or nodes_channel_diverged). */
export function divergenceWhere(t: { channel: Column; divergedSinceMs: Column; nodeId: Column }, q: DivergenceQuery): SQL {
  const parts: SQL[] = [isNotNull(t.divergedSinceMs), lte(t.divergedSinceMs, q.divergedAtOrBeforeMs)];
  if (q.channel !== undefined) parts.push(eq(t.channel, q.channel));
  if (q.after) parts.push(sql`(${t.divergedSinceMs}, ${t.nodeId}) > (${q.after.divergedSinceMs}, ${q.after.nodeId})`);
  return and(...parts)!;
}
