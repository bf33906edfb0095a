import { describe, expect, it } from "vitest";
import { NotFoundError, ValidationError } from "../src/domain/errors.js";
import {
  formatResources,
  MAX_REPLICAS,
  schedule,
  SchedulerState,
  type Assignment,
  type SchedulerNode,
  type SchedulerService,
} from "../src/domain/scheduler.js";

const GIB = 1024 ** 3;
const MIB = 1024 ** 2;

const node = (id: string, labels: Record<string, string> = {}, cpu = 4000, mem = 8 * GIB, schedulable = true): SchedulerNode => ({
  id,
  labels,
  schedulable,
  capacity: { cpuMillis: cpu, memoryBytes: mem },
});

const service = (name: string, replicas: number, more: Partial<SchedulerService> = {}): SchedulerService => ({
  name,
  generation: 1,
  replicas,
  selector: {},
  resources: { cpuMillis: 500, memoryBytes: GIB },
  ...more,
});

const placement = (assignments: Assignment[]) => Object.fromEntries(assignments.map((a) => [`${a.service}/${a.index}`, a.nodeId]));
const perNode = (assignments: Assignment[]) => {
  const out: Record<string, number> = {};
  for (const a of assignments) out[a.nodeId] = (out[a.nodeId] ?? 0) + 1;
  return out;
};

describe("schedule: where replicas go", () => {
  it("places on the emptiest node that fits and accounts for every service's use", () => {
    const nodes = [node("a", {}, 1000, 2 * GIB), node("b", {}, 4000, 8 * GIB)];
    // big goes to a (both empty: the id decides) and fills its cpu; small fits only on b.
    const plan = schedule(nodes, [service("big", 1, { resources: { cpuMillis: 1000, memoryBytes: GIB } }), service("small", 2)], []);
    expect(placement(plan.assignments)).toEqual({ "big/0": "a", "small/0": "b", "small/1": "b" });
    expect(plan.launches).toEqual(plan.assignments);
    expect(plan.unschedulable).toEqual([]);
  });

  it("spreads one service over nodes before doubling up", () => {
    const plan = schedule([node("n1"), node("n2"), node("n3")], [service("web", 5)], []);
    expect(perNode(plan.assignments)).toEqual({ n1: 2, n2: 2, n3: 1 });
  });

  it("places only on nodes whose labels match every selector key", () => {
    const nodes = [node("n1", { zone: "a", arch: "arm64" }), node("n2", { zone: "a", arch: "amd64" }), node("n3", { zone: "b", arch: "arm64" })];
    const plan = schedule(nodes, [service("arm-a", 3, { selector: { zone: "a", arch: "arm64" } }), service("zone-b", 2, { selector: { zone: "b" } })], []);
    expect(placement(plan.assignments)).toEqual({ "arm-a/0": "n1", "arm-a/1": "n1", "arm-a/2": "n1", "zone-b/0": "n3", "zone-b/1": "n3" });
  });

  it("spreads across two zones even when one zone has more nodes", () => {
    const nodes = [node("a1", { zone: "a" }), node("a2", { zone: "a" }), node("a3", { zone: "a" }), node("b1", { zone: "b" })];
    const plan = schedule(nodes, [service("web", 4, { spreadKey: "zone" })], []);
    const zones = plan.assignments.map((a) => (a.nodeId.startsWith("a") ? "a" : "b"));
    expect(zones.filter((z) => z === "a")).toHaveLength(2);
    expect(zones.filter((z) => z === "b")).toHaveLength(2);
    // Without the spread key, nodes are spread instead: b1 takes one of four.
    const plain = schedule(nodes, [service("web", 4)], []);
    expect(perNode(plain.assignments)).toEqual({ a1: 1, a2: 1, a3: 1, b1: 1 });
  });

  it("counts nodes without the spread label as one more value, the empty one", () => {
    const nodes = [node("a1", { zone: "a" }), node("a2", { zone: "a" }), node("x1"), node("x2"), node("x3")];
    const plan = schedule(nodes, [service("web", 4, { spreadKey: "zone" })], []);
    // Two values, "a" and "": two replicas each. (Were each unlabelled node a value of its own, x1..x3 would take three.)
    expect(perNode(plan.assignments)).toEqual({ a1: 1, a2: 1, x1: 1, x2: 1 });
  });

  it("spreads within the zone that still has room when the other is full", () => {
    const nodes = [node("a1", { zone: "a" }, 1000), node("b1", { zone: "b" }, 4000), node("b2", { zone: "b" }, 4000)];
    const plan = schedule(nodes, [service("web", 6, { spreadKey: "zone" })], []);
    expect(perNode(plan.assignments)).toEqual({ a1: 2, b1: 2, b2: 2 });
  });

  it("stops placing when capacity runs out and reports the rest unschedulable", () => {
    const plan = schedule([node("n1", {}, 1000, 2 * GIB), node("n2", {}, 1000, 2 * GIB)], [service("web", 6)], []);
    expect(plan.assignments).toHaveLength(4);
    expect(plan.unschedulable).toEqual([
      { service: "web", index: 4, reason: "2 schedulable nodes but none has 500m cpu and 1GiB memory free" },
      { service: "web", index: 5, reason: "2 schedulable nodes but none has 500m cpu and 1GiB memory free" },
    ]);
  });

  it("places a replica that asks for nothing on any schedulable matching node", () => {
    const plan = schedule([node("n1", {}, 0, 0)], [service("tiny", 2, { resources: { cpuMillis: 0, memoryBytes: 0 } })], []);
    expect(placement(plan.assignments)).toEqual({ "tiny/0": "n1", "tiny/1": "n1" });
  });
});

