import { spawn, type ChildProcess } from "node:child_process";
import { appendFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { OutputTail, MAX_LINE_CHARS } from "../src/agent/workloads/output.js";
import { decideRestart, type RestartMemory } from "../src/agent/workloads/policy.js";
import { isAlive, listProcesses, readProcStat } from "../src/agent/workloads/process.js";
import { Supervisor, type ReplicaSpec, type ReplicaStatus, type SupervisorOptions } from "../src/agent/workloads/supervisor.js";
import { packageRoot } from "../src/paths.js";
import { until } from "./helpers/wait.js";

const BUILT = path.join(packageRoot, "dist", "src", "agent", "workloads", "supervisor.js");

/** A replica that heartbeats into $HB every 20 ms and exits 0 on SIGTERM; it says "up" once its handler is set. */
const HEARTBEAT = `
const fs = require("fs");
process.on("SIGTERM", () => { console.log("bye"); process.exit(0); });
const beat = () => fs.writeFileSync(process.env.HB, String(Date.now()) + " " + process.env.AUTONOMY_GENERATION);
beat();
setInterval(beat, 20);
console.log("up " + process.env.AUTONOMY_REPLICA_ID);
`;
/** The same, ignoring SIGTERM: only SIGKILL ends it. */
const STUBBORN = `
const fs = require("fs");
setInterval(() => fs.writeFileSync(process.env.HB, String(Date.now())), 20);
process.on("SIGTERM", () => console.log("ignoring SIGTERM"));
console.log("up");
`;
const exitWith = (code: number, line = "failing") => `console.log(${JSON.stringify(line)}); console.error("on stderr"); process.exit(${code});`;

const processesOfGroup = (pgid: number) => listProcesses().filter((p) => p.pgid === pgid);

interface Events {
  seen: ReplicaStatus[];
  onChange: (s: ReplicaStatus) => void;
  /** Resolves with the first status (from index `from` on) that matches; rejects after timeoutMs. */
  waitFor(what: string, match: (s: ReplicaStatus) => boolean, from?: number, timeoutMs?: number): Promise<ReplicaStatus>;
}

function events(): Events {
  const seen: ReplicaStatus[] = [];
  const wakers = new Set<() => void>();
  return {
    seen,
    onChange: (s) => {
      seen.push(s);
      for (const w of [...wakers]) w();
    },
    waitFor(what, match, from = 0, timeoutMs = 20_000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const hit = seen.slice(from).find(match);
          if (!hit) return;
          wakers.delete(check);
          clearTimeout(timer);
          resolve(hit);
        };
        const timer = setTimeout(() => {
          wakers.delete(check);
          reject(new Error(`timed out waiting for ${what}; seen: ${seen.map((s) => `${s.replicaId}:${s.state}(${s.reason})`).join(", ")}`));
        }, timeoutMs);
        wakers.add(check);
        check();
      });
    },
  };
}

