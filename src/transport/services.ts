import type { DescMessage, DescService, MessageShape } from "@bufbuild/protobuf";
import type { ConnectRouter, HandlerContext, ServiceImpl } from "@connectrpc/connect";
import { AgentService } from "../../gen/autonomy/v1/agent_pb.js";
import { AuditService } from "../../gen/autonomy/v1/audit_pb.js";
import { EventService } from "../../gen/autonomy/v1/events_pb.js";
import { HealthService } from "../../gen/autonomy/v1/health_pb.js";
import { NodeService } from "../../gen/autonomy/v1/nodes_pb.js";
import { EnrollmentService } from "../../gen/autonomy/v1/enrollment_pb.js";
import type { NodeCertificateAuthority } from "../domain/enrollment.js";
import { createEnrollmentService } from "../services/enrollment-service.js";
import { ReleaseService } from "../../gen/autonomy/v1/releases_pb.js";
import { WorkloadService } from "../../gen/autonomy/v1/workloads_pb.js";
import { createWorkloadService } from "../services/workload-service.js";
import type { WorkloadHooks } from "../workloads/inputs.js";
import { RolloutService } from "../../gen/autonomy/v1/rollouts_pb.js";
import { RbacService } from "../../gen/autonomy/v1/rbac_pb.js";
import { OperationsService } from "../../gen/autonomy/v1/operations_pb.js";
import { createOperationsService } from "../services/operations-service.js";
import type { Logger } from "../observability/logger.js";
import { EventFollowService } from "../../gen/autonomy/v1/follow_pb.js";
import { SupportService } from "../../gen/autonomy/v1/support_pb.js";
import { VerifyAuditChainRequestSchema, VerifyAuditChainResponseSchema } from "../../gen/autonomy/v1/audit_pb.js";
import { create, toJson } from "@bufbuild/protobuf";
import type { EventFeed } from "../services/event-feed.js";
import { createFollowService } from "../services/follow-service.js";
import { createSupportService } from "../services/support-service.js";
import { SupportBundle, standardParts, type BundlePart, type StandardPartDeps } from "../ops/support-bundle.js";
import type { Authorizer } from "../security/authz.js";
import type { RateLimiter } from "./rate-limit.js";
import type { AuditCheckpoints } from "../services/audit-checkpoints.js";
import { createRbacService } from "../services/rbac-service.js";
import type { RolloutController } from "../rollouts/controller.js";
import type { SpecSigner } from "../rollouts/signing.js";
import { createRolloutService } from "../services/rollout-service.js";
import type { Metrics } from "../observability/metrics.js";
import { createAgentService, type PushHub } from "../services/agent-push.js";
import { createAuditService } from "../services/audit-service.js";
import { createEventPageText, createEventService } from "../services/event-service.js";
import { createHealthService } from "../services/health-service.js";
import { createNodeService } from "../services/node-service.js";
import { createReleaseService } from "../services/release-service.js";
import type { SightingBuffer } from "../store/sightings.js";
import type { Store } from "../store/store.js";

/**
 * A unary RPC answered on its REST binding by writing the JSON text of its response itself
 * (the REST transcoder sends it as it is), where that costs far less than building the
 * response message and writing it: an event page read and written off the event loop.
 */
export type JsonTextImpl<I extends DescMessage = DescMessage> = (request: MessageShape<I>, context: HandlerContext) => Promise<string>;

type UnaryInputs<S extends DescService> = {
  [M in keyof S["method"]]: S["method"][M] extends { methodKind: "unary"; input: infer I extends DescMessage } ? JsonTextImpl<I> : never;
};

/** A service and its implementation, served over Connect, gRPC, gRPC-Web and REST alike. */
export interface ServiceEntry<S extends DescService = DescService> {
  service: S;
  impl: ServiceImpl<S>;
  /** RPCs whose REST binding the implementation answers as JSON text, by local name. */
  jsonText?: Partial<UnaryInputs<S>>;
}

function entry<S extends DescService>(service: S, impl: ServiceImpl<S>, jsonText?: Partial<UnaryInputs<S>>): ServiceEntry {
  return { service, impl, jsonText } as unknown as ServiceEntry;
}

export interface ServiceDeps {
  store: Store;
  metrics: Metrics;
  sightings: SightingBuffer;
  /** --node-stale-after, in milliseconds. */
  staleAfterMs: number;
  controller: RolloutController;
  /** The workload reconcile loop: told of applies and reports, asked its placement settings. */
  workloads: WorkloadHooks;
  signer: SpecSigner;
  authorizer: Authorizer;
  /** Signed checkpoints of the audit chain (audit verify, and one after every prune). */
  auditCheckpoints?: AuditCheckpoints;
  /** --audit-data-plane: also audit every ingested batch and every stored ack. */
  auditDataPlane?: boolean;
  /** The agents' push streams. */
  push: PushHub;
  /** The CA node certificates are signed with at enrolment and renewal (serve --ca-dir). */
  ca?: NodeCertificateAuthority;
  /** --node-ingest-rate and --node-ingest-burst: events per second per node. */
  nodeIngestLimiter?: RateLimiter;
  logger?: Logger;
  /** Wakes followers of the event stream when this process stores events. */
  feed: EventFeed;
  /** True while the API answers other requests than the one asking, streams left out (CallsInFlight). */
  busy?: () => boolean;
  /**
   * What the support bundle's standard parts read (besides the store, metrics and audit chain),
   * and the parts other features add by name after them (HA status, the divergence report).
   */
  bundle: Pick<StandardPartDeps, "config" | "logRing" | "startedAtMs"> & { parts?: readonly BundlePart[] };
}

/** The one list of served services: the RPC router and the REST transcoder both read it. */
export function createServices(deps: ServiceDeps): ServiceEntry[] {
  const audit = createAuditService(deps);
  const bundle = new SupportBundle(
    standardParts({
      ...deps.bundle,
      store: deps.store,
      metrics: deps.metrics,
      rbacEnforced: deps.authorizer.enforced,
      // The audit service's own verification, as `autonomy audit verify` shows it.
      verifyAudit: async (call) => toJson(VerifyAuditChainResponseSchema, create(VerifyAuditChainResponseSchema, await audit.verifyAuditChain(create(VerifyAuditChainRequestSchema), call))),
    }),
  );
  for (const part of deps.bundle.parts ?? []) bundle.register(part);
  return [
    entry(EventService, createEventService(deps), { queryEvents: createEventPageText(deps) }),
    entry(EventFollowService, createFollowService(deps)),
    entry(SupportService, createSupportService({ bundle })),
    entry(ReleaseService, createReleaseService(deps)),
    entry(NodeService, createNodeService(deps)),
    entry(EnrollmentService, createEnrollmentService({ ...deps, refusals: deps.authorizer.refusals })),
    entry(RolloutService, createRolloutService(deps)),
    entry(AuditService, audit),
    entry(RbacService, createRbacService(deps)),
    entry(AgentService, createAgentService(deps)),
    entry(WorkloadService, createWorkloadService(deps)),
    entry(OperationsService, createOperationsService(deps)),
    entry(HealthService, createHealthService({ rbacEnforced: deps.authorizer.enforced, store: deps.store })),
  ];
}

/** Registers every service on a Connect router. */
export function registerServices(router: ConnectRouter, services: readonly ServiceEntry[]): void {
  for (const { service, impl } of services) router.service(service, impl);
}
