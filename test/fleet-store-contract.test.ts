import { create } from "@bufbuild/protobuf";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EventSchema } from "../gen/autonomy/v1/events_pb.js";
import { ReleaseSchema } from "../gen/autonomy/v1/releases_pb.js";
import { ConflictError, NotFoundError } from "../src/domain/errors.js";
import { ackToRow, releaseToRow, type AckRow } from "../src/store/fleet-rows.js";
import type { Store } from "../src/store/store.js";
import { desiredReleases } from "../src/services/desired-release.js";
import { SightingBuffer } from "../src/store/sightings.js";
import type { FleetTotalsQuery } from "../src/store/fleet-totals.js";
import type { AuditRow, StatusRow } from "../src/store/rollout-rows.js";
import { STORE_KINDS } from "./helpers/server.js";
import { openStore } from "./helpers/store.js";

const DIGEST = `sha256:${"ab".repeat(32)}`;
const release = (id: string, channel = "stable", version = "1.0") =>
  releaseToRow(create(ReleaseSchema, { releaseId: id, channel, version, artifacts: [{ name: "app", digest: DIGEST }] }), 1_000);
const ack = (releaseId: string, nodeId: string, state: string, observedAtMs: number, reportedReleaseId = ""): AckRow =>
  ({ ...ackToRow({ releaseId, nodeId, state, message: "", reportedReleaseId }, observedAtMs), updatedAtMs: observedAtMs + 1 });
const enrol = (store: Store, nodeId: string, channel = "stable", labels: Record<string, string> = {}) =>
  store.enrollNode({ nodeId, channel, labels, agentVersion: "1" }, 500);
const auditRow = (resource: string): AuditRow => ({
  atMs: 1,
  eventName: "rollout.test",
  category: "rollout",
  action: "test",
  outcome: "success",
  actor: "test",
  resourceType: "rollout_plan",
  resource,
  source: "test",
  fieldsJson: "{}",
  reason: "",
});
const status = (planId: string, version: number, phase = "active"): StatusRow => ({ planId, version, phase, currentStage: 0, reason: "", updatedAtMs: 1, stages: "[]" });

/** The fleet totals counted the way the fleet view did before the store counted them: every node read and overlaid. */
async function recount(store: Store, buffer: SightingBuffer, q: Omit<FleetTotalsQuery, "sightings">) {
  const all = await store.listNodes({ channel: q.channel });
  const desired = await desiredReleases(store, all);
  const totals = { total: all.length, up: 0, stale: 0, unknown: 0, draining: 0, drifted: 0 };
  for (const node of all) {
    buffer.overlay(node);
    const seen = seenMs(node);
    if (seen === undefined) totals.unknown++;
    else if (seen >= q.seenSinceMs) totals.up++;
    else totals.stale++;
    if (node.drained) totals.draining++;
    const desiredId = desired.get(node.nodeId)?.release.releaseId ?? "";
    if (desiredId !== "" && desiredId !== node.reportedReleaseId) totals.drifted++;
  }
  return totals;
}

const seenMs = (n: { lastSeen?: Parameters<typeof timestampMs>[0] } | undefined) => (n?.lastSeen ? timestampMs(n.lastSeen) : undefined);

