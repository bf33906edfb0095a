/**
 * The workload reconcile loop on the real SQLite store with an injected clock: nothing waits on
 * real time; tests move the clock and call reconcile(), the level-triggered pass.
 */
import { Writable } from "node:stream";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { WorkloadCommand } from "../gen/autonomy/v1/workloads_pb.js";
import { validateApply, type ServiceSpecInput } from "../src/domain/workloads.js";
import { createLogger } from "../src/observability/logger.js";
import { createMetrics } from "../src/observability/metrics.js";
import { auditRecord } from "../src/services/audit-record.js";
import type { PushHub } from "../src/services/agent-push.js";
import { SightingBuffer } from "../src/store/sightings.js";
import type { Store } from "../src/store/store.js";
import type { ReplicaReportRow } from "../src/store/workload-rows.js";
import { WorkloadController } from "../src/workloads/controller.js";
import { ORPHAN_REASON, RELAUNCH_REASON } from "../src/workloads/reconcile.js";
import { openStore } from "./helpers/store.js";

const T0 = 1_800_000_000_000;
const STALE_MS = 60_000;
const LOST_MS = 120_000;
const RESEND_MS = 30_000;
const CAPACITY = { cpuMillis: 1000, memoryBytes: 1 << 30 };

const svc = (name: string, replicas: number, over: Partial<ServiceSpecInput> = {}): ServiceSpecInput => ({
  name,
  command: "/bin/sleep",
  args: ["600"],
  env: {},
  replicas,
  selector: {},
  resources: { cpuMillis: 100, memoryBytes: 1 << 20 },
  restartPolicy: "",
  spreadKey: "",
  ...over,
});

