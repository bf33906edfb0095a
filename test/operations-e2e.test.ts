import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, unlinkSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createOrchestratorClients, type OrchestratorClients } from "../clients/index.js";
import { AUTONOMY_BIN, EDGECTL_BIN, runProgram, startChildServer, type ChildServer } from "./helpers/child.js";
import { createTestDatabase } from "./helpers/postgres.js";
import { eventually } from "./helpers/wait.js";

const DIGEST = `sha256:${"0123".repeat(16)}`;

interface Agent {
  nodeId: string;
  proc: ChildProcess;
  exited: Promise<number | null>;
}

/**
 * The on-call surfaces against a real server with real edgectl agents: the emergency stop in
 * the middle of a rollout, and each divergence class produced by what agents really do (a
 * failing apply command, a killed agent, a state file edited by hand, a slow install), with
 * each recovery strategy.
 */
describe("emergency stop, divergence and reconcile with real edgectl agents", () => {
  let server: ChildServer;
  let api: OrchestratorClients;
  let work: string;
  const agents: Agent[] = [];

  // Every install appends the release id to the node's marks file; r2 installs can be made to
  // fail (the FAIL file exists) or to take a while (the SLOW file holds the seconds).
  const APPLY = 'echo "$AUTONOMY_RELEASE_ID" >> "$MARKS"; if [ "$AUTONOMY_RELEASE_ID" = r2 ] || [ "$AUTONOMY_RELEASE_ID" = d2 ]; then ' +
    'if [ -f "$FAIL" ]; then echo "disk full" >&2; exit 3; fi; sleep "$(cat "$SLOW" 2>/dev/null || echo 0)"; fi';
  const file = (nodeId: string, kind: "marks" | "fail" | "slow") => path.join(work, `${nodeId}.${kind}`);
  const marks = (nodeId: string) => (existsSync(file(nodeId, "marks")) ? readFileSync(file(nodeId, "marks"), "utf8").trim().split("\n") : []);
  const startAgent = (nodeId: string, channel: string): Agent => {
    const proc = spawn(
      process.execPath,
      [EDGECTL_BIN, "--state-dir", path.join(work, nodeId), "run", "--node-id", nodeId, "--channel", channel,
        "--apply-command", APPLY, "--heartbeat-interval", "200ms", "--poll-interval", "100ms"],
      {
        env: { ...process.env, AUTONOMY_ORCHESTRATOR_URL: server.url, MARKS: file(nodeId, "marks"), FAIL: file(nodeId, "fail"), SLOW: file(nodeId, "slow") },
        stdio: "ignore",
      },
    );
    const agent = { nodeId, proc, exited: new Promise<number | null>((r) => proc.once("exit", (code) => r(code))) };
    agents.push(agent);
    return agent;
  };
  const autonomy = async (...args: string[]) => {
    const run = await runProgram(AUTONOMY_BIN, ["--orchestrator-url", server.url, ...args], { AUTONOMY_OPERATOR: "olga" });
    if (run.code !== 0) throw new Error(`autonomy ${args.join(" ")} exited ${run.code}: ${run.stderr}`);
    return run.stdout;
  };
  const publish = (releaseId: string, channel: string, staged: boolean) =>
    api.releases.publishRelease({ release: { releaseId, channel, version: releaseId, staged, artifacts: [{ name: "app", digest: DIGEST }] } });
  const reported = async (channel: string) => Object.fromEntries((await api.nodes.getFleetStatus({ channel })).nodes.map((n) => [n.nodeId, n.reportedReleaseId]));
  const ackOf = async (releaseId: string, nodeId: string) => (await api.releases.listReleaseAcks({ releaseId })).acks.find((a) => a.nodeId === nodeId);
  const rest = async (method: string, p: string, body?: unknown) => {
    const res = await fetch(`${server.url}${p}`, { method, headers: { "content-type": "application/json" }, body: body === undefined ? undefined : JSON.stringify(body) });
    return { status: res.status, json: (await res.json()) as Record<string, unknown> };
  };

  beforeAll(async () => {
    work = mkdtempSync(path.join(os.tmpdir(), "ao-ops-e2e-"));
    server = await startChildServer(["--data-dir", path.join(work, "server"), "--node-stale-after", "8s"]);
    api = createOrchestratorClients({ baseUrl: server.url });
  });
  afterAll(async () => {
    for (const a of agents) {
      if (a.proc.exitCode === null) {
        a.proc.kill("SIGCONT");
        a.proc.kill("SIGKILL");
      }
    }
    api.close();
    await server.kill();
    rmSync(work, { recursive: true, force: true });
  });

  it("an emergency stop during a rollout: installs running finish and ack, none starts, nothing new is taken; the plan resumes after the resume", async () => {
    const nodes = ["es-1", "es-2", "es-3", "es-4"];
    for (const n of nodes) {
      writeFileSync(file(n, "slow"), "1.5");
      startAgent(n, "es");
    }
    await publish("r1", "es", false);
    await eventually(async () => expect(Object.values(await reported("es"))).toEqual(Array(4).fill("r1")));
    await publish("r2", "es", true);
    await api.rollouts.createRolloutPlan({
      plan: {
        planId: "es-plan",
        releaseId: "r2",
        stages: [
          { stageId: "canary", nodeIds: ["es-1"], gates: [{ kind: "success_ratio", minRatio: 1 }, { kind: "manual" }] },
          { stageId: "rest", percent: 100, gates: [{ kind: "success_ratio", minRatio: 1 }] },
        ],
      },
    });
    await eventually(async () => expect((await reported("es"))["es-1"]).toBe("r2"));

    // es-3 and es-4 are frozen (they keep their HEALTHY standing for --node-stale-after): the
    // next stage moves them, but they only ask for their release after the stop.
    const frozen = agents.filter((a) => a.nodeId === "es-3" || a.nodeId === "es-4");
    for (const a of frozen) a.proc.kill("SIGSTOP");
    await autonomy("rollout", "gate", "approve", "--plan-id", "es-plan", "--stage-id", "canary", "--reason", "canary fine");
    await eventually(async () => expect((await ackOf("r2", "es-2"))?.state).toBe("downloading"), 60_000);
    const moved = (await api.rollouts.getRolloutStatus({ planId: "es-plan" })).status!.stages[1];
    expect(moved).toMatchObject({ phase: "open", nodeCount: 3 });

    const stopped = await autonomy("emergency", "stop", "--reason", "r2 corrupts disks");
    expect(stopped).toMatch(/halted 1 plan\(s\): es-plan/);
    expect(stopped).toMatch(/EMERGENCY STOP in force since .* by olga: "r2 corrupts disks"/);
    for (const a of frozen) a.proc.kill("SIGCONT");

    // es-2 was installing: it finishes and acks. es-3 and es-4 are answered what they run.
    await eventually(async () => expect((await ackOf("r2", "es-2"))?.state).toBe("healthy"), 60_000);
    await sleep(1500);
    for (const n of ["es-3", "es-4"]) {
      expect(marks(n)).toEqual(["r1"]);
      expect(await ackOf("r2", n)).toBeUndefined();
      const desired = await rest("GET", `/v1/nodes/${n}/desired-release`);
      expect(desired.json).toMatchObject({ release: { release_id: "r1" }, emergency_stop: true });
      // The stored decision is unchanged: r2, for after the resume.
      expect((await api.nodes.getNodeSummary({ nodeId: n })).desiredRelease?.releaseId).toBe("r2");
    }
    expect((await reported("es"))["es-3"]).toBe("r1");
    const status = await api.rollouts.getRolloutStatus({ planId: "es-plan" });
    expect(status.status).toMatchObject({ phase: "halted", reason: "r2 corrupts disks" });

    // Nothing new is taken while the stop is in force, on every surface, naming the stop.
    await publish("r3", "es", true);
    const plan = await rest("POST", "/v1/rollouts", { plan_id: "es-plan-2", release_id: "r3", stages: [{ stage_id: "all", percent: 100 }] });
    expect(plan.status).toBe(409);
    expect(plan.json).toMatchObject({ code: "failed_precondition" });
    expect(String(plan.json.message)).toMatch(/an emergency stop is in force since .* by olga \(reason: "r2 corrupts disks"\): publishing a rollout plan is refused/);
    const unstaged = await rest("POST", "/v1/releases", { release_id: "r4", channel: "es", version: "4", artifacts: [{ name: "app", digest: DIGEST }] });
    expect(unstaged.json).toMatchObject({ code: "failed_precondition" });
    expect(unstaged.status).toBe(409);
    expect(String(unstaged.json.message)).toMatch(/publishing an unstaged release is refused until "autonomy emergency resume"/);
    const resume = await runProgram(AUTONOMY_BIN, ["--orchestrator-url", server.url, "rollout", "plan", "resume", "--plan-id", "es-plan", "--reason", "try"]);
    expect(resume.code).not.toBe(0);
    expect(resume.stderr).toMatch(/emergency stop is in force/);

    // Status on the CLI, on /v1/health, and in the audit trail (category system).
    expect(await autonomy("emergency", "status")).toMatch(/EMERGENCY STOP in force since .* by olga: "r2 corrupts disks"/);
    const health = await rest("GET", "/v1/health");
    expect(health.json).toMatchObject({ status: "ok", emergency_stop: { active: true, stopped_by: "olga", reason: "r2 corrupts disks" } });
    const audit = await api.audit.queryAuditRecords({ category: "system", eventName: "emergency.stopped" });
    expect(audit.records.map((r) => [r.actor, r.reason])).toEqual([["olga", "r2 corrupts disks"]]);

    // Resume: the plan stays halted until resumed, then finishes.
    expect(await autonomy("emergency", "resume", "--reason", "r2 fixed in the field")).toMatch(/emergency stop lifted; halted plans stay halted/);
    // The halted plan keeps the moves it made: es-3 and es-4 get their desired release again.
    await eventually(async () => expect(marks("es-3")).toEqual(["r1", "r2"]));
    expect((await api.rollouts.getRolloutStatus({ planId: "es-plan" })).status?.phase).toBe("halted");
    await autonomy("rollout", "plan", "resume", "--plan-id", "es-plan", "--reason", "go on");
    await eventually(async () => {
      expect((await api.rollouts.getRolloutStatus({ planId: "es-plan" })).status?.phase).toBe("completed");
      expect(Object.values(await reported("es"))).toEqual(Array(4).fill("r2"));
    }, 60_000);
    expect(marks("es-3")).toEqual(["r1", "r2"]);
    expect(marks("es-2")).toEqual(["r1", "r2"]);
    expect((await rest("GET", "/v1/health")).json).toMatchObject({ emergency_stop: { resumed_by: "olga", resume_reason: "r2 fixed in the field" } });
    for (const a of agents) a.proc.kill("SIGTERM");
  }, 240_000);

  it("each divergence class from real agent behaviour, and each recovery strategy", async () => {
    const [fail, stuck, hand, slow, fine] = ["dv-fail", "dv-stuck", "dv-hand", "dv-slow", "dv-fine"];
    const all = [fail, stuck, hand, slow, fine];
    const run = new Map(all.map((n) => [n, startAgent(n, "dv")]));
    await publish("d0", "dv", true);
    await publish("d1", "dv", false);
    await eventually(async () => expect(Object.values(await reported("dv"))).toEqual(Array(5).fill("d1")));

    // dv-stuck: its agent dies; dv-hand: stopped, its state file edited by hand to claim d0
    // (a release nobody sent it), and its installs of d2 fail, as dv-fail's; dv-slow installs
    // d2 for a while.
    run.get(stuck)!.proc.kill("SIGKILL");
    run.get(hand)!.proc.kill("SIGTERM");
    await Promise.all([run.get(stuck)!.exited, run.get(hand)!.exited]);
    const stateFile = path.join(work, hand, "agent.json");
    writeFileSync(stateFile, JSON.stringify({ ...JSON.parse(readFileSync(stateFile, "utf8")), currentReleaseId: "d0" }));
    writeFileSync(file(hand, "fail"), "");
    writeFileSync(file(fail, "fail"), "");
    writeFileSync(file(slow, "slow"), "12");
    // dv-slow starts last (held until the others have acked), so its install is fresh when the
    // report is read: an agent sends no heartbeat while its apply command runs.
    run.get(slow)!.proc.kill("SIGSTOP");
    await sleep(8500); // dv-stuck: past --node-stale-after

    await publish("d2", "dv", false);
    run.set(hand, startAgent(hand, "dv"));
    await eventually(async () => {
      expect((await ackOf("d2", fail))?.state).toBe("failed");
      expect((await ackOf("d2", hand))?.state).toBe("failed");
      expect((await reported("dv"))[fine]).toBe("d2");
    });
    run.get(slow)!.proc.kill("SIGCONT");
    await eventually(async () => expect((await ackOf("d2", slow))?.state).toBe("downloading"));

    const report = async () => {
      const out = JSON.parse(await autonomy("fleet", "divergence", "--channel", "dv", "--older-than", "0", "-o", "json")) as {
        nodes: { node_id: string; class: string; evidence: string; desired_release_id: string; reported_release_id: string; desired_ack?: { state: string } }[];
      };
      return Object.fromEntries(out.nodes.map((n) => [n.node_id, n]));
    };
    const before = await report();
    expect(Object.fromEntries(Object.entries(before).map(([id, n]) => [id, n.class]))).toEqual({
      [fail]: "failed",
      [stuck]: "stuck",
      [hand]: "unexpected",
      [slow]: "installing",
    });
    expect(before[fail]).toMatchObject({ desired_release_id: "d2", reported_release_id: "d1", desired_ack: { state: "failed" } });
    expect(before[fail].evidence).toMatch(/ack of d2: failed .*"apply command exited with status 3: disk full".*last seen \d+s ago/);
    expect(before[stuck].evidence).toMatch(/no ack of d2; last ack: healthy of d1 \d+s ago; last seen \d+s ago/);
    expect(before[hand].evidence).toMatch(/reports d0 \(never acked by this node\)/);
    expect(before[slow].evidence).toMatch(/ack of d2: downloading/);
    // The threshold: none of them has diverged for ten minutes.
    expect(await autonomy("fleet", "divergence", "--channel", "dv")).toBe("no node diverged for longer than 10m\n");
    const metrics = await (await fetch(`${server.url}/metrics`)).text();
    expect(metrics).toMatch(/cp_nodes_diverged\{class="failed"\} 0/);

    // The agent does not retry a release it failed on its own, even once the cause is gone ...
    unlinkSync(file(fail, "fail"));
    await sleep(800);
    expect(marks(fail)).toEqual(["d1", "d2"]);
    // ... but does when asked to reapply.
    expect(await autonomy("fleet", "reconcile", "--node-id", fail, "--strategy", "reapply", "--reason", "disk cleaned")).toMatch(/dv-fail\s+done\s+asked to install d2 again/);
    await eventually(async () => expect((await reported("dv"))[fail]).toBe("d2"));
    expect(marks(fail)).toEqual(["d1", "d2", "d2"]);

    // accept: what dv-hand reports becomes its desired release (a pin, in the summary) ...
    expect(await autonomy("fleet", "reconcile", "--node-id", hand, "--strategy", "accept", "--reason", "keep the hand fix")).toMatch(/pinned to d0/);
    const summary = await api.nodes.getNodeSummary({ nodeId: hand });
    expect(summary.desiredRelease?.releaseId).toBe("d0");
    expect(summary.node).toMatchObject({ pinnedReleaseId: "d0", pinReason: "keep the hand fix" });
    expect(summary.drift).toBe(false);
    await eventually(async () => expect((await ackOf("d0", hand))?.state).toBe("healthy"));
    expect(await autonomy("node", "describe", hand)).toMatch(/pinned\s+d0 since .*: keep the hand fix/);
    // ... until --unpin: its channel's release again.
    await autonomy("fleet", "reconcile", "--node-id", hand, "--unpin", "--reason", "done");
    expect((await api.nodes.getNodeSummary({ nodeId: hand })).desiredRelease?.releaseId).toBe("d2");

    // drain: the stuck node is taken out of rollouts.
    await autonomy("fleet", "reconcile", "--node-id", stuck, "--strategy", "drain", "--reason", "agent dead");
    expect((await api.nodes.getNodeSummary({ nodeId: stuck })).node).toMatchObject({ drained: true, drainReason: "agent dead", lifecycle: "DRAINING" });

    // dv-slow finishes its install by itself.
    await eventually(async () => expect((await reported("dv"))[slow]).toBe("d2"), 30_000);
    // Every diverged node at once: dv-hand (its d2 failed) and dv-stuck (drained, still diverged).
    unlinkSync(file(hand, "fail"));
    const bulk = await autonomy("fleet", "reconcile", "--all-diverged", "--channel", "dv", "--older-than", "0", "--strategy", "reapply", "--reason", "sweep");
    expect(bulk).toMatch(/dv-stuck\s+done\s+asked to install d2 again/);
    expect(bulk).toMatch(/dv-hand\s+done\s+asked to install d2 again/);
    expect(bulk).toMatch(/2 done, 0 skipped/);
    await eventually(async () => expect((await reported("dv"))[hand]).toBe("d2"));
    run.set(stuck, startAgent(stuck, "dv"));
    await eventually(async () => expect(Object.values(await reported("dv"))).toEqual(Array(5).fill("d2")), 90_000);
    expect(await autonomy("fleet", "divergence", "--channel", "dv", "--older-than", "0")).toBe("no node diverged for longer than 0s\n");

    const records = await api.audit.queryAuditRecords({ category: "system", resourceType: "node", actor: "olga" });
    const actions = records.records.map((r) => `${r.action}:${r.resource}`);
    expect(actions).toEqual(expect.arrayContaining([`reapply:${fail}`, `accept:${hand}`, `unpin:${hand}`, `drain:${stuck}`, `reapply:${stuck}`]));
  }, 240_000);
});