describe("schedule: unschedulable reasons", () => {
  const nodes = [node("a1", { zone: "a" }, 2000, 4 * GIB), node("a2", { zone: "a" }, 2000, 4 * GIB), node("b1", { zone: "b" }, 2000, 4 * GIB, false)];
  it.each([
    ["no node has the label value", { selector: { zone: "c" } }, "no node matches selector zone=c"],
    ["every matching node is unschedulable", { selector: { zone: "b" } }, "1 node matches selector zone=b but none is schedulable"],
    ["too large for every node", { selector: { zone: "a" }, resources: { cpuMillis: 3000, memoryBytes: GIB } }, "2 schedulable nodes match selector zone=a but none is large enough for 3000m cpu and 1GiB memory"],
    ["too large, no selector", { resources: { cpuMillis: 100, memoryBytes: 5 * GIB } }, "2 schedulable nodes but none is large enough for 100m cpu and 5GiB memory"],
    ["fleet full", { replicas: 9, resources: { cpuMillis: 500, memoryBytes: 512 * MIB } }, "2 schedulable nodes but none has 500m cpu and 512MiB memory free"],
  ])("%s", (_name, more, reason) => {
    const plan = schedule(nodes, [service("svc", (more as Partial<SchedulerService>).replicas ?? 1, more as Partial<SchedulerService>)], []);
    expect(plan.unschedulable.length).toBeGreaterThan(0);
    for (const u of plan.unschedulable) expect(u).toMatchObject({ service: "svc", reason });
  });

  it("says there are no nodes at all", () => {
    expect(schedule([], [service("svc", 1)], []).unschedulable).toEqual([{ service: "svc", index: 0, reason: "no nodes" }]);
  });

  it("formats requests as a user writes them", () => {
    expect(formatResources(500, GIB)).toBe("500m cpu and 1GiB memory");
    expect(formatResources(0, 1536 * MIB)).toBe("1536MiB memory");
    expect(formatResources(250, 0)).toBe("250m cpu");
    expect(formatResources(1, 1000)).toBe("1m cpu and 1000B memory");
  });
});