describe.each(STORE_KINDS)("fleet store contract: %s", (kind) => {
  let store: Store;
  let cleanup: () => Promise<void>;
  beforeAll(async () => ({ store, cleanup } = await openStore(kind)));
  afterAll(async () => cleanup());

  describe("releases", () => {
    it("publishes once; the same content again is a no-op, other content a conflict", async () => {
      const first = await store.publishRelease(release("rel-a"));
      expect(first.created).toBe(true);
      expect(first.release.artifacts).toMatchObject([{ name: "app", digest: DIGEST }]);
      const again = await store.publishRelease({ ...release("rel-a"), publishedAtMs: 9_999 });
      expect(again.created).toBe(false);
      expect(timestampMs(again.release.publishedAt!)).toBe(1_000);
      await expect(store.publishRelease(release("rel-a", "stable", "2.0"))).rejects.toBeInstanceOf(ConflictError);
      await expect(store.publishRelease(release("rel-a", "beta"))).rejects.toBeInstanceOf(ConflictError);
      expect((await store.getRelease("rel-a"))?.version).toBe("1.0");
    });

    it("answers the release published last on each channel", async () => {
      await store.publishRelease(release("ch-1", "edge"));
      await store.publishRelease(release("ch-2", "edge"));
      await store.publishRelease(release("ch-3", "other"));
      expect((await store.latestRelease("edge"))?.releaseId).toBe("ch-2");
      expect((await store.latestRelease("other"))?.releaseId).toBe("ch-3");
      expect(await store.latestRelease("nowhere")).toBeUndefined();
      expect(await store.getRelease("nowhere")).toBeUndefined();
    });
  });

  describe("nodes", () => {
    it("enrols, re-enrols without losing drain or enrolment time, and drains", async () => {
      const n = await enrol(store, "node-e", "stable", { site: "a" });
      expect(n).toMatchObject({ nodeId: "node-e", channel: "stable", labels: { site: "a" }, drained: false });
      expect(n.lastSeen).toBeUndefined();
      const drained = await store.setDrained("node-e", true, "maintenance");
      expect(drained).toMatchObject({ drained: true, drainReason: "maintenance" });
      const again = await store.enrollNode({ nodeId: "node-e", channel: "beta", labels: { site: "b", rack: "2" }, agentVersion: "2" }, 900);
      expect(again).toMatchObject({ channel: "beta", labels: { rack: "2", site: "b" }, agentVersion: "2", drained: true });
      expect(timestampMs(again.enrolledAt!)).toBe(500);
      expect(await store.setDrained("node-e", false, "")).toMatchObject({ drained: false, drainReason: "" });
      await expect(store.setDrained("ghost", true, "x")).rejects.toBeInstanceOf(NotFoundError);
      expect(await store.getNode("ghost")).toBeUndefined();
    });

    it("lists by channel in node id order, in pages", async () => {
      for (const id of ["p-03", "p-01", "p-02", "p-04"]) await enrol(store, id, "paged");
      await enrol(store, "p-00", "elsewhere");
      const ids = async (q: Parameters<Store["listNodes"]>[0]) => (await store.listNodes(q)).map((n) => n.nodeId);
      expect(await ids({ channel: "paged" })).toEqual(["p-01", "p-02", "p-03", "p-04"]);
      expect(await ids({ channel: "paged", limit: 2 })).toEqual(["p-01", "p-02"]);
      expect(await ids({ channel: "paged", afterNodeId: "p-02", limit: 5 })).toEqual(["p-03", "p-04"]);
      expect((await ids({})).length).toBeGreaterThanOrEqual(5);
    });

    it("records sightings: last seen never moves back, the reported release follows only newer ones", async () => {
      await enrol(store, "seen");
      await store.recordSightings([{ nodeId: "seen", lastSeenMs: 2_000, reportedReleaseId: "r2", agentVersion: "a2" }, { nodeId: "ghost", lastSeenMs: 1 }]);
      let n = await store.getNode("seen");
      expect([seenMs(n), n?.reportedReleaseId, n?.agentVersion]).toEqual([2_000, "r2", "a2"]);
      await store.recordSightings([{ nodeId: "seen", lastSeenMs: 1_500, reportedReleaseId: "r1" }]);
      n = await store.getNode("seen");
      expect([seenMs(n), n?.reportedReleaseId]).toEqual([2_000, "r2"]);
      await store.recordSightings([{ nodeId: "seen", lastSeenMs: 3_000 }]);
      n = await store.getNode("seen");
      expect([seenMs(n), n?.reportedReleaseId, n?.agentVersion]).toEqual([3_000, "r2", "a2"]);
      expect(await store.getNode("ghost")).toBeUndefined();
    });
  });

  describe("fleet totals", () => {
    let buffer: SightingBuffer;
    const ids = Array.from({ length: 10 }, (_, i) => `t-${i}`);
    const compare = async (channel: string | undefined, seenSinceMs: number) => {
      const counted = await store.fleetTotals({ channel, seenSinceMs, sightings: buffer.pending() });
      expect(counted).toEqual(await recount(store, buffer, { channel, seenSinceMs }));
      return counted;
    };
    const cases = async () => {
      for (const since of [0, 9_000, 9_400, 9_999, 10_000, 15_000]) {
        await compare("tot", since);
        await compare(undefined, since);
      }
    };

    beforeAll(async () => {
      buffer = new SightingBuffer({ store, flushIntervalMs: 3_600_000, onFlushError: () => {} });
      await store.publishRelease({ ...release("tot-r1", "tot"), publishedAtMs: 1_000 });
      await store.publishRelease({ ...release("tot-s1", "tot"), publishedAtMs: 1_100, staged: true });
      for (const id of ids) await enrol(store, id, "tot");
      await enrol(store, "tot-o1", "tot-other");
      await store.createRollout(
        { planId: "p-tot", releaseId: "tot-s1", channel: "tot", spec: "{}", signature: "", keyId: "", createdAtMs: 1_500 },
        status("p-tot", 1),
        auditRow("p-tot"),
      );
      await store.commitRollout({
        expectedVersion: 1,
        status: status("p-tot", 2),
        moves: ids.slice(0, 4).map((nodeId) => ({ planId: "p-tot", stageId: "s", nodeId, releaseId: "tot-s1", movedAtMs: 2_000 })),
        audit: [auditRow("p-tot")],
      });
      await store.recordSightings([
        { nodeId: "t-0", lastSeenMs: 10_000, reportedReleaseId: "tot-s1" },
        { nodeId: "t-1", lastSeenMs: 5_000, reportedReleaseId: "tot-r1" },
        { nodeId: "t-2", lastSeenMs: 9_500 },
        { nodeId: "t-3", lastSeenMs: 9_399 },
        { nodeId: "t-4", lastSeenMs: 20_000, reportedReleaseId: "tot-r1" },
        { nodeId: "t-5", lastSeenMs: 100, reportedReleaseId: "other" },
        { nodeId: "tot-o1", lastSeenMs: 50_000 },
      ]);
      await store.setDrained("t-4", true, "x");
      await store.setDrained("t-7", true, "x");
      // Buffered, not written: they change classes (stale to up, unknown to up or stale, drift) or, older than stored, nothing.
      buffer.record({ nodeId: "t-1", lastSeenMs: 12_000, reportedReleaseId: "tot-s1" });
      buffer.record({ nodeId: "t-3", lastSeenMs: 9_000, reportedReleaseId: "tot-s1" });
      buffer.record({ nodeId: "t-5", lastSeenMs: 9_999 });
      buffer.record({ nodeId: "t-6", lastSeenMs: 9_450, reportedReleaseId: "tot-r1" });
      buffer.record({ nodeId: "t-8", lastSeenMs: 8_000 });
      buffer.record({ nodeId: "tot-o1", lastSeenMs: 60_000, reportedReleaseId: "x" });
    });

    it("counts up, stale, unknown, draining and drifted exactly, with buffered sightings applied", async () => {
      expect(await compare("tot", 9_400)).toEqual({ total: 10, up: 6, stale: 2, unknown: 2, draining: 2, drifted: 6 });
      await cases();
      expect(await store.fleetTotals({ channel: "nowhere", seenSinceMs: 0, sightings: buffer.pending() })).toEqual({
        total: 0,
        up: 0,
        stale: 0,
        unknown: 0,
        draining: 0,
        drifted: 0,
      });
    });

    it("stays exact when the buffer is written, releases are published, plans move nodes and nodes change channel", async () => {
      await buffer.flush();
      await cases();
      await store.publishRelease({ ...release("tot-r2", "tot"), publishedAtMs: 3_000 });
      await cases();
      expect((await compare("tot", 0)).drifted).toBe(10);
      await store.commitRollout({ expectedVersion: 2, status: status("p-tot", 3, "completed"), moves: [], audit: [auditRow("p-tot")] });
      await store.createRollout(
        { planId: "p-tot2", releaseId: "tot-s1", channel: "tot", spec: "{}", signature: "", keyId: "", createdAtMs: 3_500 },
        status("p-tot2", 1),
        auditRow("p-tot2"),
      );
      await store.commitRollout({
        expectedVersion: 1,
        status: status("p-tot2", 2),
        moves: [{ planId: "p-tot2", stageId: "s", nodeId: "t-0", releaseId: "tot-s1", movedAtMs: 4_000 }],
        audit: [auditRow("p-tot2")],
      });
      buffer.record({ nodeId: "t-2", lastSeenMs: 30_000, reportedReleaseId: "tot-r2" });
      await cases();
      expect((await compare("tot", 0)).drifted).toBe(8);
      await store.enrollNode({ nodeId: "t-9", channel: "tot-other", labels: {}, agentVersion: "1" }, 600);
      await store.setDrained("t-4", false, "");
      await cases();
      await compare("tot-other", 0);
      expect(await compare("tot", 0)).toMatchObject({ total: 9, draining: 1 });
    });
  });

  describe("acks", () => {
    beforeAll(async () => {
      await store.publishRelease(release("ack-r1"));
      await store.publishRelease(release("ack-r2"));
      await enrol(store, "ack-n1");
      await enrol(store, "ack-n2");
    });

    it("refuses an ack of an unknown release or from a node that is not enrolled", async () => {
      await expect(store.upsertAck(ack("nope", "ack-n1", "pending", 1))).rejects.toThrow(/release "nope" not found/);
      await expect(store.upsertAck(ack("ack-r1", "nope", "pending", 1))).rejects.toThrow(/node "nope" is not enrolled/);
      await expect(store.upsertAck(ack("ack-r1", "nope", "pending", 1))).rejects.toBeInstanceOf(NotFoundError);
      expect(await store.acksOfNode("nope")).toEqual([]);
    });

    it("keeps the newest observation and ignores one that arrives late", async () => {
      expect((await store.upsertAck(ack("ack-r1", "ack-n1", "downloading", 100))).stale).toBe(false);
      const newer = await store.upsertAck(ack("ack-r1", "ack-n1", "healthy", 300, "ack-r1"));
      expect(newer).toMatchObject({ stale: false, ack: { state: "healthy", reportedReleaseId: "ack-r1" } });
      const late = await store.upsertAck(ack("ack-r1", "ack-n1", "applied", 200));
      expect(late).toMatchObject({ stale: true, ack: { state: "healthy", reportedReleaseId: "ack-r1" } });
      expect(timestampMs(late.ack.observedAt!)).toBe(300);
      const same = await store.upsertAck(ack("ack-r1", "ack-n1", "failed", 300));
      expect(same).toMatchObject({ stale: false, ack: { state: "failed" } });
    });

    it("takes acks sent together: each against the one before, a refused one alone", async () => {
      const sent = await Promise.allSettled([
        store.upsertAck(ack("ack-r2", "ack-n1", "downloading", 1_000)),
        store.upsertAck(ack("ack-r2", "ack-n1", "healthy", 1_200, "ack-r2")),
        store.upsertAck(ack("nope", "ack-n1", "pending", 1_300)),
        store.upsertAck(ack("ack-r2", "ack-n1", "applied", 1_100)),
        store.upsertAck(ack("ack-r2", "ghost", "pending", 1_300)),
        store.upsertAck(ack("ack-r1", "ack-n2", "failed", 1_400)),
      ]);
      expect(sent.map((s) => s.status)).toEqual(["fulfilled", "fulfilled", "rejected", "fulfilled", "rejected", "fulfilled"]);
      const value = (i: number) => (sent[i] as PromiseFulfilledResult<Awaited<ReturnType<Store["upsertAck"]>>>).value;
      expect([value(0).stale, value(1).stale, value(3).stale, value(5).stale]).toEqual([false, false, true, false]);
      expect(value(3).ack).toMatchObject({ state: "healthy", reportedReleaseId: "ack-r2" });
      expect((sent[2] as PromiseRejectedResult).reason).toBeInstanceOf(NotFoundError);
      expect(String((sent[4] as PromiseRejectedResult).reason)).toMatch(/node "ghost" is not enrolled/);
      const stored = await store.acksOfRelease("ack-r2");
      expect(stored.find((a) => a.nodeId === "ack-n1")).toMatchObject({ state: "healthy" });
    });

    it("answers every ack of one turn, more than one transaction takes, each with its own result", async () => {
      const nodes = Array.from({ length: 40 }, (_, i) => `ack-many-${i}`);
      for (const n of nodes) await enrol(store, n);
      // 120 writes sent in one turn of the event loop: the SQLite store hands them to its writer
      // together, which commits them in groups; a refused one in the middle fails alone.
      const sent = await Promise.allSettled(
        Array.from({ length: 120 }, (_, i) =>
          i === 61 ? store.upsertAck(ack("nope", nodes[0], "pending", 5_000)) : store.upsertAck(ack("ack-r1", nodes[i % 40], i < 80 ? "applied" : "healthy", 5_000 + i)),
        ),
      );
      expect(sent.filter((s) => s.status === "rejected")).toHaveLength(1);
      expect((sent[61] as PromiseRejectedResult).reason).toBeInstanceOf(NotFoundError);
      for (const [i, s] of sent.entries()) {
        if (i === 61) continue;
        expect(s.status).toBe("fulfilled");
        expect((s as PromiseFulfilledResult<Awaited<ReturnType<Store["upsertAck"]>>>).value.ack).toMatchObject({ nodeId: nodes[i % 40], releaseId: "ack-r1" });
      }
      const stored = new Map((await store.acksOfRelease("ack-r1")).map((a) => [a.nodeId, a]));
      for (const n of nodes) expect(stored.get(n)?.state).toBe("healthy");
      expect(timestampMs(stored.get(nodes[1])!.observedAt!)).toBe(5_000 + 81);
    });

    it("lists a release's acks by node and a node's acks newest first", async () => {
      await store.upsertAck(ack("ack-r2", "ack-n2", "pending", 400));
      await store.upsertAck(ack("ack-r2", "ack-n1", "pending", 500));
      await store.upsertAck(ack("ack-r1", "ack-n2", "pending", 450));
      expect((await store.acksOfRelease("ack-r2")).map((a) => a.nodeId)).toEqual(["ack-n1", "ack-n2"]);
      expect((await store.acksOfNode("ack-n2")).map((a) => a.releaseId)).toEqual(["ack-r1", "ack-r2"]);
      expect(await store.acksOfRelease("unknown")).toEqual([]);
    });
  });

  describe("what events say about a node", () => {
    it("finds the newest event of each type and the newest lock fingerprint", async () => {
      const e = (id: string, type: string, fp?: string) =>
        create(EventSchema, { eventId: id, eventType: type, nodeId: "ev-node", timestamp: { seconds: 1n }, lockFingerprint: fp });
      await store.ingestEvents([e("x1", "boot", "fp-1"), e("x2", "crash"), e("x3", "boot"), e("x4", "crash", "fp-2"), e("x5", "boot")]);
      await store.ingestEvents([create(EventSchema, { eventId: "x6", eventType: "boot", nodeId: "other", timestamp: { seconds: 1n }, lockFingerprint: "fp-x" })]);
      const last = await store.lastEventsByType("ev-node");
      expect(last.map((x) => [x.eventType, x.eventId])).toEqual([["boot", "x5"], ["crash", "x4"]]);
      expect(await store.lastLockFingerprint("ev-node")).toBe("fp-2");
      expect(await store.lastEventsByType("silent")).toEqual([]);
      expect(await store.lastLockFingerprint("silent")).toBeUndefined();
    });
  });
});
