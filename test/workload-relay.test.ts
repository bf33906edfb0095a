import { describe, expect, it } from "vitest";
import type { HaMessage } from "../src/ha/election.js";
import { applySignals, SignalRelay } from "../src/ha/relay.js";
import type { RolloutController } from "../src/rollouts/controller.js";

/** A follower's workload change reaches the leader's loop over the relay (the notification body as PostgreSQL carries it). */
describe("workload signals relayed to the leader", () => {
  const rollouts = { refreshPlan: async () => undefined, applyAck: () => undefined, onEvents: () => undefined, onSeen: () => undefined } as unknown as RolloutController;

  it("carries one workload mark however many changes came in, and only when there were some", async () => {
    const sent: HaMessage[] = [];
    const relay = new SignalRelay("follower-1", async (m) => void sent.push(JSON.parse(JSON.stringify(m)) as HaMessage), () => {});
    relay.workloads();
    relay.workloads();
    relay.plan("p1");
    await relay.flush();
    relay.close();
    expect(sent).toHaveLength(1);
    const body = (sent[0] as { body: { w?: number[]; p?: string[] } }).body;
    expect(body).toEqual({ w: [1], p: ["p1"] });
    let relayed = 0;
    applySignals(rollouts, body, { relayed: () => relayed++ });
    expect(relayed).toBe(1);
    applySignals(rollouts, { p: ["p1"] }, { relayed: () => relayed++ });
    expect(relayed).toBe(1);
    await relay.flush();
    expect(sent).toHaveLength(1);
  });
});
