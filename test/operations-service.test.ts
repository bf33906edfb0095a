import { create } from "@bufbuild/protobuf";
import { createContextValues, type HandlerContext } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  EmergencyResumeRequestSchema,
  GetEmergencyStatusRequestSchema,
  ListDivergedNodesRequestSchema,
  ReconcileNodesRequestSchema,
  type GetEmergencyStatusResponse,
  type ListDivergedNodesResponse,
  type ReconcileNodesResponse,
} from "../gen/autonomy/v1/operations_pb.js";
import { RolloutPlanSchema } from "../gen/autonomy/v1/rollouts_pb.js";
import { classifyDivergence, type DivergenceFacts } from "../src/domain/divergence.js";
import { FailedPreconditionError, ValidationError } from "../src/domain/errors.js";
import { applyAction } from "../src/domain/rollout-actions.js";
import { initialPlanState } from "../src/domain/rollouts.js";
import { createMetrics } from "../src/observability/metrics.js";
import { DecisionWriter } from "../src/rollouts/decisions.js";
import { auditRecord } from "../src/services/audit-record.js";
import { countDiverged } from "../src/services/divergence-report.js";
import { createOperationsService } from "../src/services/operations-service.js";
import type { RolloutController } from "../src/rollouts/controller.js";
import { SightingBuffer } from "../src/store/sightings.js";
import type { Store } from "../src/store/store.js";
import { openStore } from "./helpers/store.js";

const ctx = { values: createContextValues(), requestHeader: new Headers({ "autonomy-operator": "olga" }) } as unknown as HandlerContext;

describe("divergence classes", () => {
  const base: DivergenceFacts = { nowMs: 100_000, desiredReleaseId: "d2", reportedReleaseId: "d1", lastSeenMs: 99_000, ackedReported: true, staleAfterMs: 10_000 };
  it.each<[string, Partial<DivergenceFacts>, string]>([
    ["reports a release it never acked", { ackedReported: false, desiredAck: { releaseId: "d2", state: "downloading", updatedAtMs: 99_000 } }, "unexpected"],
    ["reports another release after it acked the desired one healthy", { desiredAck: { releaseId: "d2", state: "healthy", updatedAtMs: 90_000 } }, "unexpected"],
    ["its ack of the desired release failed", { desiredAck: { releaseId: "d2", state: "failed", updatedAtMs: 99_000 } }, "failed"],
    ["its ack of the desired release was rolled back", { desiredAck: { releaseId: "d2", state: "rolled_back", updatedAtMs: 99_000 } }, "failed"],
    ["its install is on its way, recently", { desiredAck: { releaseId: "d2", state: "applied", updatedAtMs: 95_000 } }, "installing"],
    ["its install has not moved for longer than --node-stale-after", { desiredAck: { releaseId: "d2", state: "downloading", updatedAtMs: 80_000 } }, "stuck"],
    ["its install moved recently but the node is not seen", { desiredAck: { releaseId: "d2", state: "downloading", updatedAtMs: 95_000 }, lastSeenMs: 50_000 }, "stuck"],
    ["no ack of the desired release", {}, "stuck"],
    ["never reported anything and never acked", { reportedReleaseId: "", ackedReported: false, lastSeenMs: undefined }, "stuck"],
  ])("%s: %s", (_name, facts, expected) => {
    expect(classifyDivergence({ ...base, ...facts })).toBe(expected);
  });
});

