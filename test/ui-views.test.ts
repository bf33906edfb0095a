import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { createOrchestratorClients, type OrchestratorClients } from "../clients/index.js";
import { GateStatusSchema, RolloutPlanSchema, RolloutStatusSchema } from "../gen/autonomy/v1/rollouts_pb.js";
import { ValidationError } from "../src/domain/errors.js";
import { checkFleetSearch, decodeOffsetToken, decodeSearchToken, encodeKeysetToken, encodeOffsetToken, parseLabelSelector } from "../src/domain/fleet-query.js";
import { searchFleet, type FleetSearchRow } from "./helpers/fleet-search-reference.js";
import { SYSTEM_ACTIONS, TRANSITIONS } from "../src/domain/rollouts.js";
import { PHASE_ACTIONS, ackCurves, duration, waitingOn } from "../web/src/format.js";
import { h1 } from "./helpers/http.js";
import { startTestServer, type TestServer } from "./helpers/server.js";
import { until } from "./helpers/wait.js";

const row = (nodeId: string, over: Partial<FleetSearchRow> = {}): FleetSearchRow => ({
  nodeId,
  channel: "stable",
  lifecycle: "HEALTHY",
  lastSeenMs: 1000,
  reportedReleaseId: "r1",
  desiredReleaseId: "r1",
  drift: false,
  labels: {},
  ...over,
});
const query = (over: Partial<Parameters<typeof checkFleetSearch>[0]> = {}) =>
  checkFleetSearch({ lifecycle: "", labelSelector: "", drift: "", orderBy: "", descending: false, pageToken: "", ...over });

describe("fleet search", () => {
  it.each([
    ["lifecycle", { lifecycle: "ASLEEP" }],
    ["drift", { drift: "maybe" }],
    ["order_by", { orderBy: "labels" }],
    ["page_size", { pageSize: 0 }],
    ["page_size", { pageSize: 1001 }],
    ["page_token", { pageToken: "bm9wZQ" }],
    ["label_selector", { labelSelector: "site" }],
    ["label_selector", { labelSelector: "=berlin" }],
  ])("refuses a bad %s, naming it", (field, over) => {
    let err: unknown;
    try {
      query(over);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ValidationError);
    expect((err as ValidationError).field).toBe(field);
  });

  it("reads a label selector with spaces, and an offset token back", () => {
    expect(parseLabelSelector(" site = berlin , tier=edge ")).toEqual([
      ["site", "berlin"],
      ["tier", "edge"],
    ]);
    expect(decodeOffsetToken(encodeOffsetToken(150))).toBe(150);
    expect(decodeOffsetToken("")).toBe(0);
  });

  it("reads a keyset token back only for the order it was issued for", () => {
    const after = { value: null, nodeId: "n-7" };
    const token = encodeKeysetToken("last_seen", true, after, 50);
    expect(decodeSearchToken(token, "last_seen", true)).toEqual({ offset: 50, after });
    expect(query({ orderBy: "last_seen", descending: true, pageToken: token })).toMatchObject({ offset: 50, after });
    // Offset tokens are still read (a page opened before the server issued keyset tokens).
    expect(decodeSearchToken(encodeOffsetToken(25), "node_id", false)).toEqual({ offset: 25 });
    for (const [by, desc] of [["last_seen", false], ["node_id", true]] as const) {
      expect(() => decodeSearchToken(token, by, desc)).toThrow(ValidationError);
    }
    // A last_seen key is a time or null; a text key is text.
    expect(() => decodeSearchToken(encodeKeysetToken("node_id", false, { value: 5, nodeId: "a" }, 1), "node_id", false)).toThrow(ValidationError);
    expect(() => decodeSearchToken(encodeKeysetToken("last_seen", false, { value: "x", nodeId: "a" }, 1), "last_seen", false)).toThrow(ValidationError);
    expect(() => decodeSearchToken(Buffer.from("k[1,2").toString("base64url"), "node_id", false)).toThrow(ValidationError);
  });

  it("filters on every field given, orders with node id breaking ties, and pages without overlap", () => {
    const rows = [
      row("a", { lastSeenMs: 3, labels: { site: "x" } }),
      row("b", { lastSeenMs: 1, labels: { site: "x" }, drift: true }),
      row("c", { lastSeenMs: 3, labels: { site: "y" } }),
      row("d", { lastSeenMs: undefined, lifecycle: "UNAVAILABLE", labels: { site: "x" } }),
      row("e", { lastSeenMs: 2, labels: { site: "x", tier: "edge" } }),
    ];
    expect(searchFleet(rows, query({ labelSelector: "site=x" })).page.map((r) => r.nodeId)).toEqual(["a", "b", "d", "e"]);
    expect(searchFleet(rows, query({ labelSelector: "site=x,tier=edge" })).page.map((r) => r.nodeId)).toEqual(["e"]);
    expect(searchFleet(rows, query({ drift: "drifted" })).page.map((r) => r.nodeId)).toEqual(["b"]);
    expect(searchFleet(rows, query({ drift: "in_sync", lifecycle: "HEALTHY" })).total).toBe(3);
    // Never seen sorts first; equal times by node id.
    expect(searchFleet(rows, query({ orderBy: "last_seen" })).page.map((r) => r.nodeId)).toEqual(["d", "b", "e", "a", "c"]);
    expect(searchFleet(rows, query({ orderBy: "last_seen", descending: true })).page.map((r) => r.nodeId)).toEqual(["c", "a", "e", "b", "d"]);
    const seen: string[] = [];
    let token = "";
    for (let i = 0; i < 10; i++) {
      const r = searchFleet(rows, query({ orderBy: "last_seen", pageSize: 2, pageToken: token }));
      seen.push(...r.page.map((x) => x.nodeId));
      if (r.nextOffset === undefined) break;
      token = encodeOffsetToken(r.nextOffset);
    }
    expect(seen).toEqual(["d", "b", "e", "a", "c"]);
  });
});

