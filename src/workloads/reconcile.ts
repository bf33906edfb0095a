/**
 * One reconcile pass as data: from the stored state and the scheduler's plan over it, the rows
 * and commands to write. Pure (ids come from the caller), so a pass over a state already right
 * writes nothing and sends nothing new.
 *
 * - launch: a row on the node, pending, and a launch command;
 * - update: the row takes the new generation, and an update command;
 * - stop: the row should stop (lost when its node is), and a stop command (it waits in the outbox
 *   for a lost node, which gets it in the answer to its next report);
 * - unschedulable: a row without a node, with the scheduler's reason;
 * - a stopped row is removed once its node reported after the stop without it running and
 *   holds no unanswered command for it;
 * - an orphan, a replica a node reports running that is not placed there and has no stop
 *   waiting, is sent a stop;
 * - relaunch: a replica placed on a node that, in a report made after the placement and with no
 *   command of it unanswered, says it is stopped or does not list it (the agent restarted and
 *   ended its earlier run's replicas, or lost its state) is sent a new launch. Replicas that
 *   exited or failed on their own are left to the agent's restart policy.
 */
import { create, toJsonString } from "@bufbuild/protobuf";
import { ReplicaSpecSchema, WorkloadCommandSchema, type WorkloadCommand } from "../../gen/autonomy/v1/workloads_pb.js";
import { STOP_REASONS, type SchedulePlan } from "../domain/scheduler.js";
import { parseSpec, replicaId, type WorkloadSpec } from "../domain/workloads.js";
import { ENDED_STATES, parseReports, type CommandRow, type ReplicaPlacement, type WorkloadSnapshot } from "../store/workload-rows.js";
import type { NodeStanding } from "./inputs.js";

/** The reason of the stop sent to a replica a node runs but the server did not place there. */
export const ORPHAN_REASON = "not placed on this node";
/** The reason on a replica launched again because its node reported it stopped or without it. */
export const RELAUNCH_REASON = "launched again: its node reported it stopped or not running it";

export interface ReconcileWrites {
  upserts: ReplicaPlacement[];
  removals: { service: string; idx: number; nodeId: string }[];
  /** New commands: their rows, and the messages to push. */
  commands: { row: CommandRow; message: WorkloadCommand }[];
  decisions: { launch: number; update: number; stop: number; unschedulable: number; orphan: number; relaunch: number };
}

const key = (service: string, idx: number, nodeId: string) => `${service}\u0000${idx}\u0000${nodeId}`;
/** States in which a reported replica needs no stop. */
const NOT_RUNNING: ReadonlySet<string> = new Set([...ENDED_STATES, "stopping"]);

