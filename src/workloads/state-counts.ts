import type { ReplicaRow } from "../store/workload-rows.js";
import type { ReconcileWrites } from "./reconcile.js";

/** Every state a replica row can be in, so the gauge shows 0 for those none is in. */
export const REPLICA_STATES = ["pending", "starting", "running", "backoff", "crashloop", "exited", "stopping", "stopped", "failed", "unschedulable", "lost"] as const;

/** Replicas by state once a pass's writes are in (rows removed are not counted; a state no agent should report counts as "other"). */
export function replicaStateCounts(rows: readonly ReplicaRow[], writes: Pick<ReconcileWrites, "upserts" | "removals">): Record<string, number> {
  const key = (r: { service: string; idx: number; nodeId: string }) => `${r.service}\u0000${r.idx}\u0000${r.nodeId}`;
  const state = new Map(rows.map((r) => [key(r), r.state]));
  for (const u of writes.upserts) state.set(key(u), u.state ?? state.get(key(u)) ?? "pending");
  for (const r of writes.removals) state.delete(key(r));
  const counts: Record<string, number> = Object.fromEntries([...REPLICA_STATES, "other"].map((s) => [s, 0]));
  for (const s of state.values()) counts[(REPLICA_STATES as readonly string[]).includes(s) ? s : "other"]++;
  return counts;
}
