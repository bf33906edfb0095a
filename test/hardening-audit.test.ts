import { randomBytes } from "node:crypto";
import { spawnSync } from "node:child_process";
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, statSync, writeFileSync, writeSync } from "node:fs";
import http2 from "node:http2";
import os from "node:os";
import path from "node:path";
import Database from "better-sqlite3";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createOrchestratorClients, type OrchestratorClients } from "../clients/index.js";
import { auditRecord, AUDIT_FIELD_BYTES, type AuditRow } from "../src/domain/audit.js";
import { newToken } from "../src/domain/identity.js";
import { Authorizer, LruMap } from "../src/security/authz.js";
import { initCa } from "../src/security/ca.js";
import { CHECKPOINT_FILE } from "../src/services/audit-checkpoints.js";
import { BOOTSTRAP_TOKEN_FILE } from "../src/server.js";
import { PostgresStore } from "../src/store/pg/store.js";
import { DB_FILE_NAME, SqliteStore } from "../src/store/sqlite/store.js";
import { SIGNING_KEY_FILE } from "../src/rollouts/signing.js";
import { AUTONOMY_BIN, outputOf, runProgram } from "./helpers/child.js";
import { h1 } from "./helpers/http.js";
import { createTestDatabase } from "./helpers/postgres.js";
import { memoryLogger, startTestServer, type TestServer } from "./helpers/server.js";
import { until } from "./helpers/wait.js";

const DAY = 86_400_000;
const DIGEST = `sha256:${"cd".repeat(32)}`;

/** Many requests over one HTTP/2 connection, `parallel` at a time; resolves with the statuses. */
async function h2Flood(url: string, n: number, headersOf: (i: number) => Record<string, string>, parallel = 50): Promise<number[]> {
  const target = new URL(url);
  const session = http2.connect(target.origin);
  const one = (i: number) =>
    new Promise<number>((resolve, reject) => {
      const req = session.request({ ":method": "GET", ":path": target.pathname + target.search, ...headersOf(i) });
      let status = 0;
      req.on("response", (h) => (status = Number(h[":status"])));
      req.on("data", () => undefined);
      req.on("end", () => resolve(status));
      req.on("error", reject);
      req.end();
    });
  const statuses: number[] = [];
  try {
    for (let i = 0; i < n; i += parallel) {
      statuses.push(...(await Promise.all(Array.from({ length: Math.min(parallel, n - i) }, (_, j) => one(i + j)))));
    }
  } finally {
    session.close();
  }
  return statuses;
}

/** The audit records of a SQLite data dir, read from the file (after the server stopped). */
function storedRecords(dataDir: string, eventName: string): { actor: string; fields_json: string; reason: string; outcome: string; len: number }[] {
  const db = new Database(path.join(dataDir, DB_FILE_NAME), { readonly: true });
  try {
    return db
      .prepare(
        "SELECT actor, fields_json, reason, outcome, length(event_name) + length(actor) + length(resource) + length(fields_json) + length(reason) + length(source) AS len FROM audit_records WHERE event_name = ? ORDER BY seq",
      )
      .all(eventName) as { actor: string; fields_json: string; reason: string; outcome: string; len: number }[];
  } finally {
    db.close();
  }
}

function sqliteExec(dataDir: string, statement: string): void {
  const db = new Database(path.join(dataDir, DB_FILE_NAME));
  try {
    db.exec(statement);
  } finally {
    db.close();
  }
}

/** Every refused call reaches the authorizer here; the per-address throttle in front of it is tested in hardening-transport. */
const NO_THROTTLE = { perSecond: 1_000_000, burst: 1_000_000 };

const countOf = (r: { fields_json: string }) => (JSON.parse(r.fields_json) as { count?: number }).count ?? 1;

