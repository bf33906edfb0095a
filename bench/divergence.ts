/**
 * The divergence report's cost (`npm run bench`): one 100-row page of `GET /v1/fleet/divergence`
 * (the index read, the page's acks and newest moves, the classification) against a fleet of
 * BENCH_DIVERGENCE_NODES (100,000) nodes of which 1 % diverged, written straight into a SQLite
 * database. Ceiling, measured in the same run: reading every node of the fleet once
 * (store.listNodes), what a report without the index would need at the least. The same page is
 * also timed on a fleet a tenth the size: a page costs the page, not the fleet.
 *
 * Prints a table and writes bench/results/divergence-<time>.json.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import Database from "better-sqlite3";
import { packageRoot } from "../src/paths.js";
import { divergencePage } from "../src/services/divergence-report.js";
import { SightingBuffer } from "../src/store/sightings.js";
import { DB_FILE_NAME, SqliteStore } from "../src/store/sqlite/store.js";

const NODES = Number(process.env.BENCH_DIVERGENCE_NODES ?? 100_000);
const DIVERGED_SHARE = 0.01;
const RUNS = 50;

const log = (line: string) => process.stderr.write(line + "\n");
const fmt = (n: number, digits = 2) => n.toLocaleString("en", { maximumFractionDigits: digits, minimumFractionDigits: digits });

/** A data dir with the schema applied and `nodes` nodes, 1 % of them reporting another release than desired. */
async function fleet(nodes: number): Promise<string> {
  const dir = mkdtempSync(path.join(os.tmpdir(), "ao-bench-divergence-"));
  await (await SqliteStore.open({ dataDir: dir, busyTimeoutMs: 5000, onFatal: () => {} })).close();
  const db = new Database(path.join(dir, DB_FILE_NAME));
  const nowMs = Date.now();
  db.prepare("INSERT INTO releases (release_id, channel, version, artifacts, notes, published_at_ms, staged) VALUES ('b1', 'bench', '1', '[]', '', ?, 0)").run(nowMs - 3_600_000);
  db.prepare("INSERT INTO releases (release_id, channel, version, artifacts, notes, published_at_ms, staged) VALUES ('b2', 'bench', '2', '[]', '', ?, 0)").run(nowMs - 1_800_000);
  const insert = db.prepare(
    "INSERT INTO nodes (node_id, channel, labels, agent_version, enrolled_at_ms, last_seen_ms, reported_release_id, drained, drain_reason, desired_release_id) VALUES (?, 'bench', '{}', 't', ?, ?, ?, 0, '', 'b2')",
  );
  const ack = db.prepare("INSERT INTO node_acks (release_id, node_id, state, message, reported_release_id, observed_at_ms, updated_at_ms) VALUES (?, ?, ?, '', ?, ?, ?)");
  const every = Math.round(1 / DIVERGED_SHARE);
  db.transaction(() => {
    for (let i = 0; i < nodes; i++) {
      const id = `node-${String(i).padStart(6, "0")}`;
      const diverged = i % every === 0;
      insert.run(id, nowMs - 7_200_000, nowMs - 1000, diverged ? "b1" : "b2");
      ack.run("b1", id, "healthy", "b1", nowMs - 3_500_000, nowMs - 3_500_000);
      ack.run("b2", id, diverged ? "failed" : "healthy", diverged ? "b1" : "b2", nowMs - 1_700_000, nowMs - 1_700_000);
    }
  })();
  // Diverged for half an hour: past the report's 10-minute threshold.
  db.prepare("UPDATE nodes SET diverged_since_ms = ? WHERE diverged_since_ms IS NOT NULL").run(nowMs - 1_800_000);
  db.close();
  return dir;
}

async function measure(nodes: number): Promise<{ pageMs: number; fullMs: number; rows: number }> {
  const dir = await fleet(nodes);
  const store = await SqliteStore.open({ dataDir: dir, busyTimeoutMs: 5000, onFatal: () => {} });
  const sightings = new SightingBuffer({ store, flushIntervalMs: 60_000, onFlushError: () => {} });
  try {
    const deps = { store, sightings, staleAfterMs: 120_000 };
    const page = () => divergencePage(deps, { divergedAtOrBeforeMs: Date.now() - 600_000, limit: 100 });
    let rows = 0;
    for (let i = 0; i < 5; i++) rows = (await page()).nodes.length; // warm up
    let t = performance.now();
    for (let i = 0; i < RUNS; i++) await page();
    const pageMs = (performance.now() - t) / RUNS;
    await store.listNodes({});
    t = performance.now();
    for (let i = 0; i < 5; i++) await store.listNodes({});
    const fullMs = (performance.now() - t) / 5;
    return { pageMs, fullMs, rows };
  } finally {
    await sightings.close();
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

const small = await measure(Math.round(NODES / 10));
const large = await measure(NODES);
const table = [
  ["fleet", "diverged", "page (100 rows)", "every node read once (ceiling)", "page / ceiling"],
  [fmt(NODES / 10, 0), fmt(NODES / 10 / 100, 0), `${fmt(small.pageMs)} ms`, `${fmt(small.fullMs)} ms`, fmt(small.pageMs / small.fullMs, 4)],
  [fmt(NODES, 0), fmt(NODES / 100, 0), `${fmt(large.pageMs)} ms`, `${fmt(large.fullMs)} ms`, fmt(large.pageMs / large.fullMs, 4)],
];
log("divergence report (SQLite): one page against reading the whole fleet");
for (const row of table) log(row.map((c, i) => c.padEnd([10, 10, 18, 32, 14][i])).join("  "));
log(`page at ${fmt(NODES, 0)} nodes / page at ${fmt(NODES / 10, 0)} nodes: ${fmt(large.pageMs / small.pageMs)} (rows per page: ${large.rows})`);
const results = path.join(packageRoot, "bench", "results");
mkdirSync(results, { recursive: true });
writeFileSync(path.join(results, `divergence-${new Date().toISOString().replace(/[:.]/g, "-")}.json`), JSON.stringify({ nodes: NODES, small, large }, null, 2));