describe("the dashboard's wording", () => {
  it("offers exactly the operator actions of the server's transition table", () => {
    for (const [phase, cells] of Object.entries(TRANSITIONS)) {
      const server = Object.keys(cells).filter((a) => !(SYSTEM_ACTIONS as readonly string[]).includes(a));
      expect([...PHASE_ACTIONS[phase]].sort(), phase).toEqual(server.sort());
    }
    expect(Object.keys(PHASE_ACTIONS).sort()).toEqual(Object.keys(TRANSITIONS).sort());
  });

  it("says in words what an active plan waits on", () => {
    const nowMs = 1_000_000_000;
    const plan = create(RolloutPlanSchema, {
      planId: "p",
      stages: [{ stageId: "canary", gates: [{ kind: "manual" }, { kind: "success_ratio", minRatio: 1, minSample: 4 }, { kind: "time_soak", seconds: 300 }] }],
    });
    const status = create(RolloutStatusSchema, {
      phase: "active",
      currentStageId: "canary",
      stages: [{ stageId: "canary", phase: "open", settledAt: timestampFromMs(nowMs - 48_000) }],
    });
    const gates = [
      create(GateStatusSchema, { kind: "manual", passed: false, detail: "awaiting operator approval" }),
      create(GateStatusSchema, { kind: "success_ratio", passed: false, detail: "3 of 4 healthy (0.75; needs 1 and at least 4)" }),
      create(GateStatusSchema, { kind: "time_soak", passed: false, detail: "soaking: 252s of 300s left" }),
    ];
    expect(waitingOn(plan, status, gates, nowMs)).toBe("stage canary: manual approval; success 3 of 4 healthy (0.75; needs 1 and at least 4); soak 4m12s left");
    expect(waitingOn(plan, create(RolloutStatusSchema, { phase: "paused", reason: "lunch" }), undefined, nowMs)).toBe("paused by an operator: lunch; resume to continue");
    expect(duration(7_260_000)).toBe("2h01m");
  });

  it("says that a stage which selected no node waits for nodes, and why", () => {
    const plan = create(RolloutPlanSchema, { planId: "p", stages: [{ stageId: "paris", matchLabels: { site: "paris" }, gates: [{ kind: "manual" }] }] });
    const why = "no node selected: no node of the channel matches site=paris";
    const status = create(RolloutStatusSchema, { phase: "active", currentStageId: "paris", stages: [{ stageId: "paris", phase: "waiting", detail: why }] });
    const gates = [create(GateStatusSchema, { kind: "manual", passed: false, detail: why })];
    expect(waitingOn(plan, status, gates, 0)).toBe(`stage paris waiting for nodes: ${why}; promote to go on without it`);
    expect(waitingOn(plan, status, undefined, 0)).toBe(`stage paris waiting for nodes: ${why}; promote to go on without it`);
  });
});

describe("acks over time", () => {
  it("counts, per state, the nodes that had reached their current state by each ack's time", () => {
    const at = (ms: number) => timestampFromMs(ms);
    const curves = ackCurves([
      { state: "healthy", updatedAt: at(3000) },
      { state: "failed", updatedAt: at(2000) },
      { state: "healthy", updatedAt: at(1000) },
      { state: "pending" },
    ]);
    expect(Object.fromEntries(curves)).toEqual({
      healthy: [
        { atMs: 1000, count: 1 },
        { atMs: 3000, count: 2 },
      ],
      failed: [{ atMs: 2000, count: 1 }],
    });
  });
});

