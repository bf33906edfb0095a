/**
 * The workloads part of `npm run bench` (alone: `npm run bench:workloads`): BENCH_WL_AGENTS (100)
 * simulated agents, each a node enrolled with capacity to spare, its push stream open
 * (AgentService.Subscribe) and its capacity reported (ReportWorkloads), all from this process on
 * one HTTP/2 connection. Each of BENCH_WL_ROUNDS (3) rounds applies BENCH_WL_SERVICES (10) services
 * of BENCH_WL_REPLICAS (100) replicas and measures the time from the apply to the last launch
 * command received on the agents' streams (every replica once), then one change (one service
 * scaled up by one) to its launch, then deletes the services.
 *
 * The ceiling: a bare node:http2 server (bench/bare-push.ts) holding the same number of streams
 * that, asked once, writes the same number of messages of the same size over them: what the
 * delivery alone costs on this machine in the same run.
 *
 * Prints a table and writes bench/results/workloads-<time>.json.
 */
import { setMaxListeners } from "node:events";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import http2 from "node:http2";
import os from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { toBinary } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { createOrchestratorClients } from "../clients/index.js";
import { SubscribeResponseSchema } from "../gen/autonomy/v1/agent_pb.js";
import { WorkloadService } from "../gen/autonomy/v1/workloads_pb.js";
import { packageRoot } from "../src/paths.js";
import { startOrchestrator, startPort } from "./processes.js";

const AGENTS = Number(process.env.BENCH_WL_AGENTS ?? 100);
const SERVICES = Number(process.env.BENCH_WL_SERVICES ?? 10);
const REPLICAS = Number(process.env.BENCH_WL_REPLICAS ?? 100);
const ROUNDS = Number(process.env.BENCH_WL_ROUNDS ?? 3);
const TIMEOUT_MS = 120_000;
const BARE = path.join(packageRoot, "dist", "bench", "bare-push.js");

const log = (line: string) => process.stderr.write(line + "\n");
const fmt = (n: number, digits = 0) => n.toLocaleString("en", { maximumFractionDigits: digits, minimumFractionDigits: digits });
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

interface Round {
  applyAnsweredMs: number;
  lastLaunchMs: number;
  oneChangeMs: number;
}

/** Launches seen per replica id, and waiters for a count of distinct launches. */
class Launches {
  private seen = new Map<string, number>();
  private waiters: { prefix: string; count: number; resolve(at: number): void }[] = [];

  take(replicaId: string): void {
    if (this.seen.has(replicaId)) return;
    this.seen.set(replicaId, performance.now());
    this.check();
  }

