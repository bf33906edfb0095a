/**
 * The dashboard's fleet page on a 100,000-node store (BENCH_UI_NODES), in Debian's Chromium
 * driven by playwright-core: the time from opening /ui/#/fleet to its first rows of nodes,
 * against the same page on a 1,000-node store measured in the same run (the ceiling: what the
 * page costs when the store weighs nothing), with the 1 s budget of the dashboard. Then the
 * two reads the page's first rows wait on, GET /v1/fleet/nodes (SearchFleetNodes, a 25-row
 * page) and GET /v1/fleet/overview, against a bare node:http2 server answering the same bodies.
 *
 * Prints a table and writes bench/results/ui-fleet-<time>.json.
 */
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { chromium, type Browser } from "playwright-core";
import { packageRoot } from "../src/paths.js";
import { fillNodes } from "./fill-nodes.js";
import type { QueryResult, QuerySpec } from "./load.js";
import { runToEnd, startOrchestrator, startPort } from "./processes.js";

const NODES = Number(process.env.BENCH_UI_NODES ?? 100_000);
const SMALL = 1_000;
const LOADS = Number(process.env.BENCH_UI_LOADS ?? 10);
const BUDGET_MS = 1000;
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const READS = ["/v1/fleet/nodes?page_size=25&order_by=node_id", "/v1/fleet/overview"];
const dist = path.join(packageRoot, "dist");
const LOAD = path.join(dist, "bench", "load.js");
const BARE = path.join(dist, "bench", "bare-h2.js");

const log = (line: string) => process.stderr.write(line + "\n");
const fmt = (n: number, digits = 0) => n.toLocaleString("en", { maximumFractionDigits: digits, minimumFractionDigits: digits });
const queryLoad = async (spec: QuerySpec) => JSON.parse(await runToEnd(LOAD, [JSON.stringify(spec)])) as QueryResult;
const quantile = (xs: number[], q: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(q * xs.length))];

interface StoreRun {
  nodes: number;
  /** Milliseconds from navigation to the first node row, per load (a fresh page each, cold cache). */
  firstRowsMs: number[];
  reads: { path: string; bytes: number; result: QueryResult; ceiling: QueryResult }[];
}

/** Opens the fleet page LOADS times and times its first rows; then the page's reads against a bare server. */
async function storeRun(browser: Browser, dir: string, nodes: number, withReads: boolean): Promise<StoreRun> {
  const dataDir = path.join(dir, `ui-${nodes}`);
  log(`  filling ${fmt(nodes)} nodes...`);
  await fillNodes(dataDir, nodes);
  const server = await startOrchestrator(dataDir);
  const firstRowsMs: number[] = [];
  const reads: StoreRun["reads"] = [];
  try {
    for (let i = 0; i <= LOADS; i++) {
      const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
      const page = await context.newPage();
      const started = performance.now();
      await page.goto(`${server.url}/ui/#/fleet`);
      await page.locator("table tbody tr").first().waitFor({ timeout: 120_000 });
      const ms = performance.now() - started;
      // The first load warms the server's caches and the browser's compile cache: not counted.
      if (i > 0) firstRowsMs.push(ms);
      await context.close();
    }
    if (withReads) {
      for (const p of READS) {
        const body = Buffer.from(await (await fetch(server.url + p)).arrayBuffer());
        await queryLoad({ kind: "query", url: server.url, paths: [p], durationMs: 1000, concurrency: 1 });
        const result = await queryLoad({ kind: "query", url: server.url, paths: [p], durationMs: 5000, concurrency: 1 });
        const file = path.join(dir, `bare-${reads.length}.json`);
        writeFileSync(file, body);
        const bare = await startPort(BARE, [file]);
        const ceiling = await queryLoad({ kind: "query", url: bare.url, paths: [p], durationMs: 3000, concurrency: 1 }).finally(() => bare.stop());
        reads.push({ path: p, bytes: body.length, result, ceiling });
      }
    }
  } finally {
    await server.stop();
    rmSync(dataDir, { recursive: true, force: true });
  }
  log(`  ${fmt(nodes)} nodes: first rows p50 ${fmt(quantile(firstRowsMs, 0.5))} ms, max ${fmt(Math.max(...firstRowsMs))} ms`);
  return { nodes, firstRowsMs, reads };
}

async function main(): Promise<void> {
  if (!existsSync(CHROMIUM)) throw new Error(`bench/ui-fleet drives Debian's Chromium at ${CHROMIUM}: apt-get install chromium (or set CHROMIUM)`);
  const dir = mkdtempSync(path.join(os.tmpdir(), "ao-bench-ui-"));
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ["--headless", "--no-sandbox", "--disable-gpu"] });
  try {
    log(`ui fleet page: ${fmt(NODES)} nodes against ${fmt(SMALL)}, ${LOADS} loads each`);
    const small = await storeRun(browser, dir, SMALL, false);
    const big = await storeRun(browser, dir, NODES, true);
    const p50 = (r: StoreRun) => quantile(r.firstRowsMs, 0.5);
    const max = (r: StoreRun) => Math.max(...r.firstRowsMs);
    let out = `dashboard fleet page, time to its first rows (Chromium, fresh context per load, ${LOADS} loads)\n`;
    out += `  ${fmt(NODES)} nodes  p50 ${fmt(p50(big))} ms  max ${fmt(max(big))} ms   ${fmt(SMALL)} nodes (ceiling) p50 ${fmt(p50(small))} ms   ratio ${fmt(p50(big) / p50(small), 2)}   budget ${BUDGET_MS} ms: ${max(big) <= BUDGET_MS ? "met" : "MISSED"}\n`;
    for (const r of big.reads) {
      out += `  GET ${r.path} at ${fmt(NODES)} nodes (${fmt(r.bytes)} bytes)  p50 ${fmt(r.result.p50Ms, 2)} ms  p99 ${fmt(r.result.p99Ms, 2)} ms  ${fmt(r.result.requestsPerSecond)} req/s   bare ${fmt(r.ceiling.requestsPerSecond)} req/s   ratio ${fmt(r.result.requestsPerSecond / r.ceiling.requestsPerSecond, 2)}\n`;
    }
    process.stdout.write(out);
    const results = path.join(packageRoot, "bench", "results");
    mkdirSync(results, { recursive: true });
    const file = path.join(results, `ui-fleet-${new Date().toISOString().replace(/[:.]/g, "-")}.json`);
    writeFileSync(file, JSON.stringify({ nodes: NODES, small: SMALL, loads: LOADS, budgetMs: BUDGET_MS, runs: [small, big] }, null, 2) + "\n");
    log(`wrote ${path.relative(packageRoot, file)}`);
  } finally {
    await browser.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