describe("schedule: moves only when it must", () => {
  const nodes = [node("a1", { zone: "a" }), node("a2", { zone: "a" }), node("b1", { zone: "b" })];
  const web = service("web", 3, { selector: { zone: "a" } });
  const first = schedule(nodes, [web], []);

  it("keeps a placement that is still right, even where it would not place now", () => {
    // Everything on a1: not what a fresh pass picks, but it fits, so nothing moves.
    const current = [0, 1, 2].map((index) => ({ service: "web", index, nodeId: "a1", generation: 1 }));
    const plan = schedule(nodes, [web], current);
    expect(plan.assignments).toEqual(current);
    expect(plan.launches).toEqual([]);
    expect(plan.stops).toEqual([]);
    expect(plan.updates).toEqual([]);
  });

  it("node lost: its replicas stop and start elsewhere; the others stay", () => {
    const lost = first.assignments.find((a) => a.nodeId === "a1")!;
    const plan = schedule(
      nodes.filter((n) => n.id !== "a1"),
      [web],
      first.assignments,
    );
    expect(plan.stops).toEqual(first.assignments.filter((a) => a.nodeId === "a1").map((a) => ({ ...a, reason: "node lost" })));
    expect(plan.launches.map((a) => a.index)).toContain(lost.index);
    expect(plan.launches.every((a) => a.nodeId === "a2")).toBe(true);
    for (const a of first.assignments.filter((x) => x.nodeId !== "a1")) expect(plan.assignments).toContainEqual(a);
  });

  it("node drained or unhealthy: not schedulable", () => {
    const plan = schedule(
      nodes.map((n) => (n.id === "a2" ? { ...n, schedulable: false } : n)),
      [web],
      first.assignments,
    );
    expect(plan.stops.map((s) => [s.nodeId, s.reason])).toEqual(first.assignments.filter((a) => a.nodeId === "a2").map(() => ["a2", "node not schedulable"]));
    expect(plan.launches.every((a) => a.nodeId === "a1")).toBe(true);
  });

  it("node relabelled: no longer matches selector", () => {
    const plan = schedule(
      nodes.map((n) => (n.id === "a2" ? { ...n, labels: { zone: "b" } } : n)),
      [web],
      first.assignments,
    );
    expect(new Set(plan.stops.map((s) => s.reason))).toEqual(new Set(["node no longer matches selector"]));
    expect(plan.assignments.every((a) => a.nodeId === "a1")).toBe(true);
  });

  it("selector changed: replicas on nodes that still match stay", () => {
    const plan = schedule(nodes, [{ ...web, generation: 2, selector: { zone: "a" }, spreadKey: "zone" }], first.assignments);
    expect(plan.stops).toEqual([]);
    expect(plan.updates).toHaveLength(3);
    const moved = schedule(nodes, [{ ...web, generation: 2, selector: { zone: "b" } }], first.assignments);
    expect(moved.stops.map((s) => s.reason)).toEqual(["node no longer matches selector", "node no longer matches selector", "node no longer matches selector"]);
    expect(moved.launches.map((a) => [a.nodeId, a.generation])).toEqual([
      ["b1", 2],
      ["b1", 2],
      ["b1", 2],
    ]);
  });

  it("scaled down: the highest indexes stop", () => {
    const plan = schedule(nodes, [{ ...web, replicas: 1 }], first.assignments);
    expect(plan.stops.map((s) => [s.index, s.reason])).toEqual([
      [1, "scaled down"],
      [2, "scaled down"],
    ]);
    expect(plan.assignments).toEqual([first.assignments[0]]);
  });

  it("service deleted: all of it stops", () => {
    const plan = schedule(nodes, [], first.assignments);
    expect(plan.stops).toEqual(first.assignments.map((a) => ({ ...a, reason: "service deleted" })));
    expect(plan.assignments).toEqual([]);
  });

  it("node shrank: what no longer fits stops, counted in (service, index) order, and moves", () => {
    const current = [
      { service: "api", index: 0, nodeId: "a1", generation: 1 },
      { service: "web", index: 0, nodeId: "a1", generation: 1 },
      { service: "web", index: 1, nodeId: "a1", generation: 1 },
    ];
    const shrunk = nodes.map((n) => (n.id === "a1" ? { ...n, capacity: { cpuMillis: 1000, memoryBytes: 8 * GIB } } : n));
    const plan = schedule(shrunk, [service("api", 1), { ...web, replicas: 2 }], current);
    expect(plan.stops).toEqual([{ service: "web", index: 1, nodeId: "a1", generation: 1, reason: "does not fit" }]);
    expect(plan.launches).toEqual([{ service: "web", index: 1, nodeId: "a2", generation: 1 }]);
  });

  it("spec changed and still fits: updated in place, nothing stops", () => {
    const plan = schedule(nodes, [{ ...web, generation: 2, resources: { cpuMillis: 1000, memoryBytes: 2 * GIB } }], first.assignments);
    expect(plan.updates).toEqual(first.assignments.map((a) => ({ ...a, generation: 2 })));
    expect(plan.stops).toEqual([]);
    expect(plan.launches).toEqual([]);
    expect(plan.assignments).toEqual(plan.updates);
  });

  it("spec changed and no longer fits: stopped and launched elsewhere with the new generation", () => {
    const current = [
      { service: "web", index: 0, nodeId: "a1", generation: 1 },
      { service: "web", index: 1, nodeId: "a1", generation: 1 },
    ];
    const grown = { ...web, replicas: 2, generation: 2, resources: { cpuMillis: 3000, memoryBytes: GIB } };
    const plan = schedule(nodes, [grown], current);
    expect(plan.updates).toEqual([{ service: "web", index: 0, nodeId: "a1", generation: 2 }]);
    expect(plan.stops).toEqual([{ service: "web", index: 1, nodeId: "a1", generation: 1, reason: "does not fit" }]);
    expect(plan.launches).toEqual([{ service: "web", index: 1, nodeId: "a2", generation: 2 }]);
  });

  it("an unchanged service keeps its room before a changed one grows into it", () => {
    const current = [
      { service: "a-grows", index: 0, nodeId: "a1", generation: 1 },
      { service: "z-steady", index: 0, nodeId: "a1", generation: 1 },
    ];
    const only = [node("a1", {}, 2000)];
    const plan = schedule(only, [service("a-grows", 1, { generation: 2, resources: { cpuMillis: 1800, memoryBytes: GIB } }), service("z-steady", 1)], current);
    expect(plan.assignments).toEqual([{ service: "z-steady", index: 0, nodeId: "a1", generation: 1 }]);
    expect(plan.stops).toEqual([{ ...current[0], reason: "does not fit" }]);
    expect(plan.unschedulable).toEqual([{ service: "a-grows", index: 0, reason: "1 schedulable node but none has 1800m cpu and 1GiB memory free" }]);
  });
});

