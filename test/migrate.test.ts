import { spawn } from "node:child_process";
import { cpSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import Database from "better-sqlite3";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AuditVerifier } from "../src/domain/audit.js";
import { COPY_ORDER, isSqliteInternal, TABLE_RULES } from "../src/store/migrate/plan.js";
import { PostgresStore } from "../src/store/pg/store.js";
import { SqliteStore } from "../src/store/sqlite/store.js";
import { startServer } from "../src/server.js";
import { CommanderError } from "commander";
import { migrateCommand, progressPrinter } from "../src/cli/orchestrator/migrate.js";
import { ORCHESTRATOR_BIN, runProgram, startChildServer } from "./helpers/child.js";
import { createMigrateDatabase, dirDigest, populate, restClient } from "./helpers/migrate-fixture.js";
import { memoryLogger } from "./helpers/server.js";
import { until } from "./helpers/wait.js";

/** Counter tables: a row at n = 0 means nothing, and SQLite keeps some that PostgreSQL drops. */
const COUNTERS = ["fleet_totals", "fleet_seen"];

const migrate = (...args: string[]) => runProgram(ORCHESTRATOR_BIN, ["migrate", ...args]);

/** The message commander stops `migrate ARGS` with (parsed in process; no action runs). */
async function usageError(args: readonly string[], env: Record<string, string> = {}): Promise<string> {
  const saved = Object.fromEntries(Object.keys(env).map((k) => [k, process.env[k]]));
  Object.assign(process.env, env);
  let written = "";
  const cmd = migrateCommand()
    .exitOverride()
    .configureOutput({ writeErr: (s) => (written += s), writeOut: (s) => (written += s) });
  try {
    await cmd.parseAsync([...args], { from: "user" });
    return `no usage error (${written})`;
  } catch (err) {
    if (!(err instanceof CommanderError)) throw err;
    return err.message;
  } finally {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
}

/** Row counts of every table of a SQLite database, read from a copy (the source is never opened for writing). */
function sqliteCounts(dir: string): Record<string, number> {
  const scratch = mkdtempSync(path.join(os.tmpdir(), "mig-count-"));
  try {
    cpSync(dir, scratch, { recursive: true });
    const db = new Database(path.join(scratch, "orchestrator.db"));
    try {
      const tables = db.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").pluck().all() as string[];
      return Object.fromEntries(
        tables.filter((t) => TABLE_RULES[t] && TABLE_RULES[t].kind !== "skip").map((t) => [t, Number(db.prepare(`SELECT count(*) FROM "${t}" WHERE ${COUNTERS.includes(t) ? "n <> 0" : "1"}`).pluck().get())]),
      );
    } finally {
      db.close();
    }
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}

async function pgQuery<T extends pg.QueryResultRow>(url: string, sql: string, params: unknown[] = []): Promise<T[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query<T>(sql, params)).rows;
  } finally {
    await client.end();
  }
}

async function pgCounts(url: string, tables: readonly string[]): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const t of tables) out[t] = Number((await pgQuery<{ n: string }>(url, `SELECT count(*) AS n FROM "${t}" WHERE ${COUNTERS.includes(t) ? "n <> 0" : "TRUE"}`))[0].n);
  return out;
}

/** Makes a SQLite data dir by running a real server on it, then stopping it (a clean shutdown). */
async function makeDataDir(events = 300): Promise<string> {
  const dataDir = mkdtempSync(path.join(os.tmpdir(), "mig-src-"));
  const { logger } = memoryLogger();
  const server = await startServer({ listen: "127.0.0.1:0", dataDir, busyTimeoutMs: 2000, rbacEnforcement: false }, { logger, onFatal: () => {} });
  try {
    await populate(restClient(server.url), { events });
  } finally {
    await server.close();
  }
  return dataDir;
}

