import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createOrchestratorClients, type OrchestratorClients, type SubscribeResponse } from "../clients/index.js";
import { CA_CERT, CRL_FILE, initCa, issueCert, revokeCerts } from "../src/security/ca.js";
import { BOOTSTRAP_TOKEN_FILE } from "../src/server.js";
import { PUSH_WINDOW, PushHub } from "../src/services/agent-push.js";
import { startTestServer, type TestServer } from "./helpers/server.js";

const DIGEST = `sha256:${"ab".repeat(32)}`;

/** An open stream read message by message. */
function open(api: OrchestratorClients, nodeId: string, afterSequence = 0n) {
  const stop = new AbortController();
  const it = api.agent.subscribe({ nodeId, afterSequence }, { signal: stop.signal, timeoutMs: 0 })[Symbol.asyncIterator]();
  return {
    next: async (): Promise<SubscribeResponse> => {
      const r = await it.next();
      if (r.done) throw new Error("the stream ended");
      return r.value;
    },
    /** The next message that is not a keepalive. */
    async nextNews(): Promise<SubscribeResponse> {
      for (;;) {
        const m = await this.next();
        if (m.kind.case !== "keepalive") return m;
      }
    },
    close: () => stop.abort(),
  };
}

describe.each(["2", "1.1"] as const)("the push stream over HTTP/%s", (httpVersion) => {
  let server: TestServer;
  let api: OrchestratorClients;
  const publish = (releaseId: string, channel: string, staged = false) =>
    api.releases.publishRelease({ release: { releaseId, channel, version: releaseId, staged, artifacts: [{ name: "app", digest: DIGEST }] } });

  beforeAll(async () => {
    server = await startTestServer("sqlite", { pushKeepaliveMs: 150 });
    api = createOrchestratorClients({ baseUrl: server.url, httpVersion });
    await api.nodes.enrollNode({ nodeId: "p-1", channel: "pc" });
    await api.nodes.enrollNode({ nodeId: "p-2", channel: "other" });
  });
  afterAll(async () => {
    api.close();
    await server.stop();
  });

  it("opens with a hello, keeps alive, tells of a release on the node's channel, and resumes after the last sequence", async () => {
    const s = open(api, "p-1");
    const hello = await s.next();
    expect(hello.kind).toMatchObject({ case: "hello", value: { resumed: false, keepaliveIntervalMs: 150 } });
    expect(hello.sequence).toBeGreaterThanOrEqual(server.push.base);
    const keepalive = await s.next();
    expect(keepalive.kind.case).toBe("keepalive");
    expect(keepalive.sequence).toBe(hello.sequence);

    await publish(`r1-${httpVersion}`, "pc");
    await publish(`other-${httpVersion}`, "other");
    await publish(`staged-${httpVersion}`, "pc", true);
    const changed = await s.nextNews();
    expect(changed.kind).toMatchObject({ case: "desiredReleaseChanged", value: { releaseId: `r1-${httpVersion}`, planId: "" } });
    expect(changed.sequence).toBe(hello.sequence + 1n);
    s.close();

    // Missed while away: replayed in order after a hello that says so.
    await publish(`r2-${httpVersion}`, "pc");
    await publish(`r3-${httpVersion}`, "pc");
    const again = open(api, "p-1", changed.sequence);
    expect((await again.next()).kind).toMatchObject({ case: "hello", value: { resumed: true } });
    const replayed = [await again.nextNews(), await again.nextNews()];
    expect(replayed.map((m) => [m.sequence, m.kind.case === "desiredReleaseChanged" && m.kind.value.releaseId])).toEqual([
      [changed.sequence + 1n, `r2-${httpVersion}`],
      [changed.sequence + 2n, `r3-${httpVersion}`],
    ]);
    again.close();

    // Up to date: nothing replayed. From an earlier run (below this run's sequences): not resumed.
    const current = open(api, "p-1", replayed[1].sequence);
    expect((await current.next()).kind).toMatchObject({ case: "hello", value: { resumed: true } });
    expect((await current.next()).kind.case).toBe("keepalive");
    current.close();
    const stale = open(api, "p-1", server.push.base - 5n);
    expect((await stale.next()).kind).toMatchObject({ case: "hello", value: { resumed: false } });
    stale.close();
  });

  it("answers a node that is not enrolled and a bad node id with a clear error", async () => {
    await expect(open(api, "nobody").next()).rejects.toThrow(/\[not_found\] node "nobody" is not enrolled/);
    await expect(open(api, "").next()).rejects.toThrow(/\[invalid_argument\].*node_id/);
  });

  it("tells the nodes a rollout stage moves, with the plan that moved them", async () => {
    await api.nodes.heartbeat({ nodeId: "p-1" });
    const s = open(api, "p-1");
    const hello = await s.next();
    await publish(`st-${httpVersion}`, "pc", true);
    await api.rollouts.createRolloutPlan({ plan: { planId: `plan-${httpVersion === "2" ? "h2" : "h1"}`, releaseId: `st-${httpVersion}`, stages: [{ stageId: "all", nodeIds: ["p-1"] }] } });
    const moved = await s.nextNews();
    expect(moved.kind).toMatchObject({ case: "desiredReleaseChanged", value: { releaseId: `st-${httpVersion}`, planId: `plan-${httpVersion === "2" ? "h2" : "h1"}` } });
    expect(moved.sequence).toBe(hello.sequence + 1n);
    s.close();
  });

  it("tells the nodes a rollback gives their previous release back", async () => {
    const planId = `back-${httpVersion === "2" ? "h2" : "h1"}`;
    await api.nodes.heartbeat({ nodeId: "p-1" });
    const s = open(api, "p-1");
    await s.next();
    await publish(`bad-${httpVersion}`, "pc", true);
    // A manual gate keeps the plan active until it is rolled back.
    await api.rollouts.createRolloutPlan({ plan: { planId, releaseId: `bad-${httpVersion}`, stages: [{ stageId: "all", nodeIds: ["p-1"], gates: [{ kind: "manual" }] }] } });
    const moved = await s.nextNews();
    expect(moved.kind).toMatchObject({ case: "desiredReleaseChanged", value: { releaseId: `bad-${httpVersion}`, planId } });
    const before = (await api.nodes.getNodeSummary({ nodeId: "p-1" })).desiredRelease?.releaseId;
    const res = await api.rollouts.recoverRollout({ planId, strategy: "rollback", reason: "bad build" });
    expect(res.toPhase).toBe("rolling_back");
    const back = await s.nextNews();
    const restored = (await api.nodes.getNodeSummary({ nodeId: "p-1" })).desiredRelease?.releaseId;
    expect(restored).not.toBe(`bad-${httpVersion}`);
    expect(before).toBe(`bad-${httpVersion}`);
    expect(back.kind).toMatchObject({ case: "desiredReleaseChanged", value: { planId, releaseId: restored } });
    expect(back.sequence).toBe(moved.sequence + 1n);
    s.close();
  });
});

