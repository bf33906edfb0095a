import { afterEach, describe, expect, it } from "vitest";
import { Harness } from "./helpers/controller-harness.js";

/**
 * A rollback gives every node the plan moved the release it ran before, waits in rolling_back
 * until they run it again, and ends rolled_back: through a restart of the controller, with a
 * failed reinstall shown in the status until it is fixed.
 */
describe("rollback restores the previous release", () => {
  let h: Harness;
  afterEach(() => h?.close());

  const reason = () => h.fake.statuses.get("p")!.reason;

  it("records the release each node ran with its move, restores it, and follows the acks to rolled_back", async () => {
    h = new Harness(undefined, 4);
    // n1, n2 report r0; n3 was to run r0 but has not said so; n4 ran nothing.
    for (const id of ["n1", "n2"]) h.fake.nodes.get(id)!.reportedReleaseId = "r0";
    h.fake.nodes.get("n3")!.desiredReleaseId = "r0";
    h.fake.publish({ planId: "p", stages: [{ stageId: "all", percent: 100, gates: [{ kind: "manual" }] }] });
    await h.controller.start();
    await h.settle();
    expect(h.fake.moves.map((m) => [m.nodeId, m.kind, m.previousReleaseId])).toEqual([
      ["n1", "move", "r0"],
      ["n2", "move", "r0"],
      ["n3", "move", "r0"],
      ["n4", "move", null],
    ]);
    h.ackStage("all");
    await h.settle();

    h.clock += 1000;
    const done = await h.controller.act("p", "rollback", { actor: "alice", source: "api", reason: "bad build" });
    expect(done.state.phase).toBe("rolling_back");
    expect(done.moved.map((m) => m.nodeId)).toEqual(["n1", "n2", "n3", "n4"]);
    expect(h.fake.moves.filter((m) => m.kind === "restore").map((m) => [m.nodeId, m.releaseId])).toEqual([
      ["n1", "r0"],
      ["n2", "r0"],
      ["n3", "r0"],
      ["n4", ""],
    ]);
    await h.settle();
    // n4 had nothing to go back to: its channel's release is its desired one again, nothing to wait for.
    expect(reason()).toBe("rolling back (bad build): 1 of 4 node(s) back on their previous release");
    expect(h.stored().phase).toBe("rolling_back");

    // Operator actions other than abort are refused while it rolls back.
    await expect(h.controller.act("p", "resume", { actor: "alice", source: "api", reason: "x" })).rejects.toThrow(/the plan is rolling_back \(allowed: abort\)/);

    // A restarted controller picks the rollback up where it was.
    await h.restart();
    h.clock += 1000;
    h.ack("n1", "healthy", { releaseId: "r0" });
    h.ack("n2", "healthy", { releaseId: "r0" });
    h.ack("n3", "failed", { releaseId: "r0" });
    await h.settle();
    expect(reason()).toBe("rolling back (bad build): 3 of 4 node(s) back on their previous release, 1 failed to reinstall");
    h.ack("n3", "healthy", { releaseId: "r0" });
    await h.settle();
    expect(h.stored().phase).toBe("rolled_back");
    expect(reason()).toBe("rolled back (bad build): 4 node(s) run their previous release again");
    // Its start and its end are audited; the progress in between is status only.
    expect(h.fake.audit.map((a) => a.eventName).slice(-2)).toEqual(["rollout.plan.rollback_started", "rollout.plan.rolled_back"]);
  });

  it("counts no ack of the previous release older than the rollback", async () => {
    h = new Harness(undefined, 1);
    h.fake.nodes.get("n1")!.reportedReleaseId = "r0";
    h.ack("n1", "healthy", { releaseId: "r0" });
    h.fake.publish({ planId: "p", stages: [{ stageId: "all", nodeIds: ["n1"], gates: [{ kind: "success_ratio", minRatio: 1 }] }] });
    await h.controller.start();
    await h.settle();
    h.ack("n1", "failed");
    await h.settle();
    h.clock += 1000;
    await h.controller.act("p", "rollback", { actor: "alice", source: "api", reason: "r failed" });
    await h.settle();
    expect(reason()).toBe("rolling back (r failed): 0 of 1 node(s) back on their previous release");
    h.ack("n1", "healthy", { releaseId: "r0" });
    await h.settle();
    expect(h.stored().phase).toBe("rolled_back");
  });
});
