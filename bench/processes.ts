import { spawn, type ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";
import path from "node:path";
import { packageRoot } from "../src/paths.js";

export interface Child {
  proc: ChildProcess;
  /** The first stdout/stderr line that matched, parsed by the caller's matcher. */
  ready: string;
  /** Peak resident set size so far, in MiB (Linux VmHWM). */
  peakRssMiB(): number;
  stop(): Promise<void>;
}

/**
 * Spawns `node script args` (or, with `direct`, the executable script itself, through its #!
 * line, as users run it) and waits for a line on stdout or stderr that `match` accepts.
 */
export async function spawnUntil(
  script: string,
  args: string[],
  match: (line: string) => string | undefined,
  direct = false,
  env: NodeJS.ProcessEnv = {},
): Promise<Child> {
  const [command, argv] = direct ? [script, args] : [process.execPath, [script, ...args]];
  const proc = spawn(command, argv, { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, ...env } });
  const exited = new Promise<void>((resolve) => proc.once("exit", () => resolve()));
  let onData: (chunk: Buffer) => void = () => {};
  const ready = await new Promise<string>((resolve, reject) => {
    let seen = "";
    onData = (chunk: Buffer) => {
      seen += chunk.toString();
      for (const line of seen.split("\n")) {
        const value = match(line);
        if (value !== undefined) return resolve(value);
      }
    };
    proc.stdout!.on("data", onData);
    proc.stderr!.on("data", onData);
    void exited.then(() => reject(new Error(`${script} exited before it was ready:\n${seen}`)));
  });
  // Once ready, the lines are no longer matched: re-reading all of them at every chunk made the
  // bench process's cost grow with the square of the child's output (a server logging a flood
  // of refused requests), taking CPU from the server and its load on a machine of few cores.
  proc.stdout!.off("data", onData);
  proc.stderr!.off("data", onData);
  // Keep draining the pipes so the child never blocks on a full one.
  proc.stdout!.resume();
  proc.stderr!.resume();
  return {
    proc,
    ready,
    peakRssMiB() {
      const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${proc.pid}/status`, "utf8"));
      return m ? Number(m[1]) / 1024 : NaN;
    },
    async stop() {
      proc.kill("SIGTERM");
      await exited;
    },
  };
}

/** Runs a script to completion and returns its stdout. */
export async function runToEnd(script: string, args: string[]): Promise<string> {
  const proc = spawn(process.execPath, [script, ...args], { stdio: ["ignore", "pipe", "inherit"] });
  let out = "";
  proc.stdout!.on("data", (c: Buffer) => (out += c.toString()));
  const code = await new Promise<number | null>((resolve) => proc.once("exit", resolve));
  if (code !== 0) throw new Error(`${script} failed with ${code}`);
  return out;
}

const dist = path.join(packageRoot, "dist");
const ORCHESTRATOR = path.join(dist, "src", "cli", "orchestrator", "main.js");

/**
 * The load generators send no credentials, so the servers under test run with RBAC
 * enforcement off (the authorization interceptor still runs and identifies every call).
 */
const BENCH_ENV = { AUTONOMY_RBAC_ENFORCEMENT: "0" };

/**
 * `autonomy-orchestrator serve` on port 0, run through its #! line as users run it; ready once it
 * logs "serving". `env` overrides the environment (AUTONOMY_RBAC_ENFORCEMENT=1 for a server that
 * checks credentials).
 */
export async function startOrchestrator(dataDir: string, extraArgs: string[] = [], env: NodeJS.ProcessEnv = {}): Promise<Child & { url: string }> {
  const args = ["serve", "--listen", "127.0.0.1:0", "--data-dir", dataDir, ...extraArgs];
  const child = await spawnUntil(ORCHESTRATOR, args, (line) => {
    try {
      const record = JSON.parse(line) as { msg?: string; url?: string };
      return record.msg === "serving" ? record.url : undefined;
    } catch {
      return undefined;
    }
  }, true, { ...BENCH_ENV, ...env });
  return { ...child, url: child.ready };
}

/** A bench helper server (bare-h2.js, peer.js) that prints its port when it listens. */
export async function startPort(script: string, args: string[]): Promise<Child & { url: string }> {
  const child = await spawnUntil(script, args, (line) => (/^\d+$/.test(line.trim()) ? line.trim() : undefined));
  return { ...child, url: `http://127.0.0.1:${child.ready}` };
}
