/**
 * Push to edge agents: each node's stream of AgentService.Subscribe.
 *
 * Every message for a node takes the node's next sequence. The sequences of one server run
 * start at its start time in milliseconds × 1000, so those of a later run are above those of an
 * earlier one and an agent can tell "I have seen this" from "this is new" across restarts. The
 * last WINDOW messages of each node that subscribed during this run are held in memory, so an
 * agent that reconnects gets what it missed, in order; when the server no longer holds them
 * (it restarted, or they fell out of the window), the hello says `resumed: false` and the agent
 * reads its state afresh. A desired-release change is a hint (the agent reads the release it
 * verifies with GetDesiredRelease), so a lost one costs a poll interval, never a wrong install.
 *
 * Memory: one log per node that subscribed during this run (bounded by the enrolled nodes), of
 * at most WINDOW messages; a stream whose client reads slower than its messages come is ended
 * after MAX_PENDING unread ones (the agent reconnects and resumes).
 */
import { create, fromJsonString } from "@bufbuild/protobuf";
import { timestampFromMs, timestampNow } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import { type AgentService, SubscribeResponseSchema, type SubscribeResponse } from "../../gen/autonomy/v1/agent_pb.js";
import { WorkloadCommandSchema, type WorkloadCommand } from "../../gen/autonomy/v1/workloads_pb.js";
import { NotFoundError, ValidationError } from "../domain/errors.js";
import { checkId } from "../domain/fields.js";
import type { Metrics } from "../observability/metrics.js";
import type { SightingBuffer } from "../store/sightings.js";
import type { Store } from "../store/store.js";
import type { WorkloadHooks } from "../workloads/inputs.js";

/** How often a stream carries a keepalive when nothing else is sent (--push-keepalive). */
export const DEFAULT_PUSH_KEEPALIVE_MS = 15_000;
/** Messages held per node for agents that reconnect. */
export const PUSH_WINDOW = 64;
/** Unread messages one stream may have before it is ended. */
export const MAX_PENDING = 256;

type Body = Exclude<SubscribeResponse["kind"], { case: undefined }>;

interface Subscriber {
  push(m: SubscribeResponse): void;
  end(err: ConnectError): void;
}

interface NodeLog {
  channel: string;
  last: bigint;
  window: SubscribeResponse[];
  subscribers: Set<Subscriber>;
}

export interface PushHubOptions {
  keepaliveMs?: number;
  /** The first sequence of this run is above startMs × 1000 (default: now). */
  startMs?: number;
  onStreams?: (open: number) => void;
}

export class PushHub {
  readonly keepaliveMs: number;
  /** Sequences of this run are above this one. */
  readonly base: bigint;
  private readonly logs = new Map<string, NodeLog>();
  private open = 0;
  private closed = false;

  constructor(private readonly opts: PushHubOptions = {}) {
    this.keepaliveMs = opts.keepaliveMs ?? DEFAULT_PUSH_KEEPALIVE_MS;
    if (!(this.keepaliveMs > 0)) throw new Error("--push-keepalive: must be greater than 0");
    this.base = BigInt(Math.floor(opts.startMs ?? Date.now())) * 1000n;
  }

  /** Streams open now. */
  get streams(): number {
    return this.open;
  }

  /** Nodes a rollout stage moved to a release. */
  nodesMoved(nodeIds: readonly string[], releaseId: string, planId: string): void {
    for (const id of nodeIds) this.send(id, { case: "desiredReleaseChanged", value: { $typeName: "autonomy.v1.DesiredReleaseChanged", releaseId, planId } });
  }

  /** An unstaged release published on a channel: every node of the channel follows it. */
  channelReleased(channel: string, releaseId: string): void {
    for (const [id, log] of this.logs) {
      if (log.channel === channel) this.send(id, { case: "desiredReleaseChanged", value: { $typeName: "autonomy.v1.DesiredReleaseChanged", releaseId, planId: "" } });
    }
  }

  /** A workload command for a node; false when the node has no stream open here (its next report answers it). */
  workloadCommand(nodeId: string, command: WorkloadCommand): boolean {
    const open = (this.logs.get(nodeId)?.subscribers.size ?? 0) > 0;
    this.send(nodeId, { case: "workloadCommand", value: command });
    return open;
  }