describe("refused calls in the audit trail", () => {
  it("records 600 unauthenticated calls with 60,000-byte claimed operators in a few bounded records, counted", async () => {
    const server = await startTestServer("sqlite", { rbacEnforcement: true, unauthenticatedRate: NO_THROTTLE });
    let stopped = false;
    try {
      const statuses = await h2Flood(`${server.url}/v1/fleet`, 600, (i) => ({ "autonomy-operator": `${i}-${"x".repeat(60_000)}` }));
      expect(statuses.every((s) => s === 401)).toBe(true);
      await server.close();
      stopped = true;
      const rows = storedRecords(server.dataDir, "auth.denied");
      // One record per distinct claim up to the bound, the rest in one record per reason; repeats counted.
      // One record per distinct claim up to 64 for this caller, then one for the rest; repeats counted when an interval ends.
      expect(rows.length).toBeLessThan(200);
      expect(rows.reduce((n, r) => n + r.len, 0)).toBeLessThan(200_000);
      expect(rows.reduce((n, r) => n + countOf(r), 0)).toBe(600);
      for (const r of rows) expect(r.len).toBeLessThan(1024);
      const first = JSON.parse(rows[0].fields_json);
      expect(rows[0].actor).toBe("anonymous");
      expect(first).toMatchObject({ claimed_operator_bytes: 60_002, claimed_operator_truncated: true });
      expect(Buffer.byteLength(first.claimed_operator)).toBeLessThanOrEqual(64);
      expect(rows.some((r) => JSON.parse(r.fields_json).claims_and_rpcs === "many" && r.actor === "anonymous")).toBe(true);
    } finally {
      if (!stopped) await server.close();
      rmSync(server.dataDir, { recursive: true, force: true });
    }
  });

  it("records failed authentications (unknown, revoked, malformed), coalesced, and keeps the token caches bounded", async () => {
    const server = await startTestServer("sqlite", { rbacEnforcement: true, unauthenticatedRate: NO_THROTTLE });
    let stopped = false;
    try {
      const admin = createOrchestratorClients({ baseUrl: server.url, token: readFileSync(path.join(server.dataDir, BOOTSTRAP_TOKEN_FILE), "utf8").trim() });
      const carol = await admin.rbac.createToken({ principal: "operator:carol", ttlHours: 1 });
      await admin.rbac.revokeToken({ tokenId: carol.info!.tokenId });
      admin.close();
      expect((await h1(`${server.url}/v1/fleet`, { headers: { authorization: `Bearer ${carol.token}` } })).status).toBe(401);
      expect((await h1(`${server.url}/v1/fleet`, { headers: { authorization: "Basic abc" } })).status).toBe(401);
      const statuses = await h2Flood(`${server.url}/v1/fleet`, 2_500, () => ({ authorization: `Bearer ${newToken().token}` }));
      expect(statuses.every((s) => s === 401)).toBe(true);
      const metrics = (await h1(`${server.url}/metrics`)).text;
      const gauge = (cache: string) => Number(new RegExp(`^cp_auth_token_cache_entries\\{cache="${cache}"\\} (\\d+)$`, "m").exec(metrics)![1]);
      expect(gauge("unusable")).toBe(1_000);
      expect(gauge("valid")).toBeLessThanOrEqual(1);
      await server.close();
      stopped = true;
      const rows = storedRecords(server.dataDir, "auth.failed");
      const byReason = (reason: string) => rows.filter((r) => r.reason === reason);
      expect(byReason("revoked token")).toHaveLength(1);
      expect(JSON.parse(byReason("revoked token")[0].fields_json)).toMatchObject({ token_id: carol.info!.tokenId, principal: "operator:carol" });
      expect(byReason("malformed authorization header")).toHaveLength(1);
      // One record when the flood starts, one per interval with the count of the rest.
      expect(byReason("unknown token").length).toBeLessThan(25);
      expect(byReason("unknown token").reduce((n, r) => n + countOf(r), 0)).toBe(2_500);
      expect(rows.every((r) => r.outcome === "failure" && r.actor === "anonymous")).toBe(true);
    } finally {
      if (!stopped) await server.close();
      rmSync(server.dataDir, { recursive: true, force: true });
    }
  });

  it("keeps at most the cache sizes under a flood of 10,000 unknown tokens", async () => {
    const dataDir = mkdtempSync(path.join(os.tmpdir(), "ao-cache-"));
    const store = await SqliteStore.open({ dataDir, busyTimeoutMs: 2000, onFatal: () => undefined });
    const authorizer = new Authorizer({ store, logger: memoryLogger().logger, enforced: true, tokenCacheSize: 100, negativeCacheSize: 50 });
    try {
      for (let i = 0; i < 10_000; i++) await authorizer.principalOf(undefined, `Bearer ao_${i}`).catch(() => undefined);
      expect(authorizer.cacheSizes()).toEqual({ valid: 0, unusable: 50 });
      const lru = new LruMap<number, number>(3);
      for (const k of [1, 2, 3]) lru.set(k, k);
      lru.get(1);
      lru.set(4, 4);
      expect([lru.get(1), lru.get(2), lru.get(3), lru.get(4), lru.size]).toEqual([1, undefined, 3, 4, 3]);
    } finally {
      await authorizer.close();
      await store.close();
      rmSync(dataDir, { recursive: true, force: true });
    }
  });

  it("bounds every audit field, whatever a caller sends", async () => {
    const server = await startTestServer("sqlite");
    try {
      const big = "y".repeat(200_000);
      await server.store.appendAudit([
        { ...auditRecord({ actor: big, source: big }, { eventName: big, category: "auth", action: big, resourceType: big, resource: big, reason: big, fields: { big } }), outcome: big },
      ]);
      const [r] = (await createOrchestratorClients({ baseUrl: server.url }).audit.queryAuditRecords({ limit: 1 })).records;
      for (const [field, max] of Object.entries(AUDIT_FIELD_BYTES)) {
        expect(Buffer.byteLength(String(r[field as keyof typeof r]), "utf8"), field).toBeLessThanOrEqual(max);
      }
      expect(JSON.parse(r.fieldsJson)).toMatchObject({ truncated: true, bytes: 200_010 });
    } finally {
      await server.stop();
    }
  });
});

