import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import type { FleetNode, Node, NodeService } from "../../gen/autonomy/v1/nodes_pb.js";
import { NotFoundError, ValidationError } from "../domain/errors.js";
import { checkBytes, checkId, checkText } from "../domain/fields.js";
import {
  decodePageToken,
  encodePageToken,
  livenessOf,
  nodeLifecycle,
  pageSize,
  staleThresholdMs,
  validateEnrollment,
  type Lifecycle,
} from "../domain/nodes.js";
import type { Metrics } from "../observability/metrics.js";
import { actorOf, auditRecord } from "./audit-record.js";
import type { SightingBuffer } from "../store/sightings.js";
import type { Store } from "../store/store.js";
import { agentDesiredRelease, desiredReleases } from "./desired-release.js";
import { fleetOverview, searchFleetNodes } from "./fleet-views.js";
import { replicaMessage } from "./workload-views.js";

export const MAX_DRAIN_REASON_BYTES = 1024;

export interface NodeServiceDeps {
  store: Store;
  metrics: Metrics;
  sightings: SightingBuffer;
  /** A node not seen for longer is STALE (--node-stale-after). */
  staleAfterMs: number;
}

/** Reads a node with its newest buffered sighting and its lifecycle as of now. */
export function nodeView(node: Node, sightings: SightingBuffer, nowMs: number, staleAfterMs: number): Node {
  sightings.overlay(node);
  node.lifecycle = nodeLifecycle(livenessOf(node), nowMs, staleAfterMs);
  return node;
}

/** Nodes read per page by countLifecycles: one indexed query, then the event loop may run. */
const COUNT_PAGE = 1000;

/**
 * How many enrolled nodes are in each lifecycle state (the cp_nodes gauge), read in pages of
 * node ids with the event loop free between them: a scrape of a 100,000-node fleet does not
 * hold every request for the time it takes to read and count them all.
 */
