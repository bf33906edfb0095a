/**
 * The push part of `npm run bench`: BENCH_PUSH_AGENTS (20) real `edgectl run` agents with a
 * 60 s poll interval, and BENCH_PUSH_ROUNDS (5) staged releases, each rolled out to all of them
 * by a one-stage plan. Measured per round: from the stage's opened_at (the server's clock) to
 * each agent's apply command starting (the agent's clock, the same machine), the median and
 * the last. The ceiling is the poll interval: what a stage opening would wait for by polling.
 *
 * Prints a table and writes bench/results/push-<time>.json.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { createOrchestratorClients } from "../clients/index.js";
import { packageRoot } from "../src/paths.js";
import { startOrchestrator } from "./processes.js";
import { startPushFleet } from "./push-fleet.js";

const AGENTS = Number(process.env.BENCH_PUSH_AGENTS ?? 20);
const ROUNDS = Number(process.env.BENCH_PUSH_ROUNDS ?? 5);
const POLL_MS = 60_000;
const DIGEST = `sha256:${"ef".repeat(32)}`;

const log = (line: string) => process.stderr.write(line + "\n");
const fmt = (n: number, digits = 0) => n.toLocaleString("en", { maximumFractionDigits: digits, minimumFractionDigits: digits });
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function main(): Promise<void> {
  const work = mkdtempSync(path.join(os.tmpdir(), "ao-bench-push-"));
  const server = await startOrchestrator(path.join(work, "server"));
  const api = createOrchestratorClients({ baseUrl: server.url });
  const fleet = startPushFleet({ url: server.url, work, channel: "bench-push", count: AGENTS, pollInterval: `${POLL_MS / 1000}s` });
  const rounds: { releaseId: string; medianMs: number; lastMs: number }[] = [];
  try {
    log(`push: ${AGENTS} edgectl agents, poll interval ${POLL_MS / 1000}s, ${ROUNDS} rollouts`);
    await fleet.streamsOpen(120_000);
    for (;;) {
      const { nodes } = await api.nodes.getFleetStatus({ channel: "bench-push" });
      if (nodes.filter((n) => n.lifecycle === "HEALTHY").length === AGENTS) break;
      await sleep(100);
    }
    const firstRepoll = Math.min(...fleet.spawnedAt) + POLL_MS;
    for (let r = 1; r <= ROUNDS; r++) {
      const releaseId = `bp${r}`;
      const planId = `bench-push-${r}`;
      await api.releases.publishRelease({ release: { releaseId, channel: "bench-push", version: `1.0.${r}`, staged: true, artifacts: [{ name: "app", digest: DIGEST }] } });
      await api.rollouts.createRolloutPlan({ plan: { planId, releaseId, stages: [{ stageId: "all", percent: 100 }] } });
      let starts: (number | undefined)[] = [];
      const deadline = Date.now() + 30_000;
      while ((starts = fleet.installStarts(releaseId)).some((t) => t === undefined)) {
        if (Date.now() > deadline) throw new Error(`round ${r}: ${starts.filter((t) => t !== undefined).length} of ${AGENTS} agents started installing within 30 s`);
        await sleep(20);
      }
      let status = (await api.rollouts.getRolloutStatus({ planId })).status!;
      while (status.phase !== "completed") {
        await sleep(50);
        status = (await api.rollouts.getRolloutStatus({ planId })).status!;
      }
      const opened = timestampMs(status.stages[0].openedAt!);
      const latencies = (starts as number[]).map((t) => t - opened);
      if (Math.max(...(starts as number[])) >= firstRepoll) log(`  round ${r}: an install started after the agents' next poll was due: this round may not measure push alone`);
      rounds.push({ releaseId, medianMs: median(latencies), lastMs: Math.max(...latencies) });
      log(`  round ${r}: median ${fmt(median(latencies))} ms, last ${fmt(Math.max(...latencies))} ms`);
    }
  } finally {
    await fleet.stop();
    api.close();
    await server.stop();
    rmSync(work, { recursive: true, force: true });
  }
  const worst = Math.max(...rounds.map((r) => r.lastMs));
  const typical = median(rounds.map((r) => r.medianMs));
  let out = "\nPush: stage opening to the agents' installs starting, against the poll interval (the ceiling without push)\n";
  out += `  ${AGENTS} agents, ${ROUNDS} rollouts   median agent ${fmt(typical)} ms   last agent (worst round) ${fmt(worst)} ms   poll interval ${fmt(POLL_MS)} ms   ratio ${fmt(worst / POLL_MS, 3)}\n`;
  process.stdout.write(out);
  const resultsDir = path.join(packageRoot, "bench", "results");
  mkdirSync(resultsDir, { recursive: true });
  const date = new Date().toISOString();
  const file = path.join(resultsDir, `push-${date.replace(/[:.]/g, "-")}.json`);
  writeFileSync(file, JSON.stringify({ date, machine: { cpus: os.cpus().length, node: process.version }, agents: AGENTS, pollIntervalMs: POLL_MS, rounds }, null, 2) + "\n");
  log(`results written to ${path.relative(process.cwd(), file)}`);
}

await main();