describe("a full database", () => {
  it("still takes an audit prune (and revocations) at --max-db-size, and writes again once it freed room", async () => {
    const server = await startTestServer("sqlite", { maxDbBytes: 1024 * 1024 });
    const api = createOrchestratorClients({ baseUrl: server.url, operator: "ops" });
    try {
      const old = (i: number): AuditRow =>
        auditRecord({ actor: "filler", source: "test" }, { eventName: "node.enrolled", category: "system", action: "enroll", resourceType: "node", resource: `f-${i}`, fields: { pad: "p".repeat(30_000) } }, Date.now() - 40 * DAY);
      let full = false;
      for (let i = 0; i < 200 && !full; i++) {
        full = await server.store.appendAudit([old(i)]).then(
          () => false,
          (err: Error) => err.constructor.name === "StoreFullError",
        );
      }
      expect(full).toBe(true);
      const batch = (id: string) => JSON.stringify({ events: [{ event_id: id, event_type: "t", node_id: "n", timestamp: "2026-01-01T00:00:00Z" }] });
      expect((await h1(`${server.url}/v1/events`, { method: "POST", body: batch("e1"), headers: { "content-type": "application/json" } })).status).toBe(507);
      // Nothing that old: the prune removes nothing, and its record still commits.
      expect(await api.audit.pruneAuditRecords({ olderThanDays: 90, reason: "make room" })).toMatchObject({ removed: 0 });
      const pruned = await api.audit.pruneAuditRecords({ olderThanDays: 30, reason: "make room" });
      expect(pruned.removed).toBeGreaterThan(10);
      expect((await h1(`${server.url}/v1/events`, { method: "POST", body: batch("e2"), headers: { "content-type": "application/json" } })).status).toBe(200);
      expect((await api.audit.verifyAuditChain({})).ok).toBe(true);
    } finally {
      api.close();
      await server.stop();
    }
  });
});

describe("a really full disk", () => {
  // A full filesystem needs a tmpfs mount, which needs root (as on CI and the dev machines here).
  const mountable = process.getuid?.() === 0 && spawnSync("mount", ["--version"]).status === 0;
  it.skipIf(!mountable)("still takes an audit prune, in the room of the reserve file kept beside the database", async () => {
    const mnt = mkdtempSync(path.join(os.tmpdir(), "ao-reserve-"));
    const mounted = spawnSync("mount", ["-t", "tmpfs", "-o", "size=2m", "tmpfs", mnt]);
    expect(mounted.status, String(mounted.stderr)).toBe(0);
    const server = await startTestServer("sqlite", { dataDir: mnt });
    const api = createOrchestratorClients({ baseUrl: server.url, operator: "ops" });
    try {
      expect(statSync(path.join(mnt, `${DB_FILE_NAME}-reserve`)).size).toBe(256 * 1024);
      const old = (i: number): AuditRow =>
        auditRecord({ actor: "filler", source: "test" }, { eventName: "node.enrolled", category: "system", action: "enroll", resourceType: "node", resource: `f-${i}`, fields: { pad: "p".repeat(1500) } }, Date.now() - 40 * DAY);
      let full = false;
      for (let i = 0; i < 5000 && !full; i += 10) {
        full = await server.store.appendAudit(Array.from({ length: 10 }, (_, j) => old(i + j))).then(
          () => false,
          (err: Error) => err.constructor.name === "StoreFullError",
        );
      }
      expect(full).toBe(true);
      // Whatever room the database's last refusal left, another file takes: only the reserve is left.
      const filler = openSync(path.join(mnt, "filler"), "w");
      try {
        for (;;) writeSync(filler, Buffer.alloc(4096));
      } catch (err) {
        expect((err as NodeJS.ErrnoException).code).toBe("ENOSPC");
      } finally {
        closeSync(filler);
      }
      expect(await api.audit.pruneAuditRecords({ olderThanDays: 30, reason: "make room" })).toMatchObject({ removed: expect.any(Number) });
      // The reserve went only if the prune needed its room (a WAL file that already has room for the prune's pages does not).
      expect(server.fatal).toEqual([]);
    } finally {
      api.close();
      await server.close();
      spawnSync("umount", [mnt]);
      rmSync(mnt, { recursive: true, force: true });
    }
  });
});

