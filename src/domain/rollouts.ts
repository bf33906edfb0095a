import { hash } from "node:crypto";
import type { Gate, RolloutPlan, Stage } from "../../gen/autonomy/v1/rollouts_pb.js";
import { FailedPreconditionError, ValidationError } from "./errors.js";
import { checkBytes, checkId, checkText, MAX_LABEL_VALUE_BYTES } from "./fields.js";

export const MAX_STAGES = 100;
export const MAX_STAGE_NODE_IDS = 10_000;
export const MAX_DESCRIPTION_BYTES = 4096;
export const MAX_REASON_BYTES = 1024;
/** Longest time_soak and deadline: 30 days. */
export const MAX_SECONDS = 30 * 24 * 3600;
export const DEFAULT_STUCK_THRESHOLD_SECONDS = 3600;

// ---------------------------------------------------------------------------------------
// The phase machine. One table: which action each phase allows, and the phase it leads to.

export const PLAN_PHASES = ["published", "active", "paused", "halted", "rolling_back", "completed", "cancelled", "rolled_back"] as const;
export type PlanPhase = (typeof PLAN_PHASES)[number];
export const STAGE_PHASES = ["pending", "open", "passed", "halted", "skipped"] as const;
export type StagePhase = (typeof STAGE_PHASES)[number];
/**
 * The phases a stage is shown in: its stored phase, except that an open stage that selected no
 * node (and is not covered by earlier stages) is shown `waiting` until some node qualifies.
 * `waiting` is never stored; every action treats such a stage as open.
 */
export type ShownStagePhase = StagePhase | "waiting";

/**
 * Operator actions, recovery strategies, and the controller's own moves: `start` opens the
 * first stage of a published plan, `advance` opens the next stage after every gate passed,
 * `auto_halt` is a gate halting the plan, `select` selects the nodes of an open stage that
 * selected none again (some qualify now), `approve` records a manual gate's approval,
 * `emergency_halt` is the emergency stop halting an unfinished plan, `restoring` records how far
 * a rollback got, `restored` ends it once every moved node runs its previous release again.
 */
export const ACTIONS = [
  "start",
  "pause",
  "resume",
  "promote",
  "halt",
  "cancel",
  "retry",
  "rollback",
  "abort",
  "skip_failed",
  "approve",
  "advance",
  "auto_halt",
  "select",
  "emergency_halt",
  "restoring",
  "restored",
] as const;
export type Action = (typeof ACTIONS)[number];

export const RECOVERY_STRATEGIES = ["retry", "rollback", "abort", "skip_failed"] as const satisfies readonly Action[];
export type RecoveryStrategy = (typeof RECOVERY_STRATEGIES)[number];

/**
 * The transition table. A missing cell is a forbidden action. `advance`, `promote` and
 * `skip_failed` lead to `active`, or to `completed` when the stage they close was the last.
 * `rollback` gives every moved node its previous release back and waits in `rolling_back`
 * until they run it; `abort` ends the plan where it is (no new move, nodes keep what they have).
 */
export const TRANSITIONS: Readonly<Record<PlanPhase, Partial<Record<Action, PlanPhase>>>> = {
  published: { start: "active", retry: "active", cancel: "cancelled", rollback: "rolling_back", abort: "cancelled", emergency_halt: "halted" },
  active: {
    pause: "paused",
    halt: "halted",
    auto_halt: "halted",
    promote: "active",
    advance: "active",
    select: "active",
    approve: "active",
    retry: "active",
    skip_failed: "active",
    cancel: "cancelled",
    rollback: "rolling_back",
    abort: "cancelled",
    emergency_halt: "halted",
  },
  paused: { resume: "active", approve: "paused", cancel: "cancelled", rollback: "rolling_back", abort: "cancelled", emergency_halt: "halted" },
  halted: { resume: "active", retry: "active", skip_failed: "active", cancel: "cancelled", rollback: "rolling_back", abort: "cancelled" },
  rolling_back: { restoring: "rolling_back", restored: "rolled_back", abort: "cancelled" },
  completed: {},
  cancelled: {},
  rolled_back: {},
};

