import type { ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdirSync } from "node:fs";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { ValidationError } from "../../domain/errors.js";
import { tryLock, type HeldLock } from "../spool/lock.js";
import { OutputTail } from "./output.js";
import {
  DEFAULT_BACKOFF,
  DEFAULT_CRASHLOOP,
  decideRestart,
  describeExit,
  formatDuration,
  type BackoffOptions,
  type CrashloopOptions,
  type ExitInfo,
  type RestartMemory,
} from "./policy.js";
import {
  bootId,
  environHas,
  hasProc,
  listProcesses,
  readProcStat,
  resolveCommand,
  signalGroup,
  signalProcess,
  startWatched,
  type ProcStat,
} from "./process.js";
import { copySpec, validateCommandId, validateReplicaId, validateReplicaSpec, type ReplicaSpec } from "./spec.js";
import { SupervisorStore, type CommandRecord, type ReplicaRecord } from "./store.js";

export type { RestartPolicy, ReplicaSpec } from "./spec.js";
export { validateReplicaSpec } from "./spec.js";

export type ReplicaState = "starting" | "running" | "backoff" | "exited" | "crashloop" | "stopping" | "stopped" | "failed";

/** What the agent reports of one replica. */
export interface ReplicaStatus {
  replicaId: string;
  service: string;
  index: number;
  generation: number;
  state: ReplicaState;
  /** The pid of the running process (the leader of its process group), or null. */
  pid: number | null;
  /** How many times it was restarted since it was launched or updated. */
  restarts: number;
  lastExitCode: number | null;
  lastSignal: string | null;
  /** The last lines of stdout and stderr together, across restarts. */
  lastOutput: string[];
  /** When the running process started (ms epoch), or null when none runs. */
  startedAt: number | null;
  /** When the state last changed (ms epoch). */
  since: number;
  /** Why it is in its state, e.g. "exited with code 1, restarting in 2s". */
  reason: string;
}

/** The answer to one command; the same command id always gets the first answer again. */
export interface CommandResult {
  commandId: string;
  ok: boolean;
  message: string;
}

export interface SupervisorLog {
  info(o: object, m?: string): void;
  warn(o: object, m?: string): void;
  error(o: object, m?: string): void;
}

export interface SupervisorOptions {
  /** Where the supervisor keeps what it runs and the commands it has done (see ./store.ts). */
  stateDir: string;
  log: SupervisorLog;
  now?: () => number;
  /** Restart delays: doubled on each quick failure, from initialMs up to maxMs (default 1s..60s). */
  backoff?: BackoffOptions;
  /** More restarts than this within the window: state crashloop, retried every backoff.maxMs (default 5 in 60s). */
  crashloop?: CrashloopOptions;
  /** SIGTERM to the process group, then SIGKILL after this long (default 10s). */
  stopTimeoutMs?: number;
  /** Lines of output kept per replica (default 20). */
  outputLines?: number;
  /** Command ids remembered, newest first (default 10,000). */
  commandHistory?: number;
  /** Called on every change of a replica's state, with its status at that moment. */
  onChange?: (status: ReplicaStatus) => void;
  /** Called with every line a replica prints. */
  onOutput?: (replicaId: string, stream: "stdout" | "stderr", line: string) => void;
}

/** The states in which the agent owns a process or means to start one. */
const ACTIVE: ReadonlySet<ReplicaState> = new Set(["starting", "running", "backoff", "crashloop", "stopping"]);
/** Stopped, exited and failed replicas kept for reporting, beyond which the oldest are forgotten. */
export const MAX_FINISHED = 256;
/** How long output may still arrive after a replica's process has ended. */
const DRAIN_MS = 1000;
const DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/** Variables of the agent's environment a replica inherits; the rest (credentials among them) it does not. */
const INHERITED_ENV = ["PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TZ", "TMPDIR"];

