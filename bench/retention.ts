/**
 * The retention part of `npm run bench` (alone: `npm run bench:retention`): ingest latency
 * while event retention deletes RETENTION_BENCH_EVENTS (default 1,000,000) old events, as a
 * ratio of ingest latency on the same data without retention, both measured in this run.
 *
 *   seed       the old events, written into a SQLite data dir by the store itself
 *   baseline   `serve` without retention; paced ingest (RETENTION_BENCH_SENDERS senders, one
 *              100-event batch each every 25 ms, over Connect/HTTP/2) for BASELINE_SECONDS
 *   during     `serve --event-retention 3s` on the same data dir, once every seeded event is
 *              older than that: the same ingest from its start until retention's audit record
 *              appears (the run is over)
 *
 * Prints a table and writes bench/results/retention-<time>.json.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { create } from "@bufbuild/protobuf";
import { createOrchestratorClients, EventSchema, type Event } from "../clients/index.js";
import { packageRoot } from "../src/paths.js";
import { SqliteStore } from "../src/store/sqlite/store.js";
import { summarize } from "./h2-request.js";
import { startOrchestrator } from "./processes.js";

const EVENTS = Number(process.env.RETENTION_BENCH_EVENTS ?? 1_000_000);
const SENDERS = Number(process.env.RETENTION_BENCH_SENDERS ?? 2);
const BASELINE_SECONDS = Number(process.env.RETENTION_BENCH_BASELINE_SECONDS ?? 15);
const BATCH = 100;
const PERIOD_MS = 25;
const RETENTION_SECONDS = 3;

const log = (line: string) => process.stderr.write(line + "\n");
const fmt = (n: number, digits = 0) => n.toLocaleString("en", { maximumFractionDigits: digits, minimumFractionDigits: digits });

const batchOf = (prefix: string, n: number): Event[] =>
  Array.from({ length: n }, (_, i) =>
    create(EventSchema, {
      eventId: `${prefix}-${i}`,
      eventType: i % 3 ? "heartbeat" : "metric",
      nodeId: `node-${i % 500}`,
      timestamp: { seconds: 1_767_225_600n, nanos: 0 },
      payload: { cpu: i % 100, note: "retention bench" },
    }),
  );

/** Paced ingest until `done()`; the latency of every batch, in milliseconds. */
async function ingest(url: string, tag: string, done: () => boolean): Promise<{ latencies: number[]; seconds: number; failures: number }> {
  const api = createOrchestratorClients({ baseUrl: url });
  const latencies: number[] = [];
  let failures = 0;
  const started = performance.now();
  try {
    await Promise.all(
      Array.from({ length: SENDERS }, async (_, s) => {
        for (let n = 0, next = performance.now(); !done(); n++) {
          const events = batchOf(`${tag}-${s}-${n}`, BATCH);
          const t = performance.now();
          try {
            await api.events.ingestEvents({ events });
            latencies.push(performance.now() - t);
          } catch {
            failures++;
          }
          next += PERIOD_MS;
          const wait = next - performance.now();
          if (wait > 0) await sleep(wait);
          else next = performance.now();
        }
      }),
    );
  } finally {
    api.close();
  }
  return { latencies, seconds: (performance.now() - started) / 1000, failures };
}

async function retentionRecord(url: string): Promise<Record<string, unknown> | undefined> {
  const res = await fetch(`${url}/v1/audit/records?event_name=events.retention.deleted&limit=1`);
  const body = (await res.json()) as { records?: { fields_json?: string }[] };
  const r = body.records?.[0];
  return r?.fields_json ? (JSON.parse(r.fields_json) as Record<string, unknown>) : undefined;
}

async function main() {
  const dir = mkdtempSync(path.join(os.tmpdir(), "ao-bench-retention-"));
  try {
    log(`retention: seeding ${fmt(EVENTS)} events`);
    const seedStarted = performance.now();
    const store = await SqliteStore.open({ dataDir: dir, busyTimeoutMs: 5000, onFatal: (err) => { throw err; } });
    for (let i = 0; i < EVENTS; i += 5000) await store.ingestEvents(batchOf(`old-${i}`, Math.min(5000, EVENTS - i)));
    await store.close();
    const seedSeconds = (performance.now() - seedStarted) / 1000;

    log(`retention: baseline ingest for ${BASELINE_SECONDS}s without retention`);
    let server = await startOrchestrator(dir);
    const baselineEnd = performance.now() + BASELINE_SECONDS * 1000;
    const baseline = await ingest(server.url, "base", () => performance.now() > baselineEnd);
    await server.stop();
    // Every event stored so far becomes older than the retention.
    await sleep(RETENTION_SECONDS * 1000 + 500);

    log(`retention: ingest while --event-retention ${RETENTION_SECONDS}s deletes them`);
    server = await startOrchestrator(dir, ["--event-retention", `${RETENTION_SECONDS}s`]);
    const runStarted = performance.now();
    let record: Record<string, unknown> | undefined;
    let runSeconds = 0;
    const watcher = (async () => {
      while (!record) {
        await sleep(250);
        record = await retentionRecord(server.url).catch(() => undefined);
      }
      runSeconds = (performance.now() - runStarted) / 1000;
    })();
    const during = await ingest(server.url, "during", () => record !== undefined);
    await watcher;
    await server.stop();

    const b = summarize(baseline.latencies, baseline.seconds);
    const d = summarize(during.latencies, during.seconds);
    const deleted = Number(record!.deleted);
    const results = {
      events: EVENTS,
      senders: SENDERS,
      batch: BATCH,
      period_ms: PERIOD_MS,
      seed_seconds: seedSeconds,
      baseline: { ...b, failures: baseline.failures },
      during: { ...d, failures: during.failures },
      p99_ratio: d.p99Ms / b.p99Ms,
      p50_ratio: d.p50Ms / b.p50Ms,
      retention: { deleted, seconds: runSeconds, deleted_per_second: deleted / runSeconds, batches: record!.batches, max_batch_ms: record!.max_batch_ms },
    };
    let out = "\nretention (SQLite)\n";
    out += `  seed ${fmt(EVENTS)} events: ${fmt(seedSeconds, 1)} s\n`;
    out += `  ingest without retention  p50 ${fmt(b.p50Ms, 2)} ms  p99 ${fmt(b.p99Ms, 2)} ms  (${fmt(b.requests)} batches of ${BATCH}, ${baseline.failures} failed)\n`;
    out += `  ingest during retention   p50 ${fmt(d.p50Ms, 2)} ms  p99 ${fmt(d.p99Ms, 2)} ms  (${fmt(d.requests)} batches, ${during.failures} failed)\n`;
    out += `  p99 ratio ${fmt(results.p99_ratio, 2)}  p50 ratio ${fmt(results.p50_ratio, 2)}\n`;
    out += `  retention deleted ${fmt(deleted)} events in ${fmt(runSeconds, 1)} s (${fmt(deleted / runSeconds)}/s), ${fmt(Number(record!.batches))} batches, longest batch ${fmt(Number(record!.max_batch_ms), 1)} ms (bound 50 ms)\n`;
    process.stdout.write(out);
    const resultsDir = path.join(packageRoot, "bench", "results");
    mkdirSync(resultsDir, { recursive: true });
    writeFileSync(path.join(resultsDir, `retention-${new Date().toISOString().replace(/[:.]/g, "-")}.json`), JSON.stringify(results, null, 2) + "\n");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