describe("schedule: determinism", () => {
  const nodes = Array.from({ length: 12 }, (_, i) => node(`n${i}`, { zone: ["a", "b", "c"][i % 3], arch: i % 4 === 0 ? "arm64" : "amd64" }, 1000 + 500 * (i % 3), (2 + (i % 2)) * GIB));
  const services = [
    service("web", 7, { spreadKey: "zone" }),
    service("arm", 3, { selector: { arch: "arm64" } }),
    service("db", 2, { selector: { zone: "b" }, resources: { cpuMillis: 1000, memoryBytes: 2 * GIB } }),
    service("huge", 1, { resources: { cpuMillis: 10_000, memoryBytes: GIB } }),
  ];
  const reversed = <T>(xs: T[]) => [...xs].reverse();
  const rotate = <T>(xs: T[], k: number) => [...xs.slice(k), ...xs.slice(0, k)];

  it("gives the same plan for the same input in any order, and on a second run", () => {
    const plan = schedule(nodes, services, []);
    expect(schedule(reversed(nodes), reversed(services), [])).toEqual(plan);
    expect(schedule(rotate(nodes, 5), rotate(services, 2), [])).toEqual(plan);
    const current = plan.assignments.slice(0, 6).map((a, i) => (i % 2 ? { ...a, nodeId: "n0" } : a));
    const again = schedule(nodes, services, current);
    expect(schedule(rotate(nodes, 7), reversed(services), reversed(current))).toEqual(again);
    expect(plan.unschedulable.map((u) => u.service)).toEqual(["huge"]);
  });

  it("does not keep references to its inputs", () => {
    const input = services.map((s) => ({ ...s }));
    const plan = schedule(nodes, input, []);
    input[0].replicas = 0;
    expect(plan.assignments.filter((a) => a.service === "web")).toHaveLength(7);
  });
});

