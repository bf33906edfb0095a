import { ValidationError } from "../../domain/errors.js";
import type { ReplicaSpec as ReplicaSpecMessage, WorkloadCommand } from "../../../gen/autonomy/v1/workloads_pb.js";
import { validateCommandId, validateReplicaId, validateReplicaSpec, type ReplicaSpec } from "./spec.js";

/** What a workload command asks, in the supervisor's terms. */
export type WorkloadAction =
  | { kind: "launch" | "update"; commandId: string; spec: ReplicaSpec }
  | { kind: "stop"; commandId: string; replicaId: string; reason: string };

/** The supervisor's field names as the proto spells them. */
const PROTO_FIELDS: Record<string, string> = { replicaId: "replica_id", restartPolicy: "restart_policy", commandId: "command_id" };

/** A ValidationError of the supervisor's spec, renamed to the command's field (`launch.restart_policy`). */
function renamed(err: unknown, prefix: string): unknown {
  if (!(err instanceof ValidationError)) return err;
  const reason = err.message.slice(err.field.length + 2);
  const [head, ...rest] = err.field.split(/(?=[.[])/);
  return new ValidationError(`${prefix}${PROTO_FIELDS[head] ?? head}${rest.join("")}`, reason);
}

function specOf(prefix: string, m: ReplicaSpecMessage): ReplicaSpec {
  if (m.generation < 0n || m.generation > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new ValidationError(`${prefix}generation`, `must be an integer from 0 to ${Number.MAX_SAFE_INTEGER}`);
  }
  for (const key of ["cpuMillis", "memoryBytes"] as const) {
    if ((m.resources?.[key] ?? 0n) < 0n) throw new ValidationError(`${prefix}resources.${key === "cpuMillis" ? "cpu_millis" : "memory_bytes"}`, "must not be negative");
  }
  const spec = {
    replicaId: m.replicaId,
    service: m.service,
    index: m.index,
    generation: Number(m.generation),
    command: m.command,
    args: [...m.args],
    env: { ...m.env },
    // The service's default (workloads.proto: ServiceSpec.restart_policy).
    restartPolicy: m.restartPolicy === "" ? "always" : m.restartPolicy,
  };
  try {
    validateReplicaSpec(spec);
  } catch (err) {
    throw renamed(err, prefix);
  }
  return spec;
}

/**
 * Reads a workload command from the stream or a ReportWorkloads answer. Throws ValidationError
 * naming the field as the proto spells it (`command_id`, `launch.command`, `update.args[2]`,
 * `stop.replica_id`, `action`): such a command is answered ok=false with that message.
 */
export function readWorkloadCommand(cmd: WorkloadCommand): WorkloadAction {
  const { commandId } = cmd;
  try {
    validateCommandId(commandId);
  } catch (err) {
    throw renamed(err, "");
  }
  const a = cmd.action;
  switch (a.case) {
    case "launch":
    case "update":
      return { kind: a.case, commandId, spec: specOf(`${a.case}.`, a.value) };
    case "stop":
      try {
        validateReplicaId(a.value.replicaId);
      } catch (err) {
        throw renamed(err, "stop.");
      }
      return { kind: "stop", commandId, replicaId: a.value.replicaId, reason: a.value.reason };
    default:
      throw new ValidationError("action", "must be one of launch, update or stop");
  }
}