describe("the restart policy", () => {
  const backoff = { initialMs: 100, maxMs: 1000 };
  const crashloop = { restarts: 3, windowMs: 10_000 };
  const fresh = (): RestartMemory => ({ restartTimes: [], streak: 0 });

  it.each([
    ["always restarts a clean exit", "always", { code: 0, signal: null }, true],
    ["always restarts a failure", "always", { code: 1, signal: null }, true],
    ["on-failure leaves a clean exit", "on-failure", { code: 0, signal: null }, false],
    ["on-failure restarts a non-zero code", "on-failure", { code: 2, signal: null }, true],
    ["on-failure restarts a signal", "on-failure", { code: null, signal: "SIGSEGV" }, true],
    ["on-failure restarts a start that failed", "on-failure", { code: null, signal: null, startError: "command not found: x" }, true],
    ["never leaves a failure", "never", { code: 1, signal: null }, false],
  ] as const)("%s", (_name, policy, exit, restarts) => {
    expect(decideRestart(policy, exit, 10, 1_000_000, fresh(), backoff, crashloop).restart).toBe(restarts);
  });

  it("doubles the delay on quick failures up to the maximum, enters crashloop past the budget and leaves it when the window passes", () => {
    const m = fresh();
    const at = (t: number, ranMs = 10) => decideRestart("always", { code: 1, signal: null }, ranMs, t, m, backoff, crashloop);
    expect([at(0), at(1), at(2)].map((d) => [d.state, d.restart && d.delayMs])).toEqual([
      ["backoff", 100],
      ["backoff", 200],
      ["backoff", 400],
    ]);
    const looping = at(3);
    expect(looping).toMatchObject({ state: "crashloop", delayMs: 1000, reason: "crashloop: 3 restarts in 10s; exited with code 1, restarting in 1s" });
    // Past the window, the restarts of the window are under the budget again; a run as long as the
    // window was healthy, so the backoff starts over.
    expect(at(20_000, 10_000)).toMatchObject({ state: "backoff", delayMs: 100, reason: "exited with code 1, restarting in 100ms" });
  });

  it("names how the process ended in the reason", () => {
    expect(decideRestart("never", { code: 3, signal: null }, 1, 0, fresh(), backoff, crashloop)).toEqual({
      restart: false,
      state: "exited",
      reason: "exited with code 3 (restart policy never)",
    });
    expect(decideRestart("never", { code: null, signal: null, startError: "command not found: nope" }, 0, 0, fresh(), backoff, crashloop)).toEqual({
      restart: false,
      state: "failed",
      reason: "cannot start: command not found: nope",
    });
    expect(decideRestart("on-failure", { code: null, signal: "SIGKILL" }, 1, 0, fresh(), backoff, crashloop).reason).toBe("killed by SIGKILL, restarting in 100ms");
  });
});

describe("the output tail", () => {
  it("keeps the last lines of both streams, across chunk boundaries, with long lines cut", () => {
    const t = new OutputTail(3);
    t.push("stdout", "one\ntw");
    t.push("stderr", "err1\n");
    t.push("stdout", "o\nthree\r\nfour");
    expect(t.snapshot()).toEqual(["err1", "two", "three"]);
    t.flush();
    expect(t.snapshot()).toEqual(["two", "three", "four"]);
    t.push("stdout", "x".repeat(MAX_LINE_CHARS + 10));
    t.push("stdout", "y".repeat(5000) + "\nafter\n");
    expect(t.snapshot()).toEqual(["four", "x".repeat(MAX_LINE_CHARS) + " [truncated]", "after"]);
  });
});

