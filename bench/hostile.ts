/**
 * Legitimate ingest under hostile load (`npm run bench:hostile`, part of `npm run bench`): for
 * each attack, a fresh server with RBAC enforced, authenticated REST ingest from 127.0.0.1
 * measured before, during and after the attack, which a separate process (bench/attack.ts)
 * runs from other loopback addresses:
 *
 *   flood          unauthenticated calls, REST and Connect, 64 streams without pause
 *   nested         16 concurrent 8 MiB bodies of nested arrays without a token
 *   nested-auth    the same with a valid token of its own (another principal than the
 *                  legitimate client's), refused by the depth check
 *   idle           5,000 connections that send nothing, half a request line or only the HTTP/2 preface
 *
 * The figure is the median over the attack rounds of each round's events/s to the mean of the
 * baselines just before and after it (target >= 0.9), with the server's peak RSS. Prints a table and writes
 * bench/results/hostile-<time>.json. HOSTILE_BATCHES (default 200 batches of 500 events per
 * round), HOSTILE_ROUNDS (default 3 attack rounds) and HOSTILE_REPS (default 1) size the run.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { createOrchestratorClients } from "../clients/index.js";
import { packageRoot } from "../src/paths.js";
import { BOOTSTRAP_TOKEN_FILE } from "../src/security/bootstrap.js";
import type { AttackSpec } from "./attack.js";
import type { IngestResult, IngestSpec } from "./load.js";
import { runToEnd, spawnUntil, startOrchestrator } from "./processes.js";

const BATCHES = Number(process.env.HOSTILE_BATCHES ?? 200);
const REPS = Number(process.env.HOSTILE_REPS ?? 1);
const ROUNDS = Number(process.env.HOSTILE_ROUNDS ?? 3);
const IDLE_CONNECTIONS = 5000;
const dist = path.join(packageRoot, "dist", "bench");
const LOAD = path.join(dist, "load.js");
const ATTACK = path.join(dist, "attack.js");

const log = (line: string) => process.stderr.write(line + "\n");
const fmt = (n: number, digits = 0) => n.toLocaleString("en", { maximumFractionDigits: digits, minimumFractionDigits: digits });
/** The median; of an even count, the mean of the two middle values. */
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
};

/** 20 source addresses: 250 connections each stay under the default per-address cap of 256. */
const ATTACK_SOURCES = Array.from({ length: 20 }, (_, i) => `127.0.0.${i + 2}`);

type Scenario = "flood" | "nested" | "nested-auth" | "idle";
/** HOSTILE_SCENARIOS (comma-separated) runs only some of them. */
const SCENARIOS = (process.env.HOSTILE_SCENARIOS?.split(",") ?? ["flood", "nested", "nested-auth", "idle"]) as Scenario[];

interface Run {
  /** Without the attack: before it, between its rounds and after it. */
  baseline: number[];
  during: number[];
  /** Each attack round's events/s over the mean of the baselines before and after it. */
  ratios: number[];
  ratio: number;
  peakRssMiB: number;
  /** The attack process's CPU time over its wall time and the machine's cores (0.25: half of one of two cores). */
  attackerCpuShare: number;
  attack: Record<string, unknown>[];
}

async function ingest(url: string, token: string, firstBatch: number): Promise<number> {
  const spec: IngestSpec = { kind: "ingest", url, mode: "rest", batches: BATCHES, concurrency: 8, token, firstBatch };
  return (JSON.parse(await runToEnd(LOAD, [JSON.stringify(spec)])) as IngestResult).eventsPerSecond;
}

/**
 * A token of another principal than the legitimate client's, allowed to ingest: a caller with
 * valid credentials of its own that sends hostile bodies (throttling it must not throttle others).
 */
async function attackerToken(url: string, adminToken: string): Promise<string> {
  const api = createOrchestratorClients({ baseUrl: url, token: adminToken });
  try {
    await api.rbac.assignRole({ principal: "operator:hostile", role: "integrator" });
    return (await api.rbac.createToken({ principal: "operator:hostile", description: "bench:hostile attacker" })).token;
  } finally {
    api.close();
  }
}

/**
 * Baseline and attack rounds alternate (B A B A B A B) on one server, so that a change in the
 * machine's load or the store's size weighs on both: each attack round is compared with the mean
 * of the two baselines around it (the store grows and the machine's load drifts during a run,
 * which a median over all baselines would count against the attack), and the ratio is the
 * median of those rounds' ratios.
 */
