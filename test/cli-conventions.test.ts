import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { Command, InvalidArgumentError, type Option } from "commander";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { createOrchestratorClients, type OrchestratorClients } from "../clients/index.js";
import { auditCommand } from "../src/cli/autonomy/audit.js";
import { certCommand } from "../src/cli/autonomy/cert.js";
import { configCommand } from "../src/cli/autonomy/config.js";
import { fleetCommand } from "../src/cli/autonomy/fleet.js";
import { logsCommand } from "../src/cli/autonomy/logs.js";
import { nodeCommand } from "../src/cli/autonomy/node.js";
import { rbacCommand } from "../src/cli/autonomy/rbac.js";
import { releaseCommand } from "../src/cli/autonomy/release.js";
import { rollbackCommand, rolloutCommand } from "../src/cli/autonomy/rollout.js";
import { deadletterCommand } from "../src/cli/edgectl/deadletter.js";
import { enrollCommand } from "../src/cli/edgectl/enroll.js";
import { eventsCommand } from "../src/cli/edgectl/events.js";
import { addEdgeGlobalOptions } from "../src/cli/edgectl/options.js";
import { runAgentCommand } from "../src/cli/edgectl/run.js";
import { spoolCommand } from "../src/cli/edgectl/spool.js";
import { statusCommand } from "../src/cli/edgectl/status.js";
import { throttleCommand } from "../src/cli/edgectl/throttle.js";
import { serveCommand } from "../src/cli/orchestrator/serve.js";
import { walk } from "../src/cli/shared/program.js";
import { parseDays, parseDuration, parseHours, parseMiB, parseTimeMs } from "../src/cli/shared/parse.js";
import { AUDIT_CATEGORIES, AUDIT_SOURCES } from "../src/domain/audit.js";
import { AUTONOMY_BIN, runProgram } from "./helpers/child.js";
import { startTestServer, type TestServer } from "./helpers/server.js";

vi.setConfig({ testTimeout: 60_000 });

const DIGEST = `sha256:${"ef".repeat(32)}`;

/** The command trees of the three programs, built as their main files build them. */
function trees(): Command[] {
  const autonomy = new Command("autonomy");
  for (const c of [fleetCommand(), logsCommand(), releaseCommand(), rolloutCommand(), rollbackCommand(), nodeCommand(), certCommand(), auditCommand(), rbacCommand(), configCommand()]) {
    autonomy.addCommand(c);
  }
  const edgectl = addEdgeGlobalOptions(new Command("edgectl"));
  for (const c of [enrollCommand(), runAgentCommand(), statusCommand(), eventsCommand(), spoolCommand(), deadletterCommand(), throttleCommand()]) edgectl.addCommand(c);
  const orchestrator = new Command("autonomy-orchestrator").addCommand(serveCommand());
  return [autonomy, edgectl, orchestrator];
}

/** Every visible option of every command: "program sub --flag <value>". */
function visibleOptions(): { where: string; option: Option }[] {
  return trees().flatMap((root) =>
    walk(root).flatMap((cmd) => {
      const where: string[] = [];
      for (let c: Command | null = cmd; c; c = c.parent) where.unshift(c.name());
      return cmd.options.filter((o) => !o.hidden).map((option) => ({ where: `${where.join(" ")} ${option.long}`, option }));
    }),
  );
}