export const TERMINAL_PHASES: readonly PlanPhase[] = ["completed", "cancelled", "rolled_back"];

export function isTerminal(phase: PlanPhase): boolean {
  return TERMINAL_PHASES.includes(phase);
}

/** The phase an action leads to, or FailedPreconditionError naming the phase. */
export function transition(phase: PlanPhase, action: Action): PlanPhase {
  const next = TRANSITIONS[phase][action];
  if (next === undefined) {
    const allowed = Object.keys(TRANSITIONS[phase]).filter((a) => !SYSTEM_ACTIONS.includes(a as Action));
    const hint = allowed.length === 0 ? "it is finished" : `allowed: ${allowed.join(", ")}`;
    throw new FailedPreconditionError(`cannot ${action}: the plan is ${phase} (${hint})`);
  }
  return next;
}

/** Actions only the controller takes. */
export const SYSTEM_ACTIONS: readonly Action[] = ["start", "advance", "auto_halt", "select", "emergency_halt", "restoring", "restored"];

/** The audit event name of an action, e.g. rollout.plan.paused. */
export const ACTION_EVENT_NAMES: Readonly<Record<Action, string>> = {
  start: "rollout.plan.started",
  pause: "rollout.plan.paused",
  resume: "rollout.plan.resumed",
  promote: "rollout.stage.promoted",
  halt: "rollout.plan.halted",
  cancel: "rollout.plan.cancelled",
  retry: "rollout.plan.retried",
  rollback: "rollout.plan.rollback_started",
  abort: "rollout.plan.aborted",
  skip_failed: "rollout.stage.skipped",
  approve: "rollout.gate.approved",
  advance: "rollout.stage.passed",
  auto_halt: "rollout.plan.auto_halted",
  select: "rollout.stage.selected",
  emergency_halt: "rollout.plan.emergency_halted",
  restoring: "rollout.plan.rollback_progressed",
  restored: "rollout.plan.rolled_back",
};

// ---------------------------------------------------------------------------------------
// The persisted status.

export interface StageState {
  stageId: string;
  phase: StagePhase;
  nodeCount: number;
  openedAtMs?: number;
  /** The newest event sequence when the stage opened: event_rate counts events after it. */
  openedEventSeq?: string;
  closedAtMs?: number;
  manualApproved: boolean;
  detail: string;
  /** Opened with no node to move because earlier stages moved every node it targets: it passes as it opens. */
  covered?: boolean;
  /** Counts as of the last write; live counts come from the controller. */
  tally?: StageTally;
}

export interface PlanState {
  planId: string;
  phase: PlanPhase;
  version: number;
  /** Index of the stage in progress, -1 before the first opens. */
  currentStage: number;
  reason: string;
  createdAtMs: number;
  updatedAtMs: number;
  stages: StageState[];
}

export function initialPlanState(plan: RolloutPlan, nowMs: number): PlanState {
  return {
    planId: plan.planId,
    phase: "published",
    version: 1,
    currentStage: -1,
    reason: "",
    createdAtMs: nowMs,
    updatedAtMs: nowMs,
    stages: plan.stages.map((s) => ({ stageId: s.stageId, phase: "pending", nodeCount: 0, manualApproved: false, detail: "" })),
  };
}

// ---------------------------------------------------------------------------------------
// Validation of a plan before it is published.

const GATE_FIELDS: Readonly<Record<string, readonly (keyof Gate)[]>> = {
  time_soak: ["seconds"],
  success_ratio: ["minRatio", "minSample"],
  max_failure_ratio: ["maxRatio"],
  manual: [],
  event_rate: ["eventType", "maxPerNodeHour"],
};
export const GATE_KINDS = Object.keys(GATE_FIELDS);
const PARAM_NAMES: Readonly<Record<string, string>> = {
  seconds: "seconds",
  minRatio: "min_ratio",
  minSample: "min_sample",
  maxRatio: "max_ratio",
  eventType: "event_type",
  maxPerNodeHour: "max_per_node_hour",
};