describe("operations service", () => {
  let store: Store;
  let cleanup: () => Promise<void>;
  let sightings: SightingBuffer;
  let service: ReturnType<typeof createOperationsService>;
  beforeAll(async () => {
    ({ store, cleanup } = await openStore("sqlite"));
    sightings = new SightingBuffer({ store, flushIntervalMs: 60_000, onFlushError: () => {} });
    const controller = { resync: async () => ({ plans: 0, drifted: [] }) } as unknown as RolloutController;
    service = createOperationsService({ store, sightings, staleAfterMs: 60_000, controller });
  });
  afterAll(async () => {
    await sightings.close();
    await cleanup();
  });

  it.each<[string, Parameters<typeof create<typeof ReconcileNodesRequestSchema>>[1], string]>([
    ["no reason", { nodeId: "n", strategy: "drain" }, "reason"],
    ["neither a node nor all_diverged", { strategy: "drain", reason: "r" }, "node_id"],
    ["both a node and all_diverged", { nodeId: "n", allDiverged: true, strategy: "drain", reason: "r" }, "node_id"],
    ["an unknown strategy", { nodeId: "n", strategy: "reboot", reason: "r" }, "strategy"],
    ["unpin with a strategy", { nodeId: "n", unpin: true, strategy: "accept", reason: "r" }, "strategy"],
    ["unpin of every diverged node", { allDiverged: true, unpin: true, reason: "r" }, "unpin"],
    ["a channel without all_diverged", { nodeId: "n", strategy: "drain", channel: "c", reason: "r" }, "channel"],
    ["a negative threshold", { allDiverged: true, strategy: "drain", olderThanSeconds: -1n, reason: "r" }, "older_than_seconds"],
  ])("reconcile refuses %s, naming the field", async (_name, req, field) => {
    const err = await Promise.resolve(service.reconcileNodes(create(ReconcileNodesRequestSchema, req), ctx)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ValidationError);
    expect((err as ValidationError).field).toBe(field);
  });

  it("the report refuses a page token it did not give and a threshold out of bounds", async () => {
    const bad = async (req: Parameters<typeof create<typeof ListDivergedNodesRequestSchema>>[1]) =>
      Promise.resolve(service.listDivergedNodes(create(ListDivergedNodesRequestSchema, req), ctx)).catch((e: unknown) => (e as ValidationError).field);
    expect(await bad({ pageToken: "garbage" })).toBe("page_token");
    expect(await bad({ olderThanSeconds: 10n ** 12n })).toBe("older_than_seconds");
    expect(await bad({ pageSize: 0 })).toBe("page_size");
  });

  it("counts diverged nodes by class for cp_nodes_diverged, and the report pages through them", async () => {
    for (let i = 1; i <= 5; i++) await store.enrollNode({ nodeId: `sv-${i}`, channel: "sv", labels: {}, agentVersion: "t" }, Date.now());
    await store.publishRelease({ releaseId: "sv-r1", channel: "sv", version: "1", artifacts: "[]", notes: "", publishedAtMs: Date.now(), staged: false });
    await store.publishRelease({ releaseId: "sv-r0", channel: "sv", version: "0", artifacts: "[]", notes: "", publishedAtMs: Date.now(), staged: true });
    const now = Date.now();
    await store.upsertAck({ releaseId: "sv-r1", nodeId: "sv-2", state: "failed", message: "boom", reportedReleaseId: "", observedAtMs: now, updatedAtMs: now });
    sightings.record({ nodeId: "sv-3", lastSeenMs: now, reportedReleaseId: "sv-r0" });
    await sightings.flush();
    const counts = await countDiverged({ store, sightings, staleAfterMs: 60_000 }, 0);
    expect(counts).toEqual({ installing: 0, failed: 1, stuck: 3, unexpected: 1 });
    expect(await countDiverged({ store, sightings, staleAfterMs: 60_000 }, 600)).toEqual({ installing: 0, failed: 0, stuck: 0, unexpected: 0 });

    const seen: string[] = [];
    let pageToken = "";
    do {
      const page = (await service.listDivergedNodes(create(ListDivergedNodesRequestSchema, { channel: "sv", olderThanSeconds: 0n, pageSize: 2, pageToken }), ctx)) as ListDivergedNodesResponse;
      expect(page.nodes.length).toBeLessThanOrEqual(2);
      seen.push(...page.nodes.map((n) => n.nodeId));
      pageToken = page.nextPageToken;
    } while (pageToken !== "");
    expect(seen.sort()).toEqual(["sv-1", "sv-2", "sv-3", "sv-4", "sv-5"]);

    // accept refuses a node that reports nothing; with all_diverged such nodes are skipped, the others done.
    const one = await Promise.resolve(service.reconcileNodes(create(ReconcileNodesRequestSchema, { nodeId: "sv-1", strategy: "accept", reason: "r" }), ctx)).catch((e: unknown) => e);
    expect(one).toBeInstanceOf(FailedPreconditionError);
    const all = (await service.reconcileNodes(
      create(ReconcileNodesRequestSchema, { allDiverged: true, channel: "sv", olderThanSeconds: 0n, strategy: "accept", reason: "sweep" }),
      ctx,
    )) as ReconcileNodesResponse;
    expect(all).toMatchObject({ done: 1, skipped: 4 });
    expect(all.outcomes.find((o) => o.outcome === "done")).toMatchObject({ nodeId: "sv-3", message: "pinned to sv-r0, the release it reports" });
  });

  it("the controller reads the stop from the store when it decides: a stop another replica started refuses its openings", async () => {
    const writer = new DecisionWriter({ store, metrics: createMetrics({ processMetrics: false }), staleAfterMs: 60_000 });
    const plan = create(RolloutPlanSchema, { planId: "dw", releaseId: "dw-r", channel: "dw", stages: [{ stageId: "all", percent: 100 }] });
    const before = initialPlanState(plan, Date.now());
    await store.startEmergencyStop({
      actor: "operator:elsewhere",
      source: "api",
      atMs: Date.now(),
      reason: "from another replica",
      audit: auditRecord({ actor: "operator:elsewhere", source: "api" }, { eventName: "emergency.stopped", category: "system", action: "emergency_stop", resourceType: "fleet", resource: "emergency_stop" }),
    });
    const outcome = applyAction(plan, before, "start", { nowMs: Date.now(), reason: "", actor: "system:rollout-controller" });
    const err = await writer
      .write({ planId: "dw", releaseId: "dw-r", before, action: "start", outcome, who: { actor: "system:rollout-controller", source: "controller" }, reason: "", nowMs: Date.now() })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(FailedPreconditionError);
    expect((err as Error).message).toMatch(/by operator:elsewhere \(reason: "from another replica"\): rollout action start is refused/);
    const status = (await service.getEmergencyStatus(create(GetEmergencyStatusRequestSchema), ctx)) as GetEmergencyStatusResponse;
    expect(status.state).toMatchObject({ active: true, stoppedBy: "operator:elsewhere" });
    await service.emergencyResume(create(EmergencyResumeRequestSchema, { reason: "done" }), ctx);
    expect(((await service.getEmergencyStatus(create(GetEmergencyStatusRequestSchema), ctx)) as GetEmergencyStatusResponse).state).toMatchObject({ active: false, resumedBy: "olga" });
  });
});
