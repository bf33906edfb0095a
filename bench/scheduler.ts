/**
 * The scheduler's cost (`npm run bench`, alone `npm run bench:scheduler`): 10,000 replicas of 200
 * services (varied replicas, selectors, resources, spread over 3 zones) on 1,000 simulated nodes,
 * and the same shape at a tenth (1,000 replicas of 20 services on 100 nodes). All in memory: the
 * scheduler is a pure function, so no server runs.
 *
 *   full        schedule(nodes, services, []) from nothing, and again from its own placement
 *   one change  SchedulerState: a 50-replica service (the same one in both fleets) scaled by 5 and
 *               back, and changed (new generation and cpu 200m ↔ 150m: 50 updates in place)
 *
 * Ceilings measured in the same run: sorting the same number of assignment records by
 * (service, index) — the least any answer sorted that way costs —, and one linear scan over the
 * nodes per replica (selector and fit checked, the least used node kept), what a scheduler
 * without indexes pays; for one change, that scan for each replica the change places.
 *
 * Prints a table and writes bench/results/scheduler-<time>.json.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { schedule, SchedulerState, type Assignment, type SchedulePlan, type SchedulerNode, type SchedulerService } from "../src/domain/scheduler.js";
import { packageRoot } from "../src/paths.js";

const GIB = 1024 ** 3;
const MIB = 1024 ** 2;
const ROUNDS = Number(process.env.BENCH_SCHEDULER_ROUNDS ?? 9);
const CHANGE_OPS = Number(process.env.BENCH_SCHEDULER_CHANGE_OPS ?? 1000);
const PROBE_REPLICAS = 50;

const log = (line: string) => process.stderr.write(line + "\n");
const fmt = (n: number, digits = 2) => n.toLocaleString("en", { maximumFractionDigits: digits, minimumFractionDigits: digits });
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/** A deterministic pseudo-random sequence (mulberry32): the same fleet every run. */
function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface Fleet {
  nodes: SchedulerNode[];
  services: SchedulerService[];
  probe: SchedulerService;
}

/** `nodeCount` nodes in zones a, b, c; `replicas` replicas over replicas/50 services, the probe among them. */
function fleet(nodeCount: number, replicas: number, seed: number): Fleet {
  const rnd = random(seed);
  const pick = <T>(xs: readonly T[]) => xs[Math.floor(rnd() * xs.length)];
  const sizes = [
    { cpuMillis: 4000, memoryBytes: 8 * GIB },
    { cpuMillis: 8000, memoryBytes: 16 * GIB },
    { cpuMillis: 16000, memoryBytes: 32 * GIB },
  ];
  const nodes: SchedulerNode[] = Array.from({ length: nodeCount }, (_, i) => ({
    id: `node-${String(i).padStart(5, "0")}`,
    labels: { zone: ["a", "b", "c"][i % 3], arch: rnd() < 0.2 ? "arm64" : "amd64", ...(rnd() < 0.05 ? { gpu: "true" } : {}) },
    schedulable: true,
    capacity: pick(sizes),
  }));
  const probe: SchedulerService = {
    name: "probe",
    generation: 1,
    replicas: PROBE_REPLICAS,
    selector: {},
    resources: { cpuMillis: 200, memoryBytes: 256 * MIB },
    spreadKey: "zone",
  };
  const count = Math.round(replicas / 50);
  // Replicas per service from 1 to 99, adjusted so the total is exact.
  const counts = Array.from({ length: count - 1 }, () => 1 + Math.floor(rnd() * 99));
  let rest = replicas - PROBE_REPLICAS - counts.reduce((a, b) => a + b, 0);
  for (let i = 0; rest !== 0; i = (i + 1) % counts.length) {
    const step = rest > 0 ? Math.min(rest, 99 - counts[i]) : Math.max(rest, 1 - counts[i]);
    counts[i] += step;
    rest -= step;
  }
  const selectors: Array<Record<string, string>> = [{}, {}, {}, { zone: "a" }, { zone: "b" }, { zone: "c" }, { arch: "arm64" }, { zone: "b", arch: "amd64" }];
  const services: SchedulerService[] = counts.map((r, i) => {
    const gpu = i % 40 === 7;
    const selector = gpu ? { gpu: "true" } : pick(selectors);
    return {
      name: `svc-${String(i).padStart(4, "0")}`,
      generation: 1,
      replicas: r,
      selector,
      resources: { cpuMillis: gpu ? 100 : 50 * (2 + Math.floor(rnd() * 19)), memoryBytes: (128 * MIB) << Math.floor(rnd() * 4) },
      ...(selector.zone === undefined && rnd() < 0.6 ? { spreadKey: "zone" } : {}),
    };
  });
  services.push(probe);
  return { nodes, services, probe };
}

