/**
 * Property tests of the scheduler on seeded random fleets: the full placement equals the plain
 * reference of the rules, does not depend on input order, and the incremental state answers every
 * change of a random sequence exactly as a full placement of the same inputs does.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { schedule, SchedulerState, type Assignment, type SchedulePlan, type SchedulerNode, type SchedulerService } from "../src/domain/scheduler.js";
import { referenceSchedule } from "./helpers/scheduler-reference.js";

const SEED = Number(process.env.SCHEDULER_SEED ?? 20261203);
const GIB = 1024 ** 3;
const MIB = 1024 ** 2;
const SERVICE_NAMES = ["api", "batch", "cache", "db", "edge", "web"];

const nodeArb = (id: string) =>
  fc
    .record({
      zone: fc.constantFrom("a", "b", "c", undefined),
      arch: fc.constantFrom("amd64", "arm64"),
      schedulable: fc.oneof({ weight: 4, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constant(false) }),
      cpu: fc.constantFrom(0, 1000, 2000, 4000),
      mem: fc.constantFrom(GIB, 2 * GIB, 4 * GIB),
    })
    .map(
      (r): SchedulerNode => ({
        id,
        labels: { arch: r.arch, ...(r.zone === undefined ? {} : { zone: r.zone }) },
        schedulable: r.schedulable,
        capacity: { cpuMillis: r.cpu, memoryBytes: r.mem },
      }),
    );

const specArbOf = (maxReplicas: number) =>
  fc.record({
    replicas: fc.nat({ max: maxReplicas }),
    selector: fc.constantFrom<Record<string, string>>({}, {}, { zone: "a" }, { zone: "b" }, { arch: "arm64" }, { zone: "c", arch: "amd64" }, { zone: "x" }),
    cpu: fc.constantFrom(0, 100, 250, 500, 1000, 3000, 5000),
    mem: fc.constantFrom(0, 256 * MIB, 512 * MIB, GIB, 3 * GIB),
    spreadKey: fc.constantFrom(undefined, "zone", "zone", "arch"),
  });

type Spec = ReturnType<typeof specArbOf> extends fc.Arbitrary<infer T> ? T : never;

const serviceOf = (name: string, generation: number, s: Spec): SchedulerService => ({
  name,
  generation,
  replicas: s.replicas,
  selector: s.selector,
  resources: { cpuMillis: s.cpu, memoryBytes: s.mem },
  ...(s.spreadKey === undefined ? {} : { spreadKey: s.spreadKey }),
});

type Op =
  | { kind: "apply"; name: string; spec: Spec; generation: "bump" | "same" }
  | { kind: "scale"; name: string; replicas: number }
  | { kind: "delete"; name: string }
  | { kind: "setNode"; node: SchedulerNode }
  | { kind: "lose"; id: string }
  | { kind: "drain"; id: string; schedulable: boolean };

/** Fleets of `minNodes` to `nodeCount` nodes and services of up to `maxReplicas` replicas, and changes to them. */
function scenario(nodeCount: number, maxReplicas: number, minNodes = 0) {
  const NODE_IDS = Array.from({ length: nodeCount }, (_, i) => `n${String(i).padStart(3, "0")}`);
  const specArb = specArbOf(maxReplicas);
  const nameArb = fc.constantFrom(...SERVICE_NAMES);
  const idArb = fc.constantFrom(...NODE_IDS);
  const opArb: fc.Arbitrary<Op> = fc.oneof(
    { weight: 4, arbitrary: fc.record({ kind: fc.constant("apply" as const), name: nameArb, spec: specArb, generation: fc.constantFrom("bump" as const, "bump" as const, "same" as const) }) },
    { weight: 3, arbitrary: fc.record({ kind: fc.constant("scale" as const), name: nameArb, replicas: fc.nat({ max: maxReplicas + 2 }) }) },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant("delete" as const), name: nameArb }) },
    { weight: 2, arbitrary: idArb.chain((id) => nodeArb(id)).map((node) => ({ kind: "setNode" as const, node })) },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant("lose" as const), id: idArb }) },
    { weight: 2, arbitrary: fc.record({ kind: fc.constant("drain" as const), id: idArb, schedulable: fc.boolean() }) },
  );
  const fleetArb = fc.uniqueArray(idArb, { minLength: minNodes, maxLength: NODE_IDS.length, size: "max" }).chain((ids) => fc.tuple(...ids.map(nodeArb)));
  const servicesArb = fc
    .uniqueArray(fc.tuple(nameArb, specArb, fc.nat({ max: 3 })), { selector: ([n]) => n, maxLength: SERVICE_NAMES.length })
    .map((list) => list.map(([name, spec, gen]) => serviceOf(name, gen, spec)));
  return { fleetArb, servicesArb, opArb };
}

/** Checks a plan against the inputs: every assignment on a schedulable matching node, within capacity, every replica accounted for once. */
function checkPlan(plan: SchedulePlan, nodes: readonly SchedulerNode[], services: readonly SchedulerService[]): void {
  const nodeById = new Map(nodes.map((n) => [n.id, n]));
  const svcByName = new Map(services.map((s) => [s.name, s]));
  const used = new Map<string, { cpu: number; mem: number }>();
  for (const a of plan.assignments) {
    const n = nodeById.get(a.nodeId)!;
    const s = svcByName.get(a.service)!;
    expect(n.schedulable).toBe(true);
    for (const [k, v] of Object.entries(s.selector)) expect(n.labels[k]).toBe(v);
    expect(a.generation).toBe(s.generation);
    const u = used.get(n.id) ?? { cpu: 0, mem: 0 };
    u.cpu += s.resources.cpuMillis;
    u.mem += s.resources.memoryBytes;
    used.set(n.id, u);
    expect(u.cpu).toBeLessThanOrEqual(n.capacity.cpuMillis);
    expect(u.mem).toBeLessThanOrEqual(n.capacity.memoryBytes);
  }
  const expected = services.flatMap((s) => Array.from({ length: s.replicas }, (_, i) => `${s.name}/${i}`)).sort();
  const accounted = [...plan.assignments, ...plan.unschedulable].map((a) => `${a.service}/${a.index}`).sort();
  expect(accounted).toEqual(expected);
}

