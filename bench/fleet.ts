/**
 * The fleet part of `npm run bench`: a simulated fleet of BENCH_FLEET_NODES (10,000) nodes
 * driven from one load process (bench/fleet-load.ts) against a server holding 1,000,000
 * events. Each figure comes with a ceiling measured in the same run:
 *
 *   heartbeats/s     against a bare node:http2 server answering the same bytes
 *   SQLite tx/hb     store writes of coalesced last-seen times per heartbeat accepted
 *   acks/s           against better-sqlite3 upserting the same acks, one durable commit each
 *                    (the storms sent by h2load when it is installed, see bench/h2load.ts)
 *   GET /v1/fleet, GET /v1/nodes/{id}/summary   against the bare server answering the same bodies
 *   GET /v1/fleet, 100-row pages, at 10,000 and at BENCH_FLEET_PAGE_NODES (100,000) nodes written
 *                    straight into the database, idle and with a minute's share of heartbeats
 *                    buffered, against the bare server answering the same body
 *
 * Prints a table and writes bench/results/fleet-<time>.json.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import Database from "better-sqlite3";
import { packageRoot } from "../src/paths.js";
import { DB_FILE_NAME } from "../src/store/sqlite/store.js";
import type { FleetLoadResult, FleetLoadSpec } from "./fleet-load.js";
import { nodeName } from "./fleet-load.js";
import { metric } from "./h2-request.js";
import { ackLoadTool, type AckLoad } from "./h2load.js";
import type { QueryResult, QuerySpec } from "./load.js";
import { runToEnd, startOrchestrator, startPort } from "./processes.js";
import { applySchema, durablePragmas, INSERT_SQL } from "./sqlite-schema.js";
import { fillNodes } from "./fill-nodes.js";
import { BATCH_SIZE, jsonBatch, rowOf } from "./workload.js";

const NODES = Number(process.env.BENCH_FLEET_NODES ?? 10_000);
const PAGE_NODES = Number(process.env.BENCH_FLEET_PAGE_NODES ?? 100_000);
/** BENCH_FLEET_PAGES_ONLY=1 runs the page measurements alone. */
const PAGES_ONLY = process.env.BENCH_FLEET_PAGES_ONLY === "1";
const PAGE_PATH = "/v1/fleet?channel=bench&page_size=100";
const EVENTS = 1_000_000;
const HEARTBEAT_MS = 15_000;
const FLUSH_MS = 5_000;
const QUERY_MS = 10_000;
const ACK_STATES = ["downloading", "applied", "healthy"];

const dist = path.join(packageRoot, "dist");
const LOAD = path.join(dist, "bench", "load.js");
const FLEET_LOAD = path.join(dist, "bench", "fleet-load.js");
const BARE = path.join(dist, "bench", "bare-h2.js");
const DIGEST = `sha256:${"be".repeat(32)}`;

const log = (line: string) => process.stderr.write(line + "\n");
const fmt = (n: number, digits = 0) => n.toLocaleString("en", { maximumFractionDigits: digits, minimumFractionDigits: digits });

/** Default flags, as an operator runs it (a log line per request included), with the bench's flush interval. */
const startServer = (dataDir: string) => startOrchestrator(dataDir, ["--heartbeat-flush-interval", `${FLUSH_MS}ms`]);

/** The bare node:http2 server answering every request with `body`. */
function bare(body: string | Buffer, dir: string) {
  const file = path.join(dir, `bare-${Date.now()}.json`);
  writeFileSync(file, body);
  return startPort(BARE, [file]);
}

const fleetLoad = async (spec: FleetLoadSpec) => JSON.parse(await runToEnd(FLEET_LOAD, [JSON.stringify(spec)])) as FleetLoadResult;
const queryLoad = async (spec: QuerySpec) => JSON.parse(await runToEnd(LOAD, [JSON.stringify(spec)])) as QueryResult;

