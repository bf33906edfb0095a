/**
 * Services as the control plane keeps them: Apply's validation (each bad field named as
 * `services[1].resources.cpu_millis`), the canonical stored form, and what an apply does to a
 * stored service (created, updated: a new generation restarts its replicas, scaled: only the
 * replica count changed, unchanged). Pure: the stores call `serviceChange` inside the apply's
 * transaction, so both dialects decide alike.
 */
import { ValidationError } from "./errors.js";
import { checkId, checkText, MAX_LABEL_VALUE_BYTES } from "./fields.js";
import { MAX_LABELS } from "./nodes.js";
import { MAX_REPLICAS, MAX_RESOURCE, type SchedulerService } from "./scheduler.js";
import {
  ENV_NAME,
  MAX_ARG_CHARS,
  MAX_ARGS,
  MAX_COMMAND_CHARS,
  MAX_ENV,
  RESERVED_ENV,
  RESTART_POLICIES,
  SERVICE_NAME,
  SERVICE_NAME_RULE,
  type RestartPolicy,
} from "./workload-spec.js";

/** A service's spec, validated and normalised (restart policy filled in, maps with sorted keys). */
export interface WorkloadSpec {
  name: string;
  command: string;
  args: string[];
  env: Record<string, string>;
  replicas: number;
  selector: Record<string, string>;
  resources: { cpuMillis: number; memoryBytes: number };
  restartPolicy: RestartPolicy;
  spreadKey: string;
}

/** What Apply receives for one service (the ServiceSpec message's fields). */
export interface ServiceSpecInput {
  name: string;
  command: string;
  args: readonly string[];
  env: Readonly<Record<string, string>>;
  replicas: number;
  selector: Readonly<Record<string, string>>;
  resources?: { cpuMillis: bigint | number; memoryBytes: bigint | number };
  restartPolicy: string;
  spreadKey: string;
}

/** Most services one apply may list. */
export const MAX_SERVICES_PER_APPLY = 1000;

export type ServiceChangeKind = "created" | "updated" | "scaled" | "unchanged";

const sorted = (m: Readonly<Record<string, string>>): Record<string, string> => Object.fromEntries(Object.keys(m).sort().map((k) => [k, m[k]]));

function checkNoNul(value: string, field: string, max: number): void {
  if (value.length > max) throw new ValidationError(field, `must be at most ${max} characters`);
  if (value.includes("\0")) throw new ValidationError(field, "must not contain NUL");
}

function resource(value: bigint | number | undefined, field: string): number {
  const n = Number(value ?? 0);
  if (!Number.isSafeInteger(n) || n < 0 || n > MAX_RESOURCE) throw new ValidationError(field, `must be 0 to ${MAX_RESOURCE}`);
  return n;
}

function labelMap(m: Readonly<Record<string, string>>, field: string): Record<string, string> {
  const keys = Object.keys(m);
  if (keys.length > MAX_LABELS) throw new ValidationError(field, `at most ${MAX_LABELS} labels`);
  for (const key of keys) {
    checkId(key, field, true);
    checkText(m[key], `${field}.${key}`, MAX_LABEL_VALUE_BYTES);
  }
  return sorted(m);
}

