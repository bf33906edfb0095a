/**
 * Placement of service replicas on nodes: pure and deterministic (no I/O, no clock, no randomness).
 *
 * `schedule(nodes, services, current)` answers the whole placement after one pass, what to launch,
 * update in place and stop, and which replicas fit nowhere (with why). `SchedulerState` gives the
 * same answers incrementally: it keeps the per-node usage and a few indexes, so that one changed
 * service costs time in its own replicas, not in the rest of the fleet.
 *
 * The rules, in the order a pass applies them:
 *
 * 1. Keep. A current assignment stays where it is when its service still exists and still wants
 *    that index, its node is known, schedulable and still matches the selector, and it fits. The
 *    first failing check names the stop: `service deleted`, `scaled down`, `node lost`,
 *    `node not schedulable`, `node no longer matches selector`, `does not fit`. Fit is decided per
 *    node: assignments whose generation is the service's are counted first, then those whose
 *    service changed (an update in place), each group in (service, index) order; one that would
 *    take the node past its capacity is stopped. A kept assignment of an older generation is an
 *    update (same node, new spec).
 * 2. Place. Every replica index 0..replicas-1 without an assignment is placed, services by name,
 *    indexes ascending, each on the eligible node (schedulable, every selector key equal on its
 *    labels, free capacity for the replica's cpu and memory) minimising, in order:
 *    the service's replicas under the node's spread value (when a spread key is set), the
 *    service's replicas on the node, the node's used share (the larger of its cpu and memory
 *    fractions in use), the node id. A node without the spread key's label counts as one more
 *    spread value, the empty one. A replica no node can take is `unschedulable` with a reason
 *    (no node matches, none is schedulable, none is large enough, none has the room free); the
 *    later missing replicas of that service are unschedulable for the same reason.
 *
 * Every list is sorted by (service, index), nodes and services by id and name (code-unit order),
 * so the same input in any order gives the same plan.
 */
import { NotFoundError, ValidationError } from "./errors.js";
import { SortedList } from "./sorted-list.js";

export interface Resources {
  cpuMillis: number;
  memoryBytes: number;
}

export interface SchedulerNode {
  id: string;
  labels: Readonly<Record<string, string>>;
  /** HEALTHY, not draining, heartbeating: decided by the caller. */
  schedulable: boolean;
  /** What the node reported. */
  capacity: Resources;
}

export interface SchedulerService {
  name: string;
  /**
   * Bumps whenever the replicas' spec changes (command, env, resources). A replica of another
   * generation is updated in place, so a change of `replicas` alone should keep the generation.
   */
  generation: number;
  replicas: number;
  /** Every key must equal on the node's labels. */
  selector: Readonly<Record<string, string>>;
  /** Per replica. */
  resources: Resources;
  /** A label key, e.g. "zone": spread replicas over its values. */
  spreadKey?: string;
}

export interface Assignment {
  service: string;
  index: number;
  nodeId: string;
  generation: number;
}

export interface Stop extends Assignment {
  reason: string;
}

export interface Unschedulable {
  service: string;
  index: number;
  reason: string;
}

export interface SchedulePlan {
  /** The whole placement after this pass, sorted by (service, index). */
  assignments: Assignment[];
  /** Assignments that are new: start a replica there. */
  launches: Assignment[];
  /** Same node, new generation: restart in place with the new spec. */
  updates: Assignment[];
  /** Current assignments to stop, with why. */
  stops: Stop[];
  unschedulable: Unschedulable[];
}

/** What one change of a `SchedulerState` does: a `SchedulePlan` without the whole placement. */
export type ScheduleChange = Omit<SchedulePlan, "assignments">;

/** The reasons of `stops`, as they appear in plans. */
export const STOP_REASONS = {
  serviceDeleted: "service deleted",
  scaledDown: "scaled down",
  nodeLost: "node lost",
  nodeNotSchedulable: "node not schedulable",
  selectorMismatch: "node no longer matches selector",
  doesNotFit: "does not fit",
} as const;

/** Most replicas one service may ask for. */
export const MAX_REPLICAS = 10_000;
/** Largest cpu (millicores) or memory (bytes) figure: sums of them stay exact in a double. */
export const MAX_RESOURCE = 2 ** 50;

/** The whole placement, what changes, and what fits nowhere (see the module comment for the rules). */
export function schedule(nodes: readonly SchedulerNode[], services: readonly SchedulerService[], current: readonly Assignment[]): SchedulePlan {
  return new SchedulerState().load(nodes, services, current);
}

// ---------------------------------------------------------------------------------------------
// Internal state

interface NodeState {
  id: string;
  labels: Map<string, string>;
  schedulable: boolean;
  cpuCap: number;
  memCap: number;
  cpuUsed: number;
  memUsed: number;
  /** The used share: max(cpu used / capacity, memory used / capacity). */
  share: number;
  replicas: Set<Replica>;
  memberships: Membership[];
}

