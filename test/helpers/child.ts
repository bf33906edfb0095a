import { execFile, spawn, type ChildProcess } from "node:child_process";
import path from "node:path";
import { promisify } from "node:util";
import { packageRoot } from "../../src/paths.js";

export const ORCHESTRATOR_BIN = path.join(packageRoot, "dist", "src", "cli", "orchestrator", "main.js");
export const AUTONOMY_BIN = path.join(packageRoot, "dist", "src", "cli", "autonomy", "main.js");
export const EDGECTL_BIN = path.join(packageRoot, "dist", "src", "cli", "edgectl", "main.js");

export interface ChildServer {
  url: string;
  proc: ChildProcess;
  /** Parsed JSON log lines (stderr) so far. */
  lines: Record<string, unknown>[];
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  kill(signal?: NodeJS.Signals): Promise<void>;
}

/**
 * Runs `autonomy-orchestrator serve` (the built program) on 127.0.0.1, port 0, and waits until
 * it serves. RBAC enforcement is off unless `env` says otherwise: the tests of other features
 * call without credentials; test/rbac.test.ts runs with it on.
 */
export async function startChildServer(args: string[], env: NodeJS.ProcessEnv = {}): Promise<ChildServer> {
  const proc = spawn(process.execPath, [ORCHESTRATOR_BIN, "serve", "--listen", "127.0.0.1:0", "--log-format", "json", ...args], {
    env: { ...process.env, AUTONOMY_RBAC_ENFORCEMENT: "0", ...env },
    stdio: ["ignore", "ignore", "pipe"],
  });
  const lines: Record<string, unknown>[] = [];
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    proc.once("exit", (code, signal) => resolve({ code, signal })),
  );
  let buffered = "";
  const url = await new Promise<string>((resolve, reject) => {
    proc.stderr!.on("data", (chunk: Buffer) => {
      buffered += chunk.toString("utf8");
      let nl;
      while ((nl = buffered.indexOf("\n")) >= 0) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        try {
          const record = JSON.parse(line) as Record<string, unknown>;
          lines.push(record);
          if (record.msg === "serving") resolve(String(record.url));
        } catch {
          lines.push({ raw: line });
        }
      }
    });
    void exited.then(({ code }) => reject(new Error(`server exited (${code}) before serving: ${JSON.stringify(lines)}`)));
  });
  return {
    url,
    proc,
    lines,
    exited,
    async kill(signal = "SIGTERM") {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
      await exited;
    },
  };
}

/** What a program run to its end printed, and its exit status. */
export interface ProgramRun {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs one of the built programs (node BIN ARGS) to its end; a non-zero exit is a result, not an error. */
export async function runProgram(bin: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<ProgramRun> {
  try {
    const { stdout, stderr } = await promisify(execFile)(process.execPath, [bin, ...args], { env: { ...process.env, ...env } });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

/** A run as `{code, out}`: stdout, and stderr after it when the program failed. */
export function outputOf(r: ProgramRun): { code: number; out: string } {
  return { code: r.code, out: r.code === 0 ? r.stdout : r.stdout + r.stderr };
}
