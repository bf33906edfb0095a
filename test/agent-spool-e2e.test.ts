import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { closeSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync, writeSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createOrchestratorClients, type OrchestratorClients } from "../clients/index.js";
import { EDGECTL_BIN, runProgram, startChildServer, type ChildServer } from "./helpers/child.js";
import { freePort } from "./helpers/net.js";
import { eventually, until } from "./helpers/wait.js";

/** How many events and agent kills; the soak script (npm run soak) raises them. */
const EVENTS = Number(process.env.SPOOL_E2E_EVENTS ?? 3000);
const KILLS = Number(process.env.SPOOL_E2E_KILLS ?? 10);
/** npm run soak: also checks the time delivery takes at a throttled rate. */
const SOAK = process.env.SPOOL_SOAK === "1";

interface Agent {
  proc: ChildProcess;
  output: () => string;
  exited: Promise<number | null>;
}

describe("edgectl's event spool against a real server", () => {
  let work: string;
  let port: number;
  let url: string;
  let server: ChildServer | undefined;
  let api: OrchestratorClients;
  const agents: Agent[] = [];

  const startServer = async () => {
    server = await startChildServer(["--data-dir", path.join(work, "server"), "--listen", `127.0.0.1:${port}`]);
    expect(server.url).toBe(url);
  };
  const edgectl = (stateDir: string, args: string[]) => runProgram(EDGECTL_BIN, ["--state-dir", stateDir, ...args], { AUTONOMY_ORCHESTRATOR_URL: url });
  /** `events send` of the given events (as JSON lines in a file). */
  const send = (stateDir: string, events: object[], extra: string[] = []) => {
    const file = path.join(work, `in-${process.hrtime.bigint()}.jsonl`);
    writeFileSync(file, events.map((e) => JSON.stringify(e)).join("\n") + "\n");
    return edgectl(stateDir, ["events", "send", "--file", file, ...extra]);
  };
  const events = (prefix: string, from: number, n: number, pad = 0) =>
    Array.from({ length: n }, (_, i) => ({ event_id: `${prefix}-${String(from + i).padStart(6, "0")}`, event_type: "spool-e2e", payload: { pad: "a".repeat(pad) } }));
  const startAgent = (stateDir: string, nodeId: string): Agent => {
    const proc = spawn(process.execPath, [EDGECTL_BIN, "--state-dir", stateDir, "run", "--node-id", nodeId, "--channel", "spool", "--heartbeat-interval", "1s", "--poll-interval", "1s"], {
      env: { ...process.env, AUTONOMY_ORCHESTRATOR_URL: url },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    proc.stdout!.on("data", (c: Buffer) => (out += c.toString()));
    proc.stderr!.on("data", (c: Buffer) => (out += c.toString()));
    const exited = new Promise<number | null>((resolve) => proc.once("exit", (code) => resolve(code)));
    const agent = { proc, output: () => out, exited };
    agents.push(agent);
    return agent;
  };
  const stopAgent = async (a: Agent, signal: NodeJS.Signals = "SIGTERM") => {
    if (a.proc.exitCode === null && a.proc.signalCode === null) a.proc.kill(signal);
    return a.exited;
  };
  /** Every stored event id of a node, in insertion order. */
  const stored = async (nodeId: string): Promise<string[]> => {
    const ids: string[] = [];
    let before = 0n;
    for (;;) {
      const page = await api.events.queryEvents({ nodeId, limit: 1000, before });
      ids.push(...page.events.map((e) => e.eventId));
      if (page.events.length < 1000) return ids.reverse();
      before = page.events[page.events.length - 1].seq;
    }
  };
  const status = async (stateDir: string) => JSON.parse((await edgectl(stateDir, ["spool", "status", "--output", "json"])).stdout);

  beforeAll(async () => {
    work = mkdtempSync(path.join(os.tmpdir(), "ao-spool-e2e-"));
    port = await freePort();
    url = `http://127.0.0.1:${port}`;
    await startServer();
    api = createOrchestratorClients({ baseUrl: url });
  });
  afterAll(async () => {
    for (const a of agents) await stopAgent(a, "SIGKILL");
    api.close();
    await server?.kill();
    rmSync(work, { recursive: true, force: true });
  });

  it("keeps events sent while the server is down, concurrent sends included, and stores each once, in order, when it is back", async () => {
    const stateDir = path.join(work, "outage");
    const agent = startAgent(stateDir, "n-outage");
    await until("the agent runs", async () => /enrolled; running/.test(agent.output()), 10_000);
    await server!.kill();
    // Rounds of three concurrent `events send`, one after another.
    const perSend = 100;
    const rounds = Math.ceil(EVENTS / (3 * perSend));
    for (let r = 0; r < rounds; r++) {
      const results = await Promise.all([0, 1, 2].map((k) => send(stateDir, events(`o${k}`, r * perSend, perSend), ["--node-id", "n-outage"])));
      expect(results.map((x) => [x.code, x.stdout])).toEqual([0, 1, 2].map(() => [0, `spooled ${perSend}\n`]));
    }
    const total = rounds * 3 * perSend;
    expect((await status(stateDir)).unsent_frames).toBe(total);
    await sleep(500);
    await startServer();
    let ids: string[] = [];
    await eventually(async () => {
      ids = await stored("n-outage");
      expect(ids.length, agent.output()).toBe(total);
    }, 120_000);
    expect(new Set(ids).size).toBe(total);
    // Each send's events in its order, and each round before the next.
    for (const k of [0, 1, 2]) {
      const mine = ids.filter((id) => id.startsWith(`o${k}-`));
      expect(mine).toEqual([...mine].sort());
    }
    const round = (id: string) => Math.floor(Number(id.slice(3)) / perSend);
    expect(ids.map(round)).toEqual([...ids.map(round)].sort((a, b) => a - b));
    const flush = await edgectl(stateDir, ["spool", "flush", "--timeout", "30s"]);
    expect([flush.code, flush.stdout]).toEqual([0, "flushed; the spool is empty (0 in the deadletter)\n"]);
    expect(await stopAgent(agent)).toBe(0);
  }, 240_000);

  it(`loses and repeats nothing reported spooled across ${KILLS} kill -9 of the agent while it ships`, async () => {
    const stateDir = path.join(work, "kills");
    const spooled: string[] = [];
    let appending = true;
    let n = 0;
    const appender = (async () => {
      while (appending) {
        const batch = events("k", n, 50);
        n += 50;
        const r = await send(stateDir, batch, ["--node-id", "n-kills"]);
        expect([r.code, r.stdout]).toEqual([0, "spooled 50\n"]);
        spooled.push(...batch.map((e) => e.event_id));
      }
    })();
    for (let i = 0; i < KILLS; i++) {
      const agent = startAgent(stateDir, "n-kills");
      await until(`agent start ${i + 1}`, async () => /spool: shipping/.test(agent.output()), 15_000);
      await sleep(150 + Math.floor(Math.random() * 400));
      agent.proc.kill("SIGKILL");
      await agent.exited;
    }
    appending = false;
    await appender;
    const last = startAgent(stateDir, "n-kills");
    await until("the last agent start", async () => /spool: shipping/.test(last.output()), 15_000);
    const flush = await edgectl(stateDir, ["spool", "flush", "--timeout", "60s"]);
    expect(flush.code).toBe(0);
    const ids = await stored("n-kills");
    expect(spooled.length).toBeGreaterThan(0);
    expect(ids).toEqual(spooled);
    expect(await stopAgent(last)).toBe(0);
  }, 240_000);

  it("cuts a torn tail, sets a flipped bit and a zero length prefix aside, and ships everything else", async () => {
    const stateDir = path.join(work, "damage");
    const sent = events("c", 0, 60, 40);
    expect((await send(stateDir, sent, ["--node-id", "n-damage"])).stdout).toBe("spooled 60\n");
    const spool = path.join(stateDir, "spool");
    const [segment] = readdirSync(spool).filter((f) => f.startsWith("seg-"));
    const file = path.join(spool, segment);
    const buf = readFileSync(file);
    const offsets: number[] = [];
    for (let p = 0; p < buf.length; p += 32 + buf.readUInt32BE(p + 4)) offsets.push(p);
    expect(offsets).toHaveLength(60);
    const patch = (at: number, bytes: Buffer) => {
      const fd = openSync(file, "r+");
      writeSync(fd, bytes, 0, bytes.length, at);
      closeSync(fd);
    };
    // A flipped bit inside c-20's "pad" string; a zero length prefix on c-40; the last frame torn.
    const padAt = buf.indexOf("aaaa", offsets[20]);
    patch(padAt, Buffer.from([buf[padAt] ^ 0x02]));
    patch(offsets[40] + 4, Buffer.alloc(4, 0));
    truncateSync(file, statSync(file).size - 10);

    const agent = startAgent(stateDir, "n-damage");
    const expected = sent.map((e) => e.event_id).filter((_, i) => ![20, 40, 59].includes(i));
    await eventually(async () => expect(await stored("n-damage")).toEqual(expected), 30_000);
    expect(agent.output().match(/cut a torn tail/g)).toHaveLength(1);
    const s = await status(stateDir);
    expect(s.counters).toMatchObject({ torn_tails_total: 1, corrupt_regions_total: 2, deadlettered_events_total: 2 });
    const list = JSON.parse((await edgectl(stateDir, ["deadletter", "list", "--output", "json"])).stdout);
    expect(list.entries.map((e: { event: { event_id: string } }) => e.event.event_id).sort()).toEqual(["c-000020", "c-000040"]);
    const inspect = await edgectl(stateDir, ["deadletter", "inspect", list.entries[0].id]);
    expect(JSON.parse(inspect.stdout)).toMatchObject({ code: "corrupt", source: { segment } });
    expect((await edgectl(stateDir, ["deadletter", "inspect", "ev-999"])).stderr).toBe('edgectl: error: no deadletter entry "ev-999"\n');

    // Retried, they are shipped after the rest; the agent goes on shipping new events.
    expect((await edgectl(stateDir, ["deadletter", "retry", "--all"])).stdout).toBe("retried 2\n");
    expect((await send(stateDir, events("c", 100, 1), ["--node-id", "n-damage"])).stdout).toBe("spooled 1\n");
    await eventually(async () => expect((await stored("n-damage")).length).toBe(60), 30_000);
    expect((await stored("n-damage")).slice(-1)).toEqual(["c-000100"]);
    expect((await edgectl(stateDir, ["deadletter", "list"])).stdout).toBe("ID  DEADLETTERED  CODE  ATTEMPTS  EVENT  REASON\n");
    expect(await stopAgent(agent)).toBe(0);
  }, 120_000);

  it("refuses events with exit status 4 when the spool's disk is full, ships what it holds, then takes events again", async () => {
    const mount = path.join(work, "tmpfs");
    mkdirSync(mount);
    const m = spawnSync("mount", ["-t", "tmpfs", "-o", "size=1m", "tmpfs", mount], { encoding: "utf8" });
    expect(m.status, `mount -t tmpfs failed: ${m.stderr}`).toBe(0);
    try {
      const stateDir = path.join(mount, "state");
      const accepted: string[] = [];
      let refused: Awaited<ReturnType<typeof send>> | undefined;
      for (let i = 0; i < 100 && refused === undefined; i++) {
        const batch = events("f", i * 100, 100, 200);
        const r = await send(stateDir, batch, ["--node-id", "n-full"]);
        if (r.code === 0) accepted.push(...batch.map((e) => e.event_id));
        else refused = r;
      }
      expect(refused).toMatchObject({ code: 4, stderr: expect.stringMatching(/^edgectl: error: spool full: no space left on the disk of .*; the events were not spooled\n$/) });
      expect(accepted.length).toBeGreaterThan(1000);
      const agent = startAgent(stateDir, "n-full");
      await eventually(async () => expect(await stored("n-full")).toEqual(accepted), 60_000);
      const again = events("f", 90_000, 100, 200);
      await eventually(async () => expect((await send(stateDir, again, ["--node-id", "n-full"])).code).toBe(0), 30_000);
      await eventually(async () => expect(await stored("n-full")).toEqual([...accepted, ...again.map((e) => e.event_id)]), 30_000);
      expect(await stopAgent(agent)).toBe(0);
    } finally {
      spawnSync("umount", [mount]);
    }
  }, 180_000);

  /** Spools `n` events with the agent stopped, starts it with a throttle, and waits until all are stored. */
  const throttled = async (name: string, n: number, rate: string, whileShipping?: (stateDir: string) => Promise<void>) => {
    const stateDir = path.join(work, name);
    const sent = events(name, 0, n, 300);
    for (let i = 0; i < n; i += 500) expect((await send(stateDir, sent.slice(i, i + 500), ["--node-id", `n-${name}`])).code).toBe(0);
    const set = await edgectl(stateDir, ["throttle", "set", "--rate", rate]);
    expect(set.stdout).toBe(`rate ${rate}, no daily quota\n`);
    const s = await status(stateDir);
    const payloadBytes = s.unsent_bytes - 32 * s.unsent_frames;
    const agent = startAgent(stateDir, `n-${name}`);
    await until("the agent ships", async () => /spool: shipping/.test(agent.output()), 15_000);
    const started = Date.now();
    await whileShipping?.(stateDir);
    let ids: string[] = [];
    await eventually(async () => {
      ids = await stored(`n-${name}`);
      expect(ids.length).toBe(n);
    }, 600_000);
    const seconds = (Date.now() - started) / 1000;
    expect(ids).toEqual(sent.map((e) => e.event_id));
    expect(await stopAgent(agent)).toBe(0);
    return { seconds, payloadBytes };
  };

  it("ships at the throttle's rate, in order, and takes a new rate without a restart", async () => {
    await throttled("rate", 600, "16KiB/s", async (stateDir) => {
      await sleep(1000);
      expect((await edgectl(stateDir, ["throttle", "set", "--rate", "1MiB/s", "--daily-quota", "500MiB"])).code).toBe(0);
      const get = await edgectl(stateDir, ["throttle", "get"]);
      expect(get.stdout).toMatch(/^rate 1MiB\/s, daily quota 500MiB \(used [\d.]+(B|KiB) in the last 24h\)\n$/);
    });
  }, 120_000);

  it.runIf(SOAK)("delivers within 10% of the time the throttle's rate implies", async () => {
    const rate = 64 * 1024;
    const { seconds, payloadBytes } = await throttled("timing", 10_000, "64KiB/s");
    // The bucket starts full: one second of the rate goes at once.
    const expected = (payloadBytes - rate) / rate;
    expect(seconds).toBeGreaterThan(expected * 0.9);
    expect(seconds).toBeLessThan(expected * 1.1);
  }, 900_000);

  it("refuses events past --spool-max-bytes with exit status 4, or drops the oldest with --spool-full=drop-oldest", async () => {
    const stateDir = path.join(work, "cap");
    const ok = await send(stateDir, events("m", 0, 100, 100), ["--node-id", "n-cap", "--spool-max-bytes", "32KiB"]);
    expect(ok.code).toBe(0);
    const full = await send(stateDir, events("m", 100, 100, 100), ["--node-id", "n-cap", "--spool-max-bytes", "32KiB"]);
    expect(full.code).toBe(4);
    expect(full.stderr).toMatch(/^edgectl: error: spool full: \d+ unsent bytes \+ \d+ new would pass --spool-max-bytes 32768 \(--spool-full=reject\); the events were not spooled\n$/);
    const dropped = await send(stateDir, events("m", 200, 100, 100), ["--node-id", "n-cap", "--spool-max-bytes", "32KiB", "--spool-full", "drop-oldest"]);
    expect(dropped.code).toBe(0);
    const [, count, lastSeq] = /dropped the (\d+) oldest unsent events, seq 1 to (\d+)/.exec(dropped.stderr) ?? [];
    expect(Number(count)).toBeGreaterThan(0);
    expect(Number(lastSeq)).toBe(Number(count));
    const s = await status(stateDir);
    expect([s.counters.dropped_events_total, s.cursor.seq, s.unsent_frames]).toEqual([Number(count), Number(count) + 1, 200 - Number(count)]);
    const bad = await send(stateDir, [{ event_type: "t", node_id: "n" }, { node_id: "n" }]);
    expect([bad.code, bad.stderr]).toEqual([1, "edgectl: error: line 2: event_type: required\n"]);
  });
});
