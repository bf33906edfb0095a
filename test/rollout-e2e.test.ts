import { execFile, spawn, type ChildProcess } from "node:child_process";
import { generateKeyPairSync } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createOrchestratorClients, type OrchestratorClients } from "../clients/index.js";
import { selectionRank } from "../src/domain/rollouts.js";
import { AUTONOMY_BIN, EDGECTL_BIN, startChildServer, type ChildServer } from "./helpers/child.js";
import { eventually } from "./helpers/wait.js";

const DIGEST = `sha256:${"0123".repeat(16)}`;
const NODES = ["ro-1", "ro-2", "ro-3", "ro-4", "ro-5"];

interface Agent {
  nodeId: string;
  proc: ChildProcess;
  output: () => string;
  exited: Promise<number | null>;
}

describe("staged rollouts with real edgectl agents", () => {
  let server: ChildServer;
  let api: OrchestratorClients;
  let work: string;
  const agents: Agent[] = [];

  const startAgent = (nodeId: string, channel: string, applyCommand: string, extra: string[] = []): Agent => {
    const proc = spawn(
      process.execPath,
      [EDGECTL_BIN, "--state-dir", path.join(work, nodeId), "run", "--node-id", nodeId, "--channel", channel,
        "--apply-command", applyCommand, "--heartbeat-interval", "200ms", "--poll-interval", "100ms", ...extra],
      { env: { ...process.env, AUTONOMY_ORCHESTRATOR_URL: server.url, MARKS: path.join(work, `${nodeId}.marks`) }, stdio: ["ignore", "pipe", "pipe"] },
    );
    let out = "";
    proc.stdout!.on("data", (c: Buffer) => (out += c.toString()));
    proc.stderr!.on("data", (c: Buffer) => (out += c.toString()));
    const agent = { nodeId, proc, output: () => out, exited: new Promise<number | null>((r) => proc.once("exit", (code) => r(code))) };
    agents.push(agent);
    return agent;
  };
  const autonomy = async (...args: string[]) => {
    const { stdout } = await promisify(execFile)(process.execPath, [AUTONOMY_BIN, "--orchestrator-url", server.url, ...args], {
      env: { ...process.env, AUTONOMY_OPERATOR: "olga" },
    });
    return stdout;
  };
  const publish = (releaseId: string, channel: string, staged: boolean) =>
    api.releases.publishRelease({ release: { releaseId, channel, version: releaseId, staged, artifacts: [{ name: "app", digest: DIGEST }] } });
  const reported = async (channel: string) =>
    Object.fromEntries((await api.nodes.getFleetStatus({ channel })).nodes.map((n) => [n.nodeId, n.reportedReleaseId]));
  const status = async (planId: string) => (await api.rollouts.getRolloutStatus({ planId })).status!;
  const planFile = (name: string, plan: unknown) => {
    const file = path.join(work, name);
    writeFileSync(file, JSON.stringify(plan));
    return file;
  };

  beforeAll(async () => {
    work = mkdtempSync(path.join(os.tmpdir(), "ao-rollout-e2e-"));
    server = await startChildServer(["--data-dir", path.join(work, "server"), "--node-stale-after", "5s"]);
    api = createOrchestratorClients({ baseUrl: server.url });
  });
  afterAll(async () => {
    for (const a of agents) if (a.proc.exitCode === null) a.proc.kill("SIGKILL");
    api.close();
    await server.kill();
    rmSync(work, { recursive: true, force: true });
  });

  it("canary, manual gate, 50 % with a failing install that halts the plan by itself, then a good release completes", async () => {
    // The 50 % stage takes ceil(2.5) = 3 nodes in all: the canary and the two best-ranked others.
    // The first of those fails to install r2.
    const halfNodes = NODES.slice(1).sort((a, b) => (selectionRank("plan-r2", a) < selectionRank("plan-r2", b) ? -1 : 1)).slice(0, 2);
    const bad = halfNodes[0];
    const record = 'echo "$AUTONOMY_RELEASE_ID" >> "$MARKS"';
    for (const nodeId of NODES) {
      startAgent(nodeId, "ro", `${record} && { test "$AUTONOMY_RELEASE_ID" != r2 || test "$AUTONOMY_NODE_ID" != ${bad}; } || { echo "checksum mismatch" >&2; exit 4; }`);
    }
    await publish("r1", "ro", false);
    await eventually(async () => expect(Object.values(await reported("ro"))).toEqual(Array(5).fill("r1")));

    // A staged release reaches no node by itself.
    await publish("r2", "ro", true);
    await sleep(400);
    expect(Object.values(await reported("ro"))).toEqual(Array(5).fill("r1"));

    const plan = {
      plan_id: "plan-r2",
      release_id: "r2",
      stages: [
        { stage_id: "canary", node_ids: ["ro-1"], gates: [{ kind: "success_ratio", min_ratio: 1 }, { kind: "manual" }] },
        { stage_id: "half", percent: 50, gates: [{ kind: "max_failure_ratio", max_ratio: 0 }, { kind: "success_ratio", min_ratio: 1 }] },
        { stage_id: "rest", percent: 100, gates: [{ kind: "success_ratio", min_ratio: 1 }] },
      ],
    };
    expect(await autonomy("rollout", "plan", "create", "--file", planFile("plan-r2.json", plan))).toMatch(/published plan plan-r2: release r2 to channel ro in 3 stage/);

    // The canary installs r2 and is healthy; the manual gate holds the plan there.
    await eventually(async () => {
      expect((await reported("ro"))["ro-1"]).toBe("r2");
      expect(await autonomy("rollout", "gate", "list", "--plan-id", "plan-r2", "--stage-id", "canary")).toMatch(/\[x\] success_ratio.*\n.*\[ \] manual: awaiting operator approval/);
    });
    const described = await autonomy("rollout", "plan", "describe", "--plan-id", "plan-r2");
    expect(described).toMatch(/phase\s+active/);
    expect(described).toMatch(/\*canary\s+ro-1\s+open\s+1\s+1\s+0\s+0\s+0/);
    expect(await autonomy("rollout", "gate", "approve", "--plan-id", "plan-r2", "--stage-id", "canary", "--reason", "canary ran an hour")).toMatch(/approved; every gate passed/);

    // Stage two: one of its two nodes fails, crossing max_failure_ratio 0: the plan halts by itself.
    await eventually(async () => {
      const s = await status("plan-r2");
      expect(s.phase).toBe("halted");
      expect(s.reason).toBe('stage "half": 1 of 2 node(s) failed (0.5), above max_failure_ratio 0');
    });
    const acks = Object.fromEntries((await api.releases.listReleaseAcks({ releaseId: "r2" })).acks.map((a) => [a.nodeId, a]));
    expect(acks[bad]).toMatchObject({ state: "failed", message: "apply command exited with status 4: checksum mismatch" });
    const untouched = NODES.filter((n) => n !== "ro-1" && !halfNodes.includes(n));
    await sleep(300);
    const now = await reported("ro");
    for (const n of untouched) expect(now[n]).toBe("r1");
    expect(now[bad]).toBe("r1");

    // Rolled back: every moved node gets r1 back; the agents reinstall it and the plan ends rolled_back.
    const rollback = await autonomy("rollback", "execute", "--target", "rollout_plan", "--resource", "plan-r2", "--strategy", "rollback", "--reason", "r2 checksum broken");
    expect(rollback).toMatch(/phase halted -> rolling_back/);
    expect(rollback).toMatch(/3 node\(s\) moved by this plan get back the release they ran before/);
    const waited = await autonomy("rollout", "status", "--plan-id", "plan-r2", "--wait", "--timeout", "20s").catch((e: { stdout: string }) => e.stdout);
    expect(waited).toMatch(/rolled_back/);
    const done = await status("plan-r2");
    expect(done.phase).toBe("rolled_back");
    expect(done.reason).toBe("rolled back (r2 checksum broken): 3 node(s) run their previous release again");
    expect(Object.values(await reported("ro"))).toEqual(Array(5).fill("r1"));
    for (const n of ["ro-1", halfNodes[1]]) {
      expect((await api.nodes.getDesiredRelease({ nodeId: n })).release?.releaseId).toBe("r1");
      expect(readFileSync(path.join(work, `${n}.marks`), "utf8")).toBe("r1\nr2\nr1\n");
    }
    // The node whose r2 install failed never left r1: nothing to reinstall.
    expect(readFileSync(path.join(work, `${bad}.marks`), "utf8")).toBe("r1\nr2\n");

    // A good release goes through all three stages.
    await publish("r3", "ro", true);
    await autonomy("rollout", "plan", "create", "--file", planFile("plan-r3.json", { ...plan, plan_id: "plan-r3", release_id: "r3" }));
    await eventually(async () => expect((await status("plan-r3")).stages[0]).toMatchObject({ healthy: 1 }));
    await autonomy("rollout", "gate", "approve", "--plan-id", "plan-r3", "--stage-id", "canary", "--reason", "fine");
    await eventually(async () => {
      expect((await status("plan-r3")).phase).toBe("completed");
      expect(Object.values(await reported("ro"))).toEqual(Array(5).fill("r3"));
    });
    const s = await status("plan-r3");
    expect(s.stages.map((x) => [x.stageId, x.phase, x.nodeCount, x.healthy])).toEqual([
      ["canary", "passed", 1, 1],
      ["half", "passed", 2, 2],
      ["rest", "passed", 2, 2],
    ]);
    // Each node installed each release it was moved to once (and r1 again when the rollback gave it back).
    expect(readFileSync(path.join(work, "ro-1.marks"), "utf8")).toBe("r1\nr2\nr1\nr3\n");
    expect(readFileSync(path.join(work, `${bad}.marks`), "utf8")).toBe("r1\nr2\nr3\n");
    expect(readFileSync(path.join(work, `${untouched[0]}.marks`), "utf8")).toBe("r1\nr3\n");
  }, 60_000);

  it("refuses to act on a plan whose signature does not verify against the pinned key", async () => {
    const wrongKey = path.join(work, "wrong.pem");
    writeFileSync(wrongKey, generateKeyPairSync("ed25519").publicKey.export({ type: "spki", format: "pem" }) as string);
    const { keys } = await api.rollouts.listSigningKeys({});
    const rightKey = path.join(work, "right.pem");
    writeFileSync(rightKey, keys.find((k) => k.current)!.publicKeyPem);
    const refusing = startAgent("sig-1", "sig", 'echo "$AUTONOMY_RELEASE_ID" >> "$MARKS"', ["--plan-public-key-file", wrongKey]);
    startAgent("sig-2", "sig", 'echo "$AUTONOMY_RELEASE_ID" >> "$MARKS"', ["--plan-public-key-file", rightKey]);
    // Both HEALTHY (heartbeating), not only enrolled: a stage admits HEALTHY nodes only.
    await eventually(async () =>
      expect((await api.nodes.getFleetStatus({ channel: "sig" })).nodes.map((n) => [n.nodeId, n.lifecycle])).toEqual([
        ["sig-1", "HEALTHY"],
        ["sig-2", "HEALTHY"],
      ]),
    );
    await publish("sig-r1", "sig", true);
    await api.rollouts.createRolloutPlan({ plan: { planId: "sig-plan", releaseId: "sig-r1", stages: [{ stageId: "all", percent: 100 }] } });
    await eventually(async () => {
      expect(await reported("sig")).toEqual({ "sig-1": "", "sig-2": "sig-r1" });
      expect(refusing.output()).toMatch(/refusing to act on a rollout plan whose signed spec does not check out.*its signature does not verify/);
    });
    await sleep(300);
    expect((await reported("sig"))["sig-1"]).toBe("");
  });
});
