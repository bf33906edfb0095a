import type http from "node:http";
import path from "node:path";
import type http2 from "node:http2";
import { createContextValues } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { MAX_BODY_BYTES } from "./domain/events.js";
import { permissionOf } from "./domain/permissions.js";
import type { Logger, LogRing } from "./observability/logger.js";
import { EventRetention } from "./ops/retention.js";
import { EventFeed } from "./services/event-feed.js";
import { createMetrics, type Metrics } from "./observability/metrics.js";
import { SqliteStore } from "./store/sqlite/store.js";
import { instrumentStore } from "./store/instrumented.js";
import { SightingBuffer } from "./store/sightings.js";
import { countLifecycles } from "./services/node-service.js";
import { countDiverged } from "./services/divergence-report.js";
import { DEFAULT_DIVERGENCE_SECONDS } from "./domain/divergence.js";
import { RolloutController } from "./rollouts/controller.js";
import { WorkloadController } from "./workloads/controller.js";
import { SpecSigner } from "./rollouts/signing.js";
import type { Store } from "./store/store.js";
import { requestInfoKey, type RequestInfo } from "./transport/context.js";
import { CallsInFlight, createErrorInterceptor, createObserveInterceptor } from "./transport/interceptors.js";
import { listenCleartext, parseListenAddress, type Listener, type ListenAddress } from "./transport/listener.js";
import { createRestHandler, createRestResolver, type NodeRequest, type NodeResponse, type PlainRoute } from "./transport/rest.js";
import { createGate } from "./transport/gate.js";
import { DEFAULT_LIMITS, validateLimits, type TransportLimits } from "./transport/limits.js";
import { RateLimiter, type RateLimitSettings } from "./transport/rate-limit.js";
import { createServices, registerServices } from "./transport/services.js";
import { createUiStaticHandler, refuseCrossSite } from "./transport/ui-static.js";
import { readFlagFile } from "./files.js";
import { loadTlsFiles, watchCrlFile, type TlsFiles } from "./security/crl-watch.js";
import { syncCrlOnce, type CrlSyncSettings } from "./security/crl-sync.js";
import type { CheckedCrl } from "./security/pki.js";
import { listenTls, type TlsListener } from "./transport/tls-listener.js";
import { NodeCertificateSigner } from "./security/node-signer.js";
import { DEFAULT_NODE_CERT_LIFETIME_MS, MAX_NODE_CERT_LIFETIME_MS, MIN_NODE_CERT_LIFETIME_MS } from "./domain/enrollment.js";
import { EnrollmentService } from "../gen/autonomy/v1/enrollment_pb.js";
import { Authorizer, peerIdentity } from "./security/authz.js";
import { bootstrapRbac } from "./security/bootstrap.js";
import { AuditCheckpoints, CHECKPOINT_FILE } from "./services/audit-checkpoints.js";
import { ENFORCEMENT_OFF_WARNING } from "./services/health-service.js";
import { PushHub } from "./services/agent-push.js";
import { divergenceBundlePart, haBundlePart } from "./ops/bundle-parts.js";
import { HaRuntime } from "./ha/runtime.js";
import { haServiceEntry } from "./ha/service.js";
import { openPostgres } from "./ha/connect.js";
import { newReplicaId, storeUrl } from "./ha/ids.js";
import { DEFAULT_LEADER_LEASE_MS, DEFAULT_LEADER_RENEW_MS, validateLeaderTimings } from "./ha/election.js";

