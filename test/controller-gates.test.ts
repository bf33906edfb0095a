import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { EventSchema } from "../gen/autonomy/v1/events_pb.js";
import { afterEach, describe, expect, it } from "vitest";
import type { GateSchema } from "../gen/autonomy/v1/rollouts_pb.js";
import { Harness, STALE_AFTER_MS } from "./helpers/controller-harness.js";

type Gate = MessageInitShape<typeof GateSchema>;

/**
 * Each case: a first stage of all four nodes with one gate, a second stage after it; what the
 * nodes do; whether the first stage passes (the plan completes), waits (stays open) or halts.
 */
const crashes: Gate[] = [{ kind: "event_rate", eventType: "crash", maxPerNodeHour: 1 }, { kind: "success_ratio", minRatio: 1 }];
/** Events stored and signalled, as the ingest path does. */
const crash = (h: Harness, nodeId: string, n: number) => {
  for (let i = 0; i < n; i++) h.fake.events.push({ eventType: "crash", nodeId, seq: h.fake.events.length + 1 });
  h.controller.onEvents(Array.from({ length: n }, () => create(EventSchema, { nodeId, eventType: "crash" })), true);
};

const CASES: [string, Gate | Gate[], (h: Harness) => void, "passes" | "waits" | "halts"][] = [
  ["time_soak passes once soaked", { kind: "time_soak", seconds: 60 }, (h) => { h.ackStage("s1"); h.clock += 61_000; }, "passes"],
  ["time_soak waits while soaking", { kind: "time_soak", seconds: 60 }, (h) => { h.ackStage("s1"); h.clock += 59_000; }, "waits"],
  ["time_soak waits for every final ack", { kind: "time_soak", seconds: 1 }, (h) => { h.ack("n1", "healthy"); h.clock += 3_600_000; }, "waits"],
  ["success_ratio passes at the ratio", { kind: "success_ratio", minRatio: 0.75 }, (h) => { h.ack("n1", "healthy"); h.ack("n2", "healthy"); h.ack("n3", "healthy"); }, "passes"],
  ["success_ratio waits below it", { kind: "success_ratio", minRatio: 0.75 }, (h) => { h.ack("n1", "healthy"); h.ack("n2", "healthy"); h.ack("n3", "failed"); h.ack("n4", "failed"); }, "waits"],
  ["success_ratio waits for its sample", { kind: "success_ratio", minRatio: 0.5, minSample: 3 }, (h) => { h.ack("n1", "healthy"); h.ack("n2", "healthy"); }, "waits"],
  ["max_failure_ratio passes at the limit", { kind: "max_failure_ratio", maxRatio: 0.25 }, (h) => { h.ackStage("s1"); h.ack("n4", "failed"); }, "passes"],
  ["max_failure_ratio halts above it", { kind: "max_failure_ratio", maxRatio: 0.25 }, (h) => { h.ack("n1", "failed"); h.ack("n2", "rolled_back"); }, "halts"],
  ["max_failure_ratio waits for every final ack", { kind: "max_failure_ratio", maxRatio: 0.25 }, (h) => { h.ack("n1", "healthy"); h.ack("n2", "downloading"); }, "waits"],
  ["manual passes once approved", { kind: "manual" }, () => {}, "passes"],
  ["manual waits for an approval", { kind: "manual" }, () => {}, "waits"],
  ["event_rate passes under its limit", crashes, (h) => { crash(h, "n1", 4); h.ackStage("s1"); }, "passes"],
  ["event_rate halts above it", crashes, (h) => { crash(h, "n2", 5); h.ackStage("s1"); }, "halts"],
  ["event_rate ignores events of other nodes", crashes, (h) => { crash(h, "elsewhere", 9); h.ackStage("s1"); }, "passes"],
];

describe("rollout controller gates (fake store, injected clock)", () => {
  let h: Harness;
  afterEach(async () => {
    await h.close();
  });

  it.each(CASES)("%s", async (name, gate, act, expected) => {
    h = new Harness(undefined, 4);
    h.fake.addNode("elsewhere", { channel: "other", lastSeenMs: h.clock });
    h.fake.publish({ planId: "p", stages: [{ stageId: "s1", percent: 100, gates: [gate].flat() }, { stageId: "s2", nodeIds: ["n9"] }] });
    await h.controller.start();
    await h.settle();
    expect(h.stored().stages).toEqual(["open", "pending"]);
    expect(h.fake.movesOf("p", "s1")).toEqual(["n1", "n2", "n3", "n4"]);
    act(h);
    if (name === "manual passes once approved") {
      const result = await h.controller.act("p", "approve", { actor: "alice", source: "api", reason: "looks good", stageId: "s1" });
      expect(result.promoted).toBe(true);
    }
    // Events are counted from the store on the level-triggered pass; acks were signalled.
    const { drifted } = await h.settle();
    expect(drifted).toEqual([]);
    const s = h.stored();
    if (expected === "passes") {
      // The second stage selects nothing (n9 is not in the channel): it is held open, so the plan never completes by itself.
      expect(s).toMatchObject({ phase: "active", stages: ["passed", "open"] });
      expect(s.details[1]).toBe("left out: n9 (not in the channel)");
      const gates = h.controller.evaluate((await h.fake.getRollout("p"))!, 1);
      expect(gates).toMatchObject({ allPassed: false, held: "no node selected: left out: n9 (not in the channel)" });
    } else if (expected === "waits") {
      expect(s).toMatchObject({ phase: "active", stages: ["open", "pending"] });
    } else {
      expect(s).toMatchObject({ phase: "halted", stages: ["halted", "pending"] });
      expect(h.fake.statuses.get("p")!.reason).toMatch(/stage "s1"/);
    }
  });

  it("a stage node not seen within --node-stale-after is unreachable, and counts again once seen", async () => {
    h = new Harness(undefined, 2);
    h.fake.publish({ planId: "p", stages: [{ stageId: "s1", percent: 100, gates: [{ kind: "success_ratio", minRatio: 1 }] }] });
    await h.controller.start();
    await h.settle();
    h.ack("n1", "healthy");
    h.clock += STALE_AFTER_MS + 1;
    await h.settle();
    expect(h.controller.liveTally("p", 0)).toMatchObject({ healthy: 1, unreachable: 1 });
    h.sightings.record({ nodeId: "n2", lastSeenMs: h.clock });
    expect(h.controller.liveTally("p", 0)).toMatchObject({ healthy: 1, unreachable: 0 });
    h.ack("n2", "healthy");
    await h.settle();
    expect(h.stored().phase).toBe("completed");
  });
});
