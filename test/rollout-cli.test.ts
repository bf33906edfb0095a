import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { createOrchestratorClients, type OrchestratorClients } from "../clients/index.js";
import { AUTONOMY_BIN, runProgram } from "./helpers/child.js";
import { h1 } from "./helpers/http.js";
import { startTestServer, type TestServer } from "./helpers/server.js";
import { until } from "./helpers/wait.js";

// Every case runs the built programs, a second or more each on a busy machine.
vi.setConfig({ testTimeout: 120_000 });
const DIGEST = `sha256:${"e5".repeat(32)}`;

describe("autonomy rollout and rollback commands", () => {
  let server: TestServer;
  let api: OrchestratorClients;
  let dir: string;
  const cli = (...args: string[]) => runProgram(AUTONOMY_BIN, ["--orchestrator-url", server.url, ...args], { AUTONOMY_OPERATOR: "carol" });
  const file = (name: string, text: string) => {
    const p = path.join(dir, name);
    writeFileSync(p, text);
    return p;
  };

  beforeAll(async () => {
    server = await startTestServer("sqlite");
    api = createOrchestratorClients({ baseUrl: server.url });
    dir = mkdtempSync(path.join(os.tmpdir(), "ao-rollout-cli-"));
    for (const nodeId of ["c-1", "c-2", "c-3"]) {
      await api.nodes.enrollNode({ nodeId, channel: "cli", labels: { site: nodeId === "c-3" ? "oslo" : "berlin" } });
      await api.nodes.heartbeat({ nodeId });
    }
    const release = file("r.yaml", `release_id: cli-r1\nchannel: cli\nversion: 1.0\nstaged: true\nartifacts:\n  - name: app\n    digest: ${DIGEST}\n`);
    expect((await cli("release", "publish", "--file", release)).code).toBe(0);
  });
  afterAll(async () => {
    api.close();
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it("publishes a staged release and shows it as staged", async () => {
    expect((await cli("release", "latest", "--channel", "cli")).stdout).toMatch(/^staged\s+yes: nodes move to it only through rollout plans$/m);
  });

  it("creates a plan from YAML, lists and describes it, pauses and resumes it, and previews a rollback", async () => {
    const plan = file(
      "plan.yaml",
      [
        "plan_id: cli-plan",
        "release_id: cli-r1",
        "stages:",
        "  - stage_id: berlin",
        "    match_labels: {site: berlin}",
        "    gates: [{kind: manual}, {kind: time_soak, seconds: 60}]",
        "    deadline_seconds: 600",
        "  - stage_id: rest",
        "    percent: 100",
        "",
      ].join("\n"),
    );
    expect(await cli("rollout", "plan", "create", "--file", plan)).toMatchObject({
      code: 0,
      stdout: "published plan cli-plan: release cli-r1 to channel cli in 2 stage(s)\n",
    });
    expect((await cli("rollout", "plan", "create", "--file", plan)).stdout).toMatch(/already published with this spec; nothing changed/);
    let list = "";
    for (let i = 0; i < 50 && !/active/.test(list); i++) list = (await cli("rollout", "plan", "list")).stdout;
    expect(list).toMatch(/^PLAN\s+RELEASE\s+CHANNEL\s+PHASE\s+STAGE\s+DONE\s+UPDATED$/m);
    expect(list).toMatch(/^cli-plan\s+cli-r1\s+cli\s+active\s+berlin\s+0\/2\s/m);

    const described = (await cli("rollout", "plan", "describe", "--plan-id", "cli-plan")).stdout;
    expect(described).toMatch(/^\*berlin\s+site=berlin\s+open\s+2\s+0\s+0\s+0\s+2\s+manual, time_soak 60s$/m);
    expect(described).toMatch(/^ rest\s+100%\s+pending\s+0/m);
    expect(described).toMatch(/\[ \] manual: awaiting operator approval/);

    expect((await cli("rollout", "plan", "pause", "--plan-id", "cli-plan", "--reason", "lunch")).stdout).toMatch(/plan cli-plan: active -> paused \(stage berlin\), version 3/);
    const again = await cli("rollout", "plan", "pause", "--plan-id", "cli-plan", "--reason", "lunch");
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/failed_precondition: cannot pause: the plan is paused \(allowed: resume, approve, cancel, rollback, abort\)/);
    expect((await cli("rollout", "plan", "resume", "--plan-id", "cli-plan", "--reason", "back")).stdout).toMatch(/paused -> active/);

    const preview = await cli("rollback", "preview", "--target", "rollout_stage", "--resource", "cli-plan/berlin", "--strategy", "rollback", "--reason", "try");
    expect(preview.stdout).toMatch(/^preview: would rollback: active -> rolling_back\nphase active -> rolling_back\n2 node\(s\) moved by this plan get back the release they ran before/);
    expect((await api.rollouts.getRolloutStatus({ planId: "cli-plan" })).status!.phase).toBe("active");
    const wrongStage = await cli("rollback", "execute", "--target", "rollout_stage", "--resource", "cli-plan/rest", "--strategy", "skip_failed", "--reason", "x");
    expect(wrongStage.stderr).toMatch(/stage "rest" is not the plan's current stage \("berlin" is\)/);
    const badResource = await cli("rollback", "execute", "--target", "rollout_stage", "--resource", "cli-plan", "--strategy", "retry", "--reason", "x");
    expect(badResource.stderr).toMatch(/--resource: a rollout_stage is named PLAN_ID\/STAGE_ID/);

    const json = JSON.parse((await cli("--output", "json", "rollout", "gate", "list", "--plan-id", "cli-plan", "--stage-id", "berlin")).stdout);
    expect(json).toMatchObject({ stage_phase: "open", manual_approved: false, all_passed: false });
    expect((await cli("rollout", "stuck", "--threshold-seconds", "3600")).stdout).toBe("no stuck plans\n");

    const audit = await server.store.auditRecords({ resource: "cli-plan", limit: 10 });
    expect(audit.filter((a) => a.source === "api").map((a) => a.actor)).toEqual(["carol", "carol", "carol"]);
  });

  it("shows a stage that selects no node as waiting, with why, over REST and in the CLI, then open once a node qualifies", async () => {
    await api.nodes.enrollNode({ nodeId: "w-1", channel: "wait", labels: { site: "oslo" } });
    await api.nodes.heartbeat({ nodeId: "w-1" });
    const release = file("w.yaml", `release_id: wait-r1\nchannel: wait\nversion: 1.0\nstaged: true\nartifacts:\n  - name: app\n    digest: ${DIGEST}\n`);
    expect((await cli("release", "publish", "--file", release)).code).toBe(0);
    const plan = file("wait.yaml", "plan_id: wait-plan\nrelease_id: wait-r1\nstages:\n  - stage_id: paris\n    match_labels: {site: paris}\n    gates: [{kind: manual}]\n");
    expect((await cli("rollout", "plan", "create", "--file", plan)).code).toBe(0);
    const why = "no node selected: no node of the channel matches site=paris";
    const rest = async () => (await h1(`${server.url}/v1/rollouts/wait-plan/status`)).json().status;
    const held = await until("the stage opened", async () => {
      const s = await rest();
      return s.current_stage_id === "paris" ? s : undefined;
    });
    expect(held).toMatchObject({ phase: "active", stages: [{ stage_id: "paris", phase: "waiting", detail: why }] });
    expect(held.stages[0].node_count ?? 0).toBe(0);
    expect((await api.rollouts.getStageGates({ planId: "wait-plan", stageId: "paris" })).stagePhase).toBe("waiting");

    expect((await cli("rollout", "status", "wait-plan")).stdout).toBe(`plan wait-plan: active (stage paris waiting: ${why})\n`);
    const described = (await cli("rollout", "plan", "describe", "wait-plan")).stdout;
    expect(described).toMatch(/^\*paris\s+site=paris\s+waiting\s+0\s/m);
    expect(described).toContain(`  paris: ${why}\n`);
    expect(described).toContain(`gates of paris (waiting):\n  [ ] manual: ${why}\n`);
    const json = JSON.parse((await cli("--output", "json", "rollout", "plan", "describe", "wait-plan")).stdout);
    expect(json.status.stages[0]).toMatchObject({ stage_id: "paris", phase: "waiting", detail: why });
    expect(JSON.parse((await cli("--output", "json", "rollout", "status", "wait-plan")).stdout).stages[0].phase).toBe("waiting");

    // A node qualifies: the controller selects it at its next resync and the stage reads open.
    await api.nodes.enrollNode({ nodeId: "w-2", channel: "wait", labels: { site: "paris" } });
    await api.nodes.heartbeat({ nodeId: "w-2" });
    await server.rollouts.resync();
    await server.rollouts.settled("wait-plan");
    const opened = await until("the stage selected w-2", async () => {
      const s = await rest();
      return s.stages[0].node_count === 1 ? s : undefined;
    });
    expect(opened.stages[0]).toMatchObject({ phase: "open", node_count: 1 });
    expect(opened.stages[0].detail ?? "").not.toMatch(/no node selected/);
    expect((await cli("rollout", "status", "wait-plan")).stdout).toBe("plan wait-plan: active (stage paris)\n");
    expect((await cli("rollout", "plan", "describe", "wait-plan")).stdout).toMatch(/^\*paris\s+site=paris\s+open\s+1\s/m);
  });

  it.each([
    ["a stage with two selectors", "release_id: cli-r1\nstages:\n  - stage_id: a\n    percent: 10\n    node_ids: [c-1]\n", "invalid_argument: plan.stages[0]: select nodes in exactly one way"],
    ["an unknown field", "release_id: cli-r1\nstagez: []\n", 'bad.yaml:2:1: unknown key "stagez" (did you mean "stages"?)'],
    ["a missing file", null, "no such file"],
  ])("refuses %s in one line (exit 1 from the server, 2 for a bad file)", async (_name, text, message) => {
    const res = await cli("rollout", "plan", "create", "--file", text === null ? path.join(dir, "nope.yaml") : file("bad.yaml", text));
    expect(res.code).toBe(/^[a-z_]+: /.test(message) ? 1 : 2);
    expect(res.stderr.trim().split("\n")).toHaveLength(1);
    expect(res.stderr).toContain(message);
  });

  it("names the missing flags of an action (exit 2)", async () => {
    const res = await cli("rollout", "plan", "promote", "--plan-id", "cli-plan");
    expect(res.code).toBe(2);
    expect(res.stderr).toMatch(/required option '--reason <text>' not specified/);
  });
});
