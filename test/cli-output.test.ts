import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import YAML from "yaml";
import { createOrchestratorClients, type OrchestratorClients } from "../clients/index.js";
import { escapeControl } from "../src/cli/shared/output.js";
import { AUTONOMY_BIN, EDGECTL_BIN, ORCHESTRATOR_BIN, runProgram } from "./helpers/child.js";
import { startTestServer, type TestServer } from "./helpers/server.js";

// Every case runs the built programs, a second or more each on a busy machine.
vi.setConfig({ testTimeout: 120_000 });

const VERSION = JSON.parse(readFileSync("package.json", "utf8")).version as string;
const DIGEST = `sha256:${"cd".repeat(32)}`;

describe("output, help and conventions of the CLIs", () => {
  let server: TestServer;
  let api: OrchestratorClients;
  let work: string;
  const autonomy = (args: string[], env: NodeJS.ProcessEnv = {}) =>
    runProgram(AUTONOMY_BIN, ["--orchestrator-url", server.url, ...args], { XDG_CONFIG_HOME: path.join(work, "config"), ...env });

  beforeAll(async () => {
    work = mkdtempSync(path.join(os.tmpdir(), "ao-out-"));
    server = await startTestServer("sqlite");
    api = createOrchestratorClients({ baseUrl: server.url });
    await api.releases.publishRelease({ release: { releaseId: "r-esc", channel: "esc", version: "1", artifacts: [{ name: "app", digest: DIGEST }] } });
    // A node that puts a carriage return and ESC sequences in its ack message (ids, labels and versions refuse them).
    await api.nodes.enrollNode({ nodeId: "evil", channel: "esc", labels: { site: "lab" }, agentVersion: "1.0" });
    await api.releases.upsertAck({
      releaseId: "r-esc",
      nodeId: "evil",
      state: "failed",
      message: "disk full\r\u001b[2Kgood-node  healthy  r-esc\n",
    });
  });
  afterAll(async () => {
    api.close();
    await server.stop();
    rmSync(work, { recursive: true, force: true });
  });

  it("escapes control characters from the server in text output", async () => {
    const acks = await autonomy(["release", "acks", "r-esc"]);
    expect(acks.code).toBe(0);
    expect(acks.stdout).not.toMatch(/[\u0000-\u0009\u000b-\u001f\u007f]/);
    expect(acks.stdout).toContain("disk full\\r\\x1b[2Kgood-node  healthy  r-esc\\n");
    expect(acks.stdout.split("\n").filter((l) => l.includes("healthy"))).toHaveLength(1);
    const node = await autonomy(["node", "describe", "evil"]);
    expect(node.stdout).toMatch(/agent\s+1\.0/);
    const list = await autonomy(["node", "list"]);
    expect(list.stdout).not.toContain("\u001b");
    // JSON keeps the data, escaped the JSON way.
    const json = JSON.parse((await autonomy(["release", "acks", "r-esc", "-o", "json"])).stdout);
    expect(json.acks[0].message).toBe("disk full\r\u001b[2Kgood-node  healthy  r-esc\n");
  });

  it.each([
    ["\u001b[31m", "\\x1b[31m"],
    ["a\rb\tc\nd", "a\\rb\\tc\\nd"],
    ["\u009b2J", "\\x9b2J"],
    ["\u2028", "\\u2028"],
    ["plain text, ünïcode", "plain text, ünïcode"],
  ])("escapeControl(%j) is %j", (input, output) => {
    expect(escapeControl(input)).toBe(output);
  });

  it("-o json, -o yaml and --output json give documents, before or after the command", async () => {
    const a = JSON.parse((await autonomy(["-o", "json", "node", "describe", "evil"])).stdout);
    const b = JSON.parse((await autonomy(["node", "describe", "evil", "--output", "json"])).stdout);
    expect(a).toEqual(b);
    expect(a.node.node_id).toBe("evil");
    const y = YAML.parse((await autonomy(["release", "latest", "--channel", "esc", "-o", "yaml"])).stdout);
    expect(y.release.release_id).toBe("r-esc");
  });

  it("the older --node-id and --release-id spellings still work", async () => {
    expect(JSON.parse((await autonomy(["node", "describe", "--node-id", "evil", "-o", "json"])).stdout).node.node_id).toBe("evil");
    expect((await autonomy(["release", "acks", "--release-id", "r-esc"])).code).toBe(0);
    const both = await autonomy(["node", "describe", "evil", "--node-id", "other"]);
    expect(both).toMatchObject({ code: 2 });
    expect(both.stderr).toContain('two node ids given ("evil" and "other")');
    const none = await autonomy(["node", "describe"]);
    expect(none).toMatchObject({ code: 2, stderr: "autonomy: error: missing the node id: autonomy node describe NODE_ID\n" });
  });

  it("--version on all three programs; version prints client and server versions", async () => {
    for (const bin of [AUTONOMY_BIN, EDGECTL_BIN, ORCHESTRATOR_BIN]) {
      expect(await runProgram(bin, ["--version"])).toMatchObject({ code: 0, stdout: `${VERSION}\n` });
    }
    const v = await autonomy(["version"]);
    expect(v.code).toBe(0);
    expect(v.stdout).toMatch(new RegExp(`^autonomy ${VERSION.replace(/\./g, "\\.")} \\(build `));
    expect(v.stdout).toContain(`server: ${VERSION} at ${server.url}`);
    const j = JSON.parse((await autonomy(["version", "-o", "json"])).stdout);
    expect(j).toMatchObject({ client: { program: "autonomy", version: VERSION, tier: "self-hosted" }, server: { url: server.url, version: VERSION } });
    const e = await runProgram(EDGECTL_BIN, ["--orchestrator-url", server.url, "version"]);
    expect(e.stdout).toContain(`server: ${VERSION} at ${server.url}`);
    const down = await runProgram(EDGECTL_BIN, ["--orchestrator-url", "http://127.0.0.1:1", "version"]);
    expect(down.code).toBe(0);
    expect(down.stdout).toContain("server: not reachable (cannot reach the orchestrator at http://127.0.0.1:1 (from --orchestrator-url): connection refused");
  });

  it("errors are JSON documents in JSON mode", async () => {
    const r = await autonomy(["node", "describe", "nobody", "-o", "json"]);
    expect(r.code).toBe(1);
    expect(JSON.parse(r.stderr)).toEqual({ error: { code: "not_found", message: expect.stringContaining('node "nobody" is not enrolled') } });
  });

  it("the parser's own errors are JSON or YAML documents too with -o json|yaml, wherever -o stands", async () => {
    const flag = await autonomy(["-o", "json", "fleet", "status", "--chanel", "x"]);
    expect(flag.code).toBe(2);
    expect(JSON.parse(flag.stderr)).toEqual({ error: { code: "usage", message: "unknown option '--chanel' (Did you mean --channel?)" } });
    const required = await autonomy(["rollout", "plan", "create", "--output=json"]);
    expect(required.code).toBe(2);
    expect(JSON.parse(required.stderr)).toEqual({ error: { code: "usage", message: "required option '--file <path>' not specified" } });
    const yaml = await autonomy(["fleet", "stauts", "-o", "yaml"]);
    expect(yaml.code).toBe(2);
    expect(YAML.parse(yaml.stderr)).toEqual({ error: { code: "usage", message: expect.stringContaining("unknown command 'stauts'") } });
    const edge = await runProgram(EDGECTL_BIN, ["status", "-o", "json", "--bogus"]);
    expect(edge.code).toBe(2);
    expect(JSON.parse(edge.stderr)).toEqual({ error: { code: "usage", message: "unknown option '--bogus'" } });
    // Text mode keeps the hint to the command's help.
    expect((await autonomy(["fleet", "status", "--chanel", "x"])).stderr).toContain("(run `autonomy fleet status --help` for usage)");
  });

  it("an unknown subcommand in any group is named, with the closest commands suggested, exit 2", async () => {
    const cases: [string, string[], string][] = [
      [AUTONOMY_BIN, ["audit", "list"], "unknown command 'list' (Did you mean query?)"],
      [AUTONOMY_BIN, ["node", "lsit"], "unknown command 'lsit' (Did you mean list?)"],
      [AUTONOMY_BIN, ["rollout", "plan", "lst"], "unknown command 'lst' (Did you mean list?)"],
      [AUTONOMY_BIN, ["rollout", "lst"], "unknown command 'lst' (autonomy rollout has: status, plan,"],
      [EDGECTL_BIN, ["statsu"], "unknown command 'statsu' (Did you mean status?)"],
      [EDGECTL_BIN, ["spool", "lst"], "unknown command 'lst' (edgectl spool has: status, flush)"],
    ];
    for (const [bin, args, message] of cases) {
      const r = await runProgram(bin, args);
      expect({ args, code: r.code }).toEqual({ args, code: 2 });
      expect(r.stderr).toContain(message);
    }
    const json = await autonomy(["audit", "list", "-o", "json"]);
    expect(json.code).toBe(2);
    expect(JSON.parse(json.stderr)).toEqual({ error: { code: "usage", message: "unknown command 'list' (Did you mean query?)" } });
  });

  it("usage errors exit 2: unknown option, bad duration, bad choice, missing required option, bad --before", async () => {
    for (const args of [
      ["node", "list", "--no-such"],
      ["fleet", "status", "--stale-threshold", "10"],
      ["-o", "xml", "node", "list"],
      ["release", "publish"],
      ["logs", "--before", "yesterday"],
      ["help", "rollout", "nosuch"],
      ["--token-file", "/nonexistent/token", "node", "list"],
      ["--tls-cert-file", "/nonexistent/cert.pem", "node", "list"],
    ]) {
      const r = await autonomy(args);
      expect({ args, code: r.code }).toEqual({ args, code: 2 });
    }
    const d = await autonomy(["fleet", "status", "--stale-threshold", "10"]);
    expect(d.stderr).toContain('"10" is not a duration (a unit is needed: 10s, 10m, ...)');
  });

  it("durations are written one way: --stale-threshold 10m, --threshold 2h, --threshold-seconds kept as an alias", async () => {
    expect((await autonomy(["fleet", "status", "--stale-threshold", "10m"])).code).toBe(0);
    expect((await autonomy(["rollout", "stuck", "--threshold", "2h"])).stdout).toBe("no stuck plans\n");
    expect((await autonomy(["rollout", "stuck", "--threshold-seconds", "7200"])).stdout).toBe("no stuck plans\n");
    expect((await autonomy(["rollout", "stuck", "--help"])).stdout).not.toContain("--threshold-seconds");
  });

  it("help: wrapped to the terminal, required options marked, global options in every command, help at any depth", async () => {
    const help = await runProgram(AUTONOMY_BIN, ["help", "rollout", "plan"], { COLUMNS: "90" });
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/^Usage: autonomy rollout plan/);
    for (const line of help.stdout.split("\n")) expect(line.length).toBeLessThanOrEqual(90);
    const create = (await runProgram(AUTONOMY_BIN, ["rollout", "plan", "create", "--help"], { COLUMNS: "200" })).stdout;
    expect(create).toMatch(/--file <path> \(required\)/);
    expect(create).toContain("Global Options:");
    expect(create).toContain("--orchestrator-url <url>");
    // No sentence is broken by a hard line break at a wide terminal.
    const fleet = (await runProgram(AUTONOMY_BIN, ["fleet", "status", "--help"], { COLUMNS: "300" })).stdout;
    expect(fleet).toContain("Up: seen within the stale threshold. Unknown: never seen since enrolment. Drift: the node does not report running its desired release.");
    const serve = (await runProgram(ORCHESTRATOR_BIN, ["serve", "--help"], { COLUMNS: "300" })).stdout;
    expect(serve).toContain("RBAC is enforced: every RPC needs a client certificate (mutual TLS) or a bearer token whose roles grant its permission. The first start");
    const edge = (await runProgram(EDGECTL_BIN, ["help", "enroll"])).stdout;
    expect(edge).toMatch(/--node-id <id> +this node's id \(required without --token/);
    expect(edge).toMatch(/--token <token> +a one-time enrolment token/);
    expect(edge).toContain("--state-dir <dir>");
  });

  it("no help of any command of edgectl breaks a sentence with a hard line break", async () => {
    const broken: string[] = [];
    let commands = 0;
    const visit = async (bin: string, names: string[]): Promise<void> => {
      const help = (await runProgram(bin, [...names, "--help"], { COLUMNS: "300" })).stdout;
      commands++;
      const lines = help.split("\n");
      // At 300 columns a paragraph wraps only past 200 characters; a shorter line that ends mid-sentence and
      // runs on in the next (unindented) line is a line break written into the text.
      lines.forEach((line, i) => {
        const next = lines[i + 1] ?? "";
        if (line && next && !/^\s/.test(line) && !/^\s/.test(next) && line.length < 200 && !/[.:)]$/.test(line)) {
          broken.push(`${path.basename(path.dirname(bin))} ${names.join(" ")}: ${line}`);
        }
      });
      const children = (help.split("\nCommands:\n")[1] ?? "").split("\n").flatMap((l) => /^ {2}([a-z][\w-]*)/.exec(l)?.[1] ?? []);
      await Promise.all(children.filter((c) => c !== "help").map((child) => visit(bin, [...names, child])));
    };
    await visit(EDGECTL_BIN, []);
    expect(commands).toBeGreaterThan(15);
    expect(broken).toEqual([]);
  });

  it("help piped into head ends quietly", async () => {
    for (const bin of [AUTONOMY_BIN, EDGECTL_BIN]) {
      // `true` has exited long before the program writes: every write meets a closed pipe.
      const r = spawnSync("bash", ["-c", `"${process.execPath}" "${bin}" help completion | true; echo "status \${PIPESTATUS[0]}"`], { encoding: "utf8" });
      expect(r.stderr).toBe("");
      expect(r.stdout).toBe("status 0\n");
    }
  });

  it("completion bash completes subcommands and options at any depth", async () => {
    const script = (await runProgram(AUTONOMY_BIN, ["completion", "bash"])).stdout;
    const file = path.join(work, "complete.bash");
    writeFileSync(file, script);
    const complete = (...words: string[]) =>
      execFileSync("bash", ["-c", `source ${file}; COMP_WORDS=(${words.map((w) => `"${w}"`).join(" ")}); COMP_CWORD=${words.length - 1}; _autonomy_complete; echo "\${COMPREPLY[@]}"`], {
        encoding: "utf8",
      }).trim();
    expect(complete("autonomy", "rol").split(" ").sort()).toEqual(["rollback", "rollout"]);
    expect(complete("autonomy", "rollout", "plan", "desc")).toBe("describe");
    expect(complete("autonomy", "rollout", "plan", "describe", "--wa")).toBe("--watch");
    expect(complete("autonomy", "--output", "json", "fleet", "st")).toBe("status");
    expect((await runProgram(EDGECTL_BIN, ["completion", "zsh"])).stdout).toContain("bashcompinit");
    expect((await runProgram(AUTONOMY_BIN, ["completion", "fish"])).code).toBe(2);
  });
});
