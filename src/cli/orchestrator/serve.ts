import os from "node:os";
import path from "node:path";
import { Command, InvalidArgumentError, Option } from "commander";
import { createLogger, LogRing, LOG_FORMATS, LOG_LEVELS, type LogFormat, type LogLevel } from "../../observability/logger.js";
import { DEFAULT_REFUSED_BODY_RATE, DEFAULT_UNAUTHENTICATED_RATE, startServer } from "../../server.js";
import { wrapProse } from "../shared/program.js";
import { parseDuration, parseMiB, parsePositiveDuration, parsePositiveInt, parseSize } from "../shared/parse.js";
import { DEFAULT_LIMITS } from "../../transport/limits.js";

/** `$XDG_CACHE_HOME/autonomyops/orchestrator`, falling back to `~/.cache/autonomyops/orchestrator`. */
export function defaultDataDir(): string {
  const cache = process.env.XDG_CACHE_HOME || path.join(os.homedir(), ".cache");
  return path.join(cache, "autonomyops", "orchestrator");
}

interface ServeOptions {
  dataDir: string;
  listen: string;
  logFormat: LogFormat;
  logLevel: LogLevel;
  metricsAddr?: string;
  postgresUrl?: string;
  busyTimeout: number;
  maxDbSize: number;
  nodeStaleAfter: number;
  heartbeatFlushInterval: number;
  rolloutResync: number;
  workloadResync: number;
  replicaLostAfter: number;
  leaderLease: number;
  leaderRenew: number;
  replicationLagCritical: number;
  tlsCertFile?: string;
  tlsKeyFile?: string;
  tlsCaFile?: string;
  tlsCrlFile?: string;
  tlsCrlSyncUrl?: string[];
  tlsCrlSyncMinSources: number;
  tlsCrlSyncInterval: number;
  tlsCrlServerName?: string;
  auditDataPlane?: boolean;
  auditCheckpointInterval: number;
  eventRetention: number;
  tlsClientAuth: "require" | "request";
  caDir?: string;
  nodeCertValidFor: number;
  httpHeadersTimeout: number;
  httpRequestTimeout: number;
  httpIdleTimeout: number;
  maxConnections: number;
  maxConnectionsPerClient: number;
  connectionRatePerClient: number;
  connectionBurstPerClient: number;
  http2MaxConcurrentStreams: number;
  http2MaxSessionMemory: number;
  unauthenticatedRate: number;
  unauthenticatedBurst: number;
  refusedBodyRate: number;
  refusedBodyBurst: number;
  pushKeepalive: number;
  nodeIngestRate: number;
  nodeIngestBurst: number;
}

const seconds = (ms: number) => `${ms / 1000}s`;

/** Repeatable --tls-crl-sync-url; the environment variable may hold several, comma-separated. */
function collectUrls(value: string, previous: string[] = []): string[] {
  const urls = value.split(",").map((u) => u.trim()).filter(Boolean);
  for (const u of urls) {
    let parsed: URL;
    try {
      parsed = new URL(u);
    } catch {
      throw new InvalidArgumentError(`"${u}" is not a URL`);
    }
    if (parsed.protocol !== "https:") throw new InvalidArgumentError(`"${u}": CRLs are pulled over https only`);
  }
  return [...previous, ...urls];
}

