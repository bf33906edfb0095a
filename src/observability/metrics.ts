import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";

/**
 * The server's Prometheus metrics, all named `cp_*`. One registry per server instance, so
 * several servers in one process (tests) keep separate counts. Labels are bounded: routes
 * are RPC names or REST path templates, never raw paths.
 */
export interface Metrics {
  readonly registry: Registry;
  readonly httpRequests: Counter<"method" | "route" | "status">;
  readonly httpDuration: Histogram<"method" | "route">;
  readonly rpcRequests: Counter<"rpc" | "protocol" | "code">;
  readonly rpcDuration: Histogram<"rpc" | "protocol">;
  readonly eventsReceived: Counter;
  readonly eventsInserted: Counter;
  readonly eventsDeduped: Counter;
  /** REST event pages answered, by where they were read and written ("thread" or "event_loop"). */
  readonly eventPages: Counter<"on">;
  /** Ingest calls refused by the per-node limit, by node (enrolled ones; "unenrolled" for the rest). */
  readonly ingestThrottled: Counter<"node">;
  readonly storeDuration: Histogram<"operation" | "outcome">;
  readonly releasesPublished: Counter;
  readonly acks: Counter<"state" | "outcome">;
  readonly heartbeats: Counter;
  readonly sightingFlushes: Counter<"outcome">;
  readonly sightingsWritten: Counter;
  /** Enrolled nodes per lifecycle state, counted at scrape time by the function the server sets here. */
  readonly nodes: Gauge<"lifecycle">;
  countNodes?: () => Promise<Record<string, number>>;
  /** Nodes diverged from their desired release for longer than 10 minutes, by class, counted at scrape time. */
  readonly nodesDiverged: Gauge<"class">;
  countDiverged?: () => Promise<Record<string, number>>;
  readonly rolloutPlans: Counter;
  readonly rolloutTransitions: Counter<"action" | "phase">;
  readonly rolloutEvaluations: Counter;
  readonly tlsRefusals: Counter<"reason">;
  /** Connections of the API listener waiting for their turn (--connection-rate-per-client), read at scrape time. */
  readonly connectionsWaiting: Gauge;
  countWaitingConnections?: () => number;
  readonly tlsRevokedClosed: Counter;
  /** AgentService.Subscribe streams open now. */
  readonly agentStreams: Gauge;
  /** Messages pushed on agents' streams, by kind (hello, keepalive, desired_release_changed). */
  readonly agentPushed: Counter<"kind">;
  /** ReportWorkloads calls stored. */
  readonly workloadReports: Counter;
  /** Replicas by state (pending, running, unschedulable, lost, ...), as of the leader's last reconcile pass. */
  readonly workloadReplicas: Gauge<"state">;
  /** What the reconcile loop decided, by decision (launch, update, stop, unschedulable). */
  readonly schedulingDecisions: Counter<"decision">;
  /** Workload commands written and sent, by kind (launch, update, stop) and whether they were first sends or re-sends. */
  readonly workloadCommands: Counter<"kind" | "send">;
  /** How long one reconcile pass took, by outcome (ok, aborted, error). */
  readonly reconcileDuration: Histogram<"outcome">;
  readonly crlReloadFailures: Counter;
  readonly crlReloadFailing: Gauge;
  readonly crlNumber: Gauge;
  readonly crlAge: Gauge;
  readonly crlSyncFailures: Counter<"publisher">;
  readonly crlSyncRounds: Counter<"outcome">;
  /** The CRL in force, read by the CRL gauges at scrape time. */
  currentCrl?: () => { number: bigint; thisUpdate: Date } | undefined;
}

// prom-client names these gauges *_total, which Prometheus reserves for counters (promtool refuses them).
const MISNAMED_DEFAULTS = /^cp_nodejs_active_(handles|requests|resources)_total$/;

/** prom-client's process and Node.js runtime metrics, prefixed cp_, less the misnamed gauges. */
function registerProcessMetrics(registry: Registry): void {
  const scratch = new Registry();
  collectDefaultMetrics({ register: scratch, prefix: "cp_" });
  for (const { name } of scratch.getMetricsAsArray()) {
    const metric = scratch.getSingleMetric(name);
    if (metric && !MISNAMED_DEFAULTS.test(name)) registry.registerMetric(metric);
  }
}

const LATENCY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

