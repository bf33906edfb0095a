/**
 * Typed clients of every orchestrator service, for edge agents, the CLI and scripts.
 *
 *   const api = createOrchestratorClients({ baseUrl: "http://127.0.0.1:8888" });
 *   await api.events.ingestEvents({ events: [...] });
 *   api.close();
 *
 * The generated service descriptors and message schemas are re-exported, so one import
 * gives both the clients and the types they speak.
 */
import type { DescService } from "@bufbuild/protobuf";
import { createClient, type Client, type Interceptor, type Transport } from "@connectrpc/connect";
import {
  createConnectTransport,
  createGrpcTransport,
  createGrpcWebTransport,
  Http2SessionManager,
} from "@connectrpc/connect-node";
import { AgentService } from "../gen/autonomy/v1/agent_pb.js";
import { AuditService } from "../gen/autonomy/v1/audit_pb.js";
import { EventService } from "../gen/autonomy/v1/events_pb.js";
import { HealthService } from "../gen/autonomy/v1/health_pb.js";
import { NodeService } from "../gen/autonomy/v1/nodes_pb.js";
import { EnrollmentService } from "../gen/autonomy/v1/enrollment_pb.js";
import { RbacService } from "../gen/autonomy/v1/rbac_pb.js";
import { OperationsService } from "../gen/autonomy/v1/operations_pb.js";
import { ReleaseService } from "../gen/autonomy/v1/releases_pb.js";
import { RolloutService } from "../gen/autonomy/v1/rollouts_pb.js";
import { EventFollowService } from "../gen/autonomy/v1/follow_pb.js";
import { SupportService } from "../gen/autonomy/v1/support_pb.js";
import { WorkloadService } from "../gen/autonomy/v1/workloads_pb.js";

export * from "../gen/autonomy/v1/agent_pb.js";
export * from "../gen/autonomy/v1/audit_pb.js";
export { diagnoseTransportError, type TransportFailure, type TransportFailureKind } from "./diagnose.js";
export * from "../gen/autonomy/v1/events_pb.js";
export * from "../gen/autonomy/v1/health_pb.js";
export * from "../gen/autonomy/v1/nodes_pb.js";
export * from "../gen/autonomy/v1/enrollment_pb.js";
export * from "../gen/autonomy/v1/rbac_pb.js";
export * from "../gen/autonomy/v1/operations_pb.js";
export * from "../gen/autonomy/v1/releases_pb.js";
export * from "../gen/autonomy/v1/rollouts_pb.js";
export * from "../gen/autonomy/v1/follow_pb.js";
export * from "../gen/autonomy/v1/support_pb.js";
export * from "../gen/autonomy/v1/workloads_pb.js";

/** Every service a client can reach, by the property name of the returned object. */
const SERVICES = {
  events: EventService,
  releases: ReleaseService,
  nodes: NodeService,
  enrollment: EnrollmentService,
  rollouts: RolloutService,
  audit: AuditService,
  rbac: RbacService,
  health: HealthService,
  agent: AgentService,
  operations: OperationsService,
  follow: EventFollowService,
  support: SupportService,
  workloads: WorkloadService,
} as const;

/** The request header that names the operator a call is made for (AUTONOMY_OPERATOR); it goes into the audit trail. */
export const OPERATOR_HEADER = "autonomy-operator";

export type OrchestratorClients = { [K in keyof typeof SERVICES]: Client<(typeof SERVICES)[K]> } & {
  readonly transport: Transport;
  /** Closes the HTTP/2 connection, so a short-lived process can exit. */
  close(): void;
};

export interface ClientOptions {
  /** Base URL of the orchestrator, e.g. http://127.0.0.1:8888. */
  baseUrl: string;
  /** Wire protocol: connect (default), grpc or grpc-web. */
  protocol?: "connect" | "grpc" | "grpc-web";
  /** Connect and gRPC-Web only: protobuf binary (default) or JSON bodies. */
  useBinaryFormat?: boolean;
  /** HTTP/2 (default; h2c with prior knowledge on http:// URLs) or HTTP/1.1 (Connect and gRPC-Web only). */
  httpVersion?: "2" | "1.1";
  interceptors?: Interceptor[];
  /** Default deadline of each call, in milliseconds. */
  timeoutMs?: number;
  /** The operator the calls are made for, sent in the autonomy-operator header. */
  operator?: string;
  /** A bearer token (autonomy rbac token create), sent as Authorization: Bearer. */
  token?: string;
  /**
   * https:// URLs: the CA that signed the server's certificate (else the system's), and for
   * mutual TLS this client's certificate and key (PEM).
   */
  tls?: { ca?: string | Buffer; cert?: string | Buffer; key?: string | Buffer };
}

/**
 * A session manager whose HTTP/2 sessions always have an error listener. Node emits a second
 * "error" on a session that broke (a server that does not speak HTTP/2, say) after the manager
 * has let go of it; without a listener that error would end the process.
 */