describe("an emergency stop on PostgreSQL is honoured by every replica", () => {
  it("stopped through one replica, the other refuses, reports it and shows the halted plan; resumed through the other", async () => {
    const db = await createTestDatabase();
    const dirs = [0, 1].map(() => mkdtempSync(path.join(os.tmpdir(), "ao-ops-pg-")));
    const [a, b] = await Promise.all(dirs.map((d) => startChildServer(["--data-dir", d], { AUTONOMY_POSTGRES_URL: db.url })));
    const apiA = createOrchestratorClients({ baseUrl: a.url });
    const apiB = createOrchestratorClients({ baseUrl: b.url });
    const call = async (server: ChildServer, method: string, p: string, body?: unknown) => {
      const res = await fetch(`${server.url}${p}`, { method, headers: { "content-type": "application/json" }, body: body === undefined ? undefined : JSON.stringify(body) });
      return { status: res.status, json: (await res.json()) as Record<string, unknown> };
    };
    try {
      await apiA.releases.publishRelease({ release: { releaseId: "pg-r1", channel: "pg", version: "1", staged: true, artifacts: [{ name: "app", digest: DIGEST }] } });
      await apiA.rollouts.createRolloutPlan({ plan: { planId: "pg-plan", releaseId: "pg-r1", stages: [{ stageId: "all", percent: 100 }] } });

      const stop = await runProgram(AUTONOMY_BIN, ["--orchestrator-url", a.url, "emergency", "stop", "--reason", "pg drill"], { AUTONOMY_OPERATOR: "olga" });
      expect(stop.stdout).toMatch(/halted 1 plan\(s\): pg-plan/);

      // Replica B never saw the call: it reads the stop from the database.
      expect((await apiB.operations.getEmergencyStatus({})).state).toMatchObject({ active: true, stoppedBy: "olga", reason: "pg drill" });
      expect((await call(b, "GET", "/v1/health")).json).toMatchObject({ emergency_stop: { active: true, stopped_by: "olga" } });
      expect((await apiB.rollouts.getRolloutStatus({ planId: "pg-plan" })).status).toMatchObject({ phase: "halted", reason: "pg drill" });
      const plan = await call(b, "POST", "/v1/rollouts", { plan_id: "pg-plan-2", release_id: "pg-r1", stages: [{ stage_id: "all", percent: 100 }] });
      expect(plan).toMatchObject({ status: 409, json: { code: "failed_precondition" } });
      expect(String(plan.json.message)).toMatch(/emergency stop is in force .* by olga \(reason: "pg drill"\)/);
      const release = await call(b, "POST", "/v1/releases", { release_id: "pg-u1", channel: "pg", version: "2", artifacts: [{ name: "app", digest: DIGEST }] });
      expect(release).toMatchObject({ status: 409, json: { code: "failed_precondition" } });
      const resume = await call(b, "POST", "/v1/rollouts/pg-plan/resume", { reason: "try" });
      expect(resume).toMatchObject({ status: 409, json: { code: "failed_precondition" } });

      const lifted = await runProgram(AUTONOMY_BIN, ["--orchestrator-url", b.url, "emergency", "resume", "--reason", "drill over"], { AUTONOMY_OPERATOR: "olga" });
      expect(lifted.stdout).toMatch(/emergency stop lifted/);
      expect((await call(a, "POST", "/v1/releases", { release_id: "pg-u1", channel: "pg", version: "2", artifacts: [{ name: "app", digest: DIGEST }] })).status).toBe(200);
      expect((await apiA.operations.getEmergencyStatus({})).state).toMatchObject({ active: false, resumedBy: "olga", resumeReason: "drill over" });
    } finally {
      apiA.close();
      apiB.close();
      await Promise.all([a.kill(), b.kill()]);
      for (const d of dirs) rmSync(d, { recursive: true, force: true });
      await db.drop();
    }
  }, 60_000);
});
