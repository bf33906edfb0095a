import { setTimeout as sleep } from "node:timers/promises";
import { Code, ConnectError } from "@connectrpc/connect";
import type { OrchestratorClients } from "../../../clients/index.js";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { ReportWorkloadsRequestSchema } from "../../../gen/autonomy/v1/agent_pb.js";
import type { CommandAck, ReplicaReportSchema, WorkloadCommand } from "../../../gen/autonomy/v1/workloads_pb.js";
import { ValidationError } from "../../domain/errors.js";
import type { Logger } from "../../observability/logger.js";
import { readWorkloadCommand } from "./commands.js";
import { Supervisor, type CommandResult, type ReplicaStatus } from "./supervisor.js";
import { UsageSampler, type Usage } from "./usage.js";

/** What the node offers to replicas. */
export interface Capacity {
  cpuMillis: number;
  memoryBytes: number;
}

export interface WorkloadRunnerOptions {
  api: Pick<OrchestratorClients, "agent">;
  logger: Logger;
  nodeId: string;
  /** The supervisor's state dir (under the agent's). */
  stateDir: string;
  capacity: Capacity;
  /** A report goes at least this often. */
  heartbeatIntervalMs: number;
  /** A change is reported this long after it (default 200 ms), with whatever else changed meanwhile. */
  debounceMs?: number;
  /** The supervisor's SIGTERM-to-SIGKILL wait (default 10 s). */
  stopTimeoutMs?: number;
  /** Something `edgectl status` shows changed (called at most every debounceMs). */
  onChange?: () => void;
}

/** What the runner knows, for status.json. */
export interface WorkloadStatus {
  capacity: { cpu_millis: number; memory_bytes: number };
  usage: { cpu_millis: number; memory_bytes: number };
  /** ok, failing: why, or unsupported (the orchestrator does not take reports). */
  reports: { state: string; since: string; last_ok_at?: string };
  replicas: { replica_id: string; generation: number; state: string; restarts: number; reason: string; pid: number | null }[];
}

/** An orchestrator without ReportWorkloads (an older one) is asked again this often. */
const UNIMPLEMENTED_RETRY_MS = 300_000;
/** Answers kept until a report carries them; beyond this the oldest go (the orchestrator sends those commands again). */
const MAX_PENDING_ACKS = 10_000;
type Ack = Pick<CommandAck, "commandId" | "ok" | "message">;

/**
 * Runs the node's replicas for the control plane: takes workload commands (from the push
 * stream and from ReportWorkloads answers), checks each, hands it to the supervisor with its
 * command id as the idempotency key, and sends ReportWorkloads (capacity, use, every replica,
 * the answers) soon after any change and at least every heartbeat interval. An answer is sent
 * again with every report until one that carries it succeeds. Replicas keep running whatever
 * happens to the connection; closing the runner stops them.
 */
export class WorkloadRunner {
  private readonly acks = new Map<string, Ack>();
  private readonly inflight = new Set<string>();
  private readonly sampler = new UsageSampler();
  private readonly stopLoop = new AbortController();
  private loop: Promise<void> = Promise.resolve();
  private dirtyAt: number | undefined = Date.now();
  private retryAt = 0;
  private wake: (() => void) | undefined;
  private unsupported = false;
  private failures = 0;
  private reports: WorkloadStatus["reports"] = { state: "not reported yet", since: new Date().toISOString() };
  private usage: { total: Usage; replicas: Map<string, Usage> } = { total: { cpuMillis: 0, memoryBytes: 0 }, replicas: new Map() };
  private statusTimer: NodeJS.Timeout | undefined;
  private sup!: Supervisor;

  private constructor(private readonly opts: WorkloadRunnerOptions) {}

  /** Opens the supervisor (it ends what an earlier run left behind). Throws when another agent holds the state dir. */
  static async open(opts: WorkloadRunnerOptions): Promise<WorkloadRunner> {
    const runner = new WorkloadRunner(opts);
    runner.sup = await Supervisor.open({
      stateDir: opts.stateDir,
      log: opts.logger,
      stopTimeoutMs: opts.stopTimeoutMs,
      onChange: () => runner.changed(),
    });
    return runner;
  }

