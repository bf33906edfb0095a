import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { AUTONOMY_BIN, ORCHESTRATOR_BIN, runProgram as run, startChildServer } from "./helpers/child.js";
import { freePort } from "./helpers/net.js";
import { createTestDatabase } from "./helpers/postgres.js";
import { h1 } from "./helpers/http.js";
import { startTestServer, type TestServer } from "./helpers/server.js";
import { SIGNING_KEY_FILE } from "../src/rollouts/signing.js";

// Every case runs the built programs, a second or more each on a busy machine.
vi.setConfig({ testTimeout: 120_000 });


describe("autonomy-orchestrator", () => {
  it("--help lists serve and version", async () => {
    const { code, stdout } = await run(ORCHESTRATOR_BIN, ["--help"]);
    expect(code).toBe(0);
    expect(stdout).toMatch(/serve/);
    expect(stdout).toMatch(/version/);
  });

  it("serve --help documents the flags with their defaults and variables", async () => {
    const { stdout } = await run(ORCHESTRATOR_BIN, ["serve", "--help"], { COLUMNS: "300" });
    for (const flag of ["--data-dir", "--listen", "--log-format", "--log-level", "--metrics-addr", "--postgres-url", "--busy-timeout"]) {
      expect(stdout).toContain(flag);
    }
    expect(stdout).toContain('default: "0.0.0.0:8888"');
    expect(stdout).toContain("env: AUTONOMY_LISTEN");
  });

  it("version --output json gives version, build SHA, build date, tier and platform", async () => {
    const { code, stdout } = await run(ORCHESTRATOR_BIN, ["version", "--output", "json"]);
    expect(code).toBe(0);
    const info = JSON.parse(stdout);
    expect(info).toMatchObject({ tier: "self-hosted" });
    expect(info.version).toBe(JSON.parse(readFileSync("package.json", "utf8")).version);
    expect(info.build_sha).toMatch(/^([0-9a-f]{40}|unknown)$/);
    expect(Number.isNaN(Date.parse(info.build_date))).toBe(false);
    expect(info.platform).toContain(process.platform);
  });

  it.each([
    [["serve", "--log-format", "xml"], "Allowed choices are json, text"],
    [["serve", "--busy-timeout", "soon"], "is not a duration"],
    [["serve", "--no-such-flag"], "unknown option"],
  ])("exits 2 with a clear message on bad usage: %s", async (args, message) => {
    const { code, stderr } = await run(ORCHESTRATOR_BIN, args);
    expect(code).toBe(2);
    expect(stderr).toContain(message);
  });

  it("serves on PostgreSQL with AUTONOMY_POSTGRES_URL, writing only the plan signing key to the data dir", async () => {
    const db = await createTestDatabase();
    const dataDir = mkdtempSync(path.join(os.tmpdir(), "ao-cli-"));
    const server = await startChildServer(["--data-dir", dataDir], { AUTONOMY_POSTGRES_URL: db.url });
    try {
      expect(server.lines.find((l) => l.msg === "serving")).toMatchObject({ store: "postgres" });
      const body = JSON.stringify({ events: [{ event_id: "pg-1", event_type: "t", node_id: "pg", timestamp: "2026-01-01T00:00:00Z" }] });
      expect((await h1(`${server.url}/v1/events`, { method: "POST", body })).json()).toEqual({ received: 1, inserted: 1, deduped: 0 });
      expect((await h1(`${server.url}/v1/events?node_id=pg`)).json().count).toBe(1);
      expect(readdirSync(dataDir)).toEqual([SIGNING_KEY_FILE]);
      expect(statSync(path.join(dataDir, SIGNING_KEY_FILE)).mode & 0o777).toBe(0o600);
    } finally {
      await server.kill();
      await db.drop();
      rmSync(dataDir, { recursive: true, force: true });
    }
  });

  it.each([
    ["text", "debug", true],
    ["json", "warn", false],
  ])("--log-format %s --log-level %s writes request lines: %s", async (format, level, expectLines) => {
    const port = await freePort();
    const dataDir = mkdtempSync(path.join(os.tmpdir(), "ao-cli-"));
    const proc = spawn(process.execPath, [ORCHESTRATOR_BIN, "serve", "--listen", `127.0.0.1:${port}`, "--data-dir", dataDir, "--log-format", format, "--log-level", level]);
    let stderr = "";
    proc.stderr.on("data", (c: Buffer) => (stderr += c));
    try {
      let health;
      for (let i = 0; i < 1200 && !health; i++) health = await h1(`http://127.0.0.1:${port}/v1/health`).catch(() => new Promise((r) => setTimeout(r, 50)));
      await new Promise((r) => setTimeout(r, 100));
      if (expectLines) {
        expect(stderr).toMatch(/^\[[\d\-T:.]+\] INFO: serving/m);
        expect(stderr).toMatch(/INFO: request .*"path":"\/v1\/health".*"status":200/);
      } else {
        // At warn level the only line is the bootstrap token's (a fresh data dir, RBAC enforced).
        expect(stderr).not.toMatch(/"msg":"request"/);
        expect(stderr.trim().split("\n").map((l) => JSON.parse(l).msg)).toEqual([expect.stringMatching(/^RBAC store was empty: wrote a one-time admin token/)]);
      }
    } finally {
      proc.kill();
      await new Promise((r) => proc.once("exit", r));
      rmSync(dataDir, { recursive: true, force: true });
    }
  });

  it("exits 1 with one line when the listen address is taken", async () => {
    const server = await startTestServer("sqlite");
    const dataDir = mkdtempSync(path.join(os.tmpdir(), "ao-cli-"));
    try {
      const { code, stderr } = await run(ORCHESTRATOR_BIN, ["serve", "--listen", `127.0.0.1:${server.address.port}`, "--data-dir", dataDir]);
      expect(code).toBe(1);
      expect(stderr.trim().split("\n")).toHaveLength(1);
      expect(stderr).toContain("EADDRINUSE");
    } finally {
      await server.stop();
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});

describe("autonomy", () => {
  let server: TestServer;
  let configHome: string;
  beforeAll(async () => {
    server = await startTestServer("sqlite");
    configHome = mkdtempSync(path.join(os.tmpdir(), "ao-config-"));
    const events = [
      { event_id: "l1", event_type: "boot", node_id: "cli-a", timestamp: "2026-11-22T10:00:00Z" },
      { event_id: "l2", event_type: "crash", node_id: "cli-a", timestamp: "2026-11-22T10:01:00Z", release_id: "r9", payload: { code: 139 } },
      { event_id: "l3", event_type: "boot", node_id: "cli-b", timestamp: "2026-11-22T10:02:00Z" },
    ];
    await h1(`${server.url}/v1/events`, { method: "POST", body: JSON.stringify({ events }) });
  });
  afterAll(async () => {
    await server.stop();
    rmSync(configHome, { recursive: true, force: true });
  });
  const env = () => ({ XDG_CONFIG_HOME: configHome, AUTONOMY_ORCHESTRATOR_URL: "" });

  it("logs prints a table, newest first, filtered", async () => {
    const { code, stdout } = await run(AUTONOMY_BIN, ["--orchestrator-url", server.url, "logs", "--node-id", "cli-a"], env());
    expect(code).toBe(0);
    const lines = stdout.trim().split("\n");
    expect(lines[0]).toMatch(/^SEQ\s+TIMESTAMP\s+NODE\s+TYPE\s+EVENT ID\s+RELEASE\s+PAYLOAD$/);
    expect(lines.slice(1).map((l) => l.split(/\s+/)[4])).toEqual(["l2", "l1"]);
    expect(lines[1]).toContain('{"code":139}');
  });

  it("logs --output json gives the REST shape", async () => {
    const { stdout } = await run(AUTONOMY_BIN, ["--orchestrator-url", server.url, "--output", "json", "logs", "--event-type", "boot", "--limit", "1"], env());
    const body = JSON.parse(stdout);
    expect(body.count).toBe(1);
    expect(body.events[0]).toMatchObject({ event_id: "l3", node_id: "cli-b", event_type: "boot" });
  });

  it("takes the URL from the flag, else the environment, else the config file", async () => {
    const dead = "http://127.0.0.1:9";
    // Only the config file: it is used.
    expect((await run(AUTONOMY_BIN, ["config", "set", "orchestrator.url", server.url], env())).code).toBe(0);
    expect((await run(AUTONOMY_BIN, ["config", "get", "orchestrator.url"], env())).stdout.trim()).toBe(server.url);
    expect((await run(AUTONOMY_BIN, ["logs"], env())).code).toBe(0);
    // The environment beats the file.
    const viaEnv = await run(AUTONOMY_BIN, ["logs"], { ...env(), AUTONOMY_ORCHESTRATOR_URL: dead });
    expect(viaEnv.code).toBe(1);
    expect(viaEnv.stderr).toBe(`autonomy: error: cannot reach the orchestrator at ${dead} (from AUTONOMY_ORCHESTRATOR_URL): connection refused: nothing listens on 127.0.0.1:9\n`);
    // The flag beats both.
    expect((await run(AUTONOMY_BIN, ["--orchestrator-url", server.url, "logs"], { ...env(), AUTONOMY_ORCHESTRATOR_URL: dead })).code).toBe(0);
  });

  it("says how to set the URL when none is given", async () => {
    const empty = mkdtempSync(path.join(os.tmpdir(), "ao-config-"));
    const { code, stderr } = await run(AUTONOMY_BIN, ["logs"], { XDG_CONFIG_HOME: empty, AUTONOMY_ORCHESTRATOR_URL: "" });
    rmSync(empty, { recursive: true, force: true });
    expect(code).toBe(2);
    expect(stderr).toContain("autonomy config set-context NAME --orchestrator-url URL");
  });

  it.each([
    [["config", "set", "orchestrator.url", "not a url"], 2, "orchestrator.url: not a URL"],
    [["config", "set", "colour", "red"], 2, 'unknown key "colour"'],
    [["logs", "--limit", "0"], 2, "is not a positive whole number"],
    [["logs", "--before", "abc"], 2, "--before"],
  ])("refuses %s clearly (exit %i)", async (args, exitCode, message) => {
    const { code, stderr } = await run(AUTONOMY_BIN, ["--orchestrator-url", server.url, ...args], env());
    expect(code).toBe(exitCode);
    expect(stderr).toContain(message);
  });

  it("relays a server-side validation error as one line", async () => {
    const { code, stderr } = await run(AUTONOMY_BIN, ["--orchestrator-url", server.url, "logs", "--limit", "5000"], env());
    expect(code).toBe(1);
    expect(stderr.trim()).toBe("autonomy: error: invalid_argument: limit: must be between 1 and 1000");
  });
});

describe("metrics exposition", () => {
  const promtool = spawnSync("promtool", ["--version"]).status === 0;
  if (!promtool && process.env.CI) throw new Error("promtool is required on CI: .ci/run installs the Debian package prometheus");

  it.skipIf(!promtool)("passes promtool check metrics, on the API port and on --metrics-addr", async () => {
    const server = await startTestServer("sqlite", { metricsAddr: "127.0.0.1:0" });
    try {
      await h1(`${server.url}/v1/events`, { method: "POST", body: '{"events":[{"event_id":"m","event_type":"t","node_id":"n","timestamp":"2026-01-01T00:00:00Z"}]}' });
      await h1(`${server.url}/v1/nothing`);
      for (const url of [`${server.url}/metrics`, `http://127.0.0.1:${server.metricsAddress!.port}/metrics`]) {
        const res = await h1(url);
        expect(res.status).toBe(200);
        const file = path.join(server.dataDir, "metrics.txt");
        writeFileSync(file, res.text);
        const check = spawnSync("sh", ["-c", `promtool check metrics < ${file}`], { encoding: "utf8" });
        expect(check.status, check.stdout + check.stderr).toBe(0);
        expect(res.text).toContain("cp_events_ingested_total 1");
      }
      const other = await h1(`http://127.0.0.1:${server.metricsAddress!.port}/v1/health`);
      expect(other.status).toBe(404);
    } finally {
      await server.stop();
    }
  });
});
