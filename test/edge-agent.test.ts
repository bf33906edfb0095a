import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createOrchestratorClients, type OrchestratorClients } from "../clients/index.js";
import { EDGECTL_BIN, startChildServer, type ChildServer } from "./helpers/child.js";
import { eventually } from "./helpers/wait.js";

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