describe("tampering with the audit trail", () => {
  let server: TestServer;
  let api: OrchestratorClients;
  const records = async () => (await api.audit.queryAuditRecords({ order: "asc", limit: 1000 })).records;
  const enrol = async (n: number, prefix: string) => {
    for (let i = 0; i < n; i++) await api.nodes.enrollNode({ nodeId: `${prefix}-${i}`, channel: "t" });
  };
  /** Waits for a periodic checkpoint of the head: the newest record is then the checkpoint itself. */
  const checkpointed = () =>
    until("a checkpoint of the head", async () => (await api.audit.queryAuditRecords({ limit: 1 })).records[0].eventName === "audit.checkpoint");
  /** Recomputes every hash from a seq on, as someone with write access to the file would. */
  const rehash = async () => {
    const { auditHash } = await import("../src/domain/audit.js");
    const db = new Database(path.join(server.dataDir, DB_FILE_NAME));
    try {
      db.exec("DROP TRIGGER IF EXISTS audit_records_no_update");
      const rows = db.prepare("SELECT * FROM audit_records ORDER BY seq").all() as Record<string, unknown>[];
      let prev = "";
      const update = db.prepare("UPDATE audit_records SET prev_hash = ?, hash = ? WHERE seq = ?");
      for (const r of rows) {
        const row = {
          atMs: r.at_ms, eventName: r.event_name, category: r.category, action: r.action, outcome: r.outcome, actor: r.actor,
          resourceType: r.resource_type, resource: r.resource, source: r.source, fieldsJson: r.fields_json, reason: r.reason,
        } as AuditRow;
        const hash = auditHash(prev, row);
        update.run(prev, hash, r.seq);
        prev = hash;
      }
    } finally {
      db.close();
    }
  };

  beforeAll(async () => {
    server = await startTestServer("sqlite", { auditCheckpointIntervalMs: 100 });
    api = createOrchestratorClients({ baseUrl: server.url, operator: "tess" });
  });
  afterAll(async () => {
    api.close();
    await server.stop();
  });

  it("writes signed checkpoints into the chain and to a 0600 file, and verifies against them", async () => {
    await enrol(5, "a");
    await checkpointed();
    expect(statSync(path.join(server.dataDir, CHECKPOINT_FILE)).mode & 0o777).toBe(0o600);
    const verified = await api.audit.verifyAuditChain({});
    expect(verified).toMatchObject({ ok: true, problems: [] });
    expect(verified.checkpointsChecked).toBeGreaterThanOrEqual(2);
    expect((await records()).filter((r) => r.eventName === "audit.checkpoint").length).toBeGreaterThanOrEqual(1);
  });

  it("reports records removed at the end, even with the gate opened and the chain still linking", async () => {
    await enrol(3, "b");
    await checkpointed();
    const head = (await records()).at(-1)!.seq;
    sqliteExec(server.dataDir, `UPDATE audit_prune_gate SET open = 1; DELETE FROM audit_records WHERE seq >= ${head - 1n}; UPDATE audit_prune_gate SET open = 0`);
    const verified = await api.audit.verifyAuditChain({});
    expect(verified.problems.map((p) => p.problem), JSON.stringify({ head: String(head), file: readFileSync(path.join(server.dataDir, CHECKPOINT_FILE), "utf8") })).toContainEqual(expect.stringMatching(/but the trail ends at seq \d+: records at its end were removed/));
  });

  it("reports a start removed without a prune, a forged prune record, a hole in the seqs and a rewritten chain", async () => {
    await enrol(3, "c");
    await checkpointed();
    const problemsOf = async () => (await api.audit.verifyAuditChain({})).problems.map((p) => p.problem);
    // The oldest two go: the trail now starts after records that are gone.
    sqliteExec(server.dataDir, "UPDATE audit_prune_gate SET open = 1; DELETE FROM audit_records WHERE seq <= 2; UPDATE audit_prune_gate SET open = 0");
    let verified = await api.audit.verifyAuditChain({});
    expect(verified.startsAfterPrune).toBe(false);
    expect(verified.problems.map((p) => p.problem)).toContainEqual("the trail starts at seq 3, after records that are gone, and no prune record explains it: records were removed");
    // A prune record appended by hand explains the start, but no checkpoint signed by the server confirms it.
    const fake = auditRecord({ actor: "mallory", source: "api" }, { eventName: "audit.pruned", category: "system", action: "prune", resourceType: "audit_trail", resource: "audit_records", fields: { removed: 2, first_kept_seq: 3 } });
    await server.store.appendAudit([fake]);
    verified = await api.audit.verifyAuditChain({});
    expect(verified.startsAfterPrune).toBe(true);
    expect(verified.problems.map((p) => p.problem)).toContainEqual(expect.stringMatching(/^no checkpoint signed by this server confirms the prune at seq \d+: records may have been removed and the prune record forged$/));
    // A middle record goes and every hash after it is recomputed, so that every link holds.
    const middle = (await records())[3].seq;
    sqliteExec(server.dataDir, `UPDATE audit_prune_gate SET open = 1; DELETE FROM audit_records WHERE seq = ${middle}; UPDATE audit_prune_gate SET open = 0`);
    await rehash();
    const problems = await problemsOf();
    expect(problems).toContainEqual(`seq ${middle} is missing: records were removed`);
    expect(problems).toContainEqual(expect.stringMatching(/^differs from the checkpoint \((chain|file)\) of .*: this record or one before it was rewritten$/));
  });

  it("checks checkpoints kept elsewhere: a trail rewritten with its checkpoints and the server's file removed still fails", async () => {
    await enrol(2, "d");
    await checkpointed();
    const copy = readFileSync(path.join(server.dataDir, CHECKPOINT_FILE), "utf8");
    writeFileSync(path.join(server.dataDir, CHECKPOINT_FILE), "");
    sqliteExec(server.dataDir, "UPDATE audit_prune_gate SET open = 1; DELETE FROM audit_records WHERE event_name IN ('audit.checkpoint', 'audit.pruned'); UPDATE audit_prune_gate SET open = 0");
    await rehash();
    const keptElsewhere = path.join(server.dataDir, "..", `${path.basename(server.dataDir)}-checkpoints.jsonl`);
    writeFileSync(keptElsewhere, copy);
    try {
      const cli = await runProgram(AUTONOMY_BIN, ["--orchestrator-url", server.url, "audit", "verify", "--checkpoints", keptElsewhere], {});
      const out = outputOf(cli);
      expect(out.code).toBe(3);
      expect(out.out).toMatch(/audit trail BROKEN/);
      expect(out.out).toMatch(/checkpoint \(request\)/);
    } finally {
      rmSync(keptElsewhere, { force: true });
    }
  }, 120_000);
});

