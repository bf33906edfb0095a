import type { Metrics } from "../observability/metrics.js";
import type { Store } from "./store.js";

async function timed<T>(metrics: Metrics, operation: string, fn: () => Promise<T>): Promise<T> {
  const end = metrics.storeDuration.startTimer({ operation });
  try {
    const result = await fn();
    end({ outcome: "ok" });
    return result;
  } catch (err) {
    end({ outcome: "error" });
    throw err;
  }
}

/** The operation label of each store method, in snake_case; every method of the contract is listed. */
const OPERATIONS = {
  ingestEvents: "ingest_events",
  queryEvents: "query_events",
  queryEventPage: "query_event_page",
  ingestCounts: "ingest_counts",
  eventsAfter: "events_after",
  eventAtOrAfter: "event_at_or_after",
  deleteEvents: "delete_events",
  statistics: "statistics",
  publishRelease: "publish_release",
  latestRelease: "latest_release",
  getRelease: "get_release",
  upsertAck: "upsert_ack",
  acksOfRelease: "acks_of_release",
  acksOfNode: "acks_of_node",
  enrollNode: "enroll_node",
  getNode: "get_node",
  listNodes: "list_nodes",
  fleetTotals: "fleet_totals",
  searchFleetNodes: "search_fleet_nodes",
  fleetChannels: "fleet_channels",
  setDrained: "set_drained",
  recordSightings: "record_sightings",
  lastEventsByType: "last_events_by_type",
  lastLockFingerprint: "last_lock_fingerprint",
  createRollout: "create_rollout",
  getRollout: "get_rollout",
  listRollouts: "list_rollouts",
  commitRollout: "commit_rollout",
  movesOfPlan: "moves_of_plan",
  planMovedNode: "plan_moved_node",
  restoreProgress: "restore_progress",
  newestMoves: "newest_moves",
  eventCountsSince: "event_counts_since",
  newestEventSeq: "newest_event_seq",
  openRolloutStage: "open_rollout_stage",
  stageNodes: "stage_nodes",
  auditRecords: "audit_records",
  pruneAudit: "prune_audit",
  appendAudit: "append_audit",
  listRoles: "list_roles",
  putRole: "put_role",
  listBindings: "list_bindings",
  assignRole: "assign_role",
  revokeRole: "revoke_role",
  createToken: "create_token",
  listTokens: "list_tokens",
  revokeToken: "revoke_token",
  tokenByHash: "token_by_hash",
  rbacCounts: "rbac_counts",
  createEnrollmentToken: "create_enrollment_token",
  listEnrollmentTokens: "list_enrollment_tokens",
  enrollmentTokenByHash: "enrollment_token_by_hash",
  revokeEnrollmentToken: "revoke_enrollment_token",
  enrollWithToken: "enroll_with_token",
  recordCertificateRenewal: "record_certificate_renewal",
  nodeCertificates: "node_certificates",
  applyWorkloads: "apply_workloads",
  deleteWorkloadService: "delete_workload_service",
  workloadSnapshot: "workload_snapshot",
  commitPlacement: "commit_placement",
  reportWorkloads: "report_workloads",
  unansweredCommands: "unanswered_commands",
  replicasOfNode: "replicas_of_node",
  registerSigningKey: "register_signing_key",
  signingKeys: "signing_keys",
  emergencyStop: "emergency_stop",
  startEmergencyStop: "start_emergency_stop",
  endEmergencyStop: "end_emergency_stop",
  divergedNodes: "diverged_nodes",
  acksOfNodes: "acks_of_nodes",
  acceptReported: "accept_reported",
  unpinNode: "unpin_node",
  requestReapply: "request_reapply",
} as const satisfies Record<Exclude<keyof Store, "dialect" | "close">, string>;

/** The store with each operation's latency and outcome recorded in cp_store_operation_duration_seconds. */
export function instrumentStore(store: Store, metrics: Metrics): Store {
  const instrumented: Record<string, unknown> = { dialect: store.dialect, close: () => store.close() };
  for (const [method, operation] of Object.entries(OPERATIONS)) {
    const fn = (store[method as keyof typeof OPERATIONS] as (...args: unknown[]) => Promise<unknown>).bind(store);
    instrumented[method] = (...args: unknown[]) => timed(metrics, operation, () => fn(...args));
  }
  return instrumented as unknown as Store;
}