  /** Starts reporting, until close(). */
  start(signal: AbortSignal): void {
    const stop = AbortSignal.any([signal, this.stopLoop.signal]);
    this.loop = this.reportLoop(stop);
  }

  /** Takes a command in; its answer goes in the next report. */
  handle(cmd: WorkloadCommand): void {
    const log = this.opts.logger;
    // Closing: the supervisor takes no more; the orchestrator sends what stays unanswered again.
    if (this.stopLoop.signal.aborted) return;
    let action;
    try {
      action = readWorkloadCommand(cmd);
    } catch (err) {
      if (!(err instanceof ValidationError)) throw err;
      log.warn({ command_id: cmd.commandId, err: err.message }, "refused a workload command");
      if (cmd.commandId !== "") this.answer({ commandId: cmd.commandId, ok: false, message: err.message });
      return;
    }
    const id = action.commandId;
    if (this.inflight.has(id)) return;
    this.inflight.add(id);
    const fields = { command_id: id, action: action.kind, replica_id: action.kind === "stop" ? action.replicaId : action.spec.replicaId };
    log.info(action.kind === "stop" ? { ...fields, reason: action.reason } : { ...fields, generation: action.spec.generation }, "workload command");
    const done: Promise<CommandResult> =
      action.kind === "stop" ? this.sup.stop(action.replicaId, id) : this.sup[action.kind](action.spec, id);
    void done.then((r) => {
      this.inflight.delete(id);
      if (!this.sup.answered(id)) {
        // Not recorded (the agent is stopping, or the state dir cannot be written): unanswered, so sent again.
        log.warn({ ...fields, message: r.message }, "a workload command could not be carried out now");
        return;
      }
      if (r.ok) log.info({ ...fields, message: r.message }, "workload command done");
      else log.warn({ ...fields, message: r.message }, "workload command refused");
      this.answer(r);
    });
  }

  /** Reports now (after the debounce), also while backing off: the connection is back (the push stream reopened). */
  reportSoon(): void {
    if (!this.unsupported) this.retryAt = 0;
    this.changed();
  }

  /** Every replica the supervisor knows. */
  replicas(): ReplicaStatus[] {
    return this.sup.list();
  }

  snapshot(): WorkloadStatus {
    const { capacity } = this.opts;
    return {
      capacity: { cpu_millis: capacity.cpuMillis, memory_bytes: capacity.memoryBytes },
      usage: { cpu_millis: this.usage.total.cpuMillis, memory_bytes: this.usage.total.memoryBytes },
      reports: this.reports,
      replicas: this.sup.list().map((r) => ({ replica_id: r.replicaId, generation: r.generation, state: r.state, restarts: r.restarts, reason: r.reason, pid: r.pid })),
    };
  }

  /**
   * Stops the replicas (the supervisor's close: SIGTERM, SIGKILL after the stop timeout), then
   * makes one last report, not tied to the stop signal and 5 s at most, so the orchestrator
   * learns they stopped.
   */
  async close(): Promise<void> {
    this.stopLoop.abort();
    await this.loop;
    await this.sup.close();
    clearTimeout(this.statusTimer);
    if (!this.unsupported) {
      try {
        await this.send(undefined, 5000);
      } catch (err) {
        this.opts.logger.warn({ err: ConnectError.from(err).message }, "could not report the stopped replicas");
      }
    }
    this.opts.onChange?.();
  }

  private answer(a: Ack): void {
    this.acks.delete(a.commandId);
    this.acks.set(a.commandId, { commandId: a.commandId, ok: a.ok, message: a.message });
    for (const id of this.acks.keys()) {
      if (this.acks.size <= MAX_PENDING_ACKS) break;
      this.acks.delete(id);
    }
    this.changed();
  }

  private changed(): void {
    this.dirtyAt ??= Date.now();
    this.wake?.();
    if (this.statusTimer === undefined && this.opts.onChange) {
      this.statusTimer = setTimeout(() => {
        this.statusTimer = undefined;
        this.opts.onChange?.();
      }, this.opts.debounceMs ?? 200);
      this.statusTimer.unref();
    }
  }

  private setReports(state: string): void {
    if (state !== this.reports.state) this.reports = { ...this.reports, state, since: new Date().toISOString() };
  }

