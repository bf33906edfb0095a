/**
 * The rollout part of `npm run bench`: a simulated fleet of BENCH_ROLLOUT_NODES (100,000)
 * nodes, written straight into the database as enrolled and HEALTHY, acks sent over the
 * REST path by a load process. No edge processes. Each figure has a ceiling from the same run:
 *
 *   five-stage progression   time from publishing the plan to completed, and the database work
 *                            it took; against better-sqlite3 doing the same writes (the acks,
 *                            each with its node's last-seen time and reported release, one
 *                            durable commit each, and the node moves), and against the acks and
 *                            moves without the node updates (the ceiling before). The server runs in
 *                            this process (logging every request, as a served one does) so that
 *                            perf_hooks.monitorEventLoopDelay sees its event loop: the worst delay
 *                            during the run is reported (stage openings must not stall requests)
 *   single ack after it      p50 of sequential acks once the plan completed and the sightings its
 *                            last stage's acks left buffered were written (the server idle again)
 *   re-evaluation per ack    the controller's cost of one ack (count update and gate
 *                            evaluation) at 10,000 and at 100,000 nodes; against re-counting
 *                            the stage from the database as a scanning controller would
 *   ack to visible halt      from sending the ack that crosses max_failure_ratio to GET
 *                            .../status showing the plan halted; against two round trips to a
 *                            bare node:http2 server
 *
 * Prints a table and writes bench/results/rollout-<time>.json.
 */
import { spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import http2 from "node:http2";
import os from "node:os";
import path from "node:path";
import { monitorEventLoopDelay } from "node:perf_hooks";
import pino from "pino";
import { create } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import Database from "better-sqlite3";
import { drizzle } from "drizzle-orm/better-sqlite3";
import { NodeAckSchema } from "../gen/autonomy/v1/releases_pb.js";
import { createLogger } from "../src/observability/logger.js";
import { packageRoot } from "../src/paths.js";
import { startServer as startInProcess } from "../src/server.js";
import { prepareSightingUpdate } from "../src/store/sqlite/fleet-writes.js";
import { DB_FILE_NAME } from "../src/store/sqlite/store.js";
import type { FleetLoadResult, FleetLoadSpec } from "./fleet-load.js";
import { nodeName } from "./fleet-load.js";
import { metric, request } from "./h2-request.js";
import { ackLoadTool, type AckLoad } from "./h2load.js";
import { runToEnd, startOrchestrator, startPort } from "./processes.js";
import { applySchema, durablePragmas } from "./sqlite-schema.js";

const NODES = Number(process.env.BENCH_ROLLOUT_NODES ?? 100_000);
const SMALL = Math.min(10_000, NODES);
const DIGEST = `sha256:${"ad".repeat(32)}`;
const STAGES = [1, 5, 20, 50, 100];
const EVAL_ACKS = 3000;
const HALT_TRIALS = 5;
/** Stage nodes whose acks are measured (alternating states), the same number at every fleet size. */
const EVAL_NODES = 500;
/** Acks handed to the controller before the measured ones, so the JIT has settled. */
const WARMUP = 300;

const dist = path.join(packageRoot, "dist");
const FLEET_LOAD = path.join(dist, "bench", "fleet-load.js");
const BARE = path.join(dist, "bench", "bare-h2.js");

const log = (line: string) => process.stderr.write(line + "\n");
const fmt = (n: number, digits = 0) => n.toLocaleString("en", { maximumFractionDigits: digits, minimumFractionDigits: digits });
const fleetLoad = async (spec: FleetLoadSpec) => JSON.parse(await runToEnd(FLEET_LOAD, [JSON.stringify(spec)])) as FleetLoadResult;
const nowNs = () => process.hrtime.bigint();
const msSince = (t0: bigint) => Number(process.hrtime.bigint() - t0) / 1e6;

/** Enrolled, HEALTHY nodes of channel "bench", written straight into a server's database. */
function fillNodes(dataDir: string, count: number): void {
  const db = new Database(path.join(dataDir, DB_FILE_NAME));
  db.pragma("journal_mode = WAL");
  const insert = db.prepare(
    "INSERT INTO nodes (node_id, channel, labels, agent_version, enrolled_at_ms, last_seen_ms, reported_release_id, drained, drain_reason) " +
      "VALUES (?, 'bench', '{}', 'bench', ?, ?, 'bench-r0', 0, '')",
  );
  const now = Date.now();
  db.transaction(() => {
    for (let n = 0; n < count; n++) insert.run(nodeName(n), now, now);
  })();
  db.pragma("wal_checkpoint(TRUNCATE)");
  db.close();
}

/** A data dir with the server's schema (one start applies the migrations) and `count` nodes. */
async function prepareDataDir(dir: string, name: string, count: number): Promise<string> {
  const dataDir = path.join(dir, name);
  const first = await startOrchestrator(dataDir);
  await first.stop();
  fillNodes(dataDir, count);
  return dataDir;
}

const plan = (planId: string, releaseId: string, stages: { percent: number; gates: unknown[] }[]) => ({
  plan_id: planId,
  release_id: releaseId,
  stages: stages.map((s, i) => ({ stage_id: `s${i + 1}`, percent: s.percent, gates: s.gates })),
});

async function post(url: string, p: string, body: unknown): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await fetch(url + p, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  return { status: res.status, json: (await res.json()) as Record<string, unknown> };
}

interface StatusJson {
  phase: string;
  current_stage_id: string;
  version: number;
  reason: string;
  stages: { stage_id: string; phase: string; node_count: number }[];
}

const statusOf = async (url: string, planId: string) =>
  ((await (await fetch(`${url}/v1/rollouts/${planId}/status`)).json()) as { status: StatusJson }).status;

async function waitFor(url: string, planId: string, ok: (s: StatusJson) => boolean): Promise<StatusJson> {
  for (;;) {
    const s = await statusOf(url, planId);
    if (ok(s)) return s;
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** Store operations by name between two /metrics scrapes. */
function storeOps(before: string, after: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of after.split("\n")) {
    const m = /^cp_store_operation_duration_seconds_count\{operation="([a-z_]+)",outcome="ok"\} (\d+)/.exec(line);
    if (!m) continue;
    const n = Number(m[2]) - metric(before, "cp_store_operation_duration_seconds_count", `operation="${m[1]}",outcome="ok"`);
    if (n > 0) out[m[1]] = n;
  }
  return out;
}

/** A server in this process on a prepared data dir; it logs every request (to /dev/null) as a served one does. */
async function inProcessServer(dataDir: string, level: "info" | "error") {
  const logger = createLogger({ format: "json", level, destination: pino.destination({ dest: "/dev/null", sync: true }) as unknown as NodeJS.WritableStream });
  const server = await startInProcess(
    // Calls without credentials, like the other bench servers (enforcement off; the interceptor still runs).
    { listen: "127.0.0.1:0", dataDir, busyTimeoutMs: 5000, nodeStaleAfterMs: 3_600_000, rbacEnforcement: false },
    { logger, onFatal: (err) => { throw err; } },
  );
  return { url: server.url, dataDir, server, stop: () => server.close() };
}

/**
 * An idle process that measures its own event-loop delay: what this machine alone does to a
 * timer meanwhile (other processes, CPU starvation), the floor under the server's figure.
 */
function startIdleProbe(): { stop(): Promise<{ maxMs: number; p99Ms: number }> } {
  const code =
    'const h = require("node:perf_hooks").monitorEventLoopDelay({ resolution: 10 }); h.enable(); process.stdin.resume();' +
    'process.stdin.on("end", () => { h.disable(); process.stdout.write(JSON.stringify({ maxMs: h.max / 1e6, p99Ms: h.percentile(99) / 1e6 })); });';
  const proc = spawn(process.execPath, ["-e", code], { stdio: ["pipe", "pipe", "inherit"] });
  let out = "";
  proc.stdout!.on("data", (c: Buffer) => (out += c.toString()));
  return {
    stop: () =>
      new Promise((resolve) => {
        proc.once("exit", () => resolve(JSON.parse(out) as { maxMs: number; p99Ms: number }));
        proc.stdin!.end();
      }),
  };
}

/** Five stages over the whole fleet, every stage node acking healthy over REST. */
async function progression(dir: string, ackLoad: AckLoad) {
  const dataDir = await prepareDataDir(dir, "progression", NODES);
  const server = await inProcessServer(dataDir, "info");
  const loop = monitorEventLoopDelay({ resolution: 10 });
  try {
    await post(server.url, "/v1/releases", { release_id: "bench-r1", channel: "bench", version: "1", staged: true, artifacts: [{ name: "app", digest: DIGEST }] });
    const gates = [{ kind: "success_ratio", min_ratio: 0.99 }, { kind: "max_failure_ratio", max_ratio: 0.05 }];
    const before = await (await fetch(`${server.url}/metrics`)).text();
    const stages: { stageId: string; nodes: number; openMs: number; acksPerSecond: number; ackSeconds: number }[] = [];
    const probe = startIdleProbe();
    const t0 = nowNs();
    loop.enable();
    await post(server.url, "/v1/rollouts", plan("bench-plan", "bench-r1", STAGES.map((percent) => ({ percent, gates }))));
    let lastAckDone = t0;
    for (let i = 0; i < STAGES.length; i++) {
      const stageId = `s${i + 1}`;
      await waitFor(server.url, "bench-plan", (s) => s.current_stage_id === stageId && s.stages[i].phase === "open");
      const openMs = msSince(lastAckDone);
      // The load process reads the stage's nodes from the database file itself: reading them
      // here would put the bench's own work on the event loop the delay monitor watches.
      // Spawning it blocks this thread (fork and exec) for a moment: that is the load
      // generator's start, not the server's work, so the delay monitor skips it.
      loop.disable();
      const stageOf = { dbFile: path.join(dataDir, DB_FILE_NAME), planId: "bench-plan", stageId };
      const load = fleetLoad({ op: "ack", url: server.url, nodes: 0, concurrency: 64, releaseId: "bench-r1", state: "healthy", stageOf, via: ackLoad });
      loop.enable();
      const acks = await load;
      lastAckDone = nowNs();
      stages.push({ stageId, nodes: acks.requests, openMs, acksPerSecond: acks.requestsPerSecond, ackSeconds: acks.seconds });
      log(`  stage ${stageId}: ${fmt(acks.requests)} nodes opened ${fmt(openMs, 1)} ms after the previous one passed; acks ${fmt(acks.requestsPerSecond)}/s`);
    }
    const done = await waitFor(server.url, "bench-plan", (s) => s.phase === "completed");
    const completeMs = msSince(lastAckDone);
    const totalSeconds = msSince(t0) / 1000;
    loop.disable();
    const loopDelay = { maxMs: loop.max / 1e6, p99Ms: loop.percentile(99) / 1e6, meanMs: loop.mean / 1e6, idleProcess: await probe.stop() };
    const after = await (await fetch(`${server.url}/metrics`)).text();
    return { stages, completeMs, totalSeconds, loopDelay, version: done.version, ops: storeOps(before, after), dataDir, server };
  } catch (err) {
    await server.stop();
    throw err;
  }
}

/**
 * The same writes by better-sqlite3 alone: NODES ack upserts (one durable commit each) and the
 * moves in five transactions. With `sightings`, each ack's transaction also updates its node's
 * last-seen time and reported release by the statement the server's sightings use, as the server
 * records them (its heartbeat buffer writes them in slices): the progression's writes in full.
 * Without, the acks and moves alone (the only ceiling before 2026-12-07).
 */
function progressionCeiling(dir: string, sightings: boolean): number {
  const db = new Database(path.join(dir, sightings ? "ceiling-sightings.db" : "ceiling.db"));
  durablePragmas(db);
  applySchema(db);
  db.prepare("INSERT INTO releases (release_id, channel, version, artifacts, notes, published_at_ms, staged) VALUES ('r', 'bench', '1', '[]', '', 0, 1)").run();
  db.prepare("INSERT INTO rollout_plans (plan_id, release_id, channel, spec, signature, key_id, created_at_ms) VALUES ('p', 'r', 'bench', '{}', '', '', 0)").run();
  // As the server's nodes are (fillNodes): seen, running r0.
  const enrol = db.prepare(
    "INSERT INTO nodes (node_id, channel, labels, agent_version, enrolled_at_ms, last_seen_ms, reported_release_id, drained, drain_reason) VALUES (?, 'bench', '{}', '', 0, ?, 'r0', 0, '')",
  );
  db.transaction(() => {
    for (let n = 0; n < NODES; n++) enrol.run(nodeName(n), Date.now());
  })();
  const move = db.prepare("INSERT INTO rollout_moves (plan_id, stage_id, node_id, release_id, moved_at_ms) VALUES ('p', ?, ?, 'r', 0)");
  const upsert = db.prepare(
    "INSERT INTO node_acks (release_id, node_id, state, message, reported_release_id, observed_at_ms, updated_at_ms) VALUES ('r', ?, 'healthy', '', 'r', ?, ?) " +
      "ON CONFLICT (release_id, node_id) DO UPDATE SET state = excluded.state, observed_at_ms = excluded.observed_at_ms WHERE node_acks.observed_at_ms <= excluded.observed_at_ms",
  );
  const seen = prepareSightingUpdate(drizzle(db));
  const ackWithSighting = db.transaction((nodeId: string, atMs: number) => {
    upsert.run(nodeId, atMs, atMs);
    seen.run({ id: nodeId, seen: atMs, release: "r", version: null });
  });
  const ack = sightings ? ackWithSighting : (nodeId: string, atMs: number) => upsert.run(nodeId, atMs, atMs);
  const started = nowNs();
  let covered = 0;
  for (const [i, percent] of STAGES.entries()) {
    const target = Math.ceil((percent / 100) * NODES);
    db.transaction(() => {
      for (let n = covered; n < target; n++) move.run(`s${i + 1}`, nodeName(n));
    })();
    for (let n = covered; n < target; n++) ack(nodeName(n), Date.now());
    covered = target;
  }
  const seconds = msSince(started) / 1000;
  db.close();
  return seconds;
}

/**
 * Waits until the server has written what its sighting buffer held when the plan completed:
 * the last stage's acks (tens of thousands of sightings) are written in slices for a second or
 * two after it, and an ack or a halt waits for the slice being written meanwhile (a halt then
 * takes 10 to 30 ms). The single-ack and halt figures are the server's once it is idle again.
 * Done when cp_node_sightings_written_total stood still for longer than a flush interval (5 s).
 */
async function sightingsWritten(url: string): Promise<number> {
  const t0 = nowNs();
  const written = async () => metric(await (await fetch(`${url}/metrics`)).text(), "cp_node_sightings_written_total");
  let last = await written();
  let stillSince = nowNs();
  for (;;) {
    await new Promise((r) => setTimeout(r, 500));
    const now = await written();
    if (now !== last) {
      last = now;
      stillSince = nowNs();
    } else if (msSince(stillSince) > 6000) return msSince(t0) - 6000;
  }
}

/** Sequential single acks (bench-r1, nodes of the first stage acking again) after the progression: their p50 and p99. */
async function singleAcks(server: { url: string; dataDir: string }, count = 200) {
  const session = http2.connect(server.url);
  session.on("error", () => {});
  const db = new Database(path.join(server.dataDir, DB_FILE_NAME), { readonly: true });
  const ids = db.prepare("SELECT node_id FROM rollout_moves WHERE plan_id = 'bench-plan' ORDER BY seq LIMIT ?").pluck().all(count) as string[];
  db.close();
  const samples: number[] = [];
  for (const id of ids) {
    const t = nowNs();
    await request(
      session,
      { ":method": "PUT", ":path": `/v1/releases/bench-r1/acks/${id}`, "content-type": "application/json" },
      Buffer.from(JSON.stringify({ state: "healthy", reported_release_id: "bench-r1", message: "again", observed_at: new Date().toISOString() })),
    );
    samples.push(msSince(t));
  }
  session.close();
  samples.sort((a, b) => a - b);
  return { acks: samples.length, p50Ms: samples[samples.length >> 1], p99Ms: samples[Math.floor(samples.length * 0.99)], ceilingP50Ms: oneCommitP50(path.dirname(server.dataDir), count) };
}

/**
 * The floor under a single ack's answer on this disk: the same ack upsert by better-sqlite3,
 * one durable commit each, sequential (p50 of `count`). An ack is answered once its commit is
 * durable, so no server answers faster than this.
 */
function oneCommitP50(dir: string, count: number): number {
  const db = new Database(path.join(dir, "one-commit.db"));
  durablePragmas(db);
  applySchema(db);
  db.prepare("INSERT INTO releases (release_id, channel, version, artifacts, notes, published_at_ms, staged) VALUES ('r', 'bench', '1', '[]', '', 0, 1)").run();
  const enrol = db.prepare("INSERT INTO nodes (node_id, channel, labels, agent_version, enrolled_at_ms, drained, drain_reason) VALUES (?, 'bench', '{}', '', 0, 0, '')");
  for (let n = 0; n < 100; n++) enrol.run(nodeName(n));
  const ack = db.prepare(
    "INSERT INTO node_acks (release_id, node_id, state, message, reported_release_id, observed_at_ms, updated_at_ms) VALUES ('r', ?, 'healthy', 'again', 'r', ?, ?) " +
      "ON CONFLICT (release_id, node_id) DO UPDATE SET state = excluded.state, observed_at_ms = excluded.observed_at_ms WHERE node_acks.observed_at_ms <= excluded.observed_at_ms",
  );
  const samples: number[] = [];
  for (let i = 0; i < count; i++) {
    const t = nowNs();
    ack.run(nodeName(i % 100), Date.now(), Date.now());
    samples.push(msSince(t));
  }
  db.close();
  samples.sort((a, b) => a - b);
  return samples[samples.length >> 1];
}

/** The crossing ack's time to a visible halt, HALT_TRIALS times: 1 % stage (NODES/100 nodes), max_failure_ratio 0.01. */
async function haltLatency(server: { url: string; dataDir: string }, dir: string) {
  const session = http2.connect(server.url);
  session.on("error", () => {});
  const db = new Database(path.join(server.dataDir, DB_FILE_NAME), { readonly: true });
  const stageIds = db.prepare("SELECT node_id FROM rollout_moves WHERE plan_id = ? ORDER BY seq").pluck();
  const trials: { ackMs: number; visibleMs: number; polls: number }[] = [];
  let stageNodes = 0;
  let allowed = 0;
  for (let t = 0; t < HALT_TRIALS; t++) {
    const releaseId = `bench-halt-r${t}`;
    const planId = `bench-halt-${t}`;
    await post(server.url, "/v1/releases", { release_id: releaseId, channel: "bench", version: "2", staged: true, artifacts: [{ name: "app", digest: DIGEST }] });
    await post(server.url, "/v1/rollouts", plan(planId, releaseId, [{ percent: 1, gates: [{ kind: "max_failure_ratio", max_ratio: 0.01 }] }, { percent: 100, gates: [] }]));
    const opened = await waitFor(server.url, planId, (s) => s.stages[0].phase === "open");
    stageNodes = opened.stages[0].node_count;
    allowed = Math.floor(stageNodes * 0.01);
    const ids = stageIds.all(planId) as string[];
    const ack = (nodeId: string) =>
      request(
        session,
        { ":method": "PUT", ":path": `/v1/releases/${releaseId}/acks/${nodeId}`, "content-type": "application/json" },
        Buffer.from(JSON.stringify({ state: "failed", message: "bench", observed_at: new Date().toISOString() })),
      );
    for (const id of ids.slice(0, allowed)) await ack(id);
    const t0 = nowNs();
    await ack(ids[allowed]);
    const ackMs = msSince(t0);
    let polls = 0;
    for (;;) {
      polls++;
      const reply = await request(session, { ":method": "GET", ":path": `/v1/rollouts/${planId}/status` });
      if ((JSON.parse(reply.body.toString()) as { status: StatusJson }).status.phase === "halted") break;
    }
    trials.push({ ackMs, visibleMs: msSince(t0), polls });
    await post(server.url, `/v1/rollouts/${planId}/cancel`, { reason: "bench" });
  }
  db.close();
  session.close();
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1];

  // Ceiling: the same two requests to a bare server.
  const bodyFile = path.join(os.tmpdir(), `bare-${process.pid}.json`);
  writeFileSync(bodyFile, '{"status":{"phase":"halted"}}');
  const bare = await startPort(BARE, [bodyFile]);
  const bareSession = http2.connect(bare.url);
  const samples: number[] = [];
  for (let i = 0; i < 200; i++) {
    const t = nowNs();
    await request(bareSession, { ":method": "PUT", ":path": "/x" }, Buffer.from("{}"));
    await request(bareSession, { ":method": "GET", ":path": "/x" });
    samples.push(msSince(t));
  }
  bareSession.close();
  await bare.stop();
  rmSync(bodyFile, { force: true });
  samples.sort((a, b) => a - b);
  // The halt needs two durable commits (the ack, then the transition): better-sqlite3 doing two on the same disk.
  const commitsDb = new Database(path.join(dir, "commits.db"));
  durablePragmas(commitsDb);
  commitsDb.exec("CREATE TABLE IF NOT EXISTS t (k INTEGER PRIMARY KEY, v TEXT)");
  const insert = commitsDb.prepare("INSERT INTO t (v) VALUES (?)");
  const twoCommits: number[] = [];
  for (let i = 0; i < 20; i++) {
    const t = nowNs();
    insert.run("ack");
    insert.run("halt");
    twoCommits.push(msSince(t));
  }
  commitsDb.close();
  return {
    twoCommitsMs: median(twoCommits),
    stageNodes,
    failuresToCross: allowed + 1,
    trials,
    ms: median(trials.map((x) => x.visibleMs)),
    ackMs: median(trials.map((x) => x.ackMs)),
    ceilingMs: samples[samples.length >> 1],
  };
}

/** The controller's cost of one ack at a fleet size: an in-process server, the ack handed to the controller directly. */
async function reevaluation(dir: string, name: string, count: number) {
  const dataDir = await prepareDataDir(dir, name, count);
  const logger = createLogger({ format: "json", level: "error" });
  const server = await startInProcess(
    // Calls without credentials, like the other bench servers (enforcement off; the interceptor still runs).
    { listen: "127.0.0.1:0", dataDir, busyTimeoutMs: 5000, nodeStaleAfterMs: 3_600_000, rbacEnforcement: false },
    { logger, onFatal: (err) => { throw err; } },
  );
  try {
    await post(server.url, "/v1/releases", { release_id: "eval-r1", channel: "bench", version: "1", staged: true, artifacts: [{ name: "app", digest: DIGEST }] });
    // Stage one takes 10 % of the fleet; success_ratio 1 keeps it open through the measured acks.
    await post(server.url, "/v1/rollouts", plan("eval", "eval-r1", [{ percent: 10, gates: [{ kind: "success_ratio", min_ratio: 1 }, { kind: "max_failure_ratio", max_ratio: 0.5 }] }]));
    await waitFor(server.url, "eval", (s) => s.stages[0].phase === "open");
    const moves = await server.store.movesOfPlan("eval");
    // The acks are stored first (the controller is not told), so re-counting reads a stage's worth of rows.
    const measured = moves.slice(0, moves.length - 1);
    for (let i = 0; i < measured.length; i += 500) {
      await Promise.all(
        measured.slice(i, i + 500).map((m) =>
          server.store.upsertAck({ releaseId: "eval-r1", nodeId: m.nodeId, state: "healthy", message: "", reportedReleaseId: "eval-r1", observedAtMs: Date.now(), updatedAtMs: Date.now() }),
        ),
      );
    }
    const evaluationsBefore = (await server.metrics.rolloutEvaluations.get()).values[0]?.value ?? 0;
    await new Promise((r) => setTimeout(r, 1000)); // let the writer's checkpoint of those acks settle
    // Each measured ack changes the counts: the same nodes alternate between healthy and downloading.
    const samples: number[] = [];
    const nodes = measured.slice(0, EVAL_NODES);
    let handed = 0;
    for (let round = 0; handed < WARMUP + EVAL_ACKS; round++) {
      for (const m of nodes) {
        const state = round % 2 === 0 ? "healthy" : "downloading";
        const ack = create(NodeAckSchema, { releaseId: "eval-r1", nodeId: m.nodeId, state, reportedReleaseId: "eval-r1", updatedAt: timestampNow() });
        const t = nowNs();
        server.rollouts.onAck(ack);
        await server.rollouts.settled("eval");
        if (handed++ >= WARMUP) samples.push(msSince(t));
      }
    }
    const evaluations = ((await server.metrics.rolloutEvaluations.get()).values[0]?.value ?? 0) - evaluationsBefore;
    // What a controller that re-counts the stage on every ack would pay: read the release's acks and count them.
    const scans: number[] = [];
    for (let i = 0; i < 30; i++) {
      const t = nowNs();
      const acks = await server.store.acksOfRelease("eval-r1");
      const stage = new Set(moves.map((m) => m.nodeId));
      let healthy = 0;
      for (const a of acks) if (stage.has(a.nodeId) && a.state === "healthy") healthy++;
      if (healthy < 0) throw new Error("unreachable");
      scans.push(msSince(t));
    }
    samples.sort((a, b) => a - b);
    scans.sort((a, b) => a - b);
    const mean = samples.reduce((s, x) => s + x, 0) / samples.length;
    return { nodes: count, stageNodes: moves.length, acks: handed, evaluations, meanUs: mean * 1000, p99Us: samples[Math.floor(samples.length * 0.99)] * 1000, rescanMs: scans[scans.length >> 1] };
  } finally {
    await server.close();
  }
}

async function main(): Promise<void> {
  const dir = mkdtempSync(path.join(os.tmpdir(), "ao-bench-rollout-"));
  try {
    log(`rollouts: ${fmt(NODES)} simulated nodes`);
    log("  progression ceiling (better-sqlite3: the same acks with their sightings, and moves)...");
    const ceilingSeconds = progressionCeiling(dir, true);
    log("  the same without the sightings (acks and moves alone)...");
    const bareCeilingSeconds = progressionCeiling(dir, false);
    log("  five-stage progression...");
    const ackLoad = await ackLoadTool(log);
    const prog = await progression(dir, ackLoad);
    let halt;
    let single;
    let settleMs = 0;
    try {
      log("  waiting for the progression's buffered sightings to be written...");
      settleMs = await sightingsWritten(prog.server.url);
      log(`  written ${fmt(settleMs / 1000, 1)} s after completion`);
      log("  single acks after the progression...");
      single = await singleAcks({ url: prog.server.url, dataDir: prog.dataDir });
      log("  ack-to-halt latency...");
      halt = await haltLatency({ url: prog.server.url, dataDir: prog.dataDir }, dir);
    } finally {
      await prog.server.stop();
    }
    log("  re-evaluation cost per ack...");
    const small = await reevaluation(dir, "eval-small", SMALL);
    const large = await reevaluation(dir, "eval-large", NODES);

    const results = {
      nodes: NODES,
      progression: { ackLoad, stages: prog.stages, completeMs: prog.completeMs, totalSeconds: prog.totalSeconds, eventLoopDelay: prog.loopDelay, statusVersion: prog.version, storeOperations: prog.ops, ceilingSeconds, acksAndMovesCeilingSeconds: bareCeilingSeconds },
      singleAcks: { ...single, afterSightingsWrittenMs: settleMs },
      reevaluation: { small, large },
      halt,
    };
    const moved = prog.stages.reduce((s, x) => s + x.nodes, 0);
    let out = `\nRollouts: ${fmt(NODES)} simulated nodes, stages ${STAGES.join("% / ")}% (cumulative), healthy acks over REST from ${ackLoad}\n`;
    out += `  five stages to completed   ${fmt(prog.totalSeconds, 1)} s for ${fmt(moved)} node moves and ${fmt(moved)} acks   better-sqlite3 same writes ${fmt(ceilingSeconds, 1)} s   ratio ${fmt(ceilingSeconds / prog.totalSeconds, 2)}\n`;
    out += `    (better-sqlite3's writes: each ack upserted with its node's last-seen time and reported release, one durable commit each, and the moves in five transactions; without the node updates ${fmt(bareCeilingSeconds, 1)} s, ratio ${fmt(bareCeilingSeconds / prog.totalSeconds, 2)})\n`;
    out += `    stage opens after the previous stage passed (selection among ${fmt(NODES)} nodes + moves written): ${prog.stages.map((s) => `${fmt(s.openMs)} ms`).join(", ")}; completed ${fmt(prog.completeMs)} ms after the last ack\n`;
    const ops = Object.entries(prog.ops).map(([k, v]) => `${k} ${fmt(v)}`).join(", ");
    out += `    database work: ${ops}; status version ${prog.version} (one transaction per transition)\n`;
    const idle = prog.loopDelay.idleProcess;
    out += `    worst event-loop delay during the run ${fmt(prog.loopDelay.maxMs, 1)} ms (p99 ${fmt(prog.loopDelay.p99Ms, 1)} ms, mean ${fmt(prog.loopDelay.meanMs, 1)} ms; monitorEventLoopDelay at a 10 ms resolution, whose samples include that interval: the worst block beyond it was ${fmt(Math.max(0, prog.loopDelay.maxMs - 10), 1)} ms); an idle process on this machine meanwhile: worst ${fmt(idle.maxMs, 1)} ms, p99 ${fmt(idle.p99Ms, 1)} ms\n`;
    out += `  single ack after the progression, once its buffered sightings were written (${fmt(settleMs / 1000, 1)} s after it completed; ${single.acks} sequential PUT .../acks over one HTTP/2 connection): p50 ${fmt(single.p50Ms, 2)} ms, p99 ${fmt(single.p99Ms, 2)} ms; better-sqlite3 one durable commit per ack on the same disk: p50 ${fmt(single.ceilingP50Ms, 2)} ms\n`;
    for (const r of [small, large]) {
      out += `  re-evaluation after one ack at ${fmt(r.nodes).padStart(7)} nodes (stage of ${fmt(r.stageNodes)}): mean ${fmt(r.meanUs, 1)} µs  p99 ${fmt(r.p99Us, 1)} µs  (${fmt(r.evaluations)} evaluations for ${fmt(r.acks)} acks)   re-counting the stage from the database ${fmt(r.rescanMs, 2)} ms   ratio ${fmt(r.rescanMs * 1000 / r.meanUs, 0)}x cheaper\n`;
    }
    out += `    growth from ${fmt(small.nodes)} to ${fmt(large.nodes)} nodes: ${fmt(large.meanUs / small.meanUs, 2)}x (re-counting: ${fmt(large.rescanMs / small.rescanMs, 1)}x)\n`;
    out += `  crossing ack to halt visible in GET .../status   median of ${HALT_TRIALS}: ${fmt(halt.ms, 2)} ms, of which the ack's own answer ${fmt(halt.ackMs, 2)} ms (each: ${halt.trials.map((x) => fmt(x.visibleMs, 1)).join(", ")} ms; stage of ${fmt(halt.stageNodes)}, ${halt.failuresToCross} failures cross 0.01)\n    ceilings: bare node:http2 PUT+GET ${fmt(halt.ceilingMs, 2)} ms; better-sqlite3 two durable commits ${fmt(halt.twoCommitsMs, 2)} ms   ratio ${fmt((halt.ceilingMs + halt.twoCommitsMs) / halt.ms, 2)} (both together against the measured)\n`;
    process.stdout.write(out);

    const resultsDir = path.join(packageRoot, "bench", "results");
    mkdirSync(resultsDir, { recursive: true });
    const date = new Date().toISOString();
    const file = path.join(resultsDir, `rollout-${date.replace(/[:.]/g, "-")}.json`);
    writeFileSync(file, JSON.stringify({ date, machine: { cpus: os.cpus().length, node: process.version }, ...results }, null, 2) + "\n");
    log(`results written to ${path.relative(process.cwd(), file)}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