describe("the dashboard's RPCs on a real server", () => {
  let server: TestServer;
  let api: OrchestratorClients;
  beforeAll(async () => {
    server = await startTestServer("sqlite");
    api = createOrchestratorClients({ baseUrl: server.url });
    for (const [nodeId, channel, site] of [
      ["a-1", "alpha", "x"],
      ["a-2", "alpha", "y"],
      ["b-1", "beta", "x"],
    ]) {
      await api.nodes.enrollNode({ nodeId, channel, labels: { site } });
      await api.nodes.heartbeat({ nodeId, reportedReleaseId: "alpha-r1" });
    }
    // Seen, but reporting no release: it drifts from the channel's release.
    await api.nodes.enrollNode({ nodeId: "a-3", channel: "alpha", labels: { site: "z" } });
    await api.nodes.heartbeat({ nodeId: "a-3" });
    const release = (releaseId: string, staged: boolean) => ({ releaseId, channel: "alpha", version: "1", staged, artifacts: [{ name: "app", digest: `sha256:${"ee".repeat(32)}` }] });
    await api.releases.publishRelease({ release: release("alpha-r1", false) });
    await api.releases.publishRelease({ release: release("alpha-r2", true) });
    await api.releases.upsertAck({ nodeId: "a-1", releaseId: "alpha-r1", state: "healthy", reportedReleaseId: "alpha-r1" });
    await api.releases.upsertAck({ nodeId: "a-2", releaseId: "alpha-r1", state: "failed" });
  });
  afterAll(async () => {
    api.close();
    await server.stop();
  });

  it("GET /v1/fleet/overview counts every node and each channel", async () => {
    const res = await h1(`${server.url}/v1/fleet/overview`);
    expect(res.status).toBe(200);
    const body = res.json();
    expect(body.totals).toMatchObject({ total: 4, up: 4, stale: 0, unknown: 0, draining: 0, drifted: 1 });
    expect(body.channels.map((c: { channel: string }) => c.channel)).toEqual(["alpha", "beta"]);
    expect(body.channels[0]).toMatchObject({ totals: { total: 3, drifted: 1 }, latest_release: { release_id: "alpha-r2" } });
  });

  it("GET /v1/fleet/nodes filters by labels, orders and pages; a bad field is a 400 naming it", async () => {
    const page1 = (await h1(`${server.url}/v1/fleet/nodes?label_selector=site%3Dx&order_by=node_id&descending=true&page_size=1`)).json();
    expect(page1.total_size).toBe(2);
    expect(page1.rows.map((r: { node: { node_id: string } }) => r.node.node_id)).toEqual(["b-1"]);
    expect(page1.rows[0].labels).toEqual({ site: "x" });
    const page2 = (await h1(`${server.url}/v1/fleet/nodes?label_selector=site%3Dx&order_by=node_id&descending=true&page_size=1&page_token=${page1.next_page_token}`)).json();
    expect(page2).toMatchObject({ offset: 1, next_page_token: "", rows: [{ node: { node_id: "a-1" } }] });
    const bad = await h1(`${server.url}/v1/fleet/nodes?lifecycle=ASLEEP`);
    expect(bad.status).toBe(400);
    expect(bad.json().message).toContain("lifecycle");
  });

  it("GET /v1/channels/{channel}/releases answers each release with the channel's acks per state", async () => {
    const res = await h1(`${server.url}/v1/channels/alpha/releases`);
    expect(res.status).toBe(200);
    const body = res.json();
    expect(body.channel_nodes).toBe(3);
    expect(body.releases.map((r: { release: { release_id: string } }) => r.release.release_id)).toEqual(["alpha-r2", "alpha-r1"]);
    const r1 = body.releases[1];
    expect(r1).toMatchObject({ latest: false, not_acked: 1, desired_by: 3, reported_by: 2 });
    expect(r1.acks.sort((a: { state: string }, b: { state: string }) => a.state.localeCompare(b.state))).toEqual([
      { state: "failed", nodes: 1 },
      { state: "healthy", nodes: 1 },
    ]);
    expect(body.releases[0]).toMatchObject({ latest: true, not_acked: 3, acks: [], desired_by: 0, reported_by: 0 });
    expect((await h1(`${server.url}/v1/channels/nobody/releases`)).json()).toEqual({ channel_nodes: 0, releases: [] });
  });

  it("refuses an approval sent with a status version that moved on (409 aborted)", async () => {
    await api.rollouts.createRolloutPlan({
      plan: { planId: "approve-version", releaseId: "alpha-r2", stages: [{ stageId: "one", nodeIds: ["a-1"], gates: [{ kind: "manual" }] }] },
    });
    const open = await until("the stage to open", async () => {
      const s = (await api.rollouts.getRolloutStatus({ planId: "approve-version" })).status!;
      return s.currentStageId === "one" ? s : undefined;
    });
    const stale = await h1(`${server.url}/v1/rollouts/approve-version/stages/one/gates/approve`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ reason: "looks good", expected_version: open.version - 1 }),
    });
    expect(stale.status).toBe(409);
    expect(stale.json().code).toBe("aborted");
    const ok = await api.rollouts.approveGate({ planId: "approve-version", stageId: "one", reason: "looks good", expectedVersion: open.version });
    expect(ok.approved).toBe(true);
  });
});