describe("workload reconcile loop (SQLite store, injected clock)", () => {
  let store: Store;
  let cleanup: () => Promise<void>;
  let clock: number;
  let sightings: SightingBuffer;
  let controller: WorkloadController;
  let sent: { nodeId: string; command: WorkloadCommand }[];
  let ids: number;
  const push = { workloadCommand: (nodeId: string, command: WorkloadCommand) => (sent.push({ nodeId, command }), true) } as unknown as PushHub;

  const boot = () => {
    sightings = new SightingBuffer({ store, flushIntervalMs: 3_600_000, onFlushError: () => {} });
    controller = new WorkloadController({
      store,
      sightings,
      push,
      metrics: createMetrics(),
      logger: createLogger({ format: "json", level: "error", destination: new Writable({ write: (_c, _e, done) => done() }) }),
      staleAfterMs: STALE_MS,
      lostAfterMs: LOST_MS,
      resendAfterMs: RESEND_MS,
      resyncMs: 0,
      now: () => clock,
      newId: () => `cmd-${++ids}`,
    });
  };
  /** A node's workload heartbeat, as ReportWorkloads stores it; answers its unanswered commands. */
  const report = async (nodeId: string, replicas: ReplicaReportRow[] = [], acks: string[] = []) => {
    sightings.record({ nodeId, lastSeenMs: clock });
    return store.reportWorkloads({ nodeId, atMs: clock, capacity: CAPACITY, usage: { cpuMillis: 0, memoryBytes: 0 }, replicas, acks: acks.map((commandId) => ({ commandId, ok: true, message: "" })) });
  };
  const running = (service: string, index: number, generation = 1): ReplicaReportRow => ({ replicaId: `${service}-${index}`, service, index, generation, state: "running", reason: "", restarts: 0, lastExitCode: null, lastOutput: [] });
  const apply = (specs: ServiceSpecInput[]) =>
    store.applyWorkloads({ specs: validateApply(specs), atMs: clock, audit: auditRecord({ actor: "operator:t", source: "api" }, { eventName: "workload.applied", category: "system", action: "apply", resourceType: "service", resource: "t" }, clock) });
  const placed = async () =>
    (await store.workloadSnapshot()).replicas.map((r) => `${r.service}-${r.idx}@${r.nodeId || "-"}:${r.desiredState}/${r.state}`);
  /** Reports every replica placed on the node as running, answering its commands. */
  const converge = async (nodeId: string) => {
    const snap = await store.workloadSnapshot();
    const mine = snap.replicas.filter((r) => r.nodeId === nodeId && r.desiredState === "running").map((r) => running(r.service, r.idx, r.generation));
    const acks = snap.unanswered.filter((c) => c.nodeId === nodeId).map((c) => c.commandId);
    return report(nodeId, mine, acks);
  };

  beforeEach(async () => {
    ({ store, cleanup } = await openStore("sqlite"));
    clock = T0;
    sent = [];
    ids = 0;
    for (const id of ["n1", "n2"]) await store.enrollNode({ nodeId: id, channel: "stable", labels: { zone: id === "n1" ? "a" : "b" }, agentVersion: "1" }, clock);
    boot();
    await report("n1");
    await report("n2");
    await controller.start();
  });
  afterEach(async () => {
    await controller.stop();
    await sightings.close();
    await cleanup();
  });

  it("writes the placement with one launch per replica, and sends nothing new on the next pass", async () => {
    await apply([svc("web", 3, { spreadKey: "zone" })]);
    const first = await controller.reconcile();
    expect(first).toMatchObject({ written: true, sent: 3, outcome: "ok", decisions: { launch: 3 } });
    expect(await placed()).toEqual(["web-0@n1:running/pending", "web-1@n2:running/pending", "web-2@n1:running/pending"]);
    expect(sent.map((s) => [s.nodeId, s.command.action.case, s.command.action.value && "replicaId" in s.command.action.value ? s.command.action.value.replicaId : ""])).toEqual([
      ["n1", "launch", "web-0"],
      ["n2", "launch", "web-1"],
      ["n1", "launch", "web-2"],
    ]);
    const launch = sent[0].command.action;
    expect(launch.case === "launch" && launch.value).toMatchObject({ command: "/bin/sleep", args: ["600"], restartPolicy: "always", generation: 1n });
    sent = [];
    expect(await controller.reconcile()).toMatchObject({ written: false, sent: 0, resent: 0 });
    expect(sent).toEqual([]);
  });

  it("pushes an unanswered command again after the resend delay, and an answered one never", async () => {
    await apply([svc("web", 2)]);
    await controller.reconcile();
    const unansweredIds = (await store.workloadSnapshot()).unanswered.map((c) => c.commandId);
    expect(unansweredIds).toHaveLength(2);
    // n1 answers its command; n2 does not.
    await converge("n1");
    sent = [];
    clock += RESEND_MS - 1;
    expect(await controller.reconcile()).toMatchObject({ resent: 0 });
    clock += 2;
    await report("n1", (await store.workloadSnapshot()).replicas.filter((r) => r.nodeId === "n1").map((r) => running(r.service, r.idx)));
    await report("n2");
    const pass = await controller.reconcile();
    expect(pass).toMatchObject({ resent: 1, sent: 0 });
    expect(sent.map((s) => s.nodeId)).toEqual(["n2"]);
    // The answer to n2's report carries the same command.
    expect((await report("n2")).map((c) => c.commandId)).toEqual(sent.map((s) => s.command.commandId));
  });

  it("keeps a silent node's replicas until --replica-lost-after, then places them elsewhere and stops them when the node is back", async () => {
    await apply([svc("web", 2)]);
    await controller.reconcile();
    await converge("n1");
    await converge("n2");
    await controller.reconcile();
    expect(await placed()).toEqual(["web-0@n1:running/running", "web-1@n2:running/running"]);
    // n1 goes silent; n2 keeps reporting.
    for (let t = 0; t < LOST_MS; t += 20_000) {
      clock += 20_000;
      await converge("n2");
      expect(await controller.reconcile()).toMatchObject({ decisions: { launch: 0, stop: 0 } });
    }
    expect(await placed()).toEqual(["web-0@n1:running/running", "web-1@n2:running/running"]);
    clock += 20_000;
    await converge("n2");
    sent = [];
    expect(await controller.reconcile()).toMatchObject({ decisions: { launch: 1, stop: 1 } });
    expect(await placed()).toEqual(["web-0@n1:stopped/lost", "web-0@n2:running/pending", "web-1@n2:running/running"]);
    // The stop for n1 waits in the outbox: n1 back, its report's answer carries it.
    const stop = (await store.unansweredCommands("n1")).map((c) => c.kind);
    expect(stop).toEqual(["stop"]);
    const answer = await report("n1", [running("web", 0)]);
    expect(answer.map((c) => c.kind)).toEqual(["stop"]);
    await report("n1", [{ ...running("web", 0), state: "stopped" }], answer.map((c) => c.commandId));
    clock += 1;
    await report("n1", [{ ...running("web", 0), state: "stopped" }]);
    await controller.reconcile();
    expect(await placed()).toEqual(["web-0@n2:running/pending", "web-1@n2:running/running"]);
  });

  it("stops an orphan (a replica a node runs that is not placed there) once", async () => {
    await report("n2", [running("ghost", 0)]);
    const pass = await controller.reconcile();
    expect(pass.decisions.orphan).toBe(1);
    expect(sent).toHaveLength(1);
    expect(sent[0].nodeId).toBe("n2");
    expect(sent[0].command.action).toMatchObject({ case: "stop", value: { replicaId: "ghost-0", reason: ORPHAN_REASON } });
    expect((await controller.reconcile()).decisions.orphan).toBe(0);
  });

  it("launches again a replica its node reports stopped (the agent restarted) or no longer lists, not one that exited on its own", async () => {
    await apply([svc("web", 2, { spreadKey: "zone" })]);
    await controller.reconcile();
    clock += 1000;
    await converge("n1");
    await converge("n2");
    expect((await controller.reconcile()).decisions.relaunch).toBe(0);
    sent = [];
    clock += 1000;
    // n1's agent restarted and ended its earlier run's replica; n2's replica exited by itself.
    await report("n1", [{ ...running("web", 0), state: "stopped", reason: "orphan of an earlier agent run" }]);
    await report("n2", [{ ...running("web", 1), state: "exited", lastExitCode: 0 }]);
    const pass = await controller.reconcile();
    expect(pass.decisions.relaunch).toBe(1);
    expect(sent.map((c) => [c.nodeId, c.command.action.case])).toEqual([["n1", "launch"]]);
    expect(await placed()).toEqual(["web-0@n1:running/pending", "web-1@n2:running/exited"]);
    expect((await store.workloadSnapshot()).replicas[0].reason).toBe(RELAUNCH_REASON);
    // While that launch is unanswered nothing more is sent; once answered and running, nothing either.
    clock += 1000;
    await report("n1", []);
    expect((await controller.reconcile()).decisions.relaunch).toBe(0);
    clock += 1000;
    await converge("n1");
    expect((await controller.reconcile()).decisions.relaunch).toBe(0);
    // A node whose report no longer lists a replica it had answered gets it again.
    clock += 1000;
    await report("n1", []);
    expect((await controller.reconcile()).decisions.relaunch).toBe(1);
  });

  it("a restarted controller changes nothing already right, and loses no node within the grace after it became leader", async () => {
    await apply([svc("web", 2), svc("api", 1, { env: { A: "1" } })]);
    await controller.reconcile();
    await converge("n1");
    await converge("n2");
    await controller.reconcile();
    const before = await store.workloadSnapshot();
    await controller.stop();
    // Both nodes fall silent for longer than the lost threshold while no leader runs.
    clock += LOST_MS + 5_000;
    boot();
    sent = [];
    await controller.start();
    expect(await controller.reconcile()).toMatchObject({ written: false, decisions: { launch: 0, update: 0, stop: 0 } });
    const after = await store.workloadSnapshot();
    expect(after.replicas).toEqual(before.replicas);
    expect(after.unanswered).toEqual([]);
    expect(sent).toEqual([]);
    // Past the grace (lost-after again from the start), the silent nodes are lost.
    clock += LOST_MS + 1;
    const lost = await controller.reconcile();
    expect(lost.decisions.stop).toBe(3);
    expect((await placed()).filter((p) => p.endsWith("/lost"))).toHaveLength(3);
  });

  it("does nothing while it does not lead, and tells the leader's loop through the relay instead", async () => {
    await controller.follow();
    let relayed = 0;
    const follower = new WorkloadController({
      store,
      sightings,
      push,
      metrics: createMetrics(),
      logger: createLogger({ format: "json", level: "error", destination: new Writable({ write: (_c, _e, done) => done() }) }),
      staleAfterMs: STALE_MS,
      resyncMs: 0,
      now: () => clock,
      relay: { workloads: () => relayed++ },
    });
    await apply([svc("web", 1)]);
    follower.changed();
    follower.reported();
    expect(relayed).toBe(2);
    expect(await follower.reconcile()).toMatchObject({ outcome: "skipped" });
    expect(await placed()).toEqual([]);
    expect(sent).toEqual([]);
  });

  it("updates a replica in place when its spec changes, and stops what a scale-down removes", async () => {
    await apply([svc("web", 2)]);
    await controller.reconcile();
    await converge("n1");
    await converge("n2");
    await apply([svc("web", 1, { env: { MODE: "x" } })]);
    sent = [];
    const pass = await controller.reconcile();
    expect(pass.decisions).toMatchObject({ update: 1, stop: 1 });
    expect(sent.map((s) => s.command.action.case).sort()).toEqual(["stop", "update"]);
    const update = sent.find((s) => s.command.action.case === "update")!.command.action;
    expect(update.case === "update" && update.value).toMatchObject({ generation: 2n, env: { MODE: "x" } });
  });
});