function checkGate(g: Gate, at: string): void {
  const allowed = GATE_FIELDS[g.kind];
  if (allowed === undefined) throw new ValidationError(`${at}.kind`, `must be one of ${GATE_KINDS.join(", ")}`);
  for (const [field, name] of Object.entries(PARAM_NAMES)) {
    const value = g[field as keyof Gate];
    if (value !== 0 && value !== "" && !allowed.includes(field as keyof Gate)) {
      throw new ValidationError(`${at}.${name}`, `not a parameter of a ${g.kind} gate`);
    }
  }
  const finite = (v: number) => Number.isFinite(v);
  switch (g.kind) {
    case "time_soak":
      if (!Number.isInteger(g.seconds) || g.seconds < 1 || g.seconds > MAX_SECONDS) {
        throw new ValidationError(`${at}.seconds`, `must be 1 to ${MAX_SECONDS}`);
      }
      break;
    case "success_ratio":
      if (!finite(g.minRatio) || g.minRatio <= 0 || g.minRatio > 1) throw new ValidationError(`${at}.min_ratio`, "must be above 0 and at most 1");
      if (g.minSample < 0) throw new ValidationError(`${at}.min_sample`, "must not be negative");
      break;
    case "max_failure_ratio":
      if (!finite(g.maxRatio) || g.maxRatio < 0 || g.maxRatio >= 1) throw new ValidationError(`${at}.max_ratio`, "must be at least 0 and below 1");
      break;
    case "event_rate":
      checkId(g.eventType, `${at}.event_type`, true);
      if (!finite(g.maxPerNodeHour) || g.maxPerNodeHour <= 0) throw new ValidationError(`${at}.max_per_node_hour`, "must be above 0");
      break;
  }
}

function checkStage(s: Stage, at: string): void {
  checkId(s.stageId, `${at}.stage_id`, true);
  const ways = [s.nodeIds.length > 0, Object.keys(s.matchLabels).length > 0, s.percent !== 0].filter(Boolean).length;
  if (ways !== 1) throw new ValidationError(at, "select nodes in exactly one way: node_ids, match_labels or percent");
  if (s.nodeIds.length > MAX_STAGE_NODE_IDS) throw new ValidationError(`${at}.node_ids`, `at most ${MAX_STAGE_NODE_IDS}`);
  const ids = new Set<string>();
  s.nodeIds.forEach((id, i) => {
    checkId(id, `${at}.node_ids[${i}]`, true);
    if (ids.has(id)) throw new ValidationError(`${at}.node_ids[${i}]`, `duplicate node id "${id}"`);
    ids.add(id);
  });
  Object.entries(s.matchLabels).forEach(([k, v]) => {
    checkId(k, `${at}.match_labels`, true);
    checkText(v, `${at}.match_labels.${k}`, MAX_LABEL_VALUE_BYTES);
  });
  if (s.percent !== 0 && (!Number.isFinite(s.percent) || s.percent < 0 || s.percent > 100)) {
    throw new ValidationError(`${at}.percent`, "must be above 0 and at most 100");
  }
  if (!Number.isInteger(s.deadlineSeconds) || s.deadlineSeconds < 0 || s.deadlineSeconds > MAX_SECONDS) {
    throw new ValidationError(`${at}.deadline_seconds`, `must be 0 (none) to ${MAX_SECONDS}`);
  }
  const kinds = new Set<string>();
  s.gates.forEach((g, i) => {
    checkGate(g, `${at}.gates[${i}]`);
    if (kinds.has(g.kind)) throw new ValidationError(`${at}.gates[${i}].kind`, `a stage holds at most one ${g.kind} gate`);
    kinds.add(g.kind);
  });
}