/** 1,000,000 events spread over the fleet's nodes, written straight into the server's database. */
function fillEvents(dir: string): void {
  const db = new Database(path.join(dir, DB_FILE_NAME));
  db.pragma("journal_mode = WAL");
  db.pragma("synchronous = OFF");
  const insert = db.prepare(INSERT_SQL);
  const tx = db.transaction((b0: number) => {
    for (let b = b0; b < b0 + 100; b++) {
      jsonBatch(b).forEach((e, i) => insert.run(rowOf({ ...e, node_id: nodeName((b * BATCH_SIZE + i) % NODES) }, Date.now())));
    }
  });
  for (let b = 0; b < EVENTS / BATCH_SIZE; b += 100) tx(b);
  db.pragma("wal_checkpoint(TRUNCATE)");
  db.close();
}

/** The ack ceiling: the same upsert the server runs, one durable transaction per ack, in one process. */
function ackCeiling(dir: string): number {
  const db = new Database(path.join(dir, "ceiling.db"));
  durablePragmas(db);
  applySchema(db);
  db.prepare("INSERT INTO releases (release_id, channel, version, artifacts, notes, published_at_ms) VALUES ('r', 'bench', '1', '[]', '', 0)").run();
  const enrol = db.prepare("INSERT INTO nodes (node_id, channel, labels, agent_version, enrolled_at_ms, drained, drain_reason) VALUES (?, 'bench', '{}', '', 0, 0, '')");
  db.transaction(() => {
    for (let n = 0; n < NODES; n++) enrol.run(nodeName(n));
  })();
  const upsert = db.prepare(
    "INSERT INTO node_acks (release_id, node_id, state, message, reported_release_id, observed_at_ms, updated_at_ms) VALUES ('r', ?, ?, '', '', ?, ?) " +
      "ON CONFLICT (release_id, node_id) DO UPDATE SET state = excluded.state, message = excluded.message, reported_release_id = excluded.reported_release_id, " +
      "observed_at_ms = excluded.observed_at_ms, updated_at_ms = excluded.updated_at_ms WHERE node_acks.observed_at_ms <= excluded.observed_at_ms",
  );
  const exists = db.prepare("SELECT 1 FROM releases WHERE release_id = 'r'");
  const node = db.prepare("SELECT 1 FROM nodes WHERE node_id = ?");
  const one = db.transaction((id: string, state: string) => {
    exists.get();
    node.get(id);
    upsert.run(id, state, Date.now(), Date.now());
  });
  const started = process.hrtime.bigint();
  for (const state of ACK_STATES) for (let n = 0; n < NODES; n++) one(nodeName(n), state);
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  db.close();
  return (NODES * ACK_STATES.length) / seconds;
}

/** Every node acks `state` once, 64 streams in flight on one connection. */
const ackStorm = (url: string, state: string, load: AckLoad) => fleetLoad({ op: "ack", url, nodes: NODES, concurrency: 64, releaseId: "bench-r1", state, via: load });

interface PageRun {
  nodes: number;
  idle: QueryResult;
  /** With `buffered` heartbeats in the server's buffer (a minute's share of a flush interval). */
  buffered: QueryResult;
  bufferedHeartbeats: number;
  bytes: number;
  ceiling: number;
}