export function createMetrics(opts: { processMetrics?: boolean } = {}): Metrics {
  const registry = new Registry();
  if (opts.processMetrics ?? true) registerProcessMetrics(registry);
  const registers = [registry];
  const metrics: Metrics = {
    registry,
    httpRequests: new Counter({
      name: "cp_http_requests_total",
      help: "HTTP requests answered, by method, route (RPC or REST path template) and status.",
      labelNames: ["method", "route", "status"],
      registers,
    }),
    httpDuration: new Histogram({
      name: "cp_http_request_duration_seconds",
      help: "Time from receiving a request to the end of its answer, by method and route.",
      labelNames: ["method", "route"],
      buckets: LATENCY_BUCKETS,
      registers,
    }),
    rpcRequests: new Counter({
      name: "cp_rpc_requests_total",
      help: "RPCs handled, by RPC, protocol (connect, grpc, grpcweb, rest) and result code.",
      labelNames: ["rpc", "protocol", "code"],
      registers,
    }),
    rpcDuration: new Histogram({
      name: "cp_rpc_duration_seconds",
      help: "Time spent in an RPC handler, by RPC and protocol.",
      labelNames: ["rpc", "protocol"],
      buckets: LATENCY_BUCKETS,
      registers,
    }),
    eventsReceived: new Counter({
      name: "cp_events_received_total",
      help: "Events received in accepted ingest batches.",
      registers,
    }),
    eventsInserted: new Counter({
      name: "cp_events_ingested_total",
      help: "Events newly stored by ingestion.",
      registers,
    }),
    eventsDeduped: new Counter({
      name: "cp_events_deduped_total",
      help: "Events ignored by ingestion because their node had sent their event_id before (stored, or earlier in the batch).",
      registers,
    }),
    eventPages: new Counter({
      name: "cp_event_pages_total",
      help: "REST event pages (GET /v1/events) answered, by where they were read and written: on SQLite's event page thread (beside other calls) or on the event loop.",
      labelNames: ["on"],
      registers,
    }),
    storeDuration: new Histogram({
      name: "cp_store_operation_duration_seconds",
      help: "Latency of store operations, by operation and outcome.",
      labelNames: ["operation", "outcome"],
      buckets: LATENCY_BUCKETS,
      registers,
    }),
    releasesPublished: new Counter({
      name: "cp_releases_published_total",
      help: "Releases newly published (identical republications are not counted).",
      registers,
    }),
    acks: new Counter({
      name: "cp_release_acks_total",
      help: "Acks received, by state and outcome (stored, or stale: older than the stored one and ignored).",
      labelNames: ["state", "outcome"],
      registers,
    }),
    heartbeats: new Counter({
      name: "cp_node_heartbeats_total",
      help: "Heartbeats accepted.",
      registers,
    }),
    sightingFlushes: new Counter({
      name: "cp_node_sighting_flushes_total",
      help: "Writes of coalesced last-seen times (one transaction each), by outcome.",
      labelNames: ["outcome"],
      registers,
    }),
    sightingsWritten: new Counter({
      name: "cp_node_sightings_written_total",
      help: "Node last-seen updates written by those flushes.",
      registers,
    }),
    nodes: new Gauge({
      name: "cp_nodes",
      help: "Enrolled nodes by lifecycle state (HEALTHY, STALE, DRAINING, UNAVAILABLE), computed when scraped.",
      labelNames: ["lifecycle"],
      registers,
      async collect() {
        // A failed count leaves the gauge empty for this scrape rather than failing /metrics.
        const counts = await metrics.countNodes?.().catch(() => undefined);
        this.reset();
        if (counts) for (const [lifecycle, n] of Object.entries(counts)) this.set({ lifecycle }, n);
      },
    }),
    nodesDiverged: new Gauge({
      name: "cp_nodes_diverged",
      help: "Nodes whose reported release has differed from their desired release for longer than 10 minutes, by class (installing, failed, stuck, unexpected), computed when scraped.",
      labelNames: ["class"],
      registers,
      async collect() {
        const counts = await metrics.countDiverged?.().catch(() => undefined);
        this.reset();
        if (counts) for (const [cls, n] of Object.entries(counts)) this.set({ class: cls }, n);
      },
    }),
    rolloutPlans: new Counter({
      name: "cp_rollout_plans_total",
      help: "Rollout plans newly published.",
      registers,
    }),
    rolloutTransitions: new Counter({
      name: "cp_rollout_transitions_total",
      help: "Rollout status changes written, by action and the phase they led to.",
      labelNames: ["action", "phase"],
      registers,
    }),
    rolloutEvaluations: new Counter({
      name: "cp_rollout_evaluations_total",
      help: "Gate evaluations of rollout plans (each after an ack, a heartbeat change, an event or a timer affecting the plan).",
      registers,
    }),
    tlsRefusals: new Counter({
      name: "cp_tls_handshake_failures_total",
      help: "Client connections refused at the TLS handshake, by reason (CERT_REVOKED: a revoked certificate; CERT_HAS_EXPIRED; UNABLE_TO_VERIFY_LEAF_SIGNATURE: another CA; no certificate ...).",
      labelNames: ["reason"],
      registers,
    }),
    ingestThrottled: new Counter({
      name: "cp_ingest_throttled_total",
      help: "IngestEvents calls refused by the per-node limit (--node-ingest-rate), by node: enrolled node ids, \"unenrolled\" for any other.",
      labelNames: ["node"],
      registers,
    }),
    connectionsWaiting: new Gauge({
      name: "cp_connections_waiting",
      help: "New connections waiting, unread, for their turn under --connection-rate-per-client (on TLS, before their handshake), when scraped.",
      registers,
      collect() {
        this.set(metrics.countWaitingConnections?.() ?? 0);
      },
    }),
    agentStreams: new Gauge({
      name: "cp_agent_streams",
      help: "Agents' push streams (AgentService.Subscribe) open now.",
      registers,
    }),
    agentPushed: new Counter({
      name: "cp_agent_pushed_total",
      help: "Messages sent on agents' push streams, by kind (hello, keepalive, desired_release_changed, workload_command).",
      labelNames: ["kind"],
      registers,
    }),
    workloadReports: new Counter({
      name: "cp_workload_reports_total",
      help: "Workload reports of agents (AgentService.ReportWorkloads) stored.",
      registers,
    }),
    workloadReplicas: new Gauge({
      name: "cp_workload_replicas",
      help: "Service replicas by state (pending, running, unschedulable, lost, ...), as of the leader's last reconcile pass.",
      labelNames: ["state"],
      registers,
    }),
    schedulingDecisions: new Counter({
      name: "cp_workload_scheduling_decisions_total",
      help: "Placement decisions of the workload reconcile loop, by decision (launch, update, stop, unschedulable).",
      labelNames: ["decision"],
      registers,
    }),
    workloadCommands: new Counter({
      name: "cp_workload_commands_total",
      help: "Workload commands sent to agents, by kind (launch, update, stop) and send (first, resend).",
      labelNames: ["kind", "send"],
      registers,
    }),
    reconcileDuration: new Histogram({
      name: "cp_workload_reconcile_duration_seconds",
      help: "How long one pass of the workload reconcile loop took, by outcome (ok, aborted, error).",
      labelNames: ["outcome"],
      buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5],
      registers,
    }),
    tlsRevokedClosed: new Counter({
      name: "cp_tls_revoked_connections_closed_total",
      help: "Open connections closed because a new CRL revoked their client certificate.",
      registers,
    }),
    crlReloadFailures: new Counter({
      name: "cp_tls_crl_reload_failures_total",
      help: "Changes of --tls-crl-file that were refused (unreadable, not signed by the CA, expired); the last good CRL stays in force.",
      registers,
    }),
    crlReloadFailing: new Gauge({
      name: "cp_tls_crl_reload_failing",
      help: "1 while the CRL file on disk is refused and an older CRL is in force: alert on it.",
      registers,
    }),
    crlSyncFailures: new Counter({
      name: "cp_tls_crl_sync_failures_total",
      help: "CRL sync fetches that failed or brought a CRL that does not check out, by publisher (--tls-crl-sync-url).",
      labelNames: ["publisher"],
      registers,
    }),
    crlSyncRounds: new Counter({
      name: "cp_tls_crl_sync_rounds_total",
      help: "CRL sync rounds by outcome: accepted, unchanged, no_quorum (fewer than --tls-crl-sync-min-sources agree), rollback_refused.",
      labelNames: ["outcome"],
      registers,
    }),
    crlNumber: new Gauge({
      name: "cp_tls_crl_number",
      help: "The CRL number of the CRL in force.",
      registers,
      collect() {
        const crl = metrics.currentCrl?.();
        if (crl) this.set(Number(crl.number));
      },
    }),
    crlAge: new Gauge({
      name: "cp_tls_crl_age_seconds",
      help: "Seconds since the thisUpdate of the CRL in force.",
      registers,
      collect() {
        const crl = metrics.currentCrl?.();
        if (crl) this.set((Date.now() - crl.thisUpdate.getTime()) / 1000);
      },
    }),
  };
  return metrics;
}
