/**
 * A fleet of real `edgectl run` agents (the built program) on one channel, whose apply command
 * writes the time it started (ms since the epoch) to a file per node. Used by the push test
 * (test/agent-push-e2e.test.ts) and the push bench (bench/push.ts).
 */
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { readAgentStatus } from "../src/agent/status.js";
import { packageRoot } from "../src/paths.js";

const EDGECTL = path.join(packageRoot, "dist", "src", "cli", "edgectl", "main.js");

export interface PushFleet {
  nodeIds: string[];
  /** When each agent was spawned (its first poll is after this, its next one a poll interval later). */
  spawnedAt: number[];
  /** Resolves once every agent is HEALTHY-ready: its push stream open (as status.json says). */
  streamsOpen(timeoutMs: number): Promise<void>;
  /** When each node's apply command started installing `releaseId`, undefined while it has not. */
  installStarts(releaseId: string): (number | undefined)[];
  output(i: number): string;
  stop(): Promise<void>;
}

export function startPushFleet(opts: { url: string; work: string; channel: string; count: number; pollInterval: string; push?: boolean; extraEnv?: NodeJS.ProcessEnv }): PushFleet {
  const nodeIds = Array.from({ length: opts.count }, (_, i) => `${opts.channel}-${String(i + 1).padStart(3, "0")}`);
  const procs: ChildProcess[] = [];
  const outputs: string[] = [];
  const spawnedAt: number[] = [];
  const stateDir = (id: string) => path.join(opts.work, id);
  const mark = (id: string, releaseId: string) => path.join(opts.work, `${id}.${releaseId}.start`);
  for (const [i, id] of nodeIds.entries()) {
    spawnedAt.push(Date.now());
    const proc = spawn(
      process.execPath,
      [EDGECTL, "--state-dir", stateDir(id), "run", "--node-id", id, "--channel", opts.channel, "--heartbeat-interval", "1s", "--poll-interval", opts.pollInterval,
        "--apply-command", `date +%s%3N > "$MARKS.$AUTONOMY_RELEASE_ID.start"`, ...(opts.push === false ? ["--no-push"] : [])],
      { env: { ...process.env, ...opts.extraEnv, AUTONOMY_ORCHESTRATOR_URL: opts.url, MARKS: path.join(opts.work, id) }, stdio: ["ignore", "pipe", "pipe"] },
    );
    outputs[i] = "";
    proc.stdout!.on("data", (c: Buffer) => (outputs[i] += c.toString()));
    proc.stderr!.on("data", (c: Buffer) => (outputs[i] += c.toString()));
    procs.push(proc);
  }
  return {
    nodeIds,
    spawnedAt,
    async streamsOpen(timeoutMs) {
      const end = Date.now() + timeoutMs;
      for (;;) {
        const open = nodeIds.filter((id) => {
          const s = readAgentStatus(stateDir(id));
          return s?.connection.state === "ok" && (opts.push === false ? true : s.updates.startsWith("pushed"));
        });
        if (open.length === nodeIds.length) return;
        if (Date.now() > end) throw new Error(`only ${open.length} of ${nodeIds.length} agents are connected${opts.push === false ? "" : " with their push stream open"}`);
        await sleep(100);
      }
    },
    installStarts(releaseId) {
      return nodeIds.map((id) => {
        const file = mark(id, releaseId);
        if (!existsSync(file)) return undefined;
        const text = readFileSync(file, "utf8").trim();
        return text === "" ? undefined : Number(text);
      });
    },
    output: (i) => outputs[i],
    async stop() {
      await Promise.all(
        procs.map(
          (p) =>
            new Promise<void>((resolve) => {
              if (p.exitCode !== null || p.signalCode !== null) return resolve();
              p.once("exit", () => resolve());
              p.kill("SIGTERM");
            }),
        ),
      );
    },
  };
}