/** Checks a plan before it is published; the error names the field, e.g. plan.stages[1].gates[0].min_ratio. */
export function validateRolloutPlan(p: RolloutPlan | undefined): asserts p is RolloutPlan {
  if (p === undefined) throw new ValidationError("plan", "required");
  checkId(p.planId, "plan.plan_id", false);
  checkId(p.releaseId, "plan.release_id", true);
  checkId(p.channel, "plan.channel", false);
  checkBytes(p.description, "plan.description", MAX_DESCRIPTION_BYTES);
  if (p.stages.length === 0) throw new ValidationError("plan.stages", "at least one stage is required");
  if (p.stages.length > MAX_STAGES) throw new ValidationError("plan.stages", `at most ${MAX_STAGES}`);
  const ids = new Set<string>();
  const explicit = new Map<string, string>();
  let lastPercent: { at: string; percent: number } | undefined;
  p.stages.forEach((s, i) => {
    const at = `plan.stages[${i}]`;
    checkStage(s, at);
    if (s.percent !== 0) {
      // Percentages are cumulative: a lower one than an earlier stage's would select nothing.
      if (lastPercent !== undefined && s.percent < lastPercent.percent) {
        throw new ValidationError(`${at}.percent`, `${s.percent} is below ${lastPercent.percent} of ${lastPercent.at}: percentages are cumulative and must not go down`);
      }
      lastPercent = { at, percent: s.percent };
    }
    if (ids.has(s.stageId)) throw new ValidationError(`${at}.stage_id`, `duplicate stage id "${s.stageId}"`);
    ids.add(s.stageId);
    s.nodeIds.forEach((id, j) => {
      const other = explicit.get(id);
      if (other !== undefined) throw new ValidationError(`${at}.node_ids[${j}]`, `node "${id}" is already in stage "${other}"`);
      explicit.set(id, s.stageId);
    });
  });
}

/** Checks an operator's reason: required, bounded. */
export function checkReason(reason: string): void {
  if (reason.trim() === "") throw new ValidationError("reason", "required: say why, it goes into the audit trail");
  checkBytes(reason, "reason", MAX_REASON_BYTES);
}

// ---------------------------------------------------------------------------------------
// Node selection: deterministic, among HEALTHY nodes no earlier stage took.

export interface Candidate {
  nodeId: string;
  labels: Record<string, string>;
  healthy: boolean;
}

export interface Selection {
  nodeIds: string[];
  detail: string;
  /** Nothing to move: every node the stage targets was moved by an earlier stage (its target is met). */
  covered?: boolean;
}

/** The order percentage stages pick nodes in: a hash of plan and node id, the same on every replica. */
export function selectionRank(planId: string, nodeId: string): string {
  return rankDigest(planId, nodeId).toString("hex");
}

/** The SHA-256 digest whose hex is the selection rank. */
function rankDigest(planId: string, nodeId: string): Buffer {
  return hash("sha256", `${planId}\n${nodeId}`, "buffer");
}

/** A rank's first 52 bits, read from its digest as a number (exact in a double): 6 bytes and the high half of the seventh. */
const rankKeyOf = (d: Buffer): number => d.readUIntBE(0, 6) * 16 + (d[6] >> 4);

/**
 * The rank keys (rankKeyOf) of one plan's nodes, kept between its stage openings by whoever
 * opens them (the store): a node's rank never changes, so an opening hashes only the nodes no
 * earlier opening of the plan ranked. Holds one plan at a time; another plan starts it over.
 */
export class RankKeys {
  private planId = "";
  private keys = new Map<string, number>();

  key(planId: string, nodeId: string): number {
    if (planId !== this.planId) {
      this.planId = planId;
      this.keys = new Map();
    }
    let k = this.keys.get(nodeId);
    if (k === undefined) this.keys.set(nodeId, (k = rankKeyOf(rankDigest(planId, nodeId))));
    return k;
  }
}

