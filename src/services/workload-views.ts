/** The stored workload rows as WorkloadService messages. */
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { Node } from "../../gen/autonomy/v1/nodes_pb.js";
import {
  PlacementSchema,
  ReplicaSchema,
  ServiceSchema,
  ServiceSpecSchema,
  WorkloadNodeSchema,
  type Placement,
  type PlacementChange,
  type Replica,
  type Service,
  type WorkloadNode,
} from "../../gen/autonomy/v1/workloads_pb.js";
import type { Assignment, Resources, ScheduleChange, Stop, Unschedulable } from "../domain/scheduler.js";
import { parseSpec, replicaId, type WorkloadSpec } from "../domain/workloads.js";
import type { ReplicaRow, ServiceRow, WorkloadNodeRow } from "../store/workload-rows.js";
import type { NodeStanding } from "../workloads/inputs.js";

export function specMessage(s: WorkloadSpec) {
  return create(ServiceSpecSchema, {
    ...s,
    resources: { cpuMillis: BigInt(s.resources.cpuMillis), memoryBytes: BigInt(s.resources.memoryBytes) },
  });
}

export function replicaMessage(r: ReplicaRow): Replica {
  return create(ReplicaSchema, {
    replicaId: replicaId(r.service, r.idx),
    index: r.idx,
    nodeId: r.nodeId,
    generation: BigInt(r.generation),
    desiredState: r.desiredState,
    state: r.state,
    reason: r.reason,
    restarts: r.restarts,
    lastExitCode: r.lastExitCode ?? undefined,
    lastOutput: JSON.parse(r.lastOutput) as string[],
    observedGeneration: BigInt(r.observedGeneration),
    reportedAt: r.reportedAtMs === null ? undefined : timestampFromMs(r.reportedAtMs),
  });
}

/**
 * A service with its replicas: those that should run by index (an index the loop has not
 * placed yet shows as pending, without a node), then those still stopping.
 */
export function serviceMessage(row: ServiceRow, replicas: readonly ReplicaRow[]): Service {
  const spec = parseSpec(row.spec);
  const wanted = replicas.filter((r) => r.desiredState === "running" && r.idx < spec.replicas);
  const placed = new Set(wanted.map((r) => r.idx));
  const pending: ReplicaRow[] = [];
  for (let i = 0; i < spec.replicas && pending.length + placed.size < spec.replicas; i++) {
    if (!placed.has(i)) pending.push({ service: row.name, idx: i, nodeId: "", generation: row.generation, desiredState: "running", state: "pending", reason: "not placed yet", restarts: 0, lastExitCode: null, lastOutput: "[]", observedGeneration: 0, reportedAtMs: null, changedAtMs: row.updatedAtMs });
  }
  const running = [...wanted, ...pending].sort((a, b) => a.idx - b.idx);
  const stopping = replicas.filter((r) => !running.includes(r));
  return create(ServiceSchema, {
    spec: specMessage(spec),
    generation: BigInt(row.generation),
    createdAt: timestampFromMs(row.createdAtMs),
    updatedAt: timestampFromMs(row.updatedAtMs),
    replicas: [...running, ...stopping].map(replicaMessage),
    running: wanted.filter((r) => r.state === "running" && r.generation === row.generation).length,
    unschedulable: wanted.filter((r) => r.state === "unschedulable").length,
  });
}

/** Every service, each with its replicas (rows sorted by service). */
export function serviceMessages(services: readonly ServiceRow[], replicas: readonly ReplicaRow[]): Service[] {
  const byService = new Map<string, ReplicaRow[]>();
  for (const r of replicas) (byService.get(r.service) ?? byService.set(r.service, []).get(r.service)!).push(r);
  return services.map((s) => serviceMessage(s, byService.get(s.name) ?? []));
}

const resources = (r: Resources) => ({ cpuMillis: BigInt(r.cpuMillis), memoryBytes: BigInt(r.memoryBytes) });

export function workloadNodeMessage(row: WorkloadNodeRow, fleet: Node | undefined, standing: NodeStanding, reserved: Resources, replicaIds: string[]): WorkloadNode {
  return create(WorkloadNodeSchema, {
    nodeId: row.nodeId,
    labels: fleet?.labels ?? {},
    lifecycle: standing.lifecycle,
    schedulable: standing.schedulable,
    capacity: resources({ cpuMillis: row.capacityCpuMillis, memoryBytes: row.capacityMemoryBytes }),
    usage: resources({ cpuMillis: row.usageCpuMillis, memoryBytes: row.usageMemoryBytes }),
    reserved: resources(reserved),
    replicaIds,
    reportedAt: timestampFromMs(row.reportedAtMs),
  });
}

const change = (a: Assignment | Stop | Unschedulable, generation = 0): PlacementChange =>
  ({
    $typeName: "autonomy.v1.PlacementChange",
    service: a.service,
    index: a.index,
    nodeId: "nodeId" in a ? a.nodeId : "",
    generation: BigInt("generation" in a ? a.generation : generation),
    reason: "reason" in a ? a.reason : "",
  }) satisfies PlacementChange;

/** A scheduler's decisions as the Placement message; `generations` fills in those of unschedulable replicas. */
export function placementMessage(c: ScheduleChange, generations: ReadonlyMap<string, number> = new Map()): Placement {
  return create(PlacementSchema, {
    launches: c.launches.map((a) => change(a)),
    updates: c.updates.map((a) => change(a)),
    stops: c.stops.map((a) => change(a)),
    unschedulable: c.unschedulable.map((u) => change(u, generations.get(u.service) ?? 0)),
  });
}

export { change as placementChange };