  /** Appends a message to a node's log and hands it to its open streams. Nodes that never subscribed this run hold no log. */
  private send(nodeId: string, kind: Body): void {
    const log = this.logs.get(nodeId);
    if (!log) return;
    log.last++;
    const message = create(SubscribeResponseSchema, { sequence: log.last, sentAt: timestampNow(), kind });
    log.window.push(message);
    if (log.window.length > PUSH_WINDOW) log.window.shift();
    for (const s of log.subscribers) s.push(message);
  }

  /**
   * A node's stream: a hello, what came after `after` (when still held), then each new message
   * and keepalives, until the signal aborts or the hub closes.
   */
  async *stream(nodeId: string, channel: string, after: bigint, signal: AbortSignal, recheck?: () => Promise<void>): AsyncGenerator<SubscribeResponse> {
    if (this.closed) throw new ConnectError("the server is shutting down", Code.Unavailable);
    let log = this.logs.get(nodeId);
    if (!log) this.logs.set(nodeId, (log = { channel, last: this.base, window: [], subscribers: new Set() }));
    log.channel = channel;
    const oldest = log.window.length > 0 ? log.window[0].sequence : log.last + 1n;
    const resumed = after >= this.base && after <= log.last && after + 1n >= oldest;
    const pending: SubscribeResponse[] = resumed ? log.window.filter((m) => m.sequence > after) : [];
    let wake: (() => void) | undefined;
    let ended: ConnectError | undefined;
    const sub: Subscriber = {
      push(m) {
        if (pending.length >= MAX_PENDING) sub.end(new ConnectError(`the agent reads too slowly: ${MAX_PENDING} messages unread`, Code.ResourceExhausted));
        else pending.push(m);
        wake?.();
      },
      end(err) {
        ended ??= err;
        wake?.();
      },
    };
    const onAbort = () => wake?.();
    signal.addEventListener("abort", onAbort);
    log.subscribers.add(sub);
    this.opts.onStreams?.(++this.open);
    const frame = (kind: Body, sequence = log.last) => create(SubscribeResponseSchema, { sequence, sentAt: timestampNow(), kind });
    try {
      yield frame({ case: "hello", value: { $typeName: "autonomy.v1.StreamHello", resumed, keepaliveIntervalMs: this.keepaliveMs } });
      while (!signal.aborted) {
        if (ended) throw ended;
        const next = pending.shift();
        if (next) {
          yield next;
          continue;
        }
        const timedOut = await new Promise<boolean>((resolve) => {
          const timer = setTimeout(() => resolve(true), this.keepaliveMs);
          wake = () => {
            clearTimeout(timer);
            resolve(false);
          };
        });
        wake = undefined;
        if (timedOut && !signal.aborted && !ended && pending.length === 0) {
          // The credential is checked again at each keepalive: a revoked token ends the stream.
          await recheck?.();
          yield frame({ case: "keepalive", value: { $typeName: "autonomy.v1.StreamKeepalive" } });
        }
      }
    } finally {
      signal.removeEventListener("abort", onAbort);
      log.subscribers.delete(sub);
      this.opts.onStreams?.(--this.open);
    }
  }

  /** Ends every open stream (`unavailable`: the agents reconnect elsewhere or later). */
  close(): void {
    this.closed = true;
    const err = new ConnectError("the server is shutting down", Code.Unavailable);
    for (const log of this.logs.values()) for (const s of log.subscribers) s.end(err);
  }
}

export interface AgentServiceDeps {
  store: Store;
  push: PushHub;
  metrics: Metrics;
  /** Checks a stream's bearer token again (the authorizer's principalOf); throws once it is revoked or expired. */
  authorizer?: { principalOf(peer: undefined, authorization: string | null): Promise<unknown> };
  /** A workload report counts as the node being seen. */
  sightings?: SightingBuffer;
  /** Tells the reconcile loop of each report. */
  workloads?: WorkloadHooks;
}

/** Most replicas one report may list, and lines of output kept per replica. */
export const MAX_REPORTED_REPLICAS = 10_000;
export const MAX_REPORTED_LINES = 50;
const MAX_LINE_CHARS = 1000;
const MAX_ACKS = 10_000;

