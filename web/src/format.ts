import { timestampMs, type Timestamp } from "@bufbuild/protobuf/wkt";
import type { GateStatus, RolloutPlan, RolloutStatus } from "../../gen/autonomy/v1/rollouts_pb.js";

/** "4m12s", "2h03m", "12s". */
export function duration(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m${String(s % 60).padStart(2, "0")}s`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h}h${String(m % 60).padStart(2, "0")}m`;
  return `${Math.floor(h / 24)}d${String(h % 24).padStart(2, "0")}h`;
}

export function when(ts: Timestamp | undefined): string {
  if (!ts) return "never";
  return new Date(timestampMs(ts)).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

/** An RFC 3339 string as `when` shows a timestamp; "never" when empty. */
export function whenRfc3339(text: string): string {
  if (text === "") return "never";
  const ms = Date.parse(text);
  return Number.isNaN(ms) ? text : new Date(ms).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

/** Seconds as "0.4 s", "12 s", "3m05s". */
export function seconds(s: number): string {
  if (s < 10) return `${s.toFixed(1)} s`;
  if (s < 60) return `${Math.round(s)} s`;
  return duration(s * 1000);
}

export function ago(ts: Timestamp | undefined, nowMs: number): string {
  if (!ts) return "never";
  return `${duration(nowMs - timestampMs(ts))} ago`;
}

/**
 * What an unfinished plan waits on, in words, from its status and the open stage's gates:
 * "stage canary: manual approval; 3 of 4 healthy, needs 4; soak 4m12s left".
 */
export function waitingOn(plan: RolloutPlan, status: RolloutStatus, gates: readonly GateStatus[] | undefined, nowMs: number): string {
  switch (status.phase) {
    case "completed":
      return "completed: every stage passed";
    case "cancelled":
    case "rolled_back":
      return `${status.phase.replace("_", " ")}${status.reason ? `: ${status.reason}` : ""}`;
    case "published":
      return "waiting for the controller to open the first stage";
    case "paused":
      return `paused by an operator${status.reason ? `: ${status.reason}` : ""}; resume to continue`;
    case "halted":
      return `halted${status.reason ? `: ${status.reason}` : ""}; resume or recover`;
    case "rolling_back":
      return status.reason || "rolling back: the moved nodes reinstall the release they ran before";
  }
  const stageId = status.currentStageId;
  if (!stageId) return "waiting for the first stage to open";
  const stage = status.stages.find((s) => s.stageId === stageId);
  // Selected no node: held until some node qualifies (the controller selects again) or an operator promotes it.
  if (stage?.phase === "waiting") return `stage ${stageId} waiting for nodes: ${stage.detail}; promote to go on without it`;
  if (!gates) return `stage ${stageId}: reading its gates`;
  const spec = plan.stages.find((s) => s.stageId === stageId);
  const open = gates.filter((g) => !g.passed);
  if (open.length === 0) return `stage ${stageId}: every gate passed; advancing`;
  const parts = open.map((g) => {
    switch (g.kind) {
      case "manual":
        return "manual approval";
      case "time_soak": {
        const seconds = spec?.gates.find((x) => x.kind === "time_soak")?.seconds ?? 0;
        if (stage?.settledAt) return `soak ${duration(timestampMs(stage.settledAt) + seconds * 1000 - nowMs)} left`;
        return `soak of ${duration(seconds * 1000)} starts when every node has acked`;
      }
      case "success_ratio":
        return `success ${g.detail}`;
      default:
        return `${g.kind.replace(/_/g, " ")}: ${g.detail}`;
    }
  });
  return `stage ${stageId}: ${parts.join("; ")}`;
}

/** Operator actions a phase allows: the transition table of the server (src/domain/rollouts.ts), less the controller's own. */
export const PHASE_ACTIONS: Readonly<Record<string, readonly string[]>> = {
  published: ["retry", "cancel", "rollback", "abort"],
  active: ["pause", "halt", "promote", "approve", "retry", "skip_failed", "cancel", "rollback", "abort"],
  paused: ["resume", "approve", "cancel", "rollback", "abort"],
  halted: ["resume", "retry", "skip_failed", "cancel", "rollback", "abort"],
  rolling_back: ["abort"],
  completed: [],
  cancelled: [],
  rolled_back: [],
};

/** One step of a cumulative curve: at `atMs`, `count` nodes were in the state. */
export interface Step {
  atMs: number;
  count: number;
}

/**
 * When each node reached the ack state it is in now, as cumulative curves per state (from the
 * stored acks' updated_at: the store keeps each node's newest ack of a release, so a node that
 * moved on from a state is counted only in its current one).
 */
export function ackCurves(acks: readonly { state: string; updatedAt?: Timestamp }[]): Map<string, Step[]> {
  const byState = new Map<string, number[]>();
  for (const a of acks) {
    if (!a.updatedAt) continue;
    const list = byState.get(a.state) ?? [];
    list.push(timestampMs(a.updatedAt));
    byState.set(a.state, list);
  }
  const curves = new Map<string, Step[]>();
  for (const [state, times] of byState) {
    times.sort((x, y) => x - y);
    curves.set(state, times.map((atMs, i) => ({ atMs, count: i + 1 })));
  }
  return curves;
}