/** A replica as the supervisor holds it: what it records on disk, and the live process. */
interface Replica extends Omit<ReplicaRecord, "state"> {
  state: ReplicaState;
  output: OutputTail;
  memory: RestartMemory;
  child?: ChildProcess;
  /** Resolves when the current process has ended (and its output is drained). */
  ended?: Promise<ExitInfo>;
  /** The restart the backoff waits for. */
  timer?: NodeJS.Timeout;
  /** A stop of the current process is under way: its end is not a crash. */
  stopping: boolean;
}

/** A process of an earlier agent run, identified by pid and start time. */
interface Orphan {
  pid: number;
  startTime: string;
}

/**
 * Runs service replicas as supervised child processes.
 *
 * Commands (launch, update, stop) carry an idempotency key: a key already done is answered its
 * first result, without acting again, also after a restart of the agent (the newest
 * `commandHistory` keys are kept in the state dir). Commands for one replica run one after the
 * other; commands for different replicas run side by side.
 *
 * Bad input is never thrown: it is answered `ok: false` with the ValidationError's message,
 * which names the field (`command: must not be empty`), and recorded under its key like any
 * other answer. `ok: false` also answers a stale generation and a command that arrives while
 * the supervisor closes (that one is not recorded: it may be sent again). What happens to a
 * process after an accepted command (it cannot start, it crashes) is in the replica's status.
 *
 * Each replica runs in a process group of its own through a watchdog (./process.ts) that ends
 * the group when the agent's process ends, by kill -9 too; `open` also ends what an earlier run
 * left behind and reports those replicas `stopped` ("orphan of an earlier agent run").
 */
export class Supervisor {
  private readonly replicas = new Map<string, Replica>();
  private readonly done = new Map<string, { ok: boolean; message: string }>();
  private readonly inflight = new Map<string, Promise<CommandResult>>();
  private readonly queues = new Map<string, Promise<void>>();
  private closing: Promise<void> | undefined;
  private persistFailing = false;
  private readonly now: () => number;
  private readonly backoff: BackoffOptions;
  private readonly crashloop: CrashloopOptions;
  private readonly stopTimeoutMs: number;
  private readonly outputLines: number;
  private readonly history: number;
  private readonly log: SupervisorLog;
  private readonly boot: string | undefined;

  private constructor(
    private readonly opts: SupervisorOptions,
    private readonly store: SupervisorStore,
    private readonly lock: HeldLock,
  ) {
    this.now = opts.now ?? Date.now;
    this.backoff = opts.backoff ?? DEFAULT_BACKOFF;
    this.crashloop = opts.crashloop ?? DEFAULT_CRASHLOOP;
    this.stopTimeoutMs = opts.stopTimeoutMs ?? 10_000;
    this.outputLines = opts.outputLines ?? 20;
    this.history = opts.commandHistory ?? 10_000;
    this.log = opts.log;
    this.boot = bootId();
  }

  /**
   * Opens the supervisor of a state dir: takes its lock (one supervisor per state dir; throws
   * when another process holds it), reads the commands done and the replicas recorded, ends
   * every process of those replicas that still runs (SIGTERM, then SIGKILL after
   * `stopTimeoutMs`) and reports them stopped. It starts nothing: the control plane decides.
   */
  static async open(opts: SupervisorOptions): Promise<Supervisor> {
    checkOptions(opts);
    mkdirSync(opts.stateDir, { recursive: true, mode: 0o700 });
    const lock = await tryLock(opts.stateDir, "supervisor");
    if (!lock) throw new Error(`another agent supervises the replicas of ${opts.stateDir}`);
    try {
      const { store, replicas, commands, skipped } = SupervisorStore.open(opts.stateDir, opts.commandHistory ?? 10_000);
      const sup = new Supervisor(opts, store, lock);
      if (skipped > 0) sup.log.warn({ skipped }, "skipped unreadable lines of the command log (a write cut short by a crash)");
      for (const c of commands) sup.done.set(c.id, { ok: c.ok, message: c.message });
      await sup.adopt(replicas);
      return sup;
    } catch (err) {
      await lock.release();
      throw err;
    }
  }