describe("the workload supervisor, with real processes", () => {
  let work: string;
  const open: Supervisor[] = [];
  const pids = new Set<number>();
  const children: ChildProcess[] = [];
  let n = 0;

  beforeAll(() => {
    work = mkdtempSync(path.join(os.tmpdir(), "ao-supervisor-"));
  });
  afterEach(async () => {
    for (const s of open.splice(0)) await s.close();
  });
  afterAll(() => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
    // Whatever a failed test left running.
    for (const pid of pids) {
      for (const p of processesOfGroup(pid)) {
        try {
          process.kill(p.pid, "SIGKILL");
        } catch {
          // gone
        }
      }
    }
    rmSync(work, { recursive: true, force: true });
  });

  const logs: { level: string; o: object; m?: string }[] = [];
  const log = {
    info: (o: object, m?: string) => logs.push({ level: "info", o, m }),
    warn: (o: object, m?: string) => logs.push({ level: "warn", o, m }),
    error: (o: object, m?: string) => logs.push({ level: "error", o, m }),
  };
  const dir = () => path.join(work, `s${++n}`);
  const start = async (stateDir: string, ev: Events, extra: Partial<SupervisorOptions> = {}) => {
    const s = await Supervisor.open({
      stateDir,
      log,
      backoff: { initialMs: 50, maxMs: 400 },
      crashloop: { restarts: 10, windowMs: 60_000 },
      stopTimeoutMs: 2000,
      ...extra,
      onChange: (st) => {
        if (st.pid !== null) pids.add(st.pid);
        ev.onChange(st);
      },
    });
    open.push(s);
    return s;
  };
  const closeNow = async (s: Supervisor) => {
    open.splice(open.indexOf(s), 1);
    await s.close();
  };
  const spec = (service: string, index: number, script: string, extra: Partial<ReplicaSpec> = {}): ReplicaSpec => ({
    replicaId: `${service}-${index}`,
    service,
    index,
    generation: 1,
    command: process.execPath,
    args: ["-e", script],
    env: { HB: path.join(work, `hb-${service}-${index}-${n}`) },
    restartPolicy: "on-failure",
    ...extra,
  });
  const statusOf = (s: Supervisor, id: string) => s.list().find((r) => r.replicaId === id);

  it.each([
    ["an empty command", { command: "  " }, "command: must not be empty"],
    ["a replica id that is not <service>-<index>", { replicaId: "web-7" }, 'replicaId: must be "<service>-<index>" (web-0), not "web-7"'],
    ["a negative generation", { generation: -1 }, "generation: must be an integer of 0 or more"],
    ["an unknown restart policy", { restartPolicy: "sometimes" }, "restartPolicy: must be one of always, on-failure, never"],
    ["an argument that is not a string", { args: ["-e", 3] }, "args[1]: must be a string"],
    ["a variable the agent sets", { env: { AUTONOMY_REPLICA_ID: "x" } }, "env.AUTONOMY_REPLICA_ID: is set by the agent"],
    ["a bad variable name", { env: { "A-B": "1" } }, "env.A-B: is not a variable name (letters, digits and '_', not starting with a digit)"],
    ["a service name with a slash", { service: "a/b", replicaId: "a/b-0" }, "service: must be letters, digits, '-', '_' or '.', start with a letter or digit and be at most 63 characters"],
  ])("answers %s ok:false naming the field, and the same again for its command id", async (_name, bad, message) => {
    const s = await start(dir(), events());
    const good = spec("web", 0, HEARTBEAT);
    const first = await s.launch({ ...good, ...bad } as unknown as ReplicaSpec, "c-bad");
    expect(first).toEqual({ commandId: "c-bad", ok: false, message });
    // A command id is answered its first result, even when the spec sent with it is fixed.
    expect(await s.launch(good, "c-bad")).toEqual(first);
    expect(s.list()).toEqual([]);
  });

  it("answers an empty command id, and commands after close, ok:false without acting", async () => {
    const s = await start(dir(), events());
    expect(await s.launch(spec("web", 0, HEARTBEAT), "")).toEqual({ commandId: "", ok: false, message: "commandId: must not be empty" });
    await closeNow(s);
    expect(await s.launch(spec("web", 0, HEARTBEAT), "c-late")).toEqual({ commandId: "c-late", ok: false, message: "the agent is stopping: send the command again later" });
    expect(s.list()).toEqual([]);
  });

  it("launches a replica in a process group of its own with its output captured, and stops the whole group", async () => {
    const ev = events();
    const s = await start(dir(), ev);
    const sp = spec("web", 0, HEARTBEAT);
    const launched = await s.launch(sp, "c-1");
    expect(launched.ok).toBe(true);
    const running = await ev.waitFor("web-0 running", (st) => st.state === "running");
    const pid = running.pid!;
    expect(launched.message).toBe(`launched web-0 generation 1: running, pid ${pid}`);
    // The replica rewrites the file every 20 ms (truncate, then write): a read can fall between the two.
    await until("a heartbeat of generation 1", async () => existsSync(sp.env.HB) && /^\d+ 1$/.test(readFileSync(sp.env.HB, "utf8")), 10_000);
    // Its own session and group, led by the replica itself; the watchdog is the other member.
    const stat = readProcStat(pid)!;
    expect([stat.pgid, stat.session]).toEqual([pid, pid]);
    expect(readProcStat(process.pid)!.pgid).not.toBe(pid);
    expect(processesOfGroup(pid).length).toBe(2);
    await until("its first line", async () => statusOf(s, "web-0")!.lastOutput.includes("up web-0"), 10_000);
    // The same command id, and the same replica and generation under another id: no second process.
    expect(await s.launch(sp, "c-1")).toEqual(launched);
    expect(await s.launch(sp, "c-2")).toEqual({ commandId: "c-2", ok: true, message: "web-0 already runs generation 1 (running)" });
    expect(statusOf(s, "web-0")).toMatchObject({ state: "running", pid, restarts: 0, generation: 1 });

    const stopped = await s.stop("web-0", "c-3");
    expect(stopped).toEqual({ commandId: "c-3", ok: true, message: "stopped web-0 (exited with code 0)" });
    expect(isAlive(pid)).toBe(false);
    expect(processesOfGroup(pid)).toEqual([]);
    expect(statusOf(s, "web-0")).toMatchObject({ state: "stopped", pid: null, lastExitCode: 0, lastSignal: null, reason: "stopped by command c-3 (exited with code 0)" });
    expect(statusOf(s, "web-0")!.lastOutput).toEqual(["up web-0", "bye"]);
    expect(ev.seen.map((x) => x.state)).toEqual(["starting", "running", "stopping", "stopped"]);
    expect(await s.stop("web-0", "c-4")).toEqual({ commandId: "c-4", ok: true, message: "web-0 is not running (stopped)" });
    expect(await s.stop("nothing-3", "c-5")).toEqual({ commandId: "c-5", ok: true, message: "nothing-3 is not running" });
  });

  it("stops a replica that ignores SIGTERM with SIGKILL after the stop timeout", async () => {
    const ev = events();
    const s = await start(dir(), ev, { stopTimeoutMs: 300 });
    await s.launch(spec("stubborn", 0, STUBBORN), "c-1");
    const { pid } = await ev.waitFor("running", (st) => st.state === "running");
    await until("its first line", async () => statusOf(s, "stubborn-0")!.lastOutput.includes("up"), 10_000);
    expect(await s.stop("stubborn-0", "c-2")).toEqual({ commandId: "c-2", ok: true, message: "stopped stubborn-0 (did not end within 300ms of SIGTERM: killed by SIGKILL)" });
    expect(statusOf(s, "stubborn-0")).toMatchObject({ state: "stopped", lastSignal: "SIGKILL", lastExitCode: null });
    expect(statusOf(s, "stubborn-0")!.lastOutput).toContain("ignoring SIGTERM");
    expect(processesOfGroup(pid!)).toEqual([]);
  });

  it("updates to a new generation by stopping the old process before the new one starts; refuses an older generation", async () => {
    const ev = events();
    const s = await start(dir(), ev);
    const lock = path.join(work, `only-one-${n}`);
    // Takes a lock file that only one process at a time can hold: a second one running at once exits 9.
    const exclusive = `
      try { require("fs").writeFileSync(${JSON.stringify(lock)}, String(process.pid), { flag: "wx" }); } catch { console.log("TWICE"); process.exit(9); }
      process.on("SIGTERM", () => require("fs").unlinkSync(${JSON.stringify(lock)}));
      ${HEARTBEAT}`;
    const v1 = spec("api", 0, exclusive);
    await s.launch(v1, "c-1");
    const first = await ev.waitFor("generation 1 running", (st) => st.state === "running");
    await until("generation 1 is up", async () => statusOf(s, "api-0")!.lastOutput.includes("up api-0"), 10_000);
    const mark = ev.seen.length;
    const updated = await s.update({ ...v1, generation: 2, env: { ...v1.env, EXTRA: "2" } }, "c-2");
    const second = await ev.waitFor("generation 2 running", (st) => st.state === "running" && st.generation === 2, mark);
    expect(updated).toEqual({ commandId: "c-2", ok: true, message: `updated api-0 from generation 1 (exited with code 0) to 2: running, pid ${second.pid}` });
    expect(isAlive(first.pid!)).toBe(false);
    expect(ev.seen.slice(mark).map((x) => `${x.state}:${x.generation}`)).toEqual(["stopping:1", "starting:2", "running:2"]);
    await until("generation 2 heartbeats", async () => readFileSync(v1.env.HB, "utf8").endsWith(" 2"), 10_000);
    expect(statusOf(s, "api-0")).toMatchObject({ state: "running", generation: 2, pid: second.pid, restarts: 0 });

    expect(await s.launch(v1, "c-3")).toEqual({ commandId: "c-3", ok: false, message: "generation: 1 is older than generation 2, which api-0 runs" });
    expect(await s.update({ ...v1, generation: 2 }, "c-4")).toEqual({ commandId: "c-4", ok: true, message: "api-0 already runs generation 2 (running)" });
    // A launch of a newer generation replaces the running one too.
    const launched = await s.launch({ ...v1, generation: 3 }, "c-5");
    expect(launched.ok).toBe(true);
    expect(statusOf(s, "api-0")).toMatchObject({ state: "running", generation: 3 });
    expect(isAlive(second.pid!)).toBe(false);
    expect(ev.seen.some((x) => x.lastOutput.includes("TWICE"))).toBe(false);
    // An update of a replica that does not run starts it.
    expect(await s.update(spec("fresh", 0, HEARTBEAT), "c-6")).toMatchObject({ ok: true, message: expect.stringMatching(/^started fresh-0 generation 1 \(it was not running\): running, pid \d+$/) });
  });

  it("restarts a failing replica with a doubling backoff and records its exit code and output", async () => {
    const ev = events();
    const s = await start(dir(), ev, { backoff: { initialMs: 50, maxMs: 400 } });
    await s.launch(spec("flaky", 0, exitWith(3, "failing now")), "c-1");
    await ev.waitFor("the third restart", (st) => st.state === "running" && st.restarts === 3);
    const backoffs = ev.seen.filter((x) => x.state === "backoff").slice(0, 3);
    expect(backoffs.map((x) => x.reason)).toEqual(["exited with code 3, restarting in 50ms", "exited with code 3, restarting in 100ms", "exited with code 3, restarting in 200ms"]);
    expect(backoffs.every((x) => x.lastExitCode === 3 && x.lastSignal === null && x.pid === null)).toBe(true);
    expect(backoffs[0].lastOutput).toEqual(["failing now", "on stderr"]);
    // Each restart has a new process, and each backoff waited at least its delay.
    const starts = ev.seen.filter((x) => x.state === "starting");
    expect(new Set(starts.map((x) => x.pid)).size).toBe(starts.length);
    // (Timers may fire a millisecond early by the wall clock.)
    for (let i = 0; i < 3; i++) expect(starts[i + 1].since - backoffs[i].since).toBeGreaterThanOrEqual(50 * 2 ** i - 2);
    await s.stop("flaky-0", "c-2");
    expect(statusOf(s, "flaky-0")!.state).toBe("stopped");
  });

  it.each([
    ["on-failure, a clean exit", "on-failure", exitWith(0), "exited", "exited with code 0 (restart policy on-failure)", 0, null],
    ["never, a failure", "never", exitWith(4), "exited", "exited with code 4 (restart policy never)", 4, null],
    ["never, a signal", "never", 'process.kill(process.pid, "SIGKILL")', "exited", "killed by SIGKILL (restart policy never)", null, "SIGKILL"],
  ] as const)("does not restart under %s", async (_name, policy, script, state, reason, code, signal) => {
    const ev = events();
    const s = await start(dir(), ev);
    await s.launch(spec("once", 0, script, { restartPolicy: policy }), "c-1");
    const end = await ev.waitFor(state, (st) => st.state === state);
    expect(end).toMatchObject({ reason, lastExitCode: code, lastSignal: signal, pid: null, restarts: 0 });
    expect(ev.seen.map((x) => x.state)).toEqual(["starting", "running", state]);
  });

  it("restarts after a signal under on-failure and reports the signal", async () => {
    const ev = events();
    const s = await start(dir(), ev);
    await s.launch(spec("segv", 0, 'process.kill(process.pid, "SIGSEGV")'), "c-1");
    const b = await ev.waitFor("backoff", (st) => st.state === "backoff");
    expect(b).toMatchObject({ lastSignal: "SIGSEGV", lastExitCode: null, reason: "killed by SIGSEGV, restarting in 50ms" });
    await ev.waitFor("a restart", (st) => st.state === "running" && st.restarts === 1);
  });

  it("reports a command that cannot start: failed under never, retried under on-failure", async () => {
    const ev = events();
    const s = await start(dir(), ev);
    const r1 = await s.launch(spec("gone", 0, "", { command: "no-such-command-here", args: [], restartPolicy: "never" }), "c-1");
    expect(r1).toEqual({ commandId: "c-1", ok: true, message: "launched gone-0 generation 1: failed, cannot start: command not found: no-such-command-here" });
    expect(statusOf(s, "gone-0")).toMatchObject({ state: "failed", pid: null, reason: "cannot start: command not found: no-such-command-here" });
    await s.launch(spec("gone", 1, "", { command: "./missing.sh", args: [] }), "c-2");
    await ev.waitFor("a second try", (st) => st.replicaId === "gone-1" && st.state === "backoff" && st.reason === "cannot start: no such file: ./missing.sh, restarting in 50ms");
    await s.stop("gone-1", "c-3");
    expect(statusOf(s, "gone-1")).toMatchObject({ state: "stopped", reason: "stopped by command c-3 (it was waiting to restart)" });
  });

  it("enters crashloop when restarts exceed the budget, keeps trying at the longest delay, and stop ends the loop", async () => {
    const ev = events();
    const s = await start(dir(), ev, { backoff: { initialMs: 20, maxMs: 300 }, crashloop: { restarts: 3, windowMs: 60_000 } });
    await s.launch(spec("loop", 0, exitWith(1), { restartPolicy: "always" }), "c-1");
    const loop = await ev.waitFor("crashloop", (st) => st.state === "crashloop");
    expect(loop).toMatchObject({ restarts: 3, lastExitCode: 1, reason: "crashloop: 3 restarts in 60s; exited with code 1, restarting in 300ms" });
    const mark = ev.seen.length;
    const next = await ev.waitFor("a try after the crashloop delay", (st) => st.state === "starting", mark);
    expect(next.restarts).toBe(4);
    expect(next.since - loop.since).toBeGreaterThanOrEqual(300 - 2);
    await ev.waitFor("crashloop again", (st) => st.state === "crashloop" && st.reason.startsWith("crashloop: 4 restarts in 60s;"), mark);
    expect(await s.stop("loop-0", "c-2")).toMatchObject({ ok: true });
    const after = ev.seen.length;
    expect(statusOf(s, "loop-0")).toMatchObject({ state: "stopped", pid: null });
    // Twice the crashloop delay later, nothing was started again.
    await sleep(600);
    expect(ev.seen.slice(after)).toEqual([]);
  });

  it("keeps the last lines of output, bounded", async () => {
    const ev = events();
    const s = await start(dir(), ev, { outputLines: 5 });
    const script = `for (let i = 1; i <= 30; i++) process.stdout.write("line " + i + "\\n"); process.stdout.write("no newline at the end");`;
    await s.launch(spec("chatty", 0, script, { restartPolicy: "never" }), "c-1");
    const end = await ev.waitFor("exited", (st) => st.state === "exited");
    expect(end.lastOutput).toEqual(["line 27", "line 28", "line 29", "line 30", "no newline at the end"]);
  });

  it("answers a command id again after a reopen without acting, and keeps the newest ids only", async () => {
    const stateDir = dir();
    const ev = events();
    const s1 = await start(stateDir, ev, { commandHistory: 3 });
    const sp = spec("web", 0, HEARTBEAT);
    const launched = await s1.launch(sp, "c-launch");
    const refused = await s1.launch({ ...sp, command: "" }, "c-bad");
    await until("web-0 is up", async () => statusOf(s1, "web-0")!.lastOutput.includes("up web-0"), 10_000);
    await closeNow(s1);
    expect(statusOf(s1, "web-0")).toMatchObject({ state: "stopped", reason: "the agent stopped (exited with code 0)" });

    const ev2 = events();
    const s2 = await start(stateDir, ev2, { commandHistory: 3 });
    expect(statusOf(s2, "web-0")).toMatchObject({ state: "stopped", pid: null, reason: "the agent stopped (exited with code 0)" });
    expect(await s2.launch(sp, "c-launch")).toEqual(launched);
    expect(await s2.launch(sp, "c-bad")).toEqual(refused);
    expect(ev2.seen).toEqual([]);
    expect(statusOf(s2, "web-0")!.state).toBe("stopped");
    // Three more commands push the two first out of a history of three.
    for (const id of ["c-a", "c-b", "c-c"]) expect((await s2.stop("web-0", id)).ok).toBe(true);
    await closeNow(s2);
    // A crash in the middle of an append leaves a torn line: it is skipped.
    appendFileSync(path.join(stateDir, "commands.log"), '{"id":"c-torn","ok":tr');
    const ev3 = events();
    const s3 = await start(stateDir, ev3, { commandHistory: 3 });
    expect(await s3.stop("web-0", "c-c")).toEqual({ commandId: "c-c", ok: true, message: "web-0 is not running (stopped)" });
    const again = await s3.launch(sp, "c-launch");
    expect(again.ok).toBe(true);
    expect(again.message).toMatch(/^launched web-0 generation 1: running, pid \d+$/);
    expect(again).not.toEqual(launched);
    expect(readFileSync(path.join(stateDir, "commands.log"), "utf8").split("\n").filter(Boolean).every((l) => JSON.parse(l))).toBe(true);
  });

  it("refuses a second supervisor on the same state dir", async () => {
    const stateDir = dir();
    await start(stateDir, events());
    await expect(Supervisor.open({ stateDir, log })).rejects.toThrow(`another agent supervises the replicas of ${stateDir}`);
  });

  it("close() stops every replica, a stubborn one with SIGKILL, and leaves no process alive", async () => {
    const ev = events();
    const s = await start(dir(), ev, { stopTimeoutMs: 500 });
    await Promise.all([
      s.launch(spec("a", 0, HEARTBEAT), "c-1"),
      s.launch(spec("a", 1, HEARTBEAT), "c-2"),
      s.launch(spec("b", 0, STUBBORN), "c-3"),
      s.launch(spec("c", 0, exitWith(1)), "c-4"),
    ]);
    await until("a-0 and a-1 are up", async () => ["a-0", "a-1"].every((id) => statusOf(s, id)!.lastOutput.includes(`up ${id}`)), 10_000);
    await until("b-0 has set its handler", async () => statusOf(s, "b-0")!.lastOutput.includes("up"), 10_000);
    const groups = [...new Set(ev.seen.map((x) => x.pid).filter((p): p is number => p !== null))];
    await closeNow(s);
    for (const g of groups) expect(processesOfGroup(g), `group ${g}`).toEqual([]);
    expect(s.list().map((r) => [r.replicaId, r.state])).toEqual([
      ["a-0", "stopped"],
      ["a-1", "stopped"],
      ["b-0", "stopped"],
      ["c-0", "stopped"],
    ]);
    expect(statusOf(s, "a-0")!.reason).toBe("the agent stopped (exited with code 0)");
    expect(statusOf(s, "b-0")!.reason).toBe("the agent stopped (did not end within 500ms of SIGTERM: killed by SIGKILL)");
    expect(statusOf(s, "c-0")!.reason).toMatch(/^the agent stopped \((it was waiting to restart|it was not running|exited with code 1|killed by SIGTERM)\)$/);
  });

  describe("when the agent is killed with SIGKILL", () => {
    interface AgentChild {
      proc: ChildProcess;
      exited: Promise<unknown>;
      statuses: ReplicaStatus[];
    }
    /** A process like `edgectl run`: it opens a Supervisor, launches the replicas and prints their statuses. */
    const startAgent = async (stateDir: string, specs: ReplicaSpec[], stopTimeoutMs: number): Promise<AgentChild> => {
      const script = path.join(work, "agent.mjs");
      writeFileSync(
        script,
        `import { pathToFileURL } from "node:url";
const [mod, stateDir, specs, stopTimeoutMs] = process.argv.slice(2);
const { Supervisor } = await import(pathToFileURL(mod).href);
const log = { info() {}, warn() {}, error: (o, m) => process.stderr.write(JSON.stringify({ o, m }) + "\\n") };
const sup = await Supervisor.open({ stateDir, log, stopTimeoutMs: Number(stopTimeoutMs) });
for (const spec of JSON.parse(specs)) {
  const r = await sup.launch(spec, "launch-" + spec.replicaId);
  if (!r.ok) throw new Error(r.message);
}
process.stdout.write(JSON.stringify(sup.list()) + "\\n");
setInterval(() => {}, 60000);
`,
      );
      const proc = spawn(process.execPath, [script, BUILT, stateDir, JSON.stringify(specs), String(stopTimeoutMs)], { stdio: ["ignore", "pipe", "pipe"] });
      children.push(proc);
      const exited = new Promise((resolve) => proc.once("exit", resolve));
      let out = "";
      let err = "";
      proc.stderr!.on("data", (c: Buffer) => (err += c.toString()));
      const line = await new Promise<string>((resolve, reject) => {
        proc.stdout!.on("data", (c: Buffer) => {
          out += c.toString();
          if (out.includes("\n")) resolve(out.slice(0, out.indexOf("\n")));
        });
        void exited.then(() => reject(new Error(`the agent exited early: ${err}`)));
      });
      const statuses = JSON.parse(line) as ReplicaStatus[];
      for (const st of statuses) if (st.pid !== null) pids.add(st.pid);
      return { proc, exited, statuses };
    };

    beforeAll(() => {
      if (!existsSync(BUILT)) throw new Error(`${BUILT} is missing: run npm run build first`);
    });

    it("its replicas end by themselves: the watchdog sees the agent go, a stubborn replica gets SIGKILL", async () => {
      const stateDir = dir();
      const specs = [spec("svc", 0, HEARTBEAT), spec("svc", 1, STUBBORN)];
      const agent = await startAgent(stateDir, specs, 1000);
      const groups = agent.statuses.map((st) => st.pid!);
      expect(agent.statuses.map((st) => st.state)).toEqual(["running", "running"]);
      await until("the stubborn replica is up", async () => existsSync(specs[1].env.HB), 10_000);
      for (const g of groups) expect(isAlive(g)).toBe(true);
      agent.proc.kill("SIGKILL");
      await agent.exited;
      await until("every process of both groups has ended", async () => groups.every((g) => processesOfGroup(g).length === 0), 20_000);
      // The next agent finds nothing to end and reports them stopped.
      const ev = events();
      const s = await start(stateDir, ev);
      expect(s.list().map((r) => [r.replicaId, r.state, r.reason])).toEqual([
        ["svc-0", "stopped", "orphan of an earlier agent run: its processes had ended"],
        ["svc-1", "stopped", "orphan of an earlier agent run: its processes had ended"],
      ]);
      expect(ev.seen.map((x) => x.state)).toEqual(["stopped", "stopped"]);
    });

    it("a reopen ends the replicas that survived (their watchdog was frozen) and reports them stopped", async () => {
      const stateDir = dir();
      const sp = spec("survivor", 0, HEARTBEAT);
      const agent = await startAgent(stateDir, [sp], 1000);
      const leader = agent.statuses[0].pid!;
      const watchers = processesOfGroup(leader).filter((p) => p.pid !== leader);
      expect(watchers.length).toBe(1);
      process.kill(watchers[0].pid, "SIGSTOP");
      agent.proc.kill("SIGKILL");
      await agent.exited;
      // It keeps running on its own: its heartbeat moves after the agent is gone.
      // A read can fall between the replica's truncate and write (""): only whole heartbeats count.
      const beat = () => (existsSync(sp.env.HB) ? readFileSync(sp.env.HB, "utf8") : "");
      let before = "";
      await until("the heartbeat file", async () => (before = beat()) !== "", 10_000);
      await until("a heartbeat after the agent died", async () => ![before, ""].includes(beat()), 10_000);
      expect(isAlive(leader)).toBe(true);

      const ev = events();
      const s = await start(stateDir, ev, { stopTimeoutMs: 1000 });
      expect(processesOfGroup(leader)).toEqual([]);
      const [st] = s.list();
      expect(st).toMatchObject({ replicaId: "survivor-0", state: "stopped", pid: null });
      expect(st.reason).toBe(`orphan of an earlier agent run: ended pid ${leader}, ${watchers[0].pid} (SIGTERM, then SIGKILL after 1s)`);
      expect(ev.seen.map((x) => x.state)).toEqual(["stopped"]);
    });

    it("a reopen leaves alone a live process that only has a recorded pid (not its start time)", async () => {
      const stateDir = dir();
      mkdirSync(stateDir, { recursive: true });
      const stranger = spawn(process.execPath, ["-e", "setInterval(() => {}, 1000)"], { detached: true, stdio: "ignore" });
      children.push(stranger);
      const pid = stranger.pid!;
      pids.add(pid);
      await until("the stranger runs", async () => readProcStat(pid) !== undefined, 10_000);
      const boot = readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim();
      const sp = spec("web", 0, HEARTBEAT);
      writeFileSync(
        path.join(stateDir, "replicas.json"),
        JSON.stringify({
          version: 1,
          replicas: [{ spec: sp, state: "running", pid, procStart: "1", bootId: boot, instance: "00", restarts: 0, lastExitCode: null, lastSignal: null, startedAt: 1, since: 1, reason: "running" }],
        }),
      );
      const s = await start(stateDir, events());
      expect(isAlive(pid)).toBe(true);
      expect(statusOf(s, "web-0")).toMatchObject({ state: "stopped", reason: "orphan of an earlier agent run: its processes had ended" });
      stranger.kill("SIGKILL");
    });
  });
});