const count = (v: bigint | undefined, field: string): number => {
  const n = Number(v ?? 0n);
  if (!Number.isSafeInteger(n) || n < 0) throw new ValidationError(field, "must be 0 or more");
  return n;
};

const KIND_LABELS: Record<Body["case"], string> = {
  hello: "hello",
  keepalive: "keepalive",
  desiredReleaseChanged: "desired_release_changed",
  workloadCommand: "workload_command",
};

/** AgentService: the node's stream. The authorization interceptor holds a node to its own node_id. */
export function createAgentService(deps: AgentServiceDeps): ServiceImpl<typeof AgentService> {
  return {
    async *subscribe(req, ctx) {
      checkId(req.nodeId, "node_id", true);
      const node = await deps.store.getNode(req.nodeId);
      if (!node) throw new NotFoundError(`node "${req.nodeId}" is not enrolled; enrol it first (edgectl enroll)`);
      const authorization = ctx.requestHeader.get("authorization");
      const recheck =
        authorization && deps.authorizer
          ? async () => {
              try {
                await deps.authorizer!.principalOf(undefined, authorization);
              } catch (err) {
                throw new ConnectError(`the stream's credential is no longer valid: ${(err as Error).message}`, Code.Unauthenticated);
              }
            }
          : undefined;
      for await (const m of deps.push.stream(node.nodeId, node.channel, req.afterSequence, ctx.signal, recheck)) {
        if (m.kind.case) deps.metrics.agentPushed.inc({ kind: KIND_LABELS[m.kind.case] });
        yield m;
      }
    },

    async reportWorkloads(req) {
      checkId(req.nodeId, "node_id", true);
      if (req.replicas.length > MAX_REPORTED_REPLICAS) throw new ValidationError("replicas", `at most ${MAX_REPORTED_REPLICAS} replicas`);
      if (req.acks.length > MAX_ACKS) throw new ValidationError("acks", `at most ${MAX_ACKS} acks`);
      const replicas = req.replicas.map((r, i) => {
        checkId(r.replicaId, `replicas[${i}].replica_id`, true);
        checkId(r.service, `replicas[${i}].service`, true);
        checkId(r.state, `replicas[${i}].state`, true);
        return {
          replicaId: r.replicaId,
          service: r.service,
          index: r.index,
          generation: count(r.generation, `replicas[${i}].generation`),
          state: r.state,
          reason: r.reason.slice(0, MAX_LINE_CHARS),
          restarts: r.restarts,
          lastExitCode: r.lastExitCode ?? null,
          lastOutput: r.lastOutput.slice(-MAX_REPORTED_LINES).map((l) => l.slice(0, MAX_LINE_CHARS)),
        };
      });
      req.acks.forEach((a, i) => checkId(a.commandId, `acks[${i}].command_id`, true));
      const node = await deps.store.getNode(req.nodeId);
      if (!node) throw new NotFoundError(`node "${req.nodeId}" is not enrolled; enrol it first (edgectl enroll)`);
      const nowMs = Date.now();
      const commands = await deps.store.reportWorkloads({
        nodeId: req.nodeId,
        atMs: nowMs,
        capacity: { cpuMillis: count(req.capacity?.cpuMillis, "capacity.cpu_millis"), memoryBytes: count(req.capacity?.memoryBytes, "capacity.memory_bytes") },
        usage: { cpuMillis: count(req.usage?.cpuMillis, "usage.cpu_millis"), memoryBytes: count(req.usage?.memoryBytes, "usage.memory_bytes") },
        replicas,
        acks: req.acks.map((a) => ({ commandId: a.commandId, ok: a.ok, message: a.message.slice(0, MAX_LINE_CHARS) })),
      });
      deps.sightings?.record({ nodeId: req.nodeId, lastSeenMs: nowMs });
      deps.workloads?.reported(req.nodeId);
      deps.metrics.workloadReports.inc();
      return {
        commands: commands.map((c) => fromJsonString(WorkloadCommandSchema, c.payload)),
        serverTime: timestampFromMs(nowMs),
      };
    },
  };
}