/** 100-row pages of a `nodes`-node channel: idle, then with heartbeats buffered (the flush interval set long). */
async function pageRun(dir: string, nodes: number): Promise<PageRun> {
  const dataDir = path.join(dir, `page-${nodes}`);
  log(`  page: filling ${fmt(nodes)} nodes...`);
  await fillNodes(dataDir, nodes);
  const server = await startOrchestrator(dataDir, ["--heartbeat-flush-interval", "1h"]);
  let idle: QueryResult;
  let buffered: QueryResult;
  let body: Buffer;
  // What a flush interval of heartbeats holds at once: every node once a minute, 5 s flushes.
  const bufferedHeartbeats = Math.round((nodes / 60) * (FLUSH_MS / 1000));
  try {
    body = Buffer.from(await (await fetch(server.url + PAGE_PATH)).arrayBuffer());
    await queryLoad({ kind: "query", url: server.url, paths: [PAGE_PATH], durationMs: 2000, concurrency: 1 });
    idle = await queryLoad({ kind: "query", url: server.url, paths: [PAGE_PATH], durationMs: QUERY_MS, concurrency: 1 });
    await fleetLoad({ op: "heartbeat", url: server.url, nodes: bufferedHeartbeats, concurrency: 32 });
    buffered = await queryLoad({ kind: "query", url: server.url, paths: [PAGE_PATH], durationMs: QUERY_MS, concurrency: 1 });
  } finally {
    await server.stop();
  }
  const bareServer = await bare(body, dir);
  const ceiling = await queryLoad({ kind: "query", url: bareServer.url, paths: [PAGE_PATH], durationMs: 5000, concurrency: 1 }).finally(() => bareServer.stop());
  rmSync(dataDir, { recursive: true, force: true });
  log(`  page of ${fmt(nodes)}: p50 ${fmt(idle.p50Ms, 2)} ms p99 ${fmt(idle.p99Ms, 2)} ms; ${fmt(bufferedHeartbeats)} buffered: p99 ${fmt(buffered.p99Ms, 2)} ms`);
  return { nodes, idle, buffered, bufferedHeartbeats, bytes: body.length, ceiling: ceiling.requestsPerSecond };
}

function pagesTable(pages: PageRun[]): string {
  let out = "";
  for (const p of pages) {
    out += `  GET ${PAGE_PATH} at ${fmt(p.nodes)} nodes (${fmt(p.bytes)} bytes)  p50 ${fmt(p.idle.p50Ms, 2)} ms  p99 ${fmt(p.idle.p99Ms, 2)} ms  ${fmt(p.idle.requestsPerSecond)} req/s   bare ${fmt(p.ceiling)} req/s   ratio ${fmt(p.idle.requestsPerSecond / p.ceiling, 2)}\n`;
    out += `    with ${fmt(p.bufferedHeartbeats)} heartbeats buffered  p50 ${fmt(p.buffered.p50Ms, 2)} ms  p99 ${fmt(p.buffered.p99Ms, 2)} ms  ${fmt(p.buffered.requestsPerSecond)} req/s   ratio ${fmt(p.buffered.requestsPerSecond / p.ceiling, 2)}\n`;
  }
  const growth = (f: (p: PageRun) => number) => fmt(f(pages[1]) / f(pages[0]), 2);
  out += `  page growth from ${fmt(pages[0].nodes)} to ${fmt(pages[1].nodes)} nodes: p50 ${growth((p) => p.idle.p50Ms)}x, p99 ${growth((p) => p.idle.p99Ms)}x idle; p50 ${growth((p) => p.buffered.p50Ms)}x buffered (target < 1.5x)\n`;
  return out;
}

