import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { create } from "@bufbuild/protobuf";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { WorkloadCommandSchema, type ReplicaReport, type WorkloadCommand } from "../gen/autonomy/v1/workloads_pb.js";
import { isAlive, listProcesses } from "../src/agent/workloads/process.js";
import { UsageSampler } from "../src/agent/workloads/usage.js";
import { parseMillicores, parseSize } from "../src/cli/shared/parse.js";
import { EDGECTL_BIN, runProgram } from "./helpers/child.js";
import { FakeOrchestrator } from "./helpers/fake-agent-server.js";
import { eventually } from "./helpers/wait.js";

// Real edgectl processes and real replicas: seconds each on a busy machine.
vi.setConfig({ testTimeout: 120_000 });

/** A replica that notes each start and SIGTERM in $STARTS and counts in $HB while it runs. */
const REPLICA = `
echo "start $AUTONOMY_GENERATION $$" >> "$STARTS"
trap 'echo "term $AUTONOMY_GENERATION $$" >> "$STARTS"; exit 0' TERM
i=0
while :; do i=$((i+1)); echo "$AUTONOMY_GENERATION $$ $i" > "$HB.tmp"; mv "$HB.tmp" "$HB"; sleep 0.05; done
`;

interface Agent {
  proc: ChildProcess;
  stateDir: string;
  output: () => string;
  exited: Promise<number | null>;
}

