import { execFile } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { AUTONOMY_BIN, EDGECTL_BIN, runProgram } from "./helpers/child.js";
import { startTestServer, type TestServer } from "./helpers/server.js";

// Every case runs the built programs, a second or more each on a busy machine.
vi.setConfig({ testTimeout: 120_000 });

const exec = promisify(execFile);
const DIGEST = `sha256:${"d1".repeat(32)}`;

describe("autonomy fleet, release and node commands; edgectl enroll", () => {
  let server: TestServer;
  let dir: string;
  const cli = (...args: string[]) => runProgram(AUTONOMY_BIN, ["--orchestrator-url", server.url, ...args]);
  const file = (name: string, text: string) => {
    const p = path.join(dir, name);
    writeFileSync(p, text);
    return p;
  };

  beforeAll(async () => {
    server = await startTestServer("sqlite");
    dir = mkdtempSync(path.join(os.tmpdir(), "ao-fleet-cli-"));
  });
  afterAll(async () => {
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it("publishes a YAML release, keeping a version like 1.10 as written, and a JSON one", async () => {
    const yaml = file("r.yaml", `release_id: cli-r1\nchannel: cli\nversion: 1.10\nartifacts:\n  - name: app\n    digest: ${DIGEST}\n`);
    const first = await cli("release", "publish", "--file", yaml);
    expect(first).toMatchObject({ code: 0, stdout: "published release cli-r1 (channel cli, version 1.10)\n" });
    expect((await cli("release", "publish", "--file", yaml)).stdout).toMatch(/already published with this content; nothing changed/);
    const json = file("r.json", JSON.stringify({ release_id: "cli-r2", channel: "cli", version: "2", artifacts: [{ name: "app", digest: DIGEST }] }));
    expect((await cli("release", "publish", "--file", json)).code).toBe(0);
    const latest = await cli("release", "latest", "--channel", "cli");
    expect(latest.stdout).toMatch(/^release\s+cli-r2$/m);
    expect(latest.stdout).toContain(`app  ${DIGEST}`);
  });

  it.each([
    ["other content under a published id", `release_id: cli-r1\nchannel: cli\nversion: "9"\nartifacts:\n  - name: app\n    digest: ${DIGEST}\n`, "already_exists: release \"cli-r1\" is already published with other content"],
    ["a digest that is not sha256", "release_id: x\nchannel: cli\nversion: '1'\nartifacts:\n  - name: app\n    digest: latest\n", "bad.yaml:6:13: artifacts[0].digest: \"latest\" is not a digest"],
    ["an unknown field", "release_id: x\nchanel: cli\n", 'bad.yaml:2:1: unknown key "chanel" (did you mean "channel"?)'],
    ["a list instead of an object", "- a\n- b\n", "expected a release (release_id, channel, version, artifacts), got a list"],
  ])("refuses %s in one line (exit 1 from the server, 2 for a bad file)", async (_name, text, message) => {
    const res = await cli("release", "publish", "--file", file("bad.yaml", text));
    expect(res.code).toBe(/^[a-z_]+: /.test(message) ? 1 : 2);
    expect(res.stderr.trim().split("\n")).toHaveLength(1);
    expect(res.stderr).toContain(message);
  });

  it("enrols with edgectl, then shows the fleet, the node and its drain", async () => {
    const stateDir = path.join(dir, "edge");
    const { stdout } = await exec(process.execPath, [EDGECTL_BIN, "--orchestrator-url", server.url, "--state-dir", stateDir, "enroll", "--node-id", "cli-n1", "--channel", "cli", "--label", "site=lab"]);
    expect(stdout).toBe("enrolled node cli-n1: channel cli, labels site=lab\nnext: `edgectl run` on this node; it counts as HEALTHY once its heartbeats arrive\n");
    const bad = await exec(process.execPath, [EDGECTL_BIN, "--orchestrator-url", server.url, "--state-dir", stateDir, "enroll", "--node-id", "x", "--channel", "c", "--label", "nolabel"]).then(
      () => ({ code: 0, stderr: "" }),
      (e: { code: number; stderr: string }) => e,
    );
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('--label: "nolabel" is not key=value');
    const status = await cli("fleet", "status", "--channel", "cli", "--stale-threshold", "90s");
    expect(status.stdout).toContain("channel cli: latest release cli-r2 (2)");
    expect(status.stdout).toContain("nodes: 1 total, 0 up, 0 stale, 1 unknown, 0 draining, 1 drifted");
    expect(status.stdout).toMatch(/^cli-n1\s+cli\s+UNAVAILABLE\s+never\s+-\s+cli-r2\s+yes$/m);
    const json = JSON.parse((await cli("--output", "json", "fleet", "status", "--channel", "cli")).stdout);
    expect(json.totals).toEqual({ total: 1, up: 0, stale: 0, unknown: 1, draining: 0, drifted: 1 });

    expect((await cli("node", "drain", "--node-id", "cli-n1")).stderr).toContain("--reason is required when draining");
    expect((await cli("node", "drain", "--node-id", "cli-n1", "--reason", "battery")).stdout).toBe("node cli-n1 is DRAINING\n");
    const described = await cli("node", "describe", "--node-id", "cli-n1");
    expect(described.stdout).toMatch(/^lifecycle\s+DRAINING \(drained: battery\)$/m);
    expect(described.stdout).toMatch(/^labels\s+site=lab$/m);
    expect(described.stdout).toMatch(/^drift\s+yes$/m);
    expect((await cli("node", "list", "--channel", "cli")).stdout).toMatch(/^cli-n1\s+cli\s+DRAINING/m);
    expect((await cli("node", "describe", "--node-id", "ghost")).stderr).toContain("not_found: node \"ghost\" is not enrolled");
  });

  it("lists a release's acks with a count per state", async () => {
    const up = await fetch(`${server.url}/v1/nodes/cli-n1/ack`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ release_id: "cli-r2", state: "failed", message: "exit 3", reported_release_id: "cli-r1" }),
    });
    expect(up.status).toBe(200);
    const acks = await cli("release", "acks", "--release-id", "cli-r2");
    expect(acks.stdout).toMatch(/^cli-n1\s+failed\s+cli-r1\s+\S+\s+exit 3$/m);
    expect(acks.stdout).toContain("1 acks: 1 failed");
    expect((await cli("release", "acks", "--release-id", "cli-r1")).stdout).toBe("no acks for release cli-r1 yet\n");
  });
});
