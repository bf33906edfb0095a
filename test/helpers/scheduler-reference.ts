/**
 * The placement rules of src/domain/scheduler.ts written as plainly as possible: every replica
 * looks at every node. Slow and obviously right; the tests hold the real scheduler to it.
 */
import type { Assignment, SchedulePlan, SchedulerNode, SchedulerService, Stop, Unschedulable } from "../../src/domain/scheduler.js";

const cmp = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);
const byReplica = (a: { service: string; index: number }, b: { service: string; index: number }) => cmp(a.service, b.service) || a.index - b.index;

function memory(bytes: number): string {
  const units: Array<[string, number]> = [
    ["TiB", 1024 ** 4],
    ["GiB", 1024 ** 3],
    ["MiB", 1024 ** 2],
    ["KiB", 1024],
  ];
  for (const [unit, size] of units) if (bytes >= size && bytes % size === 0) return `${bytes / size}${unit}`;
  return `${bytes}B`;
}

export function referenceSchedule(nodesIn: readonly SchedulerNode[], servicesIn: readonly SchedulerService[], currentIn: readonly Assignment[]): SchedulePlan {
  const nodes = [...nodesIn].sort((a, b) => cmp(a.id, b.id));
  const services = [...servicesIn].sort((a, b) => cmp(a.name, b.name));
  const current = [...currentIn].sort(byReplica);
  const nodeById = new Map(nodes.map((n) => [n.id, n]));
  const svcByName = new Map(services.map((s) => [s.name, s]));
  const matches = (n: SchedulerNode, s: SchedulerService) => Object.entries(s.selector).every(([k, v]) => Object.hasOwn(n.labels, k) && n.labels[k] === v);
  const used = new Map(nodes.map((n) => [n.id, { cpu: 0, mem: 0 }]));
  const placed = new Map<string, Assignment>(); // "service/index" → assignment
  const stops: Stop[] = [];
  const updates: Assignment[] = [];
  const launches: Assignment[] = [];
  const unschedulable: Unschedulable[] = [];

  const perNode = new Map<string, Assignment[]>();
  for (const a of current) {
    const s = svcByName.get(a.service);
    const n = nodeById.get(a.nodeId);
    let reason: string | undefined;
    if (!s) reason = "service deleted";
    else if (a.index >= s.replicas) reason = "scaled down";
    else if (!n) reason = "node lost";
    else if (!n.schedulable) reason = "node not schedulable";
    else if (!matches(n, s)) reason = "node no longer matches selector";
    if (reason) stops.push({ ...a, reason });
    else perNode.set(a.nodeId, [...(perNode.get(a.nodeId) ?? []), a]);
  }
  for (const n of nodes) {
    const list = perNode.get(n.id) ?? [];
    const changed = (a: Assignment) => (a.generation === svcByName.get(a.service)!.generation ? 0 : 1);
    list.sort((a, b) => changed(a) - changed(b) || byReplica(a, b));
    const u = used.get(n.id)!;
    for (const a of list) {
      const s = svcByName.get(a.service)!;
      if (u.cpu + s.resources.cpuMillis > n.capacity.cpuMillis || u.mem + s.resources.memoryBytes > n.capacity.memoryBytes) {
        stops.push({ ...a, reason: "does not fit" });
        continue;
      }
      u.cpu += s.resources.cpuMillis;
      u.mem += s.resources.memoryBytes;
      const kept = { ...a, generation: s.generation };
      if (a.generation !== s.generation) updates.push(kept);
      placed.set(`${a.service}/${a.index}`, kept);
    }
  }

  const share = (n: SchedulerNode) => {
    const u = used.get(n.id)!;
    const c = n.capacity;
    return Math.max(c.cpuMillis > 0 ? u.cpu / c.cpuMillis : 0, c.memoryBytes > 0 ? u.mem / c.memoryBytes : 0);
  };
  const spreadOf = (n: SchedulerNode, s: SchedulerService) => (s.spreadKey === undefined ? "" : Object.hasOwn(n.labels, s.spreadKey) ? n.labels[s.spreadKey] : "");

  for (const s of services) {
    // This service's replicas per node and per spread value, kept and placed so far.
    const onNode = new Map<string, number>();
    const underValue = new Map<string, number>();
    const add = (n: SchedulerNode) => {
      onNode.set(n.id, (onNode.get(n.id) ?? 0) + 1);
      underValue.set(spreadOf(n, s), (underValue.get(spreadOf(n, s)) ?? 0) + 1);
    };
    for (const a of placed.values()) if (a.service === s.name) add(nodeById.get(a.nodeId)!);
    for (let i = 0; i < s.replicas; i++) {
      if (placed.has(`${s.name}/${i}`)) continue;
      const eligible = nodes.filter((n) => {
        const u = used.get(n.id)!;
        return (
          n.schedulable &&
          matches(n, s) &&
          u.cpu + s.resources.cpuMillis <= n.capacity.cpuMillis &&
          u.mem + s.resources.memoryBytes <= n.capacity.memoryBytes
        );
      });
      if (eligible.length === 0) {
        unschedulable.push({ service: s.name, index: i, reason: reasonFor(s) });
        continue;
      }
      const key = (n: SchedulerNode) => [underValue.get(spreadOf(n, s)) ?? 0, onNode.get(n.id) ?? 0, share(n)];
      eligible.sort((a, b) => {
        const ka = key(a);
        const kb = key(b);
        return ka[0] - kb[0] || ka[1] - kb[1] || ka[2] - kb[2] || cmp(a.id, b.id);
      });
      const n = eligible[0];
      const a = { service: s.name, index: i, nodeId: n.id, generation: s.generation };
      placed.set(`${s.name}/${i}`, a);
      launches.push(a);
      add(n);
      const u = used.get(n.id)!;
      u.cpu += s.resources.cpuMillis;
      u.mem += s.resources.memoryBytes;
    }
  }

  function reasonFor(s: SchedulerService): string {
    const sel = Object.keys(s.selector)
      .sort(cmp)
      .map((k) => `${k}=${s.selector[k]}`)
      .join(",");
    const matching = nodes.filter((n) => matches(n, s));
    const schedulable = matching.filter((n) => n.schedulable);
    const count = (k: number, one: string, many: string) => (sel ? `${k} ${k === 1 ? one + " matches" : many + " match"} selector ${sel}` : `${k} ${k === 1 ? one : many}`);
    if (matching.length === 0) return sel ? `no node matches selector ${sel}` : "no nodes";
    if (schedulable.length === 0) return `${count(matching.length, "node", "nodes")} but none is schedulable`;
    const r = s.resources;
    const res = [r.cpuMillis > 0 ? `${r.cpuMillis}m cpu` : "", r.memoryBytes > 0 ? `${memory(r.memoryBytes)} memory` : ""].filter(Boolean).join(" and ") || "nothing";
    const large = schedulable.some((n) => n.capacity.cpuMillis >= r.cpuMillis && n.capacity.memoryBytes >= r.memoryBytes);
    return `${count(schedulable.length, "schedulable node", "schedulable nodes")} but none ${large ? `has ${res} free` : `is large enough for ${res}`}`;
  }

  return {
    assignments: [...placed.values()].sort(byReplica),
    launches: launches.sort(byReplica),
    updates: updates.sort(byReplica),
    stops: stops.sort(byReplica),
    unschedulable: unschedulable.sort(byReplica),
  };
}