describe("schedule: validation", () => {
  const ok = node("n1");
  it.each<[string, () => unknown, string]>([
    ["negative cpu", () => schedule([ok], [service("s", 1, { resources: { cpuMillis: -1, memoryBytes: 0 } })], []), "services[0].resources.cpu_millis"],
    ["fractional memory", () => schedule([ok], [service("s", 1, { resources: { cpuMillis: 1, memoryBytes: 0.5 } })], []), "services[0].resources.memory_bytes"],
    ["replicas over the cap", () => schedule([ok], [service("s", MAX_REPLICAS + 1)], []), "services[0].replicas"],
    ["negative replicas", () => schedule([ok], [service("s", -1)], []), "services[0].replicas"],
    ["duplicate service", () => schedule([ok], [service("s", 1), service("t", 1), service("s", 2)], []), "services[2].name"],
    ["empty service name", () => schedule([ok], [service("", 1)], []), "services[0].name"],
    ["duplicate node", () => schedule([ok, node("n2"), ok], [], []), "nodes[2].id"],
    ["negative capacity", () => schedule([node("n1", {}, -5)], [], []), "nodes[0].capacity.cpu_millis"],
    ["capacity not a number", () => schedule([{ ...ok, capacity: { cpuMillis: Number.NaN, memoryBytes: 1 } }], [], []), "nodes[0].capacity.cpu_millis"],
    ["label value not a string", () => schedule([{ ...ok, labels: { zone: 3 as unknown as string } }], [], []), "nodes[0].labels[zone]"],
    ["selector value not a string", () => schedule([ok], [service("s", 1, { selector: { zone: null as unknown as string } })], []), "services[0].selector[zone]"],
    ["empty spread key", () => schedule([ok], [service("s", 1, { spreadKey: "" })], []), "services[0].spread_key"],
    ["duplicate assignment", () => schedule([ok], [service("s", 2)], [{ service: "s", index: 0, nodeId: "n1", generation: 1 }, { service: "s", index: 0, nodeId: "n2", generation: 1 }]), "current[1]"],
    ["negative index", () => schedule([ok], [service("s", 2)], [{ service: "s", index: -1, nodeId: "n1", generation: 1 }]), "current[0].index"],
  ])("%s", (_name, run, field) => {
    let error: unknown;
    try {
      run();
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ValidationError);
    expect((error as ValidationError).field).toBe(field);
  });

  it("a rejected change leaves the state as it was", () => {
    const state = new SchedulerState();
    state.load([ok], [service("s", 2)], []);
    const before = state.assignments();
    expect(() => state.applyService(service("s", 3, { resources: { cpuMillis: 1, memoryBytes: -1 } }))).toThrow(ValidationError);
    expect(() => state.setNode({ ...ok, capacity: { cpuMillis: 1.5, memoryBytes: 1 } })).toThrow(ValidationError);
    expect(state.assignments()).toEqual(before);
  });
});

describe("SchedulerState", () => {
  const nodes = [node("a1", { zone: "a" }), node("a2", { zone: "a" }), node("b1", { zone: "b" })];

  it("answers each change with only what changes", () => {
    const state = new SchedulerState();
    const loaded = state.load(nodes, [service("web", 2, { spreadKey: "zone" })], []);
    expect(loaded.launches).toHaveLength(2);
    const up = state.scaleService("web", 3);
    expect(up.launches).toEqual([{ service: "web", index: 2, nodeId: expect.any(String), generation: 1 }]);
    expect(up.stops).toEqual([]);
    const lost = state.removeNode(up.launches[0].nodeId);
    expect(lost.stops).toEqual([{ ...up.launches[0], reason: "node lost" }]);
    expect(lost.launches.map((a) => a.index)).toEqual([2]);
    expect(state.deleteService("web").stops.map((s) => s.reason)).toEqual(["service deleted", "service deleted", "service deleted"]);
    expect(state.assignments()).toEqual([]);
  });

  it("places replicas left unschedulable once room appears", () => {
    const state = new SchedulerState();
    state.load([node("n1", {}, 1000)], [service("a-filler", 2), service("b-waiting", 1)], []);
    expect(state.unschedulable()).toEqual([{ service: "b-waiting", index: 0, reason: "1 schedulable node but none has 500m cpu and 1GiB memory free" }]);
    const freed = state.scaleService("a-filler", 1);
    expect(freed.stops).toEqual([{ service: "a-filler", index: 1, nodeId: "n1", generation: 1, reason: "scaled down" }]);
    expect(freed.launches).toEqual([{ service: "b-waiting", index: 0, nodeId: "n1", generation: 1 }]);
    expect(freed.unschedulable).toEqual([]);
    const added = state.setNode(node("n2", {}, 1000));
    expect(added.launches).toEqual([]);
  });

  it("treats a heartbeat that changes nothing as no change, and unknown deletes as no-ops", () => {
    const state = new SchedulerState();
    state.load(nodes, [service("web", 3)], []);
    const empty = { launches: [], updates: [], stops: [], unschedulable: [] };
    expect(state.setNode(node("a1", { zone: "a" }))).toEqual(empty);
    expect(state.deleteService("nope")).toEqual(empty);
    expect(state.removeNode("nope")).toEqual(empty);
    expect(() => state.scaleService("nope", 2)).toThrow(NotFoundError);
  });

  it("reports use per node", () => {
    const state = new SchedulerState();
    state.load([node("n1")], [service("web", 3, { resources: { cpuMillis: 300, memoryBytes: 100 * MIB } })], []);
    expect(state.usage("n1")).toEqual({ cpuMillis: 900, memoryBytes: 300 * MIB });
    expect(state.assignmentsOn("n1").map((a) => a.index)).toEqual([0, 1, 2]);
    expect(state.usage("nope")).toBeUndefined();
  });
});