export function reconcileWrites(snapshot: WorkloadSnapshot, plan: SchedulePlan, standing: ReadonlyMap<string, NodeStanding>, nowMs: number, newId: () => string): ReconcileWrites {
  const rows = new Map(snapshot.replicas.map((r) => [key(r.service, r.idx, r.nodeId), r]));
  const specs = new Map(snapshot.services.map((s) => [s.name, parseSpec(s.spec)]));
  const out: ReconcileWrites = { upserts: [], removals: [], commands: [], decisions: { launch: 0, update: 0, stop: 0, unschedulable: 0, orphan: 0, relaunch: 0 } };
  /** `${node}\0${replicaId}`: replicas that have an unanswered command, or get one in this pass. */
  const commanded = new Set(snapshot.unanswered.map((c) => `${c.nodeId}\u0000${c.replicaId}`));
  const stopping = new Set(snapshot.unanswered.filter((c) => c.kind === "stop").map((c) => `${c.nodeId}\u0000${c.replicaId}`));

  const send = (nodeId: string, rid: string, action: WorkloadCommand["action"]) => {
    const commandId = newId();
    const message = create(WorkloadCommandSchema, { commandId, action });
    out.commands.push({
      row: { commandId, nodeId, replicaId: rid, kind: action.case!, payload: toJsonString(WorkloadCommandSchema, message), createdAtMs: nowMs, ackedAtMs: null, ok: null, message: "" },
      message,
    });
    commanded.add(`${nodeId}\u0000${rid}`);
    if (action.case === "stop") stopping.add(`${nodeId}\u0000${rid}`);
  };
  const replicaSpec = (spec: WorkloadSpec, index: number, generation: number) => ({
    replicaId: replicaId(spec.name, index),
    service: spec.name,
    index,
    generation: BigInt(generation),
    command: spec.command,
    args: spec.args,
    env: spec.env,
    restartPolicy: spec.restartPolicy,
    resources: { cpuMillis: BigInt(spec.resources.cpuMillis), memoryBytes: BigInt(spec.resources.memoryBytes) },
  });

  for (const a of plan.launches) {
    out.upserts.push({ service: a.service, idx: a.index, nodeId: a.nodeId, generation: a.generation, desiredState: "running", state: "pending", reason: "" });
    send(a.nodeId, replicaId(a.service, a.index), { case: "launch", value: create(ReplicaSpecSchema, replicaSpec(specs.get(a.service)!, a.index, a.generation)) });
    out.decisions.launch++;
  }
  for (const a of plan.updates) {
    out.upserts.push({ service: a.service, idx: a.index, nodeId: a.nodeId, generation: a.generation, desiredState: "running", reason: "updating" });
    send(a.nodeId, replicaId(a.service, a.index), { case: "update", value: create(ReplicaSpecSchema, replicaSpec(specs.get(a.service)!, a.index, a.generation)) });
    out.decisions.update++;
  }
  const stoppedNow = new Set<string>();
  for (const s of plan.stops) {
    const lost = s.reason === STOP_REASONS.nodeLost;
    out.upserts.push({ service: s.service, idx: s.index, nodeId: s.nodeId, generation: s.generation, desiredState: "stopped", reason: s.reason, ...(lost ? { state: "lost" } : {}) });
    send(s.nodeId, replicaId(s.service, s.index), { case: "stop", value: { $typeName: "autonomy.v1.StopReplica", replicaId: replicaId(s.service, s.index), reason: s.reason } });
    stoppedNow.add(key(s.service, s.index, s.nodeId));
    out.decisions.stop++;
  }
  const unschedulable = new Set<string>();
  for (const u of plan.unschedulable) {
    unschedulable.add(key(u.service, u.index, ""));
    const row = rows.get(key(u.service, u.index, ""));
    const generation = snapshot.services.find((s) => s.name === u.service)?.generation ?? 0;
    if (row && row.reason === u.reason && row.generation === generation) continue;
    out.upserts.push({ service: u.service, idx: u.index, nodeId: "", generation, desiredState: "running", state: "unschedulable", reason: u.reason });
    out.decisions.unschedulable++;
  }

  const reports = new Map(snapshot.nodes.map((n) => [n.nodeId, { at: n.reportedAtMs, replicas: new Map(parseReports(n.replicas).map((r) => [r.replicaId, r])) }]));
  for (const r of snapshot.replicas) {
    const k = key(r.service, r.idx, r.nodeId);
    if (r.nodeId === "") {
      if (!unschedulable.has(k)) out.removals.push({ service: r.service, idx: r.idx, nodeId: "" });
      continue;
    }
    if (r.desiredState !== "stopped" || stoppedNow.has(k)) continue;
    const report = reports.get(r.nodeId);
    const rid = replicaId(r.service, r.idx);
    const seen = report?.replicas.get(rid);
    const gone = report !== undefined && report.at > r.changedAtMs && (seen === undefined || ENDED_STATES.has(seen.state));
    if (gone && !commanded.has(`${r.nodeId}\u0000${rid}`)) out.removals.push({ service: r.service, idx: r.idx, nodeId: r.nodeId });
  }

  for (const a of plan.assignments) {
    const rid = replicaId(a.service, a.index);
    if (commanded.has(`${a.nodeId}\u0000${rid}`) || standing.get(a.nodeId)?.lost) continue;
    const row = rows.get(key(a.service, a.index, a.nodeId));
    const report = reports.get(a.nodeId);
    if (!row || row.desiredState !== "running" || !report || report.at <= row.changedAtMs) continue;
    const seen = report.replicas.get(rid);
    if (seen !== undefined && seen.state !== "stopped") continue;
    out.upserts.push({ service: a.service, idx: a.index, nodeId: a.nodeId, generation: a.generation, desiredState: "running", state: "pending", reason: RELAUNCH_REASON });
    send(a.nodeId, rid, { case: "launch", value: create(ReplicaSpecSchema, replicaSpec(specs.get(a.service)!, a.index, a.generation)) });
    out.decisions.relaunch++;
  }

  const placedRunning = new Set(plan.assignments.map((a) => key(a.service, a.index, a.nodeId)));
  for (const [nodeId, report] of reports) {
    if (standing.get(nodeId)?.lost) continue;
    for (const rep of report.replicas.values()) {
      if (NOT_RUNNING.has(rep.state) || placedRunning.has(key(rep.service, rep.index, nodeId))) continue;
      if (stopping.has(`${nodeId}\u0000${rep.replicaId}`)) continue;
      send(nodeId, rep.replicaId, { case: "stop", value: { $typeName: "autonomy.v1.StopReplica", replicaId: rep.replicaId, reason: ORPHAN_REASON } });
      out.decisions.orphan++;
    }
  }
  return out;
}
