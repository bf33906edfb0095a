import { afterEach, describe, expect, it } from "vitest";
import { ControllerStoppedError } from "../src/rollouts/errors.js";
import { InjectedFault } from "./helpers/controller-store.js";
import { Harness } from "./helpers/controller-harness.js";

/**
 * A three-stage plan over six nodes: an explicit canary behind a manual gate, 50 % behind
 * success_ratio 1, the rest behind max_failure_ratio 0.5 and a 30 s soak. Each step is what
 * an operator, a node or the clock does; the controller does the rest.
 */
const PLAN = {
  planId: "p",
  stages: [
    { stageId: "s1", nodeIds: ["n1"], gates: [{ kind: "manual" }] },
    { stageId: "s2", percent: 50, gates: [{ kind: "success_ratio", minRatio: 1 }] },
    { stageId: "s3", percent: 100, gates: [{ kind: "max_failure_ratio", maxRatio: 0.5 }, { kind: "time_soak", seconds: 30 }] },
  ],
};

/** Approves s1 as an operator would: again after a failure, unless the stored status shows it done. */
async function approve(h: Harness): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    const stage = (JSON.parse(h.fake.statuses.get("p")!.stages) as { phase: string; manualApproved: boolean }[])[0];
    if (stage.phase !== "open" || stage.manualApproved) return;
    try {
      await h.controller.act("p", "approve", { actor: "alice", source: "api", reason: "canary fine", stageId: "s1" });
      return;
    } catch (err) {
      if (!(err instanceof InjectedFault) || attempt > 3) throw err;
      await h.settle();
    }
  }
}

const STEPS: [string, (h: Harness) => Promise<void> | void][] = [
  ["start", (h) => h.controller.start()],
  ["the canary acks", (h) => h.ackStage("s1")],
  ["an operator approves the canary", approve],
  ["the 50 % stage acks", (h) => h.ackStage("s2")],
  ["the last stage acks, one failure", (h) => {
    const [first, ...rest] = h.fake.movesOf("p", "s3");
    h.ack(first, "failed");
    for (const id of rest) h.ack(id, "healthy");
  }],
  ["the soak ends", (h) => void (h.clock += 31_000)],
];

async function run(h: Harness, restartAfter?: number): Promise<void> {
  h.fake.publish(PLAN);
  for (const [i, [, step]] of STEPS.entries()) {
    await step(h);
    await h.settle();
    if (i === restartAfter) await h.restart();
  }
  await h.settle();
}

function outcome(h: Harness) {
  const moved = h.fake.moves.map((m) => m.nodeId);
  return {
    status: h.stored(),
    reason: h.fake.statuses.get("p")!.reason,
    stages: Object.fromEntries(PLAN.stages.map((s) => [s.stageId, h.fake.movesOf("p", s.stageId).sort()])),
    movedOnce: new Set(moved).size === moved.length,
  };
}

let clean: ReturnType<typeof outcome>;
let cleanCalls: string[];