function timeMs(run: () => unknown): number {
  const t = performance.now();
  run();
  return performance.now() - t;
}

/** Ceiling: sorting the same assignment records, shuffled beforehand, by (service, index). */
function sortCeilingMs(assignments: Assignment[]): number {
  const runs: number[] = [];
  const rnd = random(7);
  for (let k = 0; k < ROUNDS; k++) {
    const copy = assignments.map((a) => ({ ...a }));
    for (let i = copy.length - 1; i > 0; i--) {
      const j = Math.floor(rnd() * (i + 1));
      [copy[i], copy[j]] = [copy[j], copy[i]];
    }
    runs.push(timeMs(() => copy.sort((a, b) => (a.service < b.service ? -1 : a.service > b.service ? 1 : a.index - b.index))));
  }
  return median(runs);
}

/**
 * Ceiling: the least a scheduler without indexes does per replica — one pass over every node,
 * checking the selector and the free capacity and keeping the least used node.
 */
function linearScan(nodes: SchedulerNode[], services: SchedulerService[], only?: { service: SchedulerService; replicas: number }): number {
  const n = nodes.length;
  const cpuCap = Float64Array.from(nodes, (x) => x.capacity.cpuMillis);
  const memCap = Float64Array.from(nodes, (x) => x.capacity.memoryBytes);
  const cpu = new Float64Array(n);
  const mem = new Float64Array(n);
  const labels = nodes.map((x) => x.labels);
  let placed = 0;
  const place = (s: SchedulerService, replicas: number) => {
    const sel = Object.entries(s.selector);
    const { cpuMillis, memoryBytes } = s.resources;
    for (let r = 0; r < replicas; r++) {
      let best = -1;
      let bestShare = Infinity;
      for (let i = 0; i < n; i++) {
        let ok = true;
        for (const [k, v] of sel) if (labels[i][k] !== v) ok = false;
        if (!ok || cpu[i] + cpuMillis > cpuCap[i] || mem[i] + memoryBytes > memCap[i]) continue;
        const share = Math.max(cpu[i] / cpuCap[i], mem[i] / memCap[i]);
        if (share < bestShare) {
          bestShare = share;
          best = i;
        }
      }
      if (best >= 0) {
        cpu[best] += cpuMillis;
        mem[best] += memoryBytes;
        placed++;
      }
    }
  };
  if (only) place(only.service, only.replicas);
  else for (const s of services) place(s, s.replicas);
  return placed;
}

interface FleetResult {
  nodes: number;
  services: number;
  replicas: number;
  placed: number;
  unschedulable: number;
  fullMs: number;
  fullUnchangedMs: number;
  sortCeilingMs: number;
  linearScanMs: number;
  scaleUs: number;
  changeUs: number;
  linearScanPerChangeUs: number;
}

/** One fleet under test: its inputs, its incremental state, and each figure's per-round samples. */
class Subject {
  readonly fleet: Fleet;
  readonly state = new SchedulerState();
  readonly samples = { full: [] as number[], unchanged: [] as number[], scan: [] as number[], scale: [] as number[], change: [] as number[], changeScan: [] as number[] };
  plan: SchedulePlan;
  private generation: number;
  private scaled = false;

  constructor(
    readonly nodeCount: number,
    readonly replicas: number,
  ) {
    this.fleet = fleet(nodeCount, replicas, 15);
    this.plan = schedule(this.fleet.nodes, this.fleet.services, []);
    this.state.load(this.fleet.nodes, this.fleet.services, []);
    this.generation = this.fleet.probe.generation;
  }

  round(record: boolean): void {
    const { nodes, services, probe } = this.fleet;
    const keep = (name: keyof Subject["samples"], value: number) => record && this.samples[name].push(value);
    keep("full", timeMs(() => (this.plan = schedule(nodes, services, []))));
    keep("unchanged", timeMs(() => schedule(nodes, services, this.plan.assignments)));
    keep("scan", timeMs(() => linearScan(nodes, services)));
    // Scaled by 5 and back: each op places or stops 5 replicas of the probe.
    let t = performance.now();
    for (let k = 0; k < CHANGE_OPS; k++) {
      this.scaled = !this.scaled;
      const change = this.state.scaleService(probe.name, this.scaled ? PROBE_REPLICAS + 5 : PROBE_REPLICAS);
      if (change.launches.length + change.stops.length !== 5) throw new Error("the probe's scale did not place or stop 5 replicas");
    }
    if (this.scaled) {
      this.state.scaleService(probe.name, PROBE_REPLICAS);
      this.scaled = false;
    }
    keep("scale", ((performance.now() - t) * 1000) / CHANGE_OPS);
    // A new spec each op (generation, and cpu 200m ↔ 150m, so it always fits back): 50 updates in place.
    t = performance.now();
    for (let k = 0; k < CHANGE_OPS; k++) {
      this.generation++;
      const cpuMillis = this.generation % 2 === 0 ? 150 : 200;
      const c = this.state.applyService({ ...probe, generation: this.generation, resources: { cpuMillis, memoryBytes: probe.resources.memoryBytes } });
      if (c.updates.length !== PROBE_REPLICAS) throw new Error("the probe's change did not update every replica in place");
    }
    keep("change", ((performance.now() - t) * 1000) / CHANGE_OPS);
    t = performance.now();
    for (let k = 0; k < CHANGE_OPS / 10; k++) linearScan(nodes, services, { service: probe, replicas: 5 });
    keep("changeScan", ((performance.now() - t) * 1000) / (CHANGE_OPS / 10));
  }

