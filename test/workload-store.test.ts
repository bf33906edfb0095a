import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AbortedError, FencedError, NotFoundError } from "../src/domain/errors.js";
import { validateApply, type ServiceSpecInput } from "../src/domain/workloads.js";
import { auditRecord } from "../src/services/audit-record.js";
import type { Store } from "../src/store/store.js";
import type { CommandRow } from "../src/store/workload-rows.js";
import { STORE_KINDS } from "./helpers/server.js";
import { openStore } from "./helpers/store.js";

const NOW = Date.now();
const who = { actor: "operator:olga", source: "api" };
const record = (eventName: string, resource: string) => auditRecord(who, { eventName, category: "workload", action: "apply", resourceType: "service", resource }, NOW);
const svc = (name: string, over: Partial<ServiceSpecInput> = {}): ServiceSpecInput => ({
  name,
  command: "/bin/sleep",
  args: ["60"],
  env: {},
  replicas: 2,
  selector: {},
  resources: { cpuMillis: 100, memoryBytes: 1 << 20 },
  restartPolicy: "",
  spreadKey: "",
  ...over,
});
const apply = (store: Store, specs: ServiceSpecInput[], expectedVersion?: number) =>
  store.applyWorkloads({ specs: validateApply(specs), expectedVersion, atMs: NOW, audit: record("workload.applied", specs.map((s) => s.name).join(",")) });
const command = (commandId: string, nodeId: string, createdAtMs = NOW): CommandRow => ({
  commandId,
  nodeId,
  replicaId: "web-0",
  kind: "launch",
  payload: JSON.stringify({ commandId }),
  createdAtMs,
  ackedAtMs: null,
  ok: null,
  message: "",
});

