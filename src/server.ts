import { mkdirSync } from "node:fs";
import http from "node:http";
import type http2 from "node:http2";
import path from "node:path";
import { createContextValues } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { MAX_BODY_BYTES } from "./domain/events.js";
import type { Logger } from "./observability/logger.js";
import { createMetrics, type Metrics } from "./observability/metrics.js";
import { PostgresStore } from "./store/pg/store.js";
import { SqliteStore } from "./store/sqlite/store.js";
import { instrumentStore } from "./store/instrumented.js";
import { SightingBuffer } from "./store/sightings.js";
import { countLifecycles } from "./services/node-service.js";
import { RolloutController } from "./rollouts/controller.js";
import { SpecSigner } from "./rollouts/signing.js";
import type { Store } from "./store/store.js";
import { requestInfoKey, type RequestInfo } from "./transport/context.js";
import { createErrorInterceptor, createObserveInterceptor } from "./transport/interceptors.js";
import { listenCleartext, parseListenAddress, type Listener, type ListenAddress } from "./transport/listener.js";
import { createRestHandler, type NodeRequest, type NodeResponse, type PlainRoute } from "./transport/rest.js";
import { createServices, registerServices } from "./transport/services.js";
import { createUiStaticHandler, refuseCrossSite } from "./transport/ui-static.js";
import { readFlagFile, writeFileAtomic } from "./files.js";
import { loadTlsFiles, watchCrlFile, type TlsFiles } from "./security/crl-watch.js";
import { syncCrlOnce, type CrlSyncSettings } from "./security/crl-sync.js";
import type { CheckedCrl } from "./security/pki.js";
import { listenTls, type TlsListener } from "./transport/tls-listener.js";
import { Authorizer, newToken, peerIdentity } from "./security/authz.js";
import { auditRecord } from "./services/audit-record.js";
import { ENFORCEMENT_OFF_WARNING } from "./services/health-service.js";

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
  /** TLS (cert and key), mutual TLS (ca) and revocation (crl): --tls-* files. Cleartext when unset. */
  tls?: TlsFiles;
  /** RBAC enforcement; on unless false (AUTONOMY_RBAC_ENFORCEMENT=0). */
  rbacEnforcement?: boolean;
  /** Also audit every ingested event batch and every stored ack (--audit-data-plane). */
  auditDataPlane?: boolean;
}

/** The one-time admin token written into the data dir on the first start of an empty RBAC store. */
export const BOOTSTRAP_TOKEN_FILE = "bootstrap-admin-token";
const BOOTSTRAP_PRINCIPAL = "operator:admin";
const BOOTSTRAP_TTL_MS = 24 * 3_600_000;

/**
 * On an RBAC store with no binding and no token: a token for operator:admin, who gets the
 * admin role, written to the data dir (mode 0600). It expires after 24 hours; use it to give
 * people their roles and tokens, then revoke it.
 */
async function bootstrapRbac(store: Store, dataDir: string, logger: Logger): Promise<void> {
  const counts = await store.rbacCounts();
  if (counts.bindings > 0 || counts.tokens > 0) return;
  const { token, hash, id } = newToken();
  const now = Date.now();
  const who = { actor: "system:bootstrap", source: "server" };
  await store.assignRole(
    { principal: BOOTSTRAP_PRINCIPAL, role: "admin", createdAtMs: now },
    auditRecord(who, { eventName: "rbac.role.assigned", category: "auth", action: "assign", resourceType: "principal", resource: BOOTSTRAP_PRINCIPAL, fields: { role: "admin" }, reason: "bootstrap of an empty RBAC store" }),
  );
  await store.createToken(
    { tokenId: id, tokenHash: hash, principal: BOOTSTRAP_PRINCIPAL, description: "bootstrap admin token", createdAtMs: now, expiresAtMs: now + BOOTSTRAP_TTL_MS, revokedAtMs: null },
    auditRecord(who, { eventName: "rbac.token.created", category: "auth", action: "create", resourceType: "token", resource: id, fields: { principal: BOOTSTRAP_PRINCIPAL, ttl_hours: 24 }, reason: "bootstrap of an empty RBAC store" }),
  );
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const file = path.join(dataDir, BOOTSTRAP_TOKEN_FILE);
  writeFileAtomic(file, `${token}\n`, 0o600);
  logger.warn(
    { file, principal: BOOTSTRAP_PRINCIPAL, token_id: id, expires_in: "24h" },
    "RBAC store was empty: wrote a one-time admin token; use it (autonomy --token-file FILE) to assign roles and create tokens, then revoke it",
  );
}

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
 * Opens the store, then serves every service as Connect, gRPC, gRPC-Web and REST on one
 * port, with one log line and one metrics sample per request.
 */
