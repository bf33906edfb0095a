import { create, toJson } from "@bufbuild/protobuf";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RolloutPlanSchema } from "../gen/autonomy/v1/rollouts_pb.js";
import { FailedPreconditionError } from "../src/domain/errors.js";
import { applyAction } from "../src/domain/rollout-actions.js";
import { canonicalJson, initialPlanState } from "../src/domain/rollouts.js";
import { auditRecord } from "../src/services/audit-record.js";
import { rowToState, stateToRow } from "../src/store/rollout-rows.js";
import type { Store } from "../src/store/store.js";
import { STORE_KINDS } from "./helpers/server.js";
import { openStore } from "./helpers/store.js";

const NOW = Date.now();
const who = { actor: "operator:olga", source: "api" };
const record = (action: string, resource = "fleet") =>
  auditRecord(who, { eventName: `test.${action}`, category: "system", action, resourceType: "test", resource }, NOW);
const change = (reason: string, atMs = NOW) => ({ ...who, atMs, reason, audit: record(reason) });
const release = (releaseId: string, channel: string, staged: boolean, publishedAtMs = NOW) => ({
  releaseId,
  channel,
  version: releaseId,
  artifacts: "[]",
  notes: "",
  publishedAtMs,
  staged,
});

/** The emergency stop, the divergence index, pins and reapply requests: the same on both stores. */
describe.each(STORE_KINDS)("operations store contract: %s", (kind) => {
  let store: Store;
  let cleanup: () => Promise<void>;
  beforeAll(async () => ({ store, cleanup } = await openStore(kind)));
  afterAll(async () => cleanup());

  const planOf = (planId: string, releaseId: string, channel: string) =>
    create(RolloutPlanSchema, { planId, releaseId, channel, stages: [{ stageId: "all", percent: 100 }] });
  const createPlan = (planId: string, releaseId: string, channel: string) => {
    const plan = planOf(planId, releaseId, channel);
    const spec = canonicalJson(toJson(RolloutPlanSchema, plan, { useProtoFieldName: true }));
    return store.createRollout(
      { planId, releaseId, channel, spec, signature: "", keyId: "", createdAtMs: NOW },
      stateToRow(initialPlanState(plan, NOW)),
      record("create", planId),
    );
  };
  const state = async (planId: string) => {
    const r = (await store.getRollout(planId))!;
    return rowToState(r.status, r.plan.createdAtMs);
  };
  /** Starts a plan: opens its stage (all HEALTHY nodes of the channel). */
  const start = async (planId: string, releaseId: string, channel: string) => {
    const before = await state(planId);
    const nowMs = Date.now() + 1000;
    const { next, opens } = applyAction(planOf(planId, releaseId, channel), before, "start", { nowMs, reason: "", actor: who.actor });
    return store.openRolloutStage({ planId, expectedVersion: before.version, next, index: opens!, nowMs, staleAfterMs: 3_600_000, onlyIfSelected: false, audit: record("start", planId) });
  };

  it("has no stop at first", async () => {
    expect(await store.emergencyStop()).toMatchObject({ active: false, sinceMs: null, stoppedBy: "" });
  });

  it("a stop halts every unfinished plan in one transaction, each with its record, and refuses what would move nodes until resumed", async () => {
    await store.publishRelease(release("es-r1", "es-a", true));
    await store.publishRelease(release("es-r2", "es-b", true));
    await store.publishRelease(release("es-r3", "es-c", true));
    await store.enrollNode({ nodeId: "es-n1", channel: "es-a", labels: {}, agentVersion: "t" }, NOW);
    await store.recordSightings([{ nodeId: "es-n1", lastSeenMs: NOW }]);
    await createPlan("es-active", "es-r1", "es-a");
    await start("es-active", "es-r1", "es-a");
    await createPlan("es-paused", "es-r2", "es-b");
    const paused = await state("es-paused");
    const pause = applyAction(planOf("es-paused", "es-r2", "es-b"), { ...paused, phase: "active" }, "pause", { nowMs: NOW, reason: "r", actor: who.actor });
    await store.commitRollout({ expectedVersion: paused.version, status: stateToRow({ ...pause.next, version: paused.version + 1 }), moves: [], audit: [record("pause")] });
    await createPlan("es-published", "es-r3", "es-c");
    expect((await state("es-active")).phase).toBe("active");

    const result = await store.startEmergencyStop(change("bad release in the wild"));
    expect(result.changed).toBe(true);
    expect(result.haltedPlanIds.sort()).toEqual(["es-active", "es-paused", "es-published"]);
    expect(result.state).toMatchObject({ active: true, sinceMs: NOW, stoppedBy: "operator:olga", reason: "bad release in the wild" });
    for (const id of result.haltedPlanIds) expect(await state(id)).toMatchObject({ phase: "halted", reason: "bad release in the wild" });
    // The open stage is halted too, as an operator's halt leaves it.
    expect((await state("es-active")).stages[0].phase).toBe("halted");
    const halts = await store.auditRecords({ action: "emergency_halt", limit: 10 });
    expect(halts.map((r) => r.resource).sort()).toEqual(["es-active", "es-paused", "es-published"]);
    expect(halts.every((r) => r.eventName === "rollout.plan.emergency_halted" && r.reason === "bad release in the wild")).toBe(true);
    const [stopRecord] = await store.auditRecords({ eventName: "test.bad release in the wild", limit: 1 });
    expect(JSON.parse(stopRecord.fieldsJson).halted_plans.sort()).toEqual(["es-active", "es-paused", "es-published"]);

    // Stopping again changes nothing and records nothing.
    const again = await store.startEmergencyStop(change("again", NOW + 5));
    expect(again).toMatchObject({ changed: false, haltedPlanIds: [], state: { sinceMs: NOW, reason: "bad release in the wild" } });
    expect(await store.auditRecords({ eventName: "test.again", limit: 1 })).toHaveLength(0);

    // Refused in the store's own transactions, naming the stop.
    await store.publishRelease(release("es-r4", "es-d", true));
    const refusals: [string, () => Promise<unknown>][] = [
      ["publishing a rollout plan", () => createPlan("es-new", "es-r4", "es-d")],
      ["publishing an unstaged release", () => store.publishRelease(release("es-u1", "es-a", false))],
      [
        "opening a rollout stage",
        async () => {
          // As if the plan were still published: the store refuses the opening itself.
          const s = await state("es-published");
          const { next, opens } = applyAction(planOf("es-published", "es-r3", "es-c"), { ...s, phase: "published" }, "start", { nowMs: NOW, reason: "", actor: who.actor });
          return store.openRolloutStage({ planId: "es-published", expectedVersion: s.version, next, index: opens!, nowMs: NOW, staleAfterMs: 3_600_000, onlyIfSelected: false, audit: record("start") });
        },
      ],
      [
        "making a plan active",
        async () => {
          const s = await state("es-active");
          const resumed = applyAction(planOf("es-active", "es-r1", "es-a"), s, "resume", { nowMs: NOW, reason: "r", actor: who.actor });
          return store.commitRollout({ expectedVersion: s.version, status: stateToRow(resumed.next), moves: [], audit: [record("resume")] });
        },
      ],
    ];
    for (const [what, attempt] of refusals) {
      const err = await attempt().then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err, what).toBeInstanceOf(FailedPreconditionError);
      expect((err as Error).message).toContain(`an emergency stop is in force since ${new Date(NOW).toISOString()} by operator:olga (reason: "bad release in the wild"): ${what} is refused`);
    }
    expect(await store.getRollout("es-new")).toBeUndefined();
    expect(await store.getRelease("es-u1")).toBeUndefined();
    // A staged release moves no node: still taken.
    expect((await store.publishRelease(release("es-s1", "es-a", true))).created).toBe(true);

    const resumed = await store.endEmergencyStop(change("fixed", NOW + 10));
    expect(resumed).toMatchObject({ changed: true, state: { active: false, resumedAtMs: NOW + 10, resumedBy: "operator:olga", resumeReason: "fixed" } });
    expect((await store.endEmergencyStop(change("twice", NOW + 11))).changed).toBe(false);
    expect((await createPlan("es-new", "es-r4", "es-d")).created).toBe(true);
    expect((await store.publishRelease(release("es-u1", "es-a", false))).created).toBe(true);
  });

  it("keeps the divergence index: since when each node's desired and reported releases have differed, in pages", async () => {
    await store.enrollNode({ nodeId: "dv-1", channel: "dv", labels: {}, agentVersion: "t" }, NOW);
    await store.enrollNode({ nodeId: "dv-2", channel: "dv", labels: {}, agentVersion: "t" }, NOW);
    await store.enrollNode({ nodeId: "dv-3", channel: "dv-other", labels: {}, agentVersion: "t" }, NOW);
    const none = await store.divergedNodes({ channel: "dv", divergedAtOrBeforeMs: Date.now() + 60_000, limit: 10 });
    expect(none).toEqual([]);
    const before = Date.now();
    await store.publishRelease(release("dv-r1", "dv", false));
    await store.publishRelease(release("dv-o1", "dv-other", false));
    const after = Date.now();
    const rows = await store.divergedNodes({ channel: "dv", divergedAtOrBeforeMs: after + 60_000, limit: 10 });
    expect(rows.map((r) => [r.node.nodeId, r.desiredReleaseId])).toEqual([
      ["dv-1", "dv-r1"],
      ["dv-2", "dv-r1"],
    ]);
    for (const r of rows) {
      expect(r.divergedSinceMs).toBeGreaterThanOrEqual(before - 5);
      expect(r.divergedSinceMs).toBeLessThanOrEqual(after + 5);
    }
    // The threshold: nothing diverged before the release was published.
    expect(await store.divergedNodes({ channel: "dv", divergedAtOrBeforeMs: before - 1000, limit: 10 })).toEqual([]);
    // Pages: the cursor is the last row.
    const all = await store.divergedNodes({ divergedAtOrBeforeMs: after + 60_000, limit: 1000 });
    const firstPage = await store.divergedNodes({ divergedAtOrBeforeMs: after + 60_000, limit: 2 });
    const last = firstPage[1];
    const rest = await store.divergedNodes({ divergedAtOrBeforeMs: after + 60_000, after: { divergedSinceMs: last.divergedSinceMs, nodeId: last.node.nodeId }, limit: 1000 });
    expect([...firstPage, ...rest].map((r) => r.node.nodeId)).toEqual(all.map((r) => r.node.nodeId));
    expect(all.map((r) => r.node.nodeId)).toEqual(expect.arrayContaining(["dv-1", "dv-2", "dv-3"]));

    // Reporting the desired release ends the divergence; reporting another starts it again.
    await store.recordSightings([{ nodeId: "dv-1", lastSeenMs: Date.now(), reportedReleaseId: "dv-r1" }]);
    expect((await store.divergedNodes({ channel: "dv", divergedAtOrBeforeMs: Date.now() + 60_000, limit: 10 })).map((r) => r.node.nodeId)).toEqual(["dv-2"]);
    const changedAt = Date.now();
    await store.recordSightings([{ nodeId: "dv-1", lastSeenMs: Date.now() + 1, reportedReleaseId: "by-hand" }]);
    const [again] = (await store.divergedNodes({ channel: "dv", divergedAtOrBeforeMs: Date.now() + 60_000, limit: 10 })).filter((r) => r.node.nodeId === "dv-1");
    expect(again.divergedSinceMs).toBeGreaterThanOrEqual(changedAt - 5);
    expect(again.node.reportedReleaseId).toBe("by-hand");
    // A new report that still differs keeps the clock.
    await store.recordSightings([{ nodeId: "dv-1", lastSeenMs: Date.now() + 2, reportedReleaseId: "by-hand-2" }]);
    const [kept] = (await store.divergedNodes({ channel: "dv", divergedAtOrBeforeMs: Date.now() + 60_000, limit: 10 })).filter((r) => r.node.nodeId === "dv-1");
    expect(kept.divergedSinceMs).toBe(again.divergedSinceMs);
    const acks = await store.acksOfNodes(["dv-1", "dv-2"]);
    expect(acks).toEqual([]);
  });

  it("accept pins what the node reports; new unstaged releases pass it by; its next move removes the pin; unpin gives the usual rule back", async () => {
    await store.publishRelease(release("pn-r1", "pn", false));
    await store.enrollNode({ nodeId: "pn-1", channel: "pn", labels: {}, agentVersion: "t" }, NOW);
    await expect(store.acceptReported("pn-1", NOW, "x", record("accept"))).rejects.toThrow(/reports no release: there is nothing to accept/);
    await store.recordSightings([{ nodeId: "pn-1", lastSeenMs: Date.now(), reportedReleaseId: "not-a-release" }]);
    await expect(store.acceptReported("pn-1", NOW, "x", record("accept"))).rejects.toBeInstanceOf(FailedPreconditionError);
    await store.publishRelease(release("pn-r0", "pn", true));
    await store.recordSightings([{ nodeId: "pn-1", lastSeenMs: Date.now() + 1, reportedReleaseId: "pn-r0" }]);
    const pinned = await store.acceptReported("pn-1", NOW + 1, "keep r0 for now", record("accept", "pn-1"));
    expect(pinned).toMatchObject({ pinnedReleaseId: "pn-r0", pinReason: "keep r0 for now" });
    expect(await store.divergedNodes({ channel: "pn", divergedAtOrBeforeMs: Date.now() + 60_000, limit: 10 })).toEqual([]);
    const [acceptRecord] = await store.auditRecords({ action: "accept", resource: "pn-1", limit: 1 });
    expect(JSON.parse(acceptRecord.fieldsJson)).toMatchObject({ pinned_release_id: "pn-r0", previous_desired_release_id: "pn-r1" });

    // A new unstaged release of the channel leaves the pinned node where it is; enrolling again too.
    await store.publishRelease(release("pn-r2", "pn", false, NOW + 2));
    await store.enrollNode({ nodeId: "pn-1", channel: "pn", labels: {}, agentVersion: "t2" }, NOW + 3);
    expect(await store.divergedNodes({ channel: "pn", divergedAtOrBeforeMs: Date.now() + 60_000, limit: 10 })).toEqual([]);

    // Unpin: the usual rule (the latest unstaged release) again.
    const unpinned = await store.unpinNode("pn-1", record("unpin", "pn-1"));
    expect(unpinned.pinnedReleaseId).toBe("");
    const [row] = await store.divergedNodes({ channel: "pn", divergedAtOrBeforeMs: Date.now() + 60_000, limit: 10 });
    expect(row).toMatchObject({ desiredReleaseId: "pn-r2", node: { nodeId: "pn-1", reportedReleaseId: "pn-r0" } });

    // Pinned again, then a plan moves it: the move removes the pin.
    await store.acceptReported("pn-1", NOW + 4, "again", record("accept", "pn-1"));
    await store.publishRelease(release("pn-r3", "pn", true));
    await createPlan("pn-plan", "pn-r3", "pn");
    const opened = await start("pn-plan", "pn-r3", "pn");
    expect(opened?.nodeIds).toEqual(["pn-1"]);
    expect(await store.getNode("pn-1")).toMatchObject({ pinnedReleaseId: "", pinReason: "" });
    const [moved] = await store.divergedNodes({ channel: "pn", divergedAtOrBeforeMs: Date.now() + 60_000, limit: 10 });
    expect(moved.desiredReleaseId).toBe("pn-r3");
  });

  it("a reapply request names the desired release; it needs one, and is refused during a stop", async () => {
    await store.enrollNode({ nodeId: "ra-1", channel: "ra", labels: {}, agentVersion: "t" }, NOW);
    await expect(store.requestReapply("ra-1", NOW, record("reapply"))).rejects.toThrow(/has no desired release/);
    await expect(store.requestReapply("ra-missing", NOW, record("reapply"))).rejects.toThrow(/not enrolled/);
    await store.publishRelease(release("ra-r1", "ra", false));
    const node = await store.requestReapply("ra-1", NOW + 7, record("reapply", "ra-1"));
    expect(node.reapplyReleaseId).toBe("ra-r1");
    expect(Number(node.reapplyRequestedAt!.seconds) * 1000 + Math.floor(node.reapplyRequestedAt!.nanos / 1e6)).toBe(NOW + 7);
    await store.startEmergencyStop(change("stop again", NOW + 20));
    await expect(store.requestReapply("ra-1", NOW + 8, record("reapply"))).rejects.toThrow(/emergency stop is in force.*reapplying a release is refused/);
    await store.endEmergencyStop(change("go", NOW + 21));
  });
});
