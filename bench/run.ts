/**
 * `npm run bench`: ingest throughput and query latency of the orchestrator, as ratios of
 * ceilings measured in the same run on the same machine:
 *
 *   ceiling  the same schema and batches inserted straight through better-sqlite3, one process
 *   peer     POST /v1/events written with Fastify over HTTP/2 + better-sqlite3 (bench/peer.ts)
 *   server   autonomy-orchestrator serve, loaded over HTTP/2 from a separate process:
 *            REST JSON, Connect protobuf and gRPC
 *
 * and GET /v1/events with a node filter and limit 100 on a store of 1,000,000 events, with one
 * and with four concurrent streams, against a bare node:http2 server answering the same bytes
 * (the two measured in turns, round by round). Prints a table and writes
 * bench/results/bench-<time>.json. BENCH_REPS (default 3) and BENCH_BATCHES (default 400
 * batches of 500 events) size the run.
 */
import { closeSync, fsyncSync, mkdirSync, mkdtempSync, openSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import Database from "better-sqlite3";
import { packageRoot } from "../src/paths.js";
import { DB_FILE_NAME } from "../src/store/sqlite/store.js";
import type { IngestMode, IngestResult, IngestSpec, QueryResult, QueryTurnsResult, QueryTurnsSpec } from "./load.js";
import { runToEnd, startOrchestrator, startPort } from "./processes.js";
import { applySchema, durablePragmas, INSERT_SQL } from "./sqlite-schema.js";
import { BATCH_SIZE, jsonBatch, rowOf } from "./workload.js";

const REPS = Number(process.env.BENCH_REPS ?? 3);
const BATCHES = Number(process.env.BENCH_BATCHES ?? 400);
const CONCURRENCY = 8;
const QUERY_EVENTS = 1_000_000;
const QUERY_NODES = 1000;
const QUERY_SECONDS = 10;
const QUERY_ROUNDS = 5;
const QUERY_CONCURRENCIES = [1, 4];

const dist = path.join(packageRoot, "dist");
const LOAD = path.join(dist, "bench", "load.js");
const PEER = path.join(dist, "bench", "peer.js");
const BARE = path.join(dist, "bench", "bare-h2.js");

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const tmp = (prefix: string) => mkdtempSync(path.join(os.tmpdir(), `ao-bench-${prefix}-`));
const log = (line: string) => process.stderr.write(line + "\n");

/**
 * The ceiling: every batch inserted in its own durable transaction, nothing else. With
 * `durable` false (synchronous=OFF) it is the insert work alone, without any fsync: a bound
 * no durable server reaches, shown to tell how much of the ceiling is waiting on the disk.
 */
function ceiling(durable = true): number {
  const dir = tmp("ceiling");
  try {
    const db = new Database(path.join(dir, "ceiling.db"));
    durablePragmas(db);
    if (!durable) db.pragma("synchronous = OFF");
    applySchema(db);
    const insert = db.prepare(INSERT_SQL);
    const batches = Array.from({ length: BATCHES }, (_, b) => jsonBatch(b).map((e) => rowOf(e, Date.now())));
    const tx = db.transaction((rows: ReturnType<typeof rowOf>[]) => {
      for (const row of rows) insert.run(row);
    });
    const started = process.hrtime.bigint();
    for (const rows of batches) tx(rows);
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    db.close();
    return (BATCHES * BATCH_SIZE) / seconds;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

async function load<R>(spec: IngestSpec | QueryTurnsSpec): Promise<R> {
  return JSON.parse(await runToEnd(LOAD, [JSON.stringify(spec)])) as R;
}

/** One ingest run against a fresh server: events/s and the server's peak RSS. */
async function ingestRun(target: "peer" | IngestMode): Promise<{ eventsPerSecond: number; peakRssMiB: number }> {
  const dir = tmp(target);
  const server = target === "peer" ? await startPort(PEER, [path.join(dir, "peer.db")]) : await startOrchestrator(dir);
  try {
    const mode: IngestMode = target === "peer" ? "rest" : target;
    const result = await load<IngestResult>({ kind: "ingest", url: server.url, mode, batches: BATCHES, concurrency: CONCURRENCY });
    return { eventsPerSecond: result.eventsPerSecond, peakRssMiB: server.peakRssMiB() };
  } finally {
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Fills a server data dir with QUERY_EVENTS events over QUERY_NODES nodes, straight into SQLite. */
async function fillStore(dir: string): Promise<void> {
  const first = await startOrchestrator(dir); // applies the migrations
  await first.stop();
  const db = new Database(path.join(dir, DB_FILE_NAME));
  db.pragma("journal_mode = WAL");
  db.pragma("synchronous = OFF");
  const insert = db.prepare(INSERT_SQL);
  const tx = db.transaction((b0: number) => {
    for (let b = b0; b < b0 + 100; b++) for (const e of jsonBatch(b)) insert.run(rowOf(e, Date.now()));
  });
  for (let b = 0; b < QUERY_EVENTS / BATCH_SIZE; b += 100) tx(b);
  db.pragma("wal_checkpoint(TRUNCATE)");
  db.close();
  // Flush the file to disk now, so that writeback does not run during the measurement.
  const fd = openSync(path.join(dir, DB_FILE_NAME), "r+");
  fsyncSync(fd);
  closeSync(fd);
}

interface QueryRuns {
  /** By concurrency: requests and seconds summed over the rounds, p50 and p99 the median round's. */
  server: Record<number, QueryResult>;
  bare: Record<number, QueryResult>;
  /** By concurrency: server over bare, one per round; the reported ratio is their median. */
  ratios: Record<number, number[]>;
  peakRssMiB: number;
  responseBytes: number;
}

/** Rounds of one side at one concurrency, as one result: rates summed, latencies the median round's. */
function combine(rounds: QueryResult[]): QueryResult {
  const requests = rounds.reduce((a, r) => a + r.requests, 0);
  const seconds = rounds.reduce((a, r) => a + r.seconds, 0);
  return { requests, seconds, requestsPerSecond: requests / seconds, p50Ms: median(rounds.map((r) => r.p50Ms)), p99Ms: median(rounds.map((r) => r.p99Ms)) };
}

/**
 * The server and the bare server in turns, QUERY_ROUNDS rounds of QUERY_SECONDS / QUERY_ROUNDS
 * each per concurrency from one load process (which of the two goes first alternates), so that
 * the machine's speed, which drifts on a shared machine by a quarter from one minute to the next,
 * is the same for both sides of each ratio.
 */
async function measureInTurns(serverUrl: string, bareUrl: string, paths: string[]) {
  const server: Record<number, QueryResult> = {};
  const bare: Record<number, QueryResult> = {};
  const ratios: Record<number, number[]> = {};
  for (const c of QUERY_CONCURRENCIES) {
    const spec: QueryTurnsSpec = { kind: "query-turns", urls: [serverUrl, bareUrl], paths, roundMs: (QUERY_SECONDS * 1000) / QUERY_ROUNDS, rounds: QUERY_ROUNDS, concurrency: c };
    const rounds = await load<QueryTurnsResult>(spec);
    server[c] = combine(rounds.map(([s]) => s));
    bare[c] = combine(rounds.map(([, b]) => b));
    ratios[c] = rounds.map(([s, b]) => s.requestsPerSecond / b.requestsPerSecond);
  }
  return { server, bare, ratios };
}

async function queryRun(): Promise<QueryRuns> {
  const dir = tmp("query");
  try {
    log(`filling a store with ${QUERY_EVENTS.toLocaleString("en")} events...`);
    await fillStore(dir);
    const paths = Array.from({ length: QUERY_NODES }, (_, n) => `/v1/events?node_id=node-${n}&limit=100`);
    const server = await startOrchestrator(dir);
    try {
      const body = Buffer.from(await (await fetch(server.url + paths[0])).arrayBuffer());
      const bodyFile = path.join(dir, "body.json");
      writeFileSync(bodyFile, body);
      const bare = await startPort(BARE, [bodyFile]);
      try {
        const measured = await measureInTurns(server.url, bare.url, paths);
        return { ...measured, peakRssMiB: server.peakRssMiB(), responseBytes: body.length };
      } finally {
        await bare.stop();
      }
    } finally {
      await server.stop();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const fmt = (n: number, digits = 0) => n.toLocaleString("en", { maximumFractionDigits: digits, minimumFractionDigits: digits });

async function main(): Promise<void> {
  log(`ingest: ${REPS} runs of ${BATCHES} batches x ${BATCH_SIZE} events, ${CONCURRENCY} concurrent HTTP/2 streams`);
  const targets = ["ceiling", "nosync", "peer", "rest", "connect", "grpc"] as const;
  const runs: Record<string, number[]> = Object.fromEntries(targets.map((t) => [t, []]));
  let peakRssMiB = 0;
  for (let rep = 0; rep < REPS; rep++) {
    for (const target of targets) {
      if (target === "ceiling" || target === "nosync") {
        runs[target].push(ceiling(target === "ceiling"));
      } else {
        const r = await ingestRun(target);
        runs[target].push(r.eventsPerSecond);
        if (target !== "peer") peakRssMiB = Math.max(peakRssMiB, r.peakRssMiB);
      }
      log(`  run ${rep + 1} ${target.padEnd(8)} ${fmt(runs[target][rep])} events/s`);
    }
  }
  const ingest = Object.fromEntries(targets.map((t) => [t, median(runs[t])])) as Record<(typeof targets)[number], number>;
  const query = await queryRun();
  peakRssMiB = Math.max(peakRssMiB, query.peakRssMiB);

  const rows: [string, string, string, string][] = [
    ["ceiling: better-sqlite3 in one process", fmt(ingest.ceiling), "1.00", "one durable commit per batch"],
    ["  the same without fsync (insert work only)", fmt(ingest.nosync), fmt(ingest.nosync / ingest.ceiling, 2), "not durable: a bound"],
    ["peer: Fastify HTTP/2 + better-sqlite3, JSON", fmt(ingest.peer), fmt(ingest.peer / ingest.ceiling, 2), ""],
    ["orchestrator REST JSON", fmt(ingest.rest), fmt(ingest.rest / ingest.ceiling, 2), `>= 0.75 and >= peer (${fmt(ingest.rest / ingest.peer, 2)}x peer)`],
    ["orchestrator Connect protobuf", fmt(ingest.connect), fmt(ingest.connect / ingest.ceiling, 2), ">= 0.85"],
    ["orchestrator gRPC", fmt(ingest.grpc), fmt(ingest.grpc / ingest.ceiling, 2), "reported"],
  ];
  const w = [46, 12, 8];
  const line = (c: string[]) => c.map((x, i) => (i < 3 ? (i === 0 ? x.padEnd(w[i]) : x.padStart(w[i])) : "  " + x)).join("");
  let out = "\nIngest (median of runs)\n" + line(["", "events/s", "ratio", "target"]) + "\n";
  for (const r of rows) out += line(r) + "\n";
  out += `\nGET /v1/events?node_id=...&limit=100 on ${fmt(QUERY_EVENTS)} events, ${QUERY_SECONDS}s per row in ${QUERY_ROUNDS} rounds taken in turns with the bare server (p99 target < 10 ms)\n`;
  for (const c of QUERY_CONCURRENCIES) {
    const s = query.server[c];
    const b = query.bare[c];
    const r = query.ratios[c];
    out +=
      `  ${c} stream${c > 1 ? "s" : " "}  orchestrator ${fmt(s.requestsPerSecond).padStart(6)} req/s  p50 ${fmt(s.p50Ms, 2)} ms  p99 ${fmt(s.p99Ms, 2)} ms` +
      `   bare node:http2 ${fmt(b.requestsPerSecond).padStart(6)} req/s  p99 ${fmt(b.p99Ms, 2)} ms` +
      `   ratio ${fmt(median(r), 2)} (rounds ${fmt(Math.min(...r), 2)}-${fmt(Math.max(...r), 2)})\n`;
  }
  out += `  (the bare server answers the same ${fmt(query.responseBytes)}-byte body without doing any work)\n`;
  out += `\nServer peak RSS over all runs: ${fmt(peakRssMiB, 1)} MiB (target < 300 MB)\n`;
  process.stdout.write(out);

  const results = {
    date: new Date().toISOString(),
    machine: { cpus: os.cpus().length, model: os.cpus()[0]?.model, node: process.version },
    ingest: {
      batches: BATCHES,
      batchSize: BATCH_SIZE,
      concurrency: CONCURRENCY,
      runs,
      median: ingest,
      ratioToCeiling: { nosync: ingest.nosync / ingest.ceiling, peer: ingest.peer / ingest.ceiling, rest: ingest.rest / ingest.ceiling, connect: ingest.connect / ingest.ceiling, grpc: ingest.grpc / ingest.ceiling },
      restToPeer: ingest.rest / ingest.peer,
    },
    query: {
      events: QUERY_EVENTS,
      nodes: QUERY_NODES,
      ...query,
      ratioToBare: Object.fromEntries(QUERY_CONCURRENCIES.map((c) => [c, median(query.ratios[c])])),
    },
    peakRssMiB,
  };
  const dir = path.join(packageRoot, "bench", "results");
  mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `bench-${results.date.replace(/[:.]/g, "-")}.json`);
  writeFileSync(file, JSON.stringify(results, null, 2) + "\n");
  log(`results written to ${path.relative(process.cwd(), file)}`);
}

await main();