  /** Sends one report; on success forgets the answers it carried and takes the commands of the answer. */
  private async send(signal: AbortSignal | undefined, timeoutMs?: number): Promise<void> {
    const { acks, request } = this.request();
    const res = await this.opts.api.agent.reportWorkloads(request, { signal, timeoutMs });
    for (const a of acks) if (this.acks.get(a.commandId) === a) this.acks.delete(a.commandId);
    this.reports = { ...this.reports, last_ok_at: new Date().toISOString() };
    this.setReports("ok");
    for (const c of res.commands) this.handle(c);
  }

  private request(): { acks: Ack[]; request: MessageInitShape<typeof ReportWorkloadsRequestSchema> } {
    const statuses = this.sup.list();
    const groups = new Map<string, number>();
    for (const s of statuses) if (s.pid !== null) groups.set(s.replicaId, s.pid);
    this.usage = this.sampler.sample(groups);
    const resources = (u: Usage | undefined) => ({ cpuMillis: BigInt(u?.cpuMillis ?? 0), memoryBytes: BigInt(u?.memoryBytes ?? 0) });
    const replicas: MessageInitShape<typeof ReplicaReportSchema>[] = statuses.map((s) => ({
      replicaId: s.replicaId,
      service: s.service,
      index: s.index,
      generation: BigInt(s.generation),
      state: s.state,
      reason: s.reason,
      restarts: s.restarts,
      lastExitCode: s.lastExitCode ?? undefined,
      lastOutput: s.lastOutput,
      usage: resources(this.usage.replicas.get(s.replicaId)),
    }));
    const acks = [...this.acks.values()];
    const { capacity } = this.opts;
    const request: MessageInitShape<typeof ReportWorkloadsRequestSchema> = {
      nodeId: this.opts.nodeId,
      capacity: { cpuMillis: BigInt(capacity.cpuMillis), memoryBytes: BigInt(capacity.memoryBytes) },
      usage: resources(this.usage.total),
      replicas,
      acks,
    };
    return { acks, request };
  }

  private async reportLoop(signal: AbortSignal): Promise<void> {
    const { logger, heartbeatIntervalMs } = this.opts;
    const debounceMs = this.opts.debounceMs ?? 200;
    let nextBeat = 0;
    while (!signal.aborted) {
      const due = Math.max(this.retryAt, this.dirtyAt === undefined ? nextBeat : Math.min(nextBeat, this.dirtyAt + debounceMs));
      const wait = due - Date.now();
      if (wait > 0) {
        const woken = new AbortController();
        this.wake = () => woken.abort();
        await sleep(wait, undefined, { signal: AbortSignal.any([signal, woken.signal]) }).catch(() => {});
        this.wake = undefined;
        continue;
      }
      this.dirtyAt = undefined;
      try {
        await this.send(signal);
        if (this.failures > 0 || this.unsupported) logger.info({ after_failures: this.failures }, "reporting workloads again");
        this.failures = 0;
        this.unsupported = false;
        this.retryAt = 0;
        nextBeat = Date.now() + heartbeatIntervalMs;
      } catch (err) {
        if (signal.aborted) break;
        const e = ConnectError.from(err);
        this.dirtyAt ??= Date.now();
        if (e.code === Code.Unimplemented) {
          if (!this.unsupported) logger.warn({ retry_in_ms: UNIMPLEMENTED_RETRY_MS }, "the orchestrator does not take workload reports (an older server); replicas it asked for keep running; asking again later");
          this.unsupported = true;
          this.setReports("unsupported: the orchestrator does not take workload reports");
          this.retryAt = Date.now() + UNIMPLEMENTED_RETRY_MS;
        } else {
          this.failures++;
          const delay = Math.min(30_000, heartbeatIntervalMs, 250 * 2 ** Math.min(this.failures - 1, 8));
          const state = `failing: ${e.message}`;
          // Logged when the reason changes, not on every retry.
          if (state !== this.reports.state) logger.warn({ err: e.message, code: Code[e.code], retry_in_ms: delay }, "could not report workloads; replicas keep running; will retry");
          this.setReports(state);
          this.retryAt = Date.now() + delay;
        }
      }
      this.opts.onChange?.();
    }
  }
}