function shuffled<T>(xs: readonly T[], seed: number): T[] {
  const out = [...xs];
  let s = seed >>> 0 || 1;
  for (let i = out.length - 1; i > 0; i--) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    const j = (s >>> 0) % (i + 1);
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}

describe("scheduler properties", () => {
  const small = scenario(12, 8);

  it("a full placement follows the plain rules, fits, and accounts for every replica", () => {
    fc.assert(
      fc.property(small.fleetArb, small.servicesArb, (nodes, services) => {
        const first = schedule(nodes, services, []);
        expect(first).toEqual(referenceSchedule(nodes, services, []));
        checkPlan(first, nodes, services);
        // Again from its own placement with every spec changed: nothing moves that need not.
        const bumped = services.map((s) => ({ ...s, generation: s.generation + 1 }));
        const second = schedule(nodes, bumped, first.assignments);
        expect(second).toEqual(referenceSchedule(nodes, bumped, first.assignments));
        expect(second.launches).toEqual([]);
        expect(second.stops).toEqual([]);
        expect(second.updates.length).toBe(first.assignments.length);
      }),
      { seed: SEED, numRuns: 300 },
    );
  });

  it("the same input in any order gives the same plan", () => {
    fc.assert(
      fc.property(small.fleetArb, small.servicesArb, fc.integer(), (nodes, services, seed) => {
        const first = schedule(nodes, services, []);
        // A current placement that is partly stale: some replicas on other nodes, old generations.
        const current: Assignment[] = first.assignments.map((a, i) => (i % 3 === 0 ? { ...a, generation: a.generation + 1 } : a));
        const plan = schedule(nodes, services, current);
        expect(schedule(shuffled(nodes, seed), shuffled(services, seed + 1), shuffled(current, seed + 2))).toEqual(plan);
        expect(plan).toEqual(referenceSchedule(nodes, services, current));
      }),
      { seed: SEED + 1, numRuns: 200 },
    );
  });

  it("the incremental state answers every change as a full placement of the same inputs does", () => {
    fc.assert(fc.property(small.fleetArb, small.servicesArb, fc.array(small.opArb, { minLength: 1, maxLength: 30 }), replay), { seed: SEED + 2, numRuns: 300 });
  });

  it("and so it does on fleets of up to 150 nodes and services of up to 120 replicas", () => {
    const large = scenario(150, 120, 70);
    fc.assert(fc.property(large.fleetArb, large.servicesArb, fc.array(large.opArb, { minLength: 1, maxLength: 12 }), replay), { seed: SEED + 3, numRuns: 25 });
  });
});

/** Replays `ops` on a SchedulerState and, step by step, holds each answer to `schedule` and to the reference. */
function replay(fleet: SchedulerNode[], initial: SchedulerService[], ops: Op[]): void {
  const nodes = new Map(fleet.map((n) => [n.id, n]));
  const services = new Map(initial.map((s) => [s.name, s]));
  const state = new SchedulerState();
  let previous = state.load([...nodes.values()], [...services.values()], []);
  expect(previous).toEqual(schedule([...nodes.values()], [...services.values()], []));
  for (const op of ops) {
    let change;
    switch (op.kind) {
      case "apply": {
        const old = services.get(op.name);
        const generation = old ? old.generation + (op.generation === "bump" ? 1 : 0) : 1;
        const svc = serviceOf(op.name, generation, op.spec);
        services.set(op.name, svc);
        change = state.applyService(svc);
        break;
      }
      case "scale": {
        const old = services.get(op.name);
        if (!old) continue;
        services.set(op.name, { ...old, replicas: op.replicas });
        change = state.scaleService(op.name, op.replicas);
        break;
      }
      case "delete":
        services.delete(op.name);
        change = state.deleteService(op.name);
        break;
      case "setNode":
        nodes.set(op.node.id, op.node);
        change = state.setNode(op.node);
        break;
      case "lose":
        nodes.delete(op.id);
        change = state.removeNode(op.id);
        break;
      case "drain": {
        const old = nodes.get(op.id);
        if (!old) continue;
        const node = { ...old, schedulable: op.schedulable };
        nodes.set(op.id, node);
        change = state.setNode(node);
        break;
      }
    }
    const nodeList = [...nodes.values()];
    const serviceList = [...services.values()];
    const full = schedule(nodeList, serviceList, previous.assignments);
    const incremental = { assignments: state.assignments(), ...change };
    expect(incremental).toEqual(full);
    expect(full).toEqual(referenceSchedule(nodeList, serviceList, previous.assignments));
    checkPlan(full, nodeList, serviceList);
    for (const n of nodeList) {
      const on = full.assignments.filter((a) => a.nodeId === n.id);
      expect(state.assignmentsOn(n.id)).toEqual(on);
      const use = on.reduce(
        (u, a) => {
          const s = services.get(a.service)!;
          return { cpuMillis: u.cpuMillis + s.resources.cpuMillis, memoryBytes: u.memoryBytes + s.resources.memoryBytes };
        },
        { cpuMillis: 0, memoryBytes: 0 },
      );
      expect(state.usage(n.id)).toEqual(use);
    }
    previous = full;
  }
}