// A budget for slow, shared machines (each run of the built program starts a Node process), not a speed check.
describe("autonomy-orchestrator migrate", { timeout: 120_000 }, () => {
  let dataDir: string;
  let big: string;
  const dirs: string[] = [];
  const databases: { drop: () => Promise<void> }[] = [];
  const freshDatabase = async () => {
    const db = await createMigrateDatabase();
    databases.push(db);
    return db.url;
  };

  beforeAll(async () => {
    dataDir = await makeDataDir();
    big = await makeDataDir(3000);
    dirs.push(dataDir, big);
  });
  afterAll(async () => {
    for (const d of databases) await d.drop();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  it("knows every table of the SQLite schema, and PostgreSQL has each table it copies", async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), "mig-schema-"));
    dirs.push(dir);
    // The schema as the migrations build it today, on an empty store.
    const store = await SqliteStore.open({ dataDir: dir, busyTimeoutMs: 1000, onFatal: () => {} });
    await store.close();
    const db = new Database(path.join(dir, "orchestrator.db"), { readonly: true });
    const tables = (db.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").pluck().all() as string[]).filter((t) => !isSqliteInternal(t));
    db.close();
    const unknown = tables.filter((t) => !TABLE_RULES[t]);
    expect(unknown, "tables of the SQLite schema that migrate has no rule for (add them to src/store/migrate/plan.ts)").toEqual([]);
    const url = await freshDatabase();
    await (await PostgresStore.open({ url })).close();
    const pgTables = (await pgQuery<{ tablename: string }>(url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")).map((r) => r.tablename);
    for (const [table] of COPY_ORDER) expect(pgTables).toContain(table);
    for (const [table, rule] of Object.entries(TABLE_RULES)) if (rule.kind === "derived" || rule.kind === "schema") expect(pgTables).toContain(table);
  });

  it("copies every table, checks the counts, records HACutoverAt, and leaves the SQLite dir as it was", async () => {
    const url = await freshDatabase();
    const before = dirDigest(dataDir);
    const run = await migrate("--sqlite-dir", dataDir, "--postgres-url", url);
    expect(run.stderr).toBe("");
    expect(run.code).toBe(0);
    // Not a terminal: one line per table, with its rate.
    for (const [table] of COPY_ORDER) expect(run.stdout).toMatch(new RegExp(`^${table}: [\\d,]+ rows in [\\d.]+s \\([\\d,-]+ rows/s\\)$`, "m"));
    expect(run.stdout).toMatch(/^cutover: HACutoverAt \d{4}-\d\d-\d\dT[\d:.]+Z recorded$/m);
    expect(dirDigest(dataDir)).toEqual(before);

    const source = sqliteCounts(dataDir);
    // Every table the SQLite database has (but the skipped ones) is in PostgreSQL with as many rows.
    expect(Object.keys(source).sort()).toEqual(Object.entries(TABLE_RULES).filter(([, r]) => r.kind !== "skip").map(([t]) => t).sort());
    expect(await pgCounts(url, Object.keys(source))).toEqual(source);
    expect(source.events).toBe(300);
    expect(source.rollout_moves).toBeGreaterThanOrEqual(3);
    expect(source.rbac_tokens).toBe(1);

    const [cutover] = await pgQuery<{ source: string; cutover_at_ms: string; row_counts: string }>(url, "SELECT source, cutover_at_ms, row_counts FROM ha_cutover");
    expect(cutover.source).toBe(`${os.hostname()}:${dataDir}`);
    expect(Number(cutover.cutover_at_ms)).toBeGreaterThan(Date.now() - 60_000);
    expect(JSON.parse(cutover.row_counts)).toMatchObject({ events: 300, audit_records: source.audit_records });

    // The fleet projection is right: it matches the nodes themselves.
    const totals = await pgQuery(url, "SELECT channel, drained, drifted, seen, n FROM fleet_totals WHERE n <> 0 ORDER BY 1, 2, 3, 4");
    const recomputed = await pgQuery(
      url,
      "SELECT channel, drained, (desired_release_id IS NOT NULL AND desired_release_id <> coalesce(reported_release_id, '')) AS drifted, last_seen_ms IS NOT NULL AS seen, count(*)::int AS n FROM nodes GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4",
    );
    expect(totals).toEqual(recomputed);
    expect(totals.length).toBeGreaterThan(1);

    // Counted again, the two sides agree.
    const check = await migrate("--validate-only", "--sqlite-dir", dataDir, "--postgres-url", url);
    expect(check).toMatchObject({ code: 0 });
    expect(check.stdout).toMatch(/row counts match/);
    expect(dirDigest(dataDir)).toEqual(before);

    const store = await PostgresStore.open({ url });
    try {
      // The audit chain verifies on PostgreSQL (the verifier `audit verify` uses).
      const verifier = new AuditVerifier(new Map());
      verifier.add(await store.auditRecords({ order: "asc", limit: 10_000 }));
      const result = verifier.result();
      expect(result.problems).toEqual([]);
      expect(result).toMatchObject({ ok: true, recordsChecked: source.audit_records });
      // New writes get ids past the copied ones.
      const [{ max }] = await pgQuery<{ max: string }>(url, "SELECT max(seq) AS max FROM events");
      expect(await store.ingestEvents([{ eventId: "after-cutover", eventType: "boot", nodeId: "fx-1", timestamp: { seconds: 1n, nanos: 0 } } as never])).toBe(1);
      const [{ seq }] = await pgQuery<{ seq: string }>(url, "SELECT seq FROM events WHERE event_id = 'after-cutover'");
      expect(Number(seq)).toBe(Number(max) + 1);
      for (const table of ["releases", "rollout_plans", "rollout_moves", "audit_records"]) {
        const [{ last_value, m }] = await pgQuery<{ last_value: string; m: string }>(
          url,
          `SELECT (SELECT last_value FROM ${table}_seq_seq) AS last_value, (SELECT max(seq) FROM ${table}) AS m`,
        );
        expect(Number(last_value), table).toBeGreaterThanOrEqual(Number(m));
      }
    } finally {
      await store.close();
    }

  });

  it("finishes without duplicates when run again after a kill -9 in the middle", async () => {
    const url = await freshDatabase();
    const before = dirDigest(big);
    const child = spawn(process.execPath, [ORCHESTRATOR_BIN, "migrate", "--sqlite-dir", big, "--postgres-url", url, "--batch-size", "2"], { stdio: "ignore" });
    const exited = new Promise((resolve) => child.once("exit", resolve));
    // Killed while it copies the events: some are in, not all, and no cutover.
    await until(
      "the events copy under way",
      async () => {
        const [{ n }] = await pgQuery<{ n: string | null }>(url, "SELECT CASE WHEN to_regclass('events') IS NULL THEN NULL ELSE (SELECT count(*) FROM events) END AS n").catch(() => [{ n: null }]);
        return n !== null && Number(n) >= 200;
      },
      20_000,
    );
    child.kill("SIGKILL");
    await exited;
    const [{ n: partial }] = await pgQuery<{ n: string }>(url, "SELECT count(*) AS n FROM events");
    expect(Number(partial)).toBeLessThan(3000);
    expect(await pgQuery(url, "SELECT * FROM ha_cutover WHERE cutover_at_ms IS NOT NULL")).toEqual([]);

    const again = await migrate("--sqlite-dir", big, "--postgres-url", url);
    expect(again.stderr).toBe("");
    expect(again.code).toBe(0);
    expect(again.stdout).toMatch(/^events: [\d,]+ of 3,000 rows already copied, resuming$/m);
    expect(again.stdout).toMatch(/resuming an interrupted copy/);
    const source = sqliteCounts(big);
    expect(await pgCounts(url, Object.keys(source))).toEqual(source);
    const [{ distinct }] = await pgQuery<{ distinct: string }>(url, "SELECT count(DISTINCT (node_id, event_id)) AS distinct FROM events");
    expect(Number(distinct)).toBe(3000);
    expect((await pgQuery(url, "SELECT seq FROM ha_cutover")).length).toBe(1);
    expect(dirDigest(big)).toEqual(before);
  });

  it("a resumed copy takes the source's current rows of the tables whose rows change", async () => {
    const url = await freshDatabase();
    expect((await migrate("--sqlite-dir", dataDir, "--postgres-url", url)).code).toBe(0);
    // As if the copy had stopped before its cutover, with older versions of a node and an ack in PostgreSQL.
    await pgQuery(url, "UPDATE ha_cutover SET cutover_at_ms = NULL");
    await pgQuery(url, "UPDATE nodes SET drain_reason = 'stale copy', drained = false WHERE node_id = 'fx-4'");
    await pgQuery(url, "UPDATE node_acks SET state = 'downloading' WHERE node_id = 'fx-1' AND release_id = 'fx-r1'");
    const again = await migrate("--sqlite-dir", dataDir, "--postgres-url", url);
    expect(again.stderr).toBe("");
    expect(again.code).toBe(0);
    expect(await pgQuery(url, "SELECT drained, drain_reason FROM nodes WHERE node_id = 'fx-4'")).toEqual([{ drained: true, drain_reason: "disk swap" }]);
    expect(await pgQuery(url, "SELECT state FROM node_acks WHERE node_id = 'fx-1' AND release_id = 'fx-r1'")).toEqual([{ state: "healthy" }]);
  });

  it("--dry-run prints the counts and writes nothing", async () => {
    const url = await freshDatabase();
    const run = await migrate("--dry-run", "--sqlite-dir", dataDir, "--postgres-url", url);
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/^dry run: nothing is written$/m);
    expect(run.stdout).toMatch(/^events\s+300\s+no table\s+copy$/m);
    expect(run.stdout).toMatch(/no schema yet/);
    expect(await pgQuery(url, "SELECT tablename FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')")).toEqual([]);
  });

  it("--validate-only exits non-zero naming each table whose counts differ", async () => {
    const url = await freshDatabase();
    const empty = await migrate("--validate-only", "--sqlite-dir", dataDir, "--postgres-url", url);
    expect(empty.code).toBe(1);
    expect(empty.stderr).toMatch(/row counts differ: .*events \(SQLite 300, PostgreSQL no table\)/);
    expect(await pgQuery(url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")).toEqual([]);

    expect((await migrate("--sqlite-dir", dataDir, "--postgres-url", url)).code).toBe(0);
    await pgQuery(url, "DELETE FROM rbac_bindings");
    const off = await migrate("--validate-only", "--sqlite-dir", dataDir, "--postgres-url", url);
    expect(off.code).toBe(1);
    expect(off.stderr).toBe("autonomy-orchestrator: row counts differ: rbac_bindings (SQLite 1, PostgreSQL 0)\n");
    expect(off.stdout).toMatch(/^rbac_bindings\s+1\s+0\s+copy\s+MISMATCH$/m);
  });

  it("refuses a database that holds a cutover unless --force, naming when and from where, and writes nothing", async () => {
    const url = await freshDatabase();
    expect((await migrate("--sqlite-dir", dataDir, "--postgres-url", url)).code).toBe(0);
    const [first] = await pgQuery<{ cutover_at_ms: string }>(url, "SELECT cutover_at_ms FROM ha_cutover");
    const snapshot = async () => JSON.stringify([await pgQuery(url, "SELECT * FROM ha_cutover ORDER BY seq"), await pgCounts(url, Object.keys(sqliteCounts(dataDir)))]);
    const before = await snapshot();
    // AUTONOMY_FORCE=0 is not --force.
    const refused = await runProgram(ORCHESTRATOR_BIN, ["migrate", "--sqlite-dir", dataDir, "--postgres-url", url], { AUTONOMY_FORCE: "0" });
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain(`PostgreSQL already holds a cutover: HACutoverAt ${new Date(Number(first.cutover_at_ms)).toISOString()} from ${os.hostname()}:${dataDir}`);
    expect(refused.stderr).toMatch(/Nothing was written\. --force replaces/);
    expect(await snapshot()).toBe(before);

    // --force: PostgreSQL is made a copy of the SQLite dir again (rows written there since are gone).
    await pgQuery(url, "INSERT INTO rbac_roles (name, permissions, created_at_ms) VALUES ('written-after', '[]', 1)");
    const forced = await migrate("--force", "--sqlite-dir", dataDir, "--postgres-url", url);
    expect(forced.stderr).toBe("");
    expect(forced.code).toBe(0);
    const source = sqliteCounts(dataDir);
    expect(await pgCounts(url, Object.keys(source))).toEqual(source);
    expect((await pgQuery(url, "SELECT seq FROM ha_cutover WHERE cutover_at_ms IS NOT NULL")).length).toBe(2);

    // A forced copy that was interrupted is finished by a plain run (the newest record is its own).
    await pgQuery(url, "UPDATE ha_cutover SET cutover_at_ms = NULL WHERE seq = (SELECT max(seq) FROM ha_cutover)");
    await pgQuery(url, "DELETE FROM rbac_tokens");
    const finished = await migrate("--sqlite-dir", dataDir, "--postgres-url", url);
    expect(finished.stderr).toBe("");
    expect(finished.code).toBe(0);
    expect(await pgCounts(url, Object.keys(source))).toEqual(source);
  });

  it("refuses a database a server already wrote to, and an unfinished copy from another data dir", async () => {
    const url = await freshDatabase();
    const store = await PostgresStore.open({ url });
    await store.ingestEvents([{ eventId: "e", eventType: "boot", nodeId: "n", timestamp: { seconds: 1n, nanos: 0 } } as never]);
    await store.close();
    const refused = await migrate("--sqlite-dir", dataDir, "--postgres-url", url);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/PostgreSQL already holds data that migrate did not copy \(events 1\)/);
    expect(await pgQuery(url, "SELECT * FROM ha_cutover")).toEqual([]);

    const other = await freshDatabase();
    await (await PostgresStore.open({ url: other })).close();
    await pgQuery(other, "INSERT INTO ha_cutover (source, started_at_ms, row_counts, version) VALUES ('elsewhere:/srv/data', 1, '{}', 'x')");
    const mixed = await migrate("--sqlite-dir", dataDir, "--postgres-url", other);
    expect(mixed.code).toBe(1);
    expect(mixed.stderr).toMatch(/holds an unfinished copy from elsewhere:\/srv\/data \(started 1970-01-01T00:00:00.001Z\)/);
  });

  it("refuses a SQLite database with a table it does not know", async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), "mig-unknown-"));
    dirs.push(dir);
    cpSync(dataDir, dir, { recursive: true });
    const db = new Database(path.join(dir, "orchestrator.db"));
    db.exec("CREATE TABLE gadgets (id integer primary key)");
    db.close();
    const run = await migrate("--sqlite-dir", dir, "--postgres-url", await freshDatabase());
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/table\(s\) this version does not know how to migrate: gadgets/);
  });

  it("reads a data dir left by kill -9 in place (its WAL included) and changes none of its files", async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), "mig-wal-"));
    dirs.push(dir);
    const server = await startChildServer(["--data-dir", dir]);
    const rest = restClient(server.url);
    await rest("POST", "/v1/events", { events: [{ event_id: "w1", event_type: "boot", node_id: "wal-1", timestamp: "2026-01-01T00:00:00Z" }] });
    await server.kill("SIGKILL");
    expect(readdirSync(dir)).toEqual(expect.arrayContaining(["orchestrator.db-wal", "orchestrator.db-shm"]));
    const before = dirDigest(dir);
    const url = await freshDatabase();
    const run = await migrate("--sqlite-dir", dir, "--postgres-url", url);
    expect(run.stderr).toBe("");
    expect(run.code).toBe(0);
    const after = dirDigest(dir);
    // The database and its log are untouched, no file appeared or went; only the shared-memory
    // index (which every reader uses, and which holds no data) may differ.
    expect(Object.keys(after)).toEqual(Object.keys(before));
    for (const name of Object.keys(before)) if (!name.endsWith("-shm")) expect(after[name], name).toBe(before[name]);
    expect((await pgQuery<{ event_id: string }>(url, "SELECT event_id FROM events")).map((r) => r.event_id)).toEqual(["w1"]);
  });

  it("names the path a wrong --sqlite-dir looked in, and the flag of every bad flag", async () => {
    const url = await freshDatabase();
    const missing = path.join(os.tmpdir(), "mig-no-such-dir");
    expect(await migrate("--sqlite-dir", missing, "--postgres-url", url)).toMatchObject({ code: 1, stderr: `autonomy-orchestrator: --sqlite-dir ${missing}: no such directory\n` });
    const empty = mkdtempSync(path.join(os.tmpdir(), "mig-empty-"));
    dirs.push(empty);
    const noDb = await migrate("--sqlite-dir", empty, "--postgres-url", url);
    expect(noDb.code).toBe(1);
    expect(noDb.stderr).toContain(`--sqlite-dir ${empty}: no orchestrator.db there (looked for ${path.join(empty, "orchestrator.db")})`);
    expect(readdirSync(empty)).toEqual([]);

    const usage = [
      [["--sqlite-dir", dataDir], /required option '--postgres-url <url>' not specified/],
      [["--sqlite-dir", dataDir, "--postgres-url", "http://x"], /option '--postgres-url <url>' argument 'http:\/\/x' is invalid\. "http:\/\/\.\.\." is not a PostgreSQL URL/],
      [["--sqlite-dir", dataDir, "--postgres-url", url, "--batch-size", "0"], /option '--batch-size <rows>' argument '0' is invalid\. "0" is not a whole number from 1 to 50000/],
      [["--sqlite-dir", dataDir, "--postgres-url", url, "--batch-size", "ten"], /option '--batch-size <rows>' argument 'ten' is invalid/],
      [["--sqlite-dir", dataDir, "--postgres-url", url, "--dry-run", "--validate-only"], /option '--dry-run' cannot be used with option '--validate-only'/],
      [["--sqlite-dir", dataDir, "--postgres-url", url, "--force", "--dry-run"], /option '--force' cannot be used with option '--dry-run'/],
      [["--sqlite-dir", dataDir, "--postgres-url", url, "--bogus"], /unknown option '--bogus'/],
    ] as const;
    // The parse errors in process (commander's errors, as the program prints them); one through
    // the built program for its exit status (2: a usage error).
    for (const [args, message] of usage) expect(await usageError(args), args.join(" ")).toMatch(message);
    expect(await usageError(["--sqlite-dir", dataDir, "--postgres-url", url], { AUTONOMY_VALIDATE_ONLY: "maybe" })).toMatch(/AUTONOMY_VALIDATE_ONLY="maybe": expected 1 or 0/);
    const [bad, help] = await Promise.all([
      migrate("--sqlite-dir", dataDir, "--postgres-url", url, "--batch-size", "0"),
      runProgram(ORCHESTRATOR_BIN, ["migrate", "--help"], { COLUMNS: "300" }),
    ]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/option '--batch-size <rows>' argument '0' is invalid/);
    expect(help.code).toBe(0);
    for (const [flag, env] of [["--sqlite-dir", "AUTONOMY_SQLITE_DIR"], ["--postgres-url <url> (required)", "AUTONOMY_POSTGRES_URL"], ["--batch-size", "AUTONOMY_BATCH_SIZE"], ["--dry-run", "AUTONOMY_DRY_RUN"], ["--validate-only", "AUTONOMY_VALIDATE_ONLY"], ["--force", "AUTONOMY_FORCE"]]) {
      expect(help.stdout).toMatch(new RegExp(`${flag.replace(/[()]/g, "\\$&")}.*env: ${env}`));
    }
    expect(help.stdout).toContain("(default: 500, env: AUTONOMY_BATCH_SIZE)");
    const down = await migrate("--sqlite-dir", dataDir, "--postgres-url", "postgres://postgres@127.0.0.1:1/nothing");
    expect(down.code).toBe(1);
    expect(down.stderr).toMatch(/^autonomy-orchestrator: cannot connect to PostgreSQL at postgres:\/\/postgres@127\.0\.0\.1:1\/nothing \(--postgres-url\): ECONNREFUSED/);
    expect(await pgQuery(url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")).toEqual([]);
  });
});