export interface ServerConfig {
  /** host:port of the API. */
  listen: string;
  /** SQLite data directory (ignored with postgresUrl). */
  dataDir: string;
  /** PostgreSQL URL: use PostgreSQL instead of the embedded SQLite store. */
  postgresUrl?: string;
  busyTimeoutMs: number;
  /** SQLite only: refuse writes (507) once the database reaches this many bytes; 0 = no limit. */
  maxDbBytes?: number;
  /** host:port of a second listener that serves only GET /metrics. */
  metricsAddr?: string;
  /** A node not seen for longer is STALE (--node-stale-after); 2 minutes when unset. */
  nodeStaleAfterMs?: number;
  /** How often coalesced heartbeats are written (--heartbeat-flush-interval); 5 seconds when unset. */
  heartbeatFlushMs?: number;
  /** How often the rollout controller reads every unfinished plan back (--rollout-resync); 30 seconds when unset. */
  rolloutResyncMs?: number;
  /** How often the workload reconcile loop runs without a signal (--workload-resync); 10 seconds when unset. */
  workloadResyncMs?: number;
  /** A node without a workload report for longer is lost (--replica-lost-after); 2 minutes when unset. */
  replicaLostAfterMs?: number;
  /** TLS (cert and key), mutual TLS (ca) and revocation (crl): --tls-* files. Cleartext when unset. */
  tls?: TlsFiles;
  /** RBAC enforcement; on unless false (AUTONOMY_RBAC_ENFORCEMENT=0). */
  rbacEnforcement?: boolean;
  /** Also audit every ingested event batch and every stored ack (--audit-data-plane). */
  auditDataPlane?: boolean;
  /** How often a signed checkpoint of the audit chain is written when it grew (--audit-checkpoint-interval); 5 minutes when unset, 0 only at start and after prunes. */
  auditCheckpointIntervalMs?: number;
  /** With --tls-ca-file: "require" a client certificate (the default) or "request" one, letting tokens in. */
  tlsClientAuth?: "require" | "request";
  /**
   * The CA directory of `autonomy cert init-ca` (--ca-dir): the server then holds the CA key and
   * signs node certificates at enrolment (a one-time token) and renewal. Needs mutual TLS with
   * that CA in --tls-ca-file.
   */
  caDir?: string;
  /** How long a node certificate the server signs is valid (--node-cert-valid-for); 30 days when unset. */
  nodeCertLifetimeMs?: number;
  /** Timeouts, connection caps and HTTP/2 session bounds (--http-*, --max-connections*); DEFAULT_LIMITS for what is unset. */
  limits?: Partial<TransportLimits>;
  /** Unauthenticated calls per client address (--unauthenticated-rate, --unauthenticated-burst). */
  unauthenticatedRate?: RateLimitSettings;
  /**
   * Bodies refused by the transport's body checks per principal and per client address
   * (--refused-body-rate, --refused-body-burst); beyond, 429 before the body is read.
   */
  refusedBodyRate?: RateLimitSettings;
  /** Events per second each node may ingest, with a burst (--node-ingest-rate, --node-ingest-burst); no limit when unset or 0. */
  nodeIngestRate?: RateLimitSettings;
  /** How often an agent's push stream carries a keepalive (--push-keepalive); 15 seconds when unset. */
  pushKeepaliveMs?: number;
  /** HA (with postgresUrl): --leader-lease, --leader-renew, --replication-lag-critical. */
  ha?: { leaseMs?: number; renewMs?: number; lagCriticalMs?: number };
  /** Delete events received longer ago than this (--event-retention); off when unset or 0. */
  eventRetentionMs?: number;
  /** How often event retention runs; a minute when unset. */
  eventRetentionIntervalMs?: number;
}

/** 20 unauthenticated calls a second per client address, 100 at once. */
export const DEFAULT_UNAUTHENTICATED_RATE: RateLimitSettings = { perSecond: 20, burst: 100 };
/** Refused bodies per principal and per address: 20 at once, then 1 a second. */
export const DEFAULT_REFUSED_BODY_RATE: RateLimitSettings = { perSecond: 1, burst: 20 };

export { BOOTSTRAP_TOKEN_FILE } from "./security/bootstrap.js";

export const DEFAULT_NODE_STALE_AFTER_MS = 120_000;
export const DEFAULT_HEARTBEAT_FLUSH_MS = 5_000;

export interface RunningServer {
  readonly address: ListenAddress;
  /** Base URL of the API, e.g. http://127.0.0.1:8888. */
  readonly url: string;
  readonly metricsAddress?: ListenAddress;
  readonly metrics: Metrics;
  readonly store: Store;
  readonly rollouts: RolloutController;
  /** The workload reconcile loop (it runs while this replica leads). */
  readonly workloads: WorkloadController;
  /** The agents' push streams. */
  readonly push: PushHub;
  readonly ha: HaRuntime;
  /** Event retention, when --event-retention is set. */
  readonly retention?: EventRetention;
  close(): Promise<void>;
}

const KNOWN_METHODS = new Set(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]);

/** The method as a metric label: HTTP/2 allows any token, and labels must stay a bounded set. */
function methodLabel(method: string | undefined): string {
  return method && KNOWN_METHODS.has(method) ? method : "OTHER";
}

