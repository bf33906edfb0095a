/**
 * The agent's end of its push stream (AgentService.Subscribe): it keeps one stream open, tells
 * the main loop to look at its desired release when the server says it changed (or when it
 * cannot replay what the agent missed), hands workload commands to the workload runner, and
 * reconnects with backoff, resuming after the last sequence it took in. A stream that stays silent for three keepalive intervals is taken for
 * dead (a proxy that dropped it without a word) and opened again. Polling goes on beside it.
 */
import { setTimeout as sleep } from "node:timers/promises";
import { Code, ConnectError } from "@connectrpc/connect";
import type { OrchestratorClients } from "../../clients/index.js";
import type { WorkloadCommand } from "../../gen/autonomy/v1/workloads_pb.js";
import type { Logger } from "../observability/logger.js";

/** How long the agent waits for the first message of a new stream. */
const HELLO_TIMEOUT_MS = 30_000;
/** An orchestrator without push (an older one) is asked again this often. */
const UNIMPLEMENTED_RETRY_MS = 300_000;

export interface PushState {
  /** connecting, open, or why not. */
  state: string;
  since: string;
}

export interface PushFollowerOptions {
  api: OrchestratorClients;
  logger: Logger;
  nodeId: string;
  signal: AbortSignal;
  /** The sequence of the last message taken in (kept in the state dir across restarts). */
  afterSequence: bigint;
  /** Look at the desired release now. */
  onChange(reason: string): void;
  /** A workload command to carry out (launch, update or stop a replica). */
  onWorkloadCommand?(command: WorkloadCommand): void;
  /** A new last sequence taken in. */
  onSequence(sequence: bigint): void;
  onState(state: PushState): void;
}

/** Runs until the signal aborts. */
export async function followPushStream(opts: PushFollowerOptions): Promise<void> {
  const { api, logger, nodeId, signal } = opts;
  let after = opts.afterSequence;
  let failures = 0;
  let lastState = "";
  const setState = (state: string) => {
    if (state === lastState) return;
    lastState = state;
    opts.onState({ state, since: new Date().toISOString() });
  };
  const taken = (sequence: bigint) => {
    if (sequence <= after) return;
    after = sequence;
    opts.onSequence(sequence);
  };
  setState("connecting");
  while (!signal.aborted) {
    const stream = new AbortController();
    const stop = () => stream.abort();
    signal.addEventListener("abort", stop);
    let silentFor = HELLO_TIMEOUT_MS;
    let watchdog = setTimeout(stop, silentFor);
    const heard = () => {
      clearTimeout(watchdog);
      watchdog = setTimeout(() => {
        logger.warn({ silent_ms: silentFor }, "the push stream went silent; opening another");
        stop();
      }, silentFor);
    };
    let retryMs: number;
    try {
      for await (const m of api.agent.subscribe({ nodeId, afterSequence: after }, { signal: stream.signal, timeoutMs: 0 })) {
        switch (m.kind.case) {
          case "hello":
            silentFor = 3 * Math.max(1000, m.kind.value.keepaliveIntervalMs);
            failures = 0;
            setState("open");
            logger.info({ resumed: m.kind.value.resumed, after_sequence: String(after), keepalive_ms: m.kind.value.keepaliveIntervalMs }, "push stream open");
            // What the server cannot replay, the agent reads afresh.
            if (!m.kind.value.resumed) {
              opts.onChange("push stream opened without a replay");
              taken(m.sequence);
            }
            break;
          case "keepalive":
            // Everything up to the keepalive's sequence came on this stream before it.
            taken(m.sequence);
            break;
          case "desiredReleaseChanged":
            logger.info({ sequence: String(m.sequence), release_id: m.kind.value.releaseId, plan_id: m.kind.value.planId || undefined }, "pushed: the desired release changed");
            opts.onChange("pushed");
            taken(m.sequence);
            break;
          case "workloadCommand":
            logger.debug({ sequence: String(m.sequence), command_id: m.kind.value.commandId }, "pushed: a workload command");
            opts.onWorkloadCommand?.(m.kind.value);
            taken(m.sequence);
            break;
          default:
            // A kind this agent does not know (a newer server): taken in, nothing to do.
            logger.debug({ sequence: String(m.sequence) }, "pushed a message this agent does not know");
            taken(m.sequence);
        }
        heard();
      }
      retryMs = 250;
      setState("reconnecting");
    } catch (err) {
      if (signal.aborted) break;
      const e = ConnectError.from(err);
      failures++;
      if (e.code === Code.Unimplemented) {
        retryMs = UNIMPLEMENTED_RETRY_MS;
        if (lastState !== "unsupported") logger.warn("the orchestrator has no push stream; polling only");
        setState("unsupported");
      } else {
        retryMs = Math.min(30_000, 250 * 2 ** Math.min(failures - 1, 8));
        if (e.code === Code.Canceled && failures === 1) {
          // This agent closed the connection under the stream (a renewed certificate is used from the next one).
          logger.info({ retry_in_ms: retryMs }, "push stream closed with its connection; reconnecting");
        } else if (failures === 1 || e.code === Code.PermissionDenied || e.code === Code.Unauthenticated) {
          logger.warn({ err: e.message, code: Code[e.code], retry_in_ms: retryMs }, "push stream closed; polling goes on; reconnecting");
        }
        setState(`reconnecting: ${e.message}`);
      }
    } finally {
      clearTimeout(watchdog);
      signal.removeEventListener("abort", stop);
    }
    await sleep(retryMs, undefined, { signal }).catch(() => undefined);
  }
}