describe("one convention per kind of value on every flag of the three programs", () => {
  const options = visibleOptions();

  it("finds the flags (a sweep of all three trees)", () => {
    expect(options.length).toBeGreaterThan(100);
  });

  it("writes every duration as <duration> (30s, 10m, 2h, 7d); no visible flag counts seconds, hours or days", () => {
    const durationNamed = /(timeout|interval|threshold|older-than|ttl|valid-for|expiring-within|stale-after|grace)$/;
    const bad = options.filter(({ option }) => durationNamed.test(option.long ?? "") && !option.flags.endsWith("<duration>")).map((o) => o.where);
    expect(bad).toEqual([]);
    const unitNamed = options.filter(({ option }) => /-(seconds|secs|ms|minutes|hours|days)$/.test(option.long ?? "")).map((o) => o.where);
    expect(unitNamed).toEqual([]);
    const counted = options.filter(({ option }) => /<(Nd|N|MiB|seconds|days|hours)>/.test(option.flags)).map((o) => o.where);
    expect(counted).toEqual([]);
  });

  it("writes every time as <time> and every size as <size>", () => {
    const times = options.filter(({ option }) => /--(since|until)$/.test(option.long ?? ""));
    expect(times.length).toBeGreaterThan(0);
    for (const t of times) expect(t.option.flags, t.where).toMatch(/<time>$/);
    const sizes = options.filter(({ option }) => /(size|bytes|memory|quota)$/.test(option.long ?? ""));
    expect(sizes.length).toBeGreaterThanOrEqual(3);
    for (const s of sizes) expect(s.option.flags, s.where).toMatch(/<size>$/);
  });

  it("parses them with the one shared parser", () => {
    expect(parseDuration("1h30m")).toBe(5_400_000);
    expect(parseDuration("7d")).toBe(7 * 86_400_000);
    expect(parseDays("90d")).toBe(90);
    expect(parseDays("48h")).toBe(2);
    expect(() => parseDays("36h")).toThrow(InvalidArgumentError);
    expect(() => parseDays("0d")).toThrow(/not a whole number of days/);
    expect(parseHours("30d")).toBe(720);
    expect(() => parseHours("90m")).toThrow(/not a whole number of hours/);
    expect(parseMiB("64")).toBe(64);
    expect(parseMiB("1GiB")).toBe(1024);
    expect(() => parseMiB("1MB")).toThrow(/whole number of MiB/);
    expect(parseTimeMs("2026-11-23T10:00:00Z")).toBe(Date.parse("2026-11-23T10:00:00Z"));
    expect(parseTimeMs("24h", 100_000_000)).toBe(100_000_000 - 86_400_000);
    expect(parseTimeMs("7d", 1e12)).toBe(1e12 - 7 * 86_400_000);
    expect(() => parseTimeMs("yesterday")).toThrow(/is not a time \(expected RFC 3339/);
  });
});

describe("release list, cert list and the audit help, as a user runs them", () => {
  let server: TestServer;
  let api: OrchestratorClients;
  let work: string;
  const autonomy = (...args: string[]) => runProgram(AUTONOMY_BIN, ["--orchestrator-url", server.url, ...args], { XDG_CONFIG_HOME: path.join(work, "config") });

  beforeAll(async () => {
    work = mkdtempSync(path.join(os.tmpdir(), "ao-conv-"));
    server = await startTestServer("sqlite");
    api = createOrchestratorClients({ baseUrl: server.url });
    for (const [nodeId, channel] of [["a-1", "alpha"], ["a-2", "alpha"], ["b-1", "beta"]]) await api.nodes.enrollNode({ nodeId, channel });
    const publish = (releaseId: string, channel: string, staged = false) =>
      api.releases.publishRelease({ release: { releaseId, channel, version: releaseId, staged, artifacts: [{ name: "app", digest: DIGEST }] } });
    await publish("alpha-1", "alpha");
    await publish("beta-1", "beta");
    await api.releases.upsertAck({ releaseId: "alpha-1", nodeId: "a-1", state: "healthy", reportedReleaseId: "alpha-1" });
  });
  afterAll(async () => {
    api.close();
    await server.stop();
    rmSync(work, { recursive: true, force: true });
  });

  it("release list: every channel's releases as a table, one channel by name, and the same as JSON and YAML", async () => {
    const all = await autonomy("release", "list");
    expect(all.code).toBe(0);
    expect(all.stdout).toMatch(/^CHANNEL\s+RELEASE\s+VERSION\s+PUBLISHED\s+STAGED\s+LATEST\s+DESIRED\s+RUNNING\s+ACKS\s+PLANS\n/);
    expect(all.stdout).toMatch(/\nalpha\s+alpha-1\s+alpha-1\s+\S+\s+no\s+yes\s+2\/2\s+1\/2\s+1 healthy\s+-\n/);
    expect(all.stdout).toMatch(/\nbeta\s+beta-1\s/);
    const one = await autonomy("release", "list", "beta");
    expect(one.stdout).not.toMatch(/alpha/);
    const json = JSON.parse((await autonomy("release", "list", "-o", "json")).stdout);
    expect(json.channels.map((c: { channel: string }) => c.channel)).toEqual(["alpha", "beta"]);
    expect(json.channels[0]).toMatchObject({ channel: "alpha", channel_nodes: 2, releases: [{ release: { release_id: "alpha-1" }, latest: true, desired_by: 2 }] });
    const yaml = await autonomy("-o", "yaml", "release", "list", "alpha");
    expect(yaml.stdout).toMatch(/^channels:\n {2}- channel: alpha\n/);
    expect((await autonomy("release", "list", "nowhere")).stdout).toBe("no release on channel nowhere\n");
  });

  it("cert list -o json is JSON; validities are durations of whole days", async () => {
    const ca = path.join(work, "ca");
    expect((await autonomy("cert", "init-ca", "--ca-dir", ca)).code).toBe(0);
    expect((await autonomy("cert", "issue", "--ca-dir", ca, "--profile", "node", "--name", "n-1", "--valid-for", "20d", "--force")).code).toBe(0);
    expect((await autonomy("cert", "issue", "--ca-dir", ca, "--profile", "node", "--name", "n-2", "--days", "400", "--force")).code).toBe(0);
    const bad = await autonomy("cert", "issue", "--ca-dir", ca, "--profile", "node", "--name", "n-3", "--valid-for", "36h", "--force");
    expect(bad).toMatchObject({ code: 2 });
    expect(bad.stderr).toMatch(/"36h" is not a whole number of days/);
    const list = JSON.parse((await autonomy("cert", "list", "--ca-dir", ca, "-o", "json")).stdout);
    expect(list.count).toBe(2);
    expect(list.certificates.map((c: { name: string; state: string }) => [c.name, c.state])).toEqual([
      ["n-1", "valid"],
      ["n-2", "valid"],
    ]);
    expect(Object.keys(list.certificates[0])).toEqual(["serial", "profile", "name", "not_before", "not_after", "state", "cert_file", "key_file"]);
    const soon = JSON.parse((await autonomy("cert", "list", "--ca-dir", ca, "--expiring-within", "30d", "-o", "json")).stdout);
    expect(soon.certificates.map((c: { name: string }) => c.name)).toEqual(["n-1"]);
    expect((await autonomy("cert", "list", "--ca-dir", ca, "--expiring-within", "30d")).stdout).toMatch(/n-1\s+\S+\s+expiring\n$/);
  });

  it("audit: durations and times as everywhere, and help naming what records carry", async () => {
    const help = (await autonomy("audit", "query", "--help")).stdout.replace(/\s+/g, " ");
    expect(help).toContain(AUDIT_CATEGORIES.join(", "));
    expect(help).toMatch(/api \(a call\), controller \(the rollout controller\), server \(the server itself: bootstrap, checkpoints\), retention \(.*\) or many \(/);
    // Every source a record is written with in the code is one the help names.
    const written = new Set(
      readdirSync("src", { recursive: true, encoding: "utf8" })
        .filter((f) => f.endsWith(".ts"))
        .flatMap((f) => [...readFileSync(path.join("src", f), "utf8").matchAll(/\bsource: "([a-z_]+)"/g)].map((m) => m[1])),
    );
    expect(written.size).toBeGreaterThanOrEqual(4);
    for (const source of written) expect(Object.keys(AUDIT_SOURCES), source).toContain(source);
    for (const source of written) expect(help).toContain(`${source} (`);
    expect(help).toContain("--since <time>");
    const prune = await autonomy("audit", "prune", "--older-than", "90", "--reason", "x");
    expect(prune.code).toBe(2);
    expect(prune.stderr).toMatch(/"90" is not a duration/);
    const ok = await autonomy("audit", "prune", "--older-than", "2160h", "--reason", "quarterly", "-o", "json");
    expect(ok.code).toBe(0);
    expect(JSON.parse(ok.stdout)).toMatchObject({ removed: 0 });
    const yaml = await autonomy("audit", "query", "--since", "1h", "--category", "system", "-o", "yaml");
    expect(yaml.stdout).toMatch(/^records:\n/);
    expect((await autonomy("audit", "query", "--since", "noon")).stderr).toMatch(/"noon" is not a time/);
    const ttl = await autonomy("rbac", "token", "create", "--principal", "operator:ci", "--ttl", "90m");
    expect(ttl).toMatchObject({ code: 2 });
    expect(ttl.stderr).toMatch(/"90m" is not a whole number of hours/);
  });
});