describe("PostgreSQL: the server's role cannot rewrite the trail", () => {
  it("prunes through the SECURITY DEFINER function while UPDATE, DELETE and TRUNCATE are refused to the server's role", async () => {
    const database = await createTestDatabase();
    const role = `ao_server_${randomBytes(4).toString("hex")}`;
    const owner = new pg.Client({ connectionString: database.url });
    await owner.connect();
    let server: TestServer | undefined;
    try {
      // The owner (here a superuser, who bypasses grants) applies the schema and grants the server's role.
      await (await PostgresStore.open({ url: database.url })).close();
      await owner.query(`CREATE ROLE ${role} LOGIN PASSWORD '${role}'`);
      await owner.query(`SELECT autonomy_grant_server_role('${role}')`);
      const asServer = new URL(database.url);
      asServer.username = role;
      asServer.password = role;
      server = await startTestServer("sqlite", { postgresUrl: asServer.toString() });
      const api = createOrchestratorClients({ baseUrl: server.url, operator: "ops" });
      try {
        const at = (i: number, ms: number) => auditRecord({ actor: "ops", source: "api" }, { eventName: "node.enrolled", category: "system", action: "enroll", resourceType: "node", resource: `p-${i}` }, ms);
        for (const [i, ms] of [[1, Date.now() - 40 * DAY], [2, Date.now()]]) await server.store.enrollNode({ nodeId: `p-${i}`, channel: "pg", labels: {}, agentVersion: "" }, Date.now(), at(i, ms));
        expect(await api.audit.pruneAuditRecords({ olderThanDays: 30, reason: "retention" })).toMatchObject({ removed: 1 });
        expect((await api.audit.verifyAuditChain({})).ok).toBe(true);
      } finally {
        api.close();
      }
      const direct = new pg.Client({ connectionString: asServer.toString() });
      await direct.connect();
      try {
        for (const statement of ["UPDATE audit_prune_gate SET open = 1", "DELETE FROM audit_records", "UPDATE audit_records SET actor = 'mallory'", "TRUNCATE audit_records"]) {
          await expect(direct.query(statement), statement).rejects.toThrow(/permission denied/);
        }
        // Nor can the function remove anything younger than a day.
        await expect(direct.query(`SELECT * FROM autonomy_audit_prune(${Date.now()})`)).rejects.toThrow(/younger than a day/);
      } finally {
        await direct.end();
      }
    } finally {
      await server?.close();
      if (server) rmSync(server.dataDir, { recursive: true, force: true });
      await owner.end();
      await database.drop();
      const admin = new pg.Client({ connectionString: database.url.replace(/\/[^/]*$/, "/postgres") });
      await admin.connect().catch(() => undefined);
      await admin.query(`DROP ROLE IF EXISTS ${role}`).catch(() => undefined);
      await admin.end().catch(() => undefined);
    }
  });
});

