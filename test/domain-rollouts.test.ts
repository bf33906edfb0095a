import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { GateSchema, RolloutPlanSchema, StageSchema } from "../gen/autonomy/v1/rollouts_pb.js";
import { FailedPreconditionError, ValidationError } from "../src/domain/errors.js";
import {
  ACTIONS,
  PLAN_PHASES,
  TRANSITIONS,
  canonicalJson,
  evaluateStage,
  pastDeadline,
  selectStageNodes,
  selectionRank,
  RankKeys,
  shownStagePhase,
  transition,
  validateRolloutPlan,
  waitingReason,
  type Action,
  type PlanPhase,
  type StageState,
  type StageTally,
} from "../src/domain/rollouts.js";

/** The phase machine of SPEC §3, written out cell by cell, independently of the module's table. */
const EXPECTED: Record<PlanPhase, Partial<Record<Action, PlanPhase>>> = {
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

describe("rollout phase machine", () => {
  const cells = PLAN_PHASES.flatMap((phase) => ACTIONS.map((action) => [phase, action] as const));

  it("has one cell per phase and action: 8 × 17", () => {
    expect(cells).toHaveLength(136);
    expect(Object.keys(TRANSITIONS).sort()).toEqual([...PLAN_PHASES].sort());
  });

  it.each(cells)("%s × %s", (phase, action) => {
    const expected = EXPECTED[phase][action];
    if (expected === undefined) {
      expect(() => transition(phase, action)).toThrow(FailedPreconditionError);
      expect(() => transition(phase, action)).toThrow(`the plan is ${phase}`);
    } else {
      expect(transition(phase, action)).toBe(expected);
    }
  });
});

const stage = (fields: MessageInitShape<typeof StageSchema>) => create(StageSchema, { stageId: "s", ...fields });
const open = (openedAtMs = 0): StageState => ({ stageId: "s", phase: "open", nodeCount: 10, openedAtMs, manualApproved: false, detail: "" });
const tally = (t: Partial<StageTally>): StageTally => ({ nodeCount: 10, healthy: 0, failed: 0, unreachable: 0, gatedEvents: 0, ...t });

describe("gate evaluation", () => {
  it("success_ratio needs the share and the minimum sample", () => {
    const s = stage({ percent: 10, gates: [{ kind: "success_ratio", minRatio: 0.8, minSample: 9 }] });
    expect(evaluateStage(s, open(), tally({ healthy: 8 }), 0).allPassed).toBe(false);
    expect(evaluateStage(s, open(), tally({ healthy: 9 }), 0).allPassed).toBe(true);
    expect(evaluateStage(s, open(), tally({ nodeCount: 0 }), 0).gates[0]).toMatchObject({ passed: false, detail: "counting the stage's nodes: 0 of 10 counted" });
  });

  it("max_failure_ratio halts once crossed, and passes only when every node has a final ack", () => {
    const s = stage({ percent: 10, gates: [{ kind: "max_failure_ratio", maxRatio: 0.2 }] });
    expect(evaluateStage(s, open(), tally({ failed: 2, healthy: 3 }), 0)).toMatchObject({ allPassed: false, halt: undefined });
    expect(evaluateStage(s, open(), tally({ failed: 2, healthy: 8 }), 0)).toMatchObject({ allPassed: true });
    const crossed = evaluateStage(s, open(), tally({ failed: 3 }), 0);
    expect(crossed.allPassed).toBe(false);
    expect(crossed.halt).toMatch(/3 of 10 node\(s\) failed \(0.3\), above max_failure_ratio 0.2/);
  });

  it("time_soak starts when every node has acked and asks to be woken when it ends", () => {
    const s = stage({ percent: 10, gates: [{ kind: "time_soak", seconds: 60 }] });
    expect(evaluateStage(s, open(), tally({ healthy: 9 }), 0).gates[0].passed).toBe(false);
    const soaking = evaluateStage(s, open(), tally({ healthy: 10, settledAtMs: 1000 }), 30_000);
    expect(soaking).toMatchObject({ allPassed: false, wakeAtMs: 61_000 });
    expect(evaluateStage(s, open(), tally({ healthy: 10, settledAtMs: 1000 }), 61_000).allPassed).toBe(true);
  });

  it("event_rate counts per node per hour, at least one hour, and halts above the limit", () => {
    const s = stage({ percent: 10, gates: [{ kind: "event_rate", eventType: "crash", maxPerNodeHour: 0.5 }] });
    expect(evaluateStage(s, open(0), tally({ gatedEvents: 5 }), 60_000).halt).toBeUndefined();
    expect(evaluateStage(s, open(0), tally({ gatedEvents: 6 }), 60_000).halt).toMatch(/6 crash event\(s\) from 10 node\(s\)/);
    // Over two hours the same count is half the rate.
    expect(evaluateStage(s, open(0), tally({ gatedEvents: 9 }), 7_200_000).halt).toBeUndefined();
  });

  it("manual passes only once approved; a stage without gates passes at once", () => {
    const s = stage({ percent: 10, gates: [{ kind: "manual" }] });
    expect(evaluateStage(s, open(), tally({}), 0).gates[0]).toEqual({ kind: "manual", passed: false, detail: "awaiting operator approval" });
    expect(evaluateStage(s, { ...open(), manualApproved: true }, tally({}), 0).allPassed).toBe(true);
    expect(evaluateStage(stage({ percent: 10 }), open(), tally({}), 0).allPassed).toBe(true);
  });

  // Every gate kind, and none: a stage that selected no node is held, never passed or halted.
  it.each<[string, MessageInitShape<typeof GateSchema>[]]>([
    ["no gate", []],
    ["time_soak", [{ kind: "time_soak", seconds: 1 }]],
    ["success_ratio", [{ kind: "success_ratio", minRatio: 0.5 }]],
    ["max_failure_ratio", [{ kind: "max_failure_ratio", maxRatio: 0.1 }]],
    ["manual (approved)", [{ kind: "manual" }]],
    ["event_rate", [{ kind: "event_rate", eventType: "crash", maxPerNodeHour: 0.1 }]],
  ])("a stage that selected no node is held with %s", (_name, gates) => {
    const empty: StageState = { ...open(), nodeCount: 0, manualApproved: true, detail: "selected 0 of 3: too few HEALTHY nodes" };
    const ev = evaluateStage(stage({ percent: 10, gates }), empty, tally({ nodeCount: 0, settledAtMs: 0 }), 1e9);
    expect(ev).toMatchObject({ allPassed: false, held: "no node selected: selected 0 of 3: too few HEALTHY nodes" });
    expect(ev.halt).toBeUndefined();
    for (const g of ev.gates) expect(g).toMatchObject({ passed: false, detail: "no node selected: selected 0 of 3: too few HEALTHY nodes" });
  });

  it("shows an open stage that selected no node as waiting, with the reason its gates give", () => {
    const empty: StageState = { ...open(), nodeCount: 0, detail: "selected 0 of 3: too few HEALTHY nodes" };
    expect(shownStagePhase(empty)).toBe("waiting");
    expect(waitingReason(empty)).toBe(evaluateStage(stage({ percent: 10 }), empty, tally({ nodeCount: 0 }), 0).held);
    expect(shownStagePhase({ ...empty, detail: "" })).toBe("waiting");
    expect(waitingReason({ ...empty, detail: "" })).toBe("no node selected: the selector matched no HEALTHY node");
    // Covered by earlier stages, holding nodes, or not open: shown as stored.
    expect(shownStagePhase({ ...empty, covered: true })).toBe("open");
    expect(shownStagePhase({ ...empty, nodeCount: 2 })).toBe("open");
    for (const phase of ["pending", "passed", "halted", "skipped"] as const) {
      expect(shownStagePhase({ ...empty, phase })).toBe(phase);
      expect(waitingReason({ ...empty, phase })).toBeUndefined();
    }
  });

  it("a stage that has not opened passes no gate", () => {
    const pending: StageState = { stageId: "s", phase: "pending", nodeCount: 0, manualApproved: false, detail: "" };
    expect(evaluateStage(stage({ percent: 10 }), pending, tally({ nodeCount: 0 }), 0)).toMatchObject({ allPassed: false, held: "the stage has not opened yet" });
  });

  it("a stage whose counts do not cover its nodes is held, even when a failure ratio would pass", () => {
    const s = stage({ percent: 10, gates: [{ kind: "max_failure_ratio", maxRatio: 0.1 }] });
    const ev = evaluateStage(s, open(), tally({ nodeCount: 0 }), 0);
    expect(ev.allPassed).toBe(false);
    expect(ev.halt).toBeUndefined();
  });

  it("reports a stage open past its deadline", () => {
    const s = stage({ percent: 10, deadlineSeconds: 60 });
    expect(pastDeadline(s, open(0), 60_000)).toBeUndefined();
    expect(pastDeadline(s, open(0), 61_000)).toMatch(/past its deadline of 60s/);
    expect(pastDeadline(stage({ percent: 10 }), open(0), 1e9)).toBeUndefined();
  });
});

describe("stage node selection", () => {
  const fleet = Array.from({ length: 20 }, (_, i) => ({
    nodeId: `n${String(i).padStart(2, "0")}`,
    labels: { site: i % 2 === 0 ? "berlin" : "oslo" },
    healthy: i !== 3,
  }));

  it("picks the same nodes for the same plan whatever the fleet order, and others for another plan", () => {
    const s = stage({ percent: 25 });
    const a = selectStageNodes("plan-a", s, fleet, new Set()).nodeIds;
    expect(a).toHaveLength(5);
    expect(selectStageNodes("plan-a", s, [...fleet].reverse(), new Set()).nodeIds).toEqual(a);
    expect(selectStageNodes("plan-b", s, fleet, new Set()).nodeIds).not.toEqual(a);
    expect(a).not.toContain("n03");
  });

  it("takes the nodes of lowest selection rank, as sorting the rank strings orders them", () => {
    const many = Array.from({ length: 5000 }, (_, i) => ({ nodeId: `node-${i}`, labels: {}, healthy: i % 11 !== 0 }));
    const taken = new Set(["node-1", "node-2", "node-500"]);
    const byRank = many
      .filter((c) => c.healthy && !taken.has(c.nodeId))
      .map((c) => ({ id: c.nodeId, rank: selectionRank("rank-plan", c.nodeId) }))
      .sort((a, b) => (a.rank < b.rank ? -1 : a.rank > b.rank ? 1 : 0));
    for (const percent of [1, 10, 100]) {
      const need = Math.ceil((percent / 100) * many.length) - taken.size;
      const expected = byRank.slice(0, need).map((r) => r.id).sort();
      expect(selectStageNodes("rank-plan", stage({ percent }), many, taken).nodeIds).toEqual(expected);
    }
  });

  it("selects the same nodes with rank keys kept between openings as with none, for each plan in turn", () => {
    const many = Array.from({ length: 3000 }, (_, i) => ({ nodeId: `node-${i}`, labels: {}, healthy: i % 7 !== 0 }));
    const ranks = new RankKeys();
    for (const planId of ["plan-x", "plan-y", "plan-x"]) {
      const taken = new Set<string>();
      for (const percent of [1, 20, 60]) {
        const fresh = selectStageNodes(planId, stage({ percent }), many, taken).nodeIds;
        const kept = selectStageNodes(planId, stage({ percent }), many, taken, ranks).nodeIds;
        expect(kept).toEqual(fresh);
        expect(kept.length).toBeGreaterThan(0);
        for (const id of kept) taken.add(id);
      }
    }
  });

  it("counts percentages cumulatively and never takes a node twice", () => {
    const first = selectStageNodes("p", stage({ percent: 25 }), fleet, new Set()).nodeIds;
    const second = selectStageNodes("p", stage({ percent: 50 }), fleet, new Set(first)).nodeIds;
    expect(second).toHaveLength(5);
    expect(second.filter((id) => first.includes(id))).toEqual([]);
    const rest = selectStageNodes("p", stage({ percent: 100 }), fleet, new Set([...first, ...second]));
    expect(rest.nodeIds).toHaveLength(9);
    expect(rest.detail).toBe("selected 9 of 10: too few HEALTHY nodes");
  });

  it("explicit ids keep their order and name the ones left out", () => {
    const s = stage({ nodeIds: ["n05", "n03", "zz", "n01"] });
    expect(selectStageNodes("p", s, fleet, new Set(["n01"]))).toEqual({
      nodeIds: ["n05"],
      detail: "left out: n03 (not HEALTHY), zz (not in the channel), n01 (in an earlier stage)",
    });
  });

  it.each<[string, MessageInitShape<typeof StageSchema>, string[], string, boolean]>([
    ["no matching label", { matchLabels: { site: "paris" } }, [], "no node of the channel matches site=paris", false],
    ["every match taken", { matchLabels: { site: "oslo" } }, fleet.filter((c) => c.labels.site === "oslo").map((c) => c.nodeId), "every node matching site=oslo is in an earlier stage", true],
    ["a percentage already covered", { percent: 10 }, ["n00", "n01"], "earlier stages already cover 2 of 20 node(s), 10 % needs 2", true],
    ["every named node taken", { nodeIds: ["n00", "n01"] }, ["n00", "n01"], "every node it names was moved by an earlier stage", true],
  ])("says why nothing was selected: %s (covered by earlier stages: %s)", (_name, s, taken, detail, covered) => {
    expect(selectStageNodes("p", stage(s), fleet, new Set(taken))).toEqual({ nodeIds: [], detail, ...(covered ? { covered } : {}) });
  });

  it("passes a stage whose target earlier stages met (a manual gate still waits), and holds one that selected nothing it could move", () => {
    const open = { stageId: "all", phase: "open" as const, nodeCount: 0, manualApproved: false, detail: "every node it names was moved by an earlier stage" };
    const empty = { nodeCount: 0, healthy: 0, failed: 0, unreachable: 0, gatedEvents: 0 };
    const gates = stage({ percent: 100, gates: [{ kind: "time_soak", seconds: 60 }, { kind: "manual" }] });
    expect(evaluateStage(gates, { ...open, covered: true }, empty, 0)).toMatchObject({ allPassed: false });
    expect(evaluateStage(gates, { ...open, covered: true, manualApproved: true }, empty, 0)).toMatchObject({ allPassed: true });
    expect(evaluateStage(stage({ percent: 100, gates: [{ kind: "time_soak", seconds: 60 }] }), { ...open, covered: true }, empty, 0)).toMatchObject({ allPassed: true });
    expect(evaluateStage(gates, open, empty, 0)).toMatchObject({ allPassed: false, held: expect.stringMatching(/^no node selected/) });
  });

  it("label selectors take every matching HEALTHY node", () => {
    const sel = selectStageNodes("p", stage({ matchLabels: { site: "oslo" } }), fleet, new Set());
    expect(sel.nodeIds).toHaveLength(9);
    expect(sel.detail).toMatch(/left out 1 matching node/);
  });
});

describe("plan validation", () => {
  const valid = () =>
    create(RolloutPlanSchema, {
      releaseId: "r1",
      stages: [
        { stageId: "canary", nodeIds: ["a"], gates: [{ kind: "manual" }] },
        { stageId: "rest", percent: 100, gates: [{ kind: "success_ratio", minRatio: 0.9 }] },
      ],
    });

  it("accepts a valid plan", () => {
    expect(() => validateRolloutPlan(valid())).not.toThrow();
  });

  it("accepts percentages that stay level or grow", () => {
    const p = valid();
    p.stages = [20, 20, 100].map((percent, i) => create(StageSchema, { stageId: `s${i}`, percent }));
    expect(() => validateRolloutPlan(p)).not.toThrow();
  });

  it.each<[string, (p: ReturnType<typeof valid>) => void, string]>([
    ["no release", (p) => (p.releaseId = ""), "plan.release_id: required"],
    ["no stages", (p) => (p.stages = []), "plan.stages: at least one stage"],
    ["a duplicate stage id", (p) => (p.stages[1].stageId = "canary"), 'plan.stages[1].stage_id: duplicate stage id "canary"'],
    ["two selectors", (p) => (p.stages[0].percent = 10), "plan.stages[0]: select nodes in exactly one way"],
    ["no selector", (p) => (p.stages[1].percent = 0), "plan.stages[1]: select nodes in exactly one way"],
    ["a percentage above 100", (p) => (p.stages[1].percent = 150), "plan.stages[1].percent"],
    ["an unknown gate", (p) => (p.stages[0].gates[0].kind = "vibes"), "plan.stages[0].gates[0].kind: must be one of"],
    ["a ratio above 1", (p) => (p.stages[1].gates[0].minRatio = 2), "plan.stages[1].gates[0].min_ratio"],
    ["a parameter of another gate", (p) => (p.stages[0].gates[0].seconds = 5), "plan.stages[0].gates[0].seconds: not a parameter of a manual gate"],
    ["the same gate twice", (p) => p.stages[0].gates.push(create(GateSchema, { kind: "manual" })), "at most one manual gate"],
    ["a node in two stages", (p) => (p.stages[1] = create(StageSchema, { stageId: "b", nodeIds: ["a"] })), 'node "a" is already in stage "canary"'],
    ["an event_rate gate without a type", (p) => (p.stages[0].gates[0] = create(GateSchema, { kind: "event_rate", maxPerNodeHour: 1 })), "event_type: required"],
    ["a negative deadline", (p) => (p.stages[0].deadlineSeconds = -1), "plan.stages[0].deadline_seconds"],
    [
      "a percentage that goes down",
      (p) => (p.stages = [create(StageSchema, { stageId: "a", percent: 50 }), create(StageSchema, { stageId: "b", percent: 20 })]),
      "plan.stages[1].percent: 20 is below 50 of plan.stages[0]",
    ],
    [
      "a percentage below one before an explicit stage",
      (p) => (p.stages = [create(StageSchema, { stageId: "a", percent: 30 }), create(StageSchema, { stageId: "b", nodeIds: ["x"] }), create(StageSchema, { stageId: "c", percent: 10 })]),
      "plan.stages[2].percent",
    ],
  ])("refuses %s, naming the field", (_name, spoil, message) => {
    const p = valid();
    spoil(p);
    expect(() => validateRolloutPlan(p)).toThrow(ValidationError);
    expect(() => validateRolloutPlan(p)).toThrow(message);
  });
});

describe("canonical JSON", () => {
  it("sorts keys at every level, so equal values give equal bytes", () => {
    expect(canonicalJson({ b: 1, a: { d: [2, { f: 1, e: 0 }], c: "x" } })).toBe('{"a":{"c":"x","d":[2,{"e":0,"f":1}]},"b":1}');
  });
});