  /**
   * Runs a replica. Its replicaId and generation running already: nothing to do. Another
   * generation running: replaced, as `update` does. Not running (unknown, stopped, exited,
   * failed): started afresh, restart count at 0. An older generation than the one running is
   * refused.
   */
  launch(spec: ReplicaSpec, commandId: string): Promise<CommandResult> {
    let s!: ReplicaSpec;
    return this.command(commandId, () => (s = checkedCopy(spec)).replicaId, async () => {
      const r = this.replicas.get(s.replicaId);
      if (r && ACTIVE.has(r.state)) {
        if (s.generation < r.spec.generation) return stale(s, r);
        if (s.generation === r.spec.generation) return { ok: true, message: `${s.replicaId} already runs generation ${s.generation} (${r.state})` };
        return this.replace(r, s);
      }
      return this.startFresh(s, "launched", "");
    });
  }

  /**
   * Restarts a replica with a new spec: the old process is stopped (SIGTERM, then SIGKILL after
   * `stopTimeoutMs`) before the new one starts, so two generations never run at once. The same
   * generation running: nothing to do; an older one: refused; not running: started.
   */
  update(spec: ReplicaSpec, commandId: string): Promise<CommandResult> {
    let s!: ReplicaSpec;
    return this.command(commandId, () => (s = checkedCopy(spec)).replicaId, async () => {
      const r = this.replicas.get(s.replicaId);
      if (!r || !ACTIVE.has(r.state)) return this.startFresh(s, "started", " (it was not running)");
      if (s.generation < r.spec.generation) return stale(s, r);
      if (s.generation === r.spec.generation) return { ok: true, message: `${s.replicaId} already runs generation ${s.generation} (${r.state})` };
      return this.replace(r, s);
    });
  }

  /**
   * Stops a replica: SIGTERM to its process group, SIGKILL after `stopTimeoutMs`; answers once
   * the process has ended. A replica that does not run (unknown included) is answered ok.
   */
  stop(replicaId: string, commandId: string): Promise<CommandResult> {
    const key = () => {
      validateReplicaId(replicaId);
      return replicaId;
    };
    return this.command(commandId, key, async () => {
      const r = this.replicas.get(replicaId);
      if (!r) return { ok: true, message: `${replicaId} is not running` };
      if (!ACTIVE.has(r.state)) {
        const was = r.state;
        if (was !== "stopped") this.setState(r, "stopped", `stopped by command ${commandId} (it had ${was === "exited" ? "exited" : "failed"})`);
        return { ok: true, message: `${replicaId} is not running (${was})` };
      }
      const how = await this.stopProcess(r, `stopping by command ${commandId}`);
      this.setState(r, "stopped", `stopped by command ${commandId} (${how})`);
      return { ok: true, message: `stopped ${replicaId} (${how})` };
    });
  }

  /**
   * Whether the command's answer is recorded (it stands for good). An answer that is not (the
   * supervisor was closing, or could not record it) asks for the command to be sent again.
   */
  answered(commandId: string): boolean {
    return this.done.has(commandId);
  }

  /** Every replica the supervisor knows, running or not, by replicaId. */
  list(): ReplicaStatus[] {
    return [...this.replicas.values()].sort((a, b) => (a.spec.replicaId < b.spec.replicaId ? -1 : 1)).map((r) => this.status(r));
  }

  /**
   * Stops every replica (SIGTERM to each group at once, SIGKILL after `stopTimeoutMs`), waits
   * for commands under way, records the replicas stopped ("the agent stopped") and releases the
   * state dir. Commands sent meanwhile are answered ok:false, not recorded.
   */
  close(): Promise<void> {
    this.closing ??= (async () => {
      const ids = new Set([...this.replicas.keys(), ...this.queues.keys()]);
      await Promise.all(
        [...ids].map((id) =>
          this.enqueue(id, async () => {
            const r = this.replicas.get(id);
            if (!r || !ACTIVE.has(r.state)) return;
            const how = await this.stopProcess(r, "stopping: the agent stops");
            this.setState(r, "stopped", `the agent stopped (${how})`);
          }),
        ),
      );
      this.store.close();
      await this.lock.release();
    })();
    return this.closing;
  }