export function serveCommand(): Command {
  return new Command("serve")
    .summary("Start the control-plane API on the embedded SQLite store (or PostgreSQL)")
    .description(
      "Start the control-plane API: Connect, gRPC, gRPC-Web and REST on one port (HTTP/2 and HTTP/1.1, cleartext or TLS). " +
        "Stores events in an embedded SQLite database under --data-dir, or in PostgreSQL with --postgres-url. " +
        "Every flag can also be set with an AUTONOMY_ environment variable (shown in brackets).",
    )
    .addHelpText(
      "after",
      () =>
        "\n" +
        wrapProse(
          "REST endpoints:\n" +
            '  POST /v1/events   ingest {"events":[...]} -> {"received":N,"inserted":N,"deduped":N}\n' +
            "  GET  /v1/events   newest first; node_id, event_type, limit (default 100, max 1000), before\n" +
            "  GET  /v1/events/follow?after=SEQ   events stored after SEQ, oldest first (a long poll: wait_seconds, default 20)\n" +
            "  POST /v1/releases                          publish a release (immutable; artifacts pinned by sha256 digest)\n" +
            "  GET  /v1/releases/latest?channel=C         latest release of a channel\n" +
            "  GET  /v1/releases/{release_id}/acks        every node's ack of a release\n" +
            "  PUT  /v1/releases/{release_id}/acks/{node_id}, POST /v1/nodes/{node_id}/ack   upsert an ack\n" +
            "  POST /v1/nodes, /v1/nodes/{node_id}/heartbeat, /v1/nodes/{node_id}/drain   enrol, heartbeat, drain\n" +
            "  POST /v1/enrollment-tokens, GET /v1/enrollment-tokens, POST /v1/enrollment-tokens/{token_id}/revoke   one-time enrolment tokens\n" +
            "  POST /v1/enrollments   a token and a CSR for a node certificate (--ca-dir); POST /v1/nodes/{node_id}/certificate/renew\n" +
            "  GET  /v1/nodes, /v1/nodes/{node_id}/summary, /v1/nodes/{node_id}/acks, /v1/nodes/{node_id}/desired-release\n" +
            "  GET  /v1/fleet?channel=C&stale_threshold_seconds=N   totals and one row per node (paged)\n" +
            "  POST /v1/rollouts, GET /v1/rollouts, GET /v1/rollouts/{plan_id}[/spec|/status], GET /v1/rollouts/stuck\n" +
            "  POST /v1/rollouts/{plan_id}/pause|resume|promote|halt|cancel|recover   operator actions (reason required)\n" +
            "  GET  /v1/rollouts/{plan_id}/stages/{stage_id}/gates, POST .../gates/approve   gate status, manual approval\n" +
            "  GET  /v1/rollouts/signing-keys   public keys of the signed plan specs\n" +
            "  GET  /v1/support/bundle/parts[/{name}]   the parts of a support bundle, redacted\n" +
            "  GET  /v1/crl      the CRL in force (with --tls-crl-file)\n" +
            '  GET  /v1/health   {"status":"ok"}\n' +
            "  GET  /metrics     Prometheus exposition\n\n" +
            "Errors: 400 bad input, 401 no or bad credential, 403 not permitted, 404 unknown resource, 405 wrong method, " +
            "408 request not received in time, 409 conflict (or a rollout action its phase forbids), 413 too large, " +
            "429 throttled (Retry-After), 503 database busy (Retry-After), 507 disk full. " +
            "A corrupt database makes the process log one line and exit with status 1.\n\n" +
            "RBAC is enforced: every RPC needs a client certificate (mutual TLS) or a bearer token whose roles grant its permission. " +
            "The first start on an empty store writes a one-time admin token to DATA_DIR/bootstrap-admin-token (mode 0600; valid 24h). " +
            "AUTONOMY_RBAC_ENFORCEMENT=0 turns enforcement off (a warning at start and on /v1/health); /v1/health, /metrics and /v1/crl stay open. " +
            "A call that needs a credential and has none (or a bad token) is answered 401 from its headers, before its body is read; " +
            "past --unauthenticated-burst such calls from one address are answered 429 (Retry-After).\n\n" +
            "Client certificates (--tls-ca-file): --tls-client-auth require (the default) refuses a client without one at the handshake; " +
            "request lets it in to authenticate with a bearer token (a certificate it does present must still be valid and unrevoked). " +
            "With --ca-dir, a client without a certificate may call the enrolment RPC (edgectl enroll --token) and nothing else.",
        ) +
        "\n",
    )
    .addOption(
      new Option("--data-dir <dir>", "data directory for SQLite storage")
        .env("AUTONOMY_DATA_DIR")
        .default(defaultDataDir(), "$XDG_CACHE_HOME/autonomyops/orchestrator"),
    )
    .addOption(new Option("--listen <host:port>", "TCP address to listen on").env("AUTONOMY_LISTEN").default("0.0.0.0:8888"))
    .addOption(
      new Option("--log-format <format>", "log output format: json (machine-readable) or text (human-readable)")
        .env("AUTONOMY_LOG_FORMAT")
        .choices(LOG_FORMATS)
        .default("json"),
    )
    .addOption(
      new Option("--log-level <level>", "minimum log level").env("AUTONOMY_LOG_LEVEL").choices(LOG_LEVELS).default("info"),
    )
    .addOption(
      new Option("--metrics-addr <host:port>", 'extra listener serving only /metrics (e.g. ":9090"); /metrics is always on the API port too').env(
        "AUTONOMY_METRICS_ADDR",
      ),
    )
    .addOption(
      new Option("--postgres-url <url>", "store in PostgreSQL instead of the embedded SQLite database").env(
        "AUTONOMY_POSTGRES_URL",
      ),
    )
    .addOption(
      new Option("--leader-lease <duration>", "with --postgres-url: how long a leader's epoch lasts without renewal; a follower takes over after it (must be at least 3x --leader-renew)")
        .env("AUTONOMY_LEADER_LEASE")
        .argParser(parsePositiveDuration)
        .default(10_000, "10s"),
    )
    .addOption(
      new Option("--leader-renew <duration>", "with --postgres-url: how often the leader renews its epoch; it stops acting when no renewal succeeded within lease - renew")
        .env("AUTONOMY_LEADER_RENEW")
        .argParser(parsePositiveDuration)
        .default(2_000, "2s"),
    )
    .addOption(
      new Option("--replication-lag-critical <duration>", "with --postgres-url: standby replay lag above which /v1/health/quorum says critical and a resign is refused")
        .env("AUTONOMY_REPLICATION_LAG_CRITICAL")
        .argParser(parsePositiveDuration)
        .default(10_000, "10s"),
    )
    .addOption(
      new Option("--busy-timeout <duration>", "how long a SQLite write waits for the lock before answering 503")
        .env("AUTONOMY_BUSY_TIMEOUT")
        .argParser(parseDuration)
        .default(5000, "5s"),
    )
    .addOption(
      new Option("--max-db-size <size>", "SQLite: answer writes with 507 once the database reaches this size (0: no limit)")
        .env("AUTONOMY_MAX_DB_SIZE")
        .argParser(parseSize)
        .default(0, "0"),
    )
    .addOption(
      new Option("--node-stale-after <duration>", "a node without a heartbeat for this long is STALE (5x: UNAVAILABLE)")
        .env("AUTONOMY_NODE_STALE_AFTER")
        .argParser(parsePositiveDuration)
        .default(120_000, "2m"),
    )
    .addOption(
      new Option(
        "--heartbeat-flush-interval <duration>",
        "how often coalesced heartbeats are written; a crash loses at most this much of last-seen times",
      )
        .env("AUTONOMY_HEARTBEAT_FLUSH_INTERVAL")
        .argParser(parsePositiveDuration)
        .default(5000, "5s"),
    )
    .addOption(
      new Option(
        "--rollout-resync <duration>",
        "how often the rollout controller reads every unfinished plan back from the store and evaluates it (besides reacting to acks, events and timers)",
      )
        .env("AUTONOMY_ROLLOUT_RESYNC")
        .argParser(parsePositiveDuration)
        .default(30_000, "30s"),
    )
    .addOption(
      new Option(
        "--workload-resync <duration>",
        "how often the leader's workload reconcile loop places every service again and re-sends unanswered commands (besides reacting to applies, deletes and reports)",
      )
        .env("AUTONOMY_WORKLOAD_RESYNC")
        .argParser(parsePositiveDuration)
        .default(10_000, "10s"),
    )
    .addOption(
      new Option(
        "--replica-lost-after <duration>",
        "a node without a workload report for longer is lost: its replicas are placed elsewhere (after a leader change, not before this long again)",
      )
        .env("AUTONOMY_REPLICA_LOST_AFTER")
        .argParser(parsePositiveDuration)
        .default(120_000, "2m"),
    )
    .addOption(
      new Option("--tls-cert-file <path>", "server TLS certificate (PEM); enables TLS when set with --tls-key-file").env("AUTONOMY_TLS_CERT_FILE"),
    )
    .addOption(new Option("--tls-key-file <path>", "server TLS private key (PEM)").env("AUTONOMY_TLS_KEY_FILE"))
    .addOption(
      new Option("--tls-ca-file <path>", "CA certificate (PEM) client certificates must be signed by: enables mutual TLS").env(
        "AUTONOMY_TLS_CA_FILE",
      ),
    )
    .addOption(
      new Option(
        "--tls-crl-file <path>",
        "CRL (PEM or DER) of revoked client certificates, reloaded when it changes; requires --tls-ca-file. Fail closed: missing, not signed by the CA or expired stops the start",
      ).env("AUTONOMY_TLS_CRL_FILE"),
    )
    .addOption(
      new Option(
        "--tls-crl-sync-url <url>",
        "a control plane's CRL endpoint (https://host:port/v1/crl) to pull into --tls-crl-file before startup and on a timer (repeat to define the publisher set)",
      )
        .env("AUTONOMY_TLS_CRL_SYNC_URL")
        .argParser(collectUrls),
    )
    .addOption(
      new Option("--tls-crl-sync-min-sources <n>", "publishers that must serve the same CRL before it is accepted")
        .env("AUTONOMY_TLS_CRL_SYNC_MIN_SOURCES")
        .argParser((v) => {
          const n = Number(v);
          if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError("a whole number, at least 1");
          return n;
        })
        .default(1),
    )
    .addOption(
      new Option("--tls-crl-sync-interval <duration>", "CRL pull interval; 0 disables background refresh after the initial sync")
        .env("AUTONOMY_TLS_CRL_SYNC_INTERVAL")
        .argParser(parseDuration)
        .default(60_000, "1m"),
    )
    .addOption(
      new Option("--tls-crl-server-name <name>", "TLS server name expected of the --tls-crl-sync-url publishers (instead of their host)").env(
        "AUTONOMY_TLS_CRL_SERVER_NAME",
      ),
    )
    .addOption(
      new Option("--tls-client-auth <mode>", "with --tls-ca-file: require a client certificate, or request one (clients without one use a bearer token)")
        .env("AUTONOMY_TLS_CLIENT_AUTH")
        .choices(["require", "request"])
        .default("require"),
    )
    .addOption(
      new Option(
        "--ca-dir <dir>",
        "the CA directory of `autonomy cert init-ca`: the server then holds the CA key and signs node certificates at enrolment (edgectl enroll --token) and renewal; needs --tls-ca-file with that CA",
      ).env("AUTONOMY_NODE_CA_DIR"),
    )
    .addOption(
      new Option("--node-cert-valid-for <duration>", "with --ca-dir: how long a node certificate it signs is valid (agents renew at two thirds of it); 5s to 3650d")
        .env("AUTONOMY_NODE_CERT_VALID_FOR")
        .argParser((v) => {
          const ms = parseDuration(v);
          if (ms < 5000 || ms > 3650 * 86_400_000) throw new InvalidArgumentError(`"${v}": 5s to 3650d`);
          return ms;
        })
        .default(30 * 86_400_000, "30d"),
    )
    .addOption(
      new Option("--http-headers-timeout <duration>", "a request's headers must arrive within this of the connection opening or the previous response")
        .env("AUTONOMY_HTTP_HEADERS_TIMEOUT")
        .argParser(parsePositiveDuration)
        .default(DEFAULT_LIMITS.headersTimeoutMs, seconds(DEFAULT_LIMITS.headersTimeoutMs)),
    )
    .addOption(
      new Option("--http-request-timeout <duration>", "a request's headers and body must arrive within this (408 beyond)")
        .env("AUTONOMY_HTTP_REQUEST_TIMEOUT")
        .argParser(parsePositiveDuration)
        .default(DEFAULT_LIMITS.requestTimeoutMs, seconds(DEFAULT_LIMITS.requestTimeoutMs)),
    )
    .addOption(
      new Option("--http-idle-timeout <duration>", "an HTTP/2 session with no open stream and no traffic is closed after this (HTTP/1.1 keep-alive: at most 5s)")
        .env("AUTONOMY_HTTP_IDLE_TIMEOUT")
        .argParser(parsePositiveDuration)
        .default(DEFAULT_LIMITS.idleTimeoutMs, seconds(DEFAULT_LIMITS.idleTimeoutMs)),
    )
    .addOption(
      new Option("--max-connections <n>", "open connections at most, over all clients; more are closed as they open")
        .env("AUTONOMY_MAX_CONNECTIONS")
        .argParser(parsePositiveInt)
        .default(DEFAULT_LIMITS.maxConnections),
    )
    .addOption(
      new Option("--max-connections-per-client <n>", "open connections at most from one client address")
        .env("AUTONOMY_MAX_CONNECTIONS_PER_CLIENT")
        .argParser(parsePositiveInt)
        .default(DEFAULT_LIMITS.maxConnectionsPerClient),
    )
    .addOption(
      new Option(
        "--connection-rate-per-client <n>",
        "new connections per second one client address may have served (cleartext and TLS); those beyond wait, unread (on TLS, before their handshake), for their turn, within --max-connections-per-client (0: no limit)",
      )
        .env("AUTONOMY_CONNECTION_RATE_PER_CLIENT")
        .argParser((v) => {
          const n = Number(v);
          if (!Number.isFinite(n) || n < 0) throw new InvalidArgumentError("a number, 0 or more");
          return n;
        })
        .default(DEFAULT_LIMITS.connectionRatePerClient),
    )
    .addOption(
      new Option("--connection-burst-per-client <n>", "new connections one client address may have served at once before the rate applies")
        .env("AUTONOMY_CONNECTION_BURST_PER_CLIENT")
        .argParser(parsePositiveInt)
        .default(DEFAULT_LIMITS.connectionBurstPerClient),
    )
    .addOption(
      new Option("--http2-max-concurrent-streams <n>", "HTTP/2 streams one session may have open at once")
        .env("AUTONOMY_HTTP2_MAX_CONCURRENT_STREAMS")
        .argParser(parsePositiveInt)
        .default(DEFAULT_LIMITS.maxConcurrentStreams),
    )
    .addOption(
      new Option("--http2-max-session-memory <size>", "memory one HTTP/2 session may buffer before its new streams are refused (whole MiB: 10MiB; a bare number is MiB)")
        .env("AUTONOMY_HTTP2_MAX_SESSION_MEMORY")
        .argParser(parseMiB)
        .default(DEFAULT_LIMITS.maxSessionMemoryMiB, `${DEFAULT_LIMITS.maxSessionMemoryMiB}MiB`),
    )
    .addOption(
      new Option("--unauthenticated-rate <n>", "calls per second one client address may make without a valid credential (0: no limit)")
        .env("AUTONOMY_UNAUTHENTICATED_RATE")
        .argParser((v) => {
          const n = Number(v);
          if (!Number.isFinite(n) || n < 0) throw new InvalidArgumentError("a number, 0 or more");
          return n;
        })
        .default(DEFAULT_UNAUTHENTICATED_RATE.perSecond),
    )
    .addOption(
      new Option("--unauthenticated-burst <n>", "such calls one address may make at once before the rate applies")
        .env("AUTONOMY_UNAUTHENTICATED_BURST")
        .argParser(parsePositiveInt)
        .default(DEFAULT_UNAUTHENTICATED_RATE.burst),
    )
    .addOption(
      new Option(
        "--refused-body-rate <n>",
        "request bodies per second one principal or client address may have refused (too large, nested too deep, malformed, too slow); beyond, its calls are answered 429 with Retry-After before their body is read (0: no limit)",
      )
        .env("AUTONOMY_REFUSED_BODY_RATE")
        .argParser((v) => {
          const n = Number(v);
          if (!Number.isFinite(n) || n < 0) throw new InvalidArgumentError("a number, 0 or more");
          return n;
        })
        .default(DEFAULT_REFUSED_BODY_RATE.perSecond),
    )
    .addOption(
      new Option("--refused-body-burst <n>", "such refused bodies one principal or address may have at once before the rate applies")
        .env("AUTONOMY_REFUSED_BODY_BURST")
        .argParser(parsePositiveInt)
        .default(DEFAULT_REFUSED_BODY_RATE.burst),
    )
    .addOption(
      new Option("--node-ingest-rate <n>", "events per second one node may ingest; over it, 429 with Retry-After (REST) or resource_exhausted with a retry-after hint (RPC); 0: no limit")
        .env("AUTONOMY_NODE_INGEST_RATE")
        .argParser((v) => {
          const n = Number(v);
          if (!Number.isFinite(n) || n < 0) throw new InvalidArgumentError("a number of events per second, 0 or more");
          return n;
        })
        .default(0),
    )
    .addOption(
      new Option("--node-ingest-burst <n>", "events one node may send at once before --node-ingest-rate applies")
        .env("AUTONOMY_NODE_INGEST_BURST")
        .argParser(parsePositiveInt)
        .default(1000),
    )
    .addOption(
      new Option("--push-keepalive <duration>", "how often an agent's push stream carries a keepalive when nothing else is sent (proxies drop idle streams)")
        .env("AUTONOMY_PUSH_KEEPALIVE")
        .argParser(parsePositiveDuration)
        .default(15_000, "15s"),
    )
    .addOption(
      new Option(
        "--audit-data-plane",
        "also write an audit record for every ingested event batch and every stored ack (heavy at fleet scale)",
      ).env("AUTONOMY_AUDIT_DATA_PLANE"),
    )
    .addOption(
      new Option("--audit-checkpoint-interval <duration>", "how often a signed checkpoint of the audit chain is written when it grew; 0: only at start, after prunes and at shutdown")
        .env("AUTONOMY_AUDIT_CHECKPOINT_INTERVAL")
        .argParser(parseDuration)
        .default(300_000, "5m"),
    )
    .addOption(
      new Option("--event-retention <duration>", "delete events received longer ago than this (30s, 10m, 2h, 7d), in short batches, each run recorded in the audit trail; 0: keep every event")
        .env("AUTONOMY_EVENT_RETENTION")
        .argParser((v) => {
          const ms = parseDuration(v);
          if (ms !== 0 && ms < 1000) throw new InvalidArgumentError(`"${v}": at least 1s (or 0 to keep every event)`);
          return ms;
        })
        .default(0, "0 (off)"),
    )
    .action(async (opts: ServeOptions) => {
      // The newest log records stay in memory too, for support bundles.
      const logRing = new LogRing();
      const logger = createLogger({ format: opts.logFormat, level: opts.logLevel, ring: logRing });
      const fatal = (err: Error) => {
        logger.fatal(`fatal: ${err.message}; stopping`);
        process.exit(1);
      };
      let server;
      try {
        if ((opts.tlsCertFile === undefined) !== (opts.tlsKeyFile === undefined)) {
          throw new Error("--tls-cert-file and --tls-key-file go together");
        }
        if (opts.tlsCertFile === undefined && (opts.tlsCaFile !== undefined || opts.tlsCrlFile !== undefined || opts.tlsCrlSyncUrl !== undefined)) {
          throw new Error("--tls-ca-file, --tls-crl-file and --tls-crl-sync-url need --tls-cert-file and --tls-key-file");
        }
        const enforcement = (process.env.AUTONOMY_RBAC_ENFORCEMENT ?? "1").trim().toLowerCase();
        if (!["0", "1", "false", "true", "off", "on"].includes(enforcement)) {
          throw new Error(`AUTONOMY_RBAC_ENFORCEMENT="${process.env.AUTONOMY_RBAC_ENFORCEMENT}": expected 1 (the default) or 0`);
        }
        server = await startServer(
          {
            listen: opts.listen,
            dataDir: path.resolve(opts.dataDir),
            postgresUrl: opts.postgresUrl,
            busyTimeoutMs: opts.busyTimeout,
            maxDbBytes: opts.maxDbSize,
            metricsAddr: opts.metricsAddr,
            nodeStaleAfterMs: opts.nodeStaleAfter,
            heartbeatFlushMs: opts.heartbeatFlushInterval,
            rolloutResyncMs: opts.rolloutResync,
            workloadResyncMs: opts.workloadResync,
            replicaLostAfterMs: opts.replicaLostAfter,
            ha: { leaseMs: opts.leaderLease, renewMs: opts.leaderRenew, lagCriticalMs: opts.replicationLagCritical },
            rbacEnforcement: !["0", "false", "off"].includes(enforcement),
            auditDataPlane: opts.auditDataPlane === true,
            auditCheckpointIntervalMs: opts.auditCheckpointInterval,
            eventRetentionMs: opts.eventRetention || undefined,
            tlsClientAuth: opts.tlsClientAuth,
            caDir: opts.caDir ? path.resolve(opts.caDir) : undefined,
            nodeCertLifetimeMs: opts.nodeCertValidFor,
            limits: {
              headersTimeoutMs: opts.httpHeadersTimeout,
              requestTimeoutMs: opts.httpRequestTimeout,
              idleTimeoutMs: opts.httpIdleTimeout,
              maxConnections: opts.maxConnections,
              maxConnectionsPerClient: opts.maxConnectionsPerClient,
              connectionRatePerClient: opts.connectionRatePerClient,
              connectionBurstPerClient: opts.connectionBurstPerClient,
              maxConcurrentStreams: opts.http2MaxConcurrentStreams,
              maxSessionMemoryMiB: opts.http2MaxSessionMemory,
            },
            unauthenticatedRate: { perSecond: opts.unauthenticatedRate, burst: opts.unauthenticatedBurst },
            refusedBodyRate: { perSecond: opts.refusedBodyRate, burst: opts.refusedBodyBurst },
            pushKeepaliveMs: opts.pushKeepalive,
            nodeIngestRate: { perSecond: opts.nodeIngestRate, burst: opts.nodeIngestBurst },
            tls:
              opts.tlsCertFile && opts.tlsKeyFile
                ? {
                    certFile: opts.tlsCertFile,
                    keyFile: opts.tlsKeyFile,
                    caFile: opts.tlsCaFile,
                    crlFile: opts.tlsCrlFile,
                    crlSync: opts.tlsCrlSyncUrl && {
                      urls: opts.tlsCrlSyncUrl,
                      minSources: opts.tlsCrlSyncMinSources,
                      intervalMs: opts.tlsCrlSyncInterval,
                      serverName: opts.tlsCrlServerName,
                    },
                  }
                : undefined,
          },
          // The flags as parsed (defaults and AUTONOMY_ variables applied) go into support bundles.
          { logger, onFatal: fatal, logRing, flags: opts },
        );
      } catch (err) {
        logger.fatal(`cannot start: ${(err as Error).message}`);
        process.exit(1);
      }
      logger.info(
        {
          url: server.url,
          listen: `${server.address.host}:${server.address.port}`,
          store: server.store.dialect,
          data_dir: server.store.dialect === "sqlite" ? path.resolve(opts.dataDir) : undefined,
          metrics: server.metricsAddress ? `${server.metricsAddress.host}:${server.metricsAddress.port}` : undefined,
        },
        "serving",
      );
      let stopping = false;
      const stop = async (signal: string) => {
        if (stopping) return;
        stopping = true;
        logger.info({ signal }, "shutting down");
        await server.close();
        process.exit(0);
      };
      process.on("SIGTERM", () => void stop("SIGTERM"));
      process.on("SIGINT", () => void stop("SIGINT"));
    });
}