describe("the bootstrap admin", () => {
  it("is a principal of its own whose binding goes with its token, and cert issue refuses names that hold a role", async () => {
    const server = await startTestServer("sqlite", { rbacEnforcement: true });
    const work = mkdtempSync(path.join(os.tmpdir(), "ao-boot-"));
    const tokenFile = path.join(server.dataDir, BOOTSTRAP_TOKEN_FILE);
    const admin = createOrchestratorClients({ baseUrl: server.url, token: readFileSync(tokenFile, "utf8").trim() });
    try {
      const me = await admin.rbac.whoAmI({});
      expect(me.principal).toMatch(/^operator:bootstrap-[0-9a-f]{12}$/);
      const ca = path.join(work, "ca");
      await initCa(ca);
      const cli = async (...args: string[]) => outputOf(await runProgram(AUTONOMY_BIN, ["--orchestrator-url", server.url, ...args], { AUTONOMY_TOKEN_FILE: tokenFile, AUTONOMY_CA_DIR: ca }));
      await admin.rbac.assignRole({ principal: "operator:alice", role: "admin" });
      const alice = await admin.rbac.createToken({ principal: "operator:alice", ttlHours: 1 });
      expect((await cli("cert", "issue", "--profile", "operator", "--name", "alice")).out).toMatch(/operator:alice holds admin: a certificate with this name would carry it; pass --force/);
      expect((await cli("cert", "issue", "--profile", "operator", "--name", "alice", "--force")).code).toBe(0);
      // A CA made while its orchestrator is down issues, and says the roles were not checked.
      const down = await runProgram(AUTONOMY_BIN, ["--orchestrator-url", "http://127.0.0.1:1", "cert", "issue", "--profile", "operator", "--name", "carol"], { AUTONOMY_CA_DIR: ca });
      expect(down.code).toBe(0);
      expect(down.stderr).toBe("autonomy: warning: issued without checking whether operator:carol holds a role (its certificate would carry it): the orchestrator could not be reached\n");
      expect((await cli("cert", "issue", "--profile", "operator", "--name", me.principal.slice("operator:".length))).out).toMatch(/belong to bootstrap tokens/);
      expect((await cli("cert", "issue", "--profile", "operator", "--name", "bob")).code).toBe(0);
      // Revoking the bootstrap token takes its binding with it.
      const id = (await admin.rbac.listTokens({})).tokens.find((t) => t.principal === me.principal)!.tokenId;
      const asAlice = createOrchestratorClients({ baseUrl: server.url, token: alice.token });
      try {
        await asAlice.rbac.revokeToken({ tokenId: id });
        expect((await asAlice.rbac.listBindings({})).bindings.map((b) => b.principal)).toEqual(["operator:alice"]);
        const revoked = await asAlice.audit.queryAuditRecords({ eventName: "rbac.role.revoked", resource: me.principal });
        expect(revoked.records.map((r) => [r.actor, r.reason])).toEqual([["system:rbac", "its bootstrap token was revoked or has expired"]]);
      } finally {
        asAlice.close();
      }
    } finally {
      admin.close();
      await server.stop();
      rmSync(work, { recursive: true, force: true });
    }
  }, 120_000);

  it("loses its binding when its token expires", async () => {
    const server = await startTestServer("sqlite", { rbacEnforcement: true });
    const admin = createOrchestratorClients({ baseUrl: server.url, token: readFileSync(path.join(server.dataDir, BOOTSTRAP_TOKEN_FILE), "utf8").trim() });
    try {
      const me = (await admin.rbac.whoAmI({})).principal;
      const other = await admin.rbac.createToken({ principal: "operator:auditor-1", ttlHours: 1 });
      await admin.rbac.assignRole({ principal: "operator:auditor-1", role: "auditor" });
      sqliteExec(server.dataDir, `UPDATE rbac_tokens SET expires_at_ms = 1 WHERE principal = '${me}'`);
      const auditor = createOrchestratorClients({ baseUrl: server.url, token: other.token });
      try {
        await until("the bootstrap binding to go", async () => !(await auditor.rbac.listBindings({})).bindings.some((b) => b.principal === me));
      } finally {
        auditor.close();
      }
    } finally {
      admin.close();
      await server.stop();
    }
  });
});