describe("rollout controller recovery (fake store, injected clock)", () => {
  let h: Harness;
  afterEach(async () => {
    await h?.close();
  });

  it("a clean run completes the plan, every node moved once", async () => {
    h = new Harness(undefined, 6);
    await run(h);
    clean = outcome(h);
    cleanCalls = [...h.fake.calls];
    expect(clean).toMatchObject({ status: { phase: "completed", stages: ["passed", "passed", "passed"] }, reason: "every stage passed", movedOnce: true });
    expect(Object.values(clean.stages).map((ids) => ids.length)).toEqual([1, 2, 3]);
    expect(h.moves.map((m) => [m.stageId, m.nodeIds.length])).toEqual([["s1", 1], ["s2", 2], ["s3", 3]]);
  });

  it.each(STEPS.map(([name], i) => [name, i] as const))("a restart after %s ends where a clean run ends", async (_name, i) => {
    h = new Harness(undefined, 6);
    await run(h, i);
    expect(outcome(h)).toEqual(clean);
  });

  it("a fault at any store call of a clean run (before or after a write lands) ends where a clean run ends", async () => {
    expect(cleanCalls.length).toBeGreaterThan(20);
    const writes = new Set(["openRolloutStage", "commitRollout"]);
    const cases = cleanCalls.flatMap((method, index) => (writes.has(method) ? [{ index, after: false }, { index, after: true }] : [{ index, after: false }]));
    for (const c of cases) {
      h = new Harness(undefined, 6);
      h.fake.failAtCall(c.index, c.after);
      await run(h).catch((err: Error) => {
        throw new Error(`fault at call ${c.index} (${cleanCalls[c.index]}, after ${c.after}): ${err.message}`);
      });
      expect({ ...c, method: cleanCalls[c.index], ...outcome(h) }).toEqual({ ...c, method: cleanCalls[c.index], ...clean });
      await h.close();
    }
  });

  it("a lost ack delays the decision until the resync counts it from the store", async () => {
    h = new Harness(undefined, 2);
    h.fake.publish({ planId: "p", stages: [{ stageId: "s1", percent: 100, gates: [{ kind: "success_ratio", minRatio: 1 }] }] });
    await h.controller.start();
    await h.settle();
    h.ack("n1", "healthy");
    h.ack("n2", "healthy", { lost: true });
    await h.controller.settled("p");
    expect(h.stored().phase).toBe("active");
    expect(h.controller.liveTally("p", 0)).toMatchObject({ healthy: 1 });
    const pass = await h.controller.resync();
    await h.controller.settled("p");
    expect(pass.drifted).toEqual(["p"]);
    expect(h.stored().phase).toBe("completed");
  });

  it("a stage that selects no node is held until nodes qualify, then selected again", async () => {
    h = new Harness(undefined, 0);
    for (const id of ["a", "b", "c", "d"]) h.fake.addNode(id, { lastSeenMs: null });
    h.fake.publish({ planId: "p", stages: [{ stageId: "s1", percent: 50 }, { stageId: "s2", percent: 100 }] });
    await h.controller.start();
    await h.settle();
    await h.settle();
    const held = "no node selected: selected 0 of 2: too few HEALTHY nodes";
    expect(h.stored()).toMatchObject({ phase: "active", stages: ["open", "pending"] });
    expect(h.controller.evaluate((await h.fake.getRollout("p"))!, 0)).toMatchObject({ allPassed: false, held });
    // Resyncs that still select nothing write nothing.
    expect(h.fake.statuses.get("p")!.version).toBe(2);
    for (const id of ["a", "b"]) h.fake.nodes.get(id)!.lastSeenMs = h.clock;
    await h.settle();
    expect(h.fake.movesOf("p", "s1").sort()).toEqual(["a", "b"]);
    expect(h.fake.audit.map((a) => a.eventName)).toContain("rollout.stage.selected");
    // s2 needs the other two, which are not HEALTHY: held again until an operator promotes it.
    expect(h.stored().stages).toEqual(["passed", "open"]);
    const promoted = await h.controller.act("p", "promote", { actor: "alice", source: "api", reason: "enough" });
    expect(promoted.state.phase).toBe("completed");
    expect(h.stored()).toMatchObject({ phase: "completed", stages: ["passed", "passed"] });
  });

  it("stop waits for a running action, then refuses new ones", async () => {
    h = new Harness(undefined, 2);
    h.fake.publish({ planId: "p", stages: [{ stageId: "s1", percent: 100, gates: [{ kind: "manual" }] }] });
    await h.controller.start();
    await h.settle();
    let release!: () => void;
    h.fake.commitGate = new Promise((resolve) => (release = resolve));
    const pausing = h.controller.act("p", "pause", { actor: "alice", source: "api", reason: "lunch" });
    while (!h.fake.calls.includes("commitRollout")) await new Promise((r) => setImmediate(r));
    let done = false;
    const stopped = h.controller.stop().then(() => (done = true));
    await new Promise((r) => setImmediate(r));
    expect(done).toBe(false);
    release();
    await expect(pausing).resolves.toMatchObject({ state: { phase: "paused" } });
    await stopped;
    await expect(h.controller.act("p", "resume", { actor: "alice", source: "api", reason: "back" })).rejects.toBeInstanceOf(ControllerStoppedError);
    expect(h.stored().phase).toBe("paused");
  });
});