  /** Resolves with the time the count-th distinct launch of a replica id starting with prefix arrived. */
  until(prefix: string, count: number): Promise<number> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${this.count(prefix)} of ${count} launches of ${prefix}* arrived within ${TIMEOUT_MS} ms`)), TIMEOUT_MS);
      this.waiters.push({ prefix, count, resolve: (at) => (clearTimeout(timer), resolve(at)) });
      this.check();
    });
  }

  private count(prefix: string): number {
    let n = 0;
    for (const id of this.seen.keys()) if (id.startsWith(prefix)) n++;
    return n;
  }

  private check(): void {
    this.waiters = this.waiters.filter((w) => {
      const times = [...this.seen.entries()].filter(([id]) => id.startsWith(w.prefix)).map(([, t]) => t);
      if (times.length < w.count) return true;
      w.resolve(Math.max(...times));
      return false;
    });
  }
}

async function orchestratorRounds(work: string): Promise<Round[]> {
  const server = await startOrchestrator(path.join(work, "server"), ["--push-keepalive", "5s"]);
  const api = createOrchestratorClients({ baseUrl: server.url, timeoutMs: 60_000 });
  const workloads = createClient(WorkloadService, api.transport);
  const streams = new AbortController();
  setMaxListeners(AGENTS + 10, streams.signal);
  const launches = new Launches();
  const nodeIds = Array.from({ length: AGENTS }, (_, i) => `wl-bench-${String(i).padStart(4, "0")}`);
  const capacity = { cpuMillis: 64_000n, memoryBytes: 256n * 1024n ** 3n };
  try {
    for (const nodeId of nodeIds) {
      await api.nodes.enrollNode({ nodeId, channel: "wl-bench", labels: { zone: `z${Number(nodeId.slice(-4)) % 4}` } });
      await api.nodes.heartbeat({ nodeId });
    }
    log(`  ${AGENTS} nodes enrolled`);
    let open = 0;
    for (const nodeId of nodeIds) {
      void (async () => {
        for await (const m of api.agent.subscribe({ nodeId, afterSequence: 0n }, { signal: streams.signal, timeoutMs: 0 })) {
          if (m.kind.case === "hello") open++;
          else if (m.kind.case === "workloadCommand" && m.kind.value.action.case === "launch") launches.take(m.kind.value.action.value.replicaId);
        }
      })().catch((err: Error) => {
        if (!streams.signal.aborted) log(`stream of ${nodeId} ended: ${err.message}`);
      });
    }
    while (open < AGENTS) await sleep(20);
    log(`  ${AGENTS} streams open`);
    await Promise.all(nodeIds.map((nodeId) => api.agent.reportWorkloads({ nodeId, capacity, usage: {}, replicas: [], acks: [] })));
    // Reports are the nodes' liveness for the scheduler: keep them coming, as agents do.
    const reporter = setInterval(() => {
      for (const nodeId of nodeIds) void api.agent.reportWorkloads({ nodeId, capacity, usage: {}, replicas: [], acks: [] }).catch(() => undefined);
      for (const nodeId of nodeIds) void api.nodes.heartbeat({ nodeId }).catch(() => undefined);
    }, 2_000);
    try {
      for (;;) {
        const { items } = await workloads.listWorkloadNodes({});
        if (items.filter((n) => n.schedulable).length === AGENTS) break;
        await sleep(100);
      }
      log(`  ${AGENTS} nodes schedulable`);
      const rounds: Round[] = [];
      for (let r = 1; r <= ROUNDS; r++) {
        const names = Array.from({ length: SERVICES }, (_, s) => `r${r}s${s}`);
        const spec = (name: string, replicas: number) => ({
          name,
          command: "/bin/sleep",
          args: ["3600"],
          replicas,
          resources: { cpuMillis: 100n, memoryBytes: 64n * 1024n * 1024n },
          spreadKey: "zone",
        });
        const t0 = performance.now();
        await workloads.apply({ services: names.map((n) => spec(n, REPLICAS)) });
        const answered = performance.now();
        const last = await launches.until(`r${r}s`, SERVICES * REPLICAS);
        const t1 = performance.now();
        await workloads.apply({ services: [spec(names[0], REPLICAS + 1)] });
        const one = await launches.until(`${names[0]}-${REPLICAS}`, 1);
        rounds.push({ applyAnsweredMs: answered - t0, lastLaunchMs: last - t0, oneChangeMs: one - t1 });
        log(`  round ${r}: apply answered in ${fmt(answered - t0)} ms, last of ${fmt(SERVICES * REPLICAS)} launches ${fmt(last - t0)} ms after the apply; one more replica ${fmt(one - t1, 1)} ms`);
        for (const name of names) await workloads.deleteService({ name });
      }
      return rounds;
    } finally {
      clearInterval(reporter);
    }
  } finally {
    streams.abort();
    api.close();
    await server.stop();
  }
}

/** The same streams and messages from a server that does nothing else. */
async function ceiling(messageBytes: number): Promise<number[]> {
  const bare = await startPort(BARE, [String(AGENTS), String(SERVICES * REPLICAS), String(messageBytes)]);
  const session = http2.connect(bare.url);
  try {
    const times: number[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      const total = SERVICES * REPLICAS;
      let received = 0;
      let last = 0;
      const done = new Promise<void>((resolve) => {
        for (let i = 0; i < AGENTS; i++) {
          const req = session.request({ ":path": `/stream/${i}` });
          let pending = 0;
          req.on("data", (chunk: Buffer) => {
            pending += chunk.length;
            while (pending >= messageBytes) {
              pending -= messageBytes;
              received++;
              if (received === total) {
                last = performance.now();
                resolve();
              }
            }
          });
        }
      });
      // Every stream is open once the server has counted them.
      for (;;) {
        const n = await request(session, "/open");
        if (Number(n) === AGENTS * (r + 1)) break;
        await sleep(10);
      }
      const t0 = performance.now();
      await request(session, "/go");
      await done;
      times.push(last - t0);
    }
    return times;
  } finally {
    session.close();
    await bare.stop();
  }
}

function request(session: http2.ClientHttp2Session, p: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = session.request({ ":path": p, ":method": "POST" });
    let body = "";
    req.on("data", (c: Buffer) => (body += c.toString()));
    req.on("end", () => resolve(body));
    req.on("error", reject);
    req.end();
  });
}

async function main(): Promise<void> {
  const work = mkdtempSync(path.join(os.tmpdir(), "ao-bench-wl-"));
  try {
    log(`workloads: ${AGENTS} simulated agents, ${SERVICES} services of ${REPLICAS} replicas, ${ROUNDS} rounds`);
    const rounds = await orchestratorRounds(work);
    // A launch as it goes on the wire: a SubscribeResponse with the spec of a replica like those above.
    const sample = toBinary(SubscribeResponseSchema, {
      $typeName: "autonomy.v1.SubscribeResponse",
      sequence: 1_764_000_000_000_000n,
      kind: {
        case: "workloadCommand",
        value: {
          $typeName: "autonomy.v1.WorkloadCommand",
          commandId: "r1s0-0-g1-launch-wl-bench-0000",
          action: {
            case: "launch",
            value: { $typeName: "autonomy.v1.ReplicaSpec", replicaId: "r1s0-0", service: "r1s0", index: 0, generation: 1n, command: "/bin/sleep", args: ["3600"], env: {}, restartPolicy: "always" },
          },
        },
      },
    }).length + 5;
    const bare = await ceiling(sample);
    const last = median(rounds.map((r) => r.lastLaunchMs));
    const ceil = median(bare);
    let out = `\nWorkloads: apply to every launch received, ${AGENTS} agents, ${fmt(SERVICES * REPLICAS)} replicas, median of ${ROUNDS} rounds\n`;
    out += `  apply answered                 ${fmt(median(rounds.map((r) => r.applyAnsweredMs)), 1)} ms\n`;
    out += `  last launch received           ${fmt(last, 1)} ms   (max ${fmt(Math.max(...rounds.map((r) => r.lastLaunchMs)), 1)} ms)\n`;
    out += `  ceiling: bare HTTP/2, the same ${fmt(SERVICES * REPLICAS)} messages of ${sample} bytes over ${AGENTS} streams   ${fmt(ceil, 1)} ms   ratio ${fmt(last / ceil, 1)}x\n`;
    out += `  one change (scale one service by one) to its launch   ${fmt(median(rounds.map((r) => r.oneChangeMs)), 1)} ms\n`;
    process.stdout.write(out);
    const dir = path.join(packageRoot, "bench", "results");
    mkdirSync(dir, { recursive: true });
    const date = new Date().toISOString();
    const file = path.join(dir, `workloads-${date.replace(/[:.]/g, "-")}.json`);
    writeFileSync(file, JSON.stringify({ date, machine: { cpus: os.cpus().length, load: os.loadavg(), node: process.version }, agents: AGENTS, services: SERVICES, replicas: REPLICAS, rounds, ceilingMs: bare, messageBytes: sample }, null, 2) + "\n");
    log(`results written to ${path.relative(process.cwd(), file)}`);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

await main();
