import type { RestartPolicy } from "./spec.js";

/** How a replica's process ended, as far as the agent saw it. */
export interface ExitInfo {
  code: number | null;
  signal: string | null;
  /** The process could not be started at all (command not found, spawn error): why. */
  startError?: string;
}

export interface BackoffOptions {
  initialMs: number;
  maxMs: number;
}

export interface CrashloopOptions {
  restarts: number;
  windowMs: number;
}

export const DEFAULT_BACKOFF: BackoffOptions = { initialMs: 1000, maxMs: 60_000 };
export const DEFAULT_CRASHLOOP: CrashloopOptions = { restarts: 5, windowMs: 60_000 };

/** What a replica remembers between its runs to decide the next delay. */
export interface RestartMemory {
  /** When each restart of the window was decided (ms epoch), oldest first. */
  restartTimes: number[];
  /** Quick failures in a row: the exponent of the backoff. */
  streak: number;
}

export type RestartDecision =
  | { restart: false; state: "exited" | "failed"; reason: string }
  | { restart: true; state: "backoff" | "crashloop"; delayMs: number; reason: string };

/** Whether the policy restarts a process that ended this way. */
export function wantsRestart(policy: RestartPolicy, exit: ExitInfo): boolean {
  if (policy === "always") return true;
  if (policy === "never") return false;
  return exit.startError !== undefined || exit.signal !== null || exit.code !== 0;
}

/** "exited with code 1", "killed by SIGSEGV", "cannot start: command not found: foo". */
export function describeExit(exit: ExitInfo): string {
  if (exit.startError !== undefined) return `cannot start: ${exit.startError}`;
  if (exit.signal !== null) return `killed by ${exit.signal}`;
  return `exited with code ${exit.code ?? "unknown"}`;
}

/** 250ms, 2s, 1.5s, 60s. */
export function formatDuration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)}ms`;
  const s = ms / 1000;
  return `${Number.isInteger(s) ? s : s.toFixed(1)}s`;
}

/**
 * Decides what follows the end of a replica's process that nobody asked to stop. Pure: it
 * updates `memory` and answers the next state.
 *
 * - The restart policy decides whether it restarts at all (`exited`, or `failed` when it could
 *   not even start, otherwise).
 * - A run that lasted a whole crashloop window was healthy: the backoff starts again from
 *   `initialMs`. Otherwise each quick failure doubles the delay, up to `maxMs`.
 * - When the replica was restarted `crashloop.restarts` times within `crashloop.windowMs`
 *   already, the state is `crashloop` and the delay is `maxMs`: the agent keeps trying, at the
 *   slowest pace, and says so; it leaves crashloop when the restarts of the window fall back
 *   under the budget.
 */
export function decideRestart(
  policy: RestartPolicy,
  exit: ExitInfo,
  ranMs: number,
  now: number,
  memory: RestartMemory,
  backoff: BackoffOptions,
  crashloop: CrashloopOptions,
): RestartDecision {
  const how = describeExit(exit);
  if (!wantsRestart(policy, exit)) {
    return exit.startError !== undefined
      ? { restart: false, state: "failed", reason: how }
      : { restart: false, state: "exited", reason: `${how} (restart policy ${policy})` };
  }
  if (ranMs >= crashloop.windowMs) memory.streak = 0;
  memory.restartTimes = memory.restartTimes.filter((t) => t > now - crashloop.windowMs);
  const looping = memory.restartTimes.length >= crashloop.restarts;
  memory.restartTimes.push(now);
  memory.streak++;
  if (looping) {
    const delayMs = backoff.maxMs;
    return {
      restart: true,
      state: "crashloop",
      delayMs,
      reason: `crashloop: ${memory.restartTimes.length - 1} restarts in ${formatDuration(crashloop.windowMs)}; ${how}, restarting in ${formatDuration(delayMs)}`,
    };
  }
  const delayMs = Math.min(backoff.initialMs * 2 ** (memory.streak - 1), backoff.maxMs);
  return { restart: true, state: "backoff", delayMs, reason: `${how}, restarting in ${formatDuration(delayMs)}` };
}
