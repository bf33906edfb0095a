import { mkdirSync, readFileSync } from "node:fs";
import { writeFileAtomic } from "../files.js";
import os from "node:os";
import path from "node:path";

/** What the agent keeps on the node between runs. */
export interface AgentState {
  nodeId?: string;
  channel?: string;
  labels?: Record<string, string>;
  /** The release the node runs: the last one installed and checked healthy. */
  currentReleaseId?: string;
  /** The last release whose install or check failed; not tried again until another is desired. */
  failedReleaseId?: string;
  /** The sequence of the last message taken in from the push stream (a decimal string). */
  pushSequence?: string;
  /** The last reapply request honoured (./reapply.ts): each is honoured once. */
  reapplyToken?: string;
}

/** `$XDG_STATE_HOME/autonomyops/edgectl`, falling back to `~/.local/state/autonomyops/edgectl`. */
export function defaultStateDir(): string {
  const base = process.env.XDG_STATE_HOME || path.join(os.homedir(), ".local", "state");
  return path.join(base, "autonomyops", "edgectl");
}

const FILE = "agent.json";

export function readState(dir: string): AgentState {
  try {
    return JSON.parse(readFileSync(path.join(dir, FILE), "utf8")) as AgentState;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return {};
    throw new Error(`${path.join(dir, FILE)}: unreadable agent state (${(err as Error).message}); move it away to start afresh`);
  }
}

/** Replaces the state file atomically and durably: a crash leaves the old state or the new one. */
export function writeState(dir: string, state: AgentState): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  writeFileAtomic(path.join(dir, FILE), JSON.stringify(state, null, 2) + "\n", 0o600);
}
