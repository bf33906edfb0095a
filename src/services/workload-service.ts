/**
 * WorkloadService: services applied and deleted (validated whole, one transaction, audited),
 * and what runs of them. The leader's reconcile loop (src/workloads/controller.ts) does the
 * placing; Apply's dry run asks the same scheduler over the same inputs without writing.
 */
import type { ServiceImpl } from "@connectrpc/connect";
import type { Node } from "../../gen/autonomy/v1/nodes_pb.js";
import type { WorkloadService } from "../../gen/autonomy/v1/workloads_pb.js";
import { NotFoundError } from "../domain/errors.js";
import { checkId } from "../domain/fields.js";
import { STOP_REASONS, type ScheduleChange } from "../domain/scheduler.js";
import { replicaId, schedulerService, serviceChange, validateApply } from "../domain/workloads.js";
import type { Metrics } from "../observability/metrics.js";
import type { SightingBuffer } from "../store/sightings.js";
import type { Store } from "../store/store.js";
import { requireWorkloadVersion } from "../store/write-rules.js";
import { currentAssignments, loadPlacement, nodeStanding, reservedByNode, schedulerServices, type WorkloadHooks } from "../workloads/inputs.js";
import { actorOf, auditRecord } from "./audit-record.js";
import { nodeView } from "./node-service.js";
import { placementChange, placementMessage, serviceMessage, serviceMessages, workloadNodeMessage } from "./workload-views.js";

export interface WorkloadServiceDeps {
  store: Store;
  sightings: SightingBuffer;
  staleAfterMs: number;
  metrics: Metrics;
  workloads: WorkloadHooks;
}

/**
 * The nodes that report workloads (the only ones placement looks up), by id, each with its
 * newest buffered sighting. The rest of the fleet is never read: a resync costs the workload
 * nodes, not 100,000 rows on the event loop.
 */
export async function fleetById(deps: Pick<WorkloadServiceDeps, "store" | "sightings" | "staleAfterMs">, nowMs: number): Promise<Map<string, Node>> {
  const nodes = await deps.store.listNodes({ reportingWorkloads: true });
  return new Map(nodes.map((n) => [n.nodeId, nodeView(n, deps.sightings, nowMs, deps.staleAfterMs)]));
}

const optionalVersion = (v: bigint | undefined) => (v === undefined ? undefined : Number(v));

export function createWorkloadService(deps: WorkloadServiceDeps): ServiceImpl<typeof WorkloadService> {
  const { store } = deps;
  return {
    async apply(req, ctx) {
      const specs = validateApply(req.services);
      const expectedVersion = optionalVersion(req.expectedVersion);
      const nowMs = Date.now();
      const snapshot = await store.workloadSnapshot();
      const loaded = loadPlacement(snapshot, await fleetById(deps, nowMs), deps.workloads.settings(nowMs));
      const stored = new Map(snapshot.services.map((s) => [s.name, s]));
      const planned = specs.map((spec) => ({ name: spec.name, ...serviceChange(stored.get(spec.name), spec) }));
      const placement: ScheduleChange = { launches: [], updates: [], stops: [], unschedulable: [] };
      specs.forEach((spec, i) => {
        const c = loaded.state.applyService(schedulerService(spec, planned[i].generation));
        placement.launches.push(...c.launches);
        placement.updates.push(...c.updates);
        placement.stops.push(...c.stops);
        placement.unschedulable.push(...c.unschedulable);
      });
      const generations = new Map(planned.map((p) => [p.name, p.generation]));
      if (req.dryRun) {
        requireWorkloadVersion(snapshot.version, expectedVersion);
        return { version: BigInt(snapshot.version), changes: planned.map((p) => ({ ...p, generation: BigInt(p.generation) })), placement: placementMessage(placement, generations), dryRun: true };
      }
      const names = specs.map((s) => s.name);
      const audit = auditRecord(actorOf(ctx), {
        eventName: "workload.applied",
        category: "system",
        action: "apply",
        resourceType: "service",
        resource: names.length === 1 ? names[0] : `${names.length} services`,
        fields: { services: names, expected_version: expectedVersion ?? null },
      });
      const result = await store.applyWorkloads({ specs, expectedVersion, atMs: nowMs, audit });
      if (result.changes.some((c) => c.change !== "unchanged")) deps.workloads.changed();
      return {
        version: BigInt(result.version),
        changes: result.changes.map((c) => ({ ...c, generation: BigInt(c.generation) })),
        placement: placementMessage(placement, generations),
        dryRun: false,
      };
    },

    async listServices() {
      const snapshot = await store.workloadSnapshot();
      return { items: serviceMessages(snapshot.services, snapshot.replicas), version: BigInt(snapshot.version) };
    },

    async getService(req) {
      checkId(req.name, "name", true);
      const snapshot = await store.workloadSnapshot();
      const row = snapshot.services.find((s) => s.name === req.name);
      if (!row) throw new NotFoundError(`service "${req.name}" not found`);
      return { service: serviceMessage(row, snapshot.replicas.filter((r) => r.service === req.name)), version: BigInt(snapshot.version) };
    },

    async deleteService(req, ctx) {
      checkId(req.name, "name", true);
      const expectedVersion = optionalVersion(req.expectedVersion);
      const before = await store.workloadSnapshot();
      const audit = auditRecord(actorOf(ctx), {
        eventName: "workload.service_deleted",
        category: "system",
        action: "delete",
        resourceType: "service",
        resource: req.name,
        fields: { expected_version: expectedVersion ?? null },
      });
      const { version } = await store.deleteWorkloadService({ name: req.name, expectedVersion, atMs: Date.now(), audit });
      deps.workloads.changed();
      const stops = currentAssignments(before.replicas)
        .filter((a) => a.service === req.name)
        .map((a) => placementChange({ ...a, reason: STOP_REASONS.serviceDeleted }));
      return { version: BigInt(version), stops };
    },

    async listWorkloadNodes() {
      const nowMs = Date.now();
      const snapshot = await store.workloadSnapshot();
      const fleet = await fleetById(deps, nowMs);
      const settings = deps.workloads.settings(nowMs);
      const current = currentAssignments(snapshot.replicas);
      const reserved = reservedByNode(current, schedulerServices(snapshot.services));
      return {
        items: snapshot.nodes.map((row) =>
          workloadNodeMessage(
            row,
            fleet.get(row.nodeId),
            nodeStanding(fleet.get(row.nodeId), row, settings),
            reserved.get(row.nodeId) ?? { cpuMillis: 0, memoryBytes: 0 },
            current.filter((a) => a.nodeId === row.nodeId).map((a) => replicaId(a.service, a.index)),
          ),
        ),
      };
    },
  };
}