/**
 * HTTP/1.1: an answer sent before the request body was read (a body over the limit, say)
 * leaves the connection mid-request, and a client reusing it would stall or fail. Such an
 * answer carries `Connection: close`, decided when its head is written.
 */
function closeIfBodyUnread(req: http.IncomingMessage, res: http.ServerResponse): void {
  const writeHead = res.writeHead;
  res.writeHead = function (this: http.ServerResponse, ...args: unknown[]) {
    if (!req.complete) this.shouldKeepAlive = false;
    return (writeHead as (...a: unknown[]) => http.ServerResponse).apply(this, args);
  } as typeof res.writeHead;
}

function urlOf(a: ListenAddress, tls: boolean): string {
  const host = a.host === "0.0.0.0" || a.host === "::" ? "127.0.0.1" : a.host;
  return `${tls ? "https" : "http"}://${host.includes(":") ? `[${host}]` : host}:${a.port}`;
}

/** The CRL sync settings of the TLS flags, with their files read; undefined without sync URLs. */
function crlSyncSettings(files: TlsFiles | undefined): CrlSyncSettings | undefined {
  if (!files?.crlSync || files.crlSync.urls.length === 0) return undefined;
  if (!files.crlFile || !files.caFile) throw new Error("--tls-crl-sync-url needs --tls-crl-file and --tls-ca-file");
  const { minSources } = files.crlSync;
  if (!Number.isInteger(minSources) || minSources < 1 || minSources > files.crlSync.urls.length) {
    throw new Error(`--tls-crl-sync-min-sources ${minSources}: must be 1 to the number of --tls-crl-sync-url (${files.crlSync.urls.length})`);
  }
  return {
    ...files.crlSync,
    crlFile: files.crlFile,
    caPem: readFlagFile("--tls-ca-file", files.caFile),
    cert: readFlagFile("--tls-cert-file", files.certFile),
    key: readFlagFile("--tls-key-file", files.keyFile),
  };
}

/** The CA of --ca-dir, checked against the TLS settings: its certificates must be ones the server accepts. */
async function loadNodeCa(config: ServerConfig, trustedCa: Buffer | undefined): Promise<NodeCertificateSigner> {
  if (!trustedCa) throw new Error("--ca-dir needs mutual TLS (--tls-cert-file, --tls-key-file and --tls-ca-file): the node certificates it signs are client certificates");
  const lifetimeMs = config.nodeCertLifetimeMs ?? DEFAULT_NODE_CERT_LIFETIME_MS;
  if (!Number.isFinite(lifetimeMs) || lifetimeMs < MIN_NODE_CERT_LIFETIME_MS || lifetimeMs > MAX_NODE_CERT_LIFETIME_MS) {
    throw new Error(`--node-cert-valid-for: ${MIN_NODE_CERT_LIFETIME_MS / 1000}s to ${MAX_NODE_CERT_LIFETIME_MS / 86_400_000}d`);
  }
  return NodeCertificateSigner.load(config.caDir!, { lifetimeMs, trustedCaPem: trustedCa.toString("utf8") });
}

const isLoopback = (host: string) => host === "localhost" || host === "::1" || host.startsWith("127.");

/** GET /v1/crl: the CRL in force, as it was read (PEM or DER). */
function crlRoute(current: () => CheckedCrl | undefined): PlainRoute {
  return {
    method: "GET",
    path: "/v1/crl",
    async handle(_req, res) {
      const crl = current();
      const r = res as http.ServerResponse;
      if (!crl) {
        r.writeHead(404, { "content-type": "application/json" });
        r.end(JSON.stringify({ code: "not_found", message: "this server has no CRL (--tls-crl-file)" }));
        return;
      }
      r.writeHead(200, { "content-type": "application/pkix-crl" });
      r.end(crl.raw);
    },
  };
}

function metricsRoute(metrics: Metrics): PlainRoute {
  return {
    method: "GET",
    path: "/metrics",
    async handle(_req, res) {
      const body = await metrics.registry.metrics();
      (res as http.ServerResponse).writeHead(200, { "content-type": metrics.registry.contentType });
      res.end(body);
    },
  };
}

/**
 * The answers of a server whose store is not open yet (PostgreSQL being waited for): the
 * readiness endpoints 503 with the reason, /v1/health (liveness) 200 "starting", every other
 * call 503 unavailable (gRPC: status UNAVAILABLE). Nothing is read from or decided on a store.
 */
