import { create, toJson } from "@bufbuild/protobuf";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RolloutPlanSchema } from "../gen/autonomy/v1/rollouts_pb.js";
import { AbortedError } from "../src/domain/errors.js";
import { applyAction } from "../src/domain/rollout-actions.js";
import { canonicalJson, initialPlanState, type PlanState } from "../src/domain/rollouts.js";
import { auditRecord } from "../src/services/audit-record.js";
import { rowToState, stateToRow } from "../src/store/rollout-rows.js";
import type { Store } from "../src/store/store.js";
import { STORE_KINDS } from "./helpers/server.js";
import { openStore } from "./helpers/store.js";

const NOW = 1_700_000_000_000;
const STALE = 60_000;
const who = { actor: "system:rollout-controller", source: "controller" };

/** The stage opening and the paged stage read of both stores: the controller's store contract. */
describe.each(STORE_KINDS)("rollout stage openings on %s", (kind) => {
  let store: Store;
  let cleanup: () => Promise<void>;
  const plan = create(RolloutPlanSchema, {
    planId: "op",
    releaseId: "op-r",
    channel: "op",
    stages: [{ stageId: "half", percent: 50 }, { stageId: "rest", percent: 100 }],
  });

  beforeAll(async () => {
    ({ store, cleanup } = await openStore(kind));
    await store.publishRelease({ releaseId: "op-r", channel: "op", version: "1", artifacts: "[]", notes: "", publishedAtMs: NOW, staged: true });
    for (let i = 1; i <= 6; i++) await store.enrollNode({ nodeId: `op-${i}`, channel: "op", labels: {}, agentVersion: "t" }, NOW);
    await store.enrollNode({ nodeId: "other-1", channel: "other", labels: {}, agentVersion: "t" }, NOW);
    // op-6 was never seen: not HEALTHY.
    await store.recordSightings([1, 2, 3, 4, 5].map((i) => ({ nodeId: `op-${i}`, lastSeenMs: NOW })).concat([{ nodeId: "other-1", lastSeenMs: NOW }]));
    const spec = canonicalJson(toJson(RolloutPlanSchema, plan, { useProtoFieldName: true }));
    await store.createRollout(
      { planId: "op", releaseId: "op-r", channel: "op", spec, signature: "", keyId: "", createdAtMs: NOW },
      stateToRow(initialPlanState(plan, NOW)),
      auditRecord(who, { eventName: "rollout.plan.created", category: "rollout", action: "create", resourceType: "rollout_plan", resource: "op" }, NOW),
    );
  });
  afterAll(async () => {
    await cleanup();
  });

  const stored = async (): Promise<PlanState> => {
    const r = (await store.getRollout("op"))!;
    return rowToState(r.status, r.plan.createdAtMs);
  };
  const open = async (state: PlanState, action: "start" | "advance" | "select", onlyIfSelected = false, expectedVersion = state.version) => {
    const { next, opens } = applyAction(plan, state, action, { nowMs: NOW + 1, reason: "", actor: who.actor });
    const audit = auditRecord(who, { eventName: `rollout.${action}`, category: "rollout", action, resourceType: "rollout_plan", resource: "op", fields: { moved_nodes: 0 } }, NOW + 1);
    return store.openRolloutStage({ planId: "op", expectedVersion, next, index: opens!, nowMs: NOW + 1, staleAfterMs: STALE, onlyIfSelected, audit });
  };

  it("selects among the channel's HEALTHY nodes, writes the moves, the status and the audit record in one go", async () => {
    const before = await stored();
    await expect(open(before, "start", false, before.version + 5)).rejects.toBeInstanceOf(AbortedError);
    const opened = (await open(before, "start"))!;
    expect(opened.nodeIds).toHaveLength(3);
    expect(opened.nodeIds).not.toContain("op-6");
    const after = await stored();
    expect(after).toMatchObject({ phase: "active", version: before.version + 1, currentStage: 0 });
    expect(after.stages[0]).toMatchObject({ phase: "open", nodeCount: 3, openedAtMs: NOW + 1, detail: "" });
    expect((await store.movesOfPlan("op")).map((m) => m.nodeId).sort()).toEqual([...opened.nodeIds].sort());
    expect(await store.planMovedNode("op", opened.nodeIds[0])).toBe(true);
    expect(await store.planMovedNode("op", "op-6")).toBe(false);
    expect(await store.planMovedNode("other-plan", opened.nodeIds[0])).toBe(false);
    const [record] = await store.auditRecords({ action: "start", limit: 5 });
    expect(JSON.parse(record.fieldsJson)).toMatchObject({ stage_id: "half", moved_nodes: 3 });
  });

  it("reads a stage's nodes in pages, each with its ack of the release and its last-seen time", async () => {
    const [first] = (await store.movesOfPlan("op")).map((m) => m.nodeId).sort();
    await store.upsertAck({ releaseId: "op-r", nodeId: first, state: "healthy", message: "", reportedReleaseId: "op-r", observedAtMs: NOW + 5, updatedAtMs: NOW + 5 });
    const page1 = await store.stageNodes({ planId: "op", stageId: "half", releaseId: "op-r", limit: 2 });
    const page2 = await store.stageNodes({ planId: "op", stageId: "half", releaseId: "op-r", afterNodeId: page1[1].nodeId, limit: 2 });
    expect([...page1, ...page2].map((r) => r.nodeId)).toEqual((await store.movesOfPlan("op")).map((m) => m.nodeId).sort());
    expect(page1[0]).toEqual({ nodeId: first, movedAtMs: NOW + 1, ackState: "healthy", ackReportedReleaseId: "op-r", ackUpdatedAtMs: NOW + 5, lastSeenMs: NOW });
    expect(page1[1]).toMatchObject({ ackState: undefined, ackUpdatedAtMs: undefined, lastSeenMs: NOW });
    expect(page2).toHaveLength(1);
  });

  it("never takes a node twice; writes nothing for a re-selection that selects none", async () => {
    const opened = (await open(await stored(), "advance"))!;
    const moved = (await store.movesOfPlan("op")).map((m) => m.nodeId);
    expect(new Set(moved).size).toBe(moved.length);
    expect(opened.nodeIds).toHaveLength(2);
    const after = await stored();
    expect(after.stages[1]).toMatchObject({ phase: "open", nodeCount: 2, detail: "selected 2 of 3: too few HEALTHY nodes" });
    expect(await open(after, "select", true)).toBeUndefined();
    expect((await stored()).version).toBe(after.version);
  });
});
