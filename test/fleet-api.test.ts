import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createOrchestratorClients, type OrchestratorClients } from "../clients/index.js";
import { h1, h2 } from "./helpers/http.js";
import { STORE_KINDS, startTestServer, type TestServer } from "./helpers/server.js";

const DIGEST = `sha256:${"c0ffee00".repeat(8)}`;
const releaseJson = (id: string, channel: string, version = "1.0") => ({
  release_id: id,
  channel,
  version,
  artifacts: [{ name: "app", digest: DIGEST, url: "https://example.test/app" }],
});

describe.each(STORE_KINDS)("fleet API on %s", (kind) => {
  let server: TestServer;
  let api: OrchestratorClients;
  const call = (method: string, path: string, body?: unknown) =>
    h1(`${server.url}${path}`, {
      method,
      body: body === undefined ? undefined : JSON.stringify(body),
      headers: body === undefined ? {} : { "content-type": "application/json" },
    });

  beforeAll(async () => {
    // Heartbeats stay buffered for the whole test unless it flushes them by stopping the server.
    server = await startTestServer(kind, { heartbeatFlushMs: 3_600_000 });
    api = createOrchestratorClients({ baseUrl: server.url });
  });
  afterAll(async () => {
    api.close();
    await server.stop();
  });

  describe("releases", () => {
    it("publishes, republishes identically as a no-op, and refuses other content with 409", async () => {
      const first = await call("POST", "/v1/releases", releaseJson("rel-1", "stable"));
      expect(first.status).toBe(200);
      expect(first.json()).toMatchObject({ created: true, release: { release_id: "rel-1", channel: "stable", artifacts: [{ digest: DIGEST }] } });
      expect(first.json().release.published_at).toMatch(/^\d{4}-\d\d-\d\dT/);
      const again = await call("POST", "/v1/releases", releaseJson("rel-1", "stable"));
      expect(again.json()).toMatchObject({ created: false, release: { published_at: first.json().release.published_at } });
      const other = await call("POST", "/v1/releases", releaseJson("rel-1", "stable", "1.1"));
      expect(other.status).toBe(409);
      expect(other.json().message).toMatch(/already published with other content/);
    });

    it.each([
      ["a digest that is not sha256", { ...releaseJson("bad", "stable"), artifacts: [{ name: "a", digest: "md5:abc" }] }, "release.artifacts[0].digest"],
      ["no artifacts", { ...releaseJson("bad", "stable"), artifacts: [] }, "release.artifacts"],
      ["no channel", { ...releaseJson("bad", ""), channel: "" }, "release.channel: required"],
      ["a field of the wrong type", { ...releaseJson("bad", "stable"), version: 3 }, "version"],
    ])("answers 400 for %s, naming the field", async (_name, body, field) => {
      const res = await call("POST", "/v1/releases", body);
      expect(res.status).toBe(400);
      expect(res.json().message).toContain(field);
    });

    it("answers the latest release of a channel, and 404 for a channel without one", async () => {
      await call("POST", "/v1/releases", releaseJson("lat-1", "latest-test"));
      await call("POST", "/v1/releases", releaseJson("lat-2", "latest-test", "2.0"));
      const res = await h2(`${server.url}/v1/releases/latest?channel=latest-test`);
      expect(res.json().release.release_id).toBe("lat-2");
      expect((await call("GET", "/v1/releases/latest?channel=empty")).status).toBe(404);
      expect((await call("GET", "/v1/releases/latest")).json().message).toBe("channel: required");
    });
  });

  describe("nodes, heartbeats and acks", () => {
    beforeAll(async () => {
      await call("POST", "/v1/releases", releaseJson("fleet-r1", "fleet"));
      for (const id of ["f-1", "f-2", "f-3"]) {
        expect((await call("POST", "/v1/nodes", { node_id: id, channel: "fleet", labels: { zone: "z1" }, agent_version: "0.1" })).status).toBe(200);
      }
    });

    it("answers 404 to a heartbeat or an ack from a node that is not enrolled", async () => {
      const hb = await call("POST", "/v1/nodes/ghost/heartbeat", {});
      expect(hb.status).toBe(404);
      expect(hb.json().message).toMatch(/not enrolled/);
      expect((await call("PUT", "/v1/releases/fleet-r1/acks/ghost", { state: "pending" })).status).toBe(404);
      expect((await call("PUT", "/v1/releases/nope/acks/f-1", { state: "pending" })).status).toBe(404);
    });

    it("takes an ack on both REST paths of the one RPC, and ignores an older one", async () => {
      const put = await call("PUT", "/v1/releases/fleet-r1/acks/f-1", {
        state: "healthy",
        reported_release_id: "fleet-r1",
        observed_at: "2026-11-23T10:00:02Z",
      });
      expect(put.json()).toMatchObject({ stale: false, ack: { node_id: "f-1", release_id: "fleet-r1", state: "healthy" } });
      const late = await call("POST", "/v1/nodes/f-1/ack", { release_id: "fleet-r1", state: "downloading", observed_at: "2026-11-23T10:00:01Z" });
      expect(late.json()).toMatchObject({ stale: true, ack: { state: "healthy", observed_at: "2026-11-23T10:00:02Z" } });
      const bad = await call("POST", "/v1/nodes/f-2/ack", { release_id: "fleet-r1", state: "done" });
      expect(bad.status).toBe(400);
      expect(bad.json().message).toMatch(/^state: must be one of/);
      await call("POST", "/v1/nodes/f-2/ack", { release_id: "fleet-r1", state: "failed", message: "exit 3" });
      const acks = await call("GET", "/v1/releases/fleet-r1/acks");
      expect(acks.json()).toMatchObject({ count: 2, acks: [{ node_id: "f-1", state: "healthy" }, { node_id: "f-2", state: "failed", message: "exit 3" }] });
      expect((await call("GET", "/v1/nodes/f-2/acks")).json()).toMatchObject({ count: 1, acks: [{ release_id: "fleet-r1" }] });
      expect((await call("GET", "/v1/releases/unknown/acks")).status).toBe(404);
    });

    it("serves heartbeats from memory before they are written, and writes them on shutdown's flush", async () => {
      const hb = await call("POST", "/v1/nodes/f-3/heartbeat", { reported_release_id: "old-release", agent_version: "0.2" });
      expect(hb.json()).toMatchObject({ lifecycle: "HEALTHY" });
      expect((await server.store.getNode("f-3"))?.lastSeen).toBeUndefined();
      const summary = (await call("GET", "/v1/nodes/f-3/summary")).json();
      expect(summary.node).toMatchObject({ lifecycle: "HEALTHY", agent_version: "0.2", reported_release_id: "old-release" });
      expect(summary.node.last_seen).toBeDefined();
    });

    it("summarises a node from stored facts, with drift between desired and reported releases", async () => {
      await call("POST", "/v1/events", {
        events: [
          { event_id: "s1", event_type: "boot", node_id: "f-3", timestamp: "2026-11-23T10:00:00Z", lock_fingerprint: "lock-a" },
          { event_id: "s2", event_type: "crash_report", node_id: "f-3", timestamp: "2026-11-23T10:00:01Z" },
          { event_id: "s3", event_type: "boot", node_id: "f-3", timestamp: "2026-11-23T10:00:02Z" },
        ],
      });
      await call("PUT", "/v1/releases/fleet-r1/acks/f-3", { state: "downloading", reported_release_id: "old-release" });
      const s = (await call("GET", "/v1/nodes/f-3/summary")).json();
      expect(s).toMatchObject({
        reported_release_id: "old-release",
        desired_release: { release_id: "fleet-r1" },
        last_ack: { state: "downloading" },
        lock_fingerprint: "lock-a",
        drift: true,
      });
      expect(s.last_events.map((e: { event_id: string }) => e.event_id)).toEqual(["s3", "s2"]);
      const f1 = (await call("GET", "/v1/nodes/f-1/summary")).json();
      expect(f1).toMatchObject({ reported_release_id: "fleet-r1", drift: false });
      expect((await call("GET", "/v1/nodes/ghost/summary")).status).toBe(404);
      expect((await call("GET", "/v1/nodes/f-1/desired-release")).json().release.release_id).toBe("fleet-r1");
    });

    it("drains with a reason, and undrains", async () => {
      expect((await call("POST", "/v1/nodes/f-2/drain", {})).status).toBe(400);
      const drained = await api.nodes.drainNode({ nodeId: "f-2", reason: "disk swap" });
      expect(drained.node).toMatchObject({ drained: true, drainReason: "disk swap", lifecycle: "DRAINING" });
      expect((await api.nodes.heartbeat({ nodeId: "f-2" })).lifecycle).toBe("DRAINING");
      const back = await api.nodes.drainNode({ nodeId: "f-2", undrain: true });
      expect(back.node).toMatchObject({ drained: false, lifecycle: "HEALTHY" });
      const err = await api.nodes.drainNode({ nodeId: "ghost", reason: "x" }).catch((e) => e);
      expect(ConnectError.from(err).code).toBe(Code.NotFound);
    });

    it("gives the fleet status of a channel: totals, latest release, one row per node", async () => {
      const res = await call("GET", "/v1/fleet?channel=fleet&stale_threshold_seconds=60");
      expect(res.status).toBe(200);
      const body = res.json();
      // f-1 acked, f-2 heartbeated and acked, f-3 heartbeated; all within the threshold.
      expect(body.totals).toEqual({ total: 3, up: 3, stale: 0, unknown: 0, draining: 0, drifted: 2 });
      expect(body.latest_release.release_id).toBe("fleet-r1");
      expect(body.nodes.map((n: { node_id: string; drift: boolean }) => [n.node_id, n.drift])).toEqual([
        ["f-1", false],
        ["f-2", true],
        ["f-3", true],
      ]);
      expect(body.next_page_token).toBe("");
      expect((await call("GET", "/v1/fleet?stale_threshold_seconds=0")).status).toBe(400);
      expect((await call("GET", "/v1/fleet?page_token=zz!")).json().message).toMatch(/^page_token/);
    });
  });

  describe("fleet totals", () => {
    it("equal a recount of every page's rows while heartbeats are buffered", async () => {
      const ids = Array.from({ length: 7 }, (_, i) => `rc-${i}`);
      await call("POST", "/v1/releases", releaseJson("rc-r1", "recount"));
      for (const id of ids) await call("POST", "/v1/nodes", { node_id: id, channel: "recount", labels: {}, agent_version: "1" });
      const hourAgo = Date.now() - 3_600_000;
      // Stored an hour ago: stale at a 60 s threshold unless a buffered heartbeat says otherwise.
      await server.store.recordSightings(ids.slice(0, 4).map((nodeId) => ({ nodeId, lastSeenMs: hourAgo, reportedReleaseId: "rc-r1" })));
      await call("POST", "/v1/nodes/rc-1/heartbeat", { reported_release_id: "rc-old" });
      await call("POST", "/v1/nodes/rc-4/heartbeat", { reported_release_id: "rc-r1" });
      await call("POST", "/v1/nodes/rc-5/heartbeat", {});
      await call("POST", "/v1/nodes/rc-2/drain", { reason: "swap" });
      expect((await server.store.getNode("rc-4"))?.lastSeen).toBeUndefined();

      const rows: { last_seen?: string; lifecycle: string; drift: boolean }[] = [];
      let token = "";
      let totals;
      do {
        const page = (await call("GET", `/v1/fleet?channel=recount&stale_threshold_seconds=60&page_size=2&page_token=${token}`)).json();
        totals ??= page.totals;
        expect(page.totals).toEqual(totals);
        rows.push(...page.nodes);
        token = page.next_page_token;
      } while (token !== "");
      const now = Date.now();
      const seen = rows.filter((r) => r.last_seen !== undefined);
      expect(totals).toEqual({
        total: rows.length,
        up: seen.filter((r) => now - Date.parse(r.last_seen!) <= 60_000).length,
        stale: seen.filter((r) => now - Date.parse(r.last_seen!) > 60_000).length,
        unknown: rows.length - seen.length,
        draining: rows.filter((r) => r.lifecycle === "DRAINING").length,
        drifted: rows.filter((r) => r.drift).length,
      });
      // rc-0, rc-2, rc-3 stale; rc-1 (reports rc-old), rc-4, rc-5 up; rc-6 never seen; rc-1, rc-5 and rc-6 drift.
      expect(totals).toEqual({ total: 7, up: 3, stale: 3, unknown: 1, draining: 1, drifted: 3 });
    });
  });

  describe("a fleet past 1,000 nodes", () => {
    const N = 1_205;
    beforeAll(async () => {
      const ids = Array.from({ length: N }, (_, i) => `big-${String(i).padStart(5, "0")}`);
      for (let i = 0; i < ids.length; i += 200) {
        await Promise.all(ids.slice(i, i + 200).map((nodeId) => server.store.enrollNode({ nodeId, channel: "big", labels: {}, agentVersion: "" }, Date.now())));
      }
      await api.nodes.heartbeat({ nodeId: "big-00007" });
    });

    it("pages the fleet view and keeps the totals of the whole channel on every page", async () => {
      const seen: string[] = [];
      let token = "";
      let pages = 0;
      do {
        const page = await api.nodes.getFleetStatus({ channel: "big", pageToken: token });
        expect(page.totals).toMatchObject({ total: N, up: 1, unknown: N - 1 });
        seen.push(...page.nodes.map((n) => n.nodeId));
        token = page.nextPageToken;
        pages++;
      } while (token !== "");
      expect(pages).toBe(2);
      expect(seen).toHaveLength(N);
      expect(new Set(seen).size).toBe(N);
      expect(seen).toEqual([...seen].sort());
    });

    it("pages the inventory with a page size", async () => {
      const seen: string[] = [];
      let token = "";
      do {
        const page = await api.nodes.listNodes({ channel: "big", pageSize: 500, pageToken: token });
        expect(page.nodes.length).toBeLessThanOrEqual(500);
        seen.push(...page.nodes.map((n) => n.nodeId));
        token = page.nextPageToken;
      } while (token !== "");
      expect(seen).toHaveLength(N);
      expect(new Set(seen).size).toBe(N);
      const rest = await call("GET", "/v1/nodes?channel=big&page_size=2");
      expect(rest.json().nodes.map((n: { node_id: string; lifecycle: string }) => n.lifecycle)).toEqual(["UNAVAILABLE", "UNAVAILABLE"]);
    });
  });

  it("counts nodes per lifecycle state in /metrics", async () => {
    const text = (await call("GET", "/metrics")).text;
    expect(text).toMatch(/^cp_nodes\{lifecycle="HEALTHY"\} [1-9]/m);
    expect(text).toMatch(/^cp_nodes\{lifecycle="UNAVAILABLE"\} \d{4}/m);
  });
});

describe("heartbeats survive a clean restart", () => {
  it("writes buffered last-seen times when the server stops", async () => {
    const first = await startTestServer("sqlite", { heartbeatFlushMs: 3_600_000 });
    const api = createOrchestratorClients({ baseUrl: first.url });
    await api.nodes.enrollNode({ nodeId: "r-1", channel: "c" });
    await api.nodes.heartbeat({ nodeId: "r-1", reportedReleaseId: "rel-x" });
    api.close();
    expect((await first.store.getNode("r-1"))?.lastSeen).toBeUndefined();
    await first.close();
    const second = await startTestServer("sqlite", { dataDir: first.dataDir });
    try {
      const node = await second.store.getNode("r-1");
      expect(node?.lastSeen).toBeDefined();
      expect(node?.reportedReleaseId).toBe("rel-x");
    } finally {
      await second.stop();
      await first.stop().catch(() => {});
    }
  });
});
