import type { ServiceImpl } from "@connectrpc/connect";
import type { ReleaseService } from "../../gen/autonomy/v1/releases_pb.js";
import { NotFoundError } from "../domain/errors.js";
import { checkId } from "../domain/fields.js";
import { validateAck, validateRelease } from "../domain/releases.js";
import type { Metrics } from "../observability/metrics.js";
import { actorOf, auditRecord } from "./audit-record.js";
import { channelReleases } from "./fleet-views.js";
import type { RolloutController } from "../rollouts/controller.js";
import type { PushHub } from "./agent-push.js";
import { ackToRow, releaseToRow } from "../store/fleet-rows.js";
import type { SightingBuffer } from "../store/sightings.js";
import type { Store } from "../store/store.js";

/** ReleaseService: immutable releases, and the acks nodes send about them. */
export function createReleaseService(deps: {
  store: Store;
  metrics: Metrics;
  sightings: SightingBuffer;
  controller?: RolloutController;
  /** Tells the nodes of a channel, on their streams, of an unstaged release published on it. */
  push?: PushHub;
  /** --audit-data-plane: record every stored ack in the audit trail. */
  auditDataPlane?: boolean;
}): ServiceImpl<typeof ReleaseService> {
  const { store, metrics, sightings, controller } = deps;
  return {
    async publishRelease(req, ctx) {
      validateRelease(req.release);
      const r = req.release;
      const audit = auditRecord(actorOf(ctx), {
        eventName: "release.published",
        category: "system",
        action: "publish",
        resourceType: "release",
        resource: r.releaseId,
        fields: { channel: r.channel, version: r.version, staged: r.staged, artifacts: r.artifacts.map((a) => a.digest) },
      });
      const result = await store.publishRelease(releaseToRow(r, Date.now()), audit);
      if (result.created) {
        metrics.releasesPublished.inc();
        if (!r.staged) deps.push?.channelReleased(r.channel, r.releaseId);
      }
      return result;
    },

    async getLatestRelease(req) {
      checkId(req.channel, "channel", true);
      const release = await store.latestRelease(req.channel);
      if (!release) throw new NotFoundError(`no release is published on channel "${req.channel}"`);
      return { release };
    },

    async listReleaseAcks(req) {
      checkId(req.releaseId, "release_id", true);
      const [release, acks] = await Promise.all([store.getRelease(req.releaseId), store.acksOfRelease(req.releaseId)]);
      if (!release) throw new NotFoundError(`release "${req.releaseId}" not found`);
      return { acks, count: acks.length };
    },

    async upsertAck(req, ctx) {
      validateAck(req);
      const nowMs = Date.now();
      const audit = deps.auditDataPlane
        ? auditRecord(actorOf(ctx), {
            eventName: "release.ack.recorded",
            category: "system",
            action: "ack",
            resourceType: "release",
            resource: req.releaseId,
            fields: { node_id: req.nodeId, state: req.state, reported_release_id: req.reportedReleaseId },
            reason: req.message,
          })
        : undefined;
      const result = await store.upsertAck(ackToRow(req, nowMs), audit);
      metrics.acks.inc({ state: req.state, outcome: result.stale ? "stale" : "stored" });
      // A late ack still proves the node is alive, but what it says it runs is old news.
      sightings.record({
        nodeId: req.nodeId,
        lastSeenMs: nowMs,
        reportedReleaseId: result.stale || req.reportedReleaseId === "" ? undefined : req.reportedReleaseId,
      });
      if (!result.stale) controller?.onAck(result.ack);
      return result;
    },

    async listNodeAcks(req) {
      checkId(req.nodeId, "node_id", true);
      const [node, acks] = await Promise.all([store.getNode(req.nodeId), store.acksOfNode(req.nodeId)]);
      if (!node) throw new NotFoundError(`node "${req.nodeId}" is not enrolled`);
      return { acks, count: acks.length };
    },

    listChannelReleases: (req) => channelReleases(deps, req),
  };
}
