import { verify, createPublicKey } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createOrchestratorClients, type OrchestratorClients } from "../clients/index.js";
import { startServer } from "../src/server.js";
import { h1 } from "./helpers/http.js";
import { memoryLogger, STORE_KINDS, startTestServer, type TestServer } from "./helpers/server.js";
import { until } from "./helpers/wait.js";

const DIGEST = `sha256:${"ab".repeat(32)}`;
const release = (id: string, channel: string, staged: boolean) => ({
  release_id: id,
  channel,
  version: id,
  staged,
  artifacts: [{ name: "app", digest: DIGEST }],
});

describe.each(STORE_KINDS)("rollouts on %s", (kind) => {
  let server: TestServer;
  let api: OrchestratorClients;
  const call = async (method: string, p: string, body?: unknown) => {
    const res = await h1(`${server.url}${p}`, {
      method,
      body: body === undefined ? undefined : JSON.stringify(body),
      headers: { "content-type": "application/json", "autonomy-operator": "alice" },
    });
    return { status: res.status, body: res.json() };
  };
  const status = async (planId: string) => (await call("GET", `/v1/rollouts/${planId}/status`)).body.status;
  const phaseIs = (planId: string, phase: string) =>
    until(`plan ${planId} ${phase}`, async () => {
      const s = await status(planId);
      return s.phase === phase ? s : undefined;
    });
  const enrol = async (channel: string, ids: string[], labels: Record<string, string> = {}) => {
    for (const nodeId of ids) {
      await api.nodes.enrollNode({ nodeId, channel, labels });
      await api.nodes.heartbeat({ nodeId });
    }
  };
  const ack = (nodeId: string, releaseId: string, state: string) =>
    call("POST", `/v1/nodes/${nodeId}/ack`, { release_id: releaseId, state, reported_release_id: state === "healthy" ? releaseId : "" });
  const desired = async (nodeId: string) => (await call("GET", `/v1/nodes/${nodeId}/desired-release`)).body;

  beforeAll(async () => {
    server = await startTestServer(kind, { heartbeatFlushMs: 3_600_000 });
    api = createOrchestratorClients({ baseUrl: server.url });
  });
  afterAll(async () => {
    api.close();
    await server.stop();
  });

  it("keeps nodes off a staged release until a plan moves them; an unstaged one reaches every node", async () => {
    await enrol("stage-test", ["st-1", "st-2"]);
    await call("POST", "/v1/releases", release("st-r1", "stage-test", false));
    await call("POST", "/v1/releases", release("st-r2", "stage-test", true));
    expect(await desired("st-1")).toMatchObject({ release: { release_id: "st-r1" }, plan_id: "" });
    const created = await call("POST", "/v1/rollouts", {
      plan_id: "st-plan",
      release_id: "st-r2",
      stages: [{ stage_id: "one", node_ids: ["st-1"], gates: [{ kind: "manual" }] }],
    });
    expect(created.status).toBe(200);
    await until("the move", async () => ((await desired("st-1")).release.release_id === "st-r2" ? true : undefined));
    expect(await desired("st-1")).toMatchObject({ plan_id: "st-plan" });
    expect(await desired("st-2")).toMatchObject({ release: { release_id: "st-r1" }, plan_id: "" });
    // A later unstaged release is the newer decision: every node follows it.
    await call("POST", "/v1/releases", release("st-r3", "stage-test", false));
    expect((await desired("st-1")).release.release_id).toBe("st-r3");
    expect((await call("POST", "/v1/rollouts/st-plan/cancel", { reason: "done with this test" })).status).toBe(200);
  });

  it("walks a three-stage plan: canary, manual gate, 50 %, a failure that halts it by itself, recovery", async () => {
    const nodes = Array.from({ length: 6 }, (_, i) => `w-${i}`);
    await enrol("walk", nodes);
    // Every node runs walk-r0 before the plan; half of them have said so.
    await call("POST", "/v1/releases", release("walk-r0", "walk", false));
    for (const n of nodes.slice(0, 3)) await ack(n, "walk-r0", "healthy");
    await call("POST", "/v1/releases", release("walk-r1", "walk", true));
    const plan = {
      plan_id: "walk-plan",
      release_id: "walk-r1",
      description: "walk through",
      stages: [
        { stage_id: "canary", node_ids: ["w-0"], gates: [{ kind: "success_ratio", min_ratio: 1 }, { kind: "manual" }] },
        { stage_id: "half", percent: 50, gates: [{ kind: "max_failure_ratio", max_ratio: 0.4 }] },
        { stage_id: "rest", percent: 100, gates: [{ kind: "success_ratio", min_ratio: 1 }] },
      ],
    };
    const created = await call("POST", "/v1/rollouts", plan);
    expect(created.body).toMatchObject({ created: true, plan: { plan_id: "walk-plan", channel: "walk" }, status: { phase: "published", version: 1 } });

    // Immutable: the same spec again is a no-op, another spec a conflict; one unfinished plan per channel.
    expect((await call("POST", "/v1/rollouts", plan)).body).toMatchObject({ created: false });
    const changed = await call("POST", "/v1/rollouts", { ...plan, description: "other" });
    expect(changed.status).toBe(409);
    expect(changed.body.message).toMatch(/another spec/);
    const second = await call("POST", "/v1/rollouts", { ...plan, plan_id: "walk-plan-2" });
    expect(second.status).toBe(409);
    expect(second.body.message).toMatch(/plan "walk-plan" of channel "walk" is (published|active)/);

    // The controller starts it: the canary is moved.
    let s = await phaseIs("walk-plan", "active");
    expect(s.stages[0]).toMatchObject({ stage_id: "canary", phase: "open", node_count: 1, pending: 1 });

    // The signed spec verifies against the served key, over exactly the canonical bytes.
    const spec = (await api.rollouts.getRolloutSpec({ planId: "walk-plan" }))!;
    const { keys } = await api.rollouts.listSigningKeys({});
    const key = keys.find((k) => k.keyId === spec.keyId)!;
    expect(key.current).toBe(true);
    expect(verify(null, spec.canonicalSpec, createPublicKey(key.publicKeyPem), spec.signature)).toBe(true);
    const tampered = Buffer.from(spec.canonicalSpec);
    tampered[tampered.length - 2] ^= 1;
    expect(verify(null, tampered, createPublicKey(key.publicKeyPem), spec.signature)).toBe(false);
    expect(JSON.parse(Buffer.from(spec.canonicalSpec).toString())).toMatchObject({ plan_id: "walk-plan", release_id: "walk-r1", channel: "walk" });

    // Healthy canary: success passes, the manual gate holds the stage.
    await ack("w-0", "walk-r1", "healthy");
    const gates = await until("canary success", async () => {
      const g = (await call("GET", "/v1/rollouts/walk-plan/stages/canary/gates")).body;
      return g.gates[0].passed ? g : undefined;
    });
    expect(gates).toEqual({
      stage_phase: "open",
      gates: [
        { kind: "success_ratio", passed: true, detail: "1 of 1 healthy (1; needs 1 and at least 1)" },
        { kind: "manual", passed: false, detail: "awaiting operator approval" },
      ],
      manual_approved: false,
      all_passed: false,
    });

    // Actions the phase forbids are refused naming it; a stale version is refused too.
    const resume = await call("POST", "/v1/rollouts/walk-plan/resume", { reason: "r" });
    expect(resume).toMatchObject({ status: 409, body: { code: "failed_precondition", message: expect.stringContaining("the plan is active") } });
    expect((await call("POST", "/v1/rollouts/walk-plan/pause", { reason: "" })).body.message).toMatch(/^reason: required/);
    const version = (await status("walk-plan")).version;
    const stale = await call("POST", "/v1/rollouts/walk-plan/pause", { reason: "r", expected_version: version - 1 });
    expect(stale).toMatchObject({ status: 409, body: { code: "aborted" } });

    // Approval opens the 50 % stage: ceil(50 % of 6) = 3 covered, so 2 more nodes.
    const approved = await call("POST", "/v1/rollouts/walk-plan/stages/canary/gates/approve", { reason: "canary fine" });
    expect(approved.body).toMatchObject({ approved: true, promoted: true });
    s = approved.body.status;
    expect(s.current_stage_id).toBe("half");
    expect(s.stages.map((x: { phase: string }) => x.phase)).toEqual(["passed", "open", "pending"]);
    expect(s.stages[1].node_count).toBe(2);

    // One of two failing is 0.5 > 0.4: the plan halts by itself, with the reason.
    const moves = await server.store.movesOfPlan("walk-plan");
    const half = moves.filter((m) => m.stageId === "half").map((m) => m.nodeId);
    await ack(half[0], "walk-r1", "failed");
    s = await phaseIs("walk-plan", "halted");
    expect(s.reason).toBe('stage "half": 1 of 2 node(s) failed (0.5), above max_failure_ratio 0.4');
    expect(s.stages[1]).toMatchObject({ phase: "halted", failed: 1, pending: 1 });

    // Rollback preview writes nothing; rollback gives every moved node the release it ran before.
    const preview = await call("POST", "/v1/rollouts/walk-plan/recover", { strategy: "rollback", reason: "bad", dry_run: true });
    expect(preview.body).toMatchObject({ dry_run: true, from_phase: "halted", to_phase: "rolling_back" });
    expect((await status("walk-plan")).phase).toBe("halted");
    const rolled = await call("POST", "/v1/rollouts/walk-plan/recover", { strategy: "rollback", reason: "bad release" });
    expect(rolled.body).toMatchObject({ from_phase: "halted", to_phase: "rolling_back" });
    const moved = ["w-0", ...half].sort();
    expect(rolled.body.moved_nodes.map((m: { node_id: string }) => m.node_id).sort()).toEqual(moved);
    // The moved nodes' desired release is walk-r0 again (no plan to verify); the others never left it.
    for (const n of nodes) expect(await desired(n), n).toMatchObject({ release: { release_id: "walk-r0" }, plan_id: "" });
    // Only abort is allowed while it rolls back; the progress is in the status.
    const paused = await call("POST", "/v1/rollouts/walk-plan/pause", { reason: "r" });
    expect(paused.body.message).toMatch(/cannot pause: the plan is rolling_back \(allowed: abort\)/);
    s = await status("walk-plan");
    expect(s.phase).toBe("rolling_back");
    expect(s.reason).toBe("rolling back (bad release): 0 of 3 node(s) back on their previous release");
    // A stale healthy ack of walk-r0 from before the rollback does not count: the nodes ack again.
    await ack(moved[0], "walk-r0", "healthy");
    await until("one back", async () => ((await status("walk-plan")).reason.includes("1 of 3") ? true : undefined));
    await ack(moved[1], "walk-r0", "failed");
    await until("one failed", async () => ((await status("walk-plan")).reason.endsWith("1 failed to reinstall") ? true : undefined));
    await ack(moved[1], "walk-r0", "healthy");
    await ack(moved[2], "walk-r0", "healthy");
    s = await phaseIs("walk-plan", "rolled_back");
    expect(s.reason).toBe("rolled back (bad release): 3 node(s) run their previous release again");
    // Terminal: nothing is allowed.
    for (const action of ["pause", "resume", "promote", "halt", "cancel"]) {
      const res = await call("POST", `/v1/rollouts/walk-plan/${action}`, { reason: "r" });
      expect(res.body.message).toMatch(/the plan is rolled_back \(it is finished\)/);
    }
    expect((await desired(half[0])).release.release_id).toBe("walk-r0");

    // Every transition has its audit record, with the version it wrote.
    const audit = await server.store.auditRecords({ resourceType: "rollout_plan", resource: "walk-plan", limit: 100 });
    expect(audit.map((a) => a.eventName).reverse()).toEqual([
      "rollout.plan.created",
      "rollout.plan.started",
      "rollout.gate.approved",
      "rollout.stage.passed",
      "rollout.plan.auto_halted",
      "rollout.plan.rollback_started",
      "rollout.plan.rolled_back",
    ]);
    const rollback = audit[1];
    expect(rollback).toMatchObject({ actor: "alice", category: "rollback", outcome: "success", reason: "bad release" });
    expect(JSON.parse(rollback.fieldsJson)).toMatchObject({ from_phase: "halted", to_phase: "rolling_back", restored_nodes: 3 });
    expect(audit[0]).toMatchObject({ actor: "system:rollout-controller", category: "rollback" });
    expect(JSON.parse(audit[0].fieldsJson)).toMatchObject({ from_phase: "rolling_back", to_phase: "rolled_back", version: (await status("walk-plan")).version });
    expect(audit.find((a) => a.eventName === "rollout.plan.auto_halted")).toMatchObject({ actor: "system:rollout-controller" });
  });

  it("aborts a plan where it is: no further move, the moved nodes keep its release, also in the middle of a rollback", async () => {
    await enrol("ab", ["ab-1", "ab-2"]);
    await call("POST", "/v1/releases", release("ab-r0", "ab", false));
    await call("POST", "/v1/releases", release("ab-r1", "ab", true));
    await call("POST", "/v1/rollouts", { plan_id: "ab-plan", release_id: "ab-r1", stages: [{ stage_id: "one", node_ids: ["ab-1"], gates: [{ kind: "manual" }] }, { stage_id: "two", percent: 100 }] });
    await phaseIs("ab-plan", "active");
    const aborted = await call("POST", "/v1/rollouts/ab-plan/recover", { strategy: "abort", reason: "wrong channel" });
    expect(aborted.body).toMatchObject({ from_phase: "active", to_phase: "cancelled", status: { reason: "aborted by alice: wrong channel" } });
    expect(aborted.body.moved_nodes.map((m: { node_id: string }) => m.node_id)).toEqual(["ab-1"]);
    expect(await desired("ab-1")).toMatchObject({ release: { release_id: "ab-r1" }, plan_id: "ab-plan" });
    expect((await desired("ab-2")).release.release_id).toBe("ab-r0");
    const [record] = await server.store.auditRecords({ resourceType: "rollout_plan", resource: "ab-plan", limit: 1 });
    expect(record).toMatchObject({ eventName: "rollout.plan.aborted", category: "rollback", reason: "wrong channel" });

    // A rollback nobody finishes (the node never acks) can be aborted: the node keeps what it was given back.
    await call("POST", "/v1/releases", release("ab-r2", "ab", true));
    await call("POST", "/v1/rollouts", { plan_id: "ab-plan-2", release_id: "ab-r2", stages: [{ stage_id: "one", node_ids: ["ab-2"], gates: [{ kind: "manual" }] }] });
    await until("the move", async () => ((await desired("ab-2")).release.release_id === "ab-r2" ? true : undefined));
    expect((await call("POST", "/v1/rollouts/ab-plan-2/recover", { strategy: "rollback", reason: "r2 bad" })).body.to_phase).toBe("rolling_back");
    expect(await desired("ab-2")).toMatchObject({ release: { release_id: "ab-r0" }, plan_id: "" });
    const gaveUp = await call("POST", "/v1/rollouts/ab-plan-2/recover", { strategy: "abort", reason: "ab-2 is offline for good" });
    expect(gaveUp.body).toMatchObject({ from_phase: "rolling_back", to_phase: "cancelled" });
    expect((await desired("ab-2")).release.release_id).toBe("ab-r0");
  });

  it("shows a stage that selects no node as waiting, with why, until a node qualifies; then it is open", async () => {
    await enrol("wt", ["wt-1"], { site: "oslo" });
    await call("POST", "/v1/releases", release("wt-r1", "wt", true));
    await call("POST", "/v1/rollouts", {
      plan_id: "wt-plan",
      release_id: "wt-r1",
      stages: [{ stage_id: "paris", match_labels: { site: "paris" }, gates: [{ kind: "manual" }] }],
    });
    const why = "no node selected: no node of the channel matches site=paris";
    const held = await until("stage paris opened", async () => {
      const s = await status("wt-plan");
      return s.current_stage_id === "paris" ? s : undefined;
    });
    expect(held).toMatchObject({ phase: "active", stages: [{ stage_id: "paris", phase: "waiting", detail: why }] });
    expect((await call("GET", "/v1/rollouts/wt-plan/stages/paris/gates")).body).toMatchObject({
      stage_phase: "waiting",
      gates: [{ kind: "manual", passed: false, detail: why }],
    });
    // What the store holds is the open stage the controller and every action know.
    const stored = await server.store.getRollout("wt-plan");
    expect(JSON.parse(stored!.status.stages)[0]).toMatchObject({ phase: "open", nodeCount: 0 });

    await enrol("wt", ["wt-2"], { site: "paris" });
    await server.rollouts.resync();
    const opened = await until("stage paris selected wt-2", async () => {
      const s = await status("wt-plan");
      return s.stages[0].node_count === 1 ? s : undefined;
    });
    expect(opened.stages[0]).toMatchObject({ stage_id: "paris", phase: "open", node_count: 1 });
    expect((await call("GET", "/v1/rollouts/wt-plan/stages/paris/gates")).body).toMatchObject({ stage_phase: "open" });
  });

  it("halts on an event_rate gate, skips a failed stage, and completes", async () => {
    await enrol("ev", ["ev-1", "ev-2", "ev-3"]);
    await call("POST", "/v1/releases", release("ev-r1", "ev", true));
    await call("POST", "/v1/rollouts", {
      plan_id: "ev-plan",
      release_id: "ev-r1",
      stages: [
        { stage_id: "a", node_ids: ["ev-1"], gates: [{ kind: "event_rate", event_type: "crash", max_per_node_hour: 2 }, { kind: "manual" }] },
        { stage_id: "b", percent: 100 },
      ],
    });
    await phaseIs("ev-plan", "active");
    const crash = (i: number, nodeId: string) => ({ event_id: `crash-${i}-${nodeId}`, event_type: "crash", node_id: nodeId, timestamp: "2026-11-23T00:00:00Z" });
    // Crashes from nodes outside the stage do not count; resent duplicates do not either.
    await call("POST", "/v1/events", { events: [crash(1, "ev-2"), crash(2, "ev-2"), crash(3, "ev-2"), crash(1, "ev-1"), crash(2, "ev-1")] });
    await call("POST", "/v1/events", { events: [crash(1, "ev-1"), crash(2, "ev-1")] });
    expect((await status("ev-plan")).stages[0]).toMatchObject({ gated_events: 2, phase: "open" });
    await call("POST", "/v1/events", { events: [crash(3, "ev-1")] });
    const halted = await phaseIs("ev-plan", "halted");
    expect(halted.reason).toMatch(/3 crash event\(s\) from 1 node\(s\)/);
    const skipped = await call("POST", "/v1/rollouts/ev-plan/recover", { strategy: "skip_failed", reason: "known crash, fixed in agent", stage_id: "a" });
    expect(skipped.body).toMatchObject({ from_phase: "halted", to_phase: "active", status: { current_stage_id: "b" } });
    // Stage b has no gates: it passes as soon as it opens.
    const done = await phaseIs("ev-plan", "completed");
    expect(done.stages.map((x: { phase: string; node_count: number }) => [x.phase, x.node_count])).toEqual([
      ["skipped", 1],
      ["passed", 2],
    ]);
  });

  it("reports a stage past its deadline as stuck, with a diagnosis, until it moves", async () => {
    await enrol("dl", ["dl-1"]);
    await call("POST", "/v1/releases", release("dl-r1", "dl", true));
    await call("POST", "/v1/rollouts", {
      plan_id: "dl-plan",
      release_id: "dl-r1",
      stages: [{ stage_id: "only", node_ids: ["dl-1"], deadline_seconds: 1, gates: [{ kind: "manual" }] }],
    });
    await phaseIs("dl-plan", "active");
    const stuck = await until("stuck", async () => {
      const { body } = await call("GET", "/v1/rollouts/stuck?threshold_seconds=3600");
      return body.stuck_plans.find((p: { plan_id: string }) => p.plan_id === "dl-plan");
    });
    expect(stuck.current_stage_id).toBe("only");
    expect(stuck.stuck_reason).toMatch(/past its deadline of 1s; waiting on manual: awaiting operator approval/);
    await call("POST", "/v1/rollouts/dl-plan/promote", { reason: "ship it" });
    expect((await status("dl-plan")).phase).toBe("completed");
    const { body } = await call("GET", "/v1/rollouts/stuck?threshold_seconds=0");
    expect(body.stuck_plans.map((p: { plan_id: string }) => p.plan_id)).not.toContain("dl-plan");
  });

  it("answers 400 naming the field, and 404 for unknown plans, stages and releases", async () => {
    const bad = await call("POST", "/v1/rollouts", { release_id: "x", stages: [{ stage_id: "s", percent: 120 }] });
    expect(bad).toMatchObject({ status: 400, body: { message: expect.stringContaining("plan.stages[0].percent") } });
    const down = await call("POST", "/v1/rollouts", { release_id: "x", stages: [{ stage_id: "a", percent: 50 }, { stage_id: "b", percent: 20 }] });
    expect(down).toMatchObject({ status: 400, body: { message: expect.stringContaining("plan.stages[1].percent: 20 is below 50") } });
    expect((await call("POST", "/v1/rollouts", { release_id: "nope", stages: [{ stage_id: "s", percent: 10 }] })).status).toBe(404);
    expect((await call("GET", "/v1/rollouts/nope")).status).toBe(404);
    expect((await call("GET", "/v1/rollouts/walk-plan/stages/nope/gates")).status).toBe(404);
    expect((await call("POST", "/v1/rollouts/walk-plan/recover", { strategy: "undo", reason: "r" })).body.message).toMatch(/^strategy: must be one of/);
    expect((await call("GET", "/v1/rollouts?phase=done")).status).toBe(400);
    const list = await call("GET", "/v1/rollouts?phase=rolled_back");
    expect(list.body.rollouts.map((r: { plan: { plan_id: string } }) => r.plan.plan_id)).toContain("walk-plan");
  });
});

