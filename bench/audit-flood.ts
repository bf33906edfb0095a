/**
 * Ingest while a flood of unauthenticated calls hits the same server: events/s of a token-holding
 * ingester alone, then with a worker thread sending GET /v1/fleet without credentials (each with a
 * 60,000-byte autonomy-operator header) as fast as it can, as a ratio of the first in the same run.
 * Also: how many audit records the flood wrote.
 *
 *   npm run build && node dist/bench/audit-flood.js [seconds per phase, default 5] [claim bytes, default 60000]
 *
 * FLOOD_PATH=/v1/health floods a public path instead, for comparison.
 */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import http2 from "node:http2";
import os from "node:os";
import path from "node:path";
import { Worker, isMainThread, parentPort, workerData } from "node:worker_threads";
import { fileURLToPath } from "node:url";
import { createLogger } from "../src/observability/logger.js";
import { BOOTSTRAP_TOKEN_FILE, startServer } from "../src/server.js";
import { request } from "./h2-request.js";

const BATCH = 500;
/** What the flood calls: /v1/fleet (refused without credentials), or another path to compare with. */
const floodPath = process.env.FLOOD_PATH ?? "/v1/fleet";

async function flood(url: string, claim: string): Promise<void> {
  const session = http2.connect(url);
  let stop = false;
  parentPort!.once("message", () => (stop = true));
  let sent = 0;
  await request(session, { ":method": "GET", ":path": "/v1/fleet", "autonomy-operator": `first-${claim}` });
  parentPort!.postMessage("ready");
  const one = async () => {
    while (!stop) {
      await request(session, { ":method": "GET", ":path": floodPath, "autonomy-operator": `${sent++}-${claim}` });
    }
  };
  await Promise.all(Array.from({ length: 16 }, one));
  session.close();
  parentPort!.postMessage(sent);
}

async function ingest(url: string, token: string, seconds: number, prefix: string): Promise<number> {
  const session = http2.connect(url);
  const end = Date.now() + seconds * 1000;
  let events = 0;
  let k = 0;
  const one = async () => {
    while (Date.now() < end) {
      const batch = Array.from({ length: BATCH }, (_, i) => ({ event_id: `${prefix}-${k}-${i}`, event_type: "t", node_id: "n", timestamp: "2026-01-01T00:00:00Z" }));
      k++;
      const res = await request(
        session,
        { ":method": "POST", ":path": "/v1/events", "content-type": "application/json", authorization: `Bearer ${token}` },
        Buffer.from(JSON.stringify({ events: batch })),
      );
      if (res.status !== 200) throw new Error(`ingest answered ${res.status}`);
      events += BATCH;
    }
  };
  await Promise.all(Array.from({ length: 4 }, one));
  session.close();
  return events / seconds;
}

async function main(): Promise<void> {
  const seconds = Number(process.argv[2] ?? 5);
  const claimBytes = Number(process.argv[3] ?? 60_000);
  const dataDir = mkdtempSync(path.join(os.tmpdir(), "ao-bench-flood-"));
  const server = await startServer(
    { listen: "127.0.0.1:0", dataDir, busyTimeoutMs: 5000, rbacEnforcement: true },
    { logger: createLogger({ format: "json", level: "error" }), onFatal: (err) => console.error(err) },
  );
  try {
    const token = readFileSync(path.join(dataDir, BOOTSTRAP_TOKEN_FILE), "utf8").trim();
    await ingest(server.url, token, 1, "warm");
    const alone = await ingest(server.url, token, seconds, "alone");
    const before = (await server.store.auditRecords({ eventName: "auth.denied", limit: 1000 })).length;
    const worker = new Worker(fileURLToPath(import.meta.url), { workerData: { url: server.url, claim: "x".repeat(claimBytes) } });
    await new Promise((resolve) => worker.once("message", resolve));
    const flooded = await ingest(server.url, token, seconds, "flooded");
    worker.postMessage("stop");
    const sent = await new Promise<number>((resolve) => worker.once("message", resolve));
    await worker.terminate();
    const records = (await server.store.auditRecords({ eventName: "auth.denied", limit: 1000 })).length - before;
    console.log(
      JSON.stringify({
        seconds,
        claimBytes,
        ingestAloneEventsPerSecond: Math.round(alone),
        ingestDuringFloodEventsPerSecond: Math.round(flooded),
        ratio: Math.round((flooded / alone) * 1000) / 1000,
        ceiling: 0.9,
        floodRequests: sent,
        floodRequestsPerSecond: Math.round(sent / seconds),
        auditRecordsWrittenByFlood: records,
      }),
    );
  } finally {
    await server.close();
    rmSync(dataDir, { recursive: true, force: true });
  }
}

if (isMainThread) await main();
else await flood((workerData as { url: string }).url, (workerData as { claim: string }).claim);
