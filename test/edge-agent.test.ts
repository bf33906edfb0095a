import { spawn, type ChildProcess } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { createOrchestratorClients, type OrchestratorClients } from "../clients/index.js";
import YAML from "yaml";
import { AUTONOMY_BIN, EDGECTL_BIN, runProgram, startChildServer, type ChildServer } from "./helpers/child.js";
import { eventually } from "./helpers/wait.js";

// Every case runs the built programs, a second or more each on a busy machine.
vi.setConfig({ testTimeout: 120_000 });

const DIGEST = `sha256:${"5eed".repeat(16)}`;

interface Agent {
  nodeId: string;
  stateDir: string;
  proc: ChildProcess;
  output: () => string;
  exited: Promise<number | null>;
}

describe("edgectl run against a real server", () => {
  let server: ChildServer;
  let api: OrchestratorClients;
  let work: string;
  const agents: Agent[] = [];

  const startAgent = (nodeId: string, applyCommand: string): Agent => {
    const stateDir = path.join(work, nodeId);
    const proc = spawn(
      process.execPath,
      [EDGECTL_BIN, "--state-dir", stateDir, "run", "--node-id", nodeId, "--channel", "e2e", "--label", "ring=canary",
        "--apply-command", applyCommand, "--heartbeat-interval", "200ms", "--poll-interval", "100ms"],
      { env: { ...process.env, AUTONOMY_ORCHESTRATOR_URL: server.url, MARKS: path.join(work, `${nodeId}.marks`) }, stdio: ["ignore", "pipe", "pipe"] },
    );
    let out = "";
    proc.stdout!.on("data", (c: Buffer) => (out += c.toString()));
    proc.stderr!.on("data", (c: Buffer) => (out += c.toString()));
    const exited = new Promise<number | null>((resolve) => proc.once("exit", (code) => resolve(code)));
    const agent = { nodeId, stateDir, proc, output: () => out, exited };
    agents.push(agent);
    return agent;
  };
  const publish = (releaseId: string, version: string) =>
    api.releases.publishRelease({ release: { releaseId, channel: "e2e", version, artifacts: [{ name: "app", digest: DIGEST }] } });
  const fleetRows = async () => (await api.nodes.getFleetStatus({ channel: "e2e" })).nodes;

  beforeAll(async () => {
    work = mkdtempSync(path.join(os.tmpdir(), "ao-edge-"));
    server = await startChildServer(["--data-dir", path.join(work, "server")]);
    api = createOrchestratorClients({ baseUrl: server.url });
  });
  afterAll(async () => {
    for (const a of agents) if (a.proc.exitCode === null) a.proc.kill("SIGKILL");
    api.close();
    await server.kill();
    rmSync(work, { recursive: true, force: true });
  });

  it("converges on a published release, reports a failed install, and stops cleanly on SIGTERM", async () => {
    await publish("e2e-r1", "1.0");
    const record = 'echo "$AUTONOMY_RELEASE_ID $AUTONOMY_RELEASE_VERSION" >> "$MARKS"';
    startAgent("edge-1", record);
    startAgent("edge-2", record);
    // This node's install of the second release fails.
    startAgent("edge-3", `${record} && test "$AUTONOMY_RELEASE_ID" != e2e-r2 || { echo "disk full" >&2; exit 3; }`);

    await eventually(async () => {
      const rows = await fleetRows();
      expect(rows.map((r) => [r.nodeId, r.lifecycle, r.reportedReleaseId, r.drift])).toEqual([
        ["edge-1", "HEALTHY", "e2e-r1", false],
        ["edge-2", "HEALTHY", "e2e-r1", false],
        ["edge-3", "HEALTHY", "e2e-r1", false],
      ]);
      const acks = await api.releases.listReleaseAcks({ releaseId: "e2e-r1" });
      expect(acks.acks.map((a) => a.state)).toEqual(["healthy", "healthy", "healthy"]);
    });

    await publish("e2e-r2", "2.0");
    await eventually(async () => {
      const acks = (await api.releases.listReleaseAcks({ releaseId: "e2e-r2" })).acks;
      expect(acks.map((a) => [a.nodeId, a.state, a.reportedReleaseId])).toEqual([
        ["edge-1", "healthy", "e2e-r2"],
        ["edge-2", "healthy", "e2e-r2"],
        ["edge-3", "failed", "e2e-r1"],
      ]);
      expect(acks[2].message).toBe("apply command exited with status 3: disk full");
      const rows = await fleetRows();
      expect(rows.map((r) => [r.nodeId, r.reportedReleaseId, r.drift])).toEqual([
        ["edge-1", "e2e-r2", false],
        ["edge-2", "e2e-r2", false],
        ["edge-3", "e2e-r1", true],
      ]);
    });
    const summary = await api.nodes.getNodeSummary({ nodeId: "edge-1" });
    expect(summary.node?.labels).toEqual({ ring: "canary" });
    expect(summary.lastAck?.state).toBe("healthy");

    // Each install ran once; the failed release was not retried in a loop.
    await sleep(500);
    expect(readFileSync(path.join(work, "edge-1.marks"), "utf8")).toBe("e2e-r1 1.0\ne2e-r2 2.0\n");
    expect(readFileSync(path.join(work, "edge-3.marks"), "utf8")).toBe("e2e-r1 1.0\ne2e-r2 2.0\n");

    for (const a of agents) a.proc.kill("SIGTERM");
    for (const a of agents) {
      expect(await a.exited).toBe(0);
      expect(a.output()).toMatch(/stopped/);
    }
    const state = JSON.parse(readFileSync(path.join(agents[0].stateDir, "agent.json"), "utf8"));
    expect(state).toMatchObject({ nodeId: "edge-1", channel: "e2e", currentReleaseId: "e2e-r2" });
  });

  it("remembers what the node runs across a restart and does not install it again", async () => {
    const again = startAgent("edge-1", 'echo "$AUTONOMY_RELEASE_ID again" >> "$MARKS"');
    await eventually(async () => {
      expect(again.output()).toMatch(/enrolled; running.*"runs":"e2e-r2"/);
    });
    await sleep(500);
    again.proc.kill("SIGTERM");
    expect(await again.exited).toBe(0);
    expect(readFileSync(path.join(work, "edge-1.marks"), "utf8")).toBe("e2e-r1 1.0\ne2e-r2 2.0\n");
  });
});