/**
 * The `need` candidates of lowest selectionRank (in no particular order: callers sort). The
 * same set as sorting the rank strings, found without sorting them: each rank's key (its first
 * 52 bits) goes into a typed array that sorts natively; the need-th smallest is the threshold,
 * and only ranks equal to it on those bits are compared whole. A stage that takes every free
 * candidate ranks none.
 */
function lowestRanked(planId: string, free: readonly Candidate[], need: number, ranks: RankKeys): string[] {
  if (need >= free.length) return free.map((c) => c.nodeId);
  if (need <= 0) return [];
  const keys = Float64Array.from(free, (c) => ranks.key(planId, c.nodeId));
  const threshold = Float64Array.from(keys).sort()[need - 1];
  const out: string[] = [];
  const ties: number[] = [];
  for (let i = 0; i < free.length; i++) {
    if (keys[i] < threshold) out.push(free[i].nodeId);
    else if (keys[i] === threshold) ties.push(i);
  }
  const digest = (i: number) => rankDigest(planId, free[i].nodeId);
  ties.sort((a, b) => Buffer.compare(digest(a), digest(b)));
  for (const i of ties.slice(0, need - out.length)) out.push(free[i].nodeId);
  return out;
}

/**
 * The nodes a stage moves. `fleet` is every node of the plan's channel; `taken` the nodes
 * earlier stages moved. Explicit ids keep their order; other selections come out sorted.
 * `ranks` keeps the plan's rank keys for its next opening (a new one ranks from scratch).
 */
export function selectStageNodes(planId: string, stage: Stage, fleet: readonly Candidate[], taken: ReadonlySet<string>, ranks = new RankKeys()): Selection {
  const free = (c: Candidate) => c.healthy && !taken.has(c.nodeId);
  if (stage.nodeIds.length > 0) {
    const byId = new Map(fleet.map((c) => [c.nodeId, c]));
    const chosen: string[] = [];
    const left: string[] = [];
    for (const id of stage.nodeIds) {
      const c = byId.get(id);
      if (c === undefined) left.push(`${id} (not in the channel)`);
      else if (taken.has(id)) left.push(`${id} (in an earlier stage)`);
      else if (!c.healthy) left.push(`${id} (not HEALTHY)`);
      else chosen.push(id);
    }
    const covered = chosen.length === 0 && stage.nodeIds.every((id) => taken.has(id));
    if (covered) return { nodeIds: [], detail: "every node it names was moved by an earlier stage", covered };
    return { nodeIds: chosen, detail: left.length === 0 ? "" : `left out: ${left.join(", ")}` };
  }
  if (Object.keys(stage.matchLabels).length > 0) {
    const matches = fleet.filter((c) => Object.entries(stage.matchLabels).every(([k, v]) => c.labels[k] === v));
    const chosen = matches.filter(free).map((c) => c.nodeId);
    const unhealthy = matches.filter((c) => !c.healthy && !taken.has(c.nodeId)).length;
    chosen.sort();
    const labels = Object.entries(stage.matchLabels).map(([k, v]) => `${k}=${v}`).join(",");
    const detail =
      unhealthy > 0
        ? `left out ${unhealthy} matching node(s) that were not HEALTHY`
        : chosen.length === 0
          ? matches.length === 0
            ? `no node of the channel matches ${labels}`
            : `every node matching ${labels} is in an earlier stage`
          : "";
    const covered = chosen.length === 0 && unhealthy === 0 && matches.length > 0;
    return { nodeIds: chosen, detail, ...(covered ? { covered } : {}) };
  }
  const target = Math.ceil((stage.percent / 100) * fleet.length - 1e-9);
  const need = Math.max(0, target - taken.size);
  const chosen = lowestRanked(planId, fleet.filter(free), need, ranks);
  chosen.sort();
  const detail =
    chosen.length < need
      ? `selected ${chosen.length} of ${need}: too few HEALTHY nodes`
      : need === 0
        ? `earlier stages already cover ${taken.size} of ${fleet.length} node(s), ${stage.percent} % needs ${target}`
        : "";
  return { nodeIds: chosen, detail, ...(need === 0 && target > 0 ? { covered: true } : {}) };
}