describe("edgectl run runs the replicas the control plane sends", () => {
  let work: string;
  let fake: FakeOrchestrator;
  const agents: Agent[] = [];

  const startAgent = (name: string, url: string, extra: string[] = []): Agent => {
    const stateDir = path.join(work, name);
    const proc = spawn(
      process.execPath,
      [EDGECTL_BIN, "--state-dir", stateDir, "--orchestrator-url", url, "run", "--node-id", name, "--channel", "wl",
        "--heartbeat-interval", "300ms", "--poll-interval", "1s", "--log-format", "json", ...extra],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    let out = "";
    proc.stdout!.on("data", (c: Buffer) => (out += c.toString()));
    proc.stderr!.on("data", (c: Buffer) => (out += c.toString()));
    const exited = new Promise<number | null>((resolve) => proc.once("exit", (code) => resolve(code)));
    const agent = { proc, stateDir, output: () => out, exited };
    agents.push(agent);
    return agent;
  };

  const files = (replicaId: string) => ({ HB: path.join(work, `${replicaId}.hb`), STARTS: path.join(work, `${replicaId}.starts`) });
  const spec = (service: string, index: number, generation: bigint, over: Record<string, unknown> = {}) => ({
    replicaId: `${service}-${index}`,
    service,
    index,
    generation,
    command: "/bin/sh",
    args: ["-c", REPLICA],
    env: files(`${service}-${index}`),
    restartPolicy: "always",
    ...over,
  });
  const launch = (commandId: string, s: ReturnType<typeof spec>): WorkloadCommand => create(WorkloadCommandSchema, { commandId, action: { case: "launch", value: s } });
  const starts = (replicaId: string): string[] => {
    const f = files(replicaId).STARTS;
    return existsSync(f) ? readFileSync(f, "utf8").trim().split("\n") : [];
  };
  /** The replica's heartbeat: generation, pid and count, once it has written one. */
  const beat = (replicaId: string): { generation: number; pid: number; count: number } | undefined => {
    try {
      const [g, p, c] = readFileSync(files(replicaId).HB, "utf8").trim().split(" ").map(Number);
      return { generation: g, pid: p, count: c };
    } catch {
      return undefined;
    }
  };
  /** Waits until the replica's heartbeat moves on: it runs now. */
  const beating = async (replicaId: string) => {
    const first = await waitFor(`a heartbeat of ${replicaId}`, () => beat(replicaId));
    await eventually(async () => expect(beat(replicaId)!.count).toBeGreaterThan(first.count + 2));
    return beat(replicaId)!;
  };
  const waitFor = async <T>(what: string, get: () => T | undefined): Promise<T> => {
    let v: T | undefined;
    await eventually(async () => {
      v = get();
      expect(v, what).toBeDefined();
    });
    return v!;
  };
  const reported = (replicaId: string): ReplicaReport | undefined => fake.latest()?.replicas.find((r) => r.replicaId === replicaId);

  beforeAll(async () => {
    work = mkdtempSync(path.join(os.tmpdir(), "ao-wl-agent-"));
    fake = new FakeOrchestrator();
    await fake.start();
  });
  afterAll(async () => {
    for (const a of agents) if (a.proc.exitCode === null) a.proc.kill("SIGKILL");
    await fake.stop();
    rmSync(work, { recursive: true, force: true });
  });

  it("launches, answers, updates and stops replicas from the stream and the report answers; keeps them through an outage; stops them on SIGTERM", async () => {
    const agent = startAgent("wl-1", fake.url, ["--capacity-cpu", "1500m", "--capacity-memory", "512Mi"]);
    await eventually(async () => expect(fake.openStreams).toBe(1));
    await eventually(async () => expect(fake.latest()).toBeDefined());
    expect(fake.latest()!.capacity).toMatchObject({ cpuMillis: 1500n, memoryBytes: 512n * 1024n * 1024n });
    expect(fake.latest()!.nodeId).toBe("wl-1");

    // A launch on the stream starts a real process; the report says running and answers the command.
    fake.push(launch("c-web-1", spec("web", 0, 1n)));
    const web = await beating("web-0");
    expect(web.generation).toBe(1);
    await eventually(async () => {
      expect(fake.acks.get("c-web-1")).toMatchObject({ ok: true });
      expect(reported("web-0")).toMatchObject({ state: "running", generation: 1n, restarts: 0, service: "web", index: 0 });
      expect(reported("web-0")!.usage!.memoryBytes).toBeGreaterThan(0n);
    });
    const usage = fake.latest()!.usage!;
    expect(usage.memoryBytes).toBeGreaterThanOrEqual(reported("web-0")!.usage!.memoryBytes);
    const firstAnswer = fake.acks.get("c-web-1")!.message;

    // The same command id again, on the stream and in an answer, starts nothing; a new id for the
    // generation that runs is answered as such.
    const acksBefore = fake.reports.reduce((n, r) => n + r.acks.filter((a) => a.commandId === "c-web-1").length, 0);
    fake.push(launch("c-web-1", spec("web", 0, 1n)));
    fake.offer(launch("c-web-1b", spec("web", 0, 1n)));
    await eventually(async () => {
      expect(fake.acks.get("c-web-1b")).toMatchObject({ ok: true, message: "web-0 already runs generation 1 (running)" });
      expect(fake.reports.reduce((n, r) => n + r.acks.filter((a) => a.commandId === "c-web-1").length, 0)).toBeGreaterThan(acksBefore);
    });
    expect(fake.acks.get("c-web-1")!.message).toBe(firstAnswer);
    expect(starts("web-0")).toEqual([`start 1 ${web.pid}`]);
    expect(beat("web-0")!.pid).toBe(web.pid);

    // A launch that only the report answer carries runs too.
    fake.offer(launch("c-api-1", spec("api", 0, 1n)));
    const api = await beating("api-0");
    await eventually(async () => {
      expect(fake.acks.get("c-api-1")).toMatchObject({ ok: true });
      expect(reported("api-0")).toMatchObject({ state: "running", generation: 1n });
    });
    expect(starts("api-0")).toEqual([`start 1 ${api.pid}`]);

    // Bad commands are answered ok=false naming the field, and start nothing.
    fake.push(launch("c-bad-1", spec("bad", 0, 1n, { command: "" })));
    fake.offer(launch("c-bad-2", spec("bad", 1, 1n, { restartPolicy: "sometimes" })));
    fake.push(create(WorkloadCommandSchema, { commandId: "c-bad-3", action: { case: "stop", value: { replicaId: "../x" } } }));
    fake.push(create(WorkloadCommandSchema, { commandId: "c-bad-4" }));
    await eventually(async () => {
      expect(fake.acks.get("c-bad-1")).toMatchObject({ ok: false, message: "launch.command: must not be empty" });
      expect(fake.acks.get("c-bad-2")).toMatchObject({ ok: false, message: "launch.restart_policy: must be one of always, on-failure, never" });
      expect(fake.acks.get("c-bad-3")).toMatchObject({ ok: false, message: "stop.replica_id: is not a replica id" });
      expect(fake.acks.get("c-bad-4")).toMatchObject({ ok: false, message: "action: must be one of launch, update or stop" });
    });
    expect(reported("bad-0")).toBeUndefined();
    expect(reported("bad-1")).toBeUndefined();

    // An update restarts the replica with its new generation; the old process got SIGTERM first.
    fake.push(create(WorkloadCommandSchema, { commandId: "c-web-2", action: { case: "update", value: spec("web", 0, 2n) } }));
    await eventually(async () => expect(beat("web-0")?.generation).toBe(2));
    const web2 = await beating("web-0");
    expect(web2.pid).not.toBe(web.pid);
    expect(isAlive(web.pid)).toBe(false);
    expect(starts("web-0")).toEqual([`start 1 ${web.pid}`, `term 1 ${web.pid}`, `start 2 ${web2.pid}`]);
    await eventually(async () => {
      expect(fake.acks.get("c-web-2")).toMatchObject({ ok: true });
      expect(reported("web-0")).toMatchObject({ state: "running", generation: 2n, restarts: 0 });
    });

    // A stop ends the process. Its answer rides on reports that fail until one succeeds.
    fake.failReports = 3;
    fake.push(create(WorkloadCommandSchema, { commandId: "c-api-stop", action: { case: "stop", value: { replicaId: "api-0", reason: "scaled down" } } }));
    await eventually(async () => {
      expect(fake.acks.get("c-api-stop")).toMatchObject({ ok: true });
      expect(reported("api-0")).toMatchObject({ state: "stopped" });
    });
    expect(fake.failed.filter((r) => r.acks.some((a) => a.commandId === "c-api-stop")).length).toBeGreaterThan(0);
    expect(isAlive(api.pid)).toBe(false);
    expect(starts("api-0")).toEqual([`start 1 ${api.pid}`, `term 1 ${api.pid}`]);

    // The control plane goes down: the replica keeps running, and the agent reports it on reconnect
    // without restarting it.
    await fake.stop();
    const down = beat("web-0")!;
    await eventually(async () => expect(beat("web-0")!.count).toBeGreaterThan(down.count + 20));
    const reportsBefore = fake.reports.length;
    await fake.start();
    await eventually(async () => {
      expect(fake.reports.length).toBeGreaterThan(reportsBefore);
      expect(reported("web-0")).toMatchObject({ state: "running", generation: 2n, restarts: 0 });
    });
    expect(beat("web-0")!.pid).toBe(web2.pid);
    expect(starts("web-0")).toHaveLength(3);

    // edgectl status shows the replicas and the capacity.
    await eventually(async () => {
      const json = await runProgram(EDGECTL_BIN, ["--state-dir", agent.stateDir, "status", "-o", "json"]);
      expect(json.code).toBe(0);
      const doc = JSON.parse(json.stdout) as { workloads: { capacity: unknown; replicas: { replica_id: string; state: string; restarts: number; generation: number }[] } };
      expect(doc.workloads.capacity).toEqual({ cpu_millis: 1500, memory_bytes: 536870912 });
      expect(doc.workloads.replicas.map((r) => [r.replica_id, r.state, r.generation, r.restarts])).toEqual([
        ["api-0", "stopped", 1, 0],
        ["web-0", "running", 2, 0],
      ]);
    });
    const text = await runProgram(EDGECTL_BIN, ["--state-dir", agent.stateDir, "status"]);
    expect(text.stdout).toMatch(/capacity +1500m cpu, 512MiB memory/);
    expect(text.stdout).toMatch(/web-0 +running, generation 2, 0 restarts/);
    expect(text.stdout).toMatch(/api-0 +stopped, generation 1, 0 restarts: stopped by command c-api-stop/);

    // SIGTERM to the agent stops its replica before it exits, and its last report says so.
    agent.proc.kill("SIGTERM");
    expect(await agent.exited).toBe(0);
    expect(isAlive(web2.pid)).toBe(false);
    expect(starts("web-0").at(-1)).toBe(`term 2 ${web2.pid}`);
    expect(reported("web-0")).toMatchObject({ state: "stopped" });
    expect(reported("web-0")!.reason).toMatch(/^the agent stopped/);
    expect(agent.output()).not.toMatch(/"level":"?(50|error)/);
  });

  it("keeps working with an orchestrator that has no ReportWorkloads, asking again only rarely, with one log line", async () => {
    const old = new FakeOrchestrator();
    old.reportMode = "unimplemented";
    await old.start();
    try {
      const agent = startAgent("wl-old", old.url);
      await eventually(async () => expect(old.reportCalls).toBe(1));
      const beats = old.heartbeats;
      await eventually(async () => expect(old.heartbeats).toBeGreaterThan(beats + 5));
      expect(old.reportCalls).toBe(1);
      expect(agent.output().match(/does not take workload reports/g)).toHaveLength(1);
      // Without flags the capacity is the machine's.
      await eventually(async () => {
        const json = await runProgram(EDGECTL_BIN, ["--state-dir", agent.stateDir, "status", "-o", "json"]);
        const doc = JSON.parse(json.stdout) as { workloads: { capacity: unknown; reports: { state: string } } };
        expect(doc.workloads.capacity).toEqual({ cpu_millis: os.cpus().length * 1000, memory_bytes: os.totalmem() });
        expect(doc.workloads.reports.state).toMatch(/^unsupported/);
      });
      agent.proc.kill("SIGTERM");
      expect(await agent.exited).toBe(0);
    } finally {
      await old.stop();
    }
  });

  it.each([
    ["--capacity-cpu", "2x", /option '--capacity-cpu <cpu>' argument '2x' is invalid.*not an amount of CPU/],
    ["--capacity-cpu", "0", /option '--capacity-cpu <cpu>' argument '0' is invalid.*at least 1m/],
    ["--capacity-cpu", "0.0001", /option '--capacity-cpu <cpu>' argument '0.0001' is invalid/],
    ["--capacity-memory", "lots", /option '--capacity-memory <size>' argument 'lots' is invalid.*not a size/],
    ["--capacity-memory", "0", /option '--capacity-memory <size>' argument '0' is invalid.*at least 1 byte/],
  ])("%s %s is a usage error (exit 2) naming the flag", async (flag, value, message) => {
    const r = await runProgram(EDGECTL_BIN, ["--state-dir", path.join(work, "usage"), "--orchestrator-url", fake.url, "run", "--node-id", "u", "--channel", "c", flag, value]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(message);
  });

  it("parses capacities in cores, millicores and sizes", async () => {
    expect([parseMillicores("2"), parseMillicores("0.5"), parseMillicores("1.1"), parseMillicores("1500m")]).toEqual([2000, 500, 1100, 1500]);
    expect([parseSize("512Mi"), parseSize("2Gi"), parseSize("4GiB"), parseSize("1000")]).toEqual([512 * 1024 ** 2, 2 * 1024 ** 3, 4 * 1024 ** 3, 1000]);
    const help = await runProgram(EDGECTL_BIN, ["run", "--help"]);
    expect(help.stdout).toMatch(/--capacity-cpu <cpu>/);
    expect(help.stdout).toMatch(/--capacity-memory <size>/);
    // The notes are wrapped to the terminal: compare them as one line.
    expect(help.stdout.replace(/\s+/g, " ")).toMatch(/SIGTERM or SIGINT to the agent stops them/);
  });
});

describe("the usage of replicas, from /proc", () => {
  it("sums CPU and resident memory over a replica's process group, and leaves out processes that ended", async () => {
    // A group of two busy processes, as a replica that started a child would be.
    const busy = spawn("/bin/sh", ["-c", "(while :; do :; done) & while :; do :; done"], { detached: true, stdio: "ignore" });
    const pgid = busy.pid!;
    try {
      const sampler = new UsageSampler();
      const groups = new Map([["busy-0", pgid]]);
      const first = sampler.sample(groups);
      expect(first.replicas.get("busy-0")!.cpuMillis).toBe(0);
      expect(first.replicas.get("busy-0")!.memoryBytes).toBeGreaterThan(0);
      let later = first;
      await eventually(async () => {
        later = sampler.sample(groups);
        expect(later.replicas.get("busy-0")!.cpuMillis).toBeGreaterThan(50);
      });
      expect(later.total).toEqual(later.replicas.get("busy-0"));
      const members = listProcesses().filter((p) => p.pgid === pgid);
      expect(members).toHaveLength(2);
    } finally {
      process.kill(-pgid, "SIGKILL");
    }
    await eventually(async () => expect(listProcesses().filter((p) => p.pgid === pgid)).toEqual([]));
    const gone = new UsageSampler().sample(new Map([["busy-0", pgid]]));
    expect(gone.total).toEqual({ cpuMillis: 0, memoryBytes: 0 });
  });
});