describe("the rollout controller across a restart", () => {
  it("resumes a plan in the middle of a stage without moving a node twice or losing a decision", async () => {
    const dataDir = mkdtempSync(path.join(os.tmpdir(), "ao-rollout-restart-"));
    const start = () =>
      startServer(
        { listen: "127.0.0.1:0", dataDir, busyTimeoutMs: 2000, heartbeatFlushMs: 50, rbacEnforcement: false },
        { logger: memoryLogger().logger, onFatal: () => {} },
      );
    let server = await start();
    let api = createOrchestratorClients({ baseUrl: server.url });
    try {
      for (const nodeId of ["rs-1", "rs-2", "rs-3", "rs-4"]) {
        await api.nodes.enrollNode({ nodeId, channel: "rs" });
        await api.nodes.heartbeat({ nodeId });
      }
      await api.releases.publishRelease({ release: { releaseId: "rs-r1", channel: "rs", version: "1", staged: true, artifacts: [{ name: "a", digest: DIGEST }] } });
      await api.rollouts.createRolloutPlan({
        plan: {
          planId: "rs-plan",
          releaseId: "rs-r1",
          stages: [
            { stageId: "first", percent: 50, gates: [{ kind: "success_ratio", minRatio: 1 }] },
            { stageId: "second", percent: 100, gates: [{ kind: "success_ratio", minRatio: 1 }] },
          ],
        },
      });
      const first = await until("first stage", async () => {
        const moves = await server.store.movesOfPlan("rs-plan");
        return moves.length === 2 ? moves.map((m) => m.nodeId) : undefined;
      });
      // One of the two acks before the restart, one after.
      const ackOf = (nodeId: string) =>
        api.releases.upsertAck({ releaseId: "rs-r1", nodeId, state: "healthy", reportedReleaseId: "rs-r1" });
      await ackOf(first[0]);
      api.close();
      await server.close();

      server = await start();
      api = createOrchestratorClients({ baseUrl: server.url });
      let s = (await api.rollouts.getRolloutStatus({ planId: "rs-plan" })).status!;
      expect(s).toMatchObject({ phase: "active", currentStageId: "first" });
      expect(s.stages[0]).toMatchObject({ nodeCount: 2, healthy: 1, pending: 1 });
      await ackOf(first[1]);
      s = await until("second stage", async () => {
        const st = (await api.rollouts.getRolloutStatus({ planId: "rs-plan" })).status!;
        return st.currentStageId === "second" ? st : undefined;
      });
      const moves = await server.store.movesOfPlan("rs-plan");
      expect(moves).toHaveLength(4);
      expect(new Set(moves.map((m) => m.nodeId)).size).toBe(4);
      expect(moves.slice(0, 2).map((m) => m.nodeId)).toEqual(first);
      const audit = await server.store.auditRecords({ resource: "rs-plan", limit: 10 });
      expect(audit.filter((a) => a.eventName === "rollout.stage.passed")).toHaveLength(1);
    } finally {
      api.close();
      await server.close();
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});

describe("stage nodes that stop heartbeating", () => {
  it("are counted unreachable, apart from failed, and reachable again when they are seen", async () => {
    const server = await startTestServer("sqlite", { nodeStaleAfterMs: 300, heartbeatFlushMs: 50 });
    const api = createOrchestratorClients({ baseUrl: server.url });
    try {
      for (const nodeId of ["un-1", "un-2"]) {
        await api.nodes.enrollNode({ nodeId, channel: "un" });
        await api.nodes.heartbeat({ nodeId });
      }
      await api.releases.publishRelease({ release: { releaseId: "un-r1", channel: "un", version: "1", staged: true, artifacts: [{ name: "a", digest: DIGEST }] } });
      await api.rollouts.createRolloutPlan({
        plan: { planId: "un-plan", releaseId: "un-r1", stages: [{ stageId: "all", percent: 100, gates: [{ kind: "success_ratio", minRatio: 1 }] }] },
      });
      await api.releases.upsertAck({ releaseId: "un-r1", nodeId: "un-1", state: "failed", message: "no space" });
      // un-2 never answers: after --node-stale-after and the next liveness check it is unreachable.
      const stage = await until("unreachable", async () => {
        const st = (await api.rollouts.getRolloutStatus({ planId: "un-plan" })).status!.stages[0];
        return st.unreachable === 1 ? st : undefined;
      });
      expect(stage).toMatchObject({ nodeCount: 2, failed: 1, unreachable: 1, healthy: 0, pending: 0 });
      await api.nodes.heartbeat({ nodeId: "un-2" });
      const back = (await api.rollouts.getRolloutStatus({ planId: "un-plan" })).status!.stages[0];
      expect(back).toMatchObject({ failed: 1, unreachable: 0, pending: 1 });
      // Pause and resume through the versioned actions.
      const paused = await api.rollouts.pauseRollout({ planId: "un-plan", reason: "weekend", expectedVersion: 2 });
      expect(paused.status).toMatchObject({ phase: "paused", version: 3 });
      const resumed = await api.rollouts.resumeRollout({ planId: "un-plan", reason: "monday" });
      expect(resumed.status).toMatchObject({ phase: "active", version: 4 });
    } finally {
      api.close();
      await server.stop();
    }
  });
});