describe("files, acks and plan specs", () => {
  it("creates the database, key and checkpoint files 0600 whatever the umask", async () => {
    const before = process.umask(0);
    let server: TestServer | undefined;
    try {
      server = await startTestServer("sqlite");
      await createOrchestratorClients({ baseUrl: server.url }).nodes.enrollNode({ nodeId: "m-1", channel: "m" });
      await server.close();
      for (const f of [DB_FILE_NAME, SIGNING_KEY_FILE, CHECKPOINT_FILE]) expect(statSync(path.join(server.dataDir, f)).mode & 0o777, f).toBe(0o600);
    } finally {
      process.umask(before);
      if (server) rmSync(server.dataDir, { recursive: true, force: true });
    }
  });

  it("refuses an ack observed more than a few minutes ahead of the server's clock, and lets a node read only the specs of plans that moved it", async () => {
    const server = await startTestServer("sqlite", { rbacEnforcement: true, heartbeatFlushMs: 3_600_000 });
    const admin = createOrchestratorClients({ baseUrl: server.url, token: readFileSync(path.join(server.dataDir, BOOTSTRAP_TOKEN_FILE), "utf8").trim() });
    const nodes: Record<string, OrchestratorClients> = {};
    try {
      for (const id of ["s-1", "s-2"]) {
        nodes[id] = createOrchestratorClients({ baseUrl: server.url, token: (await admin.rbac.createToken({ principal: `node:${id}` })).token });
        await nodes[id].nodes.enrollNode({ nodeId: id, channel: "spec" });
        await nodes[id].nodes.heartbeat({ nodeId: id });
      }
      await admin.releases.publishRelease({ release: { releaseId: "spec-r1", channel: "spec", version: "1", artifacts: [{ name: "a", digest: DIGEST }] } });
      const ahead = (ms: number) => ({ seconds: BigInt(Math.floor((Date.now() + ms) / 1000)) });
      await expect(nodes["s-1"].releases.upsertAck({ releaseId: "spec-r1", nodeId: "s-1", state: "healthy", observedAt: ahead(3_600_000) })).rejects.toThrow(
        /observed_at: more than 5 minutes ahead of the server's clock/,
      );
      await nodes["s-1"].releases.upsertAck({ releaseId: "spec-r1", nodeId: "s-1", state: "healthy", observedAt: ahead(60_000) });
      await admin.releases.publishRelease({ release: { releaseId: "spec-r2", channel: "spec", version: "2", staged: true, artifacts: [{ name: "a", digest: DIGEST }] } });
      await admin.rollouts.createRolloutPlan({ plan: { planId: "spec-plan", releaseId: "spec-r2", stages: [{ stageId: "one", nodeIds: ["s-1"], gates: [{ kind: "manual" }] }] } });
      await until("the move", async () => (await server.store.movesOfPlan("spec-plan")).length === 1);
      expect((await nodes["s-1"].rollouts.getRolloutSpec({ planId: "spec-plan" })).keyId).not.toBe("");
      await expect(nodes["s-2"].rollouts.getRolloutSpec({ planId: "spec-plan" })).rejects.toThrow(/node s-2 may read only the specs of plans that moved it/);
    } finally {
      for (const c of Object.values(nodes)) c.close();
      admin.close();
      await server.stop();
    }
  });
});