  // --- commands ---

  private command(commandId: string, check: () => string, act: () => Promise<{ ok: boolean; message: string }>): Promise<CommandResult> {
    try {
      validateCommandId(commandId);
    } catch (err) {
      return Promise.resolve({ commandId: typeof commandId === "string" ? commandId : "", ok: false, message: (err as Error).message });
    }
    const known = this.done.get(commandId);
    if (known) return Promise.resolve({ commandId, ...known });
    const running = this.inflight.get(commandId);
    if (running) return running;
    if (this.closing) return Promise.resolve({ commandId, ok: false, message: "the agent is stopping: send the command again later" });
    let key: string;
    try {
      key = check();
    } catch (err) {
      // A ValidationError, naming the field: a bad command stays bad, so its answer is recorded.
      return Promise.resolve(this.record(commandId, { ok: false, message: (err as Error).message }));
    }
    const p = this.enqueue(key, act).then(
      (outcome) => this.record(commandId, outcome),
      (err: unknown) => {
        this.log.error({ command_id: commandId, replica_id: key, err: (err as Error).message }, "a workload command failed");
        return { commandId, ok: false, message: `the agent could not carry out the command (${(err as Error).message}): send it again` };
      },
    );
    this.inflight.set(commandId, p);
    void p.finally(() => this.inflight.delete(commandId));
    return p;
  }

  /** Makes an answer durable before it is given; answers ok:false when it cannot be recorded. */
  private record(commandId: string, outcome: { ok: boolean; message: string }): CommandResult {
    const rec: CommandRecord = { id: commandId, ok: outcome.ok, message: outcome.message };
    try {
      this.store.appendCommand(rec, () => [...this.done].map(([id, v]) => ({ id, ...v })));
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
      this.log.error({ command_id: commandId, err: code }, "could not record a workload command");
      return { commandId, ok: false, message: `${outcome.message}; but the agent could not record the command (${code}): send it again` };
    }
    this.done.set(commandId, { ok: outcome.ok, message: outcome.message });
    for (const id of this.done.keys()) {
      if (this.done.size <= this.history) break;
      this.done.delete(id);
    }
    return { commandId, ...outcome };
  }

