/**
 * The HA part of `npm run bench`, on a private PostgreSQL (Debian's binaries) with three
 * `serve --postgres-url` replicas as real processes, default lease (10 s) and renewal (2 s),
 * under a steady load of heartbeats, acks, events and back-to-back rollouts (bench/ha-cluster.ts):
 *
 *   failover        kill -9 of the leader → a follower answers write-ready and says it leads,
 *                   and → the rollout moves again (a status change); median and max over
 *                   BENCH_HA_KILLS (20) kills; against the lease, the bound the election promises
 *   resign          POST /v1/ha/resign (alternately on a follower and on the leader) → another
 *                   replica leads, write-ready;
 *                   median and max over BENCH_HA_RESIGNS (10), counted from the POST, as seen
 *                   by polling and as the next epoch's acquired_at says; against the target of
 *                   one second
 *   ingest          events/s POSTed (batches of 100, 8 at a time) spread over three replicas, as a
 *                   ratio of one replica and of a raw multi-row pg INSERT of the same rows into the
 *                   same table, measured in the same run
 *
 * BENCH_HA_SCENARIOS (default "failover,resign,ingest") runs only those named.
 * Prints a table and writes bench/results/ha-<time>.json.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import pg from "pg";
import { packageRoot } from "../src/paths.js";
import { checkHistory, get, HaCluster, Load, post } from "./ha-cluster.js";
import { PgCluster } from "./ha-pg.js";

const KILLS = Number(process.env.BENCH_HA_KILLS ?? 20);
const RESIGNS = Number(process.env.BENCH_HA_RESIGNS ?? 10);
const INGEST_SECONDS = Number(process.env.BENCH_HA_INGEST_SECONDS ?? 5);
const SCENARIOS = new Set((process.env.BENCH_HA_SCENARIOS ?? "failover,resign,ingest").split(",").map((s) => s.trim()));
for (const s of SCENARIOS) if (!["failover", "resign", "ingest"].includes(s)) throw new Error(`BENCH_HA_SCENARIOS: unknown scenario ${s} (failover, resign, ingest)`);
const BATCH = 100;
const CONCURRENCY = 8;

const log = (line: string) => process.stdout.write(line + "\n");
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

let nextId = 0;
const batch = (tag: string) =>
  Array.from({ length: BATCH }, () => {
    const n = nextId++;
    return { event_id: `${tag}-${n}`, event_type: "bench.ingest", node_id: `ingest-${n % 64}`, timestamp: new Date().toISOString() };
  });

/** Events/s POSTed to the given replicas, round robin, CONCURRENCY batches in flight. */
async function ingest(urls: string[], tag: string): Promise<number> {
  let sent = 0;
  let k = 0;
  const end = performance.now() + INGEST_SECONDS * 1000;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (performance.now() < end) {
        const r = await post(urls[k++ % urls.length], "/v1/events", { events: batch(tag) }, 30_000);
        if (r.status !== 200) throw new Error(`ingest: ${r.status} ${JSON.stringify(r.body)}`);
        sent += BATCH;
      }
    }),
  );
  return sent / ((performance.now() - started) / 1000);
}

/** The ceiling: the same rows by multi-row INSERT ... ON CONFLICT DO NOTHING, CONCURRENCY connections. */
async function rawInsert(url: string): Promise<number> {
  const pool = new pg.Pool({ connectionString: url, max: CONCURRENCY });
  let sent = 0;
  const end = performance.now() + INGEST_SECONDS * 1000;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (performance.now() < end) {
        const rows = batch("raw");
        const values: unknown[] = [];
        const tuples = rows.map((e, i) => {
          values.push(e.event_id, e.event_type, e.node_id, Math.floor(Date.now() / 1000), 0, Date.now());
          const b = i * 6;
          return `($${b + 1}, $${b + 2}, $${b + 3}, $${b + 4}, $${b + 5}, $${b + 6})`;
        });
        await pool.query(`INSERT INTO events (event_id, event_type, node_id, ts_seconds, ts_nanos, received_at_ms) VALUES ${tuples.join(", ")} ON CONFLICT DO NOTHING`, values);
        sent += BATCH;
      }
    }),
  );
  await pool.end();
  return sent / ((performance.now() - started) / 1000);
}

