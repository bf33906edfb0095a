import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TcpProxy } from "../bench/ha-pg.js";
import { startServer } from "../src/server.js";
import { createHaDatabase } from "./helpers/ha-db.js";
import { ORCHESTRATOR_BIN } from "./helpers/child.js";
import { h1, h2 } from "./helpers/http.js";
import { memoryLogger, startTestServer, type TestServer } from "./helpers/server.js";
import { until, within } from "./helpers/wait.js";

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
  it("a real process listens at once: readiness 503 with the reason, every other call 503 unavailable, liveness 200; then it serves once the database answers", async () => {
    const db = await createHaDatabase();
    const u = new URL(db.url);
    const proxy = await new TcpProxy({ host: u.hostname, port: Number(u.port) }).start();
    proxy.set("drop");
    const dataDir = mkdtempSync(path.join(os.tmpdir(), "ha-start-proc-"));
    const proc = spawn(
      process.execPath,
      [ORCHESTRATOR_BIN, "serve", "--listen", "127.0.0.1:0", "--log-format", "json", "--data-dir", dataDir, "--postgres-url", proxy.urlFor(db.url), "--leader-lease", "3s", "--leader-renew", "500ms"],
      { env: { ...process.env, AUTONOMY_RBAC_ENFORCEMENT: "0" }, stdio: ["ignore", "ignore", "pipe"] },
    );
    const exited = new Promise<number | null>((resolve) => proc.once("exit", (code) => resolve(code)));
    const lines: Record<string, unknown>[] = [];
    let buffered = "";
    proc.stderr!.on("data", (chunk: Buffer) => {
      buffered += chunk.toString("utf8");
      let nl;
      while ((nl = buffered.indexOf("\n")) >= 0) {
        lines.push(JSON.parse(buffered.slice(0, nl)) as Record<string, unknown>);
        buffered = buffered.slice(nl + 1);
      }
    });
    try {
      const waiting = await until("the unreachable line", async () => lines.find((l) => String(l.msg).startsWith("PostgreSQL cannot be reached at start")), 20_000);
      const url = String(waiting.url);
      expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
      for (const p of ["/v1/health/read-ready", "/v1/health/write-ready"]) {
        const r = await h1(url + p);
        expect(r.status).toBe(503);
        expect(r.json()).toEqual({ ready: false, reason: expect.stringMatching(/^PostgreSQL cannot be reached: .*; retrying$/), mode: "postgres" });
      }
      expect((await h1(`${url}/v1/health`)).json()).toMatchObject({ status: "starting", warning: expect.stringMatching(/^PostgreSQL cannot be reached/) });
      const rest = await h1(`${url}/v1/nodes`);
      expect(rest.status).toBe(503);
      expect(rest.json()).toEqual({ code: "unavailable", message: expect.stringMatching(/^the server is starting and serves nothing yet: PostgreSQL cannot be reached/) });
      const leader = await h1(`${url}/v1/health/leader`);
      expect(leader.status).toBe(503);
      // Connect over HTTP/2 as well: unavailable, never an answer from a store or a leadership it does not have.
      const rpc = await h2(`${url}/autonomy.v1.HaService/HaLeader`, { method: "POST", body: "{}", headers: { "content-type": "application/json" } });
      expect(rpc.status).toBe(503);
      expect(rpc.json()).toMatchObject({ code: "unavailable" });
      await sleep(1500);
      expect(lines.filter((l) => String(l.msg).startsWith("PostgreSQL cannot be reached")).length).toBe(1);
      expect(proc.exitCode).toBeNull();

      proxy.set("pass");
      await until("write-ready", async () => (await h1(`${url}/v1/health/write-ready`)).status === 200, 30_000);
      expect((await h1(`${url}/v1/health/read-ready`)).json()).toEqual({ ready: true, mode: "postgres" });
      expect(lines.some((l) => l.msg === "serving" && l.url === url)).toBe(true);
      expect((await h1(`${url}/v1/health`)).json()).toMatchObject({ status: "ok" });
      expect((await h1(`${url}/v1/nodes`)).status).toBe(200);
      await until("it leads", async () => (await h1(`${url}/v1/health/leader`)).json().this_replica_is_leader === true, 10_000);
    } finally {
      proc.kill("SIGTERM");
      await exited;
      await proxy.close();
      await db.drop();
      rmSync(dataDir, { recursive: true, force: true });
    }
  }, 90_000);

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
    // The next attempt comes within the backoff (at most 4 s here), then the store opens and migrates.
    const server = await within("the start once PostgreSQL answers", starting, 30_000);
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
      await within("the server's close", server.close(), 15_000).catch((err: Error) => {
        throw new Error(`${err.message}; the server's last log lines:\n${log.lines.slice(-15).map((l) => JSON.stringify(l)).join("\n")}`);
      });
      await proxy.close();
      await within("the test database's drop", db.drop(), 15_000);
      rmSync(dataDir, { recursive: true, force: true });
    }
  }, 120_000);
});
