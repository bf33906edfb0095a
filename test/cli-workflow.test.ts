import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import YAML from "yaml";
import { createOrchestratorClients, type OrchestratorClients } from "../clients/index.js";
import { AUTONOMY_BIN, runProgram } from "./helpers/child.js";
import { startTestServer, type TestServer } from "./helpers/server.js";
import { eventually } from "./helpers/wait.js";

// Every case runs the built programs, a second or more each on a busy machine.
vi.setConfig({ testTimeout: 120_000 });

const DIGEST = `sha256:${"ef".repeat(32)}`;

describe("config contexts", () => {
  let server: TestServer;
  let work: string;
  const env = () => ({ XDG_CONFIG_HOME: path.join(work, "config"), AUTONOMY_ORCHESTRATOR_URL: "", AUTONOMY_TOKEN_FILE: "", AUTONOMY_CONTEXT: "" });
  const autonomy = (...args: string[]) => runProgram(AUTONOMY_BIN, args, env());

  beforeAll(async () => {
    work = mkdtempSync(path.join(os.tmpdir(), "ao-ctx-"));
    server = await startTestServer("sqlite", { rbacEnforcement: true });
  });
  afterAll(async () => {
    await server.stop();
    rmSync(work, { recursive: true, force: true });
  });

  it("keeps named contexts with URL and token file; use-context switches; --context picks one; the source is named in errors", { timeout: 120_000 }, async () => {
    const tokenFile = path.join(server.dataDir, "bootstrap-admin-token");
    expect((await autonomy("config", "set-context", "lab", "--orchestrator-url", server.url, "--token-file", tokenFile)).stdout).toBe(
      `context lab saved (current) in ${path.join(work, "config", "autonomy", "config.yaml")}\n`,
    );
    expect((await autonomy("config", "set-context", "dead", "--orchestrator-url", "http://127.0.0.1:9")).code).toBe(0);
    // No URL and no token in the environment: the current context gives both.
    const who = await autonomy("rbac", "whoami", "-o", "json");
    expect(who.stderr).toBe("");
    expect(JSON.parse(who.stdout).principal).toMatch(/^operator:bootstrap-/);
    expect((await autonomy("config", "use-context", "dead")).stdout).toBe("current context: dead\n");
    const dead = await autonomy("fleet", "status");
    expect(dead.stderr).toBe(
      `autonomy: error: cannot reach the orchestrator at http://127.0.0.1:9 (from context "dead" of ${path.join(work, "config", "autonomy", "config.yaml")}): connection refused: nothing listens on 127.0.0.1:9\n`,
    );
    expect((await autonomy("--context", "lab", "fleet", "status")).code).toBe(0);
    const list = await autonomy("config", "get-contexts", "-o", "json");
    expect(JSON.parse(list.stdout)).toEqual({
      current_context: "dead",
      contexts: { lab: { "orchestrator-url": server.url, "token-file": tokenFile }, dead: { "orchestrator-url": "http://127.0.0.1:9" } },
    });
    expect((await autonomy("config", "use-context", "nope")).stderr).toBe(
      `autonomy: error: no context "nope" in ${path.join(work, "config", "autonomy", "config.yaml")} (known: lab, dead)\n`,
    );
    expect((await autonomy("config", "use-context", "nope")).code).toBe(2);
    // A context's TLS files go with its https:// URL: an http:// URL given by flag reaches a cleartext server without them.
    const pem = path.join(work, "some.pem");
    writeFileSync(pem, "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n");
    const secure = ["--orchestrator-url", "https://localhost:9", "--token-file", tokenFile, "--tls-ca-file", pem, "--tls-cert-file", pem, "--tls-key-file", pem];
    expect((await autonomy("config", "set-context", "secure", ...secure, "--use")).code).toBe(0);
    const cleartext = await autonomy("--orchestrator-url", server.url, "rbac", "whoami", "-o", "json");
    expect(cleartext.stderr).toBe("");
    expect(JSON.parse(cleartext.stdout).principal).toMatch(/^operator:bootstrap-/);
    // Given as flags, TLS options with an http:// URL are still refused.
    const explicit = await autonomy("--orchestrator-url", server.url, "--tls-ca-file", pem, "rbac", "whoami");
    expect(explicit.stderr).toContain(`TLS options need an https:// orchestrator URL, not "${server.url}"`);
    expect((await autonomy("config", "use-context", "dead")).code).toBe(0);
    expect((await autonomy("config", "delete-context", "secure")).code).toBe(0);
    expect((await autonomy("config", "delete-context", "dead")).code).toBe(0);
    expect(YAML.parse(readFileSync(path.join(work, "config", "autonomy", "config.yaml"), "utf8"))["current-context"]).toBeUndefined();
  });
});