async function main(): Promise<void> {
  const dir = mkdtempSync(path.join(os.tmpdir(), "ao-bench-fleet-"));
  const dataDir = path.join(dir, "data");
  try {
    if (PAGES_ONLY) {
      const pages = [await pageRun(dir, 10_000), await pageRun(dir, PAGE_NODES)];
      process.stdout.write(pagesTable(pages));
      return;
    }
    log(`fleet: ${fmt(NODES)} nodes, ${fmt(EVENTS)} events stored`);
    const first = await startServer(dataDir); // applies the migrations
    await first.stop();
    log("  filling the events...");
    fillEvents(dataDir);
    log("  ack ceiling (better-sqlite3, one durable commit per ack)...");
    const ceilingAcks = ackCeiling(dir);

    const ackLoad = await ackLoadTool(log);
    const server = await startServer(dataDir);
    let results;
    try {
      const enrol = await fleetLoad({ op: "enroll", url: server.url, nodes: NODES, concurrency: 64 });
      log(`  enrolled at ${fmt(enrol.requestsPerSecond)}/s`);
      const before = await (await fetch(`${server.url}/metrics`)).text();
      const heartbeats = await fleetLoad({ op: "heartbeat", url: server.url, nodes: NODES, concurrency: 32, durationMs: HEARTBEAT_MS });
      await sleep(FLUSH_MS + 500); // the last flush
      const after = await (await fetch(`${server.url}/metrics`)).text();
      const flushes =
        metric(after, "cp_store_operation_duration_seconds_count", 'operation="record_sightings",outcome="ok"') -
        metric(before, "cp_store_operation_duration_seconds_count", 'operation="record_sightings",outcome="ok"');
      const accepted = metric(after, "cp_node_heartbeats_total") - metric(before, "cp_node_heartbeats_total");
      log(`  heartbeats ${fmt(heartbeats.requestsPerSecond)}/s, ${flushes} flushes for ${fmt(accepted)} heartbeats`);

      const publish = await fetch(`${server.url}/v1/releases`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ release_id: "bench-r1", channel: "bench", version: "1", artifacts: [{ name: "app", digest: DIGEST }] }),
      });
      if (publish.status !== 200) throw new Error(`publish: ${publish.status}`);
      const storms: FleetLoadResult[] = [];
      for (const state of ACK_STATES) {
        storms.push(await ackStorm(server.url, state, ackLoad));
        log(`  ack storm ${state}: ${fmt(storms[storms.length - 1].requestsPerSecond)}/s p99 ${fmt(storms[storms.length - 1].p99Ms, 1)} ms`);
      }
      const acks = storms.reduce((s, r) => s + r.requests, 0) / storms.reduce((s, r) => s + r.seconds, 0);

      const fleetPath = "/v1/fleet?channel=bench";
      const summaryPaths = Array.from({ length: 1000 }, (_, i) => `/v1/nodes/${nodeName((i * 7919) % NODES)}/summary`);
      const fleetBody = Buffer.from(await (await fetch(server.url + fleetPath)).arrayBuffer());
      const summaryBody = Buffer.from(await (await fetch(server.url + summaryPaths[0])).arrayBuffer());
      await queryLoad({ kind: "query", url: server.url, paths: summaryPaths, durationMs: 2000, concurrency: 1 });
      const fleetQ = await queryLoad({ kind: "query", url: server.url, paths: [fleetPath], durationMs: QUERY_MS, concurrency: 1 });
      const summaryQ = await queryLoad({ kind: "query", url: server.url, paths: summaryPaths, durationMs: QUERY_MS, concurrency: 1 });
      const peakRssMiB = server.peakRssMiB();

      const bareHb = await bare('{"lifecycle":"HEALTHY","server_time":"2026-11-23T10:00:00.000Z"}', dir);
      const ceilingHb = await fleetLoad({ op: "heartbeat", url: bareHb.url, nodes: NODES, concurrency: 32, durationMs: 5000 }).finally(() => bareHb.stop());
      const bareFleet = await bare(fleetBody, dir);
      const ceilingFleet = await queryLoad({ kind: "query", url: bareFleet.url, paths: [fleetPath], durationMs: 5000, concurrency: 1 }).finally(() => bareFleet.stop());
      const bareSummary = await bare(summaryBody, dir);
      const ceilingSummary = await queryLoad({ kind: "query", url: bareSummary.url, paths: summaryPaths, durationMs: 5000, concurrency: 1 }).finally(() => bareSummary.stop());

      results = {
        nodes: NODES,
        events: EVENTS,
        enrolPerSecond: enrol.requestsPerSecond,
        heartbeats: { ...heartbeats, accepted, flushes, txPerHeartbeat: flushes / accepted, ceiling: ceilingHb.requestsPerSecond },
        acks: { perSecond: acks, storms, ceiling: ceilingAcks, load: ackLoad },
        fleet: { ...fleetQ, bytes: fleetBody.length, ceiling: ceilingFleet.requestsPerSecond },
        summary: { ...summaryQ, bytes: summaryBody.length, ceiling: ceilingSummary.requestsPerSecond },
        peakRssMiB,
      };
    } finally {
      await server.stop();
    }
    const pages = [await pageRun(dir, 10_000), await pageRun(dir, PAGE_NODES)];

    const r = results;
    const perFlush = (NODES / 60) * (FLUSH_MS / 1000);
    let out = `\nFleet: ${fmt(NODES)} nodes, ${fmt(EVENTS)} events stored, one load process\n`;
    out += `  heartbeats   ${fmt(r.heartbeats.requestsPerSecond).padStart(7)}/s  p99 ${fmt(r.heartbeats.p99Ms, 2)} ms   bare node:http2 ${fmt(r.heartbeats.ceiling)}/s   ratio ${fmt(r.heartbeats.requestsPerSecond / r.heartbeats.ceiling, 2)}\n`;
    out += `  SQLite tx per heartbeat  ${fmt(r.heartbeats.txPerHeartbeat, 5)} (${r.heartbeats.flushes} flush transactions for ${fmt(r.heartbeats.accepted)} heartbeats in ${HEARTBEAT_MS / 1000}s; target < 0.05)\n`;
    out += `    at the real rate (${fmt(NODES)} nodes once a minute, ${FLUSH_MS / 1000}s flushes): ${fmt(1 / perFlush, 5)} (one per ${fmt(perFlush)} heartbeats)\n`;
    out += `  acks         ${fmt(r.acks.perSecond).padStart(7)}/s  p99 ${r.acks.storms.map((st) => fmt(st.p99Ms, 1)).join(", ")} ms  (3 storms from ${r.acks.load}: every node acks downloading, applied, healthy)   better-sqlite3 one commit per ack ${fmt(r.acks.ceiling)}/s   ratio ${fmt(r.acks.perSecond / r.acks.ceiling, 2)}\n`;
    out += `  GET /v1/fleet (${fmt(Math.min(1000, NODES))} rows of ${fmt(NODES)}, ${fmt(r.fleet.bytes)} bytes)  p50 ${fmt(r.fleet.p50Ms, 1)} ms  p99 ${fmt(r.fleet.p99Ms, 1)} ms  ${fmt(r.fleet.requestsPerSecond, 1)} req/s   bare ${fmt(r.fleet.ceiling)} req/s   ratio ${fmt(r.fleet.requestsPerSecond / r.fleet.ceiling, 3)}\n`;
    out += `  GET /v1/nodes/{id}/summary (${fmt(r.summary.bytes)} bytes)  p50 ${fmt(r.summary.p50Ms, 2)} ms  p99 ${fmt(r.summary.p99Ms, 2)} ms  ${fmt(r.summary.requestsPerSecond)} req/s   bare ${fmt(r.summary.ceiling)} req/s   ratio ${fmt(r.summary.requestsPerSecond / r.summary.ceiling, 2)}\n`;
    out += pagesTable(pages);
    out += `  enrolment ${fmt(r.enrolPerSecond)}/s; server peak RSS ${fmt(r.peakRssMiB, 1)} MiB\n`;
    process.stdout.write(out);

    const resultsDir = path.join(packageRoot, "bench", "results");
    mkdirSync(resultsDir, { recursive: true });
    const date = new Date().toISOString();
    const file = path.join(resultsDir, `fleet-${date.replace(/[:.]/g, "-")}.json`);
    writeFileSync(file, JSON.stringify({ date, machine: { cpus: os.cpus().length, node: process.version }, ...results, pages }, null, 2) + "\n");
    log(`results written to ${path.relative(process.cwd(), file)}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