/**
 * A node in one group's bucket, sorted there by `share` as of its last repositioning. A node's
 * share changes with every placement; its memberships are only marked dirty then, and
 * repositioned when their group is next placed into.
 */
interface Membership {
  node: NodeState;
  group: Group;
  bucket: Bucket;
  share: number;
  dirty: boolean;
  live: boolean;
}

interface Replica {
  svc: ServiceState;
  index: number;
  node: NodeState;
  generation: number;
  /** The resources this replica is counted with on its node. */
  cpu: number;
  mem: number;
}

interface Spec {
  name: string;
  generation: number;
  replicas: number;
  /** Sorted by key. */
  selector: Array<[string, string]>;
  cpu: number;
  mem: number;
  spreadKey: string | undefined;
}

interface ServiceState {
  spec: Spec;
  group: Group;
  slots: Array<Replica | undefined>;
  /** Indexes left unplaced by the last pass, ascending, and why. */
  pending: number[];
  reason: string;
}

/** The schedulable nodes matching one selector, split by the values of one spread key. */
interface Group {
  key: string;
  selector: Array<[string, string]>;
  spreadKey: string | undefined;
  buckets: Map<string, Bucket>;
  refs: number;
  members: number;
  /** Memberships whose node's share changed since they were placed in their bucket. */
  dirty: Membership[];
}

/** The members of a group under one spread value, sorted by (share, id). */
interface Bucket {
  value: string;
  nodes: SortedList<Membership>;
}

interface Collector {
  stops: Stop[];
  launches: Assignment[];
  updates: Assignment[];
  /** Services that lost an assignment or changed: their missing replicas are placed again. */
  affected: Set<ServiceState>;
  /** Nodes whose usage went down: a pending replica may fit there now. */
  freed: Set<NodeState>;
  /** A node was added, removed or changed: every pending replica is tried again. */
  nodesChanged: boolean;
}

const cmpStr = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);
const cmpNode = (a: NodeState, b: NodeState): number => a.share - b.share || cmpStr(a.id, b.id);
const cmpMember = (a: Membership, b: Membership): number => a.share - b.share || cmpStr(a.node.id, b.node.id);
const cmpAssignment = (a: { service: string; index: number }, b: { service: string; index: number }): number =>
  cmpStr(a.service, b.service) || a.index - b.index;

function shareOf(cpuUsed: number, cpuCap: number, memUsed: number, memCap: number): number {
  return Math.max(cpuCap > 0 ? cpuUsed / cpuCap : 0, memCap > 0 ? memUsed / memCap : 0);
}

function fits(n: NodeState, cpu: number, mem: number): boolean {
  return n.cpuUsed + cpu <= n.cpuCap && n.memUsed + mem <= n.memCap;
}

function matches(labels: Map<string, string>, selector: Array<[string, string]>): boolean {
  for (const [k, v] of selector) if (labels.get(k) !== v) return false;
  return true;
}

const groupKey = (selector: Array<[string, string]>, spreadKey: string | undefined): string => JSON.stringify([spreadKey ?? null, selector]);
const spreadValue = (n: NodeState, g: Group): string => (g.spreadKey === undefined ? "" : (n.labels.get(g.spreadKey) ?? ""));

function sameSpecExceptReplicas(a: Spec, b: Spec): boolean {
  return (
    a.generation === b.generation &&
    a.cpu === b.cpu &&
    a.mem === b.mem &&
    a.spreadKey === b.spreadKey &&
    groupKey(a.selector, a.spreadKey) === groupKey(b.selector, b.spreadKey)
  );
}

// ---------------------------------------------------------------------------------------------
// Validation

function fail(field: string, reason: string): never {
  throw new ValidationError(field, reason);
}

function checkName(value: unknown, field: string): string {
  if (typeof value !== "string" || value === "") fail(field, "required");
  return value;
}

function checkCount(value: unknown, field: string, max: number): number {
  if (typeof value !== "number" || !Number.isSafeInteger(value)) fail(field, "must be an integer");
  if (value < 0) fail(field, "must not be negative");
  if (value > max) fail(field, `must be at most ${max}`);
  return value;
}

function checkResources(value: unknown, field: string): { cpu: number; mem: number } {
  if (typeof value !== "object" || value === null) fail(field, "required");
  const r = value as Partial<Resources>;
  return { cpu: checkCount(r.cpuMillis, `${field}.cpu_millis`, MAX_RESOURCE), mem: checkCount(r.memoryBytes, `${field}.memory_bytes`, MAX_RESOURCE) };
}

function checkLabels(value: unknown, field: string): Array<[string, string]> {
  if (typeof value !== "object" || value === null || Array.isArray(value)) fail(field, "must be a map of strings");
  const out: Array<[string, string]> = [];
  for (const k of Object.keys(value)) {
    const v = (value as Record<string, unknown>)[k];
    if (k === "") fail(field, "keys must not be empty");
    if (typeof v !== "string") fail(`${field}[${k}]`, "must be a string");
    out.push([k, v]);
  }
  return out.sort((a, b) => cmpStr(a[0], b[0]));
}

