import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TcpProxy } from "../bench/ha-pg.js";
import { startServer } from "../src/server.js";
import { createHaDatabase } from "./helpers/ha-db.js";
import { h1 } from "./helpers/http.js";
import { memoryLogger, startTestServer, type TestServer } from "./helpers/server.js";
import { until } from "./helpers/wait.js";

describe("HA endpoints, standalone (SQLite)", () => {
  let s: TestServer;
  beforeAll(async () => {
    s = await startTestServer("sqlite");
  });
  afterAll(() => s.stop());

  it("answer that the deployment is standalone, open like /v1/health", async () => {
    expect((await h1(`${s.url}/v1/health/read-ready`)).json()).toEqual({ ready: true, mode: "standalone" });
    expect((await h1(`${s.url}/v1/health/write-ready`)).status).toBe(200);
    expect((await h1(`${s.url}/v1/health/leader`)).json()).toMatchObject({ mode: "standalone", this_replica_is_leader: true, current_epoch: 0 });
    expect((await h1(`${s.url}/v1/health/quorum`)).json()).toMatchObject({ mode: "standalone", write_ready: true, sync_standby_count: 0, lag_status: "ok" });
    const audit = (await h1(`${s.url}/v1/health/audit`)).json();
    expect(audit).toMatchObject({ mode: "standalone", ok: true });
    expect(audit.verified_through_seq).toBe(audit.head_seq);
    const resign = await h1(`${s.url}/v1/ha/resign`, { method: "POST", body: JSON.stringify({ reason: "try" }), headers: { "content-type": "application/json" } });
    expect(resign.status).toBe(409);
    expect(resign.json().message).toMatch(/standalone/);
    const metrics = (await h1(`${s.url}/metrics`)).text;
    expect(metrics).toMatch(/^cp_leader_is_leader 1$/m);
    expect(metrics).toMatch(/^cp_replication_lag_seconds 0$/m);
  });
});

describe("HA endpoints on PostgreSQL", () => {
  let s: TestServer;
  beforeAll(async () => {
    s = await startTestServer("postgres", { ha: { leaseMs: 3000, renewMs: 500 } });
  });
  afterAll(() => s.stop());

  it("a lone replica leads; leader, readiness, quorum, audit and metrics say so", async () => {
    expect(await h1(`${s.url}/v1/health/write-ready`)).toMatchObject({ status: 200 });
    expect((await h1(`${s.url}/v1/health/read-ready`)).json()).toEqual({ ready: true, mode: "postgres" });
    const leader = (await h1(`${s.url}/v1/health/leader`)).json();
    expect(leader).toMatchObject({ mode: "postgres", current_epoch: 1, holder_id: s.ha.replicaId, session_lock_held: true, this_replica_is_leader: true, lease_ms: 3000 });
    expect(Date.parse(leader.acquired_at)).toBeGreaterThan(0);
    expect((await h1(`${s.url}/v1/health/quorum`)).json()).toMatchObject({ mode: "postgres", write_ready: true, standby_count: 0, lag_status: "ok", lag_critical_seconds: 10 });
    expect((await h1(`${s.url}/v1/health/audit`)).json()).toMatchObject({ mode: "postgres", ok: true });
    const metrics = (await h1(`${s.url}/metrics`)).text;
    expect(metrics).toMatch(/^cp_leader_is_leader 1$/m);
    expect(metrics).toMatch(/^cp_leader_epoch 1$/m);
    expect(metrics).toMatch(/^cp_leader_changes_total 1$/m);
  });

  it("resign: answers the epoch that ended, audits it (category ha), and the lone replica leads again after its hold-off", async () => {
    const empty = await h1(`${s.url}/v1/ha/resign`, { method: "POST", body: "{}", headers: { "content-type": "application/json" } });
    expect(empty.status).toBe(400);
    expect(empty.json().message).toMatch(/^reason: required/);
    const r = await h1(`${s.url}/v1/ha/resign`, { method: "POST", body: JSON.stringify({ reason: "maintenance" }), headers: { "content-type": "application/json", "autonomy-operator": "alice" } });
    expect(r.status).toBe(200);
    const body = r.json();
    expect(body).toMatchObject({ success: true, previous_holder: s.ha.replicaId, previous_epoch: 1 });
    expect(Date.parse(body.resigned_at)).toBeGreaterThan(0);
    expect(body.message).toMatch(/epoch 1 .* resigned/);
    const again = await h1(`${s.url}/v1/ha/resign`, { method: "POST", body: JSON.stringify({ reason: "twice" }), headers: { "content-type": "application/json" } });
    expect(again.status).toBe(409);
    expect(again.json().message).toMatch(/no replica leads now/);
    const audit = (await h1(`${s.url}/v1/audit/records?category=ha`)).json();
    expect(audit.records[0]).toMatchObject({ event_name: "ha.leader_resigned", category: "ha", actor: "alice", reason: "maintenance", resource: "1" });
    await until("the replica leads again", async () => s.ha.leadership.epoch() === 2, 5000);
  });
});

describe("PostgreSQL unreachable at start", () => {
  it("one clear line, retried with backoff, no exit; it serves once the database answers", async () => {
    const db = await createHaDatabase();
    const u = new URL(db.url);
    const proxy = await new TcpProxy({ host: u.hostname, port: Number(u.port) }).start();
    proxy.set("drop");
    const { logger, log } = memoryLogger();
    const dataDir = mkdtempSync(path.join(os.tmpdir(), "ha-start-"));
    const starting = startServer(
      { listen: "127.0.0.1:0", dataDir, postgresUrl: proxy.urlFor(db.url), busyTimeoutMs: 2000, rbacEnforcement: false, ha: { leaseMs: 3000, renewMs: 500 } },
      { logger, onFatal: () => {} },
    );
    await until("the unreachable line", async () => log.lines.some((l) => l.msg === "PostgreSQL cannot be reached at start; retrying with backoff (up to every 10s) until it can"));
    await sleep(2500);
    expect(log.lines.filter((l) => String(l.msg).startsWith("PostgreSQL cannot be reached")).length).toBe(1);
    proxy.set("pass");
    const server = await starting;
    try {
      expect(log.lines.some((l) => l.msg === "PostgreSQL reached; starting")).toBe(true);
      expect((await h1(`${server.url}/v1/health/write-ready`)).status).toBe(200);
      // Cut off later: readiness answers 503 and the replica stops leading.
      proxy.set("drop");
      await until("503", async () => (await h1(`${server.url}/v1/health/read-ready`)).status === 503, 10_000);
      expect((await h1(`${server.url}/v1/health/write-ready`)).json()).toMatchObject({ ready: false, reason: expect.stringMatching(/^PostgreSQL cannot be reached/) });
      await until("no leader", async () => !server.ha.leadership.isLeader(), 10_000);
      proxy.set("pass");
      await until("leads again", async () => server.ha.leadership.isLeader(), 15_000);
    } finally {
      await server.close();
      await proxy.close();
      await db.drop();
      rmSync(dataDir, { recursive: true, force: true });
    }
  }, 60_000);
});