async function run(scenario: Scenario, dir: string): Promise<Run> {
  const server = await startOrchestrator(dir, [], { AUTONOMY_RBAC_ENFORCEMENT: "1" });
  try {
    const token = readFileSync(path.join(dir, BOOTSTRAP_TOKEN_FILE), "utf8").trim();
    const hostileToken = scenario === "nested-auth" ? await attackerToken(server.url, token) : undefined;
    let batch = 0;
    const next = () => ingest(server.url, token, (batch += BATCHES));
    await next(); // warm-up
    const baseline = [await next()];
    const during: number[] = [];
    const attacks: Record<string, unknown>[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      const summaryFile = path.join(dir, `attack-${round}.json`);
      const spec: AttackSpec = {
        kind: scenario === "nested-auth" ? "nested" : scenario,
        url: server.url,
        sources: scenario === "idle" ? ATTACK_SOURCES : ATTACK_SOURCES.slice(0, 1),
        token: hostileToken,
        connections: IDLE_CONNECTIONS,
        summaryFile,
      };
      const attack = await spawnUntil(ATTACK, [JSON.stringify(spec)], (line) => (line.trim() === "ready" ? "ready" : undefined));
      try {
        during.push(await next());
      } finally {
        await attack.stop();
      }
      attacks.push(JSON.parse(readFileSync(summaryFile, "utf8")) as Record<string, unknown>);
      baseline.push(await next());
    }
    // The attacker's CPU as a share of the machine's cores while it ran (median of the rounds).
    const attackerCpuShare = median(attacks.map((a) => Number(a.cpuSeconds) / (Number(a.seconds) * os.cpus().length)));
    const ratios = during.map((d, i) => d / ((baseline[i] + baseline[i + 1]) / 2));
    return { baseline, during, ratios, ratio: median(ratios), peakRssMiB: server.peakRssMiB(), attackerCpuShare, attack: attacks };
  } finally {
    await server.stop();
  }
}

async function main(): Promise<void> {
  log(`hostile: ${REPS} run(s) per attack; ingest ${BATCHES} batches x 500 events, REST JSON, 8 streams, authenticated`);
  const runs: Record<Scenario, Run[]> = { flood: [], nested: [], "nested-auth": [], idle: [] };
  const work = mkdtempSync(path.join(os.tmpdir(), "ao-bench-hostile-"));
  try {
    for (let rep = 0; rep < REPS; rep++) {
      for (const scenario of SCENARIOS) {
        const r = await run(scenario, path.join(work, `${scenario}-${rep}`));
        runs[scenario].push(r);
        log(`  ${scenario.padEnd(12)} without ${r.baseline.map((x) => fmt(x)).join(" ")}  during ${r.during.map((x) => fmt(x)).join(" ")} events/s  round ratios ${r.ratios.map((x) => fmt(x, 2)).join(" ")}  ratio ${fmt(r.ratio, 2)}  peak RSS ${fmt(r.peakRssMiB, 1)} MiB  attacker CPU ${fmt(r.attackerCpuShare * 100, 0)} % of the machine`);
        log(`  ${"".padEnd(12)} attack ${JSON.stringify(r.attack[0])}`);
      }
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  const labels: Record<Scenario, string> = {
    flood: "(a) unauthenticated flood, 64 streams",
    nested: "(b) 16 nested 8 MiB bodies, no token",
    "nested-auth": "(b') the same with a valid token",
    idle: `(c) ${fmt(IDLE_CONNECTIONS)} idle connections`,
  };
  let out = "\nLegitimate ingest under attack (each attack round's events/s over the mean of the baselines around it, median of the rounds; target >= 0.9)\n";
  out += `${"".padEnd(42)}${"without".padStart(10)}${"during".padStart(10)}${"ratio".padStart(8)}${"peak RSS".padStart(12)}${"attacker CPU".padStart(14)}\n`;
  const table: Record<string, { ratio: number; peakRssMiB: number; attackerCpuShare: number }> = {};
  for (const scenario of SCENARIOS) {
    const rs = runs[scenario];
    if (rs.length === 0) continue;
    const mid = median(rs.map((y) => y.ratio));
    const r = rs.reduce((best, x) => (Math.abs(x.ratio - mid) < Math.abs(best.ratio - mid) ? x : best));
    const peak = Math.max(...rs.map((x) => x.peakRssMiB));
    table[scenario] = { ratio: r.ratio, peakRssMiB: peak, attackerCpuShare: r.attackerCpuShare };
    out += `${labels[scenario].padEnd(42)}${fmt(median(r.baseline)).padStart(10)}${fmt(median(r.during)).padStart(10)}${fmt(r.ratio, 2).padStart(8)}${`${fmt(peak, 0)} MiB`.padStart(12)}${`${fmt(r.attackerCpuShare * 100, 0)} %`.padStart(14)}\n`;
  }
  process.stdout.write(out);
  const results = {
    date: new Date().toISOString(),
    machine: { cpus: os.cpus().length, model: os.cpus()[0]?.model, node: process.version },
    batches: BATCHES,
    runs,
    table,
  };
  const dir = path.join(packageRoot, "bench", "results");
  mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `hostile-${results.date.replace(/[:.]/g, "-")}.json`);
  writeFileSync(file, JSON.stringify(results, null, 2) + "\n");
  log(`results written to ${path.relative(process.cwd(), file)}`);
}

await main();