interface NodeInput {
  id: string;
  labels: Map<string, string>;
  schedulable: boolean;
  cpuCap: number;
  memCap: number;
}

function checkNode(n: SchedulerNode, field: string): NodeInput {
  if (typeof n !== "object" || n === null) fail(field, "required");
  const id = checkName(n.id, `${field}.id`);
  const labels = new Map(checkLabels(n.labels, `${field}.labels`));
  if (typeof n.schedulable !== "boolean") fail(`${field}.schedulable`, "must be a boolean");
  const { cpu, mem } = checkResources(n.capacity, `${field}.capacity`);
  return { id, labels, schedulable: n.schedulable, cpuCap: cpu, memCap: mem };
}

function checkService(s: SchedulerService, field: string): Spec {
  if (typeof s !== "object" || s === null) fail(field, "required");
  const name = checkName(s.name, `${field}.name`);
  const generation = checkCount(s.generation, `${field}.generation`, Number.MAX_SAFE_INTEGER);
  const replicas = checkCount(s.replicas, `${field}.replicas`, MAX_REPLICAS);
  const selector = checkLabels(s.selector, `${field}.selector`);
  const { cpu, mem } = checkResources(s.resources, `${field}.resources`);
  if (s.spreadKey !== undefined && (typeof s.spreadKey !== "string" || s.spreadKey === "")) {
    fail(`${field}.spread_key`, "must be a label key when set");
  }
  return { name, generation, replicas, selector, cpu, mem, spreadKey: s.spreadKey };
}

function checkAssignment(a: Assignment, field: string): Assignment {
  if (typeof a !== "object" || a === null) fail(field, "required");
  return {
    service: checkName(a.service, `${field}.service`),
    index: checkCount(a.index, `${field}.index`, Number.MAX_SAFE_INTEGER),
    nodeId: checkName(a.nodeId, `${field}.node_id`),
    generation: checkCount(a.generation, `${field}.generation`, Number.MAX_SAFE_INTEGER),
  };
}

// ---------------------------------------------------------------------------------------------
// Reasons

const GIB = 1024 ** 3;
const MIB = 1024 ** 2;

/** Memory as a user writes it: 1GiB, 512MiB, 64KiB or bytes. */
export function formatMemory(bytes: number): string {
  for (const [unit, size] of [
    ["TiB", 1024 ** 4],
    ["GiB", GIB],
    ["MiB", MIB],
    ["KiB", 1024],
  ] as const) {
    if (bytes >= size && bytes % size === 0) return `${bytes / size}${unit}`;
  }
  return `${bytes}B`;
}

/** A replica's request in words: "500m cpu and 1GiB memory" (a zero figure is left out). */
export function formatResources(cpu: number, mem: number): string {
  const parts: string[] = [];
  if (cpu > 0) parts.push(`${cpu}m cpu`);
  if (mem > 0) parts.push(`${formatMemory(mem)} memory`);
  return parts.join(" and ") || "nothing";
}

const plural = (n: number, one: string, many: string): string => `${n} ${n === 1 ? one : many}`;
const selectorText = (selector: Array<[string, string]>): string => selector.map(([k, v]) => `${k}=${v}`).join(",");

// ---------------------------------------------------------------------------------------------
// The state

/**
 * The placement kept in memory between changes. `load` answers what `schedule` does; each later
 * change answers what `schedule(nodes, services, previous assignments)` would, with the state's
 * nodes and services after the change — at a cost in the changed service's replicas (and, for a
 * node change, in that node's replicas and in the replicas left unschedulable), not in the fleet.
 *
 * Cost of one change: for each replica placed, a walk over the spread values of its group (a few
 * zones) and, per value, over the members sorted by used share until one fits, skipping nodes that
 * already run the service; each placement moves its node in the sorted members of every distinct
 * (selector, spread key) it matches. A selector nobody used before builds its group from a label
 * index (the nodes carrying its rarest label). Replicas left unschedulable are tried again only
 * when a node changes or capacity is freed on a node of their group that fits them.
 *
 * A change with an invalid argument throws `ValidationError` and changes nothing. Deleting an
 * unknown service or removing an unknown node is a change that does nothing.
 */
export class SchedulerState {
  private nodes = new Map<string, NodeState>();
  private services = new Map<string, ServiceState>();
  private groups = new Map<string, Group>();
  /** label key → value → nodes carrying it. */
  private labelIndex = new Map<string, Map<string, Set<NodeState>>>();
  private pendingServices = new Set<ServiceState>();

