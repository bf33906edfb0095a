/**
 * The cutover end to end: a real server on SQLite (RBAC enforced) fills a data dir, stops; migrate
 * copies it; `serve --postgres-url` (the built program) on the copy answers the same reads.
 */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { BOOTSTRAP_TOKEN_FILE } from "../src/security/bootstrap.js";
import { startServer } from "../src/server.js";
import { ORCHESTRATOR_BIN, runProgram, startChildServer, type ChildServer } from "./helpers/child.js";
import { createMigrateDatabase, dirDigest, populate, reads, restClient } from "./helpers/migrate-fixture.js";
import { memoryLogger } from "./helpers/server.js";

describe("moving a real server's data from SQLite to PostgreSQL", () => {
  const cleanup: (() => Promise<void> | void)[] = [];
  afterAll(async () => {
    for (const f of cleanup.reverse()) await f();
  });

  it("serve --postgres-url on the migrated database answers the same reads as the SQLite server did", async () => {
    const dataDir = mkdtempSync(path.join(os.tmpdir(), "mig-proof-"));
    cleanup.push(() => rmSync(dataDir, { recursive: true, force: true }));
    const { logger } = memoryLogger();
    const sqlite = await startServer(
      { listen: "127.0.0.1:0", dataDir, busyTimeoutMs: 2000, rbacEnforcement: true, heartbeatFlushMs: 50 },
      { logger, onFatal: () => {} },
    );
    const token = readFileSync(path.join(dataDir, BOOTSTRAP_TOKEN_FILE), "utf8").trim();
    let before: Record<string, unknown>;
    try {
      await populate(restClient(sqlite.url, token), { events: 500 });
      await new Promise((r) => setTimeout(r, 200));
      before = await reads(restClient(sqlite.url, token));
    } finally {
      await sqlite.close();
    }

    const db = await createMigrateDatabase();
    cleanup.push(db.drop);
    const digest = dirDigest(dataDir);
    const run = await runProgram(ORCHESTRATOR_BIN, ["migrate", "--sqlite-dir", dataDir, "--postgres-url", db.url]);
    expect(run.stderr).toBe("");
    expect(run.code).toBe(0);
    expect(dirDigest(dataDir)).toEqual(digest);

    // The replica keeps the data dir for its keys (the plan-signing key); the data is in PostgreSQL.
    const server: ChildServer = await startChildServer(["--data-dir", dataDir, "--postgres-url", db.url], { AUTONOMY_RBAC_ENFORCEMENT: "1" });
    cleanup.push(() => server.kill());
    expect(server.lines.find((l) => l.msg === "serving")).toMatchObject({ store: "postgres" });
    const after = await reads(restClient(server.url, token));

    // The PostgreSQL server appended its start checkpoint to the audit trail: the records the
    // SQLite server wrote are all there, unchanged, and the chain verifies with the same key.
    type Audit = { status: number; body: { records: { seq: string | number }[]; count: number } };
    const auditBefore = before["/v1/audit/records?limit=1000"] as Audit;
    const auditAfter = after["/v1/audit/records?limit=1000"] as Audit;
    const lastSeq = Math.max(...auditBefore.body.records.map((r) => Number(r.seq)));
    expect(auditBefore.body.records.length).toBeGreaterThan(10);
    expect(auditAfter.body.records.filter((r) => Number(r.seq) <= lastSeq)).toEqual(auditBefore.body.records);
    const verify = (x: Record<string, unknown>) => (x["/v1/audit/verify"] as { status: number; body: Record<string, unknown> });
    expect(verify(before)).toMatchObject({ status: 200, body: { ok: true } });
    expect(verify(after)).toMatchObject({ status: 200, body: { ok: true, problems: [] } });
    expect(Number(verify(after).body.records_checked)).toBeGreaterThanOrEqual(Number(verify(before).body.records_checked));
    for (const p of ["/v1/audit/records?limit=1000", "/v1/audit/verify"]) {
      delete before[p];
      delete after[p];
    }
    for (const [p, r] of Object.entries(before)) expect((r as { status: number }).status, p).toBe(200);
    expect(after).toEqual(before);
    type Plans = { body: { rollouts: { status: { plan_id: string; phase: string } }[] } };
    expect((before["/v1/rollouts"] as Plans).body.rollouts.map((r) => [r.status.plan_id, r.status.phase]).sort()).toEqual([
      ["fx-active", "active"],
      ["fx-done", "completed"],
    ]);

    // And it takes writes: ids continue after the copied ones.
    const rest = restClient(server.url, token);
    const ingest = await rest("POST", "/v1/events", { events: [{ event_id: "after", event_type: "boot", node_id: "fx-1", timestamp: "2026-01-02T00:00:00Z" }] });
    expect(ingest).toMatchObject({ status: 200, body: { inserted: 1 } });
    const newest = await rest("GET", "/v1/events?limit=2");
    expect(newest.body.events[0]).toMatchObject({ event_id: "after" });
    expect(BigInt(newest.body.events[0].seq)).toBeGreaterThan(BigInt(newest.body.events[1].seq));
  });
});
