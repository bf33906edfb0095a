import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import type { FleetNode, Node, NodeService } from "../../gen/autonomy/v1/nodes_pb.js";
import { NotFoundError, ValidationError } from "../domain/errors.js";
import { checkBytes, checkId } from "../domain/fields.js";
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
import { desiredReleases } from "./desired-release.js";
import { fleetOverview, searchFleetNodes } from "./fleet-views.js";

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

/** How many enrolled nodes are in each lifecycle state (the cp_nodes gauge). */
export async function countLifecycles(deps: Omit<NodeServiceDeps, "metrics">): Promise<Record<Lifecycle, number>> {
  const counts: Record<Lifecycle, number> = { HEALTHY: 0, STALE: 0, DRAINING: 0, UNAVAILABLE: 0 };
  const nowMs = Date.now();
  for (const node of await deps.store.listNodes({})) {
    counts[nodeView(node, deps.sightings, nowMs, deps.staleAfterMs).lifecycle as Lifecycle]++;
  }
  return counts;
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
      checkId(req.agentVersion, "agent_version", false);
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
      const [lastEvents, lockFingerprint, acks, desired] = await Promise.all([
        store.lastEventsByType(node.nodeId),
        store.lastLockFingerprint(node.nodeId),
        store.acksOfNode(node.nodeId),
        desiredReleases(store, [node]),
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
      };
    },

    async getDesiredRelease(req) {
      const node = await enrolled(req.nodeId);
      const desired = (await desiredReleases(store, [node])).get(node.nodeId);
      return { release: desired?.release, planId: desired?.planId ?? "" };
    },

    async getFleetStatus(req) {
      checkId(req.channel, "channel", false);
      const thresholdMs = staleThresholdMs(req.staleThresholdSeconds, staleAfterMs);
      const limit = pageSize(req.pageSize);
      const afterNodeId = decodePageToken(req.pageToken);
      const channel = req.channel || undefined;
      // Totals cover the whole selection, so every node of it is read; pages only cut the rows.
      const [all, latestRelease] = await Promise.all([
        store.listNodes({ channel }),
        channel === undefined ? undefined : store.latestRelease(channel),
      ]);
      // Ordered here, not by the database, whose collation may differ from the page token's comparison.
      all.sort((a, b) => (a.nodeId < b.nodeId ? -1 : a.nodeId > b.nodeId ? 1 : 0));
      const desired = await desiredReleases(store, all);
      const nowMs = Date.now();
      const totals = { total: all.length, up: 0, stale: 0, unknown: 0, draining: 0, drifted: 0 };
      const rows: FleetNode[] = [];
      for (const node of all) {
        nodeView(node, sightings, nowMs, thresholdMs);
        const seenMs = livenessOf(node).lastSeenMs;
        if (seenMs === undefined) totals.unknown++;
        else if (nowMs - seenMs <= thresholdMs) totals.up++;
        else totals.stale++;
        if (node.drained) totals.draining++;
        const desiredId = desired.get(node.nodeId)?.release.releaseId ?? "";
        const drift = desiredId !== "" && desiredId !== node.reportedReleaseId;
        if (drift) totals.drifted++;
        if (rows.length <= limit && (afterNodeId === undefined || node.nodeId > afterNodeId)) {
          rows.push({
            $typeName: "autonomy.v1.FleetNode",
            nodeId: node.nodeId,
            channel: node.channel,
            lifecycle: node.lifecycle,
            lastSeen: node.lastSeen,
            reportedReleaseId: node.reportedReleaseId,
            desiredReleaseId: desiredId,
            drift,
          });
        }
      }
      const more = rows.length > limit;
      const nodes = rows.slice(0, limit);
      return { totals, latestRelease, nodes, nextPageToken: more ? encodePageToken(nodes[nodes.length - 1].nodeId) : "" };
    },

    getFleetOverview: (req) => fleetOverview(deps, req),
    searchFleetNodes: (req) => searchFleetNodes(deps, req),
  };
}