  /** Replaces everything with the given fleet and placement, and places what is missing. */
  load(nodes: readonly SchedulerNode[], services: readonly SchedulerService[], current: readonly Assignment[]): SchedulePlan {
    if (!Array.isArray(nodes)) fail("nodes", "must be a list");
    if (!Array.isArray(services)) fail("services", "must be a list");
    if (!Array.isArray(current)) fail("current", "must be a list");
    const nodeInputs = nodes.map((n, i) => checkNode(n, `nodes[${i}]`));
    const seenNodes = new Set<string>();
    nodeInputs.forEach((n, i) => {
      if (seenNodes.has(n.id)) fail(`nodes[${i}].id`, `duplicate node ${n.id}`);
      seenNodes.add(n.id);
    });
    const specs = services.map((s, i) => checkService(s, `services[${i}]`));
    const seenServices = new Set<string>();
    specs.forEach((s, i) => {
      if (seenServices.has(s.name)) fail(`services[${i}].name`, `duplicate service ${s.name}`);
      seenServices.add(s.name);
    });
    const assignments = current.map((a, i) => checkAssignment(a, `current[${i}]`));
    const seenReplicas = new Map<string, Set<number>>();
    assignments.forEach((a, i) => {
      let indexes = seenReplicas.get(a.service);
      if (!indexes) seenReplicas.set(a.service, (indexes = new Set()));
      if (indexes.has(a.index)) fail(`current[${i}]`, `duplicate assignment of ${a.service} replica ${a.index}`);
      indexes.add(a.index);
    });

    this.nodes = new Map();
    this.services = new Map();
    this.groups = new Map();
    this.labelIndex = new Map();
    this.pendingServices = new Set();
    const c = collector();

    for (const input of [...nodeInputs].sort((a, b) => cmpStr(a.id, b.id))) this.addNodeState(input);
    // Groups are built after the usage is known, so members are sorted once.
    const svcs = specs.sort((a, b) => cmpStr(a.name, b.name)).map((spec) => {
      const svc: ServiceState = { spec, group: undefined as unknown as Group, slots: [], pending: [], reason: "" };
      this.services.set(spec.name, svc);
      return svc;
    });
    // Order does not matter here: each node sorts its own replicas, and the stops are sorted at the end.
    for (const a of assignments) {
      const svc = this.services.get(a.service);
      const node = this.nodes.get(a.nodeId);
      if (!svc || a.index >= svc.spec.replicas || !node) {
        const reason = !svc ? STOP_REASONS.serviceDeleted : a.index >= svc.spec.replicas ? STOP_REASONS.scaledDown : STOP_REASONS.nodeLost;
        c.stops.push({ ...a, reason });
        continue;
      }
      const r: Replica = { svc, index: a.index, node, generation: a.generation, cpu: 0, mem: 0 };
      svc.slots[a.index] = r;
      node.replicas.add(r);
    }
    for (const node of this.nodes.values()) if (node.replicas.size > 0) this.evaluateNode(node, c);
    for (const svc of svcs) svc.group = this.acquireGroup(svc.spec);
    for (const svc of svcs) this.place(svc, c);
    return { assignments: this.assignments(), ...this.finishChange(c) };
  }

  /** Adds or replaces a service and places it. */
  applyService(service: SchedulerService): ScheduleChange {
    const spec = checkService(service, "service");
    const c = collector();
    const existing = this.services.get(spec.name);
    if (!existing) {
      const svc: ServiceState = { spec, group: this.acquireGroup(spec), slots: [], pending: [], reason: "" };
      this.services.set(spec.name, svc);
      c.affected.add(svc);
      return this.settle(c);
    }
    if (sameSpecExceptReplicas(existing.spec, spec)) {
      existing.spec = spec;
      for (let i = spec.replicas; i < existing.slots.length; i++) {
        const r = existing.slots[i];
        if (r) this.stopReplica(r, STOP_REASONS.scaledDown, c);
      }
    } else {
      const group = this.acquireGroup(spec);
      this.releaseGroup(existing.group);
      existing.group = group;
      existing.spec = spec;
      const hosts = new Set<NodeState>();
      for (const r of existing.slots) if (r) hosts.add(r.node);
      for (const node of [...hosts].sort((a, b) => cmpStr(a.id, b.id))) this.evaluateNode(node, c);
    }
    existing.slots.length = Math.min(existing.slots.length, spec.replicas);
    c.affected.add(existing);
    return this.settle(c);
  }

  /** Changes the replica count of a service, keeping the rest of its spec. */
  scaleService(name: string, replicas: number): ScheduleChange {
    const svc = this.services.get(checkName(name, "name"));
    if (!svc) throw new NotFoundError(`no service ${name}`);
    const spec = svc.spec;
    return this.applyService({
      name,
      generation: spec.generation,
      replicas: checkCount(replicas, "replicas", MAX_REPLICAS),
      selector: Object.fromEntries(spec.selector),
      resources: { cpuMillis: spec.cpu, memoryBytes: spec.mem },
      ...(spec.spreadKey === undefined ? {} : { spreadKey: spec.spreadKey }),
    });
  }

