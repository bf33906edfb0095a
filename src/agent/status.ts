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

export type LastAck = NonNullable<AgentStatus["last_ack"]>;

const LAST_ACK_FILE = "last-ack.json";

export function lastAckFile(dir: string): string {
  return path.join(dir, LAST_ACK_FILE);
}

/**
 * The last acknowledgement the agent sent as node `nodeId`, kept in last-ack.json so that it
 * outlives the agent (a restart, kill -9). Absent, or sent as another node (the state dir was
 * enrolled again under another id): undefined. A file that names no node (written by an older
 * agent) is taken as this node's. Unreadable or not an ack: undefined, and `warn` says why; it
 * is never a reason to stop.
 */
export function readLastAck(dir: string, nodeId: string | undefined, warn: (message: string) => void = () => {}): LastAck | undefined {
  let text: string;
  try {
    text = readFileSync(lastAckFile(dir), "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") warn(`${lastAckFile(dir)}: unreadable (${(err as Error).message}); ignored`);
    return undefined;
  }
  try {
    const ack = JSON.parse(text) as (Partial<LastAck> & { node_id?: unknown }) | null;
    if (ack && typeof ack.release_id === "string" && typeof ack.state === "string" && typeof ack.at === "string") {
      if (typeof ack.node_id === "string" && nodeId !== undefined && ack.node_id !== nodeId) return undefined;
      return { release_id: ack.release_id, state: ack.state, at: ack.at, message: typeof ack.message === "string" ? ack.message : undefined };
    }
    warn(`${lastAckFile(dir)}: not an acknowledgement (release_id, state, at); ignored`);
  } catch (err) {
    warn(`${lastAckFile(dir)}: not JSON (${(err as Error).message}); ignored`);
  }
  return undefined;
}

/** Replaces last-ack.json atomically and durably (temporary file, fsync, rename), naming the node that sent the ack. */
export function writeLastAck(dir: string, nodeId: string, ack: LastAck): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  writeFileAtomic(lastAckFile(dir), JSON.stringify({ node_id: nodeId, ...ack }, null, 2) + "\n", 0o600);
}

export function writeAgentStatus(dir: string, status: AgentStatus): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  writeFileAtomic(statusFile(dir), JSON.stringify(status, null, 2) + "\n", 0o600);
}