// ---------------------------------------------------------------------------------------
// Gate evaluation: pure, from counts the controller keeps up to date.

export interface StageTally {
  nodeCount: number;
  healthy: number;
  failed: number;
  unreachable: number;
  /** When every stage node had sent a final ack (healthy or failed); undefined until then. */
  settledAtMs?: number;
  /** Events of the event_rate gate's type since the stage opened. */
  gatedEvents: number;
}

export interface GateResult {
  kind: string;
  passed: boolean;
  detail: string;
}

export interface StageEvaluation {
  gates: GateResult[];
  allPassed: boolean;
  /** Set when a gate halts the plan: the reason recorded. */
  halt?: string;
  /** The next moment a gate may change by time alone. */
  wakeAtMs?: number;
  /** Set when the stage is held whatever its gates (no node selected, counts incomplete): why. */
  held?: string;
}

const ratio = (n: number) => Number(n.toFixed(3)).toString();

/** What a stage that selected no node says about it. */
const noNodeDetail = (state: StageState) => `no node selected: ${state.detail || "the selector matched no HEALTHY node"}`;

/** Why an open stage waits for nodes (it selected none and earlier stages did not cover it), or undefined. */
export function waitingReason(state: StageState): string | undefined {
  if (state.phase !== "open" || state.nodeCount !== 0 || state.covered) return undefined;
  return noNodeDetail(state);
}

/** The phase a stage is shown in: `waiting` for an open stage that selected no node, else its phase. */
export function shownStagePhase(state: StageState): ShownStagePhase {
  return waitingReason(state) === undefined ? state.phase : "waiting";
}

/** Why a stage is held whatever its gates say: it selected no node, or its counts are not those of its nodes. */
function heldDetail(state: StageState, t: StageTally): string | undefined {
  if (state.phase === "pending") return "the stage has not opened yet";
  if (state.nodeCount === 0) return noNodeDetail(state);
  if (t.nodeCount !== state.nodeCount) return `counting the stage's nodes: ${t.nodeCount} of ${state.nodeCount} counted`;
  return undefined;
}

/**
 * The gates of a stage against its counts. A stage that selected no node, or whose counts
 * do not cover its nodes, passes no gate and halts nothing: it is held until nodes qualify
 * (the controller selects again) or an operator promotes or skips it.
 */