  /** Removes a service: every replica of it stops. */
  deleteService(name: string): ScheduleChange {
    checkName(name, "name");
    const svc = this.services.get(name);
    const c = collector();
    if (!svc) return this.settle(c);
    for (const r of svc.slots) if (r) this.stopReplica(r, STOP_REASONS.serviceDeleted, c);
    this.releaseGroup(svc.group);
    this.services.delete(name);
    this.pendingServices.delete(svc);
    return this.settle(c);
  }

  /** Adds a node, or replaces what is known of it (labels, capacity, schedulable). */
  setNode(node: SchedulerNode): ScheduleChange {
    const input = checkNode(node, "node");
    const c = collector();
    const existing = this.nodes.get(input.id);
    if (!existing) {
      const n = this.addNodeState(input);
      this.joinGroups(n);
      c.nodesChanged = true;
      return this.settle(c);
    }
    const sameLabels = existing.labels.size === input.labels.size && [...input.labels].every(([k, v]) => existing.labels.get(k) === v);
    if (sameLabels && existing.schedulable === input.schedulable && existing.cpuCap === input.cpuCap && existing.memCap === input.memCap) {
      return this.settle(c);
    }
    this.leaveGroups(existing);
    if (!sameLabels) {
      this.unindexLabels(existing);
      existing.labels = input.labels;
      this.indexLabels(existing);
    }
    existing.schedulable = input.schedulable;
    existing.cpuCap = input.cpuCap;
    existing.memCap = input.memCap;
    const before = { cpu: existing.cpuUsed, mem: existing.memUsed };
    if (existing.replicas.size > 0) this.evaluateNode(existing, c);
    else this.setUsage(existing, 0, 0);
    if (existing.cpuUsed < before.cpu || existing.memUsed < before.mem) c.freed.add(existing);
    this.joinGroups(existing);
    c.nodesChanged = true;
    return this.settle(c);
  }

  /** Forgets a node (lost): its replicas stop and are placed elsewhere. */
  removeNode(id: string): ScheduleChange {
    checkName(id, "id");
    const n = this.nodes.get(id);
    const c = collector();
    if (!n) return this.settle(c);
    for (const r of [...n.replicas]) this.stopReplica(r, STOP_REASONS.nodeLost, c);
    this.leaveGroups(n);
    this.unindexLabels(n);
    this.nodes.delete(id);
    c.freed.delete(n);
    c.nodesChanged = true;
    return this.settle(c);
  }

  /** The whole placement, sorted by (service, index). */
  assignments(): Assignment[] {
    const out: Assignment[] = [];
    for (const name of [...this.services.keys()].sort(cmpStr)) {
      for (const r of this.services.get(name)!.slots) if (r) out.push({ service: name, index: r.index, nodeId: r.node.id, generation: r.generation });
    }
    return out;
  }

  /** Replicas no node can take, sorted by (service, index). */
  unschedulable(): Unschedulable[] {
    const out: Unschedulable[] = [];
    for (const svc of [...this.pendingServices].sort((a, b) => cmpStr(a.spec.name, b.spec.name))) {
      for (const index of svc.pending) out.push({ service: svc.spec.name, index, reason: svc.reason });
    }
    return out;
  }

  /** What the kept and placed replicas take on a node; undefined for an unknown node. */
  usage(nodeId: string): Resources | undefined {
    const n = this.nodes.get(nodeId);
    return n && { cpuMillis: n.cpuUsed, memoryBytes: n.memUsed };
  }

  /** The replicas placed on a node, sorted by (service, index). */
  assignmentsOn(nodeId: string): Assignment[] {
    const n = this.nodes.get(nodeId);
    if (!n) return [];
    return [...n.replicas].map((r) => ({ service: r.svc.spec.name, index: r.index, nodeId: n.id, generation: r.generation })).sort(cmpAssignment);
  }

  // -------------------------------------------------------------------------------------------

  private addNodeState(input: NodeInput): NodeState {
    const n: NodeState = {
      id: input.id,
      labels: input.labels,
      schedulable: input.schedulable,
      cpuCap: input.cpuCap,
      memCap: input.memCap,
      cpuUsed: 0,
      memUsed: 0,
      share: 0,
      replicas: new Set(),
      memberships: [],
    };
    this.nodes.set(n.id, n);
    this.indexLabels(n);
    return n;
  }

  private indexLabels(n: NodeState): void {
    for (const [k, v] of n.labels) {
      let values = this.labelIndex.get(k);
      if (!values) this.labelIndex.set(k, (values = new Map()));
      let set = values.get(v);
      if (!set) values.set(v, (set = new Set()));
      set.add(n);
    }
  }