describe("the push hub", () => {
  it("replays only what its window still holds, and sequences of a later run start above an earlier one's", async () => {
    const hub = new PushHub({ keepaliveMs: 60_000, startMs: 1_000 });
    const stop = new AbortController();
    const first = hub.stream("n", "c", 0n, stop.signal);
    const hello = (await first.next()).value!;
    stop.abort();
    await first.return(undefined);
    for (let i = 0; i < PUSH_WINDOW + 5; i++) hub.channelReleased("c", `r${i}`);
    const late = new AbortController();
    const behind = hub.stream("n", "c", hello.sequence, late.signal);
    expect((await behind.next()).value!.kind).toMatchObject({ case: "hello", value: { resumed: false } });
    late.abort();
    await behind.return(undefined);
    const within = new AbortController();
    const near = hub.stream("n", "c", hello.sequence + 10n, within.signal);
    expect((await near.next()).value!.kind).toMatchObject({ case: "hello", value: { resumed: true } });
    expect((await near.next()).value!.sequence).toBe(hello.sequence + 11n);
    within.abort();
    await near.return(undefined);
    const later = new PushHub({ keepaliveMs: 60_000, startMs: 2_000 });
    expect(later.base).toBeGreaterThan(hello.sequence + BigInt(PUSH_WINDOW + 5));
    expect(() => new PushHub({ keepaliveMs: 0 })).toThrow(/--push-keepalive: must be greater than 0/);
  });

  it("ends open streams with unavailable when it closes", async () => {
    const hub = new PushHub({ keepaliveMs: 60_000 });
    const s = hub.stream("n", "c", 0n, new AbortController().signal);
    await s.next();
    const pending = s.next();
    hub.close();
    await expect(pending).rejects.toThrow(/\[unavailable\] the server is shutting down/);
  });
});