class GuardedSessionManager extends Http2SessionManager {
  private readonly guarded = new WeakSet<object>();
  override async request(...args: Parameters<Http2SessionManager["request"]>): ReturnType<Http2SessionManager["request"]> {
    const stream = await super.request(...args);
    const session = stream.session;
    if (session && !this.guarded.has(session)) {
      this.guarded.add(session);
      session.on("error", () => {});
    }
    return stream;
  }
}

/** One transport for the chosen protocol and HTTP version. */
export function createOrchestratorTransport(opts: ClientOptions): { transport: Transport; close(): void } {
  let url: URL;
  try {
    url = new URL(opts.baseUrl);
  } catch {
    throw new Error(`invalid orchestrator URL "${opts.baseUrl}": expected e.g. http://127.0.0.1:8888`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new Error(`invalid orchestrator URL "${opts.baseUrl}": the scheme must be http or https`);
  }
  const protocol = opts.protocol ?? "connect";
  if (protocol === "grpc" && opts.httpVersion === "1.1") throw new Error("gRPC needs HTTP/2");
  const baseUrl = url.toString().replace(/\/$/, "");
  if (opts.tls && url.protocol !== "https:") throw new Error(`TLS options need an https:// orchestrator URL, not "${opts.baseUrl}"`);
  const tlsOptions = opts.tls ? { ca: opts.tls.ca, cert: opts.tls.cert, key: opts.tls.key } : undefined;
  const sessionManager = opts.httpVersion === "1.1" ? undefined : new GuardedSessionManager(baseUrl, undefined, tlsOptions);
  const interceptors = [...(opts.interceptors ?? [])];
  const { operator, token } = opts;
  if (operator || token) {
    interceptors.push((next) => (req) => {
      if (operator) req.header.set(OPERATOR_HEADER, operator);
      if (token) req.header.set("authorization", `Bearer ${token}`);
      return next(req);
    });
  }
  const common = { baseUrl, interceptors, defaultTimeoutMs: opts.timeoutMs };
  const http = sessionManager
    ? { httpVersion: "2" as const, sessionManager }
    : { httpVersion: "1.1" as const, nodeOptions: tlsOptions };
  const useBinaryFormat = opts.useBinaryFormat ?? true;
  const transport =
    protocol === "grpc"
      ? createGrpcTransport({ ...common, ...http })
      : protocol === "grpc-web"
        ? createGrpcWebTransport({ ...common, ...http, useBinaryFormat })
        : createConnectTransport({ ...common, ...http, useBinaryFormat });
  return { transport, close: () => sessionManager?.abort() };
}

/** Typed clients for every service, over one shared transport. */
export function createOrchestratorClients(opts: ClientOptions): OrchestratorClients {
  const { transport, close } = createOrchestratorTransport(opts);
  const clients = Object.fromEntries(
    Object.entries(SERVICES).map(([name, service]) => [name, createClient(service as DescService, transport)]),
  );
  return { ...(clients as Omit<OrchestratorClients, "transport" | "close">), transport, close };
}

/** Clients whose TLS credentials can change while they are in use (a renewed node certificate). */
export interface RenewableClients extends OrchestratorClients {
  /**
   * Calls from now on go over a new connection made with these credentials. The old connection
   * is closed once the unary calls on it have ended (at most `graceMs` later, 10 s by default);
   * streams on it end then, and a caller that reopens them gets the new connection.
   */
  useTls(tls: NonNullable<ClientOptions["tls"]>, graceMs?: number): void;
}

/** Typed clients for every service over a transport that can be replaced (see RenewableClients). */
export function createRenewableClients(opts: ClientOptions): RenewableClients {
  interface Generation {
    transport: Transport;
    close(): void;
    inflight: number;
    retired: boolean;
  }
  const open = (o: ClientOptions): Generation => ({ ...createOrchestratorTransport(o), inflight: 0, retired: false });
  let current = open(opts);
  const generations = new Set([current]);
  const settle = (g: Generation) => {
    if (!g.retired || g.inflight > 0 || !generations.has(g)) return;
    generations.delete(g);
    g.close();
  };
  const transport: Transport = {
    unary(method, signal, timeoutMs, header, input, contextValues) {
      const g = current;
      g.inflight++;
      return g.transport.unary(method, signal, timeoutMs, header, input, contextValues).finally(() => {
        g.inflight--;
        settle(g);
      });
    },
    stream(method, signal, timeoutMs, header, input, contextValues) {
      return current.transport.stream(method, signal, timeoutMs, header, input, contextValues);
    },
  };
  const clients = Object.fromEntries(
    Object.entries(SERVICES).map(([name, service]) => [name, createClient(service as DescService, transport)]),
  );
  return {
    ...(clients as Omit<OrchestratorClients, "transport" | "close">),
    transport,
    useTls(tls, graceMs = 10_000) {
      const old = current;
      current = open({ ...opts, tls });
      generations.add(current);
      old.retired = true;
      settle(old);
      setTimeout(() => {
        if (generations.delete(old)) old.close();
      }, graceMs).unref();
    },
    close() {
      for (const g of generations) g.close();
      generations.clear();
    },
  };
}
