import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type ConnectRouter } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { AgentService, NodeService, type ReportWorkloadsRequest } from "../../clients/index.js";
import type { CommandAck, WorkloadCommand } from "../../gen/autonomy/v1/workloads_pb.js";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { SubscribeResponseSchema } from "../../gen/autonomy/v1/agent_pb.js";

/**
 * A stand-in for the orchestrator's side of what `edgectl run` calls, for agent tests: enrol,
 * heartbeat and desired release (no release), the push stream (a hello, keepalives, and the
 * workload commands a test pushes) and ReportWorkloads (recorded; its answer lists the offered
 * commands not acked yet). It can be stopped and started again on the same port.
 */
export class FakeOrchestrator {
  readonly reports: ReportWorkloadsRequest[] = [];
  /** Every ack received, by command id (the last one for each). */
  readonly acks = new Map<string, CommandAck>();
  /** Commands the ReportWorkloads answer lists until they are acked. */
  readonly offered: WorkloadCommand[] = [];
  reportCalls = 0;
  heartbeats = 0;
  /** How ReportWorkloads answers: normally, or Unimplemented (an older server). */
  reportMode: "ok" | "unimplemented" = "ok";
  /** How many of the next reports are refused with Unavailable (not recorded in reports or acks). */
  failReports = 0;
  /** The reports refused so. */
  readonly failed: ReportWorkloadsRequest[] = [];
  private readonly streams = new Set<(m: MessageInitShape<typeof SubscribeResponseSchema>) => void>();
  private sequence = 1000n;
  private server: http2.Http2Server | undefined;
  private readonly sessions = new Set<http2.ServerHttp2Session>();
  private port = 0;

  constructor(private readonly keepaliveMs = 300) {}

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  get openStreams(): number {
    return this.streams.size;
  }

  /** The newest report, or undefined. */
  latest(): ReportWorkloadsRequest | undefined {
    return this.reports.at(-1);
  }

  /** Sends a command on every open stream. */
  push(command: WorkloadCommand): void {
    this.sequence++;
    for (const s of this.streams) s({ sequence: this.sequence, sentAt: timestampNow(), kind: { case: "workloadCommand", value: command } });
  }

  /** Lists a command in the ReportWorkloads answers until it is acked. */
  offer(command: WorkloadCommand): void {
    this.offered.push(command);
  }

  async start(): Promise<void> {
    const routes = (router: ConnectRouter) => {
      router.service(NodeService, {
        enrollNode: () => ({}),
        heartbeat: () => {
          this.heartbeats++;
          return { lifecycle: "HEALTHY", serverTime: timestampNow() };
        },
        getDesiredRelease: () => ({}),
      });
      router.service(AgentService, {
        subscribe: (_req, ctx) => this.stream(ctx.signal),
        reportWorkloads: (req) => {
          this.reportCalls++;
          if (this.reportMode === "unimplemented") throw new ConnectError("not implemented", Code.Unimplemented);
          if (this.failReports > 0) {
            this.failReports--;
            this.failed.push(req);
            throw new ConnectError("busy", Code.Unavailable);
          }
          this.reports.push(req);
          for (const a of req.acks) this.acks.set(a.commandId, a);
          const open = this.offered.filter((c) => !this.acks.has(c.commandId));
          return { commands: open, serverTime: timestampNow() };
        },
      });
    };
    const server = http2.createServer(connectNodeAdapter({ routes }));
    server.on("session", (s) => {
      this.sessions.add(s);
      s.once("close", () => this.sessions.delete(s));
    });
    await new Promise<void>((resolve) => server.listen(this.port, "127.0.0.1", resolve));
    this.port = (server.address() as AddressInfo).port;
    this.server = server;
  }

  /** Stops listening and cuts every connection (the control plane is down). */
  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (!server) return;
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    for (const s of this.sessions) s.destroy();
    await closed;
  }

  private async *stream(signal: AbortSignal): AsyncGenerator<MessageInitShape<typeof SubscribeResponseSchema>> {
    const queue: MessageInitShape<typeof SubscribeResponseSchema>[] = [];
    let wake: (() => void) | undefined;
    const deliver = (m: MessageInitShape<typeof SubscribeResponseSchema>) => {
      queue.push(m);
      wake?.();
    };
    this.streams.add(deliver);
    const onAbort = () => wake?.();
    signal.addEventListener("abort", onAbort);
    try {
      yield { sequence: this.sequence, sentAt: timestampNow(), kind: { case: "hello", value: { resumed: false, keepaliveIntervalMs: this.keepaliveMs } } };
      while (!signal.aborted) {
        if (queue.length === 0) {
          await new Promise<void>((resolve) => {
            wake = resolve;
            setTimeout(resolve, this.keepaliveMs);
          });
          wake = undefined;
          if (queue.length === 0 && !signal.aborted) yield { sequence: this.sequence, sentAt: timestampNow(), kind: { case: "keepalive", value: {} } };
          continue;
        }
        yield queue.shift()!;
      }
    } finally {
      this.streams.delete(deliver);
      signal.removeEventListener("abort", onAbort);
    }
  }
}
