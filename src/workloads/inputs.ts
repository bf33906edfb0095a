/**
 * What the scheduler is given, from the stored workload state and the fleet: pure, shared by the
 * reconcile loop and Apply's dry run, so a dry run answers what the loop will do.
 *
 * A node takes new replicas while it is schedulable: HEALTHY (not drained, heartbeating) and its
 * last workload report is no older than the stale threshold. A node whose reports stopped keeps
 * the replicas it has (the scheduler sees it with no room beyond them) until it is lost: no
 * report for --replica-lost-after, and not within that long of this replica becoming leader.
 * Then it is left out, and the scheduler stops its replicas ("node lost") and places them again.
 */
import { livenessOf, nodeLifecycle, type Lifecycle } from "../domain/nodes.js";
import { SchedulerState, type Assignment, type Resources, type SchedulePlan, type SchedulerNode, type SchedulerService } from "../domain/scheduler.js";
import { parseSpec, schedulerService } from "../domain/workloads.js";
import type { Node } from "../../gen/autonomy/v1/nodes_pb.js";
import type { ReplicaRow, ServiceRow, WorkloadNodeRow, WorkloadSnapshot } from "../store/workload-rows.js";

/** --replica-lost-after: a node without a workload report for longer is lost and its replicas placed elsewhere. */
export const DEFAULT_REPLICA_LOST_AFTER_MS = 120_000;

export interface PlacementSettings {
  nowMs: number;
  /** --node-stale-after. */
  staleAfterMs: number;
  /** --replica-lost-after. */
  lostAfterMs: number;
  /** No node is lost before this (this replica became leader, plus the lost-after again). */
  graceUntilMs: number;
}

/** How the scheduler sees one node that reports workloads. */
export interface NodeStanding {
  lifecycle: Lifecycle | "UNENROLLED";
  /** Takes new replicas. */
  schedulable: boolean;
  /** Its replicas are placed elsewhere. */
  lost: boolean;
}

export function nodeStanding(fleet: Node | undefined, report: WorkloadNodeRow, s: PlacementSettings): NodeStanding {
  const lifecycle = fleet ? nodeLifecycle(livenessOf(fleet), s.nowMs, s.staleAfterMs) : "UNENROLLED";
  const age = s.nowMs - report.reportedAtMs;
  const lost = !fleet || (age > s.lostAfterMs && s.nowMs > s.graceUntilMs);
  return { lifecycle, lost, schedulable: !lost && lifecycle === "HEALTHY" && age <= s.staleAfterMs };
}

/** The placed replicas that should run: the scheduler's current assignments. */
export function currentAssignments(replicas: readonly ReplicaRow[]): Assignment[] {
  return replicas.filter((r) => r.desiredState === "running" && r.nodeId !== "").map((r) => ({ service: r.service, index: r.idx, nodeId: r.nodeId, generation: r.generation }));
}

export function schedulerServices(services: readonly ServiceRow[]): SchedulerService[] {
  return services.map((s) => schedulerService(parseSpec(s.spec), s.generation));
}

/** What the current assignments reserve on each node. */
export function reservedByNode(assignments: readonly Assignment[], services: readonly SchedulerService[]): Map<string, Resources> {
  const byName = new Map(services.map((s) => [s.name, s]));
  const out = new Map<string, Resources>();
  for (const a of assignments) {
    const r = byName.get(a.service)?.resources;
    if (!r) continue;
    const sum = out.get(a.nodeId) ?? { cpuMillis: 0, memoryBytes: 0 };
    out.set(a.nodeId, { cpuMillis: sum.cpuMillis + r.cpuMillis, memoryBytes: sum.memoryBytes + r.memoryBytes });
  }
  return out;
}

export interface LoadedPlacement {
  state: SchedulerState;
  /** The pass over the stored state: what the loop would write now. */
  plan: SchedulePlan;
  standing: Map<string, NodeStanding>;
  services: SchedulerService[];
}

/** Loads the stored services, the reporting nodes and the current placement into a scheduler. */
export function loadPlacement(snapshot: WorkloadSnapshot, fleet: ReadonlyMap<string, Node>, s: PlacementSettings): LoadedPlacement {
  const services = schedulerServices(snapshot.services);
  const current = currentAssignments(snapshot.replicas);
  const reserved = reservedByNode(current, services);
  const standing = new Map<string, NodeStanding>();
  const nodes: SchedulerNode[] = [];
  for (const report of snapshot.nodes) {
    const node = fleet.get(report.nodeId);
    const st = nodeStanding(node, report, s);
    standing.set(report.nodeId, st);
    if (st.lost) continue;
    const capacity = { cpuMillis: report.capacityCpuMillis, memoryBytes: report.capacityMemoryBytes };
    const labels = node?.labels ?? {};
    const drained = st.lifecycle === "DRAINING";
    if (st.schedulable || drained) {
      nodes.push({ id: report.nodeId, labels, schedulable: st.schedulable, capacity });
    } else {
      // Not reporting, not lost yet: it keeps what it runs and takes nothing more.
      const r = reserved.get(report.nodeId) ?? { cpuMillis: 0, memoryBytes: 0 };
      nodes.push({ id: report.nodeId, labels, schedulable: true, capacity: { cpuMillis: Math.min(r.cpuMillis, capacity.cpuMillis), memoryBytes: Math.min(r.memoryBytes, capacity.memoryBytes) } });
    }
  }
  const state = new SchedulerState();
  const plan = state.load(nodes, services, current);
  return { state, plan, standing, services };
}

/** What WorkloadService and ReportWorkloads tell the reconcile loop, and ask of it. */
export interface WorkloadHooks {
  /** Services were applied or deleted. */
  changed(): void;
  /** A node reported its workloads. */
  reported(nodeId: string): void;
  /** The settings the loop places with now (its grace after becoming leader included). */
  settings(nowMs: number): PlacementSettings;
}