  /** Runs fn after everything queued for the same replica. */
  private enqueue<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.queues.get(key) ?? Promise.resolve();
    const next = prev.then(fn);
    const tail = next.then(
      () => undefined,
      () => undefined,
    );
    this.queues.set(key, tail);
    void tail.then(() => {
      if (this.queues.get(key) === tail) this.queues.delete(key);
    });
    return next;
  }

  private async startFresh(spec: ReplicaSpec, verb: string, note: string): Promise<{ ok: boolean; message: string }> {
    const old = this.replicas.get(spec.replicaId);
    if (old) clearTimeout(old.timer);
    const r: Replica = {
      spec,
      state: "starting",
      pid: null,
      restarts: 0,
      lastExitCode: null,
      lastSignal: null,
      startedAt: null,
      since: this.now(),
      reason: "starting",
      output: this.newTail(spec.replicaId),
      memory: { restartTimes: [], streak: 0 },
      stopping: false,
    };
    this.replicas.set(spec.replicaId, r);
    await this.startProcess(r);
    return { ok: true, message: `${verb} ${spec.replicaId} generation ${spec.generation}${note}: ${this.outcome(r)}` };
  }

  private async replace(r: Replica, spec: ReplicaSpec): Promise<{ ok: boolean; message: string }> {
    const from = r.spec.generation;
    const how = await this.stopProcess(r, `stopping: replaced by generation ${spec.generation}`);
    r.spec = spec;
    r.restarts = 0;
    r.memory = { restartTimes: [], streak: 0 };
    await this.startProcess(r);
    return { ok: true, message: `updated ${spec.replicaId} from generation ${from} (${how}) to ${spec.generation}: ${this.outcome(r)}` };
  }

  private outcome(r: Replica): string {
    return r.state === "running" ? `running, pid ${r.pid}` : `${r.state}, ${r.reason}`;
  }

  // --- processes ---

  private newTail(replicaId: string): OutputTail {
    const onOutput = this.opts.onOutput;
    return new OutputTail(this.outputLines, onOutput ? (stream, line) => onOutput(replicaId, stream, line) : undefined);
  }

  private envFor(r: Replica, instance: string): NodeJS.ProcessEnv {
    const env: Record<string, string> = {};
    for (const name of INHERITED_ENV) {
      const v = process.env[name];
      if (v !== undefined) env[name] = v;
    }
    env.PATH ??= DEFAULT_PATH;
    return {
      ...env,
      ...r.spec.env,
      AUTONOMY_REPLICA_ID: r.spec.replicaId,
      AUTONOMY_SERVICE: r.spec.service,
      AUTONOMY_REPLICA_INDEX: String(r.spec.index),
      AUTONOMY_GENERATION: String(r.spec.generation),
      AUTONOMY_REPLICA_INSTANCE: instance,
    };
  }

  /** Starts the replica's process; resolves once it runs or could not start. */
  private startProcess(r: Replica): Promise<void> {
    r.timer = undefined;
    const { spec } = r;
    const cwd = path.join(this.opts.stateDir, "replicas", spec.replicaId);
    const instance = randomBytes(12).toString("hex");
    const env = this.envFor(r, instance);
    const cannot = (startError: string) => {
      this.ended(r, { code: null, signal: null, startError }, 0);
      return Promise.resolve();
    };
    try {
      mkdirSync(cwd, { recursive: true, mode: 0o700 });
    } catch (err) {
      return cannot(`cannot make its working directory ${cwd} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
    }
    const found = resolveCommand(spec.command, env.PATH, cwd);
    if ("error" in found) return cannot(found.error);
    let started: ReturnType<typeof startWatched>;
    try {
      started = startWatched(`replica ${spec.replicaId}`, spec.command, spec.args, env, cwd, this.stopTimeoutMs);
    } catch (err) {
      return cannot(`cannot start a process (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
    }
    const { child, pid } = started;
    return new Promise<void>((resolve) => {
      let spawned = false;
      let finished = false;
      let endResolve!: (e: ExitInfo) => void;
      r.ended = new Promise<ExitInfo>((res) => (endResolve = res));
      const finish = (exit: ExitInfo) => {
        if (finished) return;
        finished = true;
        const ranMs = r.startedAt === null ? 0 : this.now() - r.startedAt;
        r.child = undefined;
        r.output.flush();
        endResolve(exit);
        this.ended(r, exit, ranMs);
        resolve();
      };
      child.once("error", (err: NodeJS.ErrnoException) => {
        if (!spawned) finish({ code: null, signal: null, startError: `cannot start a process (${err.code ?? err.message})` });
        else this.log.warn({ replica_id: spec.replicaId, err: err.message }, "error from a replica's process");
      });
      if (pid === 0) return;
      for (const stream of [child.stdout!, child.stderr!]) {
        const name = stream === child.stdout ? "stdout" : "stderr";
        stream.setEncoding("utf8");
        stream.on("data", (text: string) => r.output.push(name, text));
        stream.on("error", () => {});
      }
      // The agent's end of the watchdog's socket: never written; its close is the signal.
      (child.stdio[3] as NodeJS.EventEmitter | null)?.on("error", () => {});
      child.once("spawn", () => {
        spawned = true;
        // A stop that came first says what follows; the process is ending already.
        if (r.child !== child || r.stopping) return resolve();
        this.log.info({ replica_id: spec.replicaId, generation: spec.generation, pid, restarts: r.restarts }, "replica started");
        this.setState(r, "running", r.restarts === 0 ? "running" : `running after ${r.restarts} restart${r.restarts === 1 ? "" : "s"}`);
        resolve();
      });
      child.once("exit", (code, signal) => {
        // What the replica left in its group (the watchdog among it) goes with it. The watchdog
        // keeps the group alive until now, so its id cannot have been reused.
        signalGroup(pid, "SIGKILL");
        const drained = new Promise<void>((res) => child.once("close", () => res()));
        void Promise.race([drained, sleep(DRAIN_MS)]).then(() => {
          for (const s of child.stdio) s?.destroy();
          finish({ code, signal });
        });
      });
      r.child = child;
      r.pid = pid;
      r.procStart = started.procStart;
      r.bootId = this.boot;
      r.instance = instance;
      r.startedAt = this.now();
      this.setState(r, "starting", r.restarts === 0 ? "starting" : `restart ${r.restarts}`);
    });
  }

  /** The replica's process ended, or could not start. */
  private ended(r: Replica, exit: ExitInfo, ranMs: number): void {
    r.pid = null;
    r.startedAt = null;
    r.procStart = undefined;
    r.lastExitCode = exit.code;
    r.lastSignal = exit.signal;
    if (r.stopping) return; // stopProcess says what follows
    const d = decideRestart(r.spec.restartPolicy, exit, ranMs, this.now(), r.memory, this.backoff, this.crashloop);
    const fields = { replica_id: r.spec.replicaId, generation: r.spec.generation, code: exit.code, signal: exit.signal, restarts: r.restarts };
    if (!d.restart) {
      if (d.state === "failed" || exit.code !== 0) this.log.warn(fields, d.reason);
      else this.log.info(fields, d.reason);
      this.setState(r, d.state, d.reason);
      return;
    }
    this.log.warn({ ...fields, delay_ms: d.delayMs }, d.reason);
    this.setState(r, d.state, d.reason);
    r.timer = setTimeout(() => {
      r.restarts++;
      void this.startProcess(r);
    }, d.delayMs);
  }

  /**
   * Ends the replica's process, if any: SIGTERM to its group, SIGKILL after stopTimeoutMs.
   * Cancels a pending restart. Says how it ended; the caller sets the next state.
   */
  private async stopProcess(r: Replica, reason: string): Promise<string> {
    clearTimeout(r.timer);
    r.timer = undefined;
    if (!r.child || r.pid === null || !r.ended) return r.state === "backoff" || r.state === "crashloop" ? "it was waiting to restart" : "it was not running";
    const pgid = r.pid;
    r.stopping = true;
    this.setState(r, "stopping", reason);
    signalGroup(pgid, "SIGTERM");
    let killed = false;
    const timer = setTimeout(() => {
      killed = true;
      this.log.warn({ replica_id: r.spec.replicaId, pid: pgid, stop_timeout_ms: this.stopTimeoutMs }, "the replica did not stop in time: SIGKILL to its process group");
      signalGroup(pgid, "SIGKILL");
    }, this.stopTimeoutMs);
    const exit = await r.ended;
    clearTimeout(timer);
    r.stopping = false;
    this.log.info({ replica_id: r.spec.replicaId, pid: pgid, code: exit.code, signal: exit.signal }, "replica stopped");
    return killed ? `did not end within ${formatDuration(this.stopTimeoutMs)} of SIGTERM: killed by SIGKILL` : describeExit(exit);
  }

  // --- state ---

  private setState(r: Replica, state: ReplicaState, reason: string): void {
    r.state = state;
    r.reason = reason;
    r.since = this.now();
    if (!ACTIVE.has(state)) this.forgetOldest();
    this.persist();
    this.notify(r);
  }

  private forgetOldest(): void {
    const finished = [...this.replicas.values()].filter((x) => !ACTIVE.has(x.state));
    if (finished.length <= MAX_FINISHED) return;
    finished.sort((a, b) => a.since - b.since);
    for (const x of finished.slice(0, finished.length - MAX_FINISHED)) this.replicas.delete(x.spec.replicaId);
  }

  private persist(): void {
    try {
      this.store.writeReplicas([...this.replicas.values()].map((r) => this.toRecord(r)));
      if (this.persistFailing) this.log.info({}, "recording the replicas works again");
      this.persistFailing = false;
    } catch (err) {
      if (!this.persistFailing) this.log.error({ err: (err as NodeJS.ErrnoException).code ?? (err as Error).message }, "could not record the replicas in the state dir");
      this.persistFailing = true;
    }
  }

  private toRecord(r: Replica): ReplicaRecord {
    return {
      spec: r.spec,
      state: r.state,
      pid: r.pid,
      procStart: r.procStart,
      bootId: r.pid === null ? undefined : r.bootId,
      instance: r.pid === null ? undefined : r.instance,
      restarts: r.restarts,
      lastExitCode: r.lastExitCode,
      lastSignal: r.lastSignal,
      startedAt: r.startedAt,
      since: r.since,
      reason: r.reason,
    };
  }

  private status(r: Replica): ReplicaStatus {
    return {
      replicaId: r.spec.replicaId,
      service: r.spec.service,
      index: r.spec.index,
      generation: r.spec.generation,
      state: r.state,
      pid: r.pid,
      restarts: r.restarts,
      lastExitCode: r.lastExitCode,
      lastSignal: r.lastSignal,
      lastOutput: r.output.snapshot(),
      startedAt: r.startedAt,
      since: r.since,
      reason: r.reason,
    };
  }

  // --- what an earlier run left ---

  /**
   * Takes in the replicas an earlier run recorded. Those that were not finished are reported
   * stopped; any of their processes still alive is ended. A process is taken for theirs only
   * when it is the recorded pid with the recorded start time (and boot), or a member of its
   * process group started after it with the replica's instance token in its environment.
   */
  private async adopt(records: ReplicaRecord[]): Promise<void> {
    let procs: ProcStat[] | undefined;
    const work: Promise<void>[] = [];
    for (const rec of records) {
      const r: Replica = {
        spec: rec.spec,
        state: rec.state as ReplicaState,
        pid: null,
        restarts: rec.restarts ?? 0,
        lastExitCode: rec.lastExitCode ?? null,
        lastSignal: rec.lastSignal ?? null,
        startedAt: null,
        since: rec.since ?? this.now(),
        reason: rec.reason ?? "",
        output: this.newTail(rec.spec.replicaId),
        memory: { restartTimes: [], streak: 0 },
        stopping: false,
      };
      this.replicas.set(rec.spec.replicaId, r);
      if (!ACTIVE.has(r.state) && rec.pid === null) continue;
      const pgid = rec.pid;
      if (pgid === null) {
        this.markOrphan(r, "it was not running");
        continue;
      }
      if (!hasProc || this.boot === undefined || rec.procStart === undefined) {
        this.log.warn({ replica_id: rec.spec.replicaId, pid: pgid }, "cannot tell whether a replica of an earlier agent run still runs here (no /proc)");
        this.markOrphan(r, `cannot check its pid ${pgid} here`);
        continue;
      }
      if (rec.bootId !== this.boot) {
        this.markOrphan(r, "the machine has restarted since");
        continue;
      }
      procs ??= listProcesses();
      const leader = procs.find((p) => p.pid === pgid && p.startTime === rec.procStart);
      const token = rec.instance === undefined ? undefined : `AUTONOMY_REPLICA_INSTANCE=${rec.instance}`;
      const members: Orphan[] = procs
        .filter((p) => p.pgid === pgid && (p === leader || (token !== undefined && BigInt(p.startTime) >= BigInt(rec.procStart!) && environHas(p.pid, token))))
        .map((p) => ({ pid: p.pid, startTime: p.startTime }));
      if (members.length === 0) {
        this.markOrphan(r, "its processes had ended");
        continue;
      }
      this.log.warn({ replica_id: rec.spec.replicaId, pids: members.map((m) => m.pid) }, "ending the processes of a replica of an earlier agent run");
      work.push(
        this.endOrphans(pgid, leader === undefined ? undefined : rec.procStart!, members).then((how) =>
          this.markOrphan(r, `ended pid ${members.map((m) => m.pid).join(", ")} (${how})`),
        ),
      );
    }
    await Promise.all(work);
    this.persist();
  }

  private markOrphan(r: Replica, detail: string): void {
    r.state = "stopped";
    r.reason = `orphan of an earlier agent run: ${detail}`;
    r.since = this.now();
    r.pid = null;
    this.notify(r);
  }
  /** Tells the listener a replica's state changed; a listener that throws is logged, not fatal. */
  private notify(r: Replica): void {
    const cb = this.opts.onChange;
    if (!cb) return;
    try {
      cb(this.status(r));
    } catch (err) {
      this.log.error({ replica_id: r.spec.replicaId, err: (err as Error).message }, "a replica state listener failed");
    }
  }


  /** SIGTERM, then SIGKILL after stopTimeoutMs, to processes that are not the agent's children. */
  private async endOrphans(pgid: number, leaderStart: string | undefined, members: Orphan[]): Promise<string> {
    const same = (m: Orphan) => {
      const s = readProcStat(m.pid);
      return s !== undefined && s.startTime === m.startTime && s.state !== "Z" && s.state !== "X";
    };
    const send = (signal: NodeJS.Signals) => {
      // The whole group only while its verified leader lives: after that its id might be reused.
      if (leaderStart !== undefined && same({ pid: pgid, startTime: leaderStart })) signalGroup(pgid, signal);
      for (const m of members) if (same(m)) signalProcess(m.pid, signal);
    };
    const gone = async (ms: number) => {
      const end = Date.now() + ms;
      while (members.some(same)) {
        if (Date.now() > end) return false;
        await sleep(50);
      }
      return true;
    };
    send("SIGTERM");
    if (await gone(this.stopTimeoutMs)) return "SIGTERM";
    send("SIGKILL");
    const how = `SIGTERM, then SIGKILL after ${formatDuration(this.stopTimeoutMs)}`;
    if (await gone(5000)) return how;
    this.log.error({ pids: members.filter(same).map((m) => m.pid) }, "processes of an earlier agent run survived SIGKILL");
    return `${how}; a process survived it`;
  }
}

/** The spec validated and copied as the command arrives: later changes by the caller do not reach it. */
function checkedCopy(spec: ReplicaSpec): ReplicaSpec {
  validateReplicaSpec(spec);
  return copySpec(spec);
}

function stale(spec: ReplicaSpec, r: Replica): { ok: false; message: string } {
  return { ok: false, message: `generation: ${spec.generation} is older than generation ${r.spec.generation}, which ${spec.replicaId} runs` };
}

function checkOptions(opts: SupervisorOptions): void {
  const positive = (field: string, v: number | undefined) => {
    if (v !== undefined && !(Number.isFinite(v) && v > 0)) throw new ValidationError(field, "must be a number above 0");
  };
  if (typeof opts.stateDir !== "string" || opts.stateDir === "") throw new ValidationError("stateDir", "must not be empty");
  positive("backoff.initialMs", opts.backoff?.initialMs);
  positive("backoff.maxMs", opts.backoff?.maxMs);
  if (opts.backoff && opts.backoff.maxMs < opts.backoff.initialMs) throw new ValidationError("backoff.maxMs", "must not be below backoff.initialMs");
  positive("crashloop.windowMs", opts.crashloop?.windowMs);
  if (opts.crashloop && !(Number.isSafeInteger(opts.crashloop.restarts) && opts.crashloop.restarts >= 0)) {
    throw new ValidationError("crashloop.restarts", "must be an integer of 0 or more");
  }
  positive("stopTimeoutMs", opts.stopTimeoutMs);
  if (opts.outputLines !== undefined && !(Number.isSafeInteger(opts.outputLines) && opts.outputLines >= 0)) throw new ValidationError("outputLines", "must be an integer of 0 or more");
  if (opts.commandHistory !== undefined && !(Number.isSafeInteger(opts.commandHistory) && opts.commandHistory > 0)) {
    throw new ValidationError("commandHistory", "must be an integer above 0");
  }
}