async function main(): Promise<void> {
  const work = mkdtempSync(path.join(os.tmpdir(), "ha-bench-"));
  const pgc = await PgCluster.create();
  await pgc.query("CREATE DATABASE ha_bench");
  const dbUrl = `postgres://postgres@127.0.0.1:${pgc.port}/ha_bench`;
  const cluster = await HaCluster.start({ pg: pgc, dbUrl, dataRoot: work, args: ["--node-stale-after", "60s", "--heartbeat-flush-interval", "1s"] });
  const load = new Load(cluster, { nodes: 12, eventIntervalMs: 100 });
  try {
    let { epoch } = await cluster.waitLeader({ timeoutMs: 30_000 });
    await load.start();
    await load.movedSince(Date.now() - 1, 60_000);

    const toLeader: number[] = [];
    const toMove: number[] = [];
    for (let k = 0; SCENARIOS.has("failover") && k < KILLS; k++) {
      const { replica } = (await cluster.leader())!;
      const killed = Date.now();
      const t0 = performance.now();
      await cluster.kill9(replica);
      const next = await cluster.waitLeader({ after: epoch, not: replica, timeoutMs: 60_000 });
      toLeader.push(performance.now() - t0);
      epoch = next.epoch;
      const moved = await load.movedSince(killed, 60_000);
      toMove.push(Math.max(moved - killed, toLeader.at(-1)!));
      await cluster.restart(replica);
      log(`kill ${k + 1}/${KILLS}: leader after ${(toLeader.at(-1)! / 1000).toFixed(2)}s, rollout moved after ${(toMove.at(-1)! / 1000).toFixed(2)}s`);
      await sleep(500);
    }

    const resigns: number[] = [];
    const handovers: number[] = [];
    const committed: number[] = [];
    const healthRtt: number[] = [];
    for (let k = 0; SCENARIOS.has("resign") && k < RESIGNS; k++) {
      const { replica } = (await cluster.leader())!;
      // Alternately asked of a follower and of the leader itself (which stops its controller first).
      const asked = k % 2 === 0 ? cluster.live().find((r) => r !== replica)! : replica;
      const h0 = performance.now();
      await get(asked.url, "/v1/health");
      healthRtt.push(performance.now() - h0);
      const wall0 = Date.now();
      const t0 = performance.now();
      const r = await post(asked.url, "/v1/ha/resign", { reason: "bench" }, 15_000);
      if (r.status !== 200) throw new Error(`resign: ${r.status} ${JSON.stringify(r.body)}`);
      const answered = performance.now() - t0;
      epoch = (await cluster.waitLeader({ after: epoch, not: replica, timeoutMs: 30_000 })).epoch;
      resigns.push(performance.now() - t0);
      handovers.push(resigns.at(-1)! - answered);
      // When the next epoch began by the database's clock (the same machine's): the handover itself,
      // without the time the polling above takes to see it on a loaded machine.
      const { rows } = await cluster.query<{ acquired_at: Date }>("SELECT acquired_at FROM leader_epochs WHERE epoch = $1", [epoch]);
      committed.push(rows[0].acquired_at.getTime() - wall0);
      log(`resign ${k + 1}/${RESIGNS} (asked of ${asked === replica ? "the leader" : "a follower"}): answered after ${answered.toFixed(0)} ms, another replica led after ${resigns.at(-1)!.toFixed(0)} ms (its epoch began after ${committed.at(-1)} ms)`);
      await sleep(4_500); // past the resigned leader's hold-off
    }

    await load.stop();
    const report = await checkHistory(cluster, load.answered);
    if (report.problems.length > 0) throw new Error(`the history does not check out: ${report.problems.join("; ")}`);

    const urls = cluster.live().map((r) => r.url);
    const runIngest = SCENARIOS.has("ingest");
    const one = runIngest ? await ingest(urls.slice(0, 1), "one") : NaN;
    const three = runIngest ? await ingest(urls, "three") : NaN;
    const raw = runIngest ? await rawInsert(dbUrl) : NaN;

    const failoverRows: [string, string, string, string][] = [
      ["failover: kill -9 → follower write-ready, median", `${(median(toLeader) / 1000).toFixed(2)} s`, `lease ${cluster.leaseMs / 1000} s`, (median(toLeader) / cluster.leaseMs).toFixed(2)],
      ["failover: kill -9 → follower write-ready, max", `${(Math.max(...toLeader) / 1000).toFixed(2)} s`, `lease ${cluster.leaseMs / 1000} s`, (Math.max(...toLeader) / cluster.leaseMs).toFixed(2)],
      ["failover: kill -9 → rollout moves again, median", `${(median(toMove) / 1000).toFixed(2)} s`, `lease ${cluster.leaseMs / 1000} s`, (median(toMove) / cluster.leaseMs).toFixed(2)],
      ["failover: kill -9 → rollout moves again, max", `${(Math.max(...toMove) / 1000).toFixed(2)} s`, `lease ${cluster.leaseMs / 1000} s`, (Math.max(...toMove) / cluster.leaseMs).toFixed(2)],
    ];
    const resignRows: [string, string, string, string][] = [
      ["resign: POST → another replica leads, median", `${median(resigns).toFixed(0)} ms`, "target 1000 ms", (median(resigns) / 1000).toFixed(2)],
      ["resign: POST → another replica leads, max", `${Math.max(...resigns).toFixed(0)} ms`, "target 1000 ms", (Math.max(...resigns) / 1000).toFixed(2)],
      ["resign: POST → next epoch begins (database), median", `${median(committed).toFixed(0)} ms`, "target 1000 ms", (median(committed) / 1000).toFixed(2)],
      ["resign: POST → next epoch begins (database), max", `${Math.max(...committed).toFixed(0)} ms`, "target 1000 ms", (Math.max(...committed) / 1000).toFixed(2)],
      ["resign: answered → another replica leads, median", `${median(handovers).toFixed(0)} ms`, "target 1000 ms", (median(handovers) / 1000).toFixed(2)],
      ["  (GET /v1/health round trip, same replica)", `${median(healthRtt).toFixed(0)} ms`, "", ""],
      ["resign: POST → another replica leads, median", `${median(resigns).toFixed(0)} ms`, `GET /v1/health ${median(healthRtt).toFixed(0)} ms`, (median(resigns) / median(healthRtt)).toFixed(1)],
    ];
    const ingestRows: [string, string, string, string][] = [
      ["ingest over 3 replicas", `${Math.round(three)} events/s`, `1 replica ${Math.round(one)}/s`, (three / one).toFixed(2)],
      ["ingest over 3 replicas", `${Math.round(three)} events/s`, `raw pg INSERT ${Math.round(raw)}/s`, (three / raw).toFixed(2)],
    ];
    const rows = [...(SCENARIOS.has("failover") ? failoverRows : []), ...(SCENARIOS.has("resign") ? resignRows : []), ...(runIngest ? ingestRows : [])];
    log("");
    log(`HA on PostgreSQL: 3 replicas, ${toLeader.length} kills, ${resigns.length} resigns, ${report.epochs} epochs, ${report.plans} rollouts, checker clean`);
    const w = [52, 18, 24, 7];
    log(["figure", "value", "against", "ratio"].map((h, i) => h.padEnd(w[i])).join(" "));
    for (const r of rows) log(r.map((c, i) => c.padEnd(w[i])).join(" "));
    const date = new Date().toISOString();
    const resultsDir = path.join(packageRoot, "bench", "results");
    mkdirSync(resultsDir, { recursive: true });
    const file = path.join(resultsDir, `ha-${date.replace(/[:.]/g, "-")}.json`);
    writeFileSync(file, JSON.stringify({ date, scenarios: [...SCENARIOS], kills: toLeader.length, failoverMs: toLeader, rolloutMovedMs: toMove, resignMs: resigns, epochBeganMs: committed, handoverMs: handovers, healthRttMs: healthRtt, ingest: { one, three, raw }, check: report }, null, 2));
    log(`results written to ${path.relative(process.cwd(), file)}`);
  } finally {
    await load.stop().catch(() => undefined);
    await cluster.close();
    await pgc.destroy();
    rmSync(work, { recursive: true, force: true });
  }
}

await main();