export function evaluateStage(stage: Stage, state: StageState, t: StageTally, nowMs: number): StageEvaluation {
  if (state.covered && state.nodeCount === 0) {
    // No node to watch: the gates about nodes pass; a manual gate still waits for its approval.
    const detail = `nothing to move: ${state.detail}`;
    const gates = stage.gates.map((g) =>
      g.kind === "manual" && !state.manualApproved ? { kind: g.kind, passed: false, detail: "awaiting operator approval" } : { kind: g.kind, passed: true, detail },
    );
    return { gates, allPassed: gates.every((g) => g.passed) };
  }
  const held = heldDetail(state, t);
  if (held !== undefined) {
    return { gates: stage.gates.map((g) => ({ kind: g.kind, passed: false, detail: held })), allPassed: false, held };
  }
  const gates: GateResult[] = [];
  let halt: string | undefined;
  let wakeAtMs: number | undefined;
  const finals = t.healthy + t.failed;
  const waiting = t.nodeCount - finals;
  const waitingDetail = `${waiting} of ${t.nodeCount} node(s) have not sent a final ack`;
  for (const g of stage.gates) {
    switch (g.kind) {
      case "time_soak": {
        if (t.settledAtMs === undefined) {
          gates.push({ kind: g.kind, passed: false, detail: `soak starts when every node has acked; ${waitingDetail}` });
          break;
        }
        const endMs = t.settledAtMs + g.seconds * 1000;
        const passed = nowMs >= endMs;
        if (!passed) wakeAtMs = Math.min(wakeAtMs ?? endMs, endMs);
        const left = Math.ceil((endMs - nowMs) / 1000);
        gates.push({ kind: g.kind, passed, detail: passed ? `soaked ${g.seconds}s` : `soaking: ${left}s of ${g.seconds}s left` });
        break;
      }
      case "success_ratio": {
        const sample = Math.min(Math.max(g.minSample, 1), t.nodeCount);
        const share = t.nodeCount === 0 ? 0 : t.healthy / t.nodeCount;
        const passed = t.nodeCount > 0 && t.healthy >= sample && share >= g.minRatio;
        const detail =
          t.nodeCount === 0
            ? "the stage selected no node"
            : `${t.healthy} of ${t.nodeCount} healthy (${ratio(share)}; needs ${ratio(g.minRatio)} and at least ${sample})`;
        gates.push({ kind: g.kind, passed, detail });
        break;
      }
      case "max_failure_ratio": {
        const share = t.nodeCount === 0 ? 0 : t.failed / t.nodeCount;
        const crossed = share > g.maxRatio;
        if (crossed) {
          halt = `stage "${stage.stageId}": ${t.failed} of ${t.nodeCount} node(s) failed (${ratio(share)}), above max_failure_ratio ${ratio(g.maxRatio)}`;
        }
        const passed = !crossed && waiting === 0;
        const detail = crossed
          ? `${t.failed} of ${t.nodeCount} failed (${ratio(share)} > ${ratio(g.maxRatio)})`
          : `${t.failed} of ${t.nodeCount} failed${waiting === 0 ? "" : `; ${waitingDetail}`}`;
        gates.push({ kind: g.kind, passed, detail });
        break;
      }
      case "manual":
        gates.push({
          kind: g.kind,
          passed: state.manualApproved,
          detail: state.manualApproved ? "approved" : "awaiting operator approval",
        });
        break;
      case "event_rate": {
        const hours = Math.max(1, (nowMs - (state.openedAtMs ?? nowMs)) / 3_600_000);
        const rate = t.nodeCount === 0 ? 0 : t.gatedEvents / t.nodeCount / hours;
        const crossed = rate > g.maxPerNodeHour;
        if (crossed && halt === undefined) {
          halt = `stage "${stage.stageId}": ${t.gatedEvents} ${g.eventType} event(s) from ${t.nodeCount} node(s), ${ratio(rate)} per node per hour, above ${ratio(g.maxPerNodeHour)}`;
        }
        gates.push({
          kind: g.kind,
          passed: !crossed,
          detail: `${t.gatedEvents} ${g.eventType} event(s): ${ratio(rate)} per node per hour (limit ${ratio(g.maxPerNodeHour)})`,
        });
        break;
      }
    }
  }
  return { gates, allPassed: halt === undefined && gates.every((g) => g.passed), halt, wakeAtMs };
}

/** Why an open stage is past its deadline, or undefined. */
export function pastDeadline(stage: Stage, state: StageState, nowMs: number): string | undefined {
  if (stage.deadlineSeconds === 0 || state.phase !== "open" || state.openedAtMs === undefined) return undefined;
  const overMs = nowMs - state.openedAtMs - stage.deadlineSeconds * 1000;
  if (overMs <= 0) return undefined;
  return `stage "${stage.stageId}" has been open ${Math.round((nowMs - state.openedAtMs) / 1000)}s, past its deadline of ${stage.deadlineSeconds}s`;
}

/** The event type a stage's event_rate gate watches, if it has one. */
export function gatedEventType(stage: Stage): string | undefined {
  return stage.gates.find((g) => g.kind === "event_rate")?.eventType;
}

// ---------------------------------------------------------------------------------------
// The canonical, signed form of a spec.

/** JSON with object keys sorted at every level: the same value always gives the same bytes. */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (value !== null && typeof value === "object") {
    const keys = Object.keys(value).sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson((value as Record<string, unknown>)[k])}`).join(",")}}`;
  }
  return JSON.stringify(value);
}
