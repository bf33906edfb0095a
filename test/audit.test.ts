import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import Database from "better-sqlite3";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createOrchestratorClients, type OrchestratorClients } from "../clients/index.js";
import { auditRecord } from "../src/services/audit-record.js";
import { DB_FILE_NAME } from "../src/store/sqlite/store.js";
import { AUTONOMY_BIN, outputOf, runProgram } from "./helpers/child.js";
import { STORE_KINDS, startTestServer, type TestServer } from "./helpers/server.js";

const DIGEST = `sha256:${"a1".repeat(32)}`;
const DAY = 86_400_000;

/** Runs SQL straight on the server's database, as someone with file or database access would. */
async function sql(server: TestServer, statement: string): Promise<void> {
  if (server.store.dialect === "sqlite") {
    const db = new Database(path.join(server.dataDir, DB_FILE_NAME));
    try {
      db.exec(statement);
    } finally {
      db.close();
    }
    return;
  }
  const client = new pg.Client({ connectionString: server.databaseUrl });
  await client.connect();
  try {
    await client.query(statement);
  } finally {
    await client.end();
  }
}

describe.each(STORE_KINDS)("the audit trail on %s", (kind) => {
  let server: TestServer;
  let api: OrchestratorClients;
  let asBob: OrchestratorClients;

  beforeAll(async () => {
    server = await startTestServer(kind);
    api = createOrchestratorClients({ baseUrl: server.url });
    asBob = createOrchestratorClients({ baseUrl: server.url, operator: "bob" });
  });
  afterAll(async () => {
    api.close();
    asBob.close();
    await server.stop();
  });

  it("records each change with its actor, in the same transaction, and nothing for a no-op", async () => {
    const release = { releaseId: "au-r1", channel: "au", version: "1", staged: true, artifacts: [{ name: "a", digest: DIGEST }] };
    await asBob.releases.publishRelease({ release });
    await asBob.releases.publishRelease({ release });
    await api.nodes.enrollNode({ nodeId: "au-n1", channel: "au" });
    await asBob.nodes.drainNode({ nodeId: "au-n1", reason: "fan replaced" });
    await asBob.nodes.drainNode({ nodeId: "au-n1", undrain: true });
    const res = await api.audit.queryAuditRecords({ order: "asc" });
    expect(res.records.map((r) => [r.eventName, r.actor, r.resourceType, r.resource, r.reason])).toEqual([
      ["release.published", "bob", "release", "au-r1", ""],
      ["node.enrolled", "anonymous", "node", "au-n1", ""],
      ["node.drained", "bob", "node", "au-n1", "fan replaced"],
      ["node.undrained", "bob", "node", "au-n1", ""],
    ]);
    expect(JSON.parse(res.records[0].fieldsJson)).toEqual({ channel: "au", version: "1", staged: true, artifacts: [DIGEST] });
    // Each record links to the one before.
    for (let i = 1; i < res.records.length; i++) expect(res.records[i].prevHash).toBe(res.records[i - 1].hash);
    // A refused change leaves no record: the transaction that would hold it rolled back.
    await expect(asBob.nodes.drainNode({ nodeId: "nobody", reason: "x" })).rejects.toThrow(/not enrolled/);
    expect((await api.audit.queryAuditRecords({})).count).toBe(4);
  });

  it("filters by every field and by time, and pages with a cursor", async () => {
    expect((await api.audit.queryAuditRecords({ actor: "bob", action: "drain" })).records.map((r) => r.eventName)).toEqual(["node.drained"]);
    expect((await api.audit.queryAuditRecords({ resourceType: "release", category: "system", outcome: "success" })).count).toBe(1);
    expect((await api.audit.queryAuditRecords({ since: { seconds: BigInt(Math.floor(Date.now() / 1000) + 60) } })).count).toBe(0);
    const page1 = await api.audit.queryAuditRecords({ limit: 3 });
    expect(page1.count).toBe(3);
    const page2 = await api.audit.queryAuditRecords({ limit: 3, cursor: page1.nextCursor });
    expect(page2.records.map((r) => r.seq)).toEqual([page1.records[2].seq - 1n]);
    await expect(api.audit.queryAuditRecords({ limit: 0 })).rejects.toThrow(/limit: must be 1 to 1000/);
  });

  it("is refused UPDATE and DELETE by the database itself", async () => {
    await expect(sql(server, "UPDATE audit_records SET actor = 'mallory'")).rejects.toThrow(/audit records are append-only/);
    await expect(sql(server, "DELETE FROM audit_records")).rejects.toThrow(/audit records are removed only by an audit prune/);
    expect((await api.audit.verifyAuditChain({})).ok).toBe(true);
  });

  it("prunes the oldest records by age only, records the prune, and still verifies", async () => {
    const fresh = await startTestServer(kind);
    const client = createOrchestratorClients({ baseUrl: fresh.url, operator: "bob" });
    try {
      // Two records from long ago, then one of today, written as the store writes any.
      const at = (n: number, ms: number) =>
        auditRecord({ actor: "carol", source: "api" }, { eventName: "node.enrolled", category: "system", action: "enroll", resourceType: "node", resource: `n-${n}` }, ms);
      for (const [n, ms] of [[1, Date.now() - 40 * DAY], [2, Date.now() - 35 * DAY], [3, Date.now()]]) {
        await fresh.store.enrollNode({ nodeId: `n-${n}`, channel: "au", labels: {}, agentVersion: "" }, Date.now(), at(n, ms));
      }
      await expect(client.audit.pruneAuditRecords({ olderThanDays: 0, reason: "x" })).rejects.toThrow(/older_than_days: must be at least 1/);
      await expect(client.audit.pruneAuditRecords({ olderThanDays: 30, reason: " " })).rejects.toThrow(/reason: required/);
      const pruned = await client.audit.pruneAuditRecords({ olderThanDays: 30, reason: "retention" });
      expect(pruned).toMatchObject({ removed: 2, firstKeptSeq: 3n });
      const left = await client.audit.queryAuditRecords({ order: "asc" });
      expect(left.records.map((r) => [r.seq, r.eventName, r.resource])).toEqual([
        [3n, "node.enrolled", "n-3"],
        [4n, "audit.pruned", "audit_records"],
        [5n, "audit.checkpoint", "audit_records"],
      ]);
      // The checkpoint after the prune, signed by the server, says where the trail now starts.
      expect(JSON.parse(left.records[2].fieldsJson)).toMatchObject({ seq: 4, hash: left.records[1].hash, reason: "prune", pruned_to: 3 });
      expect(left.records[1]).toMatchObject({ actor: "bob", reason: "retention" });
      expect(JSON.parse(left.records[1].fieldsJson)).toMatchObject({ older_than_days: 30, removed: 2, first_kept_seq: 3 });
      expect(await client.audit.verifyAuditChain({})).toMatchObject({ ok: true, startsAfterPrune: true, recordsChecked: 3, firstSeq: 3n, problems: [], lastCheckpointSeq: 4n });
    } finally {
      client.close();
      await fresh.stop();
    }
  });

  it("detects a record altered or removed behind the database's back", async () => {
    const all = (await api.audit.queryAuditRecords({ order: "asc", limit: 1000 })).records;
    const target = all[1].seq;
    const removed = all[2].seq;
    if (kind === "sqlite") {
      await sql(server, `DROP TRIGGER audit_records_no_update; UPDATE audit_records SET reason = 'edited' WHERE seq = ${target}`);
      await sql(server, `UPDATE audit_prune_gate SET open = 1; DELETE FROM audit_records WHERE seq = ${removed}; UPDATE audit_prune_gate SET open = 0`);
    } else {
      await sql(server, `ALTER TABLE audit_records DISABLE TRIGGER audit_records_guard; UPDATE audit_records SET reason = 'edited' WHERE seq = ${target}`);
      await sql(server, `DELETE FROM audit_records WHERE seq = ${removed}; ALTER TABLE audit_records ENABLE TRIGGER audit_records_guard`);
    }
    const verified = await api.audit.verifyAuditChain({});
    expect(verified.ok).toBe(false);
    expect(verified.problems.map((p) => [p.seq, p.problem])).toEqual([
      [target, "its fields do not match its hash: the record was altered"],
      [all[3].seq, `seq ${removed} is missing: records were removed`],
      [all[3].seq, "does not link to the record before it: a record was removed, inserted or altered"],
    ]);
  });
});

