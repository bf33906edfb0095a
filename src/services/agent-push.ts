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
import { create } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import { type AgentService, SubscribeResponseSchema, type SubscribeResponse } from "../../gen/autonomy/v1/agent_pb.js";
import { NotFoundError } from "../domain/errors.js";
import { checkId } from "../domain/fields.js";
import type { Metrics } from "../observability/metrics.js";
import type { Store } from "../store/store.js";

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
}

const KIND_LABELS: Record<Body["case"], string> = { hello: "hello", keepalive: "keepalive", desiredReleaseChanged: "desired_release_changed" };

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
  };
}
