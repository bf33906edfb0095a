/**
 * The spool part of `npm run bench` (alone: `npm run bench:spool`), each figure next to a
 * ceiling measured in the same run:
 *
 *   append    events/s of Spool.append (what `events send` and the library call do), 100 events
 *             and one fdatasync per call, against a raw loop that appends the same bytes to a
 *             file and fdatasyncs it per call; and, as the storage not chosen, the same rows
 *             inserted into SQLite (WAL, synchronous=FULL), a transaction per call
 *   drain     events/s of `edgectl spool flush` shipping a backlog (throttle off), against the
 *             server's ingest rate for the same 500-event batches sent one at a time from here
 *   RSS       peak resident memory of `edgectl run` while it ships a large backlog
 *             (SPOOL_BENCH_BACKLOG_MIB, default 1024), and of an idle one
 *
 * Prints a table and writes bench/results/spool-<time>.json.
 */
import { closeSync, fdatasyncSync, mkdirSync, mkdtempSync, openSync, rmSync, writeFileSync, writeSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import Database from "better-sqlite3";
import { createOrchestratorClients } from "../clients/index.js";
import { decodeSpooled } from "../src/agent/spool/events.js";
import { encodeFrame } from "../src/agent/spool/frame.js";
import { Spool, spoolDir } from "../src/agent/spool/spool.js";
import { packageRoot } from "../src/paths.js";
import { spawnUntil, startOrchestrator } from "./processes.js";

const EDGECTL = path.join(packageRoot, "dist", "src", "cli", "edgectl", "main.js");
const APPEND_CALLS = Number(process.env.SPOOL_BENCH_APPEND_CALLS ?? 300);
const DRAIN_EVENTS = Number(process.env.SPOOL_BENCH_DRAIN_EVENTS ?? 50_000);
const BACKLOG_MIB = Number(process.env.SPOOL_BENCH_BACKLOG_MIB ?? 1024);
const RSS_SECONDS = 20;

const log = (line: string) => process.stderr.write(line + "\n");
const fmt = (n: number, digits = 0) => n.toLocaleString("en", { maximumFractionDigits: digits, minimumFractionDigits: digits });

/** An event as `events send` spools it (proto JSON), about `size` bytes. */
function payload(node: string, i: number, size = 300): Buffer {
  const base = { event_id: `${node}-${i}`, event_type: "bench", node_id: node, timestamp: "2026-01-01T00:00:00Z", payload: { pad: "" } };
  base.payload.pad = "x".repeat(Math.max(0, size - JSON.stringify(base).length));
  return Buffer.from(JSON.stringify(base));
}

async function append(dir: string) {
  const calls = Array.from({ length: APPEND_CALLS }, (_, c) => Array.from({ length: 100 }, (_, i) => payload("append", c * 100 + i)));
  // Ceiling: the same frames, appended and fdatasynced per call, nothing else. The two loops are
  // interleaved call by call, so both meet the same disk (its fsync time moves a lot on a shared machine).
  const fd = openSync(path.join(dir, "raw.log"), "a");
  let seq = 1;
  const frames = calls.map((call) => Buffer.concat(call.map((p) => encodeFrame(seq++, Date.now(), p))));
  const spool = new Spool({ dir: path.join(dir, "append-spool") });
  // The alternative storage: SQLite in WAL mode, durable commits, one transaction of 100 rows per call.
  const db = new Database(path.join(dir, "spool.db"));
  db.pragma("journal_mode = WAL");
  db.pragma("synchronous = FULL");
  db.exec("CREATE TABLE spool (seq INTEGER PRIMARY KEY, spooled_at INTEGER NOT NULL, payload BLOB NOT NULL)");
  const insert = db.prepare("INSERT INTO spool (spooled_at, payload) VALUES (?, ?)");
  const insertAll = db.transaction((rows: Buffer[]) => {
    for (const r of rows) insert.run(Date.now(), r);
  });
  let rawNs = 0n;
  let spoolNs = 0n;
  let sqliteNs = 0n;
  for (let c = 0; c < APPEND_CALLS; c++) {
    let t = process.hrtime.bigint();
    writeSync(fd, frames[c]);
    fdatasyncSync(fd);
    rawNs += process.hrtime.bigint() - t;
    t = process.hrtime.bigint();
    await spool.append(calls[c]);
    spoolNs += process.hrtime.bigint() - t;
    t = process.hrtime.bigint();
    insertAll(calls[c]);
    sqliteNs += process.hrtime.bigint() - t;
  }
  closeSync(fd);
  db.close();
  const events = APPEND_CALLS * 100;
  const perSecond = (ns: bigint) => events / (Number(ns) / 1e9);
  return { calls: APPEND_CALLS, eventsPerCall: 100, rawEventsPerSecond: perSecond(rawNs), spoolEventsPerSecond: perSecond(spoolNs), sqliteEventsPerSecond: perSecond(sqliteNs) };
}

async function drain(dir: string) {
  const batches = Math.ceil(DRAIN_EVENTS / 500);
  const server = await startOrchestrator(path.join(dir, "drain-server"));
  const api = createOrchestratorClients({ baseUrl: server.url });
  try {
    // Ceiling: the server's ingest of the same 500-event batches, one in flight, from an in-memory list.
    const direct = Array.from({ length: batches }, (_, b) => Array.from({ length: 500 }, (_, i) => decodeSpooled(payload("direct", b * 500 + i))));
    let t = process.hrtime.bigint();
    for (const events of direct) await api.events.ingestEvents({ events });
    const directSeconds = Number(process.hrtime.bigint() - t) / 1e9;
    // The agent: the same batches spooled, then shipped by `edgectl spool flush`.
    const stateDir = path.join(dir, "drain-agent");
    const spool = new Spool({ dir: spoolDir(stateDir) });
    for (let b = 0; b < batches; b++) await spool.append(Array.from({ length: 500 }, (_, i) => payload("agent", b * 500 + i)));
    t = process.hrtime.bigint();
    const flush = await spawnUntil(EDGECTL, ["--state-dir", stateDir, "--orchestrator-url", server.url, "spool", "flush", "--timeout", "10m"], (l) => (/flushed/.test(l) ? l : undefined));
    const agentSeconds = Number(process.hrtime.bigint() - t) / 1e9;
    await flush.stop();
    const stored = await api.events.queryEvents({ nodeId: "agent", limit: 1 });
    if (stored.events[0]?.eventId !== `agent-${batches * 500 - 1}`) throw new Error("the drain did not store the last event");
    return { events: batches * 500, serverEventsPerSecond: (batches * 500) / directSeconds, agentEventsPerSecond: (batches * 500) / agentSeconds };
  } finally {
    api.close();
    await server.stop();
  }
}

async function rss(dir: string) {
  const stateDir = path.join(dir, "rss-agent");
  const spool = new Spool({ dir: spoolDir(stateDir), maxBytes: 2 * BACKLOG_MIB * 1024 * 1024 });
  const perCall = 1000;
  const size = 1000;
  const calls = Math.ceil((BACKLOG_MIB * 1024 * 1024) / ((size + 32) * perCall));
  for (let c = 0; c < calls; c++) await spool.append(Array.from({ length: perCall }, (_, i) => payload("rss", c * perCall + i, size)));
  const backlog = await spool.status();
  log(`  backlog: ${fmt(backlog.unsent_frames)} events, ${fmt(backlog.unsent_bytes / 1024 / 1024)} MiB`);
  const server = await startOrchestrator(path.join(dir, "rss-server"));
  try {
    const run = (state: string) =>
      // Run as users run it, through its #! line and the heap bounds it sets.
      spawnUntil(EDGECTL, ["--state-dir", state, "--orchestrator-url", server.url, "run", "--node-id", "rss", "--channel", "bench"], (l) => (/spool: shipping/.test(l) ? l : undefined), true);
    const agent = await run(stateDir);
    await sleep(RSS_SECONDS * 1000);
    const busy = agent.peakRssMiB();
    await agent.stop();
    const shipped = backlog.unsent_frames - (await spool.status()).unsent_frames;
    const idleDir = path.join(dir, "rss-idle");
    const idle = await run(idleDir);
    await sleep(5000);
    const idleRss = idle.peakRssMiB();
    await idle.stop();
    return { backlogMiB: backlog.unsent_bytes / 1024 / 1024, backlogEvents: backlog.unsent_frames, seconds: RSS_SECONDS, shippedEvents: shipped, peakRssMiB: busy, idlePeakRssMiB: idleRss };
  } finally {
    await server.stop();
  }
}

async function main(): Promise<void> {
  const dir = mkdtempSync(path.join(os.tmpdir(), "ao-bench-spool-"));
  try {
    log(`spool: append ${APPEND_CALLS} calls of 100 events; drain ${fmt(DRAIN_EVENTS)} events; RSS with a ${BACKLOG_MIB} MiB backlog`);
    const a = await append(dir);
    log(`  append: spool ${fmt(a.spoolEventsPerSecond)} events/s, raw ${fmt(a.rawEventsPerSecond)} events/s, SQLite WAL ${fmt(a.sqliteEventsPerSecond)} events/s`);
    const d = await drain(dir);
    log(`  drain: agent ${fmt(d.agentEventsPerSecond)} events/s, server ${fmt(d.serverEventsPerSecond)} events/s`);
    const r = await rss(dir);
    let out = "\nSpool: each figure against a ceiling measured in the same run\n";
    out += `  append, 100 events + fdatasync per call   spool ${fmt(a.spoolEventsPerSecond)} events/s   raw append+fdatasync ${fmt(a.rawEventsPerSecond)} events/s   ratio ${fmt(a.spoolEventsPerSecond / a.rawEventsPerSecond, 2)}\n`;
    out += `  the same appends into SQLite (WAL, synchronous=FULL, one transaction per call)   ${fmt(a.sqliteEventsPerSecond)} events/s   ratio ${fmt(a.sqliteEventsPerSecond / a.rawEventsPerSecond, 2)}\n`;
    out += `  drain, 500-event batches, throttle off    agent ${fmt(d.agentEventsPerSecond)} events/s   server ingest ${fmt(d.serverEventsPerSecond)} events/s   ratio ${fmt(d.agentEventsPerSecond / d.serverEventsPerSecond, 2)}\n`;
    out += `  edgectl run peak RSS, ${fmt(r.backlogMiB)} MiB backlog   ${fmt(r.peakRssMiB, 1)} MiB while shipping ${fmt(r.shippedEvents)} events in ${r.seconds}s   idle agent ${fmt(r.idlePeakRssMiB, 1)} MiB\n`;
    process.stdout.write(out);
    const resultsDir = path.join(packageRoot, "bench", "results");
    mkdirSync(resultsDir, { recursive: true });
    const date = new Date().toISOString();
    const file = path.join(resultsDir, `spool-${date.replace(/[:.]/g, "-")}.json`);
    writeFileSync(file, JSON.stringify({ date, machine: { cpus: os.cpus().length, node: process.version }, append: a, drain: d, rss: r }, null, 2) + "\n");
    log(`results written to ${path.relative(process.cwd(), file)}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
