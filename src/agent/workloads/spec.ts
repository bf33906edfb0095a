import { ValidationError } from "../../domain/errors.js";
import {
  ENV_NAME,
  MAX_ARG_CHARS,
  MAX_ARGS,
  MAX_COMMAND_CHARS,
  MAX_COMMAND_ID_CHARS,
  MAX_ENV,
  RESERVED_ENV,
  RESTART_POLICIES,
  SERVICE_NAME,
  SERVICE_NAME_RULE,
  type RestartPolicy,
} from "../../domain/workload-spec.js";

export { MAX_ARG_CHARS, MAX_ARGS, MAX_COMMAND_CHARS, MAX_COMMAND_ID_CHARS, MAX_ENV, RESERVED_ENV, RESTART_POLICIES, SERVICE_NAME, type RestartPolicy };

/** One replica of a service, as the control plane asks a node to run it. */
export interface ReplicaSpec {
  /** `<service>-<index>`, unique on the node. */
  replicaId: string;
  service: string;
  index: number;
  /** The version of the spec; a launch of the replicaId and generation that runs is a no-op. */
  generation: number;
  command: string;
  args: string[];
  env: Record<string, string>;
  restartPolicy: RestartPolicy;
}

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);
const isCount = (v: unknown): v is number => typeof v === "number" && Number.isSafeInteger(v) && v >= 0;

/**
 * Checks a replica spec from the command stream. Throws ValidationError naming the first bad
 * field (`command`, `args[2]`, `env.PATH`, ...); a spec that passes can be started as it is.
 */
export function validateReplicaSpec(spec: unknown): asserts spec is ReplicaSpec {
  if (!isRecord(spec)) throw new ValidationError("spec", "must be an object");
  const { replicaId, service, index, generation, command, args, env, restartPolicy } = spec;
  if (typeof service !== "string" || service === "") throw new ValidationError("service", "must not be empty");
  if (!SERVICE_NAME.test(service)) {
    throw new ValidationError("service", SERVICE_NAME_RULE);
  }
  if (!isCount(index)) throw new ValidationError("index", "must be an integer of 0 or more");
  if (typeof replicaId !== "string" || replicaId === "") throw new ValidationError("replicaId", "must not be empty");
  if (replicaId !== `${service}-${index}`) throw new ValidationError("replicaId", `must be "<service>-<index>" (${service}-${index}), not "${printable(replicaId)}"`);
  if (!isCount(generation)) throw new ValidationError("generation", "must be an integer of 0 or more");
  if (typeof command !== "string" || command.trim() === "") throw new ValidationError("command", "must not be empty");
  if (command.length > MAX_COMMAND_CHARS) throw new ValidationError("command", `must be at most ${MAX_COMMAND_CHARS} characters`);
  if (command.includes("\0")) throw new ValidationError("command", "must not contain NUL");
  if (!Array.isArray(args)) throw new ValidationError("args", "must be a list of strings");
  if (args.length > MAX_ARGS) throw new ValidationError("args", `must have at most ${MAX_ARGS} items`);
  args.forEach((a: unknown, i) => {
    if (typeof a !== "string") throw new ValidationError(`args[${i}]`, "must be a string");
    if (a.length > MAX_ARG_CHARS) throw new ValidationError(`args[${i}]`, `must be at most ${MAX_ARG_CHARS} characters`);
    if (a.includes("\0")) throw new ValidationError(`args[${i}]`, "must not contain NUL");
  });
  if (!isRecord(env)) throw new ValidationError("env", "must be a map of names to strings");
  const names = Object.keys(env);
  if (names.length > MAX_ENV) throw new ValidationError("env", `must have at most ${MAX_ENV} variables`);
  for (const name of names) {
    const value = env[name];
    if (!ENV_NAME.test(name)) throw new ValidationError(`env.${printable(name)}`, "is not a variable name (letters, digits and '_', not starting with a digit)");
    if ((RESERVED_ENV as readonly string[]).includes(name)) throw new ValidationError(`env.${name}`, "is set by the agent");
    if (typeof value !== "string") throw new ValidationError(`env.${name}`, "must be a string");
    if (value.length > MAX_ARG_CHARS) throw new ValidationError(`env.${name}`, `must be at most ${MAX_ARG_CHARS} characters`);
    if (value.includes("\0")) throw new ValidationError(`env.${name}`, "must not contain NUL");
  }
  if (typeof restartPolicy !== "string" || !(RESTART_POLICIES as readonly string[]).includes(restartPolicy)) {
    throw new ValidationError("restartPolicy", `must be one of ${RESTART_POLICIES.join(", ")}`);
  }
}

/** Checks a command's idempotency key. */
export function validateCommandId(commandId: unknown): asserts commandId is string {
  if (typeof commandId !== "string" || commandId === "") throw new ValidationError("commandId", "must not be empty");
  if (commandId.length > MAX_COMMAND_ID_CHARS) throw new ValidationError("commandId", `must be at most ${MAX_COMMAND_ID_CHARS} characters`);
}

/** Checks the replica id of a stop command (any id is fine to stop; it only has to be an id). */
export function validateReplicaId(replicaId: unknown): asserts replicaId is string {
  if (typeof replicaId !== "string" || replicaId === "") throw new ValidationError("replicaId", "must not be empty");
  if (replicaId.length > 128 || /[\0/]/.test(replicaId)) throw new ValidationError("replicaId", "is not a replica id");
}

/** A copy of a spec with its own arrays and maps, so a caller's later changes do not reach it. */
export function copySpec(spec: ReplicaSpec): ReplicaSpec {
  return { ...spec, args: [...spec.args], env: { ...spec.env } };
}

function printable(s: string): string {
  const cut = s.length > 80 ? `${s.slice(0, 80)}...` : s;
  return cut.replace(/[\0-\x1f\x7f]/g, "?");
}
