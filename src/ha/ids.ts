import { randomBytes } from "node:crypto";
import os from "node:os";

/** This process's replica id (its holder_id when it leads): host, pid, and a random tag. */
export function newReplicaId(): string {
  return `${os.hostname().slice(0, 24)}:${process.pid}:${randomBytes(3).toString("hex")}`;
}

/** The application_name of a replica's sessions: its store pool, and its election connection. */
export const storeSessionName = (replicaId: string) => `autonomy-store ${replicaId}`;
export const electionSessionName = (replicaId: string) => `autonomy-leader ${replicaId}`;

/**
 * The store's URL in HA mode: its sessions named after the replica (so a successor can end the
 * sessions of a leader that stopped answering, and any transaction it left open), and a
 * transaction left idle is ended by the server after the lease.
 */
export function storeUrl(url: string, replicaId: string, leaseMs: number): string {
  const u = new URL(url);
  if (!u.searchParams.has("application_name")) u.searchParams.set("application_name", storeSessionName(replicaId));
  if (!u.searchParams.has("options")) u.searchParams.set("options", `-c idle_in_transaction_session_timeout=${leaseMs}`);
  return u.toString();
}