/** Checks one service spec; `at` prefixes every field it names (`services[2]`). */
export function validateServiceSpec(s: ServiceSpecInput, at: string): WorkloadSpec {
  if (s.name === "") throw new ValidationError(`${at}.name`, "required");
  if (!SERVICE_NAME.test(s.name)) throw new ValidationError(`${at}.name`, SERVICE_NAME_RULE);
  if (s.command.trim() === "") throw new ValidationError(`${at}.command`, "required: the program each replica runs");
  checkNoNul(s.command, `${at}.command`, MAX_COMMAND_CHARS);
  if (s.args.length > MAX_ARGS) throw new ValidationError(`${at}.args`, `must have at most ${MAX_ARGS} items`);
  s.args.forEach((a, i) => checkNoNul(a, `${at}.args[${i}]`, MAX_ARG_CHARS));
  const names = Object.keys(s.env);
  if (names.length > MAX_ENV) throw new ValidationError(`${at}.env`, `must have at most ${MAX_ENV} variables`);
  for (const name of names) {
    if (!ENV_NAME.test(name)) throw new ValidationError(`${at}.env`, `"${name.slice(0, 80)}" is not a variable name (letters, digits and '_', not starting with a digit)`);
    if ((RESERVED_ENV as readonly string[]).includes(name)) throw new ValidationError(`${at}.env.${name}`, "is set by the agent");
    checkNoNul(s.env[name], `${at}.env.${name}`, MAX_ARG_CHARS);
  }
  if (!Number.isInteger(s.replicas) || s.replicas < 0 || s.replicas > MAX_REPLICAS) throw new ValidationError(`${at}.replicas`, `must be 0 to ${MAX_REPLICAS}`);
  const selector = labelMap(s.selector, `${at}.selector`);
  const policy = s.restartPolicy === "" ? "always" : s.restartPolicy;
  if (!(RESTART_POLICIES as readonly string[]).includes(policy)) throw new ValidationError(`${at}.restart_policy`, `must be one of ${RESTART_POLICIES.join(", ")} (empty: always)`);
  if (s.spreadKey !== "") checkId(s.spreadKey, `${at}.spread_key`, false);
  return {
    name: s.name,
    command: s.command,
    args: [...s.args],
    env: sorted(s.env),
    replicas: s.replicas,
    selector,
    resources: { cpuMillis: resource(s.resources?.cpuMillis, `${at}.resources.cpu_millis`), memoryBytes: resource(s.resources?.memoryBytes, `${at}.resources.memory_bytes`) },
    restartPolicy: policy as RestartPolicy,
    spreadKey: s.spreadKey,
  };
}

/** Checks a whole apply: every service valid, each name once. */
export function validateApply(services: readonly ServiceSpecInput[]): WorkloadSpec[] {
  if (services.length === 0) throw new ValidationError("services", "at least one service");
  if (services.length > MAX_SERVICES_PER_APPLY) throw new ValidationError("services", `at most ${MAX_SERVICES_PER_APPLY} services per apply`);
  const seen = new Map<string, number>();
  return services.map((s, i) => {
    const spec = validateServiceSpec(s, `services[${i}]`);
    const first = seen.get(spec.name);
    if (first !== undefined) throw new ValidationError(`services[${i}].name`, `"${spec.name}" is also services[${first}]: each service once per apply`);
    seen.set(spec.name, i);
    return spec;
  });
}

/** The stored form of a spec: JSON with a fixed key order, so equal specs are equal strings. */
export function canonicalSpec(s: WorkloadSpec): string {
  const { name, command, args, env, replicas, selector, resources, restartPolicy, spreadKey } = s;
  return JSON.stringify({ name, command, args, env: sorted(env), replicas, selector: sorted(selector), resources: { cpuMillis: resources.cpuMillis, memoryBytes: resources.memoryBytes }, restartPolicy, spreadKey });
}

export function parseSpec(json: string): WorkloadSpec {
  return JSON.parse(json) as WorkloadSpec;
}

/** What applying `next` does to the stored service (undefined: there is none), and its generation after. */
export function serviceChange(stored: { spec: string; generation: number } | undefined, next: WorkloadSpec): { change: ServiceChangeKind; generation: number } {
  if (!stored) return { change: "created", generation: 1 };
  const before = parseSpec(stored.spec);
  if (canonicalSpec(before) === canonicalSpec(next)) return { change: "unchanged", generation: stored.generation };
  if (canonicalSpec({ ...before, replicas: next.replicas }) === canonicalSpec(next)) return { change: "scaled", generation: stored.generation };
  return { change: "updated", generation: stored.generation + 1 };
}

/** A stored service as the scheduler takes it. */
export function schedulerService(spec: WorkloadSpec, generation: number): SchedulerService {
  return {
    name: spec.name,
    generation,
    replicas: spec.replicas,
    selector: spec.selector,
    resources: spec.resources,
    spreadKey: spec.spreadKey === "" ? undefined : spec.spreadKey,
  };
}

/** A replica's id on its node. */
export const replicaId = (service: string, index: number) => `${service}-${index}`;