describe("migrate's progress", () => {
  const capture = (isTTY: boolean) => {
    let text = "";
    const out = { isTTY, write: (s: string | Uint8Array) => ((text += String(s)), true) } as Pick<NodeJS.WriteStream, "write" | "isTTY">;
    return { out, text: () => text };
  };
  const feed = (p: ReturnType<typeof progressPrinter>) => {
    p.tableStart!("events", 1000, 0);
    p.tableProgress!("events", 500, 1000);
    p.tableProgress!("events", 1000, 1000);
    p.tableDone!("events", { rows: 1000, inserted: 1000, ms: 500 });
  };

  it("draws a bar on a terminal, redrawn in place, then the table's line", () => {
    const c = capture(true);
    feed(progressPrinter(c.out));
    expect(c.text()).toMatch(/^\r\x1b\[Kevents\s+\[#{15}\.{15}\] {2}50% 500\/1,000 [\d,]+ rows\/s\r\x1b\[Kevents\s+\[#{30}\] 100% 1,000\/1,000 [\d,]+ rows\/s\r\x1b\[Kevents: 1,000 rows in 0\.50s \(2,000 rows\/s\)\n$/);
  });

  it("writes one line per table, with its rate, elsewhere", () => {
    const c = capture(false);
    feed(progressPrinter(c.out));
    expect(c.text()).toBe("events: 1,000 rows in 0.50s (2,000 rows/s)\n");
  });
});