function answerStarting(req: NodeRequest, res: NodeResponse, reason: string): void {
  const r = res as http.ServerResponse;
  if (req.httpVersionMajor === 1) closeIfBodyUnread(req as http.IncomingMessage, r);
  const route = (req.url ?? "").split("?")[0];
  const json = (status: number, body: object) => {
    r.writeHead(status, { "content-type": "application/json", "cache-control": "no-store", ...(status === 503 ? { "retry-after": "1" } : {}) });
    r.end(JSON.stringify(body));
  };
  if (req.method === "GET" && (route === "/v1/health/read-ready" || route === "/v1/health/write-ready")) return json(503, { ready: false, reason, mode: "postgres" });
  if (req.method === "GET" && route === "/v1/health") return json(200, { status: "starting", warning: reason });
  const message = `the server is starting and serves nothing yet: ${reason}`;
  const type = String(req.headers["content-type"] ?? "");
  if (type.startsWith("application/grpc")) {
    r.writeHead(200, { "content-type": type, "grpc-status": "14", "grpc-message": encodeURIComponent(message) });
    r.end();
    return;
  }
  json(503, { code: "unavailable", message });
}

/**
 * Cleanup steps, run last-in first-out: each resource pushes its step once it is open, so a
 * failed start and a stop undo exactly what was done, in reverse order. A failing step is
 * logged and the rest still run.
 */
const SLOW_CLEANUP_MS = 5_000;

class Teardown {
  private readonly steps: { name: string; run: () => unknown }[] = [];
  constructor(private readonly logger: Logger) {}

  push(name: string, run: () => unknown): void {
    this.steps.push({ name, run });
  }

  async run(): Promise<void> {
    for (let step = this.steps.pop(); step; step = this.steps.pop()) {
      const name = step.name;
      // A step that hangs is named, once, so that a stuck shutdown says where it is.
      const slow = setTimeout(() => this.logger.warn({ step: name, waited_ms: SLOW_CLEANUP_MS }, "a cleanup step is still running"), SLOW_CLEANUP_MS);
      slow.unref();
      try {
        await step.run();
      } catch (err) {
        this.logger.error({ err, step: name }, "a cleanup step failed");
      } finally {
        clearTimeout(slow);
      }
    }
  }
}

/**
 * Opens the store, then serves every service as Connect, gRPC, gRPC-Web and REST on one
 * port, with one log line and one metrics sample per request.
 */