/** Services, placements, reports and the command outbox: the same on both stores. */
describe.each(STORE_KINDS)("workload store contract: %s", (kind) => {
  let store: Store;
  let cleanup: () => Promise<void>;
  beforeAll(async () => ({ store, cleanup } = await openStore(kind)));
  afterAll(async () => cleanup());

  it("creates, scales, updates and leaves unchanged, bumping the version only on a change, audited once per change", async () => {
    expect((await store.workloadSnapshot()).version).toBe(0);
    const first = await apply(store, [svc("web"), svc("db", { replicas: 1 })], 0);
    expect(first).toEqual({ version: 1, changes: [{ name: "web", change: "created", generation: 1 }, { name: "db", change: "created", generation: 1 }] });
    const same = await apply(store, [svc("web")]);
    expect(same).toEqual({ version: 1, changes: [{ name: "web", change: "unchanged", generation: 1 }] });
    const scaled = await apply(store, [svc("web", { replicas: 5 })], 1);
    expect(scaled.changes).toEqual([{ name: "web", change: "scaled", generation: 1 }]);
    const updated = await apply(store, [svc("web", { replicas: 5, env: { MODE: "fast" } })], 2);
    expect(updated).toEqual({ version: 3, changes: [{ name: "web", change: "updated", generation: 2 }] });
    const snap = await store.workloadSnapshot();
    expect(snap.version).toBe(3);
    expect(snap.services.map((s) => [s.name, s.generation])).toEqual([["db", 1], ["web", 2]]);
    expect(JSON.parse(snap.services[1].spec)).toMatchObject({ replicas: 5, env: { MODE: "fast" }, restartPolicy: "always" });
    const audits = await store.auditRecords({ eventName: "workload.applied", limit: 10 });
    expect(audits.map((a) => JSON.parse(a.fieldsJson).version)).toEqual([3, 2, 1]);
  });

  it("refuses a stale expected version and writes nothing of the apply", async () => {
    const before = await store.workloadSnapshot();
    await expect(apply(store, [svc("cache"), svc("web", { replicas: 9 })], before.version - 1)).rejects.toBeInstanceOf(AbortedError);
    const after = await store.workloadSnapshot();
    expect(after.version).toBe(before.version);
    expect(after.services).toEqual(before.services);
  });

  it("deletes a service with a version bump; an unknown one is NotFound, a stale version Aborted", async () => {
    await apply(store, [svc("tmp")]);
    const v = (await store.workloadSnapshot()).version;
    await expect(store.deleteWorkloadService({ name: "tmp", expectedVersion: v - 1, atMs: NOW, audit: record("workload.deleted", "tmp") })).rejects.toBeInstanceOf(AbortedError);
    expect(await store.deleteWorkloadService({ name: "tmp", expectedVersion: v, atMs: NOW, audit: record("workload.deleted", "tmp") })).toEqual({ version: v + 1 });
    await expect(store.deleteWorkloadService({ name: "tmp", atMs: NOW, audit: record("workload.deleted", "tmp") })).rejects.toBeInstanceOf(NotFoundError);
    expect((await store.workloadSnapshot()).services.map((s) => s.name)).not.toContain("tmp");
  });

  it("commits a placement with its commands only at the current version", async () => {
    const { version } = await store.workloadSnapshot();
    const commit = {
      expectedVersion: version,
      atMs: NOW,
      upserts: [
        { service: "web", idx: 0, nodeId: "n1", generation: 2, desiredState: "running" as const, state: "pending", reason: "" },
        { service: "web", idx: 1, nodeId: "", generation: 2, desiredState: "running" as const, state: "unschedulable", reason: "no node matches" },
      ],
      removals: [],
      commands: [command("c1", "n1"), command("c2", "n1", NOW + 1)],
    };
    await expect(store.commitPlacement({ ...commit, expectedVersion: version + 1 })).rejects.toBeInstanceOf(AbortedError);
    // PostgreSQL: a commit under an epoch that is not the current leader's writes nothing (SQLite runs standalone, unfenced).
    if (kind === "postgres") await expect(store.commitPlacement({ ...commit, fenceEpoch: 999 })).rejects.toBeInstanceOf(FencedError);
    expect((await store.workloadSnapshot()).replicas).toEqual([]);
    await store.commitPlacement(commit);
    const snap = await store.workloadSnapshot();
    expect(snap.replicas.map((r) => [r.service, r.idx, r.nodeId, r.state])).toEqual([
      ["web", 0, "n1", "pending"],
      ["web", 1, "", "unschedulable"],
    ]);
    expect(snap.unanswered.map((c) => c.commandId)).toEqual(["c1", "c2"]);
    expect((await store.unansweredCommands("n1")).map((c) => c.commandId)).toEqual(["c1", "c2"]);
    expect(await store.unansweredCommands("n2")).toEqual([]);
  });

  it("stores a report on the replica rows, takes acks of the node's own commands only, and answers what is still unanswered", async () => {
    const left = await store.reportWorkloads({
      nodeId: "n1",
      atMs: NOW + 10,
      capacity: { cpuMillis: 4000, memoryBytes: 2 ** 33 },
      usage: { cpuMillis: 150, memoryBytes: 2 ** 20 },
      replicas: [{ replicaId: "web-0", service: "web", index: 0, generation: 2, state: "running", reason: "", restarts: 1, lastExitCode: 3, lastOutput: ["hello"] }],
      acks: [{ commandId: "c1", ok: true, message: "" }],
    });
    expect(left.map((c) => c.commandId)).toEqual(["c2"]);
    // Another node cannot answer n1's command.
    await store.reportWorkloads({ nodeId: "n2", atMs: NOW + 11, capacity: { cpuMillis: 1, memoryBytes: 1 }, usage: { cpuMillis: 0, memoryBytes: 0 }, replicas: [], acks: [{ commandId: "c2", ok: true, message: "" }] });
    const snap = await store.workloadSnapshot();
    expect(snap.unanswered.map((c) => c.commandId)).toEqual(["c2"]);
    expect(snap.replicas[0]).toMatchObject({ state: "running", restarts: 1, lastExitCode: 3, lastOutput: '["hello"]', observedGeneration: 2, reportedAtMs: NOW + 10 });
    expect(snap.nodes.map((n) => [n.nodeId, n.capacityCpuMillis, n.capacityMemoryBytes, n.usageCpuMillis])).toEqual([
      ["n1", 4000, 2 ** 33, 150],
      ["n2", 1, 1, 0],
    ]);
    expect(JSON.parse(snap.nodes[0].replicas)).toHaveLength(1);
  });

  it("lists only the nodes that report workloads when asked, so a reconcile pass never reads the rest of the fleet", async () => {
    for (const nodeId of ["n1", "n2", "quiet-1", "quiet-2"]) await store.enrollNode({ nodeId, channel: "wl", labels: {}, agentVersion: "1" }, NOW);
    const reporting = await store.listNodes({ reportingWorkloads: true });
    expect(reporting.map((n) => n.nodeId)).toEqual(["n1", "n2"]);
    expect((await store.listNodes({ channel: "wl" })).map((n) => n.nodeId)).toEqual(["n1", "n2", "quiet-1", "quiet-2"]);
  });

  it("keeps reported fields when a placement changes without a state, removes rows and prunes answered commands", async () => {
    const { version } = await store.workloadSnapshot();
    await store.commitPlacement({
      expectedVersion: version,
      atMs: NOW + 20,
      upserts: [{ service: "web", idx: 0, nodeId: "n1", generation: 2, desiredState: "stopped", reason: "scaled down" }],
      removals: [{ service: "web", idx: 1, nodeId: "" }],
      commands: [],
      pruneAnsweredBeforeMs: NOW + 15,
    });
    const snap = await store.workloadSnapshot();
    expect(snap.replicas).toHaveLength(1);
    expect(snap.replicas[0]).toMatchObject({ desiredState: "stopped", state: "running", reason: "scaled down", restarts: 1 });
    expect(snap.unanswered.map((c) => c.commandId)).toEqual(["c2"]);
    expect((await store.replicasOfNode("n1")).map((r) => `${r.service}-${r.idx}:${r.desiredState}`)).toEqual(["web-0:stopped"]);
    expect(await store.replicasOfNode("n9")).toEqual([]);
  });
});