describe("waiting on rollouts: describe --watch and status --wait", () => {
  let server: TestServer;
  let api: OrchestratorClients;
  let work: string;
  const autonomy = (...args: string[]) => runProgram(AUTONOMY_BIN, ["--orchestrator-url", server.url, ...args]);

  /** A node of the channel that heartbeats and acks healthy whatever it is moved to, until stopped. */
  const node = (nodeId: string, channel: string) => {
    let stop = false;
    const loop = (async () => {
      await api.nodes.enrollNode({ nodeId, channel });
      while (!stop) {
        await api.nodes.heartbeat({ nodeId });
        const { release } = await api.nodes.getDesiredRelease({ nodeId });
        if (release) await api.releases.upsertAck({ releaseId: release.releaseId, nodeId, state: "healthy", reportedReleaseId: release.releaseId });
        await new Promise((r) => setTimeout(r, 100));
      }
    })();
    return async () => {
      stop = true;
      await loop;
    };
  };

  beforeAll(async () => {
    work = mkdtempSync(path.join(os.tmpdir(), "ao-wait-"));
    server = await startTestServer("sqlite");
    api = createOrchestratorClients({ baseUrl: server.url });
  });
  afterAll(async () => {
    api.close();
    await server.stop();
    rmSync(work, { recursive: true, force: true });
  });

  it("--wait exits 0 when the plan completes; --watch redraws until it is done", { timeout: 120_000 }, async () => {
    const stop = node("w-1", "wait");
    try {
      await eventually(async () => expect((await api.nodes.getNodeSummary({ nodeId: "w-1" })).node?.lifecycle).toBe("HEALTHY"));
      await api.releases.publishRelease({ release: { releaseId: "w-r1", channel: "wait", version: "1", staged: true, artifacts: [{ name: "app", digest: DIGEST }] } });
      const planFile = path.join(work, "plan.yaml");
      writeFileSync(planFile, "plan_id: w-plan\nrelease_id: w-r1\nstages:\n  - stage_id: all\n    node_ids: [w-1]\n    gates: [{kind: manual}, {kind: time_soak, seconds: 1s}]\n");
      expect((await autonomy("rollout", "plan", "create", "--file", planFile)).code).toBe(0);
      const start = (args: string[]) => {
        const proc = spawn(process.execPath, [AUTONOMY_BIN, "--orchestrator-url", server.url, ...args], { stdio: ["ignore", "pipe", "pipe"] });
        let out = "";
        proc.stdout.on("data", (c: Buffer) => (out += c.toString()));
        const exited = new Promise<number | null>((resolve) => proc.once("exit", resolve));
        return { out: () => out, exited };
      };
      const watch = start(["rollout", "plan", "describe", "w-plan", "--watch", "--interval", "100ms"]);
      const wait = start(["rollout", "status", "w-plan", "--wait", "--interval", "100ms", "--timeout", "1m"]);
      // The manual gate holds the plan active until it is approved.
      await eventually(async () => expect(watch.out()).toMatch(/phase {4}active/), 60_000);
      await api.rollouts.approveGate({ planId: "w-plan", stageId: "all", reason: "looks good" });
      expect(await wait.exited).toBe(0);
      expect(wait.out()).toMatch(/^plan w-plan: completed\b.*\n$/);
      expect(await watch.exited).toBe(0);
      expect(watch.out()).toMatch(/phase {4}completed/);
      expect(watch.out()).toMatch(/\*all +w-1 +passed/);
    } finally {
      await stop();
    }
  });

  it("--wait exits 1 when the plan is cancelled, and when --timeout passes", { timeout: 120_000 }, async () => {
    await api.releases.publishRelease({ release: { releaseId: "c-r1", channel: "cancel", version: "1", staged: true, artifacts: [{ name: "app", digest: DIGEST }] } });
    await api.rollouts.createRolloutPlan({ plan: { planId: "c-plan", releaseId: "c-r1", stages: [{ stageId: "all", percent: 100, gates: [{ kind: "manual" }] }] } });
    const timedOut = await autonomy("rollout", "status", "c-plan", "--wait", "--interval", "100ms", "--timeout", "500ms");
    expect(timedOut.code).toBe(1);
    expect(timedOut.stderr).toMatch(/autonomy: error: plan c-plan is still (published|active) after 500ms \(--timeout\)\n$/);
    const waiting = autonomy("rollout", "status", "c-plan", "--wait", "--interval", "100ms", "-o", "json");
    await new Promise((r) => setTimeout(r, 800));
    expect((await autonomy("rollout", "plan", "cancel", "c-plan", "--reason", "not today")).code).toBe(0);
    const cancelled = await waiting;
    expect(cancelled.code).toBe(1);
    expect(JSON.parse(cancelled.stdout)).toMatchObject({ plan_id: "c-plan", phase: "cancelled" });
  });
});
