/**
 * Rows of the workload tables as both dialects hold them, and the writes of WorkloadService
 * and the reconcile loop, spoken alike to SQLite and PostgreSQL.
 */
import type { ServiceChangeKind, WorkloadSpec } from "../domain/workloads.js";
import type { AuditRow } from "./rollout-rows.js";
import type { RowOf } from "./schema-check.js";

export type ServiceRow = RowOf<"workloadServices">;
export type ReplicaRow = RowOf<"workloadReplicas">;
export type WorkloadNodeRow = RowOf<"workloadNodes">;
export type CommandRow = RowOf<"workloadCommands">;

/** What a node reports of one replica (the ReplicaReport message, stored as JSON in workload_nodes.replicas). */
export interface ReplicaReportRow {
  replicaId: string;
  service: string;
  index: number;
  generation: number;
  state: string;
  reason: string;
  restarts: number;
  lastExitCode: number | null;
  lastOutput: string[];
}

/** An apply: the validated specs, written in one transaction only while the version is expectedVersion. */
export interface WorkloadApply {
  specs: WorkloadSpec[];
  expectedVersion?: number;
  atMs: number;
  /** Appended when the apply changed something, its fields completed with the changes and the version. */
  audit: AuditRow;
}

export interface AppliedChange {
  name: string;
  change: ServiceChangeKind;
  generation: number;
}

export interface WorkloadApplyResult {
  version: number;
  changes: AppliedChange[];
}

export interface ServiceDeletion {
  name: string;
  expectedVersion?: number;
  atMs: number;
  audit: AuditRow;
}

/** A replica's placement as the reconcile loop writes it; the report fields stay unless `state` is given. */
export interface ReplicaPlacement {
  service: string;
  idx: number;
  nodeId: string;
  generation: number;
  desiredState: "running" | "stopped";
  /** Set for a new placement (pending), an unschedulable or lost replica; kept as reported otherwise. */
  state?: string;
  reason: string;
}

/** One pass of the reconcile loop, written in one transaction while the workload version is expectedVersion. */
export interface PlacementCommit {
  expectedVersion: number;
  /** The leader epoch (HA): the commit is refused (FencedError) once it is not current. */
  fenceEpoch?: number;
  atMs: number;
  upserts: ReplicaPlacement[];
  removals: { service: string; idx: number; nodeId: string }[];
  commands: CommandRow[];
  /** Answered commands answered before this are removed. */
  pruneAnsweredBeforeMs?: number;
}

/** A node's workload heartbeat, stored in one transaction. */
export interface WorkloadReport {
  nodeId: string;
  atMs: number;
  capacity: { cpuMillis: number; memoryBytes: number };
  usage: { cpuMillis: number; memoryBytes: number };
  replicas: ReplicaReportRow[];
  acks: { commandId: string; ok: boolean; message: string }[];
}

/** The stored row of a node's workload heartbeat (workload_nodes), alike in both dialects. */
export function workloadNodeRow(r: WorkloadReport) {
  return {
    nodeId: r.nodeId,
    capacityCpuMillis: r.capacity.cpuMillis,
    capacityMemoryBytes: r.capacity.memoryBytes,
    usageCpuMillis: r.usage.cpuMillis,
    usageMemoryBytes: r.usage.memoryBytes,
    replicas: JSON.stringify(r.replicas),
    reportedAtMs: r.atMs,
  };
}

/** What one replica's report sets on its placement row. */
export function replicaReportSet(rep: ReplicaReportRow, atMs: number) {
  return {
    state: rep.state,
    reason: rep.reason,
    restarts: rep.restarts,
    lastExitCode: rep.lastExitCode,
    lastOutput: JSON.stringify(rep.lastOutput),
    observedGeneration: rep.generation,
    reportedAtMs: atMs,
  };
}

/** Everything the reconcile loop and the read RPCs look at. */
export interface WorkloadSnapshot {
  version: number;
  services: ServiceRow[];
  replicas: ReplicaRow[];
  nodes: WorkloadNodeRow[];
  /** Commands not answered yet, oldest first. */
  unanswered: CommandRow[];
}

/** Replica states after which nothing runs. */
export const ENDED_STATES: ReadonlySet<string> = new Set(["stopped", "exited", "failed"]);

export function parseReports(json: string): ReplicaReportRow[] {
  return JSON.parse(json) as ReplicaReportRow[];
}
