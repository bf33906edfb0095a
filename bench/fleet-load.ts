/**
 * Fleet load generator, its own process like bench/load.ts: enrols, heartbeats or acks for
 * N simulated nodes over one HTTP/2 session with concurrent streams, through the REST paths.
 * Prints one JSON result line.
 *
 *   node dist/bench/fleet-load.js '{"op":"heartbeat","url":"...","nodes":10000,"durationMs":15000,"concurrency":32}'
 */
import { readFileSync } from "node:fs";
import http2 from "node:http2";
import { pathToFileURL } from "node:url";
import Database from "better-sqlite3";
import { request, summarize } from "./h2-request.js";
import { h2loadPost, type AckLoad } from "./h2load.js";

export interface FleetLoadSpec {
  op: "enroll" | "heartbeat" | "ack";
  url: string;
  nodes: number;
  concurrency: number;
  /** heartbeat: keep cycling through the nodes this long. enroll and ack: each node once. */
  durationMs?: number;
  /** ack: the release acked and the state reported. */
  releaseId?: string;
  state?: string;
  /** ack: a JSON file holding the node ids to ack, instead of the first `nodes` simulated ones. */
  nodeIdsFile?: string;
  /**
   * ack: the nodes a plan moved in a stage, read here from the server's database file (read
   * only), so that reading them costs the server's process nothing.
   */
  stageOf?: { dbFile: string; planId: string; stageId: string };
  /**
   * ack: who sends the requests. "h2load" (bench/h2load.ts) POSTs each node's ack on its own
   * path (POST /v1/nodes/{node_id}/ack, one body for all) for a fraction of this process's CPU;
   * "node" (the default) sends them from here.
   */
  via?: AckLoad;
}

export interface FleetLoadResult {
  requests: number;
  seconds: number;
  requestsPerSecond: number;
  p50Ms: number;
  p99Ms: number;
}

export const nodeName = (n: number) => `fleet-${String(n).padStart(5, "0")}`;

/** What an acking node says it runs: the acked release once healthy, the old one before. */
const reportedRelease = (spec: FleetLoadSpec) => (spec.state === "healthy" ? spec.releaseId : "bench-r0");

function call(spec: FleetLoadSpec, node: string): { headers: http2.OutgoingHttpHeaders; body: Buffer } {
  const json = (method: string, path: string, body: unknown) => ({
    headers: { ":method": method, ":path": path, "content-type": "application/json" },
    body: Buffer.from(JSON.stringify(body)),
  });
  switch (spec.op) {
    case "enroll":
      return json("POST", "/v1/nodes", { node_id: node, channel: "bench", labels: { ring: node.slice(-1) }, agent_version: "bench" });
    case "heartbeat":
      return json("POST", `/v1/nodes/${node}/heartbeat`, { reported_release_id: "bench-r0" });
    case "ack":
      return json("PUT", `/v1/releases/${spec.releaseId}/acks/${node}`, {
        state: spec.state,
        reported_release_id: reportedRelease(spec),
        observed_at: new Date().toISOString(),
      });
  }
}

function stageNodeIds(q: { dbFile: string; planId: string; stageId: string }): string[] {
  const db = new Database(q.dbFile, { readonly: true });
  try {
    return db.prepare("SELECT node_id FROM rollout_moves WHERE plan_id = ? AND stage_id = ? ORDER BY node_id").pluck().all(q.planId, q.stageId) as string[];
  } finally {
    db.close();
  }
}

async function run(spec: FleetLoadSpec): Promise<FleetLoadResult> {
  const ids = spec.stageOf !== undefined ? stageNodeIds(spec.stageOf) : spec.nodeIdsFile === undefined ? undefined : (JSON.parse(readFileSync(spec.nodeIdsFile, "utf8")) as string[]);
  const nodes = ids?.length ?? spec.nodes;
  if (spec.via === "h2load" && spec.op === "ack") {
    const body = JSON.stringify({ release_id: spec.releaseId, state: spec.state, reported_release_id: reportedRelease(spec) });
    const urls = Array.from({ length: nodes }, (_, n) => `${spec.url}/v1/nodes/${ids?.[n] ?? nodeName(n)}/ack`);
    return h2loadPost({ urls, body, concurrency: spec.concurrency });
  }
  const session = http2.connect(spec.url);
  session.on("error", () => {});
  const latencies: number[] = [];
  const deadline = spec.durationMs === undefined ? Infinity : Date.now() + spec.durationMs;
  const total = spec.durationMs === undefined ? nodes : Infinity;
  let next = 0;
  const started = process.hrtime.bigint();
  await Promise.all(
    Array.from({ length: spec.concurrency }, async () => {
      while (next < total && Date.now() < deadline) {
        const n = next++ % nodes;
        const { headers, body } = call(spec, ids?.[n] ?? nodeName(n));
        const t0 = process.hrtime.bigint();
        const reply = await request(session, headers, body);
        if (reply.status !== 200) throw new Error(`${spec.op}: status ${reply.status}: ${reply.body}`);
        latencies.push(Number(process.hrtime.bigint() - t0) / 1e6);
      }
    }),
  );
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  session.close();
  return summarize(latencies, seconds);
}

// Run only as a program: the bench scripts import nodeName from here.
if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  process.stdout.write(JSON.stringify(await run(JSON.parse(process.argv[2]) as FleetLoadSpec)) + "\n");
}