describe("ids and labels at the API", () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer("sqlite");
  });
  afterAll(async () => {
    await server.stop();
  });
  const post = (p: string, body: unknown) => h1(`${server.url}${p}`, { method: "POST", body: JSON.stringify(body), headers: { "content-type": "application/json" } });
  const event = (nodeId: string) => ({ events: [{ event_id: "e", event_type: "t", node_id: nodeId, timestamp: "2026-01-01T00:00:00Z" }] });

  it.each([
    ["a NUL", "n\u0000x", /events\[0\]\.node_id: must not contain control characters or bidirectional marks \(U\+0000 at 1\)/],
    ["a newline", "n\nx", /U\+000A at 1/],
    ["a right-to-left override", "n\u202ex", /U\+202E at 1/],
    ["a slash", "../n", /events\[0\]\.node_id: must not contain "\/"/],
  ])("refuses an id holding %s (400 naming the field)", async (_name, nodeId, message) => {
    const res = await post("/v1/events", event(nodeId));
    expect(res.status).toBe(400);
    expect(res.json().message).toMatch(message);
  });

  it("refuses bad label keys and overlong label values at enrolment", async () => {
    const api = createOrchestratorClients({ baseUrl: server.url });
    try {
      await expect(api.nodes.enrollNode({ nodeId: "l-1", channel: "c", labels: { "zone\u2066": "a" } })).rejects.toThrow(/labels: must not contain control characters or bidirectional marks \(U\+2066 at 4\)/);
      await expect(api.nodes.enrollNode({ nodeId: "l-1", channel: "c", labels: { zone: "v".repeat(300) } })).rejects.toThrow(/labels\[zone\]: longer than 256 bytes/);
      await expect(api.nodes.enrollNode({ nodeId: "l-1", channel: "c", labels: { zone: "a\u0007" } })).rejects.toThrow(/labels\[zone\]: must not contain control characters/);
      expect((await api.nodes.enrollNode({ nodeId: "l-1", channel: "c", labels: { zone: "eu-west/1" } })).node!.labels).toEqual({ zone: "eu-west/1" });
    } finally {
      api.close();
    }
  });
});

describe("RBAC guard rails", () => {
  it("refuses the impossible, warns on the suspicious, and keeps the last rbac:manage credential unless forced", async () => {
    const server = await startTestServer("sqlite", { rbacEnforcement: true });
    const tokenFile = path.join(server.dataDir, BOOTSTRAP_TOKEN_FILE);
    const admin = createOrchestratorClients({ baseUrl: server.url, token: readFileSync(tokenFile, "utf8").trim() });
    const cli = async (...args: string[]) => outputOf(await runProgram(AUTONOMY_BIN, ["--orchestrator-url", server.url, ...args], { AUTONOMY_TOKEN_FILE: tokenFile }));
    try {
      const me = (await admin.rbac.whoAmI({})).principal;
      expect((await cli("rbac", "role", "create", "--name", "viewer", "--permission", "fleet:reed")).out).toMatch(
        /invalid_argument: role\.permissions\[0\]: "fleet:reed" is a permission no RPC needs; known: .*fleet:read/,
      );
      const created = await runProgram(AUTONOMY_BIN, ["--orchestrator-url", server.url, "rbac", "token", "create", "--principal", "operator:nobody"], { AUTONOMY_TOKEN_FILE: tokenFile });
      expect(created.code).toBe(0);
      expect(created.stderr).toMatch(/warning: operator:nobody holds no role: the token identifies it but grants nothing/);
      const own = (await admin.rbac.listTokens({})).tokens.find((t) => t.principal === me)!.tokenId;
      await expect(admin.rbac.revokeRole({ principal: me, role: "admin" })).rejects.toThrow(
        /is the last principal whose roles grant rbac:manage: without it nobody could change roles again; assign another principal a role that grants it first \(autonomy rbac role assign --role admin\), or pass force/,
      );
      await expect(admin.rbac.revokeToken({ tokenId: own })).rejects.toThrow(/the last usable token of a principal whose roles grant rbac:manage/);
      // The CLI's refusal says what to do instead, and names its flag.
      const kept = await runProgram(AUTONOMY_BIN, ["--orchestrator-url", server.url, "rbac", "token", "revoke", "--token-id", own], { AUTONOMY_TOKEN_FILE: tokenFile });
      expect(kept.code).toBe(1);
      expect(kept.stderr).toContain("create a token for another principal that holds it first (autonomy rbac token create), or pass force (autonomy: --force) to revoke anyway");
      const refused = await h1(`${server.url}/v1/rbac/tokens/${own}/revoke`, { method: "POST", body: "{}", headers: { authorization: `Bearer ${readFileSync(tokenFile, "utf8").trim()}`, "content-type": "application/json" } });
      expect(refused.status).toBe(409);
      const forced = await runProgram(AUTONOMY_BIN, ["--orchestrator-url", server.url, "rbac", "token", "revoke", "--token-id", own, "--force"], { AUTONOMY_TOKEN_FILE: tokenFile });
      expect(forced.code).toBe(0);
      expect(forced.stderr).toMatch(/warning: token [0-9a-f]{12} belongs to you/);
    } finally {
      admin.close();
      await server.stop();
    }
  }, 120_000);
});