  result(): FleetResult {
    return {
      nodes: this.nodeCount,
      services: this.fleet.services.length,
      replicas: this.replicas,
      placed: this.plan.assignments.length,
      unschedulable: this.plan.unschedulable.length,
      fullMs: median(this.samples.full),
      fullUnchangedMs: median(this.samples.unchanged),
      sortCeilingMs: sortCeilingMs(this.plan.assignments),
      linearScanMs: median(this.samples.scan),
      scaleUs: median(this.samples.scale),
      changeUs: median(this.samples.change),
      linearScanPerChangeUs: median(this.samples.changeScan),
    };
  }
}

// Rounds alternate between the fleets (and which goes first), so both see the same machine: on a
// shared machine the load moves during a run, and the growth is the median of per-round ratios.
const subjects = [new Subject(100, 1000), new Subject(1000, 10_000)];
for (const s of subjects) s.round(false); // warm up
for (let r = 0; r < ROUNDS; r++) for (const s of r % 2 === 0 ? subjects : [...subjects].reverse()) s.round(true);
const [small, large] = subjects.map((s) => s.result());
const paired = (name: keyof Subject["samples"]) => median(subjects[1].samples[name].map((v, i) => v / subjects[0].samples[name][i]));
const growth = { scale: paired("scale"), change: paired("change"), linearScanPerChange: paired("changeScan"), full: paired("full") };

log("scheduler: placement in memory (pure function), against ceilings measured in this run");
for (const r of [small, large]) {
  if (r.unschedulable > 0) log(`  (${r.unschedulable} of ${r.replicas} replicas unschedulable at ${r.nodes} nodes)`);
}
const rows: string[][] = [["", `${fmt(small.replicas, 0)} replicas / ${fmt(small.nodes, 0)} nodes`, `${fmt(large.replicas, 0)} replicas / ${fmt(large.nodes, 0)} nodes`]];
const both = (f: (r: FleetResult) => string) => [f(small), f(large)];
rows.push(["full placement, from nothing", ...both((r) => `${fmt(r.fullMs)} ms`)]);
rows.push(["full placement, from its own placement", ...both((r) => `${fmt(r.fullUnchangedMs)} ms`)]);
rows.push(["ceiling: sort the same assignments", ...both((r) => `${fmt(r.sortCeilingMs, 3)} ms (full / sort ${fmt(r.fullMs / r.sortCeilingMs, 1)})`)]);
rows.push(["ceiling: one linear scan of nodes per replica", ...both((r) => `${fmt(r.linearScanMs)} ms (full / scan ${fmt(r.fullMs / r.linearScanMs)})`)]);
rows.push(["one change: scale 50 → 55 / 55 → 50", ...both((r) => `${fmt(r.scaleUs, 1)} µs`)]);
rows.push(["one change: new spec, 50 updates", ...both((r) => `${fmt(r.changeUs, 1)} µs`)]);
rows.push(["ceiling: linear scan for 5 replicas", ...both((r) => `${fmt(r.linearScanPerChangeUs, 1)} µs (scale / scan ${fmt(r.scaleUs / r.linearScanPerChangeUs)})`)]);
for (const row of rows) log(row.map((c, i) => c.padEnd([48, 36, 36][i])).join("  "));
log(
  `growth from ${small.nodes} to ${large.nodes} nodes (median of ${ROUNDS} paired rounds): one scale ${fmt(growth.scale)}×, one spec change ${fmt(growth.change)}× (target < 1.5×); ` +
    `the linear scan ${fmt(growth.linearScanPerChange)}×; the full placement ${fmt(growth.full)}×`,
);

const results = path.join(packageRoot, "bench", "results");
mkdirSync(results, { recursive: true });
writeFileSync(
  path.join(results, `scheduler-${new Date().toISOString().replace(/[:.]/g, "-")}.json`),
  JSON.stringify({ rounds: ROUNDS, changeOps: CHANGE_OPS, small, large, growth, samples: subjects.map((s) => s.samples) }, null, 2),
);
