import { mkdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { writeFileAtomic } from "../files.js";
import type { WorkloadStatus } from "./workloads/runner.js";

/** What a running agent last knew, for `edgectl status` (written by `edgectl run` to status.json). */
export interface AgentStatus {
  pid: number;
  started_at: string;
  updated_at: string;
  node_id: string;
  channel: string;
  orchestrator_url: string;
  /** ok, or why the orchestrator cannot be reached (a TransportFailureKind, or "error"). */
  connection: { state: string; since: string; message?: string; last_contact_at?: string; retry_in_ms?: number };
  /** How the agent learns of its desired release. */
  updates: string;
  last_ack?: { release_id: string; state: string; at: string; message?: string };
  /** A release being installed right now. */
  installing?: string;
  /** The client certificate the agent presents (absolute path), when it uses one. */
  tls_cert_file?: string;
  /** The replicas it runs or ran, the node's capacity and use, and how its reports go. */
  workloads?: WorkloadStatus;
  stopped_at?: string;
}

const FILE = "status.json";

export function statusFile(dir: string): string {
  return path.join(dir, FILE);
}

export function readAgentStatus(dir: string): AgentStatus | undefined {
  try {
    return JSON.parse(readFileSync(statusFile(dir), "utf8")) as AgentStatus;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new Error(`${statusFile(dir)}: unreadable (${(err as Error).message})`);
  }
}

export function writeAgentStatus(dir: string, status: AgentStatus): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  writeFileAtomic(statusFile(dir), JSON.stringify(status, null, 2) + "\n", 0o600);
}