export async function startServer(
  config: ServerConfig,
  deps: { logger: Logger; onFatal: (err: Error) => void; logRing?: LogRing; flags?: object },
): Promise<RunningServer> {
  const { logger } = deps;
  const listenAddress = parseListenAddress(config.listen);
  const metricsAddress = config.metricsAddr ? parseListenAddress(config.metricsAddr) : undefined;
  const limits: TransportLimits = { ...DEFAULT_LIMITS, ...config.limits };
  validateLimits(limits);
  if (config.postgresUrl) validateLeaderTimings(config.ha?.leaseMs ?? DEFAULT_LEADER_LEASE_MS, config.ha?.renewMs ?? DEFAULT_LEADER_RENEW_MS);
  const replicaId = newReplicaId();
  const metrics = createMetrics();
  // TLS files first: a bad one stops the start before anything is opened. A CRL synced from
  // other control planes is fetched before the CRL file is read.
  const sync = crlSyncSettings(config.tls);
  const syncRound = async () => {
    if (!sync) return;
    const result = await syncCrlOnce(sync, (publisher, reason) => {
      metrics.crlSyncFailures.inc({ publisher });
      logger.warn({ publisher, reason }, "CRL sync: publisher failed");
    });
    metrics.crlSyncRounds.inc({ outcome: result.outcome });
    logger[result.outcome === "accepted" || result.outcome === "unchanged" ? "info" : "warn"]({ outcome: result.outcome }, `CRL sync: ${result.detail}`);
  };
  await syncRound();
  const tls = config.tls ? await loadTlsFiles(config.tls) : undefined;
  let crl = tls?.crl;
  const nodeCa = config.caDir === undefined ? undefined : await loadNodeCa(config, tls?.ca);
  // A client without a certificate on a server that requires one may only enrol (--ca-dir).
  const admitCertless = tls?.ca !== undefined && nodeCa !== undefined && (config.tlsClientAuth ?? "require") === "require";
  const openApi = (handler: (req: NodeRequest, res: NodeResponse) => void): Promise<Listener | TlsListener> =>
    tls
      ? listenTls(
          listenAddress,
          handler,
          { ...tls, clientAuth: config.tlsClientAuth ?? "require", admitCertless },
          {
            onRefused: (reason) => metrics.tlsRefusals.inc({ reason }),
            onRevokedClosed: () => metrics.tlsRevokedClosed.inc(),
          },
          limits,
        )
      : listenCleartext(listenAddress, handler, limits);
  // With PostgreSQL the API listens before the store is open: while the database is waited for,
  // the readiness endpoints answer 503 with the reason and every other call 503 unavailable;
  // once the store is open and the leader election runs, it serves.
  let serving: ((req: NodeRequest, res: NodeResponse) => void) | undefined;
  let waitingFor = "the server is starting: opening the store";
  const early = config.postgresUrl ? await openApi((req, res) => (serving ? serving(req, res) : answerStarting(req, res, waitingFor))) : undefined;
  let apiInTeardown = false;
  const teardown = new Teardown(logger);
  try {
    const store: Store = config.postgresUrl
      ? await openPostgres(storeUrl(config.postgresUrl, replicaId, config.ha?.leaseMs ?? DEFAULT_LEADER_LEASE_MS), logger, {
          poolerCheckUrl: config.postgresUrl,
          onWaiting: (reason) => (waitingFor = reason),
          fields: early && { url: urlOf(early.address, tls !== undefined), listen: `${early.address.host}:${early.address.port}` },
        })
      : await SqliteStore.open({
          dataDir: config.dataDir,
          busyTimeoutMs: config.busyTimeoutMs,
          maxDbBytes: config.maxDbBytes,
          onFatal: deps.onFatal,
        });
    teardown.push("store", () => store.close());
    return await serve(store);
  } catch (err) {
    await teardown.run();
    if (early && !apiInTeardown) await early.close();
    throw err;
  }

  async function serve(store: Store): Promise<RunningServer> {
    waitingFor = "the server is starting: the store is open, the leader election not yet running";
    metrics.currentCrl = () => crl;
    const instrumented = instrumentStore(store, metrics);
    const sightings = new SightingBuffer({
      store: instrumented,
      flushIntervalMs: config.heartbeatFlushMs ?? DEFAULT_HEARTBEAT_FLUSH_MS,
      onFlush: (nodes) => {
        metrics.sightingFlushes.inc({ outcome: "ok" });
        metrics.sightingsWritten.inc(nodes);
      },
      onFlushError: (err, written) => {
        metrics.sightingFlushes.inc({ outcome: "error" });
        metrics.sightingsWritten.inc(written);
        logger.warn({ err: (err as Error).message }, "writing node last-seen times failed; kept for the next flush");
      },
    });
    teardown.push("heartbeat buffer", () => sightings.close());
    const fleet = { store: instrumented, sightings, staleAfterMs: config.nodeStaleAfterMs ?? DEFAULT_NODE_STALE_AFTER_MS };
    metrics.countNodes = () => countLifecycles(fleet);
    metrics.countDiverged = () => countDiverged(fleet, DEFAULT_DIVERGENCE_SECONDS);
    const ha = new HaRuntime({ postgresUrl: config.postgresUrl, ...config.ha }, { store: instrumented, metrics, logger, replicaId });
    teardown.push("leadership", () => ha.close());
    const controller = new RolloutController({
      ...fleet,
      metrics,
      logger,
      resyncMs: config.rolloutResyncMs,
      fence: () => ha.leadership.fence(),
      relay: ha.relay,
      startAsFollower: ha.mode === "postgres",
    });
    // A stage that opens tells its nodes at once, on their streams; polling stays the fallback.
    const push = new PushHub({ keepaliveMs: config.pushKeepaliveMs, onStreams: (open) => metrics.agentStreams.set(open) });
    controller.subscribeMoves((m) => push.nodesMoved(m.nodeIds, m.releaseId, m.planId));
    const workloads = new WorkloadController({
      ...fleet,
      push,
      metrics,
      logger,
      resyncMs: config.workloadResyncMs,
      lostAfterMs: config.replicaLostAfterMs,
      fence: () => ha.leadership.fence(),
      relay: ha.relay,
    });
    ha.workloads = workloads;
    const authorizer = new Authorizer({ store: instrumented, logger, enforced: config.rbacEnforcement !== false, registry: metrics.registry });
    const signer = SpecSigner.load(config.dataDir);
    await instrumented.registerSigningKey(signer.row(Date.now()));
    teardown.push("rollout controller", () => controller.stop());
    const auditCheckpoints = new AuditCheckpoints({
      store: instrumented,
      signer,
      file: path.join(config.dataDir, CHECKPOINT_FILE),
      logger,
      intervalMs: config.auditCheckpointIntervalMs,
    });
    teardown.push("audit checkpoints", () => auditCheckpoints.close());
    await auditCheckpoints.start();
    teardown.push("refusal records", () => authorizer.close());
    await ha.attach(controller);
    // Leader-only too: standalone it starts now; with PostgreSQL on each gain of leadership.
    teardown.push("workload controller", () => workloads.stop());
    ha.leadership.onChange(async (leading) => {
      if (leading) await workloads.start().catch((err: Error) => logger.error({ err: err.message }, "starting the workload controller failed"));
      else await workloads.follow();
    });
    // Leader-only work, like the rollout controller: with several replicas only the leader deletes.
    const retention = config.eventRetentionMs
      ? new EventRetention({ store: instrumented, retentionMs: config.eventRetentionMs, intervalMs: config.eventRetentionIntervalMs, logger, isLeader: () => ha.leadership.isLeader() })
      : undefined;
    teardown.push("event retention", () => retention?.stop());
    retention?.start();
    if (!authorizer.enforced) logger.warn(ENFORCEMENT_OFF_WARNING);

    const feed = new EventFeed();
    // Requests being answered other than streams: an event page asked for beside others is read
    // on the SQLite store's event page thread (Store.queryEventPage).
    const calls = new CallsInFlight();
    const bundle = { config: deps.flags ?? config, logRing: deps.logRing, startedAtMs: Date.now(), parts: [haBundlePart(ha), divergenceBundlePart(fleet)] };
    const services = [
      ...createServices({ ...fleet, metrics, controller, workloads, signer, authorizer, auditCheckpoints, auditDataPlane: config.auditDataPlane, logger, push, feed, bundle, ca: nodeCa,
        busy: () => calls.unary > 1,
        nodeIngestLimiter: config.nodeIngestRate && config.nodeIngestRate.perSecond > 0 ? new RateLimiter(config.nodeIngestRate) : undefined,
      }),
      haServiceEntry(ha),
    ];
    const interceptors = [createObserveInterceptor(metrics, calls), createErrorInterceptor(logger), authorizer.interceptor()];
    const infos = new WeakMap<NodeRequest, RequestInfo>();
    const contextValues = (req: NodeRequest) => createContextValues().set(requestInfoKey, infos.get(req));
    const onUnexpected = (err: unknown, req: NodeRequest) => logger.error({ err, path: req.url, method: req.method }, "unexpected error outside the interceptors");
    const rest = createRestHandler({
      services,
      plainRoutes: [metricsRoute(metrics), crlRoute(() => crl), ...ha.routes()],
      interceptors,
      contextValues,
      maxBodyBytes: MAX_BODY_BYTES,
      onUnexpected,
    });
    const serveUi = createUiStaticHandler();
    const rpc = connectNodeAdapter({
      routes: (router) => registerServices(router, services),
      interceptors,
      contextValues: (req) => contextValues(req as NodeRequest),
      readMaxBytes: MAX_BODY_BYTES,
      fallback: (req, res) =>
        void (serveUi(req as NodeRequest, res as NodeResponse, infos.get(req as NodeRequest)) || rest(req as NodeRequest, res as NodeResponse)),
    });
    const gated = createGate(
      {
        certless: admitCertless ? (req) => !infos.get(req)?.peer : undefined,
        certlessMethods: new Set([EnrollmentService.method.enroll]),
        onCertlessRefused: () => metrics.tlsRefusals.inc({ reason: "NO_CERTIFICATE" }),
        services,
        resolveRest: createRestResolver(services),
        isOpen: (method) => !authorizer.enforced || permissionOf(method) === "public",
        checkCredential: (method, peer, header, source) => authorizer.checkCredential(method, peer, header, source),
        infoOf: (req) => infos.get(req) ?? {},
        limiter: new RateLimiter(config.unauthenticatedRate ?? DEFAULT_UNAUTHENTICATED_RATE),
        refusedBodies: new RateLimiter(config.refusedBodyRate ?? DEFAULT_REFUSED_BODY_RATE),
        maxBodyBytes: MAX_BODY_BYTES,
        requestTimeoutMs: limits.requestTimeoutMs,
        logger,
      },
      (req, res) => rpc(req, res),
    );

    const handler = (req: NodeRequest, res: NodeResponse) => {
      const started = process.hrtime.bigint();
      if (req.httpVersionMajor === 1) closeIfBodyUnread(req as http.IncomingMessage, res as http.ServerResponse);
      const info: RequestInfo = {
        peer: tls ? peerIdentity((req as http2.Http2ServerRequest).stream?.session?.socket ?? req.socket) : undefined,
        remoteAddress: req.socket?.remoteAddress,
      };
      infos.set(req, info);
      calls.requests++;
      res.once("close", () => {
        info.closed = true;
        calls.requests--;
        if (info.stream) calls.streams--;
        const seconds = Number(process.hrtime.bigint() - started) / 1e9;
        const route = info.route ?? "unmatched";
        const method = methodLabel(req.method);
        metrics.httpRequests.inc({ method, route, status: res.statusCode });
        metrics.httpDuration.observe({ method, route }, seconds);
        // Throttled answers come in floods: counted like the rest, logged at debug level only.
        logger[res.statusCode === 429 ? "debug" : "info"](
          {
            method: req.method,
            path: req.url,
            route,
            protocol: info.protocol,
            status: res.statusCode,
            code: info.code,
            duration_ms: Math.round(seconds * 1e6) / 1e3,
          },
          "request",
        );
      });
      if (!refuseCrossSite(req, res, info)) gated(req, res);
    };

    const api = early ?? (await openApi(handler));
    teardown.push("API listener", () => api.close());
    apiInTeardown = true;
    metrics.countWaitingConnections = () => api.waiting?.() ?? 0;
    if (tls) {
      const tlsApi = api as TlsListener;
      if (config.tls?.crlFile && crl) {
        const file = config.tls.crlFile;
        const crlWatch = watchCrlFile(file, tls.ca!.toString("utf8"), crl, {
          onGood(next) {
            crl = next;
            const closed = tlsApi.updateCrl(next);
            metrics.crlReloadFailing.set(0);
            logger.info({ crl_number: String(next.number), revoked: next.revoked.size, connections_closed: closed }, "CRL reloaded");
          },
          onBad(err) {
            metrics.crlReloadFailures.inc();
            metrics.crlReloadFailing.set(1);
            logger.error({ file, err: err.message }, "CRL file refused; the last good CRL stays in force");
          },
        });
        teardown.push("CRL watch", () => crlWatch.close());
      }
      if (sync && sync.intervalMs > 0) {
        const syncTimer = setInterval(() => void syncRound().catch((err: Error) => logger.error({ err }, "CRL sync failed")), sync.intervalMs);
        syncTimer.unref();
        teardown.push("CRL sync timer", () => clearInterval(syncTimer));
      }
    } else {
      if (!isLoopback(listenAddress.host)) {
        logger.warn(
          { listen: config.listen },
          "serving cleartext HTTP beyond loopback: anyone on the network can read and send requests; set --tls-cert-file and --tls-key-file (and --tls-ca-file for mutual TLS)",
        );
      }
    }
    // Run before the listener closes: streams end (unavailable) and waiting long polls answer, instead of holding it open.
    teardown.push("push streams", () => push.close());
    teardown.push("event followers", () => feed.close());
    let metricsServer: Listener | undefined;
    if (metricsAddress) {
      const onlyMetrics = createRestHandler({
        services: [],
        plainRoutes: [metricsRoute(metrics)],
        interceptors: [],
        contextValues,
        maxBodyBytes: 0,
        onUnexpected,
      });
      const server = await listenCleartext(metricsAddress, (req, res) => void onlyMetrics(req, res), limits);
      metricsServer = server;
      teardown.push("metrics listener", () => server.close());
    }
    // With enforcement off nobody needs a credential; the token is made at the first enforced start.
    if (authorizer.enforced) await bootstrapRbac(instrumented, config.dataDir, logger);
    serving = handler;

    return {
      address: api.address,
      url: urlOf(api.address, tls !== undefined),
      metricsAddress: metricsServer?.address,
      metrics,
      store,
      rollouts: controller,
      workloads,
      push,
      ha,
      retention,
      close: () => teardown.run(),
    };
  }
}