describe("who may open a stream", () => {
  it("a node opens only its own; a revoked token or certificate cuts its live stream", async () => {
    const work = mkdtempSync(path.join(os.tmpdir(), "ao-push-tls-"));
    const ca = path.join(work, "ca");
    await initCa(ca);
    const serverCert = await issueCert(ca, { profile: "server", name: "api" });
    const robot = await issueCert(ca, { profile: "node", name: "robot-1" });
    await issueCert(ca, { profile: "node", name: "robot-2" });
    await revokeCerts(ca, {});
    const server = await startTestServer("sqlite", {
      rbacEnforcement: true,
      pushKeepaliveMs: 300,
      tls: { certFile: serverCert.certFile, keyFile: serverCert.keyFile, caFile: path.join(ca, CA_CERT), crlFile: path.join(ca, CRL_FILE) },
      tlsClientAuth: "request",
    });
    const tlsCa = readFileSync(path.join(ca, CA_CERT));
    const admin = createOrchestratorClients({ baseUrl: server.url, tls: { ca: tlsCa }, token: readFileSync(path.join(server.dataDir, BOOTSTRAP_TOKEN_FILE), "utf8").trim() });
    const asRobot = createOrchestratorClients({ baseUrl: server.url, tls: { ca: tlsCa, cert: readFileSync(robot.certFile), key: readFileSync(robot.keyFile) } });
    const anonymous = createOrchestratorClients({ baseUrl: server.url, tls: { ca: tlsCa } });
    try {
      await admin.nodes.enrollNode({ nodeId: "robot-1", channel: "c" });
      await admin.nodes.enrollNode({ nodeId: "robot-2", channel: "c" });
      await expect(open(anonymous, "robot-1").next()).rejects.toThrow(/\[unauthenticated\]/);
      await expect(open(asRobot, "robot-2").next()).rejects.toThrow(/\[permission_denied\] node robot-1 may write and read only its own data: node_id is "robot-2"/);
      // A node's token works like its certificate.
      const created = await admin.rbac.createToken({ principal: "node:robot-2", ttlHours: 1 });
      const asRobot2 = createOrchestratorClients({ baseUrl: server.url, tls: { ca: tlsCa }, token: created.token });
      const viaToken = open(asRobot2, "robot-2");
      expect((await viaToken.next()).kind.case).toBe("hello");
      expect((await viaToken.next()).kind.case).toBe("keepalive");
      // A revoked token ends its live stream at the next keepalive.
      await admin.rbac.revokeToken({ tokenId: created.info!.tokenId });
      await expect(
        (async () => {
          for (;;) await viaToken.next();
        })(),
      ).rejects.toThrow(/\[unauthenticated\] the stream's credential is no longer valid/);
      asRobot2.close();

      const live = open(asRobot, "robot-1");
      expect((await live.next()).kind.case).toBe("hello");
      const cut = (async () => {
        for (;;) await live.next();
      })();
      await revokeCerts(ca, { name: "robot-1" });
      await expect(cut).rejects.toThrow();
      expect(await server.metrics.registry.getSingleMetricAsString("cp_tls_revoked_connections_closed_total")).toMatch(/ 1$/m);
      await expect(open(asRobot, "robot-1").next()).rejects.toThrow();
    } finally {
      admin.close();
      asRobot.close();
      anonymous.close();
      await server.stop();
      rmSync(work, { recursive: true, force: true });
    }
  });
});