  private unindexLabels(n: NodeState): void {
    for (const [k, v] of n.labels) {
      const values = this.labelIndex.get(k)!;
      const set = values.get(v)!;
      set.delete(n);
      if (set.size === 0) values.delete(v);
      if (values.size === 0) this.labelIndex.delete(k);
    }
  }

  /** The nodes matching a selector, in any order (from the rarest of its labels). */
  private matching(selector: Array<[string, string]>): Iterable<NodeState> {
    if (selector.length === 0) return this.nodes.values();
    let smallest: Set<NodeState> | undefined;
    for (const [k, v] of selector) {
      const set = this.labelIndex.get(k)?.get(v);
      if (!set) return [];
      if (!smallest || set.size < smallest.size) smallest = set;
    }
    return [...smallest!].filter((n) => matches(n.labels, selector));
  }

  private acquireGroup(spec: Spec): Group {
    const key = groupKey(spec.selector, spec.spreadKey);
    let g = this.groups.get(key);
    if (g) {
      g.refs++;
      return g;
    }
    g = { key, selector: spec.selector, spreadKey: spec.spreadKey, buckets: new Map(), refs: 1, members: 0, dirty: [] };
    this.groups.set(key, g);
    const members = [...this.matching(spec.selector)].filter((n) => n.schedulable).sort(cmpNode);
    const byValue = new Map<string, NodeState[]>();
    for (const n of members) {
      const value = spreadValue(n, g);
      const list = byValue.get(value);
      if (list) list.push(n);
      else byValue.set(value, [n]);
    }
    for (const [value, list] of byValue) {
      const bucket: Bucket = { value, nodes: new SortedList(cmpMember) };
      const ms = list.map((node): Membership => ({ node, group: g, bucket, share: node.share, dirty: false, live: true }));
      bucket.nodes = SortedList.from(ms, cmpMember);
      g.buckets.set(value, bucket);
      for (const m of ms) m.node.memberships.push(m);
    }
    g.members = members.length;
    return g;
  }

  private releaseGroup(g: Group): void {
    if (--g.refs > 0) return;
    for (const bucket of g.buckets.values()) {
      for (const m of bucket.nodes) {
        m.live = false;
        m.node.memberships = m.node.memberships.filter((x) => x !== m);
      }
    }
    this.groups.delete(g.key);
  }

  /** Repositions the memberships of `g` whose node's share changed: before `g` is placed into. */
  private refresh(g: Group): void {
    for (const m of g.dirty) {
      m.dirty = false;
      if (!m.live || m.share === m.node.share) continue;
      m.bucket.nodes.remove(m);
      m.share = m.node.share;
      m.bucket.nodes.insert(m);
    }
    g.dirty = [];
  }

  private joinGroups(n: NodeState): void {
    if (!n.schedulable) return;
    for (const g of this.groups.values()) {
      if (!matches(n.labels, g.selector)) continue;
      const value = spreadValue(n, g);
      let bucket = g.buckets.get(value);
      if (!bucket) g.buckets.set(value, (bucket = { value, nodes: new SortedList(cmpMember) }));
      const m: Membership = { node: n, group: g, bucket, share: n.share, dirty: false, live: true };
      bucket.nodes.insert(m);
      n.memberships.push(m);
      g.members++;
    }
  }

  private leaveGroups(n: NodeState): void {
    for (const m of n.memberships) {
      m.bucket.nodes.remove(m);
      m.live = false;
      if (m.bucket.nodes.size === 0) m.group.buckets.delete(m.bucket.value);
      m.group.members--;
    }
    n.memberships = [];
  }

  /**
   * Sets a node's usage; its memberships are marked for `refresh`. Within one service's pass no
   * bucket needs moving: only that service places, and a node it placed on is skipped in the
   * bucket scan from then on (it is in the pass's hosting list, kept in order by the pass).
   */
  private setUsage(n: NodeState, cpu: number, mem: number): void {
    const share = shareOf(cpu, n.cpuCap, mem, n.memCap);
    n.cpuUsed = cpu;
    n.memUsed = mem;
    if (share === n.share) return;
    n.share = share;
    for (const m of n.memberships) {
      if (!m.dirty) {
        m.dirty = true;
        m.group.dirty.push(m);
      }
    }
  }

  /** Takes a replica off its node and its service, freeing what it used. */
  private stopReplica(r: Replica, reason: string, c: Collector): void {
    const n = r.node;
    n.replicas.delete(r);
    r.svc.slots[r.index] = undefined;
    this.setUsage(n, n.cpuUsed - r.cpu, n.memUsed - r.mem);
    c.stops.push({ service: r.svc.spec.name, index: r.index, nodeId: n.id, generation: r.generation, reason });
    c.affected.add(r.svc);
    if (r.cpu > 0 || r.mem > 0) c.freed.add(n);
  }