describe("edgectl: stopping during an install, enrolment, status, signed plans", () => {
  let server: ChildServer;
  let api: OrchestratorClients;
  let work: string;
  const env = () => ({ AUTONOMY_ORCHESTRATOR_URL: server.url });

  beforeAll(async () => {
    work = mkdtempSync(path.join(os.tmpdir(), "ao-edge2-"));
    server = await startChildServer(["--data-dir", path.join(work, "server")]);
    api = createOrchestratorClients({ baseUrl: server.url });
  });
  afterAll(async () => {
    api.close();
    await server.kill();
    rmSync(work, { recursive: true, force: true });
  });

  const spawnAgent = (stateDir: string, args: string[]) => {
    const proc = spawn(process.execPath, [EDGECTL_BIN, "--state-dir", stateDir, "run", "--log-format", "json", "--poll-interval", "100ms", ...args], {
      env: { ...process.env, ...env() },
      stdio: ["ignore", "ignore", "pipe"],
    });
    let log = "";
    proc.stderr!.on("data", (c: Buffer) => (log += c.toString()));
    const exited = new Promise<number | null>((resolve) => proc.once("exit", (code) => resolve(code)));
    return { proc, log: () => log, exited };
  };

  it("SIGTERM during the apply hook stops the hook's whole process group and acks failed: interrupted", async () => {
    await api.releases.publishRelease({ release: { releaseId: "int-r1", channel: "int", version: "1", artifacts: [{ name: "app", digest: DIGEST }] } });
    const pidFile = path.join(work, "sleep.pid");
    // The shell starts a child that would outlive it by 30 s if only the shell were signalled.
    const agent = spawnAgent(path.join(work, "int-1"), [
      "--node-id", "int-1", "--channel", "int",
      "--apply-command", `echo "fetching $AUTONOMY_RELEASE_ID"; sleep 30 & echo $! > ${pidFile}; wait`,
    ]);
    await eventually(async () => expect(agent.log()).toContain('"msg":"fetching int-r1"'));
    await eventually(async () => expect(readFileSync(pidFile, "utf8")).toMatch(/^\d+\n$/));
    const sleeper = Number(readFileSync(pidFile, "utf8"));
    agent.proc.kill("SIGTERM");
    expect(await agent.exited).toBe(0);
    // The sleep of the hook is gone (or a zombie waiting for init) once the agent has exited.
    const gone = () => {
      try {
        return readFileSync(`/proc/${sleeper}/stat`, "utf8").split(") ")[1].startsWith("Z");
      } catch {
        return true;
      }
    };
    await eventually(async () => expect(gone()).toBe(true), 2000);
    const ack = (await api.releases.listReleaseAcks({ releaseId: "int-r1" })).acks[0];
    expect([ack.state, ack.message]).toEqual(["failed", "interrupted: the agent was stopped during the apply command"]);
    const lines = agent.log().trim().split("\n").map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines.find((l) => l.msg === "fetching int-r1")).toMatchObject({ hook: "apply", stream: "stdout", release_id: "int-r1" });
    expect(lines.at(-1)).toMatchObject({ msg: "stopped" });
  });

  it("enroll says what it did and keeps labels unless --label or --clear-labels is given", async () => {
    const stateDir = path.join(work, "lab-1");
    const enroll = (...args: string[]) => runProgram(EDGECTL_BIN, ["--state-dir", stateDir, "enroll", "--node-id", "lab-1", "--channel", "lab", ...args], env());
    const first = await enroll("--label", "site=lab", "--label", "ring=canary");
    expect(first).toMatchObject({ code: 0 });
    expect(first.stdout).toBe(
      "enrolled node lab-1: channel lab, labels ring=canary,site=lab\nnext: `edgectl run` on this node; it counts as HEALTHY once its heartbeats arrive\n",
    );
    expect(first.stdout + first.stderr).not.toContain("UNAVAILABLE");
    const again = await enroll();
    expect(again.stdout).toMatch(/^updated the enrolment of node lab-1: channel lab, labels ring=canary,site=lab\n/);
    expect((await api.nodes.getNodeSummary({ nodeId: "lab-1" })).node?.labels).toEqual({ site: "lab", ring: "canary" });
    expect((await enroll("--label", "site=depot")).stdout).toContain("labels site=depot");
    expect((await enroll("--clear-labels")).stdout).toContain("channel lab, no labels");
    expect((await api.nodes.getNodeSummary({ nodeId: "lab-1" })).node?.labels).toEqual({});
    expect((await enroll("--clear-labels", "--label", "a=b")).code).toBe(2);
  });

  it("reads its URL from config.yaml in the state dir, verifies a signed plan with the key from signing-key get, and status shows it all", async () => {
    const stateDir = path.join(work, "cfg-1");
    const keyFile = path.join(work, "plan-key.pem");
    const get = await runProgram(AUTONOMY_BIN, ["--orchestrator-url", server.url, "rollout", "signing-key", "get", "--output-file", keyFile]);
    expect(get.code).toBe(0);
    expect(readFileSync(keyFile, "utf8")).toMatch(/^-----BEGIN PUBLIC KEY-----/);
    mkdirSync(stateDir, { recursive: true });
    writeFileSync(path.join(stateDir, "config.yaml"), `orchestrator-url: ${server.url}\nplan-public-key-file: ${keyFile}\n`);
    const enrolled = await runProgram(EDGECTL_BIN, ["--state-dir", stateDir, "enroll", "--node-id", "cfg-1", "--channel", "cfg"]);
    expect(enrolled.code).toBe(0);
    const proc = spawn(process.execPath, [EDGECTL_BIN, "--state-dir", stateDir, "run", "--log-format", "json", "--poll-interval", "100ms", "--heartbeat-interval", "100ms"], {
      env: { ...process.env, AUTONOMY_ORCHESTRATOR_URL: "" },
      stdio: ["ignore", "ignore", "pipe"],
    });
    let log = "";
    proc.stderr!.on("data", (c: Buffer) => (log += c.toString()));
    const exited = new Promise<number | null>((resolve) => proc.once("exit", (code) => resolve(code)));
    try {
      // A stage admits HEALTHY (heartbeating) nodes only.
      await eventually(async () => expect((await api.nodes.getNodeSummary({ nodeId: "cfg-1" })).node?.lifecycle).toBe("HEALTHY"));
      await api.releases.publishRelease({ release: { releaseId: "cfg-r1", channel: "cfg", version: "1", staged: true, artifacts: [{ name: "app", digest: DIGEST }] } });
      await api.rollouts.createRolloutPlan({ plan: { planId: "cfg-plan", releaseId: "cfg-r1", stages: [{ stageId: "all", nodeIds: ["cfg-1"] }] } });
      await eventually(async () => {
        const acks = (await api.releases.listReleaseAcks({ releaseId: "cfg-r1" })).acks;
        expect(acks.map((a) => a.state)).toEqual(["healthy"]);
      });
      expect(log).toContain(`"url_source":"from ${path.join(stateDir, "config.yaml")}"`);
      expect(log).toMatch(/"plan_id":"cfg-plan".*"key":"pinned \(--plan-public-key-file\)".*"msg":"verified the signed rollout plan"/);
      const status = await runProgram(EDGECTL_BIN, ["--state-dir", stateDir, "status"]);
      expect(status.stdout).toMatch(/node\s+cfg-1\n/);
      expect(status.stdout).toMatch(/release\s+cfg-r1\n/);
      expect(status.stdout).toMatch(/last ack\s+healthy of cfg-r1 at /);
      expect(status.stdout).toMatch(/agent\s+running \(pid \d+/);
      expect(status.stdout).toMatch(/connection\s+ok since /);
      expect(status.stdout).toMatch(/certificate\s+none/);
      const json = YAML.parse((await runProgram(EDGECTL_BIN, ["--state-dir", stateDir, "status", "-o", "yaml"])).stdout);
      expect(json).toMatchObject({ node_id: "cfg-1", release: "cfg-r1", last_ack: { state: "healthy" }, agent: { running: true } });
    } finally {
      proc.kill("SIGTERM");
      expect(await exited).toBe(0);
    }
    const after = await runProgram(EDGECTL_BIN, ["--state-dir", stateDir, "status"]);
    expect(after.stdout).toMatch(/agent\s+not running/);
    // What the stopped agent last saw, said to be so.
    expect(after.stdout).toMatch(/connection\s+ok since \S+ \(when it last ran\)\n/);
    expect(after.stdout).toMatch(/updates\s+.* \(when it last ran\)\n/);
    expect(after.stdout).not.toMatch(/next try/);
  });

  it("the last ack outlives the agent: killed with -9 and started again, status still shows it; a corrupt last-ack.json is ignored with a line", async () => {
    const stateDir = path.join(work, "ack-1");
    const env = { AUTONOMY_ORCHESTRATOR_URL: server.url };
    expect((await runProgram(EDGECTL_BIN, ["--state-dir", stateDir, "enroll", "--node-id", "ack-1", "--channel", "ack"], env)).code).toBe(0);
    const run = (url = server.url) => {
      const proc = spawn(process.execPath, [EDGECTL_BIN, "--state-dir", stateDir, "run", "--log-format", "json", "--poll-interval", "100ms", "--heartbeat-interval", "100ms"], {
        env: { ...process.env, AUTONOMY_ORCHESTRATOR_URL: url },
        stdio: ["ignore", "ignore", "pipe"],
      });
      let log = "";
      proc.stderr!.on("data", (c: Buffer) => (log += c.toString()));
      const exited = new Promise<number | null>((resolve) => proc.once("exit", (code) => resolve(code)));
      return { proc, exited, log: () => log };
    };
    const status = async () => (await runProgram(EDGECTL_BIN, ["--state-dir", stateDir, "status"])).stdout;
    const first = run();
    try {
      await eventually(async () => expect((await api.nodes.getNodeSummary({ nodeId: "ack-1" })).node?.lifecycle).toBe("HEALTHY"));
      await api.releases.publishRelease({ release: { releaseId: "ack-r1", channel: "ack", version: "1", staged: true, artifacts: [{ name: "app", digest: DIGEST }] } });
      await api.rollouts.createRolloutPlan({ plan: { planId: "ack-plan", releaseId: "ack-r1", stages: [{ stageId: "all", nodeIds: ["ack-1"] }] } });
      await eventually(async () => expect(await status()).toMatch(/last ack\s+healthy of ack-r1 at /));
    } finally {
      first.proc.kill("SIGKILL");
      await first.exited;
    }
    // The new run cannot reach the orchestrator, so it sends no ack of its own.
    const second = run("http://127.0.0.1:1");
    try {
      // Once the new run has written its status, the ack of the run before is still there.
      await eventually(async () => expect(JSON.parse(readFileSync(path.join(stateDir, "status.json"), "utf8")).pid).toBe(second.proc.pid));
      expect(await status()).toMatch(/last ack\s+healthy of ack-r1 at /);
      expect(await status()).toMatch(/agent\s+running/);
    } finally {
      second.proc.kill("SIGTERM");
      expect(await second.exited).toBe(0);
    }
    expect(await status()).toMatch(/last ack\s+healthy of ack-r1 at /);
    // A corrupt file is no ack, said once on stderr; neither status nor the agent stops for it.
    rmSync(path.join(stateDir, "status.json"));
    writeFileSync(path.join(stateDir, "last-ack.json"), "{not json");
    const corrupt = await runProgram(EDGECTL_BIN, ["--state-dir", stateDir, "status"]);
    expect(corrupt.code).toBe(0);
    expect(corrupt.stdout).toMatch(/last ack\s+-\n/);
    expect(corrupt.stderr).toContain(`edgectl: ${path.join(stateDir, "last-ack.json")}: not JSON`);
    const third = run();
    try {
      await eventually(async () => expect(JSON.parse(readFileSync(path.join(stateDir, "status.json"), "utf8")).pid).toBe(third.proc.pid));
      expect(third.log()).toContain("last-ack.json: not JSON");
      expect(third.proc.exitCode).toBeNull();
    } finally {
      third.proc.kill("SIGTERM");
      expect(await third.exited).toBe(0);
    }
  });

  it("status shows the event spool: empty before anything is spooled, then the unsent events and the deadletter", async () => {
    const stateDir = path.join(work, "spool-status");
    const edgectl = (...args: string[]) => runProgram(EDGECTL_BIN, ["--state-dir", stateDir, ...args], { AUTONOMY_ORCHESTRATOR_URL: server.url });
    expect((await edgectl("enroll", "--node-id", "spool-status", "--channel", "e2e")).code).toBe(0);
    expect((await edgectl("status")).stdout).toMatch(/\nspool\s+empty \(nothing spooled yet\)\n/);
    expect(JSON.parse((await edgectl("status", "-o", "json")).stdout).spool).toBeNull();
    const file = path.join(work, "spool-status.jsonl");
    writeFileSync(file, '{"event_type":"door_opened"}\n{"event_type":"door_closed"}\n');
    expect((await edgectl("events", "send", "--file", file)).stdout).toBe("spooled 2\n");
    expect((await edgectl("status")).stdout).toMatch(/\nspool\s+2 events unsent \(\d+B\), the oldest spooled \d+s ago; 0 in the deadletter\n/);
    const json = JSON.parse((await edgectl("status", "-o", "json")).stdout);
    expect(json.spool).toEqual({ unsent_frames: 2, unsent_bytes: expect.any(Number), oldest_unsent_at: expect.any(String), deadletter_entries: 0 });
    // The spool's own commands take -o too.
    expect(JSON.parse((await edgectl("spool", "status", "-o", "json")).stdout).unsent_frames).toBe(2);
    expect(JSON.parse((await edgectl("deadletter", "list", "-o", "json")).stdout)).toEqual({ entries: [], count: 0 });
    expect(YAML.parse((await edgectl("throttle", "get", "-o", "yaml")).stdout)).toMatchObject({ rate_bytes_per_second: 0 });
  });

  it("an unknown key in config.yaml is a usage error with a did-you-mean", async () => {
    const stateDir = path.join(work, "cfg-bad");
    mkdirSync(stateDir, { recursive: true });
    writeFileSync(path.join(stateDir, "config.yaml"), "orchestrator_url: http://x\n");
    const r = await runProgram(EDGECTL_BIN, ["--state-dir", stateDir, "enroll", "--node-id", "x", "--channel", "y"], { AUTONOMY_ORCHESTRATOR_URL: "" });
    expect(r.code).toBe(2);
    expect(r.stderr).toBe(`edgectl: error: ${path.join(stateDir, "config.yaml")}: unknown key "orchestrator_url" (did you mean "orchestrator-url"?)\n`);
  });
});