export async function countLifecycles(deps: Omit<NodeServiceDeps, "metrics">): Promise<Record<Lifecycle, number>> {
  const counts: Record<Lifecycle, number> = { HEALTHY: 0, STALE: 0, DRAINING: 0, UNAVAILABLE: 0 };
  const nowMs = Date.now();
  for (let after: string | undefined; ; ) {
    const page = await deps.store.listNodes({ afterNodeId: after, limit: COUNT_PAGE });
    for (const node of page) counts[nodeView(node, deps.sightings, nowMs, deps.staleAfterMs).lifecycle as Lifecycle]++;
    if (page.length < COUNT_PAGE) return counts;
    after = page[page.length - 1].nodeId;
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
}

/** NodeService: enrolment, heartbeats, draining, and the node and fleet views. */
export function createNodeService(deps: NodeServiceDeps): ServiceImpl<typeof NodeService> {
  const { store, metrics, sightings, staleAfterMs } = deps;

  async function enrolled(nodeId: string): Promise<Node> {
    checkId(nodeId, "node_id", true);
    const node = await store.getNode(nodeId);
    if (!node) throw new NotFoundError(`node "${nodeId}" is not enrolled; enrol it first (edgectl enroll)`);
    return nodeView(node, sightings, Date.now(), staleAfterMs);
  }

  return {
    async enrollNode(req, ctx) {
      validateEnrollment(req);
      // Enrolling again without labels (a re-run of edgectl enroll) keeps the ones the node has.
      if (Object.keys(req.labels).length === 0 && !req.replaceLabels) {
        const existing = await store.getNode(req.nodeId);
        if (existing) req = { ...req, labels: existing.labels };
      }
      const audit = auditRecord(actorOf(ctx), {
        eventName: "node.enrolled",
        category: "system",
        action: "enroll",
        resourceType: "node",
        resource: req.nodeId,
        fields: { channel: req.channel, labels: req.labels, agent_version: req.agentVersion },
      });
      const node = await store.enrollNode(req, Date.now(), audit);
      return { node: nodeView(node, sightings, Date.now(), staleAfterMs) };
    },

    async heartbeat(req) {
      checkId(req.reportedReleaseId, "reported_release_id", false);
      checkText(req.agentVersion, "agent_version");
      const node = await enrolled(req.nodeId);
      const nowMs = Date.now();
      sightings.record({
        nodeId: req.nodeId,
        lastSeenMs: nowMs,
        reportedReleaseId: req.reportedReleaseId || undefined,
        agentVersion: req.agentVersion || undefined,
      });
      metrics.heartbeats.inc();
      return { lifecycle: node.drained ? "DRAINING" : "HEALTHY", serverTime: timestampFromMs(nowMs) };
    },

    async drainNode(req, ctx) {
      checkId(req.nodeId, "node_id", true);
      if (!req.undrain && req.reason === "") throw new ValidationError("reason", "required when draining");
      checkBytes(req.reason, "reason", MAX_DRAIN_REASON_BYTES);
      const audit = auditRecord(actorOf(ctx), {
        eventName: req.undrain ? "node.undrained" : "node.drained",
        category: "system",
        action: req.undrain ? "undrain" : "drain",
        resourceType: "node",
        resource: req.nodeId,
        reason: req.reason,
      });
      const node = await store.setDrained(req.nodeId, !req.undrain, req.reason, audit);
      return { node: nodeView(node, sightings, Date.now(), staleAfterMs) };
    },

    async listNodes(req) {
      checkId(req.channel, "channel", false);
      const limit = pageSize(req.pageSize);
      const afterNodeId = decodePageToken(req.pageToken);
      const page = await store.listNodes({ channel: req.channel || undefined, afterNodeId, limit: limit + 1 });
      const more = page.length > limit;
      const nowMs = Date.now();
      const nodes = page.slice(0, limit).map((n) => nodeView(n, sightings, nowMs, staleAfterMs));
      return { nodes, nextPageToken: more ? encodePageToken(nodes[nodes.length - 1].nodeId) : "" };
    },

    async getNodeSummary(req) {
      const node = await enrolled(req.nodeId);
      const [lastEvents, lockFingerprint, acks, desired, replicas] = await Promise.all([
        store.lastEventsByType(node.nodeId),
        store.lastLockFingerprint(node.nodeId),
        store.acksOfNode(node.nodeId),
        desiredReleases(store, [node]),
        store.replicasOfNode(node.nodeId),
      ]);
      const desiredRelease = desired.get(node.nodeId)?.release;
      return {
        node,
        lastEvents,
        reportedReleaseId: node.reportedReleaseId,
        desiredRelease,
        lastAck: acks[0],
        lockFingerprint: lockFingerprint ?? "",
        drift: desiredRelease !== undefined && desiredRelease.releaseId !== node.reportedReleaseId,
        replicas: replicas.map(replicaMessage),
      };
    },

    async getDesiredRelease(req) {
      return agentDesiredRelease(store, await enrolled(req.nodeId));
    },

    async getFleetStatus(req) {
      checkId(req.channel, "channel", false);
      const thresholdMs = staleThresholdMs(req.staleThresholdSeconds, staleAfterMs);
      const limit = pageSize(req.pageSize);
      const afterNodeId = decodePageToken(req.pageToken);
      const channel = req.channel || undefined;
      const nowMs = Date.now();
      // The totals come counted from the store, so a page reads only its own nodes.
      const [totals, page, latestRelease] = await Promise.all([
        store.fleetTotals({ channel, seenSinceMs: nowMs - thresholdMs, sightings: sightings.pending() }),
        store.listNodes({ channel, afterNodeId, limit: limit + 1 }),
        channel === undefined ? undefined : store.latestRelease(channel),
      ]);
      const more = page.length > limit;
      const nodes = page.slice(0, limit).map((n) => nodeView(n, sightings, nowMs, thresholdMs));
      const desired = await desiredReleases(store, nodes);
      const rows = nodes.map((node): FleetNode => {
        const desiredId = desired.get(node.nodeId)?.release.releaseId ?? "";
        return {
          $typeName: "autonomy.v1.FleetNode",
          nodeId: node.nodeId,
          channel: node.channel,
          lifecycle: node.lifecycle,
          lastSeen: node.lastSeen,
          reportedReleaseId: node.reportedReleaseId,
          desiredReleaseId: desiredId,
          drift: desiredId !== "" && desiredId !== node.reportedReleaseId,
        };
      });
      return { totals, latestRelease, nodes: rows, nextPageToken: more ? encodePageToken(nodes[nodes.length - 1].nodeId) : "" };
    },

    getFleetOverview: (req) => fleetOverview(deps, req),
    searchFleetNodes: (req) => searchFleetNodes(deps, req),
  };
}