  /** Rule 1 on one node: which of its replicas stay, are updated, or stop; its usage from scratch. */
  private evaluateNode(n: NodeState, c: Collector): void {
    let keep: Replica[] = [];
    let drop: Array<[Replica, string]> | undefined;
    let cpu = 0;
    let mem = 0;
    for (const r of n.replicas) {
      const spec = r.svc.spec;
      const reason =
        r.index >= spec.replicas
          ? STOP_REASONS.scaledDown
          : !n.schedulable
            ? STOP_REASONS.nodeNotSchedulable
            : !matches(n.labels, spec.selector)
              ? STOP_REASONS.selectorMismatch
              : undefined;
      if (reason) (drop ??= []).push([r, reason]);
      else {
        keep.push(r);
        cpu += spec.cpu;
        mem += spec.mem;
      }
    }
    if (drop) for (const [r, reason] of drop) this.detach(r, reason, c);
    // When all of them fit, the order of counting does not matter: no sort.
    if (cpu > n.cpuCap || mem > n.memCap) {
      const changed = (r: Replica) => (r.generation === r.svc.spec.generation ? 0 : 1);
      keep.sort((a, b) => changed(a) - changed(b) || cmpStr(a.svc.spec.name, b.svc.spec.name) || a.index - b.index);
      const fitting: Replica[] = [];
      cpu = 0;
      mem = 0;
      for (const r of keep) {
        const spec = r.svc.spec;
        if (cpu + spec.cpu > n.cpuCap || mem + spec.mem > n.memCap) {
          this.detach(r, STOP_REASONS.doesNotFit, c);
          continue;
        }
        cpu += spec.cpu;
        mem += spec.mem;
        fitting.push(r);
      }
      keep = fitting;
    }
    for (const r of keep) {
      const spec = r.svc.spec;
      r.cpu = spec.cpu;
      r.mem = spec.mem;
      if (r.generation !== spec.generation) {
        r.generation = spec.generation;
        c.updates.push({ service: spec.name, index: r.index, nodeId: n.id, generation: r.generation });
      }
    }
    if (cpu < n.cpuUsed || mem < n.memUsed) c.freed.add(n);
    this.setUsage(n, cpu, mem);
  }

  /** Stops a replica inside `evaluateNode`, which recounts the node's usage itself. */
  private detach(r: Replica, reason: string, c: Collector): void {
    r.node.replicas.delete(r);
    r.svc.slots[r.index] = undefined;
    c.stops.push({ service: r.svc.spec.name, index: r.index, nodeId: r.node.id, generation: r.generation, reason });
    c.affected.add(r.svc);
  }

  /** Places what the change left missing, then answers the change. */
  private settle(c: Collector): ScheduleChange {
    const toPlace = new Set<ServiceState>();
    for (const svc of c.affected) if (this.services.get(svc.spec.name) === svc) toPlace.add(svc);
    for (const svc of this.pendingServices) {
      if (toPlace.has(svc)) continue;
      if (c.nodesChanged || this.mayFitNow(svc, c.freed)) toPlace.add(svc);
    }
    for (const svc of [...toPlace].sort((a, b) => cmpStr(a.spec.name, b.spec.name))) this.place(svc, c);
    return this.finishChange(c);
  }

  /**
   * Whether a pending service could be placed after this change. Before it no member of its group
   * fit it (it failed, and usage only grew since); only a node freed now can.
   */
  private mayFitNow(svc: ServiceState, freed: Set<NodeState>): boolean {
    const { selector, cpu, mem } = svc.spec;
    for (const n of freed) if (n.schedulable && this.nodes.get(n.id) === n && matches(n.labels, selector) && fits(n, cpu, mem)) return true;
    return false;
  }

  private finishChange(c: Collector): ScheduleChange {
    return {
      launches: c.launches.sort(cmpAssignment),
      updates: c.updates.sort(cmpAssignment),
      stops: c.stops.sort(cmpAssignment),
      unschedulable: this.unschedulable(),
    };
  }

  /** Rule 2 for one service: places every missing index, or marks the rest unschedulable. */
  private place(svc: ServiceState, c: Collector): void {
    const missing: number[] = [];
    for (let i = 0; i < svc.spec.replicas; i++) if (!svc.slots[i]) missing.push(i);
    svc.pending = [];
    svc.reason = "";
    this.pendingServices.delete(svc);
    if (missing.length === 0) return;
    this.refresh(svc.group);
    const pass = new Pass(svc);
    for (let k = 0; k < missing.length; k++) {
      const n = pass.choose();
      if (!n) {
        svc.pending = missing.slice(k);
        svc.reason = this.reasonFor(svc);
        this.pendingServices.add(svc);
        return;
      }
      const index = missing[k];
      const r: Replica = { svc, index, node: n, generation: svc.spec.generation, cpu: svc.spec.cpu, mem: svc.spec.mem };
      pass.beforeCountChange(n);
      svc.slots[index] = r;
      n.replicas.add(r);
      this.setUsage(n, n.cpuUsed + r.cpu, n.memUsed + r.mem);
      pass.afterCountChange(n);
      c.launches.push({ service: svc.spec.name, index, nodeId: n.id, generation: r.generation });
    }
  }