export async function startServer(
  config: ServerConfig,
  deps: { logger: Logger; onFatal: (err: Error) => void },
): Promise<RunningServer> {
  const { logger } = deps;
  const listenAddress = parseListenAddress(config.listen);
  const metricsAddress = config.metricsAddr ? parseListenAddress(config.metricsAddr) : undefined;
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
  const store: Store = config.postgresUrl
    ? await PostgresStore.open({ url: config.postgresUrl })
    : await SqliteStore.open({
        dataDir: config.dataDir,
        busyTimeoutMs: config.busyTimeoutMs,
        maxDbBytes: config.maxDbBytes,
        onFatal: deps.onFatal,
      });

  metrics.currentCrl = () => crl;
  const instrumented = instrumentStore(store, metrics);
  const sightings = new SightingBuffer({
    store: instrumented,
    flushIntervalMs: config.heartbeatFlushMs ?? DEFAULT_HEARTBEAT_FLUSH_MS,
    onFlush: (nodes) => {
      metrics.sightingFlushes.inc({ outcome: "ok" });
      metrics.sightingsWritten.inc(nodes);
    },
    onFlushError: (err) => {
      metrics.sightingFlushes.inc({ outcome: "error" });
      logger.warn({ err: (err as Error).message }, "writing node last-seen times failed; kept for the next flush");
    },
  });
  const fleet = { store: instrumented, sightings, staleAfterMs: config.nodeStaleAfterMs ?? DEFAULT_NODE_STALE_AFTER_MS };
  metrics.countNodes = () => countLifecycles(fleet);
  let signer: SpecSigner;
  const controller = new RolloutController({ ...fleet, metrics, logger });
  const authorizer = new Authorizer({ store: instrumented, logger, enforced: config.rbacEnforcement !== false });
  try {
    signer = SpecSigner.load(config.dataDir);
    await instrumented.registerSigningKey(signer.row(Date.now()));
    await controller.start();
  } catch (err) {
    await controller.stop();
    await sightings.close();
    await store.close();
    throw err;
  }
  if (!authorizer.enforced) logger.warn(ENFORCEMENT_OFF_WARNING);
  const services = createServices({ ...fleet, metrics, controller, signer, authorizer, auditDataPlane: config.auditDataPlane });
  const interceptors = [createObserveInterceptor(metrics), createErrorInterceptor(logger), authorizer.interceptor()];
  const infos = new WeakMap<NodeRequest, RequestInfo>();
  const contextValues = (req: NodeRequest) => createContextValues().set(requestInfoKey, infos.get(req));
  const rest = createRestHandler({
    services,
    plainRoutes: [metricsRoute(metrics), crlRoute(() => crl)],
    interceptors,
    contextValues,
    maxBodyBytes: MAX_BODY_BYTES,
  });
  const serveUi = createUiStaticHandler();
  const rpc = connectNodeAdapter({
    routes: (router) => registerServices(router, services),
    interceptors,
    contextValues: (req) => contextValues(req as NodeRequest),
    readMaxBytes: MAX_BODY_BYTES,
    fallback: (req, res) => void (serveUi(req as NodeRequest, res as NodeResponse, infos.get(req as NodeRequest)) || rest(req as NodeRequest, res as NodeResponse)),
  });

  const handler = (req: NodeRequest, res: NodeResponse) => {
    const started = process.hrtime.bigint();
    if (req.httpVersionMajor === 1) closeIfBodyUnread(req as http.IncomingMessage, res as http.ServerResponse);
    const info: RequestInfo = { peer: tls ? peerIdentity((req as http2.Http2ServerRequest).stream?.session?.socket ?? req.socket) : undefined };
    infos.set(req, info);
    res.once("close", () => {
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      const route = info.route ?? "unmatched";
      const method = methodLabel(req.method);
      metrics.httpRequests.inc({ method, route, status: res.statusCode });
      metrics.httpDuration.observe({ method, route }, seconds);
      logger.info(
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
    if (!refuseCrossSite(req, res, info)) rpc(req, res);
  };

  let api: Listener | TlsListener | undefined;
  let metricsServer: Listener | undefined;
  let crlWatch: { close(): void } | undefined;
  let syncTimer: NodeJS.Timeout | undefined;
  try {
    if (tls) {
      const tlsApi = await listenTls(listenAddress, handler, tls, {
        onRefused: (reason) => metrics.tlsRefusals.inc({ reason }),
        onRevokedClosed: () => metrics.tlsRevokedClosed.inc(),
      });
      api = tlsApi;
      if (config.tls?.crlFile && crl) {
        const file = config.tls.crlFile;
        crlWatch = watchCrlFile(file, tls.ca!.toString("utf8"), crl, {
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
      }
      if (sync && sync.intervalMs > 0) {
        syncTimer = setInterval(() => void syncRound().catch((err: Error) => logger.error({ err: err.message }, "CRL sync failed")), sync.intervalMs);
        syncTimer.unref();
      }
    } else {
      api = await listenCleartext(listenAddress, handler);
      if (!isLoopback(listenAddress.host)) {
        logger.warn(
          { listen: config.listen },
          "serving cleartext HTTP beyond loopback: anyone on the network can read and send requests; set --tls-cert-file and --tls-key-file (and --tls-ca-file for mutual TLS)",
        );
      }
    }
    if (metricsAddress) {
      const onlyMetrics = createRestHandler({
        services: [],
        plainRoutes: [metricsRoute(metrics)],
        interceptors: [],
        contextValues,
        maxBodyBytes: 0,
      });
      metricsServer = await listenCleartext(metricsAddress, (req, res) => void onlyMetrics(req, res));
    }
    // With enforcement off nobody needs a credential; the token is made at the first enforced start.
    if (authorizer.enforced) await bootstrapRbac(instrumented, config.dataDir, logger);
  } catch (err) {
    clearInterval(syncTimer);
    crlWatch?.close();
    await api?.close();
    await controller.stop();
    await sightings.close();
    await store.close();
    throw err;
  }
  const apiListener = api;

  return {
    address: apiListener.address,
    url: urlOf(apiListener.address, tls !== undefined),
    metricsAddress: metricsServer?.address,
    metrics,
    store,
    rollouts: controller,
    async close() {
      clearInterval(syncTimer);
      crlWatch?.close();
      await Promise.all([apiListener.close(), metricsServer?.close()]);
      await controller.stop();
      await sightings.close();
      await store.close();
    },
  };
}