describe("autonomy audit", () => {
  let server: TestServer;
  let work: string;
  const cli = async (...args: string[]) => outputOf(await runProgram(AUTONOMY_BIN, ["--orchestrator-url", server.url, ...args], { AUTONOMY_OPERATOR: "dora" }));

  beforeAll(async () => {
    server = await startTestServer("sqlite");
    work = mkdtempSync(path.join(os.tmpdir(), "ao-audit-cli-"));
    const api = createOrchestratorClients({ baseUrl: server.url, operator: "dora" });
    await api.nodes.enrollNode({ nodeId: "cli-n1", channel: "c" });
    await api.nodes.drainNode({ nodeId: "cli-n1", reason: 'comma, and "quotes"' });
    api.close();
  });
  afterAll(async () => {
    await server.stop();
    rmSync(work, { recursive: true, force: true });
  });

  it("queries, exports JSON lines and CSV, prunes, and verifies with exit status 3 when broken", async () => {
    const query = await cli("audit", "query", "--actor", "dora", "--since", "1h");
    expect(query.out).toMatch(/^SEQ\s+TIME\s+EVENT\s+OUTCOME\s+ACTOR\s+RESOURCE\s+REASON\n2\s+\S+\s+node\.drained\s+success\s+dora\s+node\/cli-n1\s+comma, and "quotes"\n1\s+/);
    expect((await cli("audit", "query", "--since", "yesterday")).out).toMatch(/--since.*"yesterday" is not a time \(expected RFC 3339/);
    const json = path.join(work, "audit.jsonl");
    expect((await cli("audit", "export", "--format", "json", "--output", json)).out).toBe(`exported 2 records to ${json}\n`);
    const lines = readFileSync(json, "utf8").trim().split("\n").map((l) => JSON.parse(l));
    expect(lines.map((l) => l.event_name)).toEqual(["node.enrolled", "node.drained"]);
    const csv = path.join(work, "audit.csv");
    await cli("audit", "export", "--format", "csv", "--output", csv, "--actor", "dora");
    const rows = readFileSync(csv, "utf8").trim().split("\n");
    expect(rows[0]).toBe("seq,timestamp,event_name,category,action,outcome,actor,resource_type,resource,source,fields_json,reason,prev_hash,hash");
    expect(rows).toHaveLength(3);
    expect(rows[2]).toContain(',"comma, and ""quotes""",');
    expect((await cli("--output", "json", "audit", "verify")).out).toMatch(/"ok": true/);
    expect((await cli("audit", "prune", "--older-than", "90d", "--reason", "yearly")).out).toBe("removed 0 records older than 90 days; the trail now starts at seq 1\n");
    expect((await cli("audit", "prune", "--older-than", "90", "--reason", "x")).code).toBe(2);
    expect((await cli("audit", "verify")).out).toBe("audit trail intact: 4 records, seq 1 to 4; 2 signed checkpoint(s) up to seq 3\n");
    const db = new Database(path.join(server.dataDir, DB_FILE_NAME));
    db.exec("DROP TRIGGER audit_records_no_update; UPDATE audit_records SET actor = 'someone else' WHERE seq = 2");
    db.close();
    const broken = await cli("audit", "verify");
    expect(broken).toEqual({ code: 3, out: "audit trail BROKEN: 1 problem(s) in 4 records\n  seq 2: its fields do not match its hash: the record was altered\n" });
    // A dozen CLI processes, each a Node start: on a busy machine that takes a while.
  }, 120_000);
});

describe.each(STORE_KINDS)("--audit-data-plane on %s", (kind) => {
  it("records every ingested batch that stored anything and every ack that changed, in the same transaction", async () => {
    const server = await startTestServer(kind, { auditDataPlane: true });
    const api = createOrchestratorClients({ baseUrl: server.url, operator: "ingestor" });
    try {
      const event = (id: string, nodeId: string) => ({ eventId: id, eventType: "t", nodeId, timestamp: { seconds: 1_700_000_000n } });
      await api.events.ingestEvents({ events: [event("dp-1", "n1"), event("dp-2", "n2"), event("dp-1", "n1")] });
      await api.events.ingestEvents({ events: [event("dp-1", "n1")] }); // all duplicates: nothing stored, nothing recorded
      await api.releases.publishRelease({ release: { releaseId: "dp-r", channel: "dp", version: "1", artifacts: [{ name: "a", digest: DIGEST }] } });
      await api.nodes.enrollNode({ nodeId: "n1", channel: "dp" });
      const at = (s: number) => ({ seconds: BigInt(s) });
      await api.releases.upsertAck({ releaseId: "dp-r", nodeId: "n1", state: "healthy", reportedReleaseId: "dp-r", observedAt: at(1_700_000_100) });
      await api.releases.upsertAck({ releaseId: "dp-r", nodeId: "n1", state: "failed", observedAt: at(1_700_000_000) }); // stale: ignored
      const records = (await api.audit.queryAuditRecords({ order: "asc" })).records;
      expect(records.map((r) => r.eventName)).toEqual(["telemetry.events.ingested", "release.published", "node.enrolled", "release.ack.recorded"]);
      expect(JSON.parse(records[0].fieldsJson)).toEqual({ received: 3, node_ids: ["n1", "n2"], inserted: 2 });
      expect(records[0]).toMatchObject({ actor: "ingestor", resource: "2 nodes" });
      expect(JSON.parse(records[3].fieldsJson)).toEqual({ node_id: "n1", state: "healthy", reported_release_id: "dp-r" });
      expect((await api.audit.verifyAuditChain({})).ok).toBe(true);
    } finally {
      api.close();
      await server.stop();
    }
  });
});