  /** Why no node takes a replica of `svc`: depends on the nodes and the spec only. */
  private reasonFor(svc: ServiceState): string {
    const { selector, cpu, mem } = svc.spec;
    const sel = selectorText(selector);
    let matching = 0;
    for (const _ of this.matching(selector)) matching++;
    const where = (n: number, one: string, many: string) => (sel ? `${plural(n, one + " matches", many + " match")} selector ${sel}` : plural(n, one, many));
    if (matching === 0) return sel ? `no node matches selector ${sel}` : "no nodes";
    const g = svc.group;
    if (g.members === 0) return `${where(matching, "node", "nodes")} but none is schedulable`;
    let largeEnough = false;
    for (const bucket of g.buckets.values()) {
      if (bucket.nodes.first((m) => m.node.cpuCap >= cpu && m.node.memCap >= mem)) {
        largeEnough = true;
        break;
      }
    }
    const res = formatResources(cpu, mem);
    const head = where(g.members, "schedulable node", "schedulable nodes");
    return largeEnough ? `${head} but none has ${res} free` : `${head} but none is large enough for ${res}`;
  }
}

function collector(): Collector {
  return { stops: [], launches: [], updates: [], affected: new Set(), freed: new Set(), nodesChanged: false };
}

/**
 * One service's placement pass: the service's replicas per node and per spread value, and its
 * hosting nodes per value sorted by (replicas of the service, share, id).
 */
class Pass {
  private readonly count = new Map<NodeState, number>();
  private readonly spread = new Map<string, number>();
  private readonly hosting = new Map<string, SortedList<NodeState>>();
  private readonly group: Group;
  private readonly cpu: number;
  private readonly mem: number;
  private readonly cmpHosting = (a: NodeState, b: NodeState): number => this.count.get(a)! - this.count.get(b)! || cmpNode(a, b);
  private readonly freeAndNew = (m: Membership): boolean => !this.count.has(m.node) && fits(m.node, this.cpu, this.mem);
  private readonly free = (n: NodeState): boolean => fits(n, this.cpu, this.mem);

  constructor(svc: ServiceState) {
    this.group = svc.group;
    this.cpu = svc.spec.cpu;
    this.mem = svc.spec.mem;
    for (const r of svc.slots) {
      if (!r) continue;
      this.count.set(r.node, (this.count.get(r.node) ?? 0) + 1);
      const v = spreadValue(r.node, this.group);
      this.spread.set(v, (this.spread.get(v) ?? 0) + 1);
    }
    const byValue = new Map<string, NodeState[]>();
    for (const n of this.count.keys()) {
      const v = spreadValue(n, this.group);
      const list = byValue.get(v);
      if (list) list.push(n);
      else byValue.set(v, [n]);
    }
    for (const [v, list] of byValue) this.hosting.set(v, SortedList.from(list.sort(this.cmpHosting), this.cmpHosting));
  }

  /** The eligible node with the smallest (spread count, count on node, share, id), if any. */
  choose(): NodeState | undefined {
    const buckets = this.group.buckets;
    if (buckets.size === 1) {
      const b = buckets.values().next().value!;
      return b.nodes.first(this.freeAndNew)?.node ?? this.hosting.get(b.value)?.first(this.free);
    }
    const values = [...buckets.values()].map((b) => ({ b, level: this.spread.get(b.value) ?? 0 })).sort((x, y) => x.level - y.level);
    for (let i = 0; i < values.length; ) {
      let j = i;
      while (j < values.length && values[j].level === values[i].level) j++;
      let best: NodeState | undefined;
      for (let k = i; k < j; k++) {
        const n = values[k].b.nodes.first(this.freeAndNew)?.node;
        if (n && (!best || cmpNode(n, best) < 0)) best = n;
      }
      if (best) return best;
      for (let k = i; k < j; k++) {
        const n = this.hosting.get(values[k].b.value)?.first(this.free);
        if (n && (!best || this.cmpHosting(n, best) < 0)) best = n;
      }
      if (best) return best;
      i = j;
    }
    return undefined;
  }

  /** Call before a replica of the service is placed on `n` (its keys are about to change). */
  beforeCountChange(n: NodeState): void {
    if (this.count.has(n)) this.hosting.get(spreadValue(n, this.group))!.remove(n);
  }

  afterCountChange(n: NodeState): void {
    const v = spreadValue(n, this.group);
    this.count.set(n, (this.count.get(n) ?? 0) + 1);
    this.spread.set(v, (this.spread.get(v) ?? 0) + 1);
    let list = this.hosting.get(v);
    if (!list) this.hosting.set(v, (list = new SortedList(this.cmpHosting)));
    list.insert(n);
  }
}
