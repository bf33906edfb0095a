import { spawn } from "node:child_process";
import type { Logger } from "../observability/logger.js";

/** Most output of a hook kept for the ack message. */
export const MESSAGE_TAIL = 1000;

export interface HookResult {
  /** Exit status; 128 + the signal number's stand-in when a signal ended it. */
  code: number;
  /** The last MESSAGE_TAIL bytes of stdout and stderr together. */
  output: string;
  /** The agent stopped while the hook ran; the hook's process group was terminated. */
  interrupted: boolean;
}

/**
 * Runs a shell command with the release in its environment, in a process group of its own.
 * Every line it prints goes to the agent log. When the signal aborts (SIGTERM to the agent), the
 * whole group gets SIGTERM, so children of the shell stop too; whatever is still running after
 * `graceMs` gets SIGKILL. Resolves when the group's leader has exited.
 */
export function runHook(
  name: string,
  command: string,
  env: NodeJS.ProcessEnv,
  signal: AbortSignal,
  logger: Logger,
  graceMs = 5000,
): Promise<HookResult> {
  return new Promise((resolve, reject) => {
    const child = spawn("/bin/sh", ["-c", command], { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"], detached: true });
    let output = "";
    let interrupted = false;
    const partial = { stdout: "", stderr: "" };
    const keep = (stream: "stdout" | "stderr") => (chunk: Buffer) => {
      const text = chunk.toString("utf8");
      output = (output + text).slice(-MESSAGE_TAIL);
      const lines = (partial[stream] + text).split("\n");
      partial[stream] = lines.pop() ?? "";
      for (const line of lines) if (line.trim() !== "") logger.info({ hook: name, stream }, line);
    };
    child.stdout.on("data", keep("stdout"));
    child.stderr.on("data", keep("stderr"));
    const group = (sig: NodeJS.Signals) => {
      try {
        if (child.pid !== undefined) process.kill(-child.pid, sig);
      } catch {
        // The group is gone already.
      }
    };
    let killTimer: NodeJS.Timeout | undefined;
    const onAbort = () => {
      interrupted = true;
      logger.warn({ hook: name, grace_ms: graceMs }, "stopping the hook: SIGTERM to its process group");
      group("SIGTERM");
      killTimer = setTimeout(() => {
        logger.warn({ hook: name }, "the hook did not stop in time: SIGKILL to its process group");
        group("SIGKILL");
      }, graceMs);
    };
    if (signal.aborted) onAbort();
    else signal.addEventListener("abort", onAbort, { once: true });
    child.once("error", (err) => {
      signal.removeEventListener("abort", onAbort);
      reject(err);
    });
    child.once("close", (code, sig) => {
      signal.removeEventListener("abort", onAbort);
      if (killTimer) clearTimeout(killTimer);
      // Children the shell left behind in the group go with it.
      if (interrupted) group("SIGKILL");
      for (const stream of ["stdout", "stderr"] as const) {
        if (partial[stream].trim() !== "") logger.info({ hook: name, stream }, partial[stream]);
      }
      resolve({ code: code ?? (sig ? 128 : 1), output: output.trim(), interrupted });
    });
  });
}
